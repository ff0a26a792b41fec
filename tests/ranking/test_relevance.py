"""Relevance features on hand-made catalogs with closed-form values, and on the demo index."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from core.settings import Settings
from ranking.relevance import (
    _WORD,
    FIELD_FEATURES,
    FIELDS,
    RELEVANCE_FEATURES,
    CatalogText,
    relevance_features,
)
from retrieval.analyzer import Analyzer
from retrieval.embedding_cache import EmbeddingCache
from retrieval.index import ProductIndex
from retrieval.vocabulary import Vocabulary, normalize, stem, tokenize
from tests.fakes import HashingEncoder

TITLES = [
    "DEWALT 18-Volt Cordless Drill",
    "Milwaukee M18 Cordless Impact Driver",
    "Ryobi 1/2 in. Corded Hammer Drill",
    "Husky 25 ft. Tape Measure",
    "Behr Premium 1 gal. Deck Stain",
]
BRANDS = ["DEWALT", "Milwaukee", "Ryobi", "Husky", "Behr"]
TYPES = ["Drills", "Drivers", "Tape Measures", "Stains"]
RATIOS = [f"{f}_{n}" for f in FIELDS for n in ("coverage", "idf_coverage", "bigram", "phrase", "first_position",
                                                "char3_jaccard")] + ["type_match", "brand_match", "numbers_match"]


def analyze(text: str, titles: list[str] = TITLES) -> object:
    return Analyzer(Vocabulary.build(titles, brands=BRANDS, categories=TYPES)).analyze(text)


def features(text: str, catalog: CatalogText, docs: list[int] | None = None) -> list[dict[str, float]]:
    docs = list(range(catalog.rows)) if docs is None else docs
    matrix = relevance_features(analyze(text), np.array(docs), catalog)  # type: ignore[arg-type]
    assert matrix.dtype == np.float32 and matrix.shape == (len(docs), len(RELEVANCE_FEATURES))
    return [dict(zip(RELEVANCE_FEATURES, map(float, row))) for row in matrix]


def jaccard3(a: str, b: str) -> float:
    """Reference: Jaccard of the padded character 3-gram sets of two normalized texts."""
    grams = [{s[i:i + 3] for i in range(len(s) - 2)} for s in (f" {a} ", f" {b} ")]
    return len(grams[0] & grams[1]) / len(grams[0] | grams[1])


def reference(query: list[str], text: str, title: str) -> dict[str, float]:
    """Naive title features of query words (and normalized ``text``): the module docstring, word by word."""
    q, t = [stem(w) for w in query], [stem(w) for w in tokenize(title)]
    hit = [w in t for w in dict.fromkeys(q)]
    pairs = list(dict.fromkeys(pairwise(q)))
    runs = [t[i:i + len(q)] for i in range(len(t))]
    first = next((i for i, w in enumerate(t) if w in q), len(t))
    return {"title_coverage": sum(hit) / len(hit), "title_phrase": float(q in runs),
            "title_bigram": sum(p in set(pairwise(t)) for p in pairs) / len(pairs) if pairs else math.nan,
            "title_first_position": first / len(t),
            "title_char3_jaccard": jaccard3(text, normalize(title))}


def idf(df: int, n: int) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


@pytest.fixture()
def titles_only() -> CatalogText:
    return CatalogText.from_products(pd.DataFrame({"product_id": list("abcde"), "title": TITLES,
                                                   "description": [""] * 5}))


def test_names_are_fixed_and_unique() -> None:
    assert len(RELEVANCE_FEATURES) == len(set(RELEVANCE_FEATURES)) == 4 * len(FIELD_FEATURES) + 6
    assert RELEVANCE_FEATURES[0] == "title_coverage" and RELEVANCE_FEATURES[-1] == "rewritten"


def test_tokenizer_matches_the_analyzer() -> None:
    for text in [*TITLES, "1.5a 2x4 1-1/2 in. ½ gal 3.5.6 x/2 12v"]:
        assert _WORD.findall(normalize(text)) == tokenize(text)


def test_closed_form_title_features(titles_only: CatalogText) -> None:
    drill, driver = features("cordless drill 18v", titles_only, [0, 1])
    assert drill["title_coverage"] == 1.0 and drill["title_idf_coverage"] == 1.0  # cordless drill 18 volt
    assert drill["title_bigram"] == pytest.approx(2 / 3)  # (cordless drill), (18 volt) of 3 pairs
    assert drill["title_phrase"] == 0.0
    assert drill["title_first_position"] == pytest.approx(1 / 5)  # "18" in "dewalt 18 volt cordless drill"
    assert drill["title_char3_jaccard"] == pytest.approx(jaccard3("cordless drill 18 volt",
                                                                  "dewalt 18 volt cordless drill"))
    assert drill["title_length"] == 5 and drill["query_length"] == 4
    assert (drill["type_match"], drill["numbers_match"], drill["last_word_in_title"]) == (1.0, 1.0, 1.0)
    assert math.isnan(drill["brand_match"]) and drill["rewritten"] == 0.0
    assert driver["title_coverage"] == 0.25 and driver["title_first_position"] == pytest.approx(2 / 5)
    assert driver["numbers_match"] == 0.0  # "m18" holds a bare 18; the query asks 18 volt
    assert (driver["type_match"], driver["last_word_in_title"], driver["title_bigram"]) == (0.0, 0.0, 0.0)


def test_the_last_word_is_no_unit_or_dimension_word() -> None:
    """``tile`` names what ``ceramic tile 12x24`` looks for, not the ``x`` of the dimension or the ``sq`` of a unit."""
    titles = ["Ceramic Floor Tile", "Plywood Sheet 4 ft x 8 ft", "Carpet Padding 100 sq. ft.", "Behr Paint 32 fl oz"]
    catalog = CatalogText.from_products(pd.DataFrame({"product_id": list("abcd"), "title": titles,
                                                      "description": [""] * 4}))
    for text, holder in (("ceramic tile 12x24", 0), ("ceramic tile 10 sq ft", 0), ("wood stain 32 fl oz", None)):
        last = [row["last_word_in_title"] for row in features(text, catalog)]
        assert last == [float(i == holder) for i in range(4)], (text, last)


def test_idf_weights_and_phrase(titles_only: CatalogText) -> None:
    dewalt, milwaukee, ryobi = features("cordless hammer", titles_only, [0, 1, 2])
    cordless, hammer = idf(2, 5), idf(1, 5)
    assert milwaukee["title_idf_coverage"] == dewalt["title_idf_coverage"] == pytest.approx(
        cordless / (cordless + hammer))
    assert ryobi["title_idf_coverage"] == pytest.approx(hammer / (cordless + hammer))
    assert milwaukee["title_coverage"] == ryobi["title_coverage"] == 0.5
    phrase = features("cordless drill", titles_only, [0, 1, 2])
    assert [row["title_phrase"] for row in phrase] == [1.0, 0.0, 0.0]
    assert math.isnan(features("drill", titles_only, [0])[0]["title_bigram"])  # one word: no pairs


def test_brand_from_title_start_numbers_by_unit(titles_only: CatalogText) -> None:
    rows = features("dewalt 1/2 inch drill", titles_only, [0, 2])
    assert [r["brand_match"] for r in rows] == [1.0, 0.0]
    assert [r["numbers_match"] for r in rows] == [0.0, 1.0]  # "1/2 in" is only in the Ryobi title
    bare = features("tape measure 25", titles_only, [3])[0]
    assert bare["numbers_match"] == 1.0  # a bare number matches the title's "25 ft"


def test_missing_fields_are_nan(titles_only: CatalogText) -> None:
    for row in features("cordless drill", titles_only):
        for field in ("description", "brand", "category"):
            assert all(math.isnan(row[f"{field}_{n}"]) for n in FIELD_FEATURES)
        assert not math.isnan(row["title_coverage"])


def test_descriptions_brands_and_categories_when_present() -> None:
    catalog = CatalogText.from_products(pd.DataFrame({
        "product_id": list("abc"),
        "title": ["18-Volt Cordless Drill", "Cordless Impact Driver", "Deck Stain"],
        "description": ["A compact cordless drill for decks.", "", "Oil stain."],
        "brand": ["DEWALT", None, "Behr"],
        "category": ["Tools > Drills", "Tools > Drivers", None],
    }))
    drill, driver, stain = features("dewalt cordless drill", catalog)
    assert drill["description_coverage"] == pytest.approx(2 / 3) and drill["description_bigram"] == 0.5
    assert drill["description_phrase"] == 0.0 and drill["title_phrase"] == 0.0  # "dewalt" is in neither
    assert drill["description_length"] == 6 and drill["description_first_position"] == pytest.approx(2 / 6)
    assert math.isnan(driver["description_coverage"]) and stain["description_coverage"] == 0.0
    assert drill["brand_coverage"] == pytest.approx(1 / 3) and drill["brand_length"] == 1
    assert math.isnan(driver["brand_coverage"]) and math.isnan(stain["category_coverage"])
    assert drill["category_coverage"] == pytest.approx(1 / 3)  # "drills" stems to "drill"
    assert (drill["brand_match"], driver["brand_match"], stain["brand_match"]) == (1.0, 0.0, 0.0)


def test_empty_query_empty_list_and_bad_docs(titles_only: CatalogText) -> None:
    row = features("$", titles_only, [0])[0]
    assert row["query_length"] == 0 and row["title_length"] == 5 and math.isnan(row["title_coverage"])
    assert relevance_features(analyze("drill"), np.array([], dtype=int), titles_only).shape == (  # type: ignore[arg-type]
        0, len(RELEVANCE_FEATURES))
    with pytest.raises(InvalidInput, match="doc 5 is not a row"):
        relevance_features(analyze("drill"), np.array([0, 5]), titles_only)  # type: ignore[arg-type]


def test_unknown_query_words_count_apart(titles_only: CatalogText) -> None:
    row = features("zzzqx qqxzz drill", titles_only, [0])[0]
    assert row["title_coverage"] == pytest.approx(1 / 3)  # two distinct unknown words, not one


def test_from_index_on_a_built_index(tmp_path: Path, settings: Settings) -> None:
    products = pd.DataFrame({"product_id": list("abcde"), "title": TITLES, "description": [""] * 5})
    encoder = HashingEncoder()
    index = ProductIndex.build(tmp_path / "index", products, encoder, settings.retrieval,
                               EmbeddingCache(tmp_path / "cache.sqlite", encoder.dim), progress=False)
    catalog = CatalogText.from_index(index)
    assert catalog.rows == 5 and set(catalog.fields) == {"title"}
    assert features("cordless drill 18v", catalog, [0])[0]["title_coverage"] == 1.0


def test_demo_index_features_are_finite_where_defined(fake_index: ProductIndex,
                                                      demo_products: pd.DataFrame) -> None:
    catalog = CatalogText.from_index(fake_index)
    assert set(catalog.fields) == set(FIELDS)  # the demo store has every field
    analyzer = Analyzer(Vocabulary.build(*(demo_products[c].tolist() for c in FIELDS)))
    docs = np.arange(catalog.rows)
    for text in ["2-handle matte black bathroom faucet", "7-1/4 in. corded miter saw", "dewalt tape measure"]:
        analysis = analyzer.analyze(text)
        matrix = relevance_features(analysis, docs, catalog)
        frame = pd.DataFrame(matrix, columns=RELEVANCE_FEATURES)
        optional = {"brand_match": analysis.brand, "type_match": analysis.product_type,
                    "numbers_match": analysis.numbers}
        for name in RELEVANCE_FEATURES:
            defined = bool(optional.get(name, True)) and not (name.endswith("bigram") and len(analysis.tokens) < 2)
            assert np.isfinite(frame[name]).all() if defined else frame[name].isna().all(), (text, name)
        assert ((frame[RATIOS].fillna(0) >= 0) & (frame[RATIOS].fillna(0) <= 1)).all().all()
        for doc in range(0, catalog.rows, 7):
            expected = reference(list(analysis.tokens), analysis.text, fake_index.title(doc))
            assert frame.loc[doc, list(expected)].tolist() == pytest.approx(list(expected.values()), nan_ok=True)
