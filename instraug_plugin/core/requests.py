"""Does an instruction still ask for something, and for the same shape of task? (English rules, except
negation; other languages are not judged.)

A paraphrase that turns a request into a statement ("{text} is the part.", "The object is the image.")
no longer tells the model what to do. An English text makes a request when it has a question mark, a
request phrase ("you need to", "the goal is to", "can you", ...), or a sentence that starts with a
request verb ("Describe", "Select", ...) or a question word ("What", "Is", ...).
"""

from __future__ import annotations

import re

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.instances import contrast_changes
from instraug_plugin.core.language import language_of
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec

REQUEST_VERBS = frozenset("""
answer analyse analyze assess caption check choose classify compare complete conclude consider count create
decide describe detail detect determine discuss draw estimate evaluate examine explain extract fill find generate
give identify indicate infer judge label list locate localize look make mark match name observe outline output
paraphrase pick point predict provide rate read recognize rephrase return rewrite say see select show specify spot
state summarize tag tell transcribe translate use verify write please
""".split())
QUESTION_WORDS = frozenset("""
what which who whom whose where when why how is are am was were does do did can could would should will has have
""".split())
_REQUEST_PHRASE = re.compile(
    r"\b(?:you (?:need|have|are asked|are required|should|must|will)|asked to|your (?:task|goal|job)|"
    r"(?:goal|task|aim|objective) (?:of this task )?is to|can you|could you|please)\b",
    re.IGNORECASE,
)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n])\s*[\"'“(\[]?([A-Za-z]+)")


def makes_request(text: str) -> bool | None:
    """True/False for Latin-script (English) text; None for other languages (not judged)."""
    if language_of(text) != "latin":
        return None
    if "?" in text or _REQUEST_PHRASE.search(text):
        return True
    return any(w.lower() in REQUEST_VERBS or w.lower() in QUESTION_WORDS for w in _SENTENCE_START.findall(text))


_AUXILIARIES = frozenset("is are am was were does do did can could would should will has have may might must".split())
_WH_WORDS = frozenset("what which who whom whose where when why how".split())
_POLAR_CLAUSE = re.compile(r"\b(?:whether|(?:decide|determine|check|verify|judge|tell(?: me)?) if)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")
_INDIRECT_WH = re.compile(r"\b(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:tell|say|show|explain|identify|"
                          r"describe|name|find out)(?:\s+(?:me|us))?\s+(?:what|which|who|whom|whose|where|when|why|how)\b",
                          re.IGNORECASE)
_LEAD = frozenset("question so then now and please".split())
_LOCATE = re.compile(r"\b(?:find|finds|finding|locate|locating|localizing|localising|locali[sz]e|ground|pinpoint|point out|detect|spot|where|location|"
                     r"position|coordinates?|bounding box|identify the (?:region|part|area))\b", re.IGNORECASE)
_LOCATE_VERB = re.compile(r"\b(?:locate|locali[sz]e|ground|pinpoint)\b|\bfind\b(?:\s+\w+){0,3}?\s+(?:region|part|area|"
                          r"location|position|box|object|place)s?\b", re.IGNORECASE)
_SUBJECT_VERB = re.compile(r"[\"'”’]?\s*(?:is|are|was|were|describes?|matches?)\b", re.IGNORECASE)
_NEGATION = re.compile(
    r"(?i:\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot|can't|won't|don't|doesn't|didn't|"
    r"isn't|aren't|wasn't|weren't|shouldn't|wouldn't|couldn't|mustn't|hardly|except|unless)\b|n't\b)"
    r"|不|没|無|无|非|别|勿|未"
)


def negations(text: str) -> int:
    """How many negating words or characters `text` has."""
    return len(_NEGATION.findall(text))


def question_kind(text: str) -> str | None:
    """`polar` (yes/no) or `wh` for an English request, else None.

    The first sentence ending in "?" decides by its first word (an auxiliary: polar; a wh-word: wh);
    without a question, a "whether" / "decide if" clause makes it polar.
    """
    mark = text.find("?")
    if mark >= 0:
        start = max(text.rfind(c, 0, mark) for c in ".!\n:") + 1
        for word in _WORD.findall(text[start:mark]):
            word = word.lower()
            if word in _LEAD:
                continue
            if word in _AUXILIARIES:  # "Is it red or green?" asks to choose, as a wh-question does
                if _INDIRECT_WH.search(text[start:mark]):  # "Can you tell me who he is?"
                    return "wh"
                return None if re.search(r"\bor\b", text[start:mark]) else "polar"
            return "wh" if word in _WH_WORDS else None
        return None
    return "polar" if _POLAR_CLAUSE.search(text) else None


def _subject_spans(text: str, spec: PlaceholderSpec) -> set[str]:
    """Protected spans used as the subject of "is / describes / matches ..." (`{text} is the part.`)."""
    spans = spec.parse(text)
    return {span.text for span, after in zip(spans, [*spans[1:], None])
            if span.protected and after is not None and not after.protected and _SUBJECT_VERB.match(after.text)}


def task_shape_change(seed: str, paraphrase: str, spec: PlaceholderSpec = DEFAULT_SPEC) -> str | None:
    """Why a paraphrase asks for a differently shaped task than its seed, or None.

    `negation`: the count of negators differs ("select not disaster" -> "select disaster");
    `contrast`: a side of a contrast replaced by the other (first -> last, left -> right, advantages ->
    drawbacks: `core.instances.contrast_changes`);
    `question_kind`: a yes/no question became a wh-question or back; `placeholder_role`: a
    placeholder became the subject of "is / describes / matches" ("{question} is the text.");
    `grounding`: a request to find or locate something lost every locating word. Negation counts in
    any language, contrast sides in English and Chinese; the others judge English only.
    """
    if negations(seed) != negations(paraphrase):
        return "negation"
    if contrast_changes(seed, paraphrase):
        return "contrast"
    if language_of(seed) != "latin":
        return None
    before, after = question_kind(seed), question_kind(paraphrase)
    if before and after and before != after:
        return "question_kind"
    try:
        if _subject_spans(paraphrase, spec) - _subject_spans(seed, spec):
            return "placeholder_role"
    except InstrAugError:
        return None
    if _LOCATE_VERB.search(seed) and not _LOCATE.search(paraphrase):
        return "grounding"
    return None
