"""Pool statistics: counts, expansion, filter rejects, lengths and diversity, as markdown + PNG plots.

Torch-free. matplotlib (extra `stats`) is imported only when plots are drawn, on the Agg canvas
(no pyplot, no GUI backend). Words are whitespace-separated tokens, so a placeholder such as
`{question}` counts as one word; distinct-n uses case-folded words and counts n-grams inside each
text (never across two texts): distinct-n = unique n-grams / total n-grams.

From the manifest of newer pools: the fidelity filter (judge, threshold, every score, rejects per
task) and the yield per language; older pools without these keys show "n/a". Embedding diversity
(cosine distances, 1 - cosine similarity) is computed only when a `FidelityJudge` is passed in;
the judge does the embedding, so this module never imports torch.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from instraug_plugin.core.diversity import mean_new_word_share
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.filters import FidelityJudge, mask_for_scoring
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import MANIFEST_FILE, PoolRecord, read_manifest, read_records

REPORT_FILE = "stats.md"
LENGTH_PLOT = "length_hist.png"
TASK_PLOT = "task_counts.png"
FIDELITY_PLOT = "fidelity_hist.png"
DISTINCT_ORDERS = (1, 2)
MAX_PARAPHRASES_PER_SEED = 50  # embedding diversity: at most this many paraphrases of a seed are scored


@dataclass(frozen=True)
class TaskCounts:
    """Seed and paraphrase rows of one task."""

    task: str
    seeds: int
    paraphrases: int

    @property
    def rows(self) -> int:
        return self.seeds + self.paraphrases

    @property
    def expansion(self) -> float | None:
        """Rows per seed (seed rows included); None without seeds."""
        return self.rows / self.seeds if self.seeds else None


@dataclass(frozen=True)
class FilterCounts:
    """What the manifest says about filtering; None where the manifest does not record it."""

    generated: int | None
    kept: int | None
    rejected: dict[str, int]
    candidates: int | None = None  # paraphrases extracted from the replies (a varied reply lists several)

    @property
    def pass_rate(self) -> float | None:
        """kept / paraphrases extracted (older pools, one per reply: kept / generated)."""
        offered = self.candidates or self.generated
        return self.kept / offered if offered and self.kept is not None else None


@dataclass(frozen=True)
class FidelityTask:
    """Paraphrases of one task the fidelity judge scored, and how many it rejected."""

    task: str
    judged: int
    rejected: int

    @property
    def share(self) -> float | None:
        return self.rejected / self.judged if self.judged else None


@dataclass(frozen=True)
class FidelityStats:
    """The manifest's `fidelity` entry: judge, threshold, rejects per task and every score given."""

    judge: str
    min_fidelity: float
    tasks: tuple[FidelityTask, ...]
    scores: tuple[float, ...]

    @property
    def judged(self) -> int:
        return sum(t.judged for t in self.tasks)

    @property
    def rejected(self) -> int:
        return sum(t.rejected for t in self.tasks)

    @property
    def share(self) -> float | None:
        return self.rejected / self.judged if self.judged else None

    @property
    def scores_below(self) -> int:
        """Scores under the threshold (distinct pairs scored, so this may differ from `rejected`)."""
        return sum(score < self.min_fidelity for score in self.scores)


@dataclass(frozen=True)
class LanguageYield:
    """Seeds, generated and kept paraphrases of one language (script) tag, or of one instruction kind."""

    language: str
    seeds: int
    generated: int
    kept: int
    candidates: int = 0  # paraphrases extracted (0: not recorded, one per reply)

    @property
    def yield_(self) -> float | None:
        """kept / paraphrases extracted (older pools: kept / generated); None when nothing was generated."""
        offered = self.candidates or self.generated
        return self.kept / offered if offered else None


@dataclass(frozen=True)
class EmbeddingDiversity:
    """Cosine distances (1 - the judge's cosine similarity) on placeholder-masked texts.

    `within_seed`: per seed, the mean distance over all pairs of its (sampled) paraphrases,
    averaged over the seeds with at least two; `to_seed`: the mean distance of each (sampled)
    paraphrase to its seed. None where there is nothing to measure.
    """

    judge: str
    within_seed: float | None
    to_seed: float | None
    seeds_with_pairs: int
    paraphrases: int
    max_per_seed: int


@dataclass(frozen=True)
class PoolStats:
    """Everything the report shows."""

    tasks: tuple[TaskCounts, ...]
    strategies: dict[str, int]
    filters: FilterCounts
    seed_lengths: tuple[int, ...]
    paraphrase_lengths: tuple[int, ...]
    distinct: dict[str, dict[int, float | None]]
    fidelity: FidelityStats | None = None
    languages: tuple[LanguageYield, ...] = ()
    kinds: tuple[LanguageYield, ...] = ()  # template / instance (core.instances)
    embeddings: EmbeddingDiversity | None = None
    mismatches: tuple[str, ...] = ()  # where pool.jsonl and the manifest disagree
    new_word_share: float | None = None  # core.diversity: content words of a paraphrase not in its seed
    per_seed: tuple[int, int, int] | None = None  # paraphrases per seed: min, median, max

    @property
    def pass_rate(self) -> float | None:
        """kept / generated from the manifest; None when the manifest disagrees with pool.jsonl."""
        return None if self.mismatches else self.filters.pass_rate

    @property
    def seeds(self) -> int:
        return sum(t.seeds for t in self.tasks)

    @property
    def paraphrases(self) -> int:
        return sum(t.paraphrases for t in self.tasks)

    @property
    def rows(self) -> int:
        return self.seeds + self.paraphrases

    @property
    def expansion(self) -> float | None:
        return self.rows / self.seeds if self.seeds else None


@dataclass(frozen=True)
class StatsReport:
    """Files written by `write_stats`."""

    stats: PoolStats
    markdown: Path
    plots: tuple[Path, ...]


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique n-grams / total n-grams over case-folded whitespace words; None if there are none."""
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = text.casefold().split()
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else None


def _count(manifest: dict[str, Any], key: str, source: str) -> int | None:
    value = manifest.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InstrAugError(f"{source}: {key!r} must be a non-negative integer, got {value!r}")
    return value


def _filter_counts(manifest: dict[str, Any], source: str) -> FilterCounts:
    filters = manifest.get("filters") or {}
    if not isinstance(filters, dict):
        raise InstrAugError(f"{source}: 'filters' must be an object {{name: {{\"rejected\": n}}}}")
    rejected = {}
    for name, entry in filters.items():
        if not isinstance(entry, dict):
            raise InstrAugError(f"{source}: filters.{name} must be an object with a 'rejected' count")
        count = _count(entry, "rejected", f"{source}: filters.{name}")
        rejected[name] = 0 if count is None else count
    return FilterCounts(_count(manifest, "generated", source), _count(manifest, "kept", source), rejected,
                        _count(manifest, "candidates", source))


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InstrAugError(f"{source}: {key!r} must be a number, got {value!r}")
    return float(value)


def _fidelity_stats(manifest: dict[str, Any], source: str) -> FidelityStats | None:
    entry = manifest.get("fidelity")
    if entry is None:
        return None
    where = f"{source}: fidelity"
    if not isinstance(entry, dict):
        raise InstrAugError(f"{where} must be an object with judge, min_fidelity, tasks and scores")
    tasks = entry.get("tasks") or {}
    scores = entry.get("scores") or []
    if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
        raise InstrAugError(f'{where}.tasks must be an object {{task: {{"judged": n, "rejected": m}}}}')
    if not isinstance(scores, list):
        raise InstrAugError(f"{where}.scores must be a list of numbers")
    return FidelityStats(
        judge=str(entry.get("judge") or "n/a"),
        min_fidelity=_number(entry.get("min_fidelity"), "min_fidelity", where),
        tasks=tuple(
            FidelityTask(
                task,
                _count(counts, "judged", f"{where}.tasks.{task}") or 0,
                _count(counts, "rejected", f"{where}.tasks.{task}") or 0,
            )
            for task, counts in sorted(tasks.items())
        ),
        scores=tuple(_number(v, "scores", where) for v in scores),
    )


def _group_yields(manifest: dict[str, Any], key: str, source: str) -> tuple[LanguageYield, ...]:
    """Seeds/generated/kept per group from the manifest's `key` ("languages" or "kinds")."""
    groups = manifest.get(key) or {}
    if not isinstance(groups, dict) or not all(isinstance(v, dict) for v in groups.values()):
        raise InstrAugError(f"{source}: '{key}' must be an object {{name: {{seeds, generated, kept}}}}")
    return tuple(
        LanguageYield(
            name,
            *(_count(counts, column, f"{source}: {key}.{name}") or 0
              for column in ("seeds", "generated", "kept", "candidates")),
        )
        for name, counts in sorted(groups.items())
    )


def manifest_mismatches(tasks: Sequence[TaskCounts], manifest: dict[str, Any], source: str) -> tuple[str, ...]:
    """Where the pool's rows disagree with the counts its manifest recorded (seeds, kept, per task).

    A pool.jsonl shortened, extended or edited after pregen shows up here; counts the manifest does
    not record are not compared.
    """
    found: list[str] = []
    seeds = sum(t.seeds for t in tasks)
    paraphrases = sum(t.paraphrases for t in tasks)
    for key, actual, what in (("seeds", seeds, "seed rows"), ("kept", paraphrases, "paraphrase rows")):
        recorded = _count(manifest, key, source)
        if recorded is not None and recorded != actual:
            found.append(f"pool.jsonl has {actual} {what}, the manifest records {key} {recorded}")
    recorded_tasks = manifest.get("tasks")
    if isinstance(recorded_tasks, dict) and recorded_tasks:
        actual_tasks = {t.task: (t.seeds, t.paraphrases) for t in tasks}
        for task in sorted(set(recorded_tasks) | set(actual_tasks)):
            entry = recorded_tasks.get(task)
            counts = (entry.get("seeds"), entry.get("paraphrases")) if isinstance(entry, dict) else None
            if counts != actual_tasks.get(task):
                have = actual_tasks.get(task, (0, 0))
                found.append(f"task {task!r}: pool.jsonl has {have[0]} seeds and {have[1]} paraphrases, the "
                             f"manifest records {counts[0] if counts else 0} and {counts[1] if counts else 0}")
                break  # the first task is enough to point at the problem
    return tuple(found)


def _manifest_spec(manifest: dict[str, Any]) -> PlaceholderSpec:
    """The placeholder spec pregen used (its extra regexes from the manifest config), else the default."""
    config = manifest.get("config")
    extra = config.get("extra_placeholders") if isinstance(config, dict) else None
    if not extra or not isinstance(extra, list) or not all(isinstance(p, str) for p in extra):
        return DEFAULT_SPEC
    try:
        return PlaceholderSpec(extra_patterns=tuple(extra))
    except InstrAugError:
        return DEFAULT_SPEC


def sample_paraphrases(
    seed_id: str, texts: Sequence[str], limit: int = MAX_PARAPHRASES_PER_SEED
) -> list[str]:
    """At most `limit` of `texts`, in their order; the same sample for the same seed id and texts."""
    if len(texts) <= limit:
        return list(texts)
    keep = sorted(random.Random(f"instraug-stats:{seed_id}").sample(range(len(texts)), limit))
    return [texts[i] for i in keep]


def embedding_diversity(
    records: Iterable[PoolRecord],
    judge: FidelityJudge,
    *,
    spec: PlaceholderSpec = DEFAULT_SPEC,
    max_per_seed: int = MAX_PARAPHRASES_PER_SEED,
) -> EmbeddingDiversity:
    """Mean cosine distances among each seed's paraphrases and to the seed, scored by `judge` in one
    batched call on texts masked with `mask_for_scoring` (at most `max_per_seed` paraphrases a seed)."""
    if max_per_seed < 1:
        raise InstrAugError(f"max_per_seed must be at least 1, got {max_per_seed}")
    groups: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for record in records:
        if not record.is_seed:
            groups.setdefault((record.task, record.seed_id), (record.seed, []))[1].append(record.text)
    to_seed_pairs: list[tuple[str, str]] = []
    within_groups: list[list[tuple[str, str]]] = []
    for (_, seed_id), (seed, texts) in groups.items():
        masked = [mask_for_scoring(t, spec) for t in sample_paraphrases(seed_id, texts, max_per_seed)]
        masked_seed = mask_for_scoring(seed, spec)
        to_seed_pairs += [(masked_seed, t) for t in masked]
        if len(masked) >= 2:
            within_groups.append(list(combinations(masked, 2)))
    pairs = to_seed_pairs + [pair for group in within_groups for pair in group]
    scores = list(judge.score(pairs)) if pairs else []
    if len(scores) != len(pairs):
        raise InstrAugError(f"judge {judge.name!r} returned {len(scores)} scores for {len(pairs)} pairs")
    distances = [1.0 - float(s) for s in scores]
    to_seed, rest = distances[: len(to_seed_pairs)], distances[len(to_seed_pairs) :]
    per_seed = []
    for group in within_groups:
        per_seed.append(sum(rest[: len(group)]) / len(group))
        rest = rest[len(group) :]
    return EmbeddingDiversity(
        judge=judge.name,
        within_seed=sum(per_seed) / len(per_seed) if per_seed else None,
        to_seed=sum(to_seed) / len(to_seed) if to_seed else None,
        seeds_with_pairs=len(per_seed),
        paraphrases=len(to_seed),
        max_per_seed=max_per_seed,
    )


def compute_stats(
    records: Iterable[PoolRecord],
    manifest: dict[str, Any],
    *,
    source: str = MANIFEST_FILE,
    judge: FidelityJudge | None = None,
    max_per_seed: int = MAX_PARAPHRASES_PER_SEED,
) -> PoolStats:
    """Statistics of pool `records`; `manifest` supplies the filter, fidelity and language counts
    (`source` names it in errors). With a `judge`, embedding diversity is computed too."""
    records = list(records)
    per_seed_counts: Counter[str] = Counter({r.seed_id: 0 for r in records if r.is_seed})
    per_seed_counts.update(r.seed_id for r in records if not r.is_seed)
    ordered = sorted(per_seed_counts.values())
    seeds: Counter[str] = Counter()
    paraphrases: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    seed_texts: list[str] = []
    paraphrase_texts: list[str] = []
    for record in records:
        strategies[record.strategy] += 1
        if record.is_seed:
            seeds[record.task] += 1
            seed_texts.append(record.text)
        else:
            paraphrases[record.task] += 1
            paraphrase_texts.append(record.text)
    tasks = tuple(TaskCounts(task, seeds[task], paraphrases[task]) for task in sorted(seeds | paraphrases))
    return PoolStats(
        tasks=tasks,
        strategies=dict(strategies.most_common()),
        filters=_filter_counts(manifest, source),
        seed_lengths=tuple(len(t.split()) for t in seed_texts),
        paraphrase_lengths=tuple(len(t.split()) for t in paraphrase_texts),
        distinct={
            name: {n: distinct_n(texts, n) for n in DISTINCT_ORDERS}
            for name, texts in (("seeds", seed_texts), ("paraphrases", paraphrase_texts))
        },
        fidelity=_fidelity_stats(manifest, source),
        languages=_group_yields(manifest, "languages", source),
        kinds=_group_yields(manifest, "kinds", source),
        embeddings=None
        if judge is None
        else embedding_diversity(records, judge, spec=_manifest_spec(manifest), max_per_seed=max_per_seed),
        mismatches=manifest_mismatches(tasks, manifest, source),
        new_word_share=mean_new_word_share(((r.seed, r.text) for r in records if not r.is_seed), _manifest_spec(manifest)),
        per_seed=(ordered[0], ordered[len(ordered) // 2], ordered[-1]) if ordered else None,
    )


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _pass_rate(stats: PoolStats) -> str:
    if stats.mismatches:
        return "n/a (pool.jsonl and manifest disagree)"
    return _num(stats.pass_rate, "{:.1%}")


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def language_warnings(stats: PoolStats) -> list[str]:
    """One line per language that has seeds and generated paraphrases but kept none."""
    lines = []
    for lang in stats.languages:
        if lang.seeds and lang.generated and not lang.kept:
            hint = (
                "see the filter rejects in stats.md"
                if lang.language in ("latin", "none")
                else "the default rewriter serves English (see README)"
            )
            lines.append(f"{lang.language}: 0 of {lang.generated} paraphrases kept; {hint}")
    return lines


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def render_markdown(stats: PoolStats, *, title: str, plots: Sequence[str] = ()) -> str:
    """The markdown report; `plots` are image file names (relative to the report) to embed."""
    f = stats.filters
    lines = [f"# Pool statistics: `{title}`", "", "## Summary", ""]
    lines += _md_table(
        ["metric", "value"],
        [
            ["tasks", str(len(stats.tasks))],
            ["seeds", str(stats.seeds)],
            ["paraphrases", str(stats.paraphrases)],
            ["rows (seeds + paraphrases)", str(stats.rows)],
            ["expansion factor (rows / seeds)", _num(stats.expansion)],
            ["generated (manifest)", _num(f.generated, "{}")],
            ["kept (manifest)", _num(f.kept, "{}")],
            ["pass rate (kept / paraphrases offered)", _pass_rate(stats)],
        ],
    )
    if stats.mismatches:
        lines += ["> warning: pool.jsonl and the manifest disagree (edited after pregen?); the manifest's "
                  "counts do not describe this pool:", ""] + [f"> - {m}" for m in stats.mismatches] + [""]
    lines += ["## Filter rejects", ""]
    if f.rejected:
        lines += _md_table(
            ["filter", "rejected", "share of generated"],
            [
                [name, str(n), _num(n / f.generated if f.generated else None, "{:.1%}")]
                for name, n in f.rejected.items()
            ],
        )
    else:
        lines += ["The manifest records no filter counts.", ""]
    lines += ["## Strategies", ""]
    lines += _md_table(["strategy", "rows"], [[name, str(n)] for name, n in stats.strategies.items()])
    lines += ["## Diversity", ""]
    lines += _md_table(
        ["texts", "count", "mean words", "distinct-1", "distinct-2"],
        [
            [name, str(len(lengths)), _num(_mean(lengths))]
            + [_num(stats.distinct[name][n], "{:.3f}") for n in DISTINCT_ORDERS]
            for name, lengths in (("seeds", stats.seed_lengths), ("paraphrases", stats.paraphrase_lengths))
        ],
    )
    lines += _md_table(
        ["metric", "value"],
        [["new-word share: content words of a paraphrase not in its seed (mean)", _num(stats.new_word_share, "{:.3f}")],
         ["paraphrases per seed: min / median / max", " / ".join(map(str, stats.per_seed)) if stats.per_seed else "n/a"]],
    )
    lines += ["## Embedding diversity", ""]
    e = stats.embeddings
    if e is None:
        lines += ["Not computed (`--no-embeddings`, or no judge could be loaded): n/a.", ""]
    else:
        lines += [
            f"Cosine distance (1 - cosine similarity) from judge `{e.judge}` on placeholder-masked texts; "
            f"at most {e.max_per_seed} paraphrases per seed.",
            "",
        ]
        lines += _md_table(
            ["metric", "value"],
            [
                ["mean pairwise distance among a seed's paraphrases", _num(e.within_seed, "{:.3f}")],
                ["seeds with >= 2 paraphrases", str(e.seeds_with_pairs)],
                ["mean distance paraphrase to seed", _num(e.to_seed, "{:.3f}")],
                ["paraphrases scored", str(e.paraphrases)],
            ],
        )
    lines += ["## Fidelity filter", ""]
    fid = stats.fidelity
    if fid is None:
        lines += ["The manifest records no fidelity filter (turned off, or an older pool): n/a.", ""]
    else:
        lines += [
            f"Judge `{fid.judge}`, min_fidelity {fid.min_fidelity:.2f}: {len(fid.scores)} scores, "
            f"{fid.scores_below} below the threshold.",
            "",
        ]
        lines += _md_table(
            ["task", "judged", "rejected", "share rejected"],
            [[t.task, str(t.judged), str(t.rejected), _num(t.share, "{:.1%}")] for t in fid.tasks]
            + [["all", str(fid.judged), str(fid.rejected), _num(fid.share, "{:.1%}")]],
        )
    lines += ["## Yield per language", ""]
    if stats.languages:
        lines += _md_table(
            ["language", "seeds", "generated", "kept", "yield"],
            [
                [y.language, str(y.seeds), str(y.generated), str(y.kept), _num(y.yield_, "{:.1%}")]
                for y in stats.languages
            ],
        )
        if warnings := language_warnings(stats):
            lines += [f"> warning: {w}" for w in warnings] + [""]
    else:
        lines += ["The manifest records no per-language counts (an older pool): n/a.", ""]
    lines += ["## Yield per instruction kind", ""]
    if stats.kinds:
        lines += ["template: shared by rows or with fields; instance: one row's own request (content protected, "
                  "answer-checked).", ""]
        lines += _md_table(
            ["kind", "seeds", "generated", "kept", "yield", "kept per seed"],
            [[y.language, str(y.seeds), str(y.generated), str(y.kept), _num(y.yield_, "{:.1%}"),
              _num(y.kept / y.seeds if y.seeds else None)] for y in stats.kinds],
        )
    else:
        lines += ["The manifest records no per-kind counts (an older pool): n/a.", ""]
    lines += ["## Per task", ""]
    lines += _md_table(
        ["task", "seeds", "paraphrases", "rows", "expansion"],
        [[t.task, str(t.seeds), str(t.paraphrases), str(t.rows), _num(t.expansion)] for t in stats.tasks],
    )
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_plots(stats: PoolStats, out_dir: Path) -> tuple[Path, ...]:
    """Word-length histogram (seeds vs paraphrases), per-task counts and, when the manifest has
    fidelity scores, their histogram with the threshold; PNG files in `out_dir`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InstrAugError("stats plots need matplotlib: pip install 'instraug-plugin[stats]'") from None
    out_dir.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    longest = max(stats.seed_lengths + stats.paraphrase_lengths, default=0)
    bins = min(longest + 1, 50)
    for name, lengths in (("seeds", stats.seed_lengths), ("paraphrases", stats.paraphrase_lengths)):
        if lengths:
            ax.hist(
                lengths,
                bins=bins,
                range=(0, longest + 1),
                density=True,
                alpha=0.55,
                label=f"{name} (n={len(lengths)})",
            )
    ax.set_xlabel("words per instruction")
    ax.set_ylabel("fraction of texts")
    ax.set_title("Instruction length")
    ax.legend()
    fig.tight_layout()
    length_path = out_dir / LENGTH_PLOT
    fig.savefig(length_path, dpi=100)

    fig = Figure(figsize=(7, 1.5 + 0.25 * len(stats.tasks)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [t.task for t in stats.tasks]
    seeds = [t.seeds for t in stats.tasks]
    ax.barh(names, seeds, label="seeds")
    ax.barh(names, [t.paraphrases for t in stats.tasks], left=seeds, label="paraphrases")
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.set_title("Rows per task")
    ax.legend()
    fig.tight_layout()
    task_path = out_dir / TASK_PLOT
    fig.savefig(task_path, dpi=100)
    if stats.fidelity is None or not stats.fidelity.scores:
        return length_path, task_path
    return length_path, task_path, _fidelity_plot(stats.fidelity, out_dir, Figure, FigureCanvasAgg)


def _fidelity_plot(fid: FidelityStats, out_dir: Path, figure: Any, canvas: Any) -> Path:
    """Histogram of every fidelity score: below the threshold (rejected) and at or above it (kept)."""
    fig = figure(figsize=(7, 4))
    canvas(fig)
    ax = fig.add_subplot()
    low = min(0.0, min(fid.scores), fid.min_fidelity)
    high = max(1.0, max(fid.scores))
    below = [v for v in fid.scores if v < fid.min_fidelity]
    above = [v for v in fid.scores if v >= fid.min_fidelity]
    ax.hist(
        [below, above],
        bins=40,
        range=(low, high),
        stacked=True,
        color=["tab:red", "tab:green"],
        label=[f"rejected (< {fid.min_fidelity:.2f}, n={len(below)})", f"passed (n={len(above)})"],
    )
    ax.axvline(
        fid.min_fidelity, color="black", linestyle="--", label=f"min_fidelity = {fid.min_fidelity:.2f}"
    )
    ax.set_xlabel(f"fidelity score ({fid.judge}: cosine similarity to the seed)")
    ax.set_ylabel("paraphrases")
    ax.set_title("Fidelity scores")
    ax.legend()
    fig.tight_layout()
    path = out_dir / FIDELITY_PLOT
    fig.savefig(path, dpi=100)
    return path


def write_stats(
    pool: Path,
    out: Path | None = None,
    judge: FidelityJudge | None = None,
    *,
    max_per_seed: int = MAX_PARAPHRASES_PER_SEED,
) -> StatsReport:
    """Read the pool at `pool` (directory or pool.jsonl) and write `stats.md` + PNGs to `out`.

    `out` defaults to `<pool dir>/stats`. With a `judge`, embedding diversity is computed (at most
    `max_per_seed` paraphrases per seed). Raises InstrAugError on an unreadable or empty pool.
    """
    pool = Path(pool)
    pool_dir = pool if pool.is_dir() else pool.parent
    records = list(read_records(pool))
    if not records:
        raise InstrAugError(f"{pool}: the pool has no records")
    stats = compute_stats(
        records,
        read_manifest(pool),
        source=str(pool_dir / MANIFEST_FILE),
        judge=judge,
        max_per_seed=max_per_seed,
    )
    out_dir = Path(out) if out is not None else pool_dir / "stats"
    plots = write_plots(stats, out_dir)
    markdown = out_dir / REPORT_FILE
    markdown.write_text(
        render_markdown(stats, title=str(pool), plots=[p.name for p in plots]), encoding="utf-8"
    )
    return StatsReport(stats, markdown, plots)


def summary_table(stats: PoolStats) -> Table:
    """A short rich table of the headline numbers, for the terminal."""
    table = Table(title="Pool statistics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in (
        ("tasks", str(len(stats.tasks))),
        ("seeds", str(stats.seeds)),
        ("paraphrases", str(stats.paraphrases)),
        ("expansion (rows / seeds)", _num(stats.expansion)),
        ("pass rate (kept / paraphrases offered)", _pass_rate(stats)),
        *(
            (
                f"distinct-{n} seeds / paraphrases",
                " / ".join(_num(d[n], "{:.3f}") for d in stats.distinct.values()),
            )
            for n in DISTINCT_ORDERS
        ),
        ("new-word share (vs seed)", _num(stats.new_word_share, "{:.3f}")),
        ("paraphrases per seed min/median/max", " / ".join(map(str, stats.per_seed)) if stats.per_seed else "n/a"),
        ("strategies", ", ".join(f"{k}={v}" for k, v in stats.strategies.items())),
        (
            "fidelity rejected (judged)",
            "n/a"
            if stats.fidelity is None
            else f"{_num(stats.fidelity.share, '{:.1%}')} of {stats.fidelity.judged} ({stats.fidelity.judge})",
        ),
        (
            "yield per language",
            ", ".join(f"{y.language}={_num(y.yield_, '{:.1%}')}" for y in stats.languages) or "n/a",
        ),
        (
            "yield per kind",
            ", ".join(f"{y.language}={_num(y.yield_, '{:.1%}')}" for y in stats.kinds) or "n/a",
        ),
        (
            "embedding distance within seed / to seed",
            "n/a"
            if stats.embeddings is None
            else f"{_num(stats.embeddings.within_seed, '{:.3f}')} / {_num(stats.embeddings.to_seed, '{:.3f}')}",
        ),
    ):
        table.add_row(name, value)
    return table


def print_summary(stats: PoolStats, console: Console | None = None) -> None:
    """Print `summary_table` to `console` (stdout by default), then one warning line per language
    whose paraphrases were all rejected."""
    console = console or Console()
    console.print(summary_table(stats))
    for warning in language_warnings(stats):
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)


def mismatch_warning(stats: PoolStats) -> str | None:
    """One line saying that pool.jsonl and its manifest disagree, or None when they agree."""
    if not stats.mismatches:
        return None
    return f"warning: pool.jsonl and manifest.json disagree: {'; '.join(stats.mismatches)}"
