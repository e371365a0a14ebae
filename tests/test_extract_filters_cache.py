"""Reply extraction, rule filters and the generation cache (torch-free core)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.extract import extract_items, extract_reply
from instraug_plugin.core.filters import Candidate, FilterChain, FilterConfig, text_units


@pytest.mark.parametrize(
    "reply,expected",
    [
        ('Here is the rephrased sentence:\n"Describe the area {A} of the picture."', "Describe the area {A} of the picture."),
        ("Sure! Here's a revised version: What does {A} contain?", "What does {A} contain?"),
        ("1. What does {A} show?\n\nThis version uses simpler words.", "What does {A} show?"),
        ("Rephrased sentence: Tell me about {A}.", "Tell me about {A}."),
        ("“Find {A} in the image.”", "Find {A} in the image."),
        ("**Locate {A}.**", "Locate {A}."),
        ("Certainly!\n\n- Point out {A}.\nNote: I kept the token.", "Point out {A}."),
        ("The image shows a cat.\nWhere is {A} in the picture?", "Where is {A} in the picture?"),
        ("```\nName the object at {A}.\n```", "Name the object at {A}."),
        ("Sure! Find {A} in the picture.", "Find {A} in the picture."),
        ("The rephrased sentence is: Find {A}.", "Find {A}."),
        # instruction words that are not preambles stay
        ("Output the region that matches {A}!", "Output the region that matches {A}!"),
        ("Answer the question about the image: what is {A}?", "Answer the question about the image: what is {A}?"),
        ("Result of counting: how many {A} are there?", "Result of counting: how many {A} are there?"),
        ("Here is the rephrased sentence:", None),
        ("   ", None),
    ],
)
def test_extract_reply(reply: str, expected: str | None) -> None:
    assert extract_reply(reply) == expected


def test_extract_multiline_keeps_the_block_structure() -> None:
    reply = "Here is the rewritten instruction:\n\nName the subject.\n\nRelationship: {A}\nObject: {B}\n\nThis version is shorter."
    assert extract_reply(reply, multiline=True) == "Name the subject.\n\nRelationship: {A}\nObject: {B}"


def _cand(text: str, parent: str = "Describe the content of {region} in the image.", seed_id: str = "GC/0") -> Candidate:
    return Candidate(text=text, parent=parent, seed="Describe the content of {region} in the image.", seed_id=seed_id)


def test_each_filter_rejects_and_counts() -> None:
    chain = FilterChain(FilterConfig(contractions=True, near_duplicate_threshold=0.8))
    chain.add_seed("GC/0", "Describe the content of {region} in the image.")
    cases = {
        "What does {region} in the picture show?": True,
        "What does the picture show?": False,  # placeholders
        "Tell {region}.": False,  # length: 2 words < 0.5 * 8
        "Describe the content of {region} in the image.": False,  # echo
        "We'll describe what {region} holds in the picture.": False,  # contractions
        "Here is the rephrased: explain {region} of the image.": False,  # meta_text
        "Explain what [A] holds in {region} here.": False,  # meta_text: stray mask marker
        "WHAT does {region} in the picture  show?": False,  # duplicate (normalized)
        "What does {region} in the picture show now?": False,  # near duplicate
        "Explain the visible content of {region}.": True,
        'Describe "A" in {region} of the image.': False,  # meta_text: a quoted leftover mask name
        "The content of {region} is the whole image.": False,  # request: a statement, no longer asks
    }
    verdicts = {text: chain.accepts(_cand(text)) for text in cases}
    assert verdicts == cases
    assert dict(chain.rejected) == {
        "placeholders": 1, "placeholder_order": 0, "language": 0, "length": 1, "contractions": 1, "echo": 1, "meta_text": 3,
        "request": 1, "task_shape": 0, "answer": 0, "duplicate": 1, "near_duplicate": 1,
    }


@pytest.mark.parametrize(
    "text,kept",
    [
        ("Does {text} describe the image? {options}", True),
        ("Does {options} describe the image? {text}", False),  # the options now stand where the text was
        ("{options} Does {text} describe the image?", False),
    ],
)
def test_placeholders_keep_the_seed_order(text: str, kept: bool) -> None:
    chain = FilterChain(FilterConfig(length_low=0.0, length_high=10.0))
    seed = 'Does "{text}" describe the image? {options}'
    assert chain.accepts(Candidate(text=text, parent=seed, seed=seed, seed_id="ITM/0")) is kept
    assert chain.rejected["placeholder_order"] == (not kept)
    assert FilterChain(FilterConfig(0.0, 10.0, placeholder_order=False, task_shape=False)).accepts(
        Candidate(text=text, parent=seed, seed=seed, seed_id="ITM/0"))


@pytest.mark.parametrize(
    "seed,text,kept",
    [
        ("Find the part that {text} describes.", "{text} is the part.", False),
        ("Find the part that {text} describes.", "Locate the part described by {text}.", True),
        ("Find the part that {text} describes.", "You need to locate the part that {text} describes.", True),
        ("Find the part that {text} describes.", "The goal is to find the part {text} describes.", True),
        ("What is the object in {region}", "Which object is in {region}", True),
        ("The object contained in {region} is", "The object inside {region} is", True),  # seed asks nothing: not judged
        ("请描述{region}。", "{region}是一只猫。", True),  # other languages: not judged
    ],
)
def test_request_rule(seed: str, text: str, kept: bool) -> None:
    chain = FilterChain(FilterConfig(length_low=0.0, length_high=10.0))
    assert chain.accepts(Candidate(text=text, parent=seed, seed=seed, seed_id="t/0")) is kept


def test_iterative_rows_compare_length_with_their_parent_and_placeholders_with_the_seed() -> None:
    chain = FilterChain(FilterConfig(length_low=0.5, length_high=1.5))
    parent = "Explain {region} now."  # a round-1 paraphrase: 3 words
    assert not chain.accepts(_cand("Give a very detailed description of absolutely everything you can see inside {region}.", parent=parent))
    assert chain.accepts(_cand("Describe {region}, please.", parent=parent))
    assert not chain.accepts(_cand("Describe <image>, please.", parent="Explain <image>."))
    assert chain.rejected["length"] == 1 and chain.rejected["placeholders"] == 1


def test_duplicates_are_global_across_tasks() -> None:
    chain = FilterChain()
    assert chain.accepts(_cand("What does {region} in the picture show?", seed_id="GC/0"))
    assert not chain.accepts(_cand("what does {region} in the picture show?", seed_id="VG/3"))


def test_cache_survives_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = GenerationCache(path)
    cache.put_many([("k1", "one"), ("k2", "two")])
    with path.open("a") as fh:
        fh.write('{"key": "k3", "te')  # killed mid-write
    reloaded = GenerationCache(path)
    assert len(reloaded) == 2 and "k3" not in reloaded
    reloaded.put_many([("k3", "three"), ("k1", "ignored: already cached")])
    again = GenerationCache(path)
    assert again.get("k3") == "three" and again.get("k1") == "one" and len(again) == 3
    assert sum(1 for line in path.read_text().splitlines() if line.startswith("{") and line.endswith("}")) == 3
    assert all(json.loads(line) for line in path.read_text().splitlines()[-1:])


@pytest.mark.parametrize(
    ("reply", "multiline", "expected"),
    [
        ("1. Count the {A}.\n2. How many {A} are there?\n3) Give the tally of {A}.", False,
         ["Count the {A}.", "How many {A} are there?", "Give the tally of {A}."]),
        ("Here are 2 rewordings:\n\n1. \"What is {A}?\"\n2. **Name {A}.**\n\nNote: both keep {A}.", False,
         ["What is {A}?", "Name {A}."]),
        ("1、他是谁？\n2、这个人是谁？", False, ["他是谁？", "这个人是谁？"]),
        ('["Describe {A}.", "What does {A} show?"]', False, ["Describe {A}.", "What does {A} show?"]),
        ("1. Find {A}.\nThe object is {B}\n2. Locate {A}.\nObject: {B}", True,
         ["Find {A}.\nThe object is {B}", "Locate {A}.\nObject: {B}"]),
        ("1. Find {A}.\nThe object is {B}", False, ["Find {A}."]),
        ("Describe {A} briefly.", False, ["Describe {A} briefly."]),  # no list: the one paraphrase
        ("", False, []),
    ],
)
def test_extract_items(reply: str, multiline: bool, expected: list[str]) -> None:
    assert extract_items(reply, multiline=multiline) == expected


def test_text_units_count_cjk_characters_as_words() -> None:
    assert text_units("Who is he?") == 3
    assert text_units("他是谁？") == 2  # 3 Han characters at 1.5 a word
    assert text_units("请描述 {image} 这张图片") == 1 + 7 / 1.5


@pytest.mark.parametrize(
    ("seed", "text", "kept", "reason"),
    [
        ("Who is he?", "Who is this person?", True, None),
        ("Who is he?", "Can you tell me who this man is?", True, None),  # 8 words: within the 5-word slack
        ("Who is he?", "Please look at the picture and tell me who exactly this man is.", False, "length"),
        ("他是谁？", "这个人是谁？", True, None),
        ("他是谁？", "Who is this person?", False, "language"),
        ("Describe the image.", "描述这张图片。", False, "language"),
        ("Describe the region {region} of the image in detail, mentioning every object you see there.",
         "Describe {region}.", False, "length"),
    ],
)
def test_short_and_chinese_instructions(seed: str, text: str, kept: bool, reason: str | None) -> None:
    chain = FilterChain(FilterConfig(min_fidelity=0))
    assert chain.accepts(Candidate(text=text, parent=seed, seed=seed, seed_id="t/0")) is kept
    if reason:
        assert chain.rejected[reason] == 1
