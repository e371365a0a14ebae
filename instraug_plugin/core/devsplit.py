"""Development wordings held back from a pool for the online loop (`instraug_adaptive`), torch-free.

The online loop steers each task's epsilon by how the model does under wordings it never trained on;
those must not be the wordings test results are reported on, so they come from the pool itself. Per
task, a share of its template-level paraphrases is held back: the texts with the lowest stable hash
of (seed, task, normalized text), round(share * n) of the task's n candidate texts, at least 1 when
n >= 2 and never all n. Candidates are the task's paraphrase texts that are not some seed's own
wording (those are trained on as originals); seeds and instance-level paraphrases are never held back.

Training's pool leaves out every record whose text is held back (in any task), so the training hook
can never draw one; the development pool holds exactly those records, so its `variants(seed, task)`
are the development wordings of each (task, seed instruction).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from instraug_plugin.core.pool import Pool, PoolRecord, normalize


class DevSplit(NamedTuple):
    """A pool split for the online loop: what training may draw, and the held-back development wordings."""

    train: Pool
    dev: Pool


def dev_rank(seed: int, task: str, text: str) -> int:
    """The stable hash that orders a task's candidate texts (lowest first are held back)."""
    key = f"{seed}\x00{task}\x00{normalize(text)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def held_back_count(candidates: int, share: float) -> int:
    """How many of a task's `candidates` paraphrase texts are held back: round(share * n), in [1, n - 1]
    when n >= 2, else 0."""
    if candidates < 2:
        return 0
    return min(candidates - 1, max(1, round(share * candidates)))


def split_dev(records: Iterable[PoolRecord], share: float, seed: int) -> DevSplit:
    """Hold back `share` of each task's template-level paraphrases as development wordings (see the module)."""
    records = list(records)
    seed_texts = {normalize(r.text) for r in records if r.is_seed} | {normalize(r.seed) for r in records}
    candidates: dict[str, set[str]] = defaultdict(set)
    for record in records:
        text = normalize(record.text)
        if not record.is_seed and record.kind != "instance" and text not in seed_texts:
            candidates[record.task].add(text)
    held: set[str] = set()
    for task, texts in candidates.items():
        ranked = sorted(texts, key=lambda text: (dev_rank(seed, task, text), text))
        held.update(ranked[: held_back_count(len(ranked), share)])
    dev = [r for r in records if not r.is_seed and normalize(r.text) in held]
    train = [r for r in records if r.is_seed or normalize(r.text) not in held]
    return DevSplit(Pool(train), Pool(dev))
