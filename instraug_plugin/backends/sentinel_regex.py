"""A regular expression for "every owed sentinel exactly once": constrained decoding for engines
that take a regex (vLLM structured outputs, offline or served) instead of a logits processor.

Torch-free. The language "each of k sentinels exactly once, in any order, around free text without
braces" is regular; it is written as an alternation over the orders of the sentinels. Up to
`MAX_PERMUTED` sentinels (5! = 120 branches) every order is allowed; with more, the reply must keep
the seed's order (still safe by construction, a little less free).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import permutations

MAX_PERMUTED = 5


def sentinel_regex(sentinels: Sequence[str], single_line: bool = False) -> str:
    """The whole-reply regex: free text, each sentinel once, free text; no braces in free text."""
    free = r"[^{}\n]*" if single_line else r"[^{}]*"
    if not sentinels:
        return free
    orders = permutations(sentinels) if len(sentinels) <= MAX_PERMUTED else [tuple(sentinels)]
    branches = [free + free.join(re.escape(s) for s in order) + free for order in orders]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
