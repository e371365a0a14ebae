"""Instance-level paraphrases: is the row's answer still right? The answer check and its threshold.

Reads the hand-labeled pairs in `benchmarks/labels/answer_labels.jsonl` (seed, paraphrase, answer_ok:
would the row's original answer still be a correct answer to the paraphrase, labeled by reading). The
pairs are real SmolLM2 output of `instraug-plugin pregen` (defaults, content spans protected) on
`benchmarks/data/lf_demo` (LLaMA-Factory's alpaca_en_demo and mllm_demo, LLaVA-style questions), run
with `--min-fidelity 0 --no-answer-check` so that every paraphrase the other filters keep is labeled.

A pair is kept when the `answer` rules keep it (negation, compared thing, contrast side:
`core.instances.answer_changes`) and the judge's score (content spans masked alike on both sides)
reaches the threshold. Reported, at each threshold: the share of kept paraphrases whose answer is still
right (target >= 95%), the share of the correct ones kept, and kept paraphrases per instruction, overall
and per source. The threshold rule: the lowest threshold (0.01 grid) whose kept share reaches
`--target` (0.95): the most paraphrases at the target.

    .venv/bin/python benchmarks/answer_check.py --out benchmarks/results/answer_check.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "benchmarks" / "labels" / "answer_labels.jsonl"
VALIDATION = ROOT / "benchmarks" / "labels" / "answer_labels_validation.jsonl"
GRID = [round(0.01 * i, 2) for i in range(101)]


@dataclass(frozen=True)
class Point:
    """The answer check's verdicts on the labeled set at one threshold."""

    threshold: float
    kept: int
    correct_share: float  # share of kept paraphrases whose answer is still right (None-safe: 0 when none kept)
    correct_kept: float  # share of the answer-preserving paraphrases that are kept
    per_instruction: float  # kept paraphrases per labeled instruction


def load_labels(path: Path = LABELS) -> list[dict]:
    """The labeled pairs, one JSON object per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rules_keep(rows: Sequence[dict]) -> list[bool]:
    """Whether pregen's rule filters for instance-level seeds (the answer rules included) keep each pair."""
    from instraug_plugin.core.filters import Candidate, FilterChain, FilterConfig
    from instraug_plugin.core.instances import INSTANCE, content_spec

    spec = content_spec()
    chain = FilterChain(FilterConfig(min_fidelity=0, near_duplicate_threshold=1.0), spec)
    rules = [f for f in chain.filters if f is not chain.duplicate]
    return [all(f.accepts(Candidate(r["paraphrase"], r["seed"], r["seed"], r["source"], r["source"], INSTANCE, spec))
                for f in rules) for r in rows]


def point(rows: Sequence[dict], scores: Sequence[float], rules: Sequence[bool], threshold: float) -> Point:
    """Kept count, kept share correct, correct share kept and kept per instruction at `threshold`."""
    labels = [bool(r["answer_ok"]) for r in rows]
    kept = [ok and s >= threshold for s, ok in zip(scores, rules)]
    kept_correct = sum(k and y for k, y in zip(kept, labels))
    return Point(
        threshold=threshold,
        kept=sum(kept),
        correct_share=round(kept_correct / sum(kept), 4) if sum(kept) else 0.0,
        correct_kept=round(kept_correct / sum(labels), 4) if sum(labels) else 0.0,
        per_instruction=round(sum(kept) / len({r["seed"] for r in rows}), 3) if rows else 0.0,
    )


def choose_threshold(rows: Sequence[dict], scores: Sequence[float], rules: Sequence[bool], target: float) -> Point:
    """The lowest threshold on the grid whose kept paraphrases reach `target` correct (and keep some)."""
    for threshold in GRID:
        p = point(rows, scores, rules, threshold)
        if p.kept and p.correct_share >= target:
            return p
    return point(rows, scores, rules, 1.01)


def score_pairs(judge_name: str, rows: Sequence[dict]) -> list[float]:
    """The judge's scores of (seed, paraphrase), content spans masked as pregen masks them."""
    from instraug_plugin.core.filters import mask_for_scoring
    from instraug_plugin.core.instances import content_spec
    from instraug_plugin.judges import load_judge

    spec = content_spec()
    return load_judge(judge_name).score([(mask_for_scoring(r["seed"], spec), mask_for_scoring(r["paraphrase"], spec))
                                         for r in rows])


def evaluate(rows: Sequence[dict], scores: Sequence[float], target: float, threshold: float) -> dict:
    """Every figure README quotes: no check, rules only, the chosen and the default threshold, per source."""
    rules = rules_keep(rows)
    everything = [True] * len(rows)
    chosen = choose_threshold(rows, scores, rules, target)
    per_source = {}
    for source in sorted({r["source"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        sub = [rows[i] for i in idx]
        per_source[source] = {
            "pairs": len(idx), "instructions": len({r["seed"] for r in sub}),
            "no_check": asdict(point(sub, [scores[i] for i in idx], [True] * len(idx), -1.0)),
            "default": asdict(point(sub, [scores[i] for i in idx], [rules[i] for i in idx], threshold)),
        }
    return {
        "pairs": len(rows), "answer_ok": sum(bool(r["answer_ok"]) for r in rows),
        "instructions": len({r["seed"] for r in rows}), "target": target,
        "no_check": asdict(point(rows, scores, everything, -1.0)),
        "rules_only": asdict(point(rows, scores, rules, -1.0)),
        "judge_only_at_default": asdict(point(rows, scores, everything, threshold)),
        "chosen": asdict(chosen),
        "default": asdict(point(rows, scores, rules, threshold)),
        "per_source": per_source,
        "curve": [asdict(point(rows, scores, rules, t)) for t in GRID if 0.5 <= t <= 0.99],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--judge", default="minilm")
    parser.add_argument("--target", type=float, default=0.95, help="share of kept paraphrases whose answer is right")
    parser.add_argument("--threshold", type=float, help="report this threshold as the default (else the package's)")
    parser.add_argument("--validation", type=Path, default=VALIDATION, help="labels to check the default on")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from instraug_plugin.core.filters import DEFAULT_INSTANCE_MIN_FIDELITY

    rows = load_labels(args.labels)
    threshold = DEFAULT_INSTANCE_MIN_FIDELITY if args.threshold is None else args.threshold
    result = {"labels": str(args.labels.relative_to(ROOT)) if args.labels.is_relative_to(ROOT) else str(args.labels),
              "judge": args.judge} | evaluate(rows, score_pairs(args.judge, rows), args.target, threshold)
    if args.validation.is_file():
        held = load_labels(args.validation)
        result["validation"] = evaluate(held, score_pairs(args.judge, held), args.target, threshold)
    print(f"{result['pairs']} labeled pairs over {result['instructions']} instructions, "
          f"{result['answer_ok']} keep the answer right")
    for name in ("no_check", "rules_only", "judge_only_at_default", "chosen", "default"):
        p = result[name]
        print(f"  {name:22} threshold {p['threshold']:>5}: kept {p['kept']:3d}, {p['correct_share']:.1%} of kept right, "
              f"{p['correct_kept']:.1%} of right ones kept, {p['per_instruction']:.2f} per instruction")
    for name, figures in [(f"labels/{k}", v) for k, v in result["per_source"].items()] + (
            [(f"validation/{k}", v) for k, v in result["validation"]["per_source"].items()] if "validation" in result else []):
        p = figures["default"]
        print(f"  {name:18} {figures['pairs']:3d} pairs: at the default {p['kept']} kept, {p['correct_share']:.1%} right, "
              f"{p['per_instruction']:.2f} per instruction (no check: {figures['no_check']['correct_share']:.1%} right)")
    if "validation" in result:
        v = result["validation"]
        print(f"  validation: {v['pairs']} pairs over {v['instructions']} instructions; at the default "
              f"{v['default']['kept']} kept, {v['default']['correct_share']:.1%} right, "
              f"{v['default']['per_instruction']:.2f} per instruction (no check: {v['no_check']['correct_share']:.1%} right)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
