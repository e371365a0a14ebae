"""The hand-written upper-bound pool (arm o of the robustness benchmark): 10 per training template, not
tuned to the held-out wordings, and its pool files are exactly its source."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from benchmark_scripts import load_benchmark

from instraug_plugin.core.pool import normalize, read_records

ROOT = Path(__file__).resolve().parent.parent
HAND = ROOT / "benchmarks" / "pools" / "positions_train_hand"
TEMPLATES = ROOT / "templates" / "benchmark"


def _script() -> ModuleType:
    return load_benchmark("hand_pool")


def _source() -> dict[str, dict[str, list[str]]]:
    return json.loads((HAND / "hand_written.json").read_text(encoding="utf-8"))


def test_ten_distinct_paraphrases_for_every_training_template() -> None:
    train = json.loads((TEMPLATES / "positions_train_templates.json").read_text(encoding="utf-8"))
    source = _source()
    assert {t: sorted(s) for t, s in source.items()} == {t: sorted(s) for t, s in train.items()}
    originals = {normalize(t) for ts in train.values() for t in ts}
    texts = [normalize(p) for seeds in source.values() for ps in seeds.values() for p in ps]
    assert all(len(ps) >= 10 for seeds in source.values() for ps in seeds.values())
    assert len(set(texts)) == len(texts) and not set(texts) & originals
    assert not [p for p in texts if "{" in p or "}" in p]


def test_no_paraphrase_shares_three_consecutive_words_with_a_heldout_wording() -> None:
    trigrams = _script().word_trigrams
    heldout = json.loads((TEMPLATES / "positions_heldout_templates.json").read_text(encoding="utf-8"))
    held = set().union(*(trigrams(w) for ws in heldout.values() for w in ws))
    shared = {p: sorted(trigrams(p) & held) for seeds in _source().values() for ps in seeds.values() for p in ps
              if trigrams(p) & held}
    assert shared == {}


def test_word_trigrams_drop_case_and_punctuation() -> None:
    trigrams = _script().word_trigrams
    assert trigrams("What's the FIRST shape?") == {("what", "s", "the"), ("s", "the", "first"), ("the", "first", "shape")}
    assert trigrams("Two words") == set()


def test_committed_pool_is_its_source(tmp_path: Path) -> None:
    """pool.jsonl holds exactly the seeds and the hand-written paraphrases (rebuilt here, compared)."""
    _script().main(["--out", str(tmp_path)])
    assert (tmp_path / "pool.jsonl").read_text(encoding="utf-8") == (HAND / "pool.jsonl").read_text(encoding="utf-8")
    records = list(read_records(HAND))
    assert sum(not r.is_seed for r in records) == 200 and sum(r.is_seed for r in records) == 20
