"""Deterministic epsilon sampling and the instruction rewriter (torch-free)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from instraug_plugin.core.placeholders import PlaceholderSpec
from instraug_plugin.core.pool import Pool, PoolRecord
from instraug_plugin.core.sampling import InstructionRewriter, choose, unit_draw

SEED = "What color is the shape?"


def _pool(*texts: str, seed: str = SEED, task: str = "colors") -> Pool:
    return Pool([PoolRecord(task, f"{task}/0", seed, seed)]
                + [PoolRecord(task, f"{task}/0", seed, t, strategy="single") for t in texts])


def test_unit_draw_is_stable_across_processes_and_hash_seeds() -> None:
    here = [unit_draw(7, e, i) for e in range(3) for i in range(5)]
    code = ("from instraug_plugin.core.sampling import unit_draw;"
            "print([unit_draw(7, e, i) for e in range(3) for i in range(5)])")
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.stdout.strip() == repr(here)
    assert all(0.0 <= u < 1.0 for u in here)
    assert len(set(here)) == len(here)


def test_choose_respects_epsilon_and_is_uniform_over_variants() -> None:
    picks = Counter(choose(3, 0, i, 0, 4, 0.25) for i in range(20000))
    assert abs(picks[None] / 20000 - 0.25) < 0.02
    for v in range(4):
        assert abs(picks[v] / 20000 - 0.75 / 4) < 0.02
    assert all(choose(3, 0, i, 0, 4, 1.0) is None for i in range(500))
    assert all(choose(3, 0, i, 0, 4, 0.0) is not None for i in range(500))
    assert choose(3, 0, 0, 0, 0, 0.0) is None


def test_rewrite_depends_on_seed_epoch_index_and_turn() -> None:
    rewriter = InstructionRewriter(_pool("Name the shape's color.", "Which color is the shape?", "Say the color."),
                                   epsilon=0.0, seed=1)
    by_epoch = {rewriter.rewrite(SEED, task=None, epoch=e, index=0)[0] for e in range(20)}
    assert len(by_epoch) == 3
    again = InstructionRewriter(rewriter.pool, epsilon=0.0, seed=1)
    assert [again.rewrite(SEED, task=None, epoch=e, index=5, turn=2) for e in range(10)] == \
        [rewriter.rewrite(SEED, task=None, epoch=e, index=5, turn=2) for e in range(10)]


def test_media_tokens_at_the_edges_are_kept_and_matching_is_normalized() -> None:
    rewriter = InstructionRewriter(_pool("Name the shape's color."), epsilon=0.0, seed=0)
    text, decision = rewriter.rewrite("<image>\n  what COLOR is the shape?", task=None, epoch=0, index=0)
    assert (text, decision) == ("<image>\n  Name the shape's color.", "rewritten")
    text, decision = rewriter.rewrite("What color is the shape? <image>", task="colors", epoch=0, index=0)
    assert (text, decision) == ("Name the shape's color. <image>", "rewritten")


def test_task_scoping_and_missing_entries() -> None:
    rewriter = InstructionRewriter(_pool("Name the shape's color."), epsilon=0.0, seed=0)
    assert rewriter.rewrite(SEED, task="shapes", epoch=0, index=0) == (SEED, "no_entry")
    assert rewriter.rewrite("Count the dots.", task=None, epoch=0, index=0) == ("Count the dots.", "no_entry")


@pytest.mark.parametrize("bad", ["Name the color of {area}.", "<image> Name the color.", "Name the <video> color."])
def test_a_paraphrase_that_changes_placeholders_is_never_used(bad: str) -> None:
    rewriter = InstructionRewriter(_pool(bad, seed="Name {region}'s color."), epsilon=0.0, seed=0)
    assert rewriter.rewrite("Name {region}'s color.", task=None, epoch=0, index=0) == \
        ("Name {region}'s color.", "original")


def test_extra_placeholder_regex_is_protected() -> None:
    spec = PlaceholderSpec(extra_patterns=(r"\[\d+, \d+\]",))
    seed = "What is at [3, 4]?"
    rewriter = InstructionRewriter(_pool("Describe the region [3, 5].", seed=seed), epsilon=0.0, seed=0, spec=spec)
    assert rewriter.rewrite(seed, task=None, epoch=0, index=0) == (seed, "original")
    rewriter = InstructionRewriter(_pool("Describe the region [3, 4].", seed=seed), epsilon=0.0, seed=0, spec=spec)
    assert rewriter.rewrite(seed, task=None, epoch=0, index=0) == ("Describe the region [3, 4].", "rewritten")


# ------------------------------------------------- alpaca: instruction + "\n" + input (LLaMA-Factory's join)

TRANSLATE = "Translate to French."
TRANSLATIONS = ("Render this in French.", "Give the French version.")


def test_alpaca_turn_rewrites_only_the_instruction_and_keeps_the_input() -> None:
    rewriter = InstructionRewriter(_pool(*TRANSLATIONS, seed=TRANSLATE, task="t"), epsilon=0.0, seed=1)
    for index, query in enumerate(("Good morning.", "Line one.\nLine two.", "<image> What is it?")):
        new, decision = rewriter.rewrite(f"{TRANSLATE}\n{query}", task="t", epoch=0, index=index)
        assert decision == "rewritten"
        assert new in {f"{t}\n{query}" for t in TRANSLATIONS}
    # Without a pool entry for any leading part, nothing changes.
    assert rewriter.rewrite("Unknown.\nGood morning.", task="t", epoch=0, index=0) == ("Unknown.\nGood morning.",
                                                                                      "no_entry")


def test_leading_part_is_found_with_or_without_its_leading_media_tokens() -> None:
    """A pool built from a dataset's own instructions keeps a leading `<image>` in the seed; a row
    with an input after the instruction still finds it, and the media token is never touched."""
    with_media = InstructionRewriter(_pool("<image>Give a short description.", seed="<image>Describe it.", task="t"),
                                     epsilon=0.0, seed=1)
    bare = InstructionRewriter(_pool("Give a short description.", seed="Describe it.", task="t"), epsilon=0.0, seed=1)
    for rewriter in (with_media, bare):
        assert rewriter.rewrite("<image>Describe it.\nSample 3.", task="t", epoch=0, index=0) == \
            ("<image>Give a short description.\nSample 3.", "rewritten")
    assert with_media.rewrite("<video>Describe it.\nSample 3.", task="t", epoch=0, index=0)[1] == "no_entry"


def test_alpaca_lookup_prefers_the_whole_text_then_the_longest_leading_part() -> None:
    two_lines = "Read the text.\nThen summarize it."
    pool = Pool([PoolRecord("t", "t/0", two_lines, "Summarize the text after reading it.", strategy="single"),
                 PoolRecord("t", "t/1", "Read the text.", "Go through the text.", strategy="single"),
                 PoolRecord("t", "t/2", f"{two_lines}\nA text.", "The whole turn, rephrased.", strategy="single")])
    rewriter = InstructionRewriter(pool, epsilon=0.0, seed=1)
    assert rewriter.rewrite(f"{two_lines}\nA text.", task="t", epoch=0, index=0)[0] == "The whole turn, rephrased."
    assert rewriter.rewrite(f"{two_lines}\nB text.\nmore", task="t", epoch=0, index=0)[0] == \
        "Summarize the text after reading it.\nB text.\nmore"
    assert rewriter.rewrite("Read the text.\nThen stop.", task="t", epoch=0, index=0)[0] == \
        "Go through the text.\nThen stop."
    # Leading media tokens are kept and skipped for the lookup.
    assert rewriter.rewrite("<image>\nRead the text.\nB", task="t", epoch=0, index=0)[0] == \
        "<image>\nGo through the text.\nB"


def test_alpaca_row_through_llamafactory_converter_and_shared_rewrite_messages(tmp_path) -> None:
    """A real LLaMA-Factory alpaca conversion, rewritten as the training hook does: input and answer kept."""
    parser = pytest.importorskip("llamafactory.data.parser")
    converter = pytest.importorskip("llamafactory.data.converter")
    import json

    from instraug_plugin.core.sampling import rewrite_messages

    rows = [{"instruction": TRANSLATE, "input": "Good morning.", "output": "Bonjour."}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "rows.json"}}))
    attr = parser.get_dataset_list(["d"], str(tmp_path))[0]
    converted = converter.get_dataset_converter(attr.formatting, attr, None)(rows[0])
    assert converted["_prompt"] == [{"role": "user", "content": f"{TRANSLATE}\nGood morning."}]
    rewriter = InstructionRewriter(_pool(*TRANSLATIONS, seed=TRANSLATE), epsilon=0.0, seed=3)
    new, decision = rewrite_messages(rewriter, converted["_prompt"], task=None, epoch=0, index=0, all_turns=False)
    assert decision == "rewritten"
    assert new[0]["content"] in {f"{t}\nGood morning." for t in TRANSLATIONS}
    assert converted["_response"] == [{"role": "assistant", "content": "Bonjour."}]


def test_rewrite_messages_with_dataset_tags_leaves_its_input_alone() -> None:
    from instraug_plugin.core.sampling import rewrite_messages

    rewriter = InstructionRewriter(_pool("Which color is it?"), epsilon=0.0, seed=1)
    messages = [{"from": "human", "value": f"<image>\n{SEED}"}, {"from": "gpt", "value": "red"},
                {"from": "human", "value": SEED}]
    new, decision = rewrite_messages(rewriter, messages, task="colors", epoch=0, index=0, all_turns=True,
                                     role="from", content="value", user="human")
    assert decision == "rewritten"
    assert [m["value"] for m in new] == ["<image>\nWhich color is it?", "red", "Which color is it?"]
    assert messages[0]["value"] == f"<image>\n{SEED}"  # the input list is not modified
    first, _ = rewrite_messages(rewriter, messages, task="colors", epoch=0, index=0, all_turns=False,
                                role="from", content="value", user="human")
    assert first[2]["value"] == SEED


def test_edge_media_tokens_come_from_placeholders() -> None:
    from instraug_plugin.core import placeholders, sampling

    assert all(token in sampling._EDGE_RE.pattern for token in placeholders.MEDIA_TOKENS)
    assert sampling.split_edge_media("<video>\n<image> Describe. <audio>") == ("<video>\n<image> ", "Describe.",
                                                                                " <audio>")


def test_pool_keys_collapse_every_unicode_whitespace_and_case() -> None:
    from instraug_plugin.core.pool import normalize

    text = "  What\u00a0colour\tis\n\nthe\u2003SHAPE\x1c? "
    assert normalize(text) == "what colour is the shape ?"
    rewriter = InstructionRewriter(_pool("Name the colour.", seed="What colour is the shape ?"), epsilon=0.0, seed=0)
    assert rewriter.rewrite(text, task=None, epoch=0, index=0)[1] == "rewritten"
