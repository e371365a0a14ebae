"""Meta-prompts loaded from `templates/meta_prompts/`: direct requests, bootstrapped guides, and
varied requests (several rewordings per reply, one set per language).

`{{instruction}}` in a prompt is replaced by the masked instruction (placeholders shown as `{A}`,
`{B}`, ...), `{{count}}` by the number of rewordings a varied prompt asks for. Each meta-prompt
carries one worked example as a prior chat turn, which small models need to answer with a paraphrase
instead of answering the instruction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json_object
from instraug_plugin.resources import templates_dir

INSTRUCTION_SLOT = "{{instruction}}"
COUNT_SLOT = "{{count}}"
PROMPT_SETS = ("direct+guided", "varied")  # what an embedded model names as its meta-prompts
FALLBACK_LANGUAGE = "en"  # seeds in a language without prompts of its own get these (told to keep their language)


@dataclass(frozen=True)
class MetaPrompt:
    """A way of asking for a paraphrase: optional system prompt, a user request, one example."""

    name: str
    request: str
    system: str | None = None
    example: tuple[str, str] | None = None
    count: int = 1  # paraphrases asked per reply (> 1: a numbered list, `core.extract.extract_items`)
    language: str | None = None  # the seeds it is for (`core.language` tag); None: every seed

    def messages(self, masked_instruction: str) -> tuple[tuple[str, str], ...]:
        turns: list[tuple[str, str]] = []
        if self.system:
            turns.append(("system", self.system))
        if self.example:
            turns += [("user", self._fill(self.example[0])), ("assistant", self.example[1])]
        turns.append(("user", self._fill(masked_instruction)))
        return tuple(turns)

    def _fill(self, instruction: str) -> str:
        return self.request.replace(COUNT_SLOT, str(self.count)).replace(INSTRUCTION_SLOT, instruction)


def prompts_for(meta_prompts: Sequence[MetaPrompt], language: str) -> list[MetaPrompt]:
    """The meta-prompts for a seed in `language`: every prompt without a language, plus the varied
    prompts of that language (else of the fallback language)."""
    languages = {m.language for m in meta_prompts if m.language is not None}
    chosen = language if language in languages else FALLBACK_LANGUAGE
    return [m for m in meta_prompts if m.language is None or m.language == chosen]


def _example(data: dict, path: Path) -> tuple[str, str] | None:
    example = data.get("example")
    if example is None:
        return None
    try:
        return str(example["instruction"]), str(example["rephrased"])
    except (KeyError, TypeError):
        raise InstrAugError(f"{path}: 'example' needs keys 'instruction' and 'rephrased'") from None


def default_counts(prompt_set: str) -> tuple[int | None, int | None, int | None]:
    """(direct, guided, varied) counts of a model's meta-prompt set (None: all of the file)."""
    if prompt_set not in PROMPT_SETS:
        raise InstrAugError(f"unknown meta-prompt set {prompt_set!r}; known: {', '.join(PROMPT_SETS)}")
    return (0, 0, None) if prompt_set == "varied" else (None, None, 0)


def load_meta_prompts(
    direct: int | None = 5, guided: int | None = 5, varied: int | None = 0, *, direct_file: Path | None = None,
    guides_file: Path | None = None, varied_file: Path | None = None,
) -> list[MetaPrompt]:
    """The first `direct` direct prompts, the first `guided` guides and the first `varied` varied
    prompts of each language, named `direct/i`, `guided/i`, `varied/<language>/i`.

    None takes every prompt the file holds. Asking for more than a file holds (or a negative count)
    is an error naming the file.
    """
    direct_file = direct_file or templates_dir() / "meta_prompts" / "direct.json"
    guides_file = guides_file or templates_dir() / "meta_prompts" / "guided.json"
    if any(n is not None and n < 0 for n in (direct, guided, varied)):
        raise InstrAugError(f"meta-prompt counts must be >= 0; got direct {direct}, guided {guided}, varied {varied}")
    prompts: list[MetaPrompt] = []
    if direct != 0:
        data = read_json_object(direct_file)
        requests = data.get("prompts")
        if not isinstance(requests, list) or not all(isinstance(r, str) and INSTRUCTION_SLOT in r for r in requests):
            raise InstrAugError(f"{direct_file}: 'prompts' must be a list of strings containing {INSTRUCTION_SLOT}")
        direct = len(requests) if direct is None else direct
        if direct > len(requests):
            raise InstrAugError(f"--direct-prompts {direct}: {direct_file} has {len(requests)} direct prompts "
                                f"(choose 0-{len(requests)})")
        example = _example(data, direct_file)
        prompts += [MetaPrompt(f"direct/{i}", r, None, example) for i, r in enumerate(requests[:direct])]
    if guided != 0:
        data = read_json_object(guides_file)
        guides, request = data.get("guides"), data.get("request")
        if not isinstance(guides, list) or not isinstance(request, str) or INSTRUCTION_SLOT not in request:
            raise InstrAugError(f"{guides_file}: needs 'guides' (list) and 'request' (string with {INSTRUCTION_SLOT})")
        guided = len(guides) if guided is None else guided
        if guided > len(guides):
            raise InstrAugError(f"--guided-prompts {guided}: {guides_file} has {len(guides)} guides "
                                f"(choose 0-{len(guides)})")
        example = _example(data, guides_file) or _example(read_json_object(direct_file), direct_file)
        prompts += [MetaPrompt(f"guided/{i}", request, str(g), example) for i, g in enumerate(guides[:guided])]
    if varied != 0:
        prompts += _varied_prompts(varied, varied_file or templates_dir() / "meta_prompts" / "varied.json")
    if not prompts:
        raise InstrAugError("no meta-prompts selected: set direct and/or guided prompts above 0")
    return prompts


def _varied_prompts(varied: int | None, path: Path) -> list[MetaPrompt]:
    """`varied.json`: {"count": n, "languages": {tag: {"system", "prompts", "example"}}}."""
    data = read_json_object(path)
    count, languages = data.get("count"), data.get("languages")
    if not isinstance(count, int) or count < 1 or not isinstance(languages, dict) or FALLBACK_LANGUAGE not in languages:
        raise InstrAugError(f"{path}: needs 'count' (an integer >= 1) and 'languages' with an {FALLBACK_LANGUAGE!r} entry")
    prompts: list[MetaPrompt] = []
    for language, entry in languages.items():
        requests = entry.get("prompts") if isinstance(entry, dict) else None
        if not isinstance(requests, list) or not all(isinstance(r, str) and INSTRUCTION_SLOT in r for r in requests):
            raise InstrAugError(f"{path}: languages.{language}.prompts must be a list of strings containing {INSTRUCTION_SLOT}")
        n = len(requests) if varied is None else varied
        if n > len(requests):
            raise InstrAugError(f"--varied-prompts {n}: {path} has {len(requests)} prompts for {language} (choose 0-{len(requests)})")
        system, example = entry.get("system"), _example(entry, path)
        prompts += [MetaPrompt(f"varied/{language}/{i}", r, system, example, count, language) for i, r in enumerate(requests[:n])]
    return prompts


def bootstrap_request(n: int) -> tuple[tuple[str, str], ...]:
    """The chat that asks the rewriter LLM for `n` guiding instructions."""
    text = (templates_dir() / "meta_prompts" / "bootstrap.txt").read_text(encoding="utf-8")
    return (("user", text.replace("{{n}}", str(n)).strip()),)


_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.+?)\s*$")


def parse_guides(reply: str) -> list[str]:
    """Numbered or bulleted lines of a bootstrap reply, deduplicated, in order."""
    guides: list[str] = []
    for line in reply.splitlines():
        match = _NUMBERED.match(line)
        if match and 3 <= len(match.group(1).split()) <= 30 and match.group(1) not in guides:
            guides.append(match.group(1))
    return guides
