"""How likely a typed word is a slip of a catalog word one edit away: the spelling corrector's channel model.

Shoppers' typing slips are mostly of four kinds (Damerau 1964; Kukich 1992): a letter dropped
(``tols`` for ``tools``), a letter doubled (``grillls``), two letters swapped (``basli`` for
``basil``) and a neighbouring key hit in place of the right one (``tarpa`` for ``tarps``); a key
next to the right one is also hit beside it now and then (``ovesn``). The first letter is rarely
wrong. When a misspelled word has several catalog words one edit away, the corrector weighs each
by how likely its edit is as a slip (:func:`slip_weight`), as in noisy-channel spelling correction
(Kernighan, Church and Gale 1990), together with how often products hold it with the query's
other words and how frequent it is.
"""

from __future__ import annotations

# QWERTY neighbours: the keys a finger slips onto. Each row sits half a key right of the
# one above, so key c of a row touches keys c and c + 1 of the row above, c - 1 and c below.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        near = [(_r, _c - 1), (_r, _c + 1), (_r - 1, _c), (_r - 1, _c + 1), (_r + 1, _c - 1), (_r + 1, _c)]
        NEIGHBOURS[_key] = "".join(sorted(_ROWS[r][c] for r, c in near if 0 <= r < 3 and 0 <= c < len(_ROWS[r])))

LIKELY = 1.0  # a letter dropped, doubled or swapped, or a neighbouring key in place of the right one
BESIDE = 0.3  # a neighbouring key hit beside the right one
UNLIKELY = 0.15  # any other edit, or one that changes the first letter


def slip_weight(typed: str, word: str) -> float:
    """How likely ``typed`` is a typing slip of ``word``, one edit away (lower case): :data:`LIKELY`,
    :data:`BESIDE` or :data:`UNLIKELY`; words further apart are :data:`UNLIKELY` too."""
    if typed[:1] != word[:1]:
        return UNLIKELY
    if len(word) == len(typed) + 1:  # a letter dropped
        return LIKELY if any(typed == word[:i] + word[i + 1:] for i in range(len(word))) else UNLIKELY
    if len(word) == len(typed) - 1:  # a letter added: doubled, or a neighbour of a letter beside it
        i = next((k for k in range(len(word)) if typed[k] != word[k]), len(word))
        if typed[:i] + typed[i + 1:] != word:
            return UNLIKELY
        beside = [typed[j] for j in (i - 1, i + 1) if 0 <= j < len(typed)]
        if typed[i] in beside:
            return LIKELY
        return BESIDE if any(typed[i] in NEIGHBOURS.get(c, "") for c in beside) else UNLIKELY
    if len(word) == len(typed):
        diff = [k for k in range(len(word)) if typed[k] != word[k]]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and typed[diff[0]] == word[diff[1]] \
                and typed[diff[1]] == word[diff[0]]:
            return LIKELY  # two letters swapped
        if len(diff) == 1 and typed[diff[0]] in NEIGHBOURS.get(word[diff[0]], ""):
            return LIKELY
    return UNLIKELY
