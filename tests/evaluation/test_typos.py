"""Synthetic typing slips for training and evaluation queries: one slip, in a word a slip can hit."""

from __future__ import annotations

import random

import pytest

from evaluation.typos import KINDS, NEIGHBOURS, add_typo, slipped


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (a swap of adjacent letters counts once), as the analyzer's
    spelling dictionary (symspellpy) measures it; -1 beyond 3."""
    from symspellpy.editdistance import DistanceAlgorithm, EditDistance

    return int(EditDistance(DistanceAlgorithm.DAMERAU_OSA).compare(a, b, 3))


@pytest.mark.parametrize("seed", range(40))
def test_one_slip_in_one_long_word(seed: int) -> None:
    query = "dewalt 20v max cordless drill 1/2 in"
    out = add_typo(query, random.Random(seed))
    assert out != query
    before, after = query.split(), out.split()
    if len(after) == len(before) - 1:  # two words run together
        i = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
        assert after[i] == before[i] + before[i + 1] and before[i].isalpha() and before[i + 1].isalpha()
    else:
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(changed) == 1
        word, slipped = changed[0]
        assert word in ("dewalt", "cordless", "drill")  # never "20v", "max", "1/2", "in"
        assert edit_distance(word, slipped) == 1 and slipped[0] == word[0]


def test_slips_are_seeded_and_cover_every_kind() -> None:
    queries = [add_typo("garden hose nozzle", random.Random(s)) for s in range(200)]
    assert queries == [add_typo("garden hose nozzle", random.Random(s)) for s in range(200)]
    assert any(q.startswith("gardenhose") or "hosenozzle" in q for q in queries)  # run together
    assert any(len(q) == len("garden hose nozzle") - 1 for q in queries)  # a letter dropped
    assert any(len(q) == len("garden hose nozzle") + 1 and " " in q[6:7] for q in queries)  # a letter doubled
    assert len(KINDS) == 5


def test_a_query_with_no_long_word_is_left_alone() -> None:
    assert add_typo("2x4 8 ft", random.Random(0)) == "2x4 8 ft"
    assert add_typo("", random.Random(0)) == ""


def test_a_neighbouring_key_is_next_to_it_on_the_keyboard() -> None:
    assert set(NEIGHBOURS["s"]) == set("awedxz")
    assert set(NEIGHBOURS["p"]) == set("ol") and set(NEIGHBOURS["b"]) == set("vnhg")
    assert all(k not in v for k, v in NEIGHBOURS.items())


def test_an_evaluation_query_slips_the_same_way_at_every_run() -> None:
    queries = {f"q{i}": "cordless drill kit" for i in range(50)}
    first = {qid: slipped(qid, text) for qid, text in queries.items()}
    assert first == {qid: slipped(qid, text) for qid, text in queries.items()}
    assert all(text is not None and text != "cordless drill kit" for text in first.values())
    assert len(set(first.values())) > 10  # drawn by each query's id, not one slip for all
    assert slipped("q1", "2x4 8 ft") is None  # nothing to slip: left out, not searched as typed


@pytest.mark.parametrize("query", ["wall  lantern", "coffee  mug", " shelving unit", "garden hose "])
def test_a_query_spaced_oddly_still_slips_a_letter(query: str) -> None:
    """The slipped text is spaced one space a word: compared with the query as typed, a swap of two like
    letters ("wall" -> "wall") had counted as a slip when the query held two spaces or an outer one."""
    words = query.split()
    for seed in range(300):
        out = add_typo(query, random.Random(seed))
        assert out.lower().split() != words
        text = slipped(f"q{seed}", query)
        assert text is not None and text.lower().split() != words
