"""Instance-level instructions: telling them from task templates, and the content spans they protect.

A *template* instruction is shared by many rows or carries `{field}` placeholders ("Answer the
question {question}"): any faithful rewording keeps every row's answer valid. An *instance*
instruction is one row's own request ("Transform the following sentence using a synonym: The car
sped quickly."): its answer depends on its details, so those details are protected like
placeholders (kept verbatim, each exactly once) and its paraphrases must pass the `answer` check.

Content spans (`CONTENT_PATTERNS`, in priority order; extend with `--extra-placeholder`):
- `lead_in`: the material after a "following sentence/text/word...:" lead-in (also 以下/下面…：);
- `code`: back-quoted code spans and fenced blocks;
- `quoted`: text in straight, curly, CJK corner or book-title quotes;
- `number`: numbers with their unit or currency sign or the word they count ("3 examples", "two
  sentences": a moved number counts something else), English number words, Chinese numerals before
  a measure word;
- `name`: capitalized words inside a sentence (names, titles, acronyms).
"""

from __future__ import annotations

import re

from instraug_plugin.core.placeholders import MEDIA_TOKENS, PlaceholderSpec

TEMPLATE = "template"
INSTANCE = "instance"
KINDS = (TEMPLATE, INSTANCE)
KIND_CHOICES = ("auto", *KINDS)

_NUMBER_WORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
                 "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
                 "hundred|thousand|million|billion|dozen|half|single|double|twice|triple|first|second|third|"
                 "fourth|fifth|tenth|last")
_UNITS = (r"%|percent|per cent|kg|kilograms?|g|grams?|mg|lbs?|pounds?|ounces?|oz|tons?|km|kilometers?|"
          r"kilometres?|m|meters?|metres?|cm|mm|miles?|mph|km/h|feet|foot|ft|inch(?:es)?|hours?|hrs?|"
          r"minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|decades?|centuries|century|°[CF]?|"
          r"degrees?|dollars?|euros?|yuan|characters?|words?|sentences?|items?|points?|"
          r"个|种|条|项|点|名|位|本|篇|句|次|年|月|日|天|岁|米|公里|公斤|克|小时|分钟|秒|元|字")
_LEAD_NOUNS = (r"problems?|claims?|arguments?|sentences?|texts?|words?|phrases?|paragraphs?|passages?|lists?|numbers?|equations?|"
               r"statements?|articles?|sequences?|code|snippet|questions?|poems?|titles?|series|data|"
               r"inputs?|expressions?|strings?|names?|items?|tweets?|reviews?|quotes?|excerpts?|story|stories|"
               r"song lyrics|lyrics|values?|set|array|emails?|headlines?|descriptions?|information|facts?")
_ZH_LEAD = r"(?:以下|下面|下列|如下|这个|这句|这段)的?(?:句子|文本|文字|段落|词语|单词|内容|问题|代码|列表|短语|话|数字|句话|诗)"

_STOPWORDS = (r"(?i:a|an|the|and|or|to|of|in|on|at|for|by|with|from|as|is|are|was|be|that|this|than|"
              r"into|per|each|more|less|times|x)")

CONTENT_PATTERNS: dict[str, str] = {
    "lead_in": (rf"(?i:\b(?:following|given|this|these|the)\s+(?:[\w-]+\s+){{0,2}}?(?:{_LEAD_NOUNS})\b[^:：\n]{{0,48}}[:：]|{_ZH_LEAD}\s*[:：])\s*(?P<protect>\S[\s\S]*?)\s*$"),
    "code": r"```[\s\S]*?```|`[^`\n]+`",
    "quoted": r"\"[^\"\n]+\"|“[^”\n]+”|‘[^’\n]+’|(?<![\w'])'[^'\n]+'(?![\w'])|「[^」\n]+」|『[^』\n]+』|《[^》\n]+》",
    "number": (rf"[$€£¥]\s?\d[\d,]*(?:\.\d+)?|\d+(?:[.,:/-]\d+)*(?:\s?(?:{_UNITS})(?![A-Za-z])|\s(?!{_STOPWORDS}\b)[A-Za-z]+)?|"
               rf"(?i:\b(?:{_NUMBER_WORDS})\b(?:\s(?!{_STOPWORDS}\b)[a-z]+)?)|[零一二两三四五六七八九十百千万亿]+(?=[个种条项点名位本篇句次年月日天岁米元字])"),
    "name": r"(?<=[a-z0-9,;)]\s)(?!I\b)[A-Z][\w'&-]*(?:\.[A-Z][\w'&-]*)*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w'&-]*)*",
}


def content_spec(extra_patterns: tuple[str, ...] = ()) -> PlaceholderSpec:
    """The placeholder spec of instance-level instructions: the user's patterns, then the content spans."""
    return PlaceholderSpec(extra_patterns=(*extra_patterns, *CONTENT_PATTERNS.values()))


def has_fields(text: str, spec: PlaceholderSpec) -> bool:
    """True if `text` holds a protected span other than a media token (`{field}` or a user regex)."""
    return any(span not in MEDIA_TOKENS for span in spec.protected_spans(text))


def classify(text: str, rows: int, spec: PlaceholderSpec) -> str:
    """`template` when the instruction is shared by 2+ rows or carries fields, else `instance`."""
    return TEMPLATE if rows >= 2 or has_fields(text, spec) else INSTANCE


_COMPARISON = re.compile(r"(?i)\bthan\s+(?:an?\s+|the\s+)?([\w-]+)")
_OPPOSITES: tuple[tuple[str, str], ...] = (
    (r"advantages?|benefits?|pros|strengths?", r"disadvantages?|drawbacks?|cons|weaknesses?"),
    (r"similarit(?:y|ies)|similar|alike|same", r"differences?|different|differ"),
    (r"causes?", r"effects?|consequences?|results?"),
    (r"positive", r"negative"),
    (r"before", r"after"),
    (r"increases?|rises?|grows?", r"decreases?|falls?|drops?|shrinks?"),
    (r"more", r"less|fewer"),
    (r"better", r"worse"),
    (r"best", r"worst"),
    (r"most", r"least"),
    (r"larger|bigger|greater", r"smaller|lesser"),
    (r"largest|biggest|greatest", r"smallest"),
    (r"higher|taller", r"lower|shorter"),
    (r"highest|tallest", r"lowest|shortest"),
    (r"longer", r"shorter"),
    (r"synonyms?", r"antonyms?|opposites?"),
    (r"agree", r"disagree"),
    (r"left", r"right"),
    (r"past", r"present|future"),
    (r"top|above|upper", r"bottom|below|beneath|under|lower"),
    (r"front", r"back|behind|rear"),
    (r"inside|indoors?", r"outside|outdoors?"),
    (r"first|earliest|opening", r"second|third|last|final|latest"),
    (r"day|daytime", r"night|nighttime"),
    (r"優點|优点|好处", r"缺点|坏处"),
    (r"相同|相似", r"不同|区别"),
    (r"左", r"右"),
    (r"上面|上方", r"下面|下方"),
    (r"增加", r"减少"),
    (r"同义", r"反义"),
)
_SIDES = tuple(
    tuple(re.compile(rf"(?i)(?<![\w-])(?:{words})(?![\w-])" if word_chars else words) for words in pair)
    for pair in _OPPOSITES
    for word_chars in [pair[0].isascii()]
)


_WH_KEPT: dict[str, re.Pattern[str]] = {  # a seed's question word -> what must stay in the paraphrase
    "who": re.compile(r"(?i)\b(?:who|whom|whose|identity|identify|name)\b"),
    "why": re.compile(r"(?i)\b(?:why|reason|reasons|cause|because|explain)\b"),
    "where": re.compile(r"(?i)\b(?:where|location|position|located|placed|place)\b"),
    "when": re.compile(r"(?i)\b(?:when|time|date|year|day)\b"),
    "how many": re.compile(r"(?i)\b(?:how many|count|number|total)\b"),
    "how much": re.compile(r"(?i)\b(?:how much|amount|quantity|cost|price)\b"),
}
_WH_IN_SEED = re.compile(r"(?i)\b(who|whom|whose|why|where|when|how many|how much)\b")


def contrast_changes(seed: str, paraphrase: str) -> bool:
    """True when a side of a contrast the seed does not name replaces one it does (advantages ->
    drawbacks, left -> right, first -> last, synonym -> antonym, ...)."""
    for sides in _SIDES:
        in_seed = [bool(side.search(seed)) for side in sides]
        in_paraphrase = [bool(side.search(paraphrase)) for side in sides]
        if any(in_seed) and any(p and not s for p, s in zip(in_paraphrase, in_seed)):
            return True
    return False


def answer_changes(seed: str, paraphrase: str) -> str | None:
    """Why a rewording of an instance instruction may no longer fit the row's answer, or None.

    Checks the question word (who / why / where / when / how many / how much must stay, or a word that
    asks the same: "why" -> "explain the reason") and the compared thing after "than" (swapped roles).
    Negation and contrast sides are checked for every kind (`core.requests.task_shape_change`);
    quantities, quotes and names are protected spans.
    """
    for word in {m.casefold() for m in _WH_IN_SEED.findall(seed)}:
        if not _WH_KEPT[{"whom": "who", "whose": "who"}.get(word, word)].search(paraphrase):
            return "question_word"
    seed_than = [m.casefold() for m in _COMPARISON.findall(seed)]
    if seed_than and seed_than != [m.casefold() for m in _COMPARISON.findall(paraphrase)]:
        return "comparison"
    return None
