"""Per-instance metrics for robustness evaluation (torch-free). Every metric returns a score in [0, 1].

All metrics share one signature, `metric(prediction, references, options)`: `references` are the
acceptable answers (at least one), `options` the choices of a multiple-choice instance (else None).
An instance counts as answered correctly when its score is at least `CORRECT_THRESHOLD` (`is_correct`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from instraug_plugin.core.errors import InstrAugError

Metric = Callable[[str, Sequence[str], Sequence[str] | None], float]

CORRECT_THRESHOLD = 0.5

_PUNCT = re.escape(string.punctuation)
_WORD_RE = re.compile(r"\w+")


def is_correct(score: float) -> bool:
    """Whether a score counts as a correct answer: >= 0.5 (for exact-match style metrics, exactly 1)."""
    return score >= CORRECT_THRESHOLD


def normalize_answer(text: str) -> str:
    """Case-folded, whitespace collapsed, surrounding punctuation and quotes stripped."""
    text = re.sub(r"\s+", " ", text).strip().casefold()
    return re.sub(rf"^[{_PUNCT}\s]+|[{_PUNCT}\s]+$", "", text)


def exact_match(prediction: str, references: Sequence[str], options: Sequence[str] | None = None) -> float:
    """1 if the normalized prediction equals a normalized reference."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in references))


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


def prefix_match(prediction: str, references: Sequence[str], options: Sequence[str] | None = None) -> float:
    """1 if a reference's words are the first words of the prediction ("3 circles" matches "3", "30" does not)."""
    pred = _words(prediction)
    return float(any((ref := _words(r)) and pred[: len(ref)] == ref for r in references))


_LETTERS = string.ascii_uppercase
_LEADING_LETTER_RE = re.compile(r"^\(?([A-Z])(?:\)|[.:,]|$)")
# After "answer (is)": an uppercase letter, or a lowercase one closed by ")" / "." / the end ("answer: b)"),
# never the article in "the answer is a blue square".
_ANSWER_LETTER_RE = re.compile(r"\b(?i:answer)(?: (?i:is))?\s*[:\-]?\s*\(?(?:([A-Z])\b|([a-z])(?=[).]|\s*$))")


def choice_index(text: str, options: Sequence[str]) -> int | None:
    """Which option `text` designates: its letter ("B", "(B)", "B.", "Answer: B") or its option text."""
    stripped = text.strip()
    norm = normalize_answer(stripped)
    norm_options = [normalize_answer(o) for o in options]
    if norm in norm_options:
        return norm_options.index(norm)
    letter = None
    if len(norm) == 1 and norm.isalpha():
        letter = norm.upper()
    elif match := _LEADING_LETTER_RE.match(stripped):
        letter = match.group(1)
    elif match := _ANSWER_LETTER_RE.search(stripped):
        letter = (match.group(1) or match.group(2)).upper()
    if letter is not None and letter in _LETTERS:  # "é" is a letter, but no option's
        index = _LETTERS.index(letter)
        return index if index < len(options) else None
    words = f" {' '.join(_words(stripped))} "
    found = [i for i, o in enumerate(options) if (w := _words(o)) and f" {' '.join(w)} " in words]
    return found[0] if len(found) == 1 else None


def multiple_choice(prediction: str, references: Sequence[str], options: Sequence[str] | None = None) -> float:
    """1 if the prediction picks the gold option, by letter or by option text.

    References may be letters or option texts. With several options mentioned and no letter, 0.
    """
    if not options:
        raise InstrAugError("multiple_choice metric needs the instance's options")
    gold = set()
    for ref in references:
        index = choice_index(ref, options)
        if index is None:
            raise InstrAugError(f"multiple_choice answer {ref!r} is neither a letter nor one of {list(options)}")
        gold.add(index)
    return float(choice_index(prediction, options) in gold)


_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}


def normalize_vqa(text: str) -> str:
    """VQA-style answer normalization: lower case, punctuation removed (digit commas and decimal points
    kept as numbers), number words to digits, articles dropped."""
    text = text.casefold().replace("\n", " ").strip()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    text = re.sub(rf"[{re.escape(string.punctuation.replace('.', ''))}]", lambda m: "" if m.group(0) == "'" else " ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, references: Sequence[str], options: Sequence[str] | None = None) -> float:
    """VQA accuracy after VQA-style normalization.

    With 4 or more references (annotator answers, as in VQA v2) the official formula: the mean over
    leave-one-out subsets of min(1, matches / 3). With fewer, 1 if any reference matches.
    """
    pred = normalize_vqa(prediction)
    refs = [normalize_vqa(r) for r in references]
    if len(refs) < 4:
        return float(pred in refs)
    matches = [ref == pred for ref in refs]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(refs)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(prediction: str, references: Sequence[str], options: Sequence[str] | None = None) -> float:
    """ROUGE-L F1 over lower-cased alphanumeric tokens (as `rouge_score` tokenizes); best reference."""
    pred = _rouge_tokens(prediction)
    best = 0.0
    for ref in references:
        tokens = _rouge_tokens(ref)
        lcs = _lcs_length(pred, tokens)
        if lcs:
            precision, recall = lcs / len(pred), lcs / len(tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


METRICS: dict[str, Metric] = {
    "exact_match": exact_match,
    "prefix_match": prefix_match,
    "multiple_choice": multiple_choice,
    "vqa_accuracy": vqa_accuracy,
    "rouge_l": rouge_l,
}


def get_metric(name: str) -> Metric:
    """The metric registered under `name`; one-line error listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise InstrAugError(f"unknown metric {name!r} (known: {', '.join(sorted(METRICS))})") from None
