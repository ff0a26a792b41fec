"""Query suggestions on hand-made phrases: what matches a typed text, and in which order."""

from __future__ import annotations

from collections.abc import Callable

from retrieval.analyzer import Analyzer
from retrieval.suggest import Suggester, catalog_phrases, ended, singular, suggest
from retrieval.vocabulary import Vocabulary

TITLES = [
    "DeWalt 20-Volt Cordless Drill Kit", "Ryobi 18-Volt Cordless Drill Kit", "Makita Cordless Drill",
    "Cordless Drill Battery 2 Pack", "Bosch Corded Hammer Drill", "Bosch Corded Drill", "Corded Drill 1/2 in.",
    "Garden Hose 50 ft.", "Garden Hose 100 ft.", "Flexible Garden Hose with Nozzle",
]


def test_catalog_phrases_are_runs_enough_titles_share() -> None:
    phrases = catalog_phrases(TITLES, min_products=3)
    assert phrases["cordless drill"] == 4 and phrases["garden hose"] == 3 and phrases["drill"] == 7
    assert "cordless drill kit" not in phrases  # two titles only
    assert not [p for p in phrases if p.split()[0] in ("20", "in", "with") or p.split()[-1] in ("ft", "volt")]


def test_suggestions_start_with_the_typed_text_searched_ones_first() -> None:
    suggester = Suggester(catalog_phrases(TITLES, min_products=2), {"Cordless  Drills": 9, "garden hose reel": 4})
    found = suggester.suggest("cord", 10)
    assert [s.text for s in found][:2] == ["cordless drills", "cordless"]  # searched first, then by products
    assert found[0].source == "searches" and found[0].weight == 9 and found[1].source == "catalog"
    starts = [s.text.startswith("cord") for s in found]
    assert all(any(w.startswith("cord") for w in s.text.split()) for s in found)  # a word starts with it
    assert starts == sorted(starts, reverse=True) and not starts[-1]  # the phrase's own start ranks first
    texts = [s.text for s in suggester.suggest("Garden HO", 10)]
    assert texts[0] == "garden hose reel" and "garden hose" in texts
    assert [s.text for s in suggester.suggest("hose", 3)] == ["garden hose reel", "hose", "garden hose"]
    assert [s.text for s in suggester.suggest("corded ", 10)] == ["corded drill"]  # a trailing space ends the word
    assert [s.text for s in suggester.suggest("corded.", 10)] == ["corded drill"]  # and so does a mark
    assert suggester.suggest("corded", 10)[0].text == "corded"
    assert suggester.suggest("?!", 5) == [] and suggester.suggest("zzz", 5) == []
    # no phrase holds the whole text: its first words are kept and the rest completed
    kept = [s.text for s in suggester.suggest("acme cordless dr", 2)]
    assert kept == ["acme cordless drills", "acme cordless drill kit"]  # "drill" and "drills": one stem, shown once
    kept = [s.text for s in suggester.suggest("acme bosch cor", 3)]
    assert kept[0] == "acme bosch corded" and all(t.startswith("acme bosch cor") for t in kept)  # fewest kept first
    assert len(suggester.suggest("d", 2)) == 2 and len(suggester.suggest("dri", 30)) <= 30
    # a completion whose words no product holds with the last kept word is no suggestion, nor one that repeats it
    products = [{"cordless", "drill"}] * 3 + [{"acme", "cordless", "drill"}]  # each product's words
    found = suggester.suggest("acme cordless dr", 5, holding_in(products))
    # not "acme cordless drill kit": no product holds "cordless drill kit"
    assert [s.text for s in found] == ["acme cordless drill"]
    assert found[0].weight == 1  # the products holding all its words (before: the 4 of "cordless drill" alone)
    assert all(not t.startswith("drill drill") for t in (s.text for s in suggester.suggest("drill dr", 10)))


def holding_in(products: list[set[str]]) -> Callable[[list[str]], int]:
    """How many of ``products`` (each a set of words) hold all the words given, as a catalog's postings count them."""
    return lambda words: sum(set(words) <= held for held in products)


def test_long_prefixes_with_many_keys_rank_like_short_ones() -> None:
    titles = [f"Acme Widget Model {chr(97 + i % 26)}{i}" for i in range(400)]  # "acme widget" in every title
    suggester = Suggester(catalog_phrases(titles, min_products=1), best=3)
    short = [s.text for s in suggester.suggest("acme", 3)]
    long = [s.text for s in suggester.suggest("acme wid", 3)]
    assert short[:2] == ["acme", "acme widget"] and long[0] == "acme widget"
    assert [s.text for s in suggester.suggest("acme", 10)][:2] == short[:2]  # k above the ready list: ranked now


def test_a_plural_and_its_singular_are_one_suggestion() -> None:
    assert [singular(w) for w in ("drills", "boxes", "benches", "glass", "corded", "bus", "kits", "gas")] == [
        "drill", "box", "bench", "glass", "corded", "bus", "kit", "gas"]


def test_a_long_prefix_finds_phrases_with_characters_past_the_basic_plane() -> None:
    suggester = Suggester({"abcde\U00020000fg": 4, "abcdefg": 3})
    assert {s.text for s in suggester.suggest("abcd", 5)} == {s.text for s in suggester.suggest("abcde", 5)}


def test_completions_are_looked_for_until_k_pass_the_checks() -> None:
    """The best 2 * k completions may all be thrown away (no product holds them with the last kept word): the
    next ones are looked at, until k pass or none is left (before: 'standard b' with k=1 gave nothing)."""
    catalog = {f"b{letter}olt": 100 - i for i, letter in enumerate("abcdefghijklmnop")} | {"bronze": 2, "brass": 1}
    suggester = Suggester(catalog)
    holding = holding_in([{"standard", "bronze"}, {"standard", "brass"}, {"other", "baolt"}])
    assert [s.text for s in suggester.suggest("standard b", 1, holding)] == ["standard bronze"]
    assert [s.text for s in suggester.suggest("standard b", 3, holding)] == ["standard bronze", "standard brass"]
    assert [s.text for s in suggester.suggest("standard br", 8, holding)] == ["standard bronze", "standard brass"]
    assert suggester.suggest("nowhere b", 3, holding) == []  # no product holds the kept word


def test_completions_of_the_same_kept_words_come_by_the_weight_they_show() -> None:
    """A completion shows how many products hold all its words; the list is by that weight, not by the completing
    phrase's own (before: 'kit dewalt' (2) came before 'kit decorators' (5))."""
    suggester = Suggester({"dewalt": 40, "decorators": 30, "kit": 50})
    products = [{"kit", "dewalt"}] * 2 + [{"kit", "decorators"}] * 5 + [{"dewalt"}] * 38 + [{"decorators"}] * 25
    found = [(s.text, s.weight) for s in suggester.suggest("kit d", 5, holding_in(products))]
    assert found == [("kit decorators", 5), ("kit dewalt", 2)]


def suggested(typed: str) -> list[str]:
    """What ``/v1/suggest`` offers for ``typed`` on :data:`TITLES` (the phrases two titles share)."""
    return [s.text for s in suggest(Suggester(catalog_phrases(TITLES, min_products=2)),
                                    Analyzer(Vocabulary.build(TITLES)), typed, 5)]


def test_an_invisible_character_typed_last_ends_no_word() -> None:
    """normalize() deletes a soft hyphen, a direction mark or a zero-width joiner: the word before it is still
    partial (before: 'cordl' and a soft hyphen found nothing)."""
    suggester = Suggester(catalog_phrases(TITLES, min_products=2))
    assert suggested("cordl") == ["cordless", "cordless drill", "cordless drill kit"]
    for mark in ("\u00ad", "\u200f", "\u200d"):
        assert not ended("cordl" + mark) and suggested("cordl" + mark) == suggested("cordl")
        assert [s.text for s in suggester.suggest("cordl" + mark, 5)] == [s.text for s in suggester.suggest("cordl", 5)]
    assert ended("cordl\u200b")  # a zero-width space is a space


def test_a_plural_no_phrase_holds_is_read_as_its_singular_whatever_ends_it() -> None:
    """The last word as normalized, not the last chunk between spaces (before: 'drills.' found nothing while
    'drills ' found the phrases of 'drill', and 'bosch-s' was read as the plural 'bosch-')."""
    assert suggested("drills ") == ["drill kit", "cordless drill kit"]
    assert suggested("drills.") == suggested("drills!") == suggested("drills ")
    assert suggested("bosch-s") == suggested("bosch s") == []  # "s" is the last word
