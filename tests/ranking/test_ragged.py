"""Ragged rows and character 3-gram codes against plain Python on tiny inputs."""

from __future__ import annotations

import numpy as np

from ranking.ragged import Ragged, char3, distinct


def test_gather_returns_the_rows_of_the_asked_products_with_their_positions() -> None:
    rows = Ragged.from_lists([[7, 8, 9], [], [5], [1, 2]])
    values, seg, within, lens = rows.gather(np.array([3, 0, 1]))
    assert values.tolist() == [1, 2, 7, 8, 9]
    assert seg.tolist() == [0, 0, 1, 1, 1]  # row in the asked order
    assert within.tolist() == [0, 1, 0, 1, 2]
    assert lens.tolist() == [2, 3, 0]


def _grams(text: str) -> set[str]:
    padded = f" {text} "
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


def test_char3_codes_each_distinct_3_gram_of_the_padded_text_once() -> None:
    texts = ["drill", "aaaa", "", "1/2 in."]
    grams = char3(texts)
    for i, text in enumerate(texts):
        row = grams.values[grams.ptr[i]:grams.ptr[i + 1]]
        assert len(row) == len(_grams(text))  # one code per distinct 3-gram
        assert row.tolist() == sorted(set(row.tolist()))
    # two texts share a code exactly where they share a 3-gram
    first, second = (set(grams.values[grams.ptr[i]:grams.ptr[i + 1]].tolist()) for i in (0, 1))
    assert not first & second
    again = char3(["grill"])
    assert len(first & set(again.values.tolist())) == len(_grams("drill") & _grams("grill"))


def test_char3_of_no_texts_is_empty_and_distinct_sorts_and_dedupes() -> None:
    empty = char3([])
    assert empty.ptr.tolist() == [0] and len(empty.values) == 0
    assert distinct(np.array([3, 1, 3, 2, 1])).tolist() == [1, 2, 3]
    assert distinct(np.array([], dtype=np.int64)).tolist() == []


def test_texts_outside_ascii_share_codes_where_they_share_3_grams() -> None:
    """Cyrillic, Japanese or accented words get codes of their own characters: folded into one "other"
    character, "дрель" (drill) and "хлеб" (bread) shared every 3-gram."""
    texts = ["дрель", "хлеб", "дрели", "電動ドリル", "ドリル", "perçeuse", "perceuse"]
    grams = char3(texts)
    rows = [set(grams.values[grams.ptr[i]:grams.ptr[i + 1]].tolist()) for i in range(len(texts))]
    for i, a in enumerate(texts):
        assert len(rows[i]) == len(_grams(a))
        for j, b in enumerate(texts):
            assert len(rows[i] & rows[j]) == len(_grams(a) & _grams(b)), (a, b)


def test_ascii_texts_are_coded_as_before() -> None:
    """An ASCII text's 3-grams are told apart as they always were (one code per character of the alphabet, one
    for any other ASCII character), so char3_jaccard does not move for models trained on English catalogs."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789./ "
    base = 40 + 1021

    def code(ch: str) -> int:
        return alphabet.index(ch) if ch in alphabet else 39

    expected = sorted({(code(g[0]) * base + code(g[1])) * base + code(g[2]) for g in _grams("1/2-in drill")})
    assert char3(["1/2-in drill"]).values.tolist() == expected
