"""Replies cut off by the token budget: every backend reports them, the cache keeps the finish reason,
and pregen counts them as `truncated` (never as a `placeholders` or `extraction` reject)."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
from openai_server import OpenAIServer  # tests/ is on sys.path (rootdir conftest)

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.openai_backend import SEED_BITS, OpenAIBackend
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.filters import FilterConfig
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import read_manifest
from instraug_plugin.core.replies import LENGTH, STOP, Reply, is_truncated
from instraug_plugin.generation.pipeline import CACHE_FILE, PregenConfig, pregen_to_directory
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs import load_seeds
from instraug_plugin.resources import bundled_templates_file
from instraug_plugin.stats import write_stats

NO_JUDGE = FilterConfig(min_fidelity=0)


def test_cache_keeps_the_finish_reason_and_reads_old_lines_as_stopped(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "old", "text": "from an older cache"}) + "\n")
    cache = GenerationCache(path)
    cache.put_many([("cut", Reply("Describe the", LENGTH)), ("done", Reply("Describe it.")), ("plain", "no reason")])
    lines = {row["key"]: row for row in map(json.loads, path.read_text().splitlines())}
    assert lines["cut"]["finish_reason"] == LENGTH and lines["done"]["finish_reason"] == STOP
    assert "finish_reason" not in lines["plain"]  # a backend that cannot tell
    reloaded = GenerationCache(path)
    assert is_truncated(reloaded.get("cut")) and reloaded.get("cut") == "Describe the"
    assert not any(is_truncated(reloaded.get(key)) for key in ("old", "done", "plain"))


def test_a_reply_keeps_its_finish_reason_across_processes() -> None:
    """The Ray executor sends replies back pickled."""
    [reply] = pickle.loads(pickle.dumps([Reply("Describe the", LENGTH)]))
    assert type(reply) is Reply and is_truncated(reply) and reply == "Describe the"
    assert not is_truncated("plain text") and not is_truncated(Reply("done"))


def _seeds(limit: int = 2):
    return [s for s in load_seeds(bundled_templates_file(), tasks=["GC"]) if DEFAULT_SPEC.protected_spans(s.text)][:limit]


def _finish_reasons(out: Path) -> list[str]:
    return [Reply(row["text"], row.get("finish_reason", STOP)).finish_reason
            for row in map(json.loads, (out / CACHE_FILE).read_text().splitlines())]


def _assert_counts_add_up(manifest: dict) -> None:
    assert sum(f["rejected"] for f in manifest["filters"].values()) + manifest["kept"] == manifest["generated"]


@pytest.mark.slow
def test_both_transformers_decoders_report_replies_that_spent_their_budget(smollm2_backend) -> None:
    prompt = load_meta_prompts(1, 0)[0]
    requests = [GenerationRequest(prompt.messages(m), temperature=0.0, max_new_tokens=n)
                for m in ("Describe {A} in the image.", "What is written on the sign?") for n in (3, 64)]
    replies = smollm2_backend.generate(requests)
    smollm2_backend.decoder = "generate"
    try:
        expected = smollm2_backend.generate(requests)
    finally:
        smollm2_backend.decoder = "shared-prefix"
    reasons = [r.finish_reason for r in replies]
    assert reasons == [r.finish_reason for r in expected] and replies == expected
    assert reasons[0] == reasons[2] == LENGTH and STOP in reasons[1::2], list(zip(replies, reasons))
    for request, reply in zip(requests, replies):
        tokens = len(smollm2_backend.tokenizer(reply, add_special_tokens=False)["input_ids"])
        assert tokens < request.max_new_tokens or is_truncated(reply)


@pytest.mark.slow
def test_constrained_replies_cut_off_before_their_placeholders_are_truncated_not_placeholder_rejects(
    smollm2_backend, tmp_path: Path
) -> None:
    """Two tokens cannot hold `{A}`: constrained decoding opens it and the budget ends the reply."""
    config = PregenConfig(placeholder_mode="constrained", samples_per_prompt=2, max_new_tokens=2, filters=NO_JUDGE)
    seeds = _seeds()
    pregen_to_directory(seeds, smollm2_backend, load_meta_prompts(1, 0), config, tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest["generated"] == 4 and manifest["filters"]["truncated"]["rejected"] == 4
    assert manifest["filters"]["placeholders"]["rejected"] == 0 and manifest["filters"]["extraction"]["rejected"] == 0
    assert manifest["kept"] == 0
    _assert_counts_add_up(manifest)
    masked = [DEFAULT_SPEC.mask(s.text) for s in seeds]
    replies = [json.loads(line)["text"] for line in (tmp_path / CACHE_FILE).read_text().splitlines()]
    assert _finish_reasons(tmp_path) == [LENGTH] * 4
    assert all("{" in r and m.restore(r) is None for r in replies for m in masked)  # each a placeholders reject before
    report = write_stats(tmp_path).markdown.read_text()
    assert "| truncated | 4 | 100.0% |" in report


@pytest.mark.slow
def test_mask_mode_counts_exactly_the_replies_that_hit_the_budget(smollm2_backend, tmp_path: Path) -> None:
    config = PregenConfig(placeholder_mode="mask", samples_per_prompt=3, max_new_tokens=14, filters=NO_JUDGE)
    pregen_to_directory(_seeds(), smollm2_backend, load_meta_prompts(1, 1), config, tmp_path)
    manifest = read_manifest(tmp_path)
    reasons = _finish_reasons(tmp_path)
    assert len(reasons) == manifest["generated"] == 12
    assert manifest["filters"]["truncated"]["rejected"] == reasons.count(LENGTH) > 0
    _assert_counts_add_up(manifest)


@pytest.mark.slow
def test_openai_replies_with_finish_reason_length_are_truncated(smollm2_backend, tmp_path: Path) -> None:
    config = PregenConfig(placeholder_mode="mask", samples_per_prompt=3, max_new_tokens=6, filters=NO_JUDGE)
    with OpenAIServer(smollm2_backend) as server:
        backend = OpenAIBackend("smollm2", server.api_base, max_concurrency=2)
        try:
            pregen_to_directory(_seeds(), backend, load_meta_prompts(1, 0), config, tmp_path)
        finally:
            backend.close()
    sent = list(server.replies.values())
    manifest = read_manifest(tmp_path)
    assert manifest["backend"] == "openai" and manifest["generated"] == len(sent) == 6
    assert manifest["filters"]["truncated"]["rejected"] == sum(map(is_truncated, sent)) > 0
    assert _finish_reasons(tmp_path).count(LENGTH) == sum(map(is_truncated, sent))
    _assert_counts_add_up(manifest)


@pytest.mark.slow
def test_openai_backend_reads_the_finish_reason(smollm2_backend) -> None:
    """A budget of 2 tokens is cut off; a one-line reply stopped at its newline is not."""

    request = GenerationRequest((("user", "Describe the image in one sentence."),), temperature=0.0, max_new_tokens=2)
    with OpenAIServer(smollm2_backend) as server:
        backend = OpenAIBackend("smollm2", server.api_base)
        try:
            cut, stopped = backend.generate([request, replace(request, max_new_tokens=64, single_line=True)])
        finally:
            backend.close()
    assert is_truncated(cut) and cut == server.replies[request.sampling_seed(backend.model_id, SEED_BITS)]
    assert not is_truncated(stopped)
