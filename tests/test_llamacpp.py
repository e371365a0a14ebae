"""The llama.cpp rewriter on the real embedded SmolLM2 GGUF: grammar-safe placeholders over every
bundled template, per-request seeds, a killed pregen resuming to the same pool, and option errors."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import llama_cpp
import pytest

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend, model_params
from instraug_plugin.backends.registry import create_backend
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import read_manifest
from instraug_plugin.core.replies import LENGTH
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs import load_seeds
from instraug_plugin.resources import bundled_templates_file

CLI = [sys.executable, "-m", "instraug_plugin"]
SENTINEL = re.compile(r"\{[A-Z]\}")


@pytest.fixture(scope="module")
def llamacpp_backend():
    backend = LlamaCppBackend("smollm2", batch_size=32, threads=1)  # tests run two at a time (scripts/test.sh)
    yield backend
    backend.close()


@pytest.mark.parametrize(("options", "message"), [
    ({"dtype": "float32"}, "--dtype does not apply to the llamacpp backend"),
    ({"quantization_bits": 4, "decoder": "generate"}, "--quantization-bits, --decoder do not apply to the llamacpp backend"),
    ({"device": "cuda"}, "the llamacpp backend runs on the CPU; got --device cuda"),
    ({"model": "README.md"}, "the llamacpp backend needs a .gguf file or an embedded model (smollm2, qwen2.5-coder-1.5b); got README.md"),
    ({"batch_size": 0}, "llamacpp: batch size and threads must be >= 1"),
])
def test_options_that_do_not_apply_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(InstrAugError) as error:
        create_backend("llamacpp", **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_models_load_without_the_extra_buffer_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's AMX buffer type segfaults in its matrix multiply (upstream issue 20824), and the extra
    buffer types were no faster elsewhere: the backend loads every model with them off, AMX CPU or not."""
    assert llama_cpp.llama_model_default_params().use_extra_bufts is True  # llama.cpp's own default: on
    assert model_params().use_extra_bufts is False
    loaded = []
    original = llama_cpp.llama_model_load_from_file
    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file",
                        lambda path, params: loaded.append(params.use_extra_bufts) or original(path, params))
    LlamaCppBackend("smollm2", batch_size=2, threads=1).close()
    assert loaded == [False]


def test_threads_apply_only_to_llamacpp() -> None:
    with pytest.raises(InstrAugError, match=r"^--threads does not apply to the transformers backend$"):
        create_backend("transformers", threads=2)


@pytest.mark.slow
def test_grammar_keeps_every_placeholder_over_all_templates(llamacpp_backend: LlamaCppBackend) -> None:
    """One constrained reply per bundled template with placeholders, on a budget of 4 tokens per
    placeholder + 4 (so the forced-sentinel path runs too): each owed sentinel exactly once, no other
    brace, one line. A short prompt keeps the 353 prefills cheap; the grammar does not read it."""
    templates = [t for ts in json.loads(bundled_templates_file().read_text()).values() for t in ts]
    seeds = [s for s in load_seeds(bundled_templates_file()) if DEFAULT_SPEC.protected_spans(s.text)]
    # 361 of the 378 templates have placeholders; as seeds (a task's repeated template once) 353
    assert {s.text for s in seeds} == {t for t in templates if DEFAULT_SPEC.protected_spans(t)} and len(seeds) == 353
    requests = []
    for index, seed in enumerate(seeds):
        masked = DEFAULT_SPEC.mask(seed.text)
        requests.append(GenerationRequest(
            (("user", f"Rewrite this instruction in other words, keeping every {{X}} placeholder: {masked.text}"),),
            temperature=0.7, max_new_tokens=4 * len(masked.sentinels) + 4, sample_index=index,
            required_spans=tuple(masked.sentinels), single_line="\n" not in seed.text))
    replies = llamacpp_backend.generate(requests)
    for request, reply in zip(requests, replies):
        assert Counter(SENTINEL.findall(reply)) == Counter(request.required_spans), (request.required_spans, reply)
        assert not re.search(r"[{}]", SENTINEL.sub("", reply)), reply
        assert request.constraint.accepts(reply), reply
        if request.single_line:
            assert "\n" not in reply
    assert sum(r.finish_reason == LENGTH for r in replies) > 0  # some hit the budget: those were forced


@pytest.mark.slow
def test_same_request_same_reply_in_any_batch(llamacpp_backend: LlamaCppBackend) -> None:
    prompt = load_meta_prompts(1, 0)[0]
    requests = [
        GenerationRequest(prompt.messages(text), temperature=0.8, max_new_tokens=24, sample_index=i,
                          required_spans=tuple(SENTINEL.findall(text)), single_line=True)
        for i, text in enumerate(["Describe {A} in the image.", "Which region among {B} matches {A}?", "Name the object."] * 2)
    ]
    batch = llamacpp_backend.generate(requests)
    assert llamacpp_backend.generate(requests) == batch
    assert llamacpp_backend.generate(requests[3:4]) == batch[3:4]  # a request's seed is its own, not its batch's
    assert len(set(batch)) == len(batch)  # sample_index changes the seed, hence the reply


@pytest.mark.slow
def test_prompts_render_as_transformers_renders_them(llamacpp_backend: LlamaCppBackend, smollm2_backend) -> None:
    """The GGUF's chat template and tokenizer give the transformers backend's prompt tokens."""
    for prompt in load_meta_prompts(2, 1):
        messages = prompt.messages("Describe {A} in the image.")
        text = smollm2_backend.tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in messages], tokenize=False, add_generation_prompt=True)
        assert llamacpp_backend.render(messages) == text
        assert llamacpp_backend.tokenize(text) == smollm2_backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def _pregen(out: Path, env: dict[str, str]) -> subprocess.Popen:
    args = [*CLI, "pregen", str(bundled_templates_file()), "--tasks", "GC,VG", "--limit", "3", "--out", str(out),
            "--direct-prompts", "2", "--guided-prompts", "1", "--batch-size", "2", "--backend", "llamacpp",
            "--placeholder-mode", "constrained", "--min-fidelity", "0", "--threads", "1"]  # the judge: tests/test_pregen.py
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_pregen_resumes_to_the_same_pool(tmp_path: Path, offline_env: dict[str, str]) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    proc = _pregen(full, offline_env)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    manifest = read_manifest(full)
    assert manifest["backend"] == "llamacpp" and manifest["model"] == "SmolLM2-135M-Instruct@llama.cpp"
    assert manifest["generated"] == 9 and manifest["filters"]["placeholders"]["rejected"] == 0

    proc = _pregen(cut, offline_env)
    cache = cut / "cache.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = len(cache.read_text().splitlines())
    assert 2 <= done_before < 9 and not (cut / "pool.jsonl").exists()

    proc = _pregen(cut, offline_env)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert (cut / "pool.jsonl").read_bytes() == (full / "pool.jsonl").read_bytes()
    assert read_manifest(cut)["cache_hits"] >= done_before - done_before % 2
