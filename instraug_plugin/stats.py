"""Pool statistics: counts, expansion, filter rejects, lengths and diversity, as markdown + PNG plots.

Torch-free. matplotlib (extra `stats`) is imported only when plots are drawn, on the Agg canvas
(no pyplot, no GUI backend). Words are whitespace-separated tokens, so a placeholder such as
`{question}` counts as one word; distinct-n uses case-folded words and counts n-grams inside each
text (never across two texts): distinct-n = unique n-grams / total n-grams.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import MANIFEST_FILE, PoolRecord, read_manifest, read_records

REPORT_FILE = "stats.md"
LENGTH_PLOT = "length_hist.png"
TASK_PLOT = "task_counts.png"
DISTINCT_ORDERS = (1, 2)


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

    @property
    def pass_rate(self) -> float | None:
        return self.kept / self.generated if self.generated and self.kept is not None else None


@dataclass(frozen=True)
class PoolStats:
    """Everything the report shows."""

    tasks: tuple[TaskCounts, ...]
    strategies: dict[str, int]
    filters: FilterCounts
    seed_lengths: tuple[int, ...]
    paraphrase_lengths: tuple[int, ...]
    distinct: dict[str, dict[int, float | None]]

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
    return FilterCounts(_count(manifest, "generated", source), _count(manifest, "kept", source), rejected)


def compute_stats(
    records: Iterable[PoolRecord], manifest: dict[str, Any], *, source: str = MANIFEST_FILE
) -> PoolStats:
    """Statistics of pool `records`; `manifest` supplies the filter counts (`source` names it in errors)."""
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
    )


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


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
            ["pass rate (kept / generated)", _num(f.pass_rate, "{:.1%}")],
        ],
    )
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
    lines += ["## Per task", ""]
    lines += _md_table(
        ["task", "seeds", "paraphrases", "rows", "expansion"],
        [[t.task, str(t.seeds), str(t.paraphrases), str(t.rows), _num(t.expansion)] for t in stats.tasks],
    )
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_plots(stats: PoolStats, out_dir: Path) -> tuple[Path, ...]:
    """Word-length histogram (seeds vs paraphrases) and per-task counts, as PNG files in `out_dir`."""
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
    return length_path, task_path


def write_stats(pool: Path, out: Path | None = None) -> StatsReport:
    """Read the pool at `pool` (directory or pool.jsonl) and write `stats.md` + PNGs to `out`.

    `out` defaults to `<pool dir>/stats`. Raises InstrAugError on an unreadable or empty pool.
    """
    pool = Path(pool)
    pool_dir = pool if pool.is_dir() else pool.parent
    records = list(read_records(pool))
    if not records:
        raise InstrAugError(f"{pool}: the pool has no records")
    stats = compute_stats(records, read_manifest(pool), source=str(pool_dir / MANIFEST_FILE))
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
    f = stats.filters
    for name, value in (
        ("tasks", str(len(stats.tasks))),
        ("seeds", str(stats.seeds)),
        ("paraphrases", str(stats.paraphrases)),
        ("expansion (rows / seeds)", _num(stats.expansion)),
        ("pass rate (kept / generated)", _num(f.pass_rate, "{:.1%}")),
        *(
            (
                f"distinct-{n} seeds / paraphrases",
                " / ".join(_num(d[n], "{:.3f}") for d in stats.distinct.values()),
            )
            for n in DISTINCT_ORDERS
        ),
        ("strategies", ", ".join(f"{k}={v}" for k, v in stats.strategies.items())),
    ):
        table.add_row(name, value)
    return table


def print_summary(stats: PoolStats, console: Console | None = None) -> None:
    """Print `summary_table` to `console` (stdout by default)."""
    (console or Console()).print(summary_table(stats))
