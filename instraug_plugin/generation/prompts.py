"""Meta-prompts loaded from `templates/meta_prompts/`: direct requests and bootstrapped guides.

`{{instruction}}` in a prompt is replaced by the masked instruction (placeholders shown as `{A}`,
`{B}`, ...). Each meta-prompt carries one worked example as a prior chat turn, which small models
need to answer with a paraphrase instead of answering the instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json_object
from instraug_plugin.resources import templates_dir

INSTRUCTION_SLOT = "{{instruction}}"


@dataclass(frozen=True)
class MetaPrompt:
    """A way of asking for a paraphrase: optional system prompt, a user request, one example."""

    name: str
    request: str
    system: str | None = None
    example: tuple[str, str] | None = None

    def messages(self, masked_instruction: str) -> tuple[tuple[str, str], ...]:
        turns: list[tuple[str, str]] = []
        if self.system:
            turns.append(("system", self.system))
        if self.example:
            turns += [("user", self.request.replace(INSTRUCTION_SLOT, self.example[0])), ("assistant", self.example[1])]
        turns.append(("user", self.request.replace(INSTRUCTION_SLOT, masked_instruction)))
        return tuple(turns)


def _example(data: dict, path: Path) -> tuple[str, str] | None:
    example = data.get("example")
    if example is None:
        return None
    try:
        return str(example["instruction"]), str(example["rephrased"])
    except (KeyError, TypeError):
        raise InstrAugError(f"{path}: 'example' needs keys 'instruction' and 'rephrased'") from None


def load_meta_prompts(
    direct: int | None = 5, guided: int | None = 5, *, direct_file: Path | None = None,
    guides_file: Path | None = None,
) -> list[MetaPrompt]:
    """The first `direct` direct prompts and the first `guided` guides, named `direct/i`, `guided/i`.

    None takes every prompt the file holds. Asking for more than a file holds (or a negative count)
    is an error naming the file.
    """
    direct_file = direct_file or templates_dir() / "meta_prompts" / "direct.json"
    guides_file = guides_file or templates_dir() / "meta_prompts" / "guided.json"
    if (direct is not None and direct < 0) or (guided is not None and guided < 0):
        raise InstrAugError(f"meta-prompt counts must be >= 0; got direct {direct}, guided {guided}")
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
    if not prompts:
        raise InstrAugError("no meta-prompts selected: set direct and/or guided prompts above 0")
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
