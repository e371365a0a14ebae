"""Dataset formats (`instraug_plugin.formats`): LLaMA-Factory's openai formatting and the format registry.

The openai rows go through pregen and build and are checked against LLaMA-Factory's own converter
(the installed llamafactory package), as the training run would read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instraug_plugin.build import build_dataset
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import Pool, PoolRecord, write_pool
from instraug_plugin.core.sampling import InstructionRewriter, choose, rewrite_messages
from instraug_plugin.formats.base import USER, DatasetFormat, Message, require_column
from instraug_plugin.formats.files import Row
from instraug_plugin.formats.registry import DATASET_FORMATS, register_dataset_format
from instraug_plugin.inputs import load_seed_set, load_seeds

OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system", "observation_tag": "tool"}
OPENAI_ENTRY = {"file_name": "chat.json", "formatting": "openai", "columns": {"messages": "messages", "images": "images"},
                "tags": OPENAI_TAGS}
WEATHER_CALL = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
OPENAI_ROWS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "<image>Describe the picture."},
            {"role": "assistant", "content": "A cat on a sofa."},
            {"role": "user", "content": "What color is the cat?"},
            {"role": "assistant", "content": "Grey."},
        ],
        "images": ["cat.jpg"],
        "task": "vision",
    },
    {  # two tool responses in a row: LLaMA-Factory merges them, so the second user turn is aligned turn 4, not 5
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": WEATHER_CALL},
            {"role": "tool", "content": '{"temp": 21}'},
            {"role": "tool", "content": '{"sky": "clear"}'},
            {"role": "assistant", "content": "21 degrees and clear."},
            {"role": "user", "content": "Should I take an umbrella?"},
            {"role": "assistant", "content": "No."},
        ],
        "images": [],
        "task": "tools",
    },
    {  # two user turns in a row: LLaMA-Factory skips the row
        "messages": [{"role": "user", "content": "Hi?"}, {"role": "user", "content": "Anyone there?"}],
        "images": [],
        "task": "tools",
    },
]
PARAPHRASES = {
    "Describe the picture.": ["Say what the picture shows.", "Tell me what is in the picture.",
                              "Give a description of the picture."],
    "What color is the cat?": ["Which color does the cat have?", "What is the cat's color?"],
    "What is the weather in Paris?": ["How is the weather in Paris?", "Tell me the weather in Paris."],
    "Should I take an umbrella?": ["Do I need an umbrella?", "Is an umbrella a good idea?",
                                   "Will I want an umbrella?", "Should an umbrella come with me?"],
}


def openai_info(directory: Path, rows: list[dict[str, Any]] = OPENAI_ROWS, entry: dict[str, Any] = OPENAI_ENTRY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chat.json").write_text(json.dumps(rows), encoding="utf-8")
    (directory / "cat.jpg").write_bytes(b"")  # rows are checked for their media files
    info = directory / "dataset_info.json"
    info.write_text(json.dumps({"chat": entry}), encoding="utf-8")
    return info


def llamafactory_converter(directory: Path, name: str) -> Any:
    """LLaMA-Factory's own converter for dataset `name` of `directory/dataset_info.json`."""
    parser = pytest.importorskip("llamafactory.data.parser")
    converter = pytest.importorskip("llamafactory.data.converter")
    hparams = pytest.importorskip("llamafactory.hparams")
    attr = parser.get_dataset_list([name], str(directory))[0]
    return converter.get_dataset_converter(attr.formatting, attr, hparams.DataArguments(dataset_dir=str(directory)))


def test_openai_pregen_reads_the_user_turns_as_llamafactory_aligns_them(tmp_path: Path) -> None:
    info = openai_info(tmp_path)
    seed_set = load_seed_set(info, dataset="chat", task_column="task", all_turns=True)
    assert seed_set.format == "llamafactory"
    assert [(s.seed_id, s.text) for s in seed_set.seeds] == [
        ("vision/0", "<image>Describe the picture."),
        ("vision/1", "What color is the cat?"),
        ("tools/0", "What is the weather in Paris?"),
        ("tools/1", "Should I take an umbrella?"),
    ]
    assert seed_set.invalid_rows == {"abnormal": 1} and seed_set.skipped_rows == 0  # the row LLaMA-Factory skips
    assert [s.text for s in load_seeds(info, dataset="chat")] == [
        "<image>Describe the picture.", "What is the weather in Paris?"]

    convert = llamafactory_converter(tmp_path, "chat")
    converted = [convert(row) for row in OPENAI_ROWS]
    users = [m["content"] for c in converted for m in c["_prompt"] if m["role"] == "user"]
    assert users == [s.text for s in seed_set.seeds]
    assert converted[0]["_system"].startswith("You are a careful assistant.")  # the system prompt is no seed
    assert [m["role"] for m in converted[1]["_prompt"]] == ["user", "function", "observation", "assistant", "user"]
    assert converted[2]["_prompt"] == []


def _pool(directory: Path, info: Path) -> Path:
    """A pool made from the seeds pregen reads (media tokens at the edges stripped, as pregen does)."""
    seeds = load_seeds(info, dataset="chat", all_turns=True, strip_media=True)
    assert [s.text for s in seeds] == list(PARAPHRASES)
    records = [PoolRecord(s.task, s.seed_id, s.text, s.text) for s in seeds]
    records += [PoolRecord(s.task, s.seed_id, s.text, p, strategy="single") for s in seeds for p in PARAPHRASES[s.text]]
    write_pool(directory, records, {})
    return directory


def _user_contents(row: dict[str, Any]) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "user"]


def test_openai_build_rewrites_only_user_turns_and_llamafactory_reads_what_the_hook_would(tmp_path: Path) -> None:
    data = tmp_path / "data"
    info = openai_info(data)
    pool = _pool(tmp_path / "pool", info)
    seed, copies = 4, 2
    # The draw of row 1's second user turn differs between its aligned position (4) and its list position (5).
    draws = {turn: [choose(seed, k, 1, turn, 4, 0.0) for k in range(copies)] for turn in (4, 5)}
    assert draws[4] != draws[5]

    left_out = build_dataset(dataset=data, name="chat", pools=[pool], epsilon=0.0, seed=seed, copies=copies,
                             all_turns=True, output_dir=tmp_path / "default")
    assert left_out["invalid"] == {"abnormal": 1} and left_out["rows"] == copies * (len(OPENAI_ROWS) - 1)
    summary = build_dataset(dataset=data, name="chat", pools=[pool], epsilon=0.0, seed=seed, copies=copies,
                            all_turns=True, keep_abnormal=True)  # the row LLaMA-Factory skips, copied unchanged
    assert (summary["rewritten"], summary["no_entry"], summary["abnormal_copied"]) == (4, 0, 2)
    built = json.loads(Path(summary["file"]).read_text())
    assert len(built) == copies * len(OPENAI_ROWS)
    for i, row in enumerate(built):
        source = OPENAI_ROWS[i // copies]
        assert {k: v for k, v in row.items() if k != "messages"} == {k: v for k, v in source.items() if k != "messages"}
        assert len(row["messages"]) == len(source["messages"])
        for new, old in zip(row["messages"], source["messages"]):
            if old["role"] == "user":
                assert new == {**old, "content": new["content"]}
            else:
                assert new == old  # system prompt, answers, tool calls and tool responses
        if i // copies < 2:  # rows with pool entries: every user turn reworded, media tokens kept
            for new_text, old_text in zip(_user_contents(row), _user_contents(source)):
                bare = old_text.removeprefix("<image>")
                assert new_text.removeprefix("<image>") in PARAPHRASES[bare]
                assert new_text.startswith("<image>") == old_text.startswith("<image>")
        else:
            assert row == source
    written = json.loads((data / "dataset_info.json").read_text())["chat_instraug"]
    assert {k: written[k] for k in ("formatting", "columns", "tags")} == \
        {k: OPENAI_ENTRY[k] for k in ("formatting", "columns", "tags")}

    # LLaMA-Factory's converter reads the build output; each row's prompt is the source row's prompt
    # rewritten as the training hook rewrites it (same key: copy = epoch, row index, aligned turn).
    convert_built = llamafactory_converter(data, "chat_instraug")
    convert_source = llamafactory_converter(data, "chat")
    rewriter = InstructionRewriter(Pool.load(pool), 0.0, seed)
    for i, row in enumerate(built):
        new, old = convert_built(row), convert_source(OPENAI_ROWS[i // copies])
        for key in ("_response", "_system", "_tools", "_images", "_videos", "_audios"):
            assert new[key] == old[key]
        hooked, _ = rewrite_messages(rewriter, old["_prompt"], task=None, epoch=i % copies, index=i // copies,
                                     all_turns=True)
        assert new["_prompt"] == hooked
    assert convert_built(built[0])["_images"] == [str(data / "cat.jpg")]


def test_openai_entry_without_tags_reads_from_value_messages_as_llamafactory_does(tmp_path: Path) -> None:
    """LLaMA-Factory's tag defaults do not depend on `formatting`: role/content rows need their tags named."""
    entry = {k: v for k, v in OPENAI_ENTRY.items() if k != "tags"}
    info = openai_info(tmp_path, entry=entry)
    with pytest.raises(InstrAugError, match=r"chat\.json:row 0: messages\[0\] has no key 'from'"):
        load_seeds(info, dataset="chat")
    with pytest.raises(KeyError, match="from"):
        llamafactory_converter(tmp_path, "chat")(OPENAI_ROWS[0])


def test_openai_role_without_a_tag_is_a_one_line_error(tmp_path: Path) -> None:
    """LLaMA-Factory's openai converter stops on a role no tag names (sharegpt skips the row instead)."""
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "bot", "content": "Hello."}], "images": []}]
    info = openai_info(tmp_path, rows=rows)
    with pytest.raises(InstrAugError, match=r"chat\.json:row 0: messages\[1\] has role 'bot', which no tag") as exc:
        load_seeds(info, dataset="chat")
    assert "\n" not in str(exc.value)
    with pytest.raises(KeyError, match="bot"):
        llamafactory_converter(tmp_path, "chat")(rows[0])


# ---------------------------------------------------------------- registry


class QuestionAnswerFormat(DatasetFormat):
    """Rows `{question, answer}`: one user turn and its answer (a format added by one class)."""

    def conversation(self, row: dict[str, Any], where: str) -> list[Message]:
        return [{"role": USER, "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]

    def with_user_turns(self, row: dict[str, Any], turns: dict[int, str], where: str) -> dict[str, Any]:
        return {**row, "question": turns[0]}

    def check_columns(self, rows: list[Row]) -> None:
        require_column(rows, "question", "question", self.where)


def test_registry_error_names_every_format_and_a_registered_format_reads_and_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("instraug_plugin.formats.registry.DATASET_FORMATS", dict(DATASET_FORMATS))
    register_dataset_format("qa", QuestionAnswerFormat)
    with pytest.raises(ValueError, match="already exists"):
        register_dataset_format("qa", QuestionAnswerFormat)
    rows = [{"question": "Name a prime.", "answer": "7"}, {"question": "Name a prime.", "answer": "11"}]
    (tmp_path / "qa.json").write_text(json.dumps(rows))
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"qa": {"file_name": "qa.json", "formatting": "qa"},
                                "bad": {"file_name": "qa.json", "formatting": "parquet"}}))
    message = r"dataset_info\.json:bad: unsupported formatting 'parquet' \(supported: alpaca, sharegpt, openai, qa\)$"
    with pytest.raises(InstrAugError, match=message):
        load_seeds(info, dataset="bad")
    with pytest.raises(InstrAugError, match=message):
        build_dataset(dataset=info, name="bad", pools=[tmp_path / "pool"])

    seeds = load_seeds(info, dataset="qa")
    assert [(s.text, s.kind) for s in seeds] == [("Name a prime.", "template")]
    write_pool(tmp_path / "pool", [PoolRecord("default", "default/0", "Name a prime.", "Name a prime."),
                                   PoolRecord("default", "default/0", "Name a prime.", "Give a prime number.",
                                              strategy="single")], {})
    summary = build_dataset(dataset=info, name="qa", pools=[tmp_path / "pool"], epsilon=0.0)
    assert json.loads(Path(summary["file"]).read_text()) == [{**row, "question": "Give a prime number."} for row in rows]
