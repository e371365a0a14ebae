"""Protected spans: parse an instruction into text and placeholders, mask, restore, validate.

Protected spans are `{...}` fields (any expression MultiInstruct uses, nested brackets and quotes
included), media tokens `<image>`, `<video>`, `<audio>`, and user-supplied regexes (for example
region coordinate strings; a regex with a group named `protect` protects only that group). Rewriting may move protected spans but must keep their multiset.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from instraug_plugin.core.errors import InstrAugError

MEDIA_TOKENS: tuple[str, ...] = ("<image>", "<video>", "<audio>")
SENTINEL_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Span:
    """A piece of an instruction: free text, or a protected span that must survive verbatim."""

    text: str
    protected: bool


def _scan_brace_field(text: str, start: int) -> int:
    """Return the index just past the `}` closing the field opened at `start`; -1 if unbalanced."""
    depth, quote, i = 0, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and depth > 0:
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


@dataclass(frozen=True)
class PlaceholderSpec:
    """Which spans count as protected: `{...}` fields, media tokens and extra regexes."""

    media_tokens: tuple[str, ...] = MEDIA_TOKENS
    extra_patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = []
        for pattern in self.extra_patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise InstrAugError(f"placeholder regex {pattern!r} is invalid: {exc}") from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    def parse(self, text: str, *, source: str = "instruction") -> list[Span]:
        """Split `text` into alternating free-text and protected spans.

        Raises InstrAugError naming `source` if a `{` field is never closed.
        """
        protected: list[tuple[int, int]] = []
        i = 0
        while i < len(text):
            if text[i] == "{":
                end = _scan_brace_field(text, i)
                if end < 0:
                    raise InstrAugError(f"{source}: unbalanced '{{' at character {i} in {text!r}")
                protected.append((i, end))
                i = end
                continue
            if text[i] == "}":
                raise InstrAugError(f"{source}: unbalanced '}}' at character {i} in {text!r}")
            for token in self.media_tokens:
                if text.startswith(token, i):
                    protected.append((i, i + len(token)))
                    i += len(token)
                    break
            else:
                i += 1
        for pattern in self._compiled:
            group = "protect" if "protect" in pattern.groupindex else 0
            for match in pattern.finditer(text):
                start, end = match.span(group)
                if end > start and not any(s < end and start < e for s, e in protected):
                    protected.append((start, end))
        protected.sort()
        spans: list[Span] = []
        cursor = 0
        for start, end in protected:
            if start > cursor:
                spans.append(Span(text[cursor:start], False))
            spans.append(Span(text[start:end], True))
            cursor = end
        if cursor < len(text):
            spans.append(Span(text[cursor:], False))
        return spans

    def protected_spans(self, text: str, *, source: str = "instruction") -> list[str]:
        """The protected spans of `text`, in order of appearance."""
        return [s.text for s in self.parse(text, source=source) if s.protected]

    def same_placeholders(self, reference: str, candidate: str) -> bool:
        """True if both texts hold the same multiset of protected spans."""
        try:
            return Counter(self.protected_spans(reference)) == Counter(self.protected_spans(candidate))
        except InstrAugError:
            return False

    def mask(self, text: str, *, source: str = "instruction") -> MaskedText:
        """Replace each protected span occurrence by its own sentinel `{A}`, `{B}`, ...

        A repeated span gets one sentinel per occurrence, so restoring keeps the multiset even
        when the rewrite reorders them. More than 26 spans raise InstrAugError naming `source`.
        """
        parts: list[str] = []
        originals: list[str] = []
        for span in self.parse(text, source=source):
            if span.protected:
                if len(originals) >= len(SENTINEL_LETTERS):
                    raise InstrAugError(f"{source}: more than {len(SENTINEL_LETTERS)} placeholders")
                parts.append(sentinel(len(originals)))
                originals.append(span.text)
            else:
                parts.append(span.text)
        return MaskedText("".join(parts), tuple(originals))


def sentinel(index: int) -> str:
    """The neutral token standing for the `index`-th protected span."""
    return "{" + SENTINEL_LETTERS[index] + "}"


_SENTINEL_RE = re.compile(r"\{([A-Z])\}")


@dataclass(frozen=True)
class MaskedText:
    """An instruction with its protected spans replaced by sentinels."""

    text: str
    originals: tuple[str, ...]

    @property
    def sentinels(self) -> list[str]:
        return [sentinel(i) for i in range(len(self.originals))]

    def has_free_text(self) -> bool:
        """False when the instruction is placeholders and whitespace/punctuation only."""
        return bool(re.search(r"[^\W\d_]", _SENTINEL_RE.sub("", self.text)))

    def restore(self, masked: str) -> str | None:
        """Put the original spans back; None unless every sentinel appears exactly once."""
        counts = Counter(m.group(0) for m in _SENTINEL_RE.finditer(masked))
        expected = Counter(self.sentinels)
        if counts != expected:
            return None
        return _SENTINEL_RE.sub(lambda m: self.originals[SENTINEL_LETTERS.index(m.group(1))], masked)


DEFAULT_SPEC = PlaceholderSpec()


def fill_template(template: str, fields: dict[str, object], spec: PlaceholderSpec = DEFAULT_SPEC) -> str:
    """Fill `{name}` fields from `fields` by exact lookup of the field's source text; never evaluates.

    A field such as `{split_token.join(options)}` is looked up verbatim as the key
    `"split_token.join(options)"`: callers precompute every value. Media tokens and regex spans are
    kept as they are. Raises InstrAugError naming a field that has no value.
    """
    out: list[str] = []
    for span in spec.parse(template, source="template"):
        if span.protected and span.text.startswith("{"):
            key = span.text[1:-1].strip()
            if key not in fields:
                raise InstrAugError(f"template field {span.text!r} has no value (known: {sorted(fields)})")
            out.append(str(fields[key]))
        else:
            out.append(span.text)
    return "".join(out)
