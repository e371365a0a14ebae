"""Placeholder core over the real MultiInstruct templates and hand-made edge cases."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec, fill_template
from instraug_plugin.resources import bundled_templates_file

TEMPLATES = json.loads(bundled_templates_file().read_text(encoding="utf-8"))
ALL = [(task, i, t) for task, templates in TEMPLATES.items() for i, t in enumerate(templates)]


def test_bundled_file_matches_shared_data() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiinstruct_templates.json"
    if shared.is_file():
        assert json.loads(shared.read_text()) == TEMPLATES
    assert len(ALL) == 378


@pytest.mark.parametrize("task,index,template", ALL, ids=[f"{t}[{i}]" for t, i, _ in ALL])
def test_mask_restore_is_identity_and_keeps_every_field(task: str, index: int, template: str) -> None:
    masked = DEFAULT_SPEC.mask(template, source=f"{task}[{index}]")
    assert masked.restore(masked.text) == template
    assert "{" not in re.sub(r"\{[A-Z]\}", "", masked.text)
    assert Counter(masked.originals) == Counter(re.findall(r"\{[^{}]*\}", template))


def test_distinct_placeholder_forms_in_the_real_file() -> None:
    forms = {span for _, _, t in ALL for span in DEFAULT_SPEC.protected_spans(t)}
    assert len(forms) == 21
    assert "{split_token.join(options)}" in forms and "{meta_data['relation']}" in forms
    assert "{' '.join(dial_history)}" in forms


def test_repeated_placeholder_restores_after_reordering() -> None:
    masked = DEFAULT_SPEC.mask("Compare {region} with {region} in <image>.")
    assert masked.text == "Compare {A} with {B} in {C}."
    restored = masked.restore("In {C}, compare {B} and {A}.")
    assert restored == "In <image>, compare {region} and {region}."
    assert DEFAULT_SPEC.same_placeholders("Compare {region} with {region} in <image>.", restored)


@pytest.mark.parametrize("broken", ["In {C}, compare {A}.", "{A} {A} {B} {C}", "{A} {B} {C} {D}", "no sentinels"])
def test_restore_refuses_a_changed_multiset(broken: str) -> None:
    assert DEFAULT_SPEC.mask("Compare {region} with {region} in <image>.").restore(broken) is None


def test_newlines_quotes_and_nested_brackets() -> None:
    text = "Relationship: \"{meta_data['relation']}\"\nObject: {region[1]}\n\n{' '.join(dial_history)}"
    spans = DEFAULT_SPEC.protected_spans(text)
    assert spans == ["{meta_data['relation']}", "{region[1]}", "{' '.join(dial_history)}"]
    masked = DEFAULT_SPEC.mask(text)
    assert masked.text == 'Relationship: "{A}"\nObject: {B}\n\n{C}'
    assert masked.restore(masked.text) == text


def test_media_tokens_and_user_regexes() -> None:
    spec = PlaceholderSpec(extra_patterns=(r"\[\d+(?:\.\d+)?(?:, ?\d+(?:\.\d+)?){3}\]",))
    text = "<image>\nWhat is in [0.1, 0.2, 0.5, 0.9] next to <video>?"
    assert spec.protected_spans(text) == ["<image>", "[0.1, 0.2, 0.5, 0.9]", "<video>"]
    assert DEFAULT_SPEC.same_placeholders(text, "<image>\nWhat is next to <video>?")
    assert not spec.same_placeholders(text, "<image>\nWhat is next to <video>?")
    assert spec.same_placeholders(text, "Next to <video>, what is in [0.1, 0.2, 0.5, 0.9]? <image>")


def test_free_text_detection() -> None:
    assert not DEFAULT_SPEC.mask("{question}{options_token} {split_token. join(options)}").has_free_text()
    assert DEFAULT_SPEC.mask("Answer {question}").has_free_text()


@pytest.mark.parametrize("text,where", [("Describe {region.", "'{' at character 9"), ("Describe region}.", "'}' at character 15")])
def test_unbalanced_brace_is_a_one_line_error(text: str, where: str) -> None:
    with pytest.raises(InstrAugError, match=re.escape(where)) as info:
        DEFAULT_SPEC.parse(text, source="templates.json:GC[2]")
    assert "templates.json:GC[2]" in str(info.value) and "\n" not in str(info.value)


def test_bad_user_regex_names_the_pattern() -> None:
    with pytest.raises(InstrAugError, match=r"\(unclosed"):
        PlaceholderSpec(extra_patterns=("(unclosed",))


def test_fill_template_looks_fields_up_and_never_evaluates() -> None:
    fields = {"question": "What color?", "split_token.join(options)": "red | blue", "options_token": " Options:"}
    filled = fill_template("<image>{question}{options_token} {split_token.join(options)}", fields)
    assert filled == "<image>What color? Options: red | blue"
    with pytest.raises(InstrAugError, match="__import__"):
        fill_template("{__import__('os').getcwd()}", fields)
