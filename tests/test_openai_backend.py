"""The OpenAI-compatible HTTP backend against a real loopback server (tests/openai_server.py) that
serves the real SmolLM2 rewriter: pregen through the CLI, resume, retries, bad keys, timeouts,
concurrency, and the API key never leaving the Authorization header."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from openai_server import Faults, OpenAIServer  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.openai_backend import SEED_BITS, OpenAIBackend, request_body
from instraug_plugin.cli import app
from instraug_plugin.core.constraint import PlaceholderConstraint
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import read_manifest, read_records
from instraug_plugin.resources import bundled_templates_file

KEY_ENV = "INSTRAUG_TEST_API_KEY"
KEY = "sk-test-7f3a9c1e5b2d4f6a8c0e"
REQUEST = GenerationRequest(
    messages=(("system", "You rephrase instructions."), ("user", "Rephrase: Describe the image.")),
    temperature=0.7, max_new_tokens=8,
)


def _requests(count: int) -> list[GenerationRequest]:
    return [GenerationRequest(REQUEST.messages, REQUEST.temperature, max_new_tokens=8, sample_index=i) for i in range(count)]


def _backend(server: OpenAIServer, **options: object) -> OpenAIBackend:
    return OpenAIBackend("smollm2", server.api_base, api_key_env=KEY_ENV, **options)  # type: ignore[arg-type]


def _one_line_error(excinfo: pytest.ExceptionInfo[InstrAugError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and KEY not in message
    return message


def test_request_body_carries_sampling_a_stable_seed_and_the_single_line_stop() -> None:
    body = request_body(REQUEST, "smollm2", "openai:smollm2")
    assert body["model"] == "smollm2" and body["n"] == 1 and body["max_tokens"] == 8 and "stop" not in body
    assert body["messages"][1] == {"role": "user", "content": "Rephrase: Describe the image."}
    assert body["seed"] == REQUEST.sampling_seed("openai:smollm2", SEED_BITS) < 2**31
    seeds = {r.sampling_seed("openai:smollm2", SEED_BITS) for r in _requests(5)}
    assert len(seeds) == 5
    single_line = GenerationRequest(REQUEST.messages, 0.7, single_line=True)
    assert request_body(single_line, "smollm2", "openai:smollm2")["stop"] == ["\n"]


def test_structured_outputs_carry_the_placeholder_regex_for_vllm_servers() -> None:
    constrained = GenerationRequest(REQUEST.messages, 0.7, required_spans=("{A}", "{B}"), single_line=True)
    body = request_body(constrained, "smollm2", "openai:smollm2", structured_outputs=True)
    assert body["structured_outputs"] == {"regex": PlaceholderConstraint(["{A}", "{B}"], single_line=True).to_regex()}
    assert "stop" not in body and "structured_outputs" not in request_body(constrained, "smollm2", "openai:smollm2")
    backend = OpenAIBackend("smollm2", "http://127.0.0.1:9/v1", structured_outputs=True)
    assert backend.supports_constraints and not OpenAIBackend("smollm2", "http://127.0.0.1:9/v1").supports_constraints


@pytest.mark.slow
def test_pregen_cli_over_http_resumes_from_cache_and_never_writes_the_key(
    smollm2_backend, tmp_path: Path, offline_env: dict[str, str]
) -> None:
    out = tmp_path / "pool"
    with OpenAIServer(smollm2_backend, Faults(api_key=KEY)) as server:
        command = [
            sys.executable, "-m", "instraug_plugin", "pregen", str(bundled_templates_file()), "--tasks", "GC",
            "--limit", "2", "--out", str(out), "--backend", "openai", "--api-base", server.api_base,
            "--model", "smollm2", "--api-key-env", KEY_ENV, "--placeholder-mode", "mask", "--direct-prompts", "1",
            "--guided-prompts", "0", "--samples-per-prompt", "3", "--batch-size", "4", "--max-concurrency", "2",
        ]
        runs = [subprocess.run(command, env={**offline_env, KEY_ENV: KEY}, capture_output=True, text=True, timeout=300)
                for _ in range(2)]
        for run in runs:
            assert run.returncode == 0, run.stderr
        assert len(server.received) == 6  # the rerun came entirely from the cache
        assert {r.authorization for r in server.received} == {f"Bearer {KEY}"}
        assert "stop" not in server.received[0].body  # mask mode: free-form replies
    assert "6 from cache" in runs[1].stdout
    manifest = read_manifest(out)
    assert (manifest["backend"], manifest["model"], manifest["generated"]) == ("openai", "openai:smollm2", 6)
    paraphrases = [r for r in read_records(out / "pool.jsonl") if not r.is_seed]
    assert paraphrases, manifest["filters"]
    for record in paraphrases:
        assert Counter(DEFAULT_SPEC.protected_spans(record.text)) == Counter(DEFAULT_SPEC.protected_spans(record.seed))
        assert record.backend == "openai"
    written = [(out / name).read_text(encoding="utf-8") for name in ("manifest.json", "pool.jsonl", "cache.jsonl")]
    for text in written + [run.stdout + run.stderr for run in runs]:
        assert KEY not in text


@pytest.mark.slow
@pytest.mark.parametrize("statuses", [[429, 429], [503, 500]])
def test_transient_failures_are_retried(smollm2_backend, statuses: list[int]) -> None:
    with OpenAIServer(smollm2_backend, Faults(statuses=list(statuses))) as server:
        backend = _backend(server, max_retries=2)
        [reply] = backend.generate([REQUEST])
        backend.close()
        assert len(server.received) == 3
        assert reply == server.replies[REQUEST.sampling_seed(backend.model_id, SEED_BITS)] and reply.strip()


def test_a_bad_key_fails_at_once_in_one_line_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer(None, Faults(api_key="the-right-key")) as server:
        monkeypatch.setenv(KEY_ENV, KEY)
        backend = _backend(server)
        with pytest.raises(InstrAugError) as excinfo:
            backend.generate([REQUEST])
        backend.close()
        message = _one_line_error(excinfo)  # the server echoed the key; the message must not
        assert server.api_base in message and "HTTP 401" in message and f"${KEY_ENV}: set" in message
        assert len(server.received) == 1  # not retried

        monkeypatch.delenv(KEY_ENV)
        backend = _backend(server)
        with pytest.raises(InstrAugError, match=rf"\${KEY_ENV}: not set"):
            backend.generate([REQUEST])
        backend.close()


def test_timeouts_and_an_unreachable_server_fail_in_one_line_after_the_retries() -> None:
    with OpenAIServer(None, Faults(delay=30)) as server:
        backend = _backend(server, request_timeout=0.3, max_retries=2)
        with pytest.raises(InstrAugError) as excinfo:
            backend.generate([REQUEST])
        backend.close()
        assert "after 3 attempt(s), last: ReadTimeout" in _one_line_error(excinfo)
        assert len(server.received) == 3
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    backend = OpenAIBackend("smollm2", f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(InstrAugError) as excinfo:
        backend.generate([REQUEST])
    backend.close()
    message = _one_line_error(excinfo)
    assert f"127.0.0.1:{port}/v1/chat/completions failed after 2 attempt(s), last: ConnectError" in message


@pytest.mark.slow
def test_concurrency_is_bounded_and_replies_keep_request_order(smollm2_backend) -> None:
    requests = _requests(8)
    with OpenAIServer(smollm2_backend, Faults(delay=0.2)) as server:
        backend = _backend(server, max_concurrency=3)
        replies = backend.generate(requests)
        backend.close()
        assert server.max_in_flight == 3
        assert replies == [server.replies[r.sampling_seed(backend.model_id, SEED_BITS)] for r in requests]


def test_cli_rejects_bad_openai_configuration_in_one_line(tmp_path: Path) -> None:
    templates = str(bundled_templates_file())
    base = ["pregen", templates, "--tasks", "GC", "--limit", "1", "--out", str(tmp_path), "--backend", "openai"]
    with OpenAIServer(None) as server:
        served = ["--api-base", server.api_base, "--model", "smollm2"]
        cases = {
            "needs --api-base": ["--model", "smollm2", "--placeholder-mode", "mask"],
            "needs --model": ["--api-base", server.api_base, "--placeholder-mode", "mask"],
            "--quantization-bits does not apply to the openai backend": [*served, "--quantization-bits", "4"],
            "backend openai cannot decode with constraints; rerun with --placeholder-mode mask (or --structured-outputs": [
                *served, "--placeholder-mode", "constrained"],
        }
        for expected, args in cases.items():
            result = CliRunner().invoke(app, base + args)
            assert isinstance(result.exception, InstrAugError), result.output
            assert expected in str(result.exception) and "\n" not in str(result.exception)
        assert server.received == []
    result = CliRunner().invoke(app, ["pregen", templates, "--out", str(tmp_path), "--api-base", "http://x/v1"])
    assert str(result.exception) == "--api-base does not apply to the transformers backend"
