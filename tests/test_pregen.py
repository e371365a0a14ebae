"""Pregen end to end: the real SmolLM2 rewriter, constrained decoding, resume, and bad input."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.filters import FilterConfig
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import Pool, read_manifest, read_records
from instraug_plugin.generation.pipeline import PregenConfig, run_pregen
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs import load_seeds
from instraug_plugin.resources import bundled_templates_file

CLI = [sys.executable, "-m", "instraug_plugin"]


class AdversarialBackend:
    """Replies that keep, reorder, drop, duplicate or garble the sentinels of each request.

    Not a stand-in for the LLM (the real one runs below): it feeds the pipeline every way a rewrite
    can break placeholders, over all 378 templates, to check that none survives the filters.
    """

    name = "adversarial"
    model_id = "adversarial"
    supports_constraints = False

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        replies = []
        for r in requests:
            masked = r.messages[-1][1].split("\n", 1)[1].split(": ", 1)[1]
            sentinels = re.findall(r"\{[A-Z]\}", masked)
            variant = r.sample_index % 4
            salt = abs(hash(masked)) % 10**6
            words = " ".join(f"w{salt}s{r.sample_index}x{i}" for i in range(max(3, len(masked.split()) - len(sentinels))))
            if variant == 0:  # valid: sentinels reordered inside new wording
                replies.append(f"Please {words} " + " ".join(reversed(sentinels)))
            elif variant == 1:  # one dropped
                replies.append(f"Please {words} " + " ".join(sentinels[1:]))
            elif variant == 2:  # one duplicated
                replies.append(f"Please {words} " + " ".join(sentinels + sentinels[:1]))
            else:  # garbled into a look-alike
                replies.append(f"Please {words} " + " ".join(s.replace("{", "[").replace("}", "]") for s in sentinels))
        return replies

    def close(self) -> None:
        pass


def test_no_kept_paraphrase_changes_placeholders_over_all_templates(tmp_path: Path) -> None:
    seeds = load_seeds(bundled_templates_file())
    config = PregenConfig(placeholder_mode="mask", samples_per_prompt=4, batch_size=64, filters=FilterConfig(0.0, 10.0, min_fidelity=0, placeholder_order=False, task_shape=False))  # the valid variant reorders; negation is kept out of it
    result = run_pregen(seeds, AdversarialBackend(), load_meta_prompts(1, 0), config, GenerationCache(tmp_path / "c.jsonl"))
    paraphrases = [r for r in result.records if not r.is_seed]
    for record in paraphrases:
        assert Counter(DEFAULT_SPEC.protected_spans(record.text)) == Counter(DEFAULT_SPEC.protected_spans(record.seed))
    rewritable = [s for s in seeds if DEFAULT_SPEC.mask(s.text).has_free_text()]
    with_placeholders = sum(1 for s in rewritable if DEFAULT_SPEC.protected_spans(s.text))
    # Seeds with placeholders keep only the reordered variant; the other three break them.
    assert len(paraphrases) == with_placeholders + 4 * (len(rewritable) - with_placeholders)
    assert result.counts["filters"]["placeholders"]["rejected"] == 3 * with_placeholders
    assert with_placeholders > 250 and result.counts["seeds"] == 370


@pytest.mark.slow
def test_constrained_decoding_emits_each_sentinel_exactly_once(smollm2_backend) -> None:
    prompts = load_meta_prompts(1, 1)
    masked = ["Describe {A} in the image.", "Which region among {B} matches {A}? {C}", "{A} and {B}: compare them."]
    requests = [
        GenerationRequest(p.messages(m), temperature=t, max_new_tokens=n, sample_index=i,
                          required_spans=tuple(re.findall(r"\{[A-Z]\}", m)), single_line=True)
        for i, (p, m) in enumerate((p, m) for p in prompts for m in masked)
        for t, n in ((0.7, 48), (1.0, 10))  # 10 tokens: the budget forces the owed sentinels out
    ]
    replies = smollm2_backend.generate(requests)
    for request, reply in zip(requests, replies):
        assert Counter(re.findall(r"\{[A-Z]\}", reply)) == Counter(request.required_spans), reply
        assert "\n" not in reply.strip()
        assert not re.search(r"[{}]", re.sub(r"\{[A-Z]\}", "", reply)), reply
    pair = [requests[0], requests[2]]
    assert smollm2_backend.generate(pair) == smollm2_backend.generate(pair)  # same batch, same replies


def _pregen(out: Path, *extra: str, env: dict[str, str]) -> subprocess.Popen:
    args = [*CLI, "pregen", str(bundled_templates_file()), "--tasks", "GC,VG", "--limit", "3", "--out", str(out),
            "--direct-prompts", "2", "--guided-prompts", "1", "--batch-size", "2", "--device", "cpu",
            "--placeholder-mode", "constrained", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_pregen_end_to_end_and_resume_after_kill(tmp_path: Path, offline_env: dict[str, str]) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    proc = _pregen(full, env=offline_env)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err

    records = list(read_records(full))
    manifest = read_manifest(full)
    assert manifest["seeds"] == 3 and manifest["generated"] == 9 and manifest["model"] == "SmolLM2-135M-Instruct"
    assert manifest["kept"] == len(records) - 3 and manifest["config"]["placeholder_mode"] == "constrained"
    assert set(manifest["filters"]) >= {"extraction", "placeholders", "length", "echo", "meta_text", "fidelity",
                                        "duplicate", "near_duplicate"}
    assert manifest["fidelity"]["judge"] == "minilm" and manifest["config"]["filters"]["min_fidelity"] > 0
    assert manifest["languages"]["latin"]["seeds"] == 3 and manifest["languages"]["latin"]["generated"] == 9
    assert sum(f["rejected"] for f in manifest["filters"].values()) + manifest["kept"] == 9
    assert manifest["filters"]["placeholders"]["rejected"] == 0  # safe by construction
    for record in records:
        assert DEFAULT_SPEC.same_placeholders(record.seed, record.text)
        if not record.is_seed:
            assert record.meta_prompt in {"direct/0", "direct/1", "guided/0"} and record.model == "SmolLM2-135M-Instruct"
    assert f"{manifest['kept']} paraphrases kept of 9 generated" in out

    proc = _pregen(cut, env=offline_env)
    cache = cut / "cache.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = len(cache.read_text().splitlines())
    assert 2 <= done_before < 9 and not (cut / "pool.jsonl").exists()

    proc = _pregen(cut, env=offline_env)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert (cut / "pool.jsonl").read_text() == (full / "pool.jsonl").read_text()
    resumed = list(read_records(cut))
    assert len({r.id for r in resumed}) == len(resumed)
    assert len(GenerationCache(cache)) == 9
    assert read_manifest(cut)["cache_hits"] >= done_before - done_before % 2


@pytest.mark.slow
def test_iterative_rounds_feed_on_filtered_outputs(tmp_path: Path, smollm2_backend) -> None:
    seeds = load_seeds(bundled_templates_file(), tasks=["GC"])[:2]
    config = PregenConfig(strategy="iterative", rounds=2, batch_size=16)
    result = run_pregen(seeds, smollm2_backend, load_meta_prompts(1, 1), config, GenerationCache(tmp_path / "c.jsonl"))
    pool = Pool(result.records)
    round1 = {r.text for r in pool.records if r.round == 1}
    round2 = [r for r in pool.records if r.round == 2]
    assert round1, "round 1 kept nothing"
    assert result.counts["generated"] == 2 * 2 + 2 * len(round1)
    assert all(r.parent in round1 for r in round2)
    assert all(r.strategy == "iterative" for r in pool.records if not r.is_seed)


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(
    "content,args,message",
    [
        ('{"GC": ["Describe {region."]}', (), r"GC\[0\]: unbalanced"),
        ('{"GC": []}', (), "GC"),
        ("not json at all", (), "not valid JSON"),
        ('{"GC": ["Describe {region}."]}', ("--tasks", "NOPE"), "NOPE"),
        ('{"GC": ["Describe {region}."]}', ("--model", "/no/such/model"), "/no/such/model"),
        ('{"GC": ["Describe {region}."]}', ("--strategy", "fancy"), "strategy"),
        ('{"GC": ["Describe {region}."]}', ("--model", "{tmp}"), "cannot load rewriter model"),  # a dir, not a model
        ('{"GC": ["Describe {region}."]}', ("--device", "cuda:0"), "CUDA is not available"),
        ('{"GC": ["Describe {region}."]}', ("--limit", "0"), "--limit"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path: Path, offline_env, content: str, args, message: str) -> None:
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    source = tmp_path / "templates.json"
    source.write_text(content)
    result = _run_cli("pregen", str(source), "--out", str(tmp_path / "pool"), *args, env=offline_env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]) and "Traceback" not in result.stderr


SMALL_RUN = {"tasks": "GC,VG", "limit": 4, "direct_prompts": 2, "guided_prompts": 1, "samples_per_prompt": 2,
             "batch_size": 4, "device": "cpu", "temperature": 0.7, "min_fidelity": 0.5}


@pytest.mark.slow
def test_pregen_reruns_from_its_manifest_and_from_a_yaml_config(tmp_path: Path, offline_env: dict[str, str]) -> None:
    """A pool's manifest reruns it byte for byte; a YAML config with the same options gives the same pool
    and the same recorded options; a flag given on the command line wins over the file and is recorded."""
    flags = [str(a) for key, value in SMALL_RUN.items() for a in ("--" + key.replace("_", "-"), value)]
    first = _run_cli("pregen", str(bundled_templates_file()), "--out", str(tmp_path / "a"), *flags, env=offline_env)
    assert first.returncode == 0, first.stderr
    manifest = read_manifest(tmp_path / "a")
    recorded = manifest["options"]
    assert {key: recorded[key] for key in SMALL_RUN} == SMALL_RUN
    assert recorded["source"] == str(bundled_templates_file().resolve()) and recorded["out"] == str(tmp_path / "a")
    assert recorded["strategy"] == "single" and recorded["extra_placeholder"] == []  # defaults recorded too
    pool = (tmp_path / "a" / "pool.jsonl").read_text()
    assert manifest["kept"] > 0, manifest["filters"]  # paraphrases, not only seeds, are compared below

    rerun = _run_cli("pregen", "--config", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b"),
                     env=offline_env)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "b" / "pool.jsonl").read_text() == pool
    rerun_manifest = read_manifest(tmp_path / "b")
    assert rerun_manifest["options"] == recorded | {"out": str(tmp_path / "b")}
    assert rerun_manifest["config"] == manifest["config"] and rerun_manifest["cache_hits"] == 0  # generated anew

    # The YAML file: dashes or underscores, a relative source read from the working directory; the
    # file's limit and out lose to the flags, which are recorded.
    (tmp_path / "src.json").write_bytes(bundled_templates_file().read_bytes())
    yaml_lines = [f"{key.replace('_', '-') if i % 2 else key}: {value}" for i, (key, value) in enumerate(SMALL_RUN.items())]
    config = tmp_path / "pregen.yaml"
    config.write_text("\n".join(["source: src.json", "out: not-this-folder", *yaml_lines]).replace("limit: 4", "limit: 1"))
    from_yaml = subprocess.run([*CLI, "pregen", "--config", str(config), "--limit", "4", "--out", "c"], cwd=tmp_path,
                               env=offline_env, capture_output=True, text=True, timeout=300, check=False)
    assert from_yaml.returncode == 0, from_yaml.stderr
    assert (tmp_path / "c" / "pool.jsonl").read_text() == pool and not (tmp_path / "not-this-folder").exists()
    assert read_manifest(tmp_path / "c")["options"] == recorded | {"source": str(tmp_path / "src.json"),
                                                                   "out": str(tmp_path / "c")}


class ListingBackend:
    """Numbered lists of rewordings (the varied meta-prompts' format), as many as the request's sample
    index + 1, each new words around the request's sentinels; it records the requests it saw. A scripted
    stand-in to drive the top-up passes (the real model runs in tests/test_qwen.py)."""

    name = "listing"
    model_id = "listing"
    supports_constraints = False

    def __init__(self) -> None:
        self.seen: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.seen += requests
        replies = []
        for r in requests:
            request = r.messages[-1][1]
            sentinels = " ".join(dict.fromkeys(re.findall(r"\{[A-Z]\}", request)))
            replies.append("\n".join(f"{i + 1}. Kindly word{len(request)}s{r.sample_index}x{i} tell {sentinels} please now."
                                     for i in range(r.sample_index + 1)))
        return replies

    def close(self) -> None:
        pass


def test_top_up_asks_again_only_for_seeds_short_of_the_target(tmp_path: Path) -> None:
    from instraug_plugin.inputs.base import SeedInstruction

    seeds = [SeedInstruction("t", "t/0", "Describe {region} in the picture now."),
             SeedInstruction("z", "z/0", "请描述{region}里的内容。")]
    prompts = load_meta_prompts(0, 0, None)  # varied: one reply lists several rewordings
    config = PregenConfig(min_per_seed=5, top_up_rounds=2, batch_size=8,
                          filters=FilterConfig(0.0, 10.0, min_fidelity=0, near_duplicate_threshold=1.0,
                                               same_language=False, request=False, task_shape=False))
    backend = ListingBackend()
    result = run_pregen(seeds, backend, prompts, config, GenerationCache(tmp_path / "c.jsonl"))
    english = [r for r in backend.seen if "Describe" in r.messages[-1][1]]
    chinese = [r for r in backend.seen if "请描述" in r.messages[-1][1]]
    # Each seed gets its language's two varied prompts; samples 0 (1+1 kept), 1 (2+2), 2 (3+3): 12 >= 5 after
    # the first top-up, so the second top-up pass asks nothing more.
    assert sorted(r.sample_index for r in english) == [0, 0, 1, 1]
    assert sorted(r.sample_index for r in chinese) == [0, 0, 1, 1]
    assert all(m.startswith("varied/zh/") for m in {r.meta_prompt for r in result.records if r.seed_id == "z/0" and not r.is_seed})
    assert result.counts["generated"] == 8 and result.counts["candidates"] == 12 and result.counts["kept"] == 12
    # A rerun with the same cache asks nothing new.
    again = ListingBackend()
    run_pregen(seeds, again, prompts, config, GenerationCache(tmp_path / "c.jsonl"))
    assert again.seen == []


def test_constrained_mode_refuses_varied_prompts(tmp_path: Path) -> None:
    from instraug_plugin.core.errors import InstrAugError
    from instraug_plugin.inputs.base import SeedInstruction

    backend = ListingBackend()
    backend.supports_constraints = True  # as llama.cpp and transformers do
    with pytest.raises(InstrAugError, match="--placeholder-mode constrained decodes one paraphrase per reply"):
        run_pregen([SeedInstruction("t", "t/0", "Describe {region}.")], backend, load_meta_prompts(0, 0, None),
                   PregenConfig(placeholder_mode="constrained"), GenerationCache(tmp_path / "c.jsonl"))
