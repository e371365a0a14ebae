"""Write the hand-written upper-bound pool (arm o of `robustness_effect.py`) as an instraug pool.

`benchmarks/pools/positions_train_hand/hand_written.json` ({task: {training template: [paraphrase, ...]}})
holds 10 paraphrases per training template of the `positions` task set, written by hand (see
`docs/benchmarks.md`); this script turns it into `pool.jsonl` and `manifest.json` in the same folder,
seeds included, so the training hook and `robustness_effect.py --pool-o` read it like any pool.

    .venv/bin/python benchmarks/hand_pool.py
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from instraug_plugin.core.pool import POOL_FORMAT, PoolRecord, write_pool

ROOT = Path(__file__).resolve().parent.parent
HAND_POOL = ROOT / "benchmarks" / "pools" / "positions_train_hand"
SOURCE = "hand_written.json"
STRATEGY = "hand"


def word_trigrams(text: str) -> set[tuple[str, ...]]:
    """3 consecutive words, lower-cased, punctuation dropped (the overlap rule with held-out wordings)."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def hand_records(source: dict[str, dict[str, list[str]]], train_templates: dict[str, list[str]]) -> list[PoolRecord]:
    """Seed records for every training template, then its hand-written paraphrases, in file order."""
    records = []
    for task, templates in train_templates.items():
        for index, template in enumerate(templates):
            seed_id = f"{task}/{index}"
            records.append(PoolRecord(task, seed_id, template, template, kind="template"))
            for text in source.get(task, {}).get(template, []):
                records.append(PoolRecord(task, seed_id, template, text, STRATEGY, round=1, parent=template,
                                          kind="template"))
    return records


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HAND_POOL)
    args = parser.parse_args(argv)
    source = json.loads((HAND_POOL / SOURCE).read_text(encoding="utf-8"))
    train = json.loads((ROOT / "templates" / "benchmark" / "positions_train_templates.json").read_text(encoding="utf-8"))
    unknown = [(t, s) for t, seeds in source.items() for s in seeds if s not in train.get(t, [])]
    if unknown:
        raise SystemExit(f"{HAND_POOL / SOURCE}: not a training template: {unknown[0]}")
    records = hand_records(source, train)
    manifest = {"format": POOL_FORMAT, "backend": "hand", "model": "written by hand", "source": f"{SOURCE}",
                "seeds": sum(map(len, train.values())), "kept": sum(r.strategy == STRATEGY for r in records)}
    path = write_pool(args.out, records, manifest)
    print(f"wrote {path} ({manifest['kept']} paraphrases of {manifest['seeds']} templates)")
    return path


if __name__ == "__main__":
    main()
