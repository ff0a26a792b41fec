"""The query analyzer: normalization, corrections against the catalog, brand and type words."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from retrieval.analyzer import Analyzer, english_words
from retrieval.index import ProductIndex
from retrieval.slips import BESIDE, LIKELY, UNLIKELY, slip_weight
from retrieval.vocabulary import Vocabulary, normalize, numbers, tokenize
from tests.fakes import HashingEncoder

TITLES = [
    "DEWALT 20-Volt Max Cordless Drill", "DEWALT 12-Volt Cordless Impact Driver", "Ryobi 18-Volt Cordless Drill",
    "Ryobi 18-Volt Lithium Battery", "Husky 1/2 in. Drive Socket Set", "Charlotte Pipe 1/2 in. PVC Pipe",
    "Charlotte Pipe 3/4 in. PVC Elbow", "Melnor Brass Garden Hose Nozzle", "Melnor Metal Hose Nozzle",
    "Frigidaire 12,000 BTU Window Air Conditioner", "LG 8,000 BTU Window Air Conditioner",
    "Feit Candelabra LED Light Bulb", "Feit Candelabra Base Bulb", "Diablo 7 in. Diamond Blade",
    "Diablo 10 in. Diamond Blade", "Everbilt 3/8 in. Threaded Rod", "Halex 1/2 in. Conduit Connector",
    "Halex 3/4 in. Conduit Strap", "DEWALT DW088K Laser Level",
    "Glacier Bay Bathroom Vanity Cabinet without Tops", "Behr Interior Paint in White",
    "Particle Board Shelf", "Window Screw Assortment",
] * 2


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(Vocabulary.build(TITLES))


@pytest.mark.parametrize("text, expected", [
    ('1/2" PVC', "1/2 in pvc"), ("1/2 inch pvc", "1/2 in pvc"), ("1/2 in. pvc", "1/2 in pvc"),
    ("12v drill", "12 volt drill"), ("DEWALT 20-Volt", "dewalt 20 volt"), ("½ in. pipe", "1/2 in pipe"),
    ("2x4 stud", "2 x 4 stud"), ("1-1/2 in. pipe", "1 1/2 in pipe"), ("50 lbs. sand", "50 lb sand"),
    ("5 gallons paint", "5 gal paint"), ("100 sq. ft. tile", "100 sq ft tile"), ("Black & Decker", "black and decker"),
    ("DW088K", "dw088k"), ("  $ hole saw!! ", "hole saw"),
    ('1½" pipe', "1 1/2 in pipe"), ('7¼" miter saw', "7 1/4 in miter saw"),  # as 1-1/2" and 7-1/4" read
    ('12"x24" tile', "12 in x 24 in tile"), ("4'x8' sheet", "4 ft x 8 ft sheet"), (".5 in. bit", "0.5 in bit"),
    # thousands separators; the double prime NFKC reads as two primes, and two closing quotes, are inches
    ("12,000 BTU", "12000 btu"), ("1,500,000 btu", "1500000 btu"), ("sizes 2,4", "sizes 2 4"),
    ("heater 600,900,1500 watt", "heater 600 900 1500 watt"), ("0.5,125 in", "0.5 125 in"), ("1,000.5", "1000.5"),
    ("1/2\u2033 socket", "1/2 in socket"), ("6\u2019\u2019 pipe", "6 in pipe"), ("8\u2019 ladder", "8 ft ladder"),
    # unit words end where the word does: a longer word is left whole
    ("2 inches pipe", "2 in pipe"), ("2 inchs pipe", "2 in pipe"), ("2 feets hose", "2 ft hose"),
    ("8 footer ladder", "8 footer ladder"), ("3 footstool", "3 footstool"), ("6 inchworm", "6 inchworm"),
    ("12 inchx24 inch", "12 in x 24 in"), ("2 feet6 inch", "2 ft 6 in"),
    # invisible format characters (soft hyphen, zero-width space and joiner, a direction mark) are no separator
    ("dr\u00adill", "drill"), ("dr\u200dill", "drill"), ("\u200fdrill", "drill"),
    # Thai breaks words with a zero-width space
    ("\u0e2a\u0e27\u0e48\u0e32\u0e19\u200b\u0e44\u0e23\u0e49", "\u0e2a\u0e27\u0e48\u0e32\u0e19 \u0e44\u0e23\u0e49"),
    # an apostrophe and s after a number is a plural or a decade, not feet (before: 2 x 4 ft s, 70 ft s)
    ("2x4's", "2 x 4 s"), ("70's retro lamp", "70 s retro lamp"), ("1950\u2019s style sign", "1950 s style sign"),
    ("6'sheet", "6 ft sheet"), ("8' step ladder", "8 ft step ladder"), ("4' s", "4 ft s"),
    # a unit or a dimension a symbol stood in reads as one without it (before: 1/2 inch, 18 v, 000x 5)
    ("1/2 (inch) pvc pipe", "1/2 in pvc pipe"), ("conduit strap 3/4, inch", "conduit strap 3/4 in"),
    ("18 (v) drill", "18 volt drill"), ("000X.5", "000 x 5"), ("3, inch mm -", "3 in mm"),
])
def test_normalize_units_fractions_symbols(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(expected) == expected  # a normalized text normalizes to itself


def test_normalize_is_idempotent() -> None:
    """normalize(normalize(x)) == normalize(x) for texts of numbers, units and symbols drawn at random (before: 30
    kinds of text read a unit only once the symbols were gone, so the analyzer, which normalizes a query again
    after a correction, read '1/2 (inch) pvc pipe' without a unit and '1/2 (inch) pvc pipr' with one)."""
    pieces = ["1", "2", "1/2", ".5", "x", "X", "-", "in", "in.", '"', "'", "ft", "a", "v", "w", "s", "sq", "ft.", "lb",
              "oz", "fl", ",", "000", "\u00bd", "1\u00bd", " ", "/", ".", "gal", "cu", "&", "inch", "12,000", "0", "ga",
              "mm", "\u2019", "\u2033", "\u2032", "\u00d7", "\u2044", "feet", "sq.", "'s", "(", ")", "volt", "lbs.",
              "\u00ad", "\u200b", "\u00c9", "\u00df", "btu", "square", "x2", "2x"]
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 7)))
        assert normalize(normalize(text)) == normalize(text), text
    analyzer = Analyzer(Vocabulary.build(TITLES))
    typo = analyzer.analyze("1/2 (inch) pvc pipr")  # corrected, so normalized again
    assert analyzer.analyze("1/2 (inch) pvc pipe").numbers == typo.numbers == ("1/2 in",)


def test_tokens_keep_fractions_and_numbers_keep_units() -> None:
    assert tokenize('3/4" pipe 2.5 gal') == ["3/4", "in", "pipe", "2.5", "gal"]
    assert numbers(normalize('3/4" pipe, 18v, 2 pack')) == ["3/4 in", "18 volt", "2"]
    assert numbers(normalize("8,000 BTU window unit")) == ["8000 btu"]  # not 8 and 000 btu


def test_a_word_starts_with_a_letter_or_digit() -> None:
    assert tokenize("\u0301\u0301") == []  # combining marks alone are no word: the API answers 422
    assert tokenize("\u0301drill") == ["drill"]
    assert tokenize("\u0915\u093f\u0924\u093e\u092c") == ["\u0915\u093f\u0924\u093e\u092c"]  # marks inside a word stay


def test_a_word_is_not_split_into_a_two_letter_piece() -> None:
    """``theft`` is not ``the ft`` and ``bulletin`` not ``bullet in``: units are words only after a number."""
    titles = ["The Door Stop", "12 ft Hose", "Bullet Hole Repair Kit", "6 in Pipe", "Cork Board",
              "Window Air Conditioner", "Door Lock Set"] * 3
    analyzer = Analyzer(Vocabulary.build(titles))
    assert analyzer.analyze("theft door lock").text == "theft door lock"  # was "the ft door lock"
    assert "bullet in" not in analyzer.analyze("bulletin board").text
    assert analyzer.analyze("windowair conditioner").text == "window air conditioner"
    units = Analyzer(Vocabulary.build(["Carpet 100 sq. ft.", "Freezer 7 cu. ft.", "Stain 32 fl. oz."] * 3))
    assert [units.analyze(t).text for t in ("sqft carpet", "cuft freezer", "floz stain")] == [
        "sq ft carpet", "cu ft freezer", "fl oz stain"]  # a unit of two words run together is split


@pytest.mark.parametrize("typed, searched, reason", [
    ("nozzzle", "nozzle", "spelling"), ("dimond blade", "diamond blade", "spelling"),
    ("candlebra bulb", "candelabra bulb", "spelling"), ("conduet strap", "conduit strap", "spelling"),
    ("windowair conditioner", "window air conditioner", "split"),
    # plurals of words the titles hold only in the singular (the index stems both alike)
    ("brass nozzels", "brass nozzles", "spelling"), ("hosenozzles", "hose nozzles", "split"),
    # long words: three words run together, or three edits from a word found with the query's others
    ("vanity cabinetwithouttops", "vanity cabinet without tops", "split"),
    ("fridgdare air conditioners", "frigidaire air conditioners", "spelling"),
    ("white inyrtior paint", "white interior paint", "spelling"),
])
def test_corrects_words_outside_the_catalog(analyzer: Analyzer, typed: str, searched: str, reason: str) -> None:
    analysis = analyzer.analyze(typed)
    assert analysis.text == searched
    assert [r.reason for r in analysis.rewrites] == [reason]
    assert analysis.original == typed


@pytest.mark.parametrize("text", ["dewalt dw088k", "ryobi drills", "melnor hose", "zzz", "ab", "xqzvw"])
def test_never_corrects_catalog_words_model_numbers_or_unknowable_words(analyzer: Analyzer, text: str) -> None:
    analysis = analyzer.analyze(text)
    assert analysis.rewrites == () and analysis.text == normalize(text)


@pytest.mark.parametrize("text", [
    "penticlea hose",  # three edits from "particle", which no title holds with "hose"
    "inyrtior",  # three edits from "interior", but no other word to confirm it
    "apartment window air conditioner",  # an English word is not a typo three edits from "assortment"
])
def test_three_edits_need_the_other_words_and_a_word_that_is_not_english(analyzer: Analyzer, text: str) -> None:
    assert analyzer.analyze(text).rewrites == ()


def test_kept_words_are_never_corrected_and_english_words_are_real_words() -> None:
    vocabulary = Vocabulary.build(TITLES + ["Native Plant Seed Mix"] * 2)
    assert Analyzer(vocabulary).analyze("negative wire").text == "native wire"  # one catalog word two edits away
    kept = Analyzer(vocabulary, keep=english_words())
    assert kept.analyze("negative wire").text == "negative wire" and not kept.analyze("negative wire").rewrites
    assert kept.analyze("dimond blade").text == "diamond blade"  # a typo is still corrected
    assert {"negative", "cupboard", "swamp"} <= english_words() and "dimond" not in english_words()


def test_a_unit_the_normalization_spells_out_is_never_corrected_in_a_catalog_without_it() -> None:
    """A catalog with bolts, warts and gauze but no volt, watt or gauge: before, `12v bolt` searched `12 bolt
    bolt`, `100w heater` `100 wart heater` and `14ga screw` `14 gauze screw`."""
    vocabulary = Vocabulary.build(["Hex Bolt Zinc"] * 5 + ["Water Heater Tank"] * 3 + ["Wood Screw Box"] * 4
                                  + ["Gauze Pad"] * 3 + ["Wart Remover"] * 3)
    for typed, searched in (("12v bolt", "12 volt bolt"), ("100w heater", "100 watt heater"),
                            ("14ga screw", "14 gauge screw"), ("12-Volt bolt", "12 volt bolt")):
        analysis = Analyzer(vocabulary).analyze(typed)
        assert analysis.text == searched and analysis.rewrites == (), typed
    gage = Analyzer(Vocabulary.build(["Gage Block Set"] * 4))  # no number before it: a word, corrected as any
    assert gage.analyze("gauge block").text == "gage block" and gage.analyze("14 gauge block").text == "14 gauge block"


def test_rewrite_off_only_normalizes(analyzer: Analyzer) -> None:
    analysis = analyzer.analyze("Nozzzle 1/2 Inch", rewrite=False)
    assert analysis.text == "nozzzle 1/2 in" and analysis.rewrites == ()


def test_brand_type_and_numbers_detected_from_the_catalog(analyzer: Analyzer) -> None:
    analysis = analyzer.analyze("ryobi 18v cordless drill")
    assert analysis.brand == ("ryobi",)
    assert "drill" in analysis.product_type
    assert analysis.numbers == ("18 volt",)


def test_brand_and_category_columns_win_over_title_positions() -> None:
    vocabulary = Vocabulary.build(["Acme Super Hammer"] * 3, brands=["Acme"] * 3, categories=["Hand Tools"] * 3)
    assert vocabulary.brands == {"acme"} and vocabulary.types == {"hand", "tools"}


def test_joining_and_unit_words_of_a_brand_or_category_name_neither() -> None:
    vocabulary = Vocabulary.build(["Black & Decker Drill", "Nuts & Bolts for Wood"] * 3,
                                  brands=["Black & Decker", "Nuts & Bolts"] * 3,
                                  categories=["Tools & Hardware", "Screws in 1/2 in"] * 3)
    assert vocabulary.brands == {"black", "decker", "nuts", "bolts"}
    assert vocabulary.types == {"tools", "hardware", "screws"}
    assert Analyzer(vocabulary).analyze("nuts and bolts").brand == ("nuts", "bolts")


def test_a_word_of_a_category_or_brand_column_is_never_corrected() -> None:
    titles = ["Behr Interior Paint Satin", "Glidden Interior Paint Flat", "Behr Deck Stain Cedar"] * 3
    categories = ["Paint > Interior Paint", "Paint > Interior Paint", "Paint > Exterior Stain"] * 3
    analyzer = Analyzer(Vocabulary.build(titles, categories=categories, brands=["Behr", "Glidden", "Behrens"] * 3))
    assert analyzer.analyze("exterior paint").text == "exterior paint"  # no title holds it; a category does
    assert analyzer.analyze("behrens stain").text == "behrens stain"  # a brand's name, however close to another
    assert analyzer.analyze("interor paint").text == "interior paint"  # a typo is still corrected


def test_a_symbol_only_query_analyzes_to_nothing_and_is_never_emptied_by_corrections(analyzer: Analyzer) -> None:
    assert analyzer.analyze("!!! ???").text == ""
    assert analyzer.analyze("qwxzv").text == "qwxzv"  # no suggestion: kept, not dropped


def test_the_index_rebuilds_its_vocabulary_when_the_catalog_changes(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    from retrieval.embedding_cache import EmbeddingCache

    encoder = HashingEncoder()
    products = pd.DataFrame({"product_id": ["a", "b"], "title": ["Garden Hose", "Hose Nozzle"],
                             "description": ["", ""]})
    index = ProductIndex.build(tmp_path / "index", products, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "c.sqlite", encoder.dim), progress=False)
    assert not index.vocabulary.knows("sprinkler")
    extra = pd.DataFrame({"product_id": ["c"], "title": ["Oscillating Sprinkler"], "description": [""]})
    index.upsert(extra, encoder, EmbeddingCache(tmp_path / "c.sqlite", encoder.dim))
    assert index.vocabulary.knows("sprinkler")
    reloaded = ProductIndex.load(tmp_path / "index", settings.retrieval)
    assert reloaded.vocabulary.knows("sprinkler") and reloaded.manifest.analyzer >= 1
    assert reloaded.analyzer.analyze("sprinklr").text == "sprinkler"


def test_context_picks_the_correction_found_with_the_other_words(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    from retrieval.embedding_cache import EmbeddingCache

    encoder = HashingEncoder()
    titles = ["Skil Circular Saw", "Skil Worm Drive Saw"] + [f"Window Sill Plate {i}" for i in range(6)]
    products = pd.DataFrame({"product_id": [str(i) for i in range(len(titles))], "title": titles,
                             "description": [""] * len(titles)})
    index = ProductIndex.build(tmp_path / "index", products, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "c.sqlite", encoder.dim), progress=False)
    assert index.vocabulary.together(["skil", "saws"]) == 2 and index.vocabulary.together(["sill", "saw"]) == 0
    assert index.vocabulary.together(["plate"], any_of=["saw", "window"]) == 6
    assert index.analyzer.analyze("skill saw").text == "skil saw"  # "sill" is more frequent, not with "saw"
    # without the other words: the likelier slip ("skill" doubles the l of "skil"; "sill" needs a k hit beside it)
    assert Analyzer(index.vocabulary, context=False).analyze("skill saw").text == "skil saw"


def test_the_likelier_slip_wins_then_the_other_words_then_frequency() -> None:
    assert (slip_weight("tols", "tools"), slip_weight("grillls", "grills"), slip_weight("basli", "basil"),
            slip_weight("tarpa", "tarps")) == (LIKELY,) * 4  # dropped, doubled, swapped, neighbouring key
    assert slip_weight("ovesn", "oven") == slip_weight("basli", "bali") == BESIDE  # a neighbour hit beside
    assert slip_weight("tarpa", "tampa") == UNLIKELY  # r and m are far apart
    assert slip_weight("aple", "maple") == UNLIKELY and slip_weight("aple", "apple") == LIKELY  # the first letter
    assert slip_weight("drill", "drill saw") == UNLIKELY
    analyzer = Analyzer(Vocabulary.build(["Bali Bamboo Blinds"] * 6 + ["Basil Herb Plant"] * 2
                                         + ["Garden Tools Set"] * 5 + ["Road Tolls Sign"] * 2
                                         + ["Maple Wood Board"] * 6 + ["Apple Tree"] * 2))
    assert analyzer.analyze("basli").text == "basil"  # swapped, though "bali" is more frequent
    assert analyzer.analyze("aple tree").text == "apple tree"  # "maple" changes the first letter
    assert analyzer.analyze("tols").text == "tools"  # "tolls" is as likely a slip: the more frequent
    assert analyzer.analyze("basli bamboo blinds").text == "bali bamboo blinds"  # the other words outweigh it


def test_a_three_letter_word_is_corrected_only_to_a_likely_slip_many_products_hold_with_the_other_words() -> None:
    analyzer = Analyzer(Vocabulary.build(["Trash Bags 30 Gallon"] * 10 + ["Tool Box Steel"] * 12 + ["Tool Bag"] * 3
                                         + ["Bog Garden Plant"] * 2 + ["Drill Bit Set"] * 12 + ["Rotary Tool"] * 10))
    assert analyzer.analyze("rotary cut out tol").text == "rotary cut out tool"  # a dropped letter; ten hold both
    assert analyzer.analyze("tool boc").text == "tool box"  # a neighbouring key
    assert analyzer.analyze("boc").text == "boc"  # alone: a code as likely as a slip
    assert analyzer.analyze("garden bog").text == "garden bog"  # a catalog word: kept
    assert analyzer.analyze("garden bpg").text == "garden bpg"  # no vowel: kept
    assert analyzer.analyze("tool bix").text == "tool box"  # i beside o: a neighbouring key
    assert analyzer.analyze("tool bax").text == "tool bax"  # a for o: keys apart, not a likely slip
    assert analyzer.analyze("sst drill bit").text == "sst drill bit"  # no vowel: stainless steel, not "set"
    assert analyzer.analyze("trash bgs").text == "trash bgs"  # no vowel: kept, though "bags" would fit
    assert analyzer.analyze("tool bgx").text == "tool bgx"  # no likely slip of a catalog word
    assert analyzer.analyze("the trash").text == "the trash"  # an English word: kept


def test_other_scripts_are_corrected_as_words_but_a_cjk_run_is_kept() -> None:
    vocabulary = Vocabulary.build(["電動ドリル セット"] * 5 + ["電動ドライバ セット"] * 5 + ["Дрель аккумуляторная"] * 5)
    analyzer = Analyzer(vocabulary)
    assert analyzer.analyze("дрелль аккумуляторная").text == "дрель аккумуляторная"  # one edit: a typo
    assert analyzer.analyze("電動ドリラ").text == "電動ドリラ"  # one character from 電動ドリル, but a different phrase


def test_the_channel_weight_benchmark_slips_unlikely_into_unknown_words() -> None:
    from benchmarks.slip_weights import unlikely_pairs

    titles = ["Heavy Duty Miter Saw", "Garden Hose Reel Cart", "Cordless Drill Driver Kit", "Oak Log"] * 20
    vocabulary = Vocabulary.build(titles)
    pairs = unlikely_pairs(titles, vocabulary, count=80)
    assert len(pairs) > 40 and not any("oak log" in spelt for _, spelt in pairs)  # no word of 5+ letters
    for typed, spelt in pairs:
        [(slip, word)] = [(a, b) for a, b in zip(typed.split(), spelt.split()) if a != b]
        assert not vocabulary.knows(slip) and slip_weight(slip, word) == UNLIKELY, (slip, word)
    assert pairs == unlikely_pairs(titles, vocabulary, count=80)  # a fixed seed
