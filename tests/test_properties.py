"""Property-based tests (Hypothesis) for the parts that take arbitrary user text: templates and their
placeholders, pool records, config files, JSON files and dataset rows of each format. The property:
any input gives a result or one InstrAugError, never another exception; a masked-then-restored
template keeps its placeholders. A bounded number of examples per test keeps CI fast."""

from __future__ import annotations

import json
import string
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instraug_plugin.core.configfile import read_mapping_file
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json
from instraug_plugin.core.placeholders import DEFAULT_SPEC, fill_template
from instraug_plugin.core.pool import read_records
from instraug_plugin.inputs import load_seed_set

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# instruction-like text: words, braces, media tokens, CJK, punctuation and whitespace, in any order
PIECES = st.sampled_from(["{", "}", "{question}", "{ a }", "<image>", "<video>", "{{", "}}", "{0}", "\n", " ",
                          "Describe", "这是", "什么", "?", "region <bin_1>", "{x!r}", "{y:>3}", "\\"])
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=12).map("".join)
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                          max_leaves=12)


def _temp_file(name: str, content: str) -> Path:
    folder = Path(tempfile.mkdtemp())
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


@PROPERTY
@given(TEXT)
def test_parse_splits_any_text_or_names_the_problem(text: str) -> None:
    try:
        spans = DEFAULT_SPEC.parse(text)
    except InstrAugError:
        return
    assert "".join(span.text for span in spans) == text


@PROPERTY
@given(TEXT)
def test_mask_then_restore_keeps_every_placeholder(text: str) -> None:
    try:
        masked = DEFAULT_SPEC.mask(text)
    except InstrAugError:
        return
    restored = masked.restore(masked.text)
    assert restored == text
    assert Counter(DEFAULT_SPEC.protected_spans(restored)) == Counter(masked.originals)


@PROPERTY
@given(TEXT, st.dictionaries(st.sampled_from(["question", "a", "x", "0", "y"]), st.text(max_size=5), max_size=3))
def test_fill_template_fills_or_names_the_problem(text: str, fields: dict[str, str]) -> None:
    try:
        out = fill_template(text, fields)
    except InstrAugError:
        return
    assert isinstance(out, str)


@PROPERTY
@given(st.lists(st.one_of(JSON_VALUE.map(json.dumps), st.text(max_size=30)), max_size=5))
def test_pool_records_read_or_name_the_line(lines: list[str]) -> None:
    path = _temp_file("pool.jsonl", "\n".join(lines) + "\n")
    try:
        records = list(read_records(path))
    except InstrAugError:
        return
    assert all(isinstance(r.text, str) and isinstance(r.task, str) for r in records)


@PROPERTY
@given(st.one_of(st.text(alphabet=string.printable + "：，中", max_size=80),
                 st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=4).map(lambda d: json.dumps(d))),
       st.sampled_from(["c.yaml", "c.json"]))
def test_config_files_read_or_name_the_problem(text: str, name: str) -> None:
    path = _temp_file(name, text)
    try:
        data = read_mapping_file(path, "config", "options")
    except InstrAugError:
        return
    assert isinstance(data, dict)


@PROPERTY
@given(st.text(max_size=60))
def test_json_files_read_or_name_the_problem(text: str) -> None:
    path = _temp_file("t.json", text)
    try:
        read_json(path)
    except InstrAugError:
        pass


MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", 3, None]),
                                 "content": st.one_of(TEXT, st.integers(), st.none())})
ROW_VALUE = st.one_of(TEXT, st.integers(), st.none(), st.lists(TEXT, max_size=2))
FORMATS: dict[str, dict[str, Any]] = {
    "alpaca": {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                                   "images": "images"}},
    "sharegpt": {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant", "system_tag": "system"}},
    "openai": {"formatting": "sharegpt", "columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}},
}
ROW = st.one_of(
    st.fixed_dictionaries({"instruction": ROW_VALUE, "input": ROW_VALUE, "output": ROW_VALUE,
                           "images": st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=2))}),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(MESSAGE, max_size=4), ROW_VALUE),
                           "images": st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=2))}),
    JSON_VALUE,
)


@PROPERTY
@given(st.sampled_from(sorted(FORMATS)), st.lists(ROW, max_size=4), st.booleans())
def test_dataset_rows_of_each_format_read_or_name_the_row(fmt: str, rows: list[Any], skip_invalid: bool) -> None:
    folder = Path(tempfile.mkdtemp())
    (folder / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "rows.json", **FORMATS[fmt]}}),
                                               encoding="utf-8")
    try:
        seeds = load_seed_set(folder / "dataset_info.json", dataset="d", skip_invalid=skip_invalid)
    except InstrAugError:
        return
    assert all(isinstance(s.text, str) and s.text.strip() for s in seeds.seeds)
