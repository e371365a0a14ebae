"""How well do pregen's meaning filters separate faithful from unfaithful paraphrases? Threshold choice.

Reads the hand-labeled pairs in `benchmarks/labels/fidelity_labels.jsonl` (seed, paraphrase, same_task:
does the paraphrase still ask for the seed's task, labeled by reading; every pair passed the other
filters of its pregen run). A pair is kept when pregen's default rules keep it (placeholder order,
request, leftover markers, echo: `FilterChain` without a judge) and the judge's score (placeholders masked
alike on both sides) reaches the threshold. For each judge it reports, at the chosen threshold and at
`--threshold`: the share of faithful paraphrases kept (recall), the share of unfaithful ones rejected,
and the precision of what is kept, overall and per placeholder mode. The threshold rule: the highest
threshold that keeps at least `--min-keep` (0.90) of the faithful paraphrases.

The `task_shape` rules were written after reading these labels, so their figures here are optimistic.
`--heldout` (`fidelity_labels_heldout.jsonl`: 16 MultiInstruct tasks absent from the labels, mask mode,
labeled the same way afterwards; its pairs already passed every rule but `task_shape`) checks the
default on data nothing was tuned on: the `meaning filters` entry compares `task_shape` + judge on
those pairs with the same filters on the labeled pairs that pass the same other rules.

    .venv/bin/python benchmarks/fidelity_judge.py --judges minilm --out benchmarks/results/fidelity_judge.json

The rewriter as judge, its threshold chosen on the two non-held-out label sets (the original labels
and the Qwen2.5-Coder-1.5B pools' labels) and checked on the held-out set at that threshold:

    .venv/bin/python benchmarks/fidelity_judge.py --labels benchmarks/labels/fidelity_labels.jsonl \
        benchmarks/labels/fidelity_labels_qwen.jsonl --judges qwen2.5-coder-1.5b,minilm,minilm+qwen2.5-coder-1.5b \
        --threshold chosen --score-cache benchmarks/results/judge_scores --out benchmarks/results/fidelity_judge_qwen.json

`--score-cache benchmarks/results/judge_scores` keeps each judge's scores by masked pair, so a rerun
scores only pairs it has not seen. Each judge's area under the ROC curve (pairs
the rules keep) is reported too: the chance that a faithful pair outscores an unfaithful one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "benchmarks" / "labels" / "fidelity_labels.jsonl"
HELDOUT = ROOT / "benchmarks" / "labels" / "fidelity_labels_heldout.jsonl"
SCORES = ROOT / "benchmarks" / "results" / "judge_scores"


@dataclass(frozen=True)
class Operating:
    """A judge's verdicts on the labeled set at one threshold."""

    threshold: float
    faithful_kept: float  # recall of the faithful class
    unfaithful_rejected: float  # specificity
    precision: float  # share of kept paraphrases that are faithful
    kept: int


def load_labels(path: Path = LABELS) -> list[dict]:
    """The labeled pairs, one JSON object per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rules_keep(rows: Sequence[dict], task_shape: bool = True) -> list[bool]:
    """Whether pregen's default rule filters (no judge, no dedup) keep each pair."""
    from instraug_plugin.core.filters import Candidate, FilterChain, FilterConfig

    chain = FilterChain(FilterConfig(min_fidelity=0, near_duplicate_threshold=1.0, task_shape=task_shape))
    rules = [f for f in chain.filters if f is not chain.duplicate]
    return [all(f.accepts(Candidate(r["paraphrase"], r["seed"], r["seed"], r["task"], r["task"])) for f in rules)
            for r in rows]


def operating_point(scores: Sequence[float], labels: Sequence[bool], threshold: float,
                    rules: Sequence[bool] | None = None) -> Operating:
    """Recall, specificity and precision of `rule verdict and score >= threshold` against `labels`."""
    rules = rules if rules is not None else [True] * len(scores)
    kept = [ok and s >= threshold for s, ok in zip(scores, rules)]
    faithful = sum(labels)
    unfaithful = len(labels) - faithful
    kept_faithful = sum(k and y for k, y in zip(kept, labels))
    kept_unfaithful = sum(k and not y for k, y in zip(kept, labels))
    return Operating(
        threshold=round(threshold, 4),
        faithful_kept=kept_faithful / faithful if faithful else 0.0,
        unfaithful_rejected=1 - kept_unfaithful / unfaithful if unfaithful else 0.0,
        precision=kept_faithful / sum(kept) if sum(kept) else 0.0,
        kept=sum(kept),
    )


def choose_threshold(scores: Sequence[float], labels: Sequence[bool], min_keep: float = 0.9,
                     rules: Sequence[bool] | None = None) -> Operating:
    """The highest threshold (on a 0.01 grid) that keeps at least `min_keep` of the faithful pairs."""
    grid = [round(0.01 * i, 2) for i in range(101)]
    ok = [operating_point(scores, labels, t, rules) for t in grid]
    return max((o for o in ok if o.faithful_kept >= min_keep), key=lambda o: o.threshold)


_LOADED: dict[str, object] = {}


def score_pairs(judge_name: str, rows: Sequence[dict], cache_dir: Path | None = None) -> list[float]:
    """The judge's scores of (seed, paraphrase), masked as pregen masks them; with `cache_dir`, pairs
    scored before (`<cache_dir>/<judge>.json`) are read back and new ones added."""
    from instraug_plugin.core.filters import mask_for_scoring
    from instraug_plugin.judges import load_judge

    cache_file = None if cache_dir is None else cache_dir / f"{judge_name.replace('/', '_')}.json"
    cache = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file and cache_file.is_file() else {}
    pairs = [(mask_for_scoring(r["seed"]), mask_for_scoring(r["paraphrase"])) for r in rows]
    keys = [hashlib.sha256(json.dumps(pair).encode()).hexdigest()[:24] for pair in pairs]
    todo = list(dict.fromkeys(k for k in keys if k not in cache))
    if todo:
        if judge_name not in _LOADED:
            _LOADED[judge_name] = load_judge(judge_name)
        first = {k: pair for k, pair in zip(keys, pairs)}
        cache.update(zip(todo, _LOADED[judge_name].score([first[k] for k in todo])))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache, indent=0, sort_keys=True), encoding="utf-8")
    return [cache[k] for k in keys]


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(a faithful pair scores above an unfaithful one), ties counted half; None without both kinds."""
    positive = [s for s, y in zip(scores, labels) if y]
    negative = [s for s, y in zip(scores, labels) if not y]
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return round(wins / (len(positive) * len(negative)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, nargs="+", default=[LABELS], help="label files to choose thresholds on")
    parser.add_argument("--judges", default="minilm", help="comma-separated judge names")
    parser.add_argument("--min-keep", type=float, default=0.9)
    parser.add_argument("--threshold", help="also report this threshold (e.g. the current default); 'chosen': each judge's chosen one")
    parser.add_argument("--score-cache", type=Path, help=f"keep scores here by pair, so a rerun scores only new pairs (e.g. {SCORES.relative_to(ROOT)})")
    parser.add_argument("--heldout", type=Path, default=HELDOUT, help="labels to check the default on (first judge)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from instraug_plugin.core.filters import DEFAULT_MIN_FIDELITY

    rows = [row | {"_file": path.name} for path in args.labels for row in load_labels(path)]
    subsets = {f"{name}{'/' + pool if pool else ''}": [i for i, r in enumerate(rows) if r["_file"] == name and (not pool or r.get("pool") == pool)]
               for name in dict.fromkeys(r["_file"] for r in rows)
               for pool in ["", *sorted({r["pool"] for r in rows if r["_file"] == name and r.get("pool")})]}
    labels = [bool(r["same_task"]) for r in rows]
    rules = rules_keep(rows)
    modes = sorted({r["mode"] for r in rows})
    print(f"{len(rows)} labeled pairs ({sum(labels)} faithful, {len(rows) - sum(labels)} unfaithful) "
          f"over {len({r['task'] for r in rows})} tasks")
    results = {}
    for name in args.judges.split(","):
        started = time.perf_counter()
        scores = score_pairs(name, rows, args.score_cache)
        seconds = time.perf_counter() - started
        chosen = choose_threshold(scores, labels, args.min_keep, rules)
        threshold = _threshold(args.threshold, chosen.threshold, DEFAULT_MIN_FIDELITY)
        at = operating_point(scores, labels, threshold, rules)
        per_mode = {}
        for mode in modes:
            idx = [i for i, r in enumerate(rows) if r["mode"] == mode]
            point = operating_point([scores[i] for i in idx], [labels[i] for i in idx], threshold, [rules[i] for i in idx])
            per_mode[mode] = asdict(point) | {"pairs": len(idx), "faithful_share": sum(labels[i] for i in idx) / len(idx)}
            print(f"  {mode}: {len(idx)} pairs, {per_mode[mode]['faithful_share']:.1%} faithful before the meaning "
                  f"filters; at {threshold}: keeps {point.faithful_kept:.1%}, rejects {point.unfaithful_rejected:.1%}, "
                  f"precision {point.precision:.1%}")
        rules_only = operating_point(scores, labels, -1.0, rules)
        ruled = [i for i, ok in enumerate(rules) if ok]
        auc = roc_auc([scores[i] for i in ruled], [labels[i] for i in ruled])
        per_set = {}
        for subset, idx in subsets.items():  # each label file (and each pool inside it): AUC, chosen and default threshold
            sub_ruled = [i for i in idx if rules[i]]
            per_set[subset] = {"pairs": len(idx), "auc": roc_auc([scores[i] for i in sub_ruled], [labels[i] for i in sub_ruled])} | {
                f"at_{t}": asdict(operating_point([scores[i] for i in idx], [labels[i] for i in idx], t, [rules[i] for i in idx]))
                for t in dict.fromkeys((chosen.threshold, DEFAULT_MIN_FIDELITY))}
            print(f"  {subset}: {len(idx)} pairs, AUC {per_set[subset]['auc']}; " + "; ".join(
                f"at {key[3:]}: keeps {v['faithful_kept']:.1%}, rejects {v['unfaithful_rejected']:.1%}, precision {v['precision']:.1%}"
                for key, v in per_set[subset].items() if key.startswith("at_")))
        results[name] = {"chosen": asdict(chosen), "at_threshold": asdict(at), "rules_only": asdict(rules_only),
                         "per_mode": per_mode, "auc": auc, "per_label_set": per_set, "seconds": round(seconds, 2)}
        print(f"{name}: area under the ROC curve {auc} on the {len(ruled)} pairs the rules keep")
        print(f"{name}: chosen threshold {chosen.threshold}: keeps {chosen.faithful_kept:.1%} of faithful, rejects "
              f"{chosen.unfaithful_rejected:.1%} of unfaithful, precision {chosen.precision:.1%} | at {at.threshold}: "
              f"keeps {at.faithful_kept:.1%}, rejects {at.unfaithful_rejected:.1%}, precision {at.precision:.1%} "
              f"({seconds:.1f} s incl. load)")
    meaning: dict[str, dict] = {}
    if args.heldout.is_file():
        held = load_labels(args.heldout)
        for name in args.judges.split(","):
            threshold = _threshold(args.threshold, results[name]["chosen"]["threshold"], DEFAULT_MIN_FIDELITY)
            for label_set, pairs in (("labeled", rows), ("heldout", held)):
                before = rules_keep(pairs, task_shape=False)
                sub = [r for r, ok in zip(pairs, before) if ok]
                sub_labels = [bool(r["same_task"]) for r in sub]
                sub_scores = score_pairs(name, sub, args.score_cache)
                point = operating_point(sub_scores, sub_labels, threshold, rules_keep(sub))
                entry = asdict(point) | {"pairs": len(sub), "faithful": sum(sub_labels), "auc": roc_auc(sub_scores, sub_labels),
                                         "tasks": len({r["task"] for r in sub})}
                meaning.setdefault(name, {})[label_set] = entry
                print(f"meaning filters (task_shape + {name} >= {threshold}) on {label_set}: {len(sub)} pairs over "
                      f"{entry['tasks']} tasks, {entry['faithful'] / len(sub):.1%} faithful, AUC {entry['auc']}; keeps "
                      f"{point.faithful_kept:.1%} of faithful, rejects {point.unfaithful_rejected:.1%} of unfaithful, "
                      f"precision {point.precision:.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"labels": [str(p.resolve().relative_to(ROOT)) for p in args.labels], "pairs": len(rows),
                                        "faithful": sum(labels), "min_keep": args.min_keep, "judges": results,
                                        "meaning_filters": meaning}, indent=2), encoding="utf-8")


def _threshold(option: str | None, chosen: float, default: float) -> float:
    """`--threshold`: a number, 'chosen' (the judge's chosen threshold), or absent (the package default)."""
    if option is None:
        return default
    return chosen if option == "chosen" else float(option)


if __name__ == "__main__":
    main()
