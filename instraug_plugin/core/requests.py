"""Does an instruction still ask for something? (English rules; other languages are not judged.)

A paraphrase that turns a request into a statement ("{text} is the part.", "The object is the image.")
no longer tells the model what to do. An English text makes a request when it has a question mark, a
request phrase ("you need to", "the goal is to", "can you", ...), or a sentence that starts with a
request verb ("Describe", "Select", ...) or a question word ("What", "Is", ...).
"""

from __future__ import annotations

import re

from instraug_plugin.core.language import language_of

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
