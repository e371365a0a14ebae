"""Pull the paraphrase out of a chatty LLM reply.

Small instruction models wrap answers in preambles ("Here is the rephrased sentence:"), quotes,
numbering, bullet marks and trailing commentary. `extract_reply` removes those and returns the
paraphrase, or None when nothing usable is left.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise

_PREAMBLE_WORDS = (
    r"sure|certainly|of course|okay|ok|absolutely|great|here(?:'s| is| are)|below is|the (?:\w+ )?"
    r"(?:rephrased|paraphrased|revised|rewritten|reworded|new|updated|simplified) (?:sentence|instruction|"
    r"version|text|request)|(?:rephrased|paraphrased|revised|rewritten|reworded|simplified) (?:sentence|"
    r"instruction|version|text|request)"
)
_PREAMBLE_LINE = re.compile(rf"^(?:{_PREAMBLE_WORDS})\b[^\n]*?(?::|\.\.\.|!)\s*$", re.IGNORECASE)
_INLINE_LABEL = re.compile(
    r"^(?:(?:the )?(?:rephrased|paraphrased|revised|rewritten|reworded|new|simplified|output)"
    r"(?: (?:sentence|instruction|version|text))?|sentence|instruction|answer|output|paraphrase)\s*\d*\s*:\s*",
    re.IGNORECASE,
)
_LEAD_IN = re.compile(
    rf"^(?:{_PREAMBLE_WORDS})\b[^:\n]{{0,80}}:\s+(?=\S)", re.IGNORECASE
)
_COMMENTARY_LINE = re.compile(
    r"^(?:note|explanation|this (?:version|sentence|rephras|paraphras|revised|rewrit)|i (?:have|changed|"
    r"replaced|used|rephrased|hope)|in this (?:version|revised|rephras)|let me know|\(|changes?:)",
    re.IGNORECASE,
)
_INTERJECTION = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|great)\s*[!,.]\s+(?=\S)", re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•]|#+)\s+")
_QUOTES = ("\"\"", "''", "“”", "‘’", "``", "**")
_SENTINEL = re.compile(r"\{[A-Z]\}")


def _strip_quotes(text: str) -> str:
    text = text.strip()
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for pair in _QUOTES:
            opening, closing = (pair[0], pair[1]) if len(pair) == 2 else (pair, pair)
            if pair == "**" and text.startswith("**") and text.endswith("**") and len(text) > 4:
                text, changed = text[2:-2].strip(), True
            elif len(pair) == 2 and text[0] == opening and text[-1] == closing and text.count(opening) <= 2:
                text, changed = text[1:-1].strip(), True
    return text


def _clean_line(line: str) -> str:
    line = _INTERJECTION.sub("", _LIST_MARK.sub("", line.strip()))
    line = _INLINE_LABEL.sub("", line)
    line = _LEAD_IN.sub("", line) if _LEAD_IN.match(line) and not _LEAD_IN.sub("", line).startswith("{") else line
    return _strip_quotes(line)


def extract_reply(reply: str, *, multiline: bool = False) -> str | None:
    """The paraphrase inside `reply`.

    With `multiline`, the first block of consecutive content lines is kept (for seeds that span
    several lines); otherwise the single best content line: the first one holding the most
    placeholder sentinels.
    """
    text = reply.replace("\r\n", "\n").strip()
    text = re.sub(r"^```[^\n]*\n|\n?```$", "", text).strip()
    lines = text.split("\n")
    content: list[tuple[int, str]] = []
    for index, raw in enumerate(lines):
        stripped = raw.strip()
        if not stripped or _PREAMBLE_LINE.match(stripped):
            continue
        if content and _COMMENTARY_LINE.match(stripped):
            break
        cleaned = _clean_line(stripped)
        if cleaned:
            content.append((index, cleaned))
    if not content:
        return None
    if multiline:
        block = [content[0][1]]
        for (prev, _), (index, line) in pairwise(content):
            if index - prev > 2:
                break
            block.append(("\n" * (index - prev - 1)) + line if index - prev > 1 else line)
        return "\n".join(block).strip() or None
    best = max(content, key=lambda item: (len(_SENTINEL.findall(item[1])), -item[0]))
    return best[1]


_ITEM_START = re.compile(r"^\s*(?:\d+\s*[.)、:：]|[-*•])\s*(?=\S)")


def extract_items(reply: str, *, multiline: bool = False) -> list[str]:
    """Every paraphrase of a reply that lists several (a numbered or bulleted list, or a JSON list
    of strings), in order, cleaned as `extract_reply` cleans one; a reply without a list is one item.

    With `multiline`, the lines under an item's number up to the next item belong to it.
    """
    text = reply.replace("\r\n", "\n").strip()
    text = re.sub(r"^```[^\n]*\n|\n?```$", "", text).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and parsed and all(isinstance(item, str) for item in parsed):
            return [cleaned for item in parsed if (cleaned := _strip_quotes(item.strip()))]
    items: list[list[str]] = []
    for raw in text.split("\n"):
        stripped = raw.strip()
        if _ITEM_START.match(stripped):
            items.append([_ITEM_START.sub("", stripped)])
        elif items and stripped and multiline and not _COMMENTARY_LINE.match(stripped):
            items[-1].append(stripped)
        elif items and stripped and _COMMENTARY_LINE.match(stripped):
            break
    if not items:
        single = extract_reply(reply, multiline=multiline)
        return [single] if single else []
    found = []
    for lines in items:
        item = "\n".join([_clean_line(lines[0]), *lines[1:]]).strip()
        if item:
            found.append(item)
    return found
