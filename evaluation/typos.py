"""Synthetic typos: for training queries (``shoprank train biencoder --typos P``) and for measuring
typo tolerance (``shoprank evaluate --typos``: the same queries and judgments, typed with a slip).

About a quarter of Home Depot's queries hold a word no product title contains,
and most of those are the typing slips shoppers make: a letter dropped
("candlebra", "dimond"), doubled ("threadded", "nozzzle"), swapped or hit on a
neighbouring key ("conduet"), or two words run together ("windowair"). The
query analyzer corrects the slips it can match to the catalog; the bi-encoder
sees the ones it cannot. Training on queries with such slips added (Zhuang and
Zuccon 2021, "Dealing with typos for BERT-based passage retrieval and ranking")
teaches the encoder to place a slipped query near the intended one.

One slip per query, in one word of at least four letters (numbers, model
numbers and short words are left alone: a slip there changes the product).
"""

from __future__ import annotations

import random
import re
import zlib

from retrieval.slips import NEIGHBOURS

KINDS = ("delete", "double", "neighbour", "swap", "join")
_WORD = re.compile(r"^[a-z]{4,}$")


def _slip(word: str, kind: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word))  # the first letter is rarely mistyped
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "neighbour":
        return word[:i] + rng.choice(NEIGHBOURS[word[i]]) + word[i + 1 :]  # a slippable word is a-z only
    i = rng.randrange(1, len(word) - 1)  # swap letters i and i + 1
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def add_typo(query: str, rng: random.Random) -> str:
    """``query`` with one slip, or unchanged when no word is long enough to slip in.

    A slip always changes the query: a neighbour key or a swap that would give the
    same text is tried again with another kind."""
    words = query.split()
    slippable = [i for i, w in enumerate(words) if _WORD.match(w.lower())]
    if not slippable:
        return query
    i = rng.choice(slippable)
    kinds = [k for k in KINDS if k != "join" or (i + 1 < len(words) and words[i + 1].isalpha())]
    spaced = " ".join(words).lower()  # the query as the slipped text is spaced: one space between words
    for _ in range(10):
        kind = rng.choice(kinds)
        if kind == "join":
            out = words[:i] + [words[i] + words[i + 1]] + words[i + 2 :]
        else:
            out = words[:i] + [_slip(words[i].lower(), kind, rng)] + words[i + 1 :]
        text = " ".join(out)
        if text.lower() != spaced:
            return text
    return query


def slipped(query_id: str, query: str) -> str | None:
    """``query`` as typed with one slip, drawn by a generator seeded with its id (the same at every run);
    None when it has no word a slip can hit."""
    text = add_typo(query, random.Random(zlib.crc32(b"typo:" + query_id.encode())))
    return None if text.lower().split() == query.lower().split() else text
