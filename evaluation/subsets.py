"""Named query subsets, so every metric can be reported on a slice of a split.

- ``all``: every query.
- ``misspelled``: queries holding a word outside the catalog's vocabulary: some
  word ``w`` of :func:`retrieval.vocabulary.tokenize` of letters (with their
  combining marks: :func:`retrieval.vocabulary.is_word`) and ``len(w) >= 3`` that
  :meth:`retrieval.vocabulary.Vocabulary.knows` does not know (neither the word
  nor its stem occurs in the live products' titles, descriptions, brands or
  categories). The same vocabulary the query analyzer corrects against
  (:func:`retrieval.index.catalog_vocabulary`), so the subset holds the queries a
  spelling corrector could change.
- ``correct``: the complement of ``misspelled``.

The vocabulary is built once per products table and reused (a small cache keyed
by the table's identity), so evaluating two pipelines on one dataset builds it
once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import pandas as pd

from core.errors import InvalidInput
from evaluation.dataset import EvalDataset
from retrieval.vocabulary import Vocabulary, is_word, tokenize

SUBSETS = ("all", "misspelled", "correct")
MIN_LETTERS = 3

_VOCABULARIES: dict[int, tuple[weakref.ref[pd.DataFrame], Vocabulary]] = {}


def check_subset(name: str) -> str:
    """``name`` if it is a known subset, else :class:`InvalidInput` naming the allowed ones."""
    if name not in SUBSETS:
        raise InvalidInput(f"subset {name!r} is not one of {list(SUBSETS)}")
    return name


def vocabulary(products: pd.DataFrame) -> Vocabulary:
    """The catalog vocabulary of ``products`` (columns title; description, brand, category where present), as the
    query analyzer builds it, cached per table."""
    key = id(products)
    cached = _VOCABULARIES.get(key)
    if cached is not None and cached[0]() is products:
        return cached[1]
    from retrieval.index import catalog_vocabulary  # here: the CLI's parser reads SUBSETS, and FAISS must not load

    text = products.assign(**{column: products[column].fillna("").astype(str)
                              for column in ("title", "description") if column in products.columns})
    if "description" not in text.columns:
        text = text.assign(description="")
    built = catalog_vocabulary(text)
    for stale in [k for k, (ref, _) in _VOCABULARIES.items() if ref() is None]:
        del _VOCABULARIES[stale]
    _VOCABULARIES[key] = (weakref.ref(products), built)
    return built


def unknown_words(query: str, vocab: Vocabulary) -> list[str]:
    """The words of ``query`` the catalog does not know (alphabetic, >= 3 letters)."""
    return [w for w in tokenize(query) if is_word(w) and len(w) >= MIN_LETTERS and not vocab.knows(w)]


def is_misspelled(query: str, vocab: Vocabulary) -> bool:
    return bool(unknown_words(query, vocab))


def query_subsets(source: EvalDataset | pd.DataFrame, queries: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """The query ids of each subset in :data:`SUBSETS`.

    Args:
        source: The dataset (its ``products``) or a products table.
        queries: (query_id, query text) pairs, e.g. ``dataset.select(split)``.
    """
    products = source.products if isinstance(source, EvalDataset) else source
    vocab = vocabulary(products)
    pairs = list(queries)
    misspelled = {qid for qid, text in pairs if is_misspelled(str(text), vocab)}
    everything = {qid for qid, _ in pairs}
    return {"all": everything, "misspelled": misspelled, "correct": everything - misspelled}


def subset_ids(source: EvalDataset | pd.DataFrame, queries: Iterable[tuple[str, str]], name: str) -> set[str]:
    """The query ids of subset ``name`` among ``queries`` (``all`` builds no vocabulary)."""
    if check_subset(name) == "all":
        return {qid for qid, _ in queries}
    return query_subsets(source, queries)[name]
