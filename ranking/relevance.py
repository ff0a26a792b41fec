"""Cheap query-product text-match features: coverage, idf, pairs, phrase, position, 3-grams, numbers.

The hand-made features behind the top solutions of Kaggle's Home Depot Product
Search Relevance competition (2016). Per field (``title``; ``description`` when
any product has one; the ``brand`` and ``category`` columns when the catalog has
them), query and field words compared by Snowball stem (:func:`retrieval.vocabulary.stem`):

- ``coverage``: share of the query's distinct words present in the field;
- ``idf_coverage``: the same, each word weighted by its BM25 idf over the field's
  live products, ``log(1 + (N - df + 0.5) / (df + 0.5))`` (Robertson and Zaragoza 2009);
- ``bigram``: share of the query's distinct adjacent word pairs adjacent in the field
  (NaN for one-word queries);
- ``phrase``: 1 when the whole (stemmed) query is a run of the field's words;
- ``first_position``: position of the first matched query word / field length
  (0 = first word; 1 = no match);
- ``char3_jaccard``: Jaccard similarity of the character 3-gram sets of the
  normalized query and field, each padded with a space on both sides (characters
  outside ASCII are told apart too, by a hash of their code point into 1,021 codes);
- ``length``: the field's length in words.

Query-level: ``query_length`` (words); ``type_match`` (a query product-type word is
in the title); ``brand_match`` (a query brand word is in the title's first 3 words
or the brand field); ``numbers_match`` (share of the query's numbers among the
title's: ``18 volt`` needs the unit, a bare ``18`` matches any); ``last_word_in_title``
(the last query word that is no number or unit: shoppers end with the product
type); ``rewritten`` (the analyzer corrected or split a word).

NaN means missing: a field the catalog or product lacks; a query without words,
brand, type or numbers. :class:`CatalogText` keeps the catalog's text as flat
arrays (stem ids, 3-gram codes, number ids), so a call is a fixed number of numpy
operations whatever the number of candidates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, pairwise

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from core.query import Analysis
from ranking.ragged import Ragged, char3, distinct
from retrieval.index import ProductIndex
from retrieval.vocabulary import TOKEN, UNIT_WORDS, UNITS, is_word, normalize, numbers, stem

FIELDS = ("title", "description", "brand", "category")
FIELD_FEATURES = ("coverage", "idf_coverage", "bigram", "phrase", "first_position", "char3_jaccard", "length")
QUERY_FEATURES = ("query_length", "type_match", "brand_match", "numbers_match", "last_word_in_title", "rewritten")
RELEVANCE_FEATURES: tuple[str, ...] = (
    *(f"{field}_{name}" for field in FIELDS for name in FIELD_FEATURES), *QUERY_FEATURES)

_WORD = TOKEN  # the analyzer's word pattern
@lru_cache(maxsize=65536)
def _bare(number: str) -> str | None:
    """``"18"`` for ``"18 volt"``; None for a number without a unit."""
    return next((number[: -len(u) - 1] for u in UNITS if number.endswith(" " + u)), None)


@dataclass(frozen=True)
class FieldText:
    """One text field of every product: stem ids in order, 3-gram codes, idf per stem id."""

    name: str
    present: np.ndarray  # bool per row: the product has this field
    words: Ragged
    grams: Ragged
    idf: np.ndarray  # float32 per stem id (df 0: the rarest idf)


@dataclass
class CatalogText:
    """Per-product analyzed text of one index, computed once for :func:`relevance_features`.

    Build it with :meth:`from_index` after the index is built or changed: rows
    added later (upserts) are not in it, and asking for them raises.
    """

    rows: int
    stem_ids: dict[str, int]
    number_ids: dict[str, int]
    fields: dict[str, FieldText]
    title_numbers: Ragged  # number ids per title; a number with a unit also as its bare value

    @classmethod
    def from_index(cls, index: ProductIndex) -> CatalogText:
        """The text of every row of ``index.products`` (dead rows too; idf counts live rows only)."""
        return cls.from_products(index.products)

    @classmethod
    def from_products(cls, products: pd.DataFrame) -> CatalogText:
        """From a catalog frame (``title``, optional ``description``, ``brand``, ``category``, ``live``)."""
        live = products["live"].to_numpy(bool) if "live" in products.columns else np.ones(len(products), bool)
        stem_ids: dict[str, int] = {}
        word_ids: dict[str, int] = {}
        raw: dict[str, tuple[np.ndarray, Ragged, list[str]]] = {}
        for name in FIELDS:
            texts = _texts(products, name)
            if texts is not None:
                present = np.array([bool(t) for t in texts], dtype=bool)
                distinct = {t: normalize(t) for t in dict.fromkeys(texts)}  # brands, categories repeat
                normalized = [distinct[t] for t in texts]
                raw[name] = present, _word_ids(normalized, word_ids, stem_ids), normalized
        number_ids: dict[str, int] = {}
        title_numbers = []
        for text in raw["title"][2]:
            found = [n for number in numbers(text) for n in (number, _bare(number)) if n]
            title_numbers.append([number_ids.setdefault(n, len(number_ids)) for n in found])
        fields = {name: FieldText(name, present, words, char3(normalized),
                                  _idf(words, live & present, len(stem_ids)))
                  for name, (present, words, normalized) in raw.items()}
        return cls(len(products), stem_ids, number_ids, fields, Ragged.from_lists(title_numbers))


def _texts(products: pd.DataFrame, name: str) -> list[str] | None:
    """The field's text per row ("" where missing), or None when the catalog lacks the field."""
    if name not in products.columns:
        return None
    texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
             for v in products[name].tolist()]
    return texts if name == "title" or any(texts) else None


def _word_ids(normalized: list[str], word_ids: dict[str, int], stem_ids: dict[str, int]) -> Ragged:
    words = [_WORD.findall(t) for t in normalized]
    for word in dict.fromkeys(chain.from_iterable(words)):
        if word not in word_ids:
            word_ids[word] = stem_ids.setdefault(stem(word), len(stem_ids))
    return Ragged.from_lists([[word_ids[w] for w in row] for row in words])


def _idf(words: Ragged, counted: np.ndarray, vocabulary: int) -> np.ndarray:
    """BM25 idf of every stem id over the rows in ``counted``."""
    rows = np.repeat(np.arange(len(counted), dtype=np.int64), np.diff(words.ptr))
    keep = counted[rows]
    pairs = distinct(rows[keep] * vocabulary + words.values[keep])
    df = np.bincount(pairs % vocabulary, minlength=vocabulary + 1)  # the last slot: unknown stems (-1)
    n = int(counted.sum())
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


@dataclass(frozen=True)
class _Query:
    """The query as catalog ids: words in order, distinct words, pairs, 3-grams, numbers, brand, types."""

    words: np.ndarray
    distinct: np.ndarray
    pairs: np.ndarray  # distinct adjacent pairs as codes a * (V + 1) + b; -1 with an unknown word
    grams: np.ndarray
    numbers: np.ndarray
    brand: np.ndarray
    types: np.ndarray
    last: np.ndarray  # the last word that is no number or unit, as (id,); empty when none

    @classmethod
    def of(cls, analysis: Analysis, catalog: CatalogText) -> _Query:
        """Distinct words, pairs and numbers are taken as strings first: unknown ones (id -1) stay apart."""
        tokens = analysis.tokens or tuple(_WORD.findall(analysis.text))
        stems = [stem(w) for w in tokens]
        last = [stem(w) for w in tokens if is_word(w) and w not in UNIT_WORDS][-1:]
        ids, size = catalog.stem_ids, len(catalog.stem_ids) + 1  # the idf arrays' length
        pairs = [ids.get(a, -1) * size + ids.get(b, -1) if a in ids and b in ids else -1
                 for a, b in dict.fromkeys(pairwise(stems))]
        return cls(
            words=_ids(stems, catalog.stem_ids),
            distinct=_ids(dict.fromkeys(stems), catalog.stem_ids),
            pairs=np.array(pairs, dtype=np.int64),
            grams=char3([analysis.text]).values.astype(np.int64),
            numbers=_ids(dict.fromkeys(analysis.numbers), catalog.number_ids),
            brand=_ids((stem(w) for w in analysis.brand), catalog.stem_ids),
            types=_ids((stem(w) for w in analysis.product_type), catalog.stem_ids),
            last=_ids(last, catalog.stem_ids),
        )


def _ids(keys: Iterable[str], ids: dict[str, int]) -> np.ndarray:
    return np.array([ids.get(k, -1) for k in keys], dtype=np.int64)


def _contains(values: np.ndarray, seg: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """(n, len(ids)) bool: row i's values contain ids[j] (ids of -1 never match)."""
    rows, cols = np.nonzero((values[:, None] == ids[None, :]) & (ids[None, :] >= 0))
    out = np.zeros((n, len(ids)), dtype=bool)
    out[seg[rows], cols] = True
    return out


def _field_block(q: _Query, field: FieldText, docs: np.ndarray) -> np.ndarray:
    """The :data:`FIELD_FEATURES` of ``docs`` for one field, (len(docs), 7)."""
    n = len(docs)
    out = np.full((n, len(FIELD_FEATURES)), np.nan, dtype=np.float32)
    tok, seg, within, lens = field.words.gather(docs)
    out[:, 6] = lens
    if len(q.words):
        hits = _contains(tok, seg, q.distinct, n)
        weights = field.idf[q.distinct]  # -1 indexes the last slot: df 0
        out[:, 0] = hits.mean(axis=1)
        out[:, 1] = hits @ weights / weights.sum()
        if len(q.pairs):
            same = seg[1:] == seg[:-1]
            codes = tok[:-1].astype(np.int64) * len(field.idf) + tok[1:]
            out[:, 2] = _contains(codes[same], seg[1:][same], q.pairs, n).mean(axis=1)
        out[:, 3] = _phrase(q.words, tok, seg, within, lens, n)
        matched = np.flatnonzero(np.isin(tok, q.distinct[q.distinct >= 0]))
        first_rows, first = np.unique(seg[matched], return_index=True)
        out[:, 4] = 1.0
        out[first_rows, 4] = within[matched[first]] / lens[first_rows]
        grams, gseg, _, glens = field.grams.gather(docs)
        shared = np.bincount(gseg[np.isin(grams, q.grams)], minlength=n)
        out[:, 5] = shared / (len(q.grams) + glens - shared)  # > 0: the query has grams
    out[~field.present[docs]] = np.nan
    return out


def _phrase(words: np.ndarray, tok: np.ndarray, seg: np.ndarray, within: np.ndarray, lens: np.ndarray,
            n: int) -> np.ndarray:
    """1.0 where the query's words appear in order as a run of the row's words."""
    found = np.zeros(n, dtype=np.float32)
    if (words < 0).any():
        return found
    starts = np.flatnonzero((tok == words[0]) & (within + len(words) <= lens[seg]))
    for offset, word in enumerate(words[1:], start=1):
        starts = starts[tok[starts + offset] == word]
    found[seg[starts]] = 1.0
    return found


def _query_block(q: _Query, analysis: Analysis, catalog: CatalogText, docs: np.ndarray) -> np.ndarray:
    """The :data:`QUERY_FEATURES` of ``docs``, (len(docs), 6)."""
    n = len(docs)
    out = np.full((n, len(QUERY_FEATURES)), np.nan, dtype=np.float32)
    out[:, 0] = len(q.words)
    tok, seg, within, _ = catalog.fields["title"].words.gather(docs)
    if len(q.types):
        out[:, 1] = _contains(tok, seg, q.types, n).any(axis=1)
    if len(q.brand):
        found = _contains(tok[within < 3], seg[within < 3], q.brand, n).any(axis=1)
        if "brand" in catalog.fields:
            btok, bseg, _, _ = catalog.fields["brand"].words.gather(docs)
            found |= _contains(btok, bseg, q.brand, n).any(axis=1)
        out[:, 2] = found
    if len(q.numbers):
        nums, nseg, _, _ = catalog.title_numbers.gather(docs)
        out[:, 3] = _contains(nums, nseg, q.numbers, n).mean(axis=1)
    if len(q.last):
        out[:, 4] = _contains(tok, seg, q.last, n)[:, 0]
    out[:, 5] = float(bool(analysis.rewrites))
    return out


def relevance_features(analysis: Analysis, docs: np.ndarray, catalog: CatalogText) -> np.ndarray:
    """The :data:`RELEVANCE_FEATURES` of each candidate for one analyzed query.

    Args:
        analysis: The analyzed query (:meth:`retrieval.analyzer.Analyzer.analyze`).
        docs: Candidate rows of the index ``catalog`` was built from.
        catalog: :meth:`CatalogText.from_index` of that index.

    Returns:
        float32 array (len(docs), len(RELEVANCE_FEATURES)); NaN = missing.

    Raises:
        InvalidInput: A doc is not a row of ``catalog``.
    """
    docs = np.asarray(docs, dtype=np.int64).reshape(-1)
    if len(docs) and (docs.min() < 0 or docs.max() >= catalog.rows):
        bad = int(docs[(docs < 0) | (docs >= catalog.rows)][0])
        raise InvalidInput(f"doc {bad} is not a row of the catalog text ({catalog.rows} rows); pass docs in "
                           "0..rows-1, and rebuild CatalogText.from_index(index) after the index changes")
    q = _Query.of(analysis, catalog)
    out = np.full((len(docs), len(RELEVANCE_FEATURES)), np.nan, dtype=np.float32)
    width = len(FIELD_FEATURES)
    for slot, name in enumerate(FIELDS):
        if name in catalog.fields:
            out[:, slot * width:(slot + 1) * width] = _field_block(q, catalog.fields[name], docs)
    out[:, len(FIELDS) * width:] = _query_block(q, analysis, catalog, docs)
    return out
