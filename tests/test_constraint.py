"""One placeholder-constraint specification: its state machine, its regex and its llama.cpp grammar
accept exactly the same replies, on a generated battery of right and broken ones."""

from __future__ import annotations

import json
import random
import re

import pytest

from instraug_plugin.core.constraint import MAX_PERMUTED, PlaceholderConstraint
from instraug_plugin.core.errors import InstrAugError

LETTERS = "ABCDEFGH"
SENTINEL_SETS = [(), ("{A}",), ("{A}", "{B}", "{C}"), tuple(f"{{{c}}}" for c in LETTERS[:MAX_PERMUTED]),
                 tuple(f"{{{c}}}" for c in LETTERS[: MAX_PERMUTED + 2])]
FREE_PIECES = ["Describe", " the", " region", " ", "?", ":", "\n", "{", "}", "{Z}", "{a}", "{{", "A}", "é", ""]


def battery(sentinels: tuple[str, ...], rng: random.Random, count: int = 600) -> list[str]:
    """Replies with each sentinel 0, 1 or 2 times, in the seed's or a shuffled order, around free text
    with and without braces and newlines, and their prefixes (a reply cut short)."""
    replies = []
    for _ in range(count):
        placed = [s for s in sentinels for _ in range(rng.choices((0, 1, 2), weights=(1, 16, 1))[0])]
        if rng.random() < 0.3:
            rng.shuffle(placed)
        clean = rng.random() < 0.5  # free text without braces and newlines
        pieces = [p for p in FREE_PIECES if not clean or not set(p) & set("{}\n")]
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(3)))
        for sentinel in placed:
            text += sentinel + "".join(rng.choice(pieces) for _ in range(rng.randrange(3)))
        replies.append(text)
        if rng.random() < 0.2:
            replies.append(text[: rng.randrange(len(text) + 1)])
    return replies


def gbnf_to_regex(grammar: str) -> str:
    """The language of a grammar in the subset `to_gbnf` writes (rules of literals, `[...]*` classes,
    rule references and `|`, without recursion) as a Python regex, checking its structure on the way."""
    rules: dict[str, str] = {}
    for line in grammar.splitlines():
        name, separator, body = line.partition(" ::= ")
        assert separator and re.fullmatch(r"[a-zA-Z0-9-]+", name) and name not in rules, line
        rules[name] = body
    assert next(iter(rules)) == "root"
    token = re.compile(r'"(?:[^"\\]|\\.)*"|\[\^(?:[^\]\\]|\\.)*\]\*|[a-zA-Z0-9-]+|\|')
    referenced: set[str] = set()

    def expand(name: str, depth: int = 0) -> str:
        assert depth <= len(rules), "the grammar recurses"
        body = rules[name]
        assert "".join(token.findall(body)) == body.replace(" ", ""), body
        alternatives: list[list[str]] = [[]]
        for part in token.findall(body):
            if part == "|":
                alternatives.append([])
            elif part.startswith('"'):
                alternatives[-1].append(re.escape(json.loads(part)))
            elif part.startswith("["):
                alternatives[-1].append(part)  # [^...]* reads the same in both syntaxes
            else:
                assert part in rules, f"undefined rule {part}"
                referenced.add(part)
                alternatives[-1].append("(?:" + expand(part, depth + 1) + ")")
        return "|".join("".join(sequence) for sequence in alternatives)

    pattern = expand("root")
    assert referenced == set(rules) - {"root"}, "unused rules"
    return pattern


@pytest.mark.parametrize("single_line", [False, True])
@pytest.mark.parametrize("sentinels", SENTINEL_SETS, ids=len)
def test_state_machine_regex_and_grammar_accept_the_same_replies(sentinels: tuple[str, ...], single_line: bool) -> None:
    constraint = PlaceholderConstraint(sentinels, single_line)
    regex = re.compile(constraint.to_regex())
    grammar = re.compile(gbnf_to_regex(constraint.to_gbnf()))
    verdicts = []
    for reply in battery(sentinels, random.Random(f"{sentinels}{single_line}")):
        accepted = constraint.accepts(reply)
        assert (regex.fullmatch(reply) is not None) == accepted, (reply, accepted)
        assert (grammar.fullmatch(reply) is not None) == accepted, (reply, accepted)
        verdicts.append(accepted)
    assert min(sum(verdicts), len(verdicts) - sum(verdicts)) > len(verdicts) // 10  # plenty of both


def test_any_order_up_to_max_permuted_then_the_seed_order_in_every_derivation() -> None:
    few = PlaceholderConstraint(tuple(f"{{{c}}}" for c in "ABCDE"))
    many = PlaceholderConstraint(tuple(f"{{{c}}}" for c in "ABCDEF"))
    swapped = "x {B} {A} {C} {D} {E} y"
    assert few.accepts(swapped) and re.fullmatch(few.to_regex(), swapped)
    assert re.fullmatch(gbnf_to_regex(few.to_gbnf()), swapped)
    assert many.accepts("x {A} {B} {C} {D} {E} {F} y")
    assert not many.accepts(swapped + " {F}") and not re.fullmatch(many.to_regex(), swapped + " {F}")
    assert not re.fullmatch(gbnf_to_regex(many.to_gbnf()), swapped + " {F}")
    state = many.advance(many.start(), "x {A} ")
    assert state is not None and many.next_sentinels(state.owed) == ("{B}",)
    assert few.next_sentinels(few.advance(few.start(), "x {C}").owed) == ("{A}", "{B}", "{D}", "{E}")


def test_grammar_shape_one_rule_per_owed_subset() -> None:
    grammar = PlaceholderConstraint(("{A}", "{B}", "{C}"), single_line=True).to_gbnf()
    names = [line.split(" ::= ")[0] for line in grammar.splitlines()]
    assert names[0] == "root" and names[-1] == "free" and len(names) == 2 + 2**3 - 1
    assert "free ::= [^{}\\n]*" in grammar.splitlines()
    assert 'owed-ABC ::= "{A}" free owed-BC | "{B}" free owed-AC | "{C}" free owed-AB' in grammar.splitlines()
    assert len(PlaceholderConstraint(tuple(f"{{{c}}}" for c in "ABCDEFG")).to_gbnf().splitlines()) == 2


def test_state_machine_steps_through_text_in_pieces() -> None:
    constraint = PlaceholderConstraint(("{A}", "{B}"), single_line=True)
    state = constraint.start()
    for piece in ["Where", " {", "B", "}", " and", " {", "A", "}", "?"]:
        state = constraint.advance(state, piece)
        assert state is not None, piece
    assert constraint.may_end(state)
    assert constraint.advance(constraint.start(), "one\ntwo") is None
    assert not constraint.may_end(constraint.advance(constraint.start(), "only {A}"))


@pytest.mark.parametrize(("sentinels", "message"), [
    (("{A}", "{A}"), "repeat"), (("A",), "'A'"), (("{AB}",), "'{AB}'"), (("{a}",), "'{a}'"),
])
def test_bad_sentinels_are_one_line_errors(sentinels: tuple[str, ...], message: str) -> None:
    with pytest.raises(InstrAugError, match=message) as excinfo:
        PlaceholderConstraint(sentinels)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("sentinels", SENTINEL_SETS, ids=len)
def test_llama_cpp_parses_the_grammar(sentinels: tuple[str, ...]) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.LlamaGrammar.from_string(PlaceholderConstraint(sentinels, single_line=True).to_gbnf(), verbose=False)
