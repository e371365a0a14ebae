"""Live mode: a rewriter LLM in each rank's main process refreshes the pool before upcoming epochs.

The training split's distinct instructions are sharded across ranks; each rank loads the rewriter
(bitsandbytes 4/8-bit if configured) with `device_map={"": LOCAL_RANK}` on its own device, runs the
pregen pipeline on its shard, and the kept paraphrases are gathered on every rank. Each refresh
uses the next meta-prompts in rotation, so successive refreshes yield different wording. Any
rewriter failure keeps the previous pool (or the original wording): logged and counted, never fatal.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import describe
from instraug_plugin.core.instances import INSTANCE, TEMPLATE, classify
from instraug_plugin.core.placeholders import PlaceholderSpec
from instraug_plugin.core.pool import Pool, PoolRecord, normalize, write_pool
from instraug_plugin.core.sampling import split_edge_media
from instraug_plugin.inputs.base import SeedInstruction
from instraug_plugin.integrations.llamafactory.session import (
    INDEX_COLUMN,
    TASK_COLUMN,
    Session,
    live_pool_dir,
)
from instraug_plugin.procmem import PhasePeak

logger = logging.getLogger(__name__)


def _dist() -> tuple[int, int]:
    """(rank, world size) of an initialized torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if _dist()[1] == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class LiveRefresher:
    """Owns the rewriter backend and the live part of the session's pool."""

    def __init__(self, session: Session):
        self.session = session
        self.backend: Any = None
        self.judge: Any = None  # the fidelity judge, loaded and unloaded with the rewriter
        self.refreshes = 0
        self.last: dict[str, float] = {}

    def seeds(self) -> list[SeedInstruction]:
        """Distinct instructions (user turns, media tokens at the edges stripped) of the training split."""
        dataset = self.session.train_dataset
        if dataset is None:
            return []
        all_turns = self.session.config.turns == "all"
        counts: Counter[tuple[str, str]] = Counter()
        first: dict[tuple[str, str], str] = {}
        columns = [c for c in ("_prompt", TASK_COLUMN, INDEX_COLUMN) if c in dataset.column_names]
        for batch in dataset.with_format(None).select_columns(columns).iter(batch_size=1000):
            tasks = batch.get(TASK_COLUMN) or [None] * len(batch["_prompt"])
            for messages, task in zip(batch["_prompt"], tasks):
                for message in messages:
                    if message.get("role") != "user":
                        continue
                    core = split_edge_media(message["content"])[1]
                    key = (task or "default", normalize(core))
                    counts[key] += 1
                    first.setdefault(key, core)
                    if not all_turns:
                        break
        spec = PlaceholderSpec(extra_patterns=self.session.config.placeholder_regex)
        kinds = {key: classify(first[key], n, spec) for key, n in counts.items()}
        if self.session.config.scope == "template":  # one row's own request is not rephrased
            counts = Counter({key: n for key, n in counts.items() if kinds[key] == TEMPLATE})
        ranked = sorted(counts, key=lambda k: (-counts[k], k))[: self.session.config.live_max_seeds]
        per_task: Counter[str] = Counter()
        seeds = []
        for task, norm in ranked:
            seeds.append(SeedInstruction(task=task, seed_id=f"{task}/{per_task[task]}", text=first[(task, norm)],
                              kind=kinds[(task, norm)]))
            per_task[task] += 1
        return seeds

    def due(self, epoch: int) -> bool:
        """Refresh before epochs 0, N, 2N, ... (N = instraug_live_refresh_every)."""
        return epoch % self.session.config.live_refresh_every == 0

    def refresh(self, epoch: int) -> None:
        """Regenerate paraphrases for this rank's shard of seeds, gather, and swap the pool in."""
        config = self.session.config
        rank, world = _dist()
        started = time.perf_counter()
        seeds = self.seeds()
        shard = seeds[rank::world]
        records: list[PoolRecord] = []
        failed = 0
        peak_mb = 0.0
        try:
            records, peak_mb = self._generate(shard, epoch)
        except Exception as exc:
            failed = len(shard)
            logger.warning("instraug live refresh failed on rank %d (%s); keeping the current pool", rank, describe(exc))
            self.close()
        gathered = _gather((records, failed))
        new = [r for part, _ in gathered for r in part]
        self.session.fallbacks += sum(n for _, n in gathered)
        if new:
            self.session.rewriter.pool = Pool(self.session.base_records + new)
            write_pool(live_pool_dir(self.session.output_dir), new, {"epoch": epoch})
            self.session.state.publish_pool()  # DataLoader workers load it before their next batch
            self.session.pool_version = self.session.state.pool_version  # this process holds it already
            if rank == 0:
                write_pool(Path(self.session.output_dir) / "instraug_live" / f"pool-epoch{epoch}", new,
                           {"epoch": epoch, "model": config.live_model, "seeds": len(seeds)})
        if not config.live_keep_loaded:
            self.close()
        self.refreshes += 1
        self.last = {"live_refresh_seconds": round(time.perf_counter() - started, 2), "live_seeds": len(seeds),
                     "live_paraphrases": len(new), "rewriter_peak_mem_mb": round(peak_mb, 1)}
        logger.info("instraug live refresh before epoch %d: %s", epoch, self.last)

    def _generate(self, shard: list[Any], epoch: int) -> tuple[list[PoolRecord], float]:
        """Kept paraphrases (no seed rows) for `shard`, and the rewriter's peak memory in MiB."""
        import torch

        from instraug_plugin.backends.embedded import embedded_model
        from instraug_plugin.core.cache import GenerationCache
        from instraug_plugin.core.filters import DEFAULT_FIDELITY_JUDGE, FilterConfig
        from instraug_plugin.generation.pipeline import PregenConfig, run_pregen
        from instraug_plugin.generation.prompts import default_counts, load_meta_prompts
        from instraug_plugin.judges import load_judge

        config = self.session.config
        cuda = torch.cuda.is_available()
        host_peak = PhasePeak()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if self.backend is None:
            from instraug_plugin.backends.transformers_backend import TransformersBackend

            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"
            self.backend = TransformersBackend(config.live_model, device=device,
                                               quantization_bits=config.live_quantization_bit,
                                               batch_size=config.live_batch_size)
        embedded = embedded_model(config.live_model)
        prompts = load_meta_prompts(*default_counts(embedded.meta_prompts if embedded else "direct+guided"))
        if any(prompt.count > 1 for prompt in prompts):  # varied prompts: each seed gets its language's, each a list
            chosen = prompts
        else:
            n = min(config.live_num_samples, len(prompts))
            chosen = [prompts[(self.refreshes * n + j) % len(prompts)] for j in range(n)]
        pregen = PregenConfig(strategy=config.live_strategy, temperature=config.live_temperature,
                              batch_size=config.live_batch_size, max_new_tokens=config.live_max_new_tokens,
                              extra_placeholders=config.placeholder_regex,
                              filters=FilterConfig(min_fidelity=config.live_min_fidelity))
        if self.judge is None and (config.live_min_fidelity > 0 or any(seed.kind == INSTANCE for seed in shard)):
            self.judge = load_judge(DEFAULT_FIDELITY_JUDGE, device=self.backend.model.device.type if cuda else "cpu")
        cache = GenerationCache(Path(self.session.output_dir) / "instraug_live" / f"cache-rank{_dist()[0]}.jsonl")
        result = run_pregen(shard, self.backend, chosen, pregen, cache, judge=self.judge)
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = host_peak.mib()
        return [r for r in result.records if not r.is_seed], peak

    def close(self) -> None:
        """Unload the rewriter and free its memory."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None
            self.judge = None
            gc.collect()
