"""Input readers: template files, LLaMA-Factory datasets (alpaca, sharegpt) and LLaVA json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import normalize
from instraug_plugin.inputs import (
    READERS,
    SeedInstruction,
    get_reader,
    load_seed_set,
    load_seeds,
    register_reader,
)
from instraug_plugin.inputs.base import RawSeeds, ReadOptions, SeedReader
from instraug_plugin.resources import bundled_templates_file


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- template files


def test_bundled_templates_all_load() -> None:
    seed_set = load_seed_set(bundled_templates_file())
    assert seed_set.format == "templates"
    assert len(seed_set.tasks) == 75
    # 378 templates; two tasks repeat one placeholder-only template 5 times (kept once each).
    assert len(seed_set.seeds) + sum(seed_set.duplicates.values()) == 378
    assert seed_set.duplicates == {"open-domain_VQA": 4, "VQA": 4}
    assert len({s.seed_id for s in seed_set.seeds}) == len(seed_set.seeds)
    assert seed_set.seeds[0] == SeedInstruction(
        "image_caption",
        "image_caption/0",
        "In this task, you will look at the image and briefly describe the image.",
    )
    assert any("{" in s.text for s in seed_set.seeds)


def test_templates_dedupe_ids_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_json(
        tmp_path / "t.json",
        {
            "vqa": ["Answer {question}", "answer  {question}", "Reply to {question}."],
            "cap": ["Describe <image>."],
        },
    )
    with caplog.at_level(logging.INFO, logger="instraug_plugin.inputs"):
        seeds = load_seeds(path)
    assert seeds == [
        SeedInstruction("vqa", "vqa/0", "Answer {question}"),
        SeedInstruction("vqa", "vqa/1", "Reply to {question}."),
        SeedInstruction("cap", "cap/0", "Describe <image>."),
    ]
    assert "dropped 1 duplicate seed(s) in 1 task(s)" in caplog.text


def test_templates_task_selection(tmp_path: Path) -> None:
    path = write_json(tmp_path / "t.json", {"a": ["x {q}"], "b": ["y"], "c": ["z"]})
    assert [s.task for s in load_seeds(path, tasks=["c", "a"])] == ["c", "a"]
    with pytest.raises(InstrAugError, match=r"unknown task\(s\) 'nope' \(known: a, b, c\)"):
        load_seeds(path, tasks=["a", "nope"])


def test_unknown_task_listing_is_brief() -> None:
    with pytest.raises(InstrAugError) as info:
        load_seeds(bundled_templates_file(), tasks=["no_such_task"])
    message = str(info.value)
    assert "\n" not in message and "(+67 more)" in message and "image_caption" in message


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"vqa": ["fine {q}", "broken {q"]}, r"t\.json:vqa\[1\]: unbalanced '\{'"),
        ({"vqa": ["fine", "broken }"]}, r"t\.json:vqa\[1\]: unbalanced '\}'"),
        ({"vqa": ["ok"], "empty": []}, r"t\.json: task 'empty' has no instructions"),
        ({"vqa": ["ok", 3]}, r"t\.json:vqa\[1\]: expected a string template, got int"),
        ({"vqa": ["ok", "  "]}, r"t\.json:vqa\[1\]: empty template"),
        ({}, r"t\.json: no instructions found"),
    ],
)
def test_template_errors(tmp_path: Path, data: dict[str, Any], pattern: str) -> None:
    path = write_json(tmp_path / "t.json", data)
    with pytest.raises(InstrAugError, match=pattern):
        load_seeds(path)


def test_errors_only_for_selected_tasks(tmp_path: Path) -> None:
    path = write_json(tmp_path / "t.json", {"good": ["ok {q}"], "bad": ["broken {q"], "empty": []})
    assert [s.text for s in load_seeds(path, tasks=["good"])] == ["ok {q}"]


def test_non_json_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ["x"],,}', encoding="utf-8")
    with pytest.raises(InstrAugError, match=r"bad\.json: not valid JSON \(.* at line 1 column \d+\)"):
        load_seeds(bad)
    with pytest.raises(InstrAugError, match=r"file not found: .*missing\.json"):
        load_seeds(tmp_path / "missing.json")
    with pytest.raises(InstrAugError, match=r"unrecognized input"):
        load_seeds(write_json(tmp_path / "n.json", 3))
    with pytest.raises(InstrAugError, match=r"directory has no dataset_info\.json"):
        load_seeds(tmp_path)


def test_template_file_rejects_dataset_options(tmp_path: Path) -> None:
    path = write_json(tmp_path / "t.json", {"a": ["x"]})
    with pytest.raises(InstrAugError, match="apply to datasets"):
        load_seeds(path, task_column="task")


# ---------------------------------------------------------------- LLaMA-Factory datasets

ALPACA_ROWS = [
    {
        "instruction": "<image>What is shown?",
        "input": "",
        "output": "a cat",
        "images": ["1.jpg"],
        "kind": "vqa",
    },
    {"instruction": "Summarize.", "input": "Long text here.", "output": "short", "kind": "sum"},
    {
        "instruction": "<image>what is  shown?",
        "input": "",
        "output": "a dog",
        "images": ["2.jpg"],
        "kind": "vqa",
    },
    {"instruction": "", "input": "Only an input.", "output": "x", "kind": "sum"},
    {"instruction": "", "input": "", "output": "nothing to paraphrase", "kind": "sum"},
    {
        "instruction": "And now?",
        "input": "",
        "output": "y",
        "history": [["First question?", "first answer"]],
        "kind": "chat",
    },
]


def alpaca_info(tmp_path: Path, **entry: Any) -> Path:
    write_json(tmp_path / "data" / "alpaca.json", ALPACA_ROWS)
    return write_json(
        tmp_path / "dataset_info.json",
        {"mine": {"file_name": "data/alpaca.json", **entry}, "other": {"file_name": "x.json"}},
    )


def test_alpaca_seed_is_the_instruction_without_the_input(tmp_path: Path) -> None:
    """`input` is the row's data: the seed is the `instruction` column alone (a row with only an input has none)."""
    seed_set = load_seed_set(alpaca_info(tmp_path), dataset="mine", skip_invalid=True)
    assert seed_set.format == "llamafactory"
    assert [s.text for s in seed_set.seeds] == [
        "<image>What is shown?",
        "Summarize.",
        "And now?",
    ]
    assert {s.task for s in seed_set.seeds} == {"default"}
    assert seed_set.duplicates == {"default": 1}
    assert seed_set.skipped_rows == 1  # the row with only an input: no instruction to paraphrase
    assert seed_set.invalid_rows == {"no_user_turn": 1}  # instruction and input both empty


def test_alpaca_rows_sharing_an_instruction_give_one_seed(tmp_path: Path) -> None:
    rows = [{"instruction": "Translate to French.", "input": text, "output": "..."}
            for text in ("Good morning.", "Thank you.", "Where is the station?")]
    rows.append({"instruction": "Summarize the text.", "input": "A long text.", "output": "..."})
    write_json(tmp_path / "rows.json", rows)
    info = write_json(tmp_path / "dataset_info.json", {"d": {"file_name": "rows.json"}})
    seed_set = load_seed_set(info, dataset="d")
    assert [s.text for s in seed_set.seeds] == ["Translate to French.", "Summarize the text."]
    assert seed_set.duplicates == {"default": 2}


def test_alpaca_without_a_prompt_column_reads_the_query(tmp_path: Path) -> None:
    """An entry mapping only `query`: the whole user turn is that column, so it is the instruction."""
    seed_set = load_seed_set(alpaca_info(tmp_path, columns={"query": "input"}), dataset="mine", skip_invalid=True)
    assert [s.text for s in seed_set.seeds] == ["Long text here.", "Only an input."]


def test_alpaca_task_column_history_and_directory_source(tmp_path: Path) -> None:
    alpaca_info(tmp_path, columns={"prompt": "instruction", "query": "input", "history": "history"})
    seeds = load_seeds(tmp_path, dataset="mine", task_column="kind", all_turns=True, skip_invalid=True)
    assert [(s.seed_id, s.text) for s in seeds] == [
        ("vqa/0", "<image>What is shown?"),
        ("sum/0", "Summarize."),
        ("chat/0", "First question?"),
        ("chat/1", "And now?"),
    ]
    assert [s.task for s in load_seeds(tmp_path, dataset="mine", task_column="kind", tasks=["chat"],
                                       skip_invalid=True)] == [
        "chat"
    ]


def test_alpaca_columns_object_replaces_defaults(tmp_path: Path) -> None:
    """As in LLaMA-Factory's DatasetAttr.join: a `columns` object without `query` leaves it unset."""
    seed_set = load_seed_set(alpaca_info(tmp_path, columns={"prompt": "instruction"}), dataset="mine",
                             skip_invalid=True)
    assert [s.text for s in seed_set.seeds] == ["<image>What is shown?", "Summarize.", "And now?"]
    assert seed_set.invalid_rows == {"no_user_turn": 2}  # without `query` the input-only row has no user turn


def test_alpaca_jsonl_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "rows.jsonl", [{"q": "Hello {name}?", "a": "hi"}, {"q": "Bye?", "a": "bye"}])
    info = write_json(
        tmp_path / "dataset_info.json", {"d": {"file_name": "rows.jsonl", "columns": {"prompt": "q"}}}
    )
    assert [s.text for s in load_seeds(info, dataset="d")] == ["Hello {name}?", "Bye?"]


@pytest.mark.parametrize(
    ("entry", "kwargs", "pattern"),
    [
        ({}, {"dataset": "nope"}, r"dataset_info\.json: unknown dataset 'nope' \(known: mine, other\)"),
        ({}, {}, r"dataset_info\.json: name the dataset to read \(known: mine, other\)"),
        (
            {"columns": {"prompt": "question"}},
            {"dataset": "mine"},
            r"dataset_info\.json:mine: column 'question' \(columns\.prompt\) is in no row \(row 0 keys: \[",
        ),
        (
            {},
            {"dataset": "mine", "task_column": "category"},
            r"alpaca\.json:row 0: no value in task column 'category'",
        ),
        ({"formatting": "parquetish"}, {"dataset": "mine"}, r"unsupported formatting 'parquetish'"),
        ({}, {"dataset": "other"}, r"dataset file not found: .*x\.json"),
    ],
)
def test_dataset_errors(tmp_path: Path, entry: dict[str, Any], kwargs: dict[str, Any], pattern: str) -> None:
    info = alpaca_info(tmp_path, **entry)
    with pytest.raises(InstrAugError, match=pattern):
        load_seeds(info, **kwargs)


def test_dataset_file_errors(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"instruction": "ok"}\n{broken\n', encoding="utf-8")
    (tmp_path / "rows.csv").write_text("instruction\nok\n", encoding="utf-8")
    info = write_json(
        tmp_path / "dataset_info.json",
        {"bad": {"file_name": "rows.jsonl"}, "csv": {"file_name": "rows.csv"}, "hub": {"hf_hub_url": "a/b"}},
    )
    with pytest.raises(InstrAugError, match=r"rows\.jsonl:2: not valid JSON"):
        load_seeds(info, dataset="bad")
    with pytest.raises(InstrAugError, match=r"rows\.csv: unsupported file type '\.csv'"):
        load_seeds(info, dataset="csv")
    with pytest.raises(InstrAugError, match=r"hub: only local datasets"):
        load_seeds(info, dataset="hub")


SHAREGPT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "<image>Who are they?"},
            {"role": "assistant", "content": "Two people."},
            {"role": "user", "content": "Where are they?"},
            {"role": "assistant", "content": "In a park."},
        ],
        "images": ["1.jpg"],
        "task": "people",
    },
    {  # two user turns in a row: LLaMA-Factory skips the row
        "messages": [{"role": "user", "content": "Skipped?"}, {"role": "user", "content": "Yes."}],
        "task": "people",
    },
    {
        "messages": [
            {"role": "user", "content": "<image>Count the {object}s."},
            {"role": "assistant", "content": "3"},
        ],
        "images": ["2.jpg"],
        "task": "count",
    },
]
SHAREGPT_ENTRY = {
    "file_name": "sg.json",
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images"},
    "tags": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    },
}


def sharegpt_info(tmp_path: Path, rows: list[dict[str, Any]] = SHAREGPT_ROWS) -> Path:
    write_json(tmp_path / "sg.json", rows)
    for name in ("1.jpg", "2.jpg"):  # rows are checked for their media files
        (tmp_path / name).write_bytes(b"")
    return write_json(tmp_path / "dataset_info.json", {"sg": SHAREGPT_ENTRY})


def test_sharegpt_first_and_all_turns(tmp_path: Path) -> None:
    info = sharegpt_info(tmp_path)
    seed_set = load_seed_set(info, dataset="sg", task_column="task")
    assert [(s.seed_id, s.text) for s in seed_set.seeds] == [
        ("people/0", "<image>Who are they?"),
        ("count/0", "<image>Count the {object}s."),
    ]
    assert seed_set.invalid_rows == {"abnormal": 1} and seed_set.skipped_rows == 0  # the row LLaMA-Factory skips
    seeds = load_seeds(info, dataset="sg", all_turns=True)
    assert [s.text for s in seeds] == [
        "<image>Who are they?",
        "Where are they?",
        "<image>Count the {object}s.",
    ]


def test_sharegpt_bad_message_names_row_and_key(tmp_path: Path) -> None:
    rows = [
        SHAREGPT_ROWS[2],
        {"messages": [{"from": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
    ]
    with pytest.raises(InstrAugError, match=r"sg\.json:row 1: messages\[0\] has no key 'role'"):
        load_seeds(sharegpt_info(tmp_path, rows), dataset="sg")
    rows = [{"conversations": []}]
    with pytest.raises(InstrAugError, match=r"column 'messages' \(columns\.messages\) is in no row"):
        load_seeds(sharegpt_info(tmp_path, rows), dataset="sg")


def test_extraction_matches_llamafactory_converter(tmp_path: Path) -> None:
    """Our seeds equal the first user turns of LLaMA-Factory's own converter output, deduplicated.

    For alpaca, the instruction part of that turn: LLaMA-Factory appends "\\n" + input to it.
    """
    parser = pytest.importorskip("llamafactory.data.parser")
    converter = pytest.importorskip("llamafactory.data.converter")
    cases = [
        (alpaca_info(tmp_path / "a"), "mine", ALPACA_ROWS),
        (sharegpt_info(tmp_path / "s"), "sg", SHAREGPT_ROWS),
    ]
    for info, name, rows in cases:
        attr = parser.get_dataset_list([name], str(info.parent))[0]
        attr.images = None  # media paths need DataArguments; they do not affect the prompt
        convert = converter.get_dataset_converter(attr.formatting, attr, None)
        expected: dict[str, str] = {}
        for row in rows:
            users = [m["content"] for m in convert(row)["_prompt"] if m["role"] == "user" and m["content"]]
            if users and "instruction" in row:  # alpaca
                users = [users[0].removesuffix("\n" + row["input"]) if row["instruction"] else ""]
            if users and users[0]:
                expected.setdefault(normalize(users[0]), users[0])
        assert [s.text for s in load_seeds(info, dataset=name, skip_invalid=True)] == list(expected.values())


# ---------------------------------------------------------------- LLaVA json

LLAVA_ROWS = [
    {
        "id": "1",
        "image": "coco/1.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is the man doing?"},
            {"from": "gpt", "value": "Surfing."},
            {"from": "human", "value": "Is it dangerous?"},
            {"from": "gpt", "value": "Somewhat."},
        ],
        "source": "coco",
    },
    {
        "id": "2",
        "image": "vg/2.jpg",
        "conversations": [
            {"from": "human", "value": "What is the man doing?\n<image>"},
            {"from": "gpt", "value": "?"},
        ],
        "source": "vg",
    },
]


def test_llava_first_and_all_turns(tmp_path: Path) -> None:
    path = write_json(tmp_path / "llava.json", LLAVA_ROWS)
    seed_set = load_seed_set(path)
    assert seed_set.format == "llava"
    assert [s.text for s in seed_set.seeds] == [
        "<image>\nWhat is the man doing?",
        "What is the man doing?\n<image>",
    ]
    seeds = load_seeds(path, all_turns=True, task_column="source")
    assert [(s.seed_id, s.text) for s in seeds] == [
        ("coco/0", "<image>\nWhat is the man doing?"),
        ("coco/1", "Is it dangerous?"),
        ("vg/0", "What is the man doing?\n<image>"),
    ]


def test_llava_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(
        InstrAugError, match=r"llava\.json:row 1: expected an object with a 'conversations' list"
    ):
        load_seeds(write_json(tmp_path / "llava.json", [LLAVA_ROWS[0], {"id": "x"}]))
    bad = [{"conversations": [{"from": "human", "value": ["not", "text"]}]}]
    with pytest.raises(InstrAugError, match=r"row 0: conversations\[0\]\.value is not a string"):
        load_seeds(write_json(tmp_path / "llava.json", bad))


# ---------------------------------------------------------------- registry


def test_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class LinesReader(SeedReader):
        name = "lines"

        @classmethod
        def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
            return isinstance(document, str)

        def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
            raw = RawSeeds()
            for i, line in enumerate(document.splitlines()):
                raw.add("default", line, f"{path}:{i}")
            return raw

    monkeypatch.setattr("instraug_plugin.inputs.registry.READERS", dict(READERS))
    register_reader("lines", LinesReader)
    with pytest.raises(ValueError, match="already exists"):
        register_reader("lines", LinesReader)
    assert isinstance(get_reader("lines"), LinesReader)
    seed_set = load_seed_set(write_json(tmp_path / "s.json", "one\ntwo\none"))
    assert seed_set.format == "lines"
    assert [s.text for s in seed_set.seeds] == ["one", "two"]
    with pytest.raises(InstrAugError, match="unknown input format 'nope'"):
        get_reader("nope")
