"""Query subsets on a tiny hand-made dataset; the harness on a subset, with per-query values."""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InvalidInput
from evaluation import subsets
from evaluation.dataset import load_dataset
from evaluation.harness import evaluate
from evaluation.subsets import SUBSETS, query_subsets, subset_ids, unknown_words, vocabulary
from evaluation.typos import slipped
from tests.evaluation.test_harness import FakeIndex, Scripted

PRODUCTS = [("p0", "Cordless Drill Kit", "A drill with a brushless motor"),
            ("p1", "Garden Hose Nozzle", "Brass nozzle for any hose"),
            ("p2", "Brass Door Knob", ""),
            ("p3", "Cordless Impact Driver", "Compact driver, 18 volt battery")]
QUERIES = [("q1", "cordless drill", "dev"),      # every word in the catalog
           ("q2", "garden hose nozzzle", "dev"),  # typo: 'nozzzle'
           ("q3", "drills 18v", "dev"),           # 'drills' stems to 'drill'; '18 volt' has a digit
           ("q4", "xy door knob", "dev"),         # 'xy' is unknown but shorter than 3 letters
           ("q5", "brass dor knob", "train")]     # typo: 'dor' (3 letters)
JUDGMENTS = [("q1", "p0", 3), ("q1", "p3", 1), ("q2", "p1", 3), ("q3", "p0", 2), ("q4", "p2", 3),
             ("q5", "p2", 3)]


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(PRODUCTS, columns=["product_id", "title", "description"]).to_csv(folder / "products.csv",
                                                                                   index=False)
    pd.DataFrame(QUERIES, columns=["query_id", "query", "split"]).to_csv(folder / "queries.csv", index=False)
    pd.DataFrame(JUDGMENTS, columns=["query_id", "product_id", "grade"]).to_csv(folder / "judgments.csv",
                                                                                index=False)
    return folder


@pytest.fixture()
def dataset(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_dataset(write_dataset(tmp_path / "ds"))


def test_misspelled_queries_hold_a_word_outside_the_vocabulary(dataset) -> None:  # type: ignore[no-untyped-def]
    split = query_subsets(dataset, dataset.select(None))
    assert split == {"all": {"q1", "q2", "q3", "q4", "q5"}, "misspelled": {"q2", "q5"},
                     "correct": {"q1", "q3", "q4"}}
    vocab = vocabulary(dataset.products)
    assert unknown_words("garden hose nozzzle", vocab) == ["nozzzle"]
    assert unknown_words("Brushless DRILLS", vocab) == []  # description words count; stems match
    # a products table works as well as the dataset; only the given queries are split
    assert query_subsets(dataset.products, dataset.select("dev"))["misspelled"] == {"q2"}
    assert subset_ids(dataset, dataset.select("dev"), "correct") == {"q1", "q3", "q4"}


def test_vocabulary_is_built_once_per_products_table(dataset, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    built = []
    real = subsets.Vocabulary.build
    monkeypatch.setattr(subsets.Vocabulary, "build", lambda *a, **k: built.append(1) or real(*a, **k))
    for name in ("misspelled", "correct", "misspelled"):
        subset_ids(dataset, dataset.select(None), name)
    assert len(built) == 1
    subset_ids(dataset.products.copy(), dataset.select(None), "misspelled")  # another table: built again
    assert len(built) == 2
    subset_ids(dataset, dataset.select(None), "all")  # `all` needs no vocabulary
    assert len(built) == 2


def test_unknown_subset_is_invalid_input(dataset) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=r"subset 'typos' is not one of \['all', 'misspelled', 'correct'\]"):
        subset_ids(dataset, dataset.select(None), "typos")
    index = FakeIndex([p for p, _, _ in PRODUCTS])
    with pytest.raises(InvalidInput, match="subset 'typos'"):
        evaluate(dataset, index, Scripted(index, {}), "s", "retrieval", subset="typos", progress=False)  # type: ignore[arg-type]
    assert SUBSETS == ("all", "misspelled", "correct")


def test_harness_on_a_subset_keeps_per_query_values(dataset) -> None:  # type: ignore[no-untyped-def]
    index = FakeIndex([p for p, _, _ in PRODUCTS])
    lists = {"cordless drill": ["p3", "p0"], "garden hose nozzzle": ["p1"], "drills 18v": ["p2", "p0"],
             "xy door knob": ["p1", "p2"], "brass dor knob": ["p2"]}
    pipe = Scripted(index, lists)  # type: ignore[arg-type]
    full = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", progress=False)  # type: ignore[arg-type]
    assert full.subset == "all" and full.queries == 4
    assert set(full.per_query) == {"ndcg@10", "mrr@10", "recall@100", "recall@1000", "ndcg@10_unjudged_as_0",
                                   "judged@10"}
    for metric, values in full.per_query.items():  # the printed figure is the mean of the per-query values
        assert full.metrics[metric] == round(statistics.fmean(values.values()), 4)
    payload = full.to_json()
    assert "per_query" not in payload and payload["subset"] == "all"
    assert list(payload)[:7] == ["dataset", "mode", "pipeline", "split", "subset", "queries", "skipped"]

    typos = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="misspelled", progress=False)  # type: ignore[arg-type]
    correct = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="correct", progress=False)  # type: ignore[arg-type]
    assert (typos.queries, correct.queries) == (1, 3) and typos.to_json()["subset"] == "misspelled"
    assert set(typos.per_query["ndcg@10"]) == {"q2"} and typos.metrics["ndcg@10"] == 1.0
    assert set(correct.per_query["ndcg@10"]) == {"q1", "q3", "q4"}
    # limit counts within the subset
    first = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="correct", limit=1, progress=False)  # type: ignore[arg-type]
    assert set(first.per_query["ndcg@10"]) == {"q1"}
    # rerank mode: only the rerank metrics
    rerank = evaluate(dataset, index, pipe, "s", "rerank", progress=False)  # type: ignore[arg-type]
    assert set(rerank.per_query) == {"ndcg@10", "mrr@10"} and set(rerank.per_query["ndcg@10"]) == {"q1"}


def test_harness_with_typos_searches_each_query_with_one_slip(dataset,  # type: ignore[no-untyped-def]
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    index = FakeIndex([p for p, _, _ in PRODUCTS])
    searched: list[str] = []

    class Recording(Scripted):
        def search(self, query, depth):  # type: ignore[no-untyped-def]
            searched.append(query)
            return self._cands(["p0", "p1"])

    pipe = Recording(index, {})  # type: ignore[arg-type]
    result = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="correct", typos=True,
                      progress=False)  # type: ignore[arg-type]
    # q4 'xy door knob' and q1 'cordless drill' hold a word of 4+ letters; q3 'drills 18v' too
    assert sorted(result.per_query["recall@100"]) == ["q1", "q3", "q4"]
    assert result.details["typos"] == {"slipped": 3, "left_out": 0}
    typed = {"cordless drill", "drills 18v", "xy door knob"}
    assert len(searched) == 3 and not typed & set(searched)
    assert [slipped(q, t) for q, t in (("q1", "cordless drill"), ("q3", "drills 18v"), ("q4", "xy door knob"))] \
        == searched  # the subset is chosen on the text as typed, then each query slips as its id draws
    again = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="correct", typos=True,
                     progress=False)  # type: ignore[arg-type]
    assert searched[3:] == searched[:3] and again.per_query == result.per_query
    # a query with no word a slip can hit is left out, not searched as typed
    monkeypatch.setattr("evaluation.harness.slipped", lambda qid, text: None if qid == "q1" else slipped(qid, text))
    some = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="correct", typos=True,
                    progress=False)  # type: ignore[arg-type]
    assert sorted(some.per_query["recall@100"]) == ["q3", "q4"]
    assert some.details["typos"] == {"slipped": 2, "left_out": 1} and some.to_json()["typos"]["left_out"] == 1
    first = evaluate(dataset, index, pipe, "s", "retrieval", split="dev", subset="correct", typos=True, limit=2,
                     progress=False)  # type: ignore[arg-type]
    assert sorted(first.per_query["recall@100"]) == ["q3", "q4"]  # --limit counts the queries searched


def test_brand_and_category_words_are_known_and_marked_letters_are_words(tmp_path: Path) -> None:
    """The subset reads the vocabulary the analyzer corrects against (brands and categories too), and a word with
    combining marks (Devanagari's vowel signs) is a word: before, 'makita' and 'watering' counted as misspelled
    and 'हथोड़ा' (a misspelled hammer) never did."""
    pd.DataFrame({"product_id": ["p1", "p2", "p3"],
                  "title": ["Cordless Drill 20 volt", "Impact Driver kit", "Garden Hose 50 ft"],
                  "brand": ["Makita", "Makita", "Gilmour"],
                  "category": ["Power Tools", "Power Tools", "Watering"]}).to_csv(tmp_path / "products.csv", index=False)
    queries = {"q1": "makita drill", "q2": "watering hose", "q3": "cordles drill", "q4": "हथोड़ा"}
    pd.DataFrame({"query_id": list(queries), "query": list(queries.values())}).to_csv(tmp_path / "queries.csv",
                                                                                     index=False)
    pd.DataFrame({"query_id": list(queries), "product_id": ["p1", "p3", "p1", "p2"], "grade": 3}).to_csv(
        tmp_path / "judgments.csv", index=False)
    dataset = load_dataset(tmp_path)
    assert sorted(query_subsets(dataset, dataset.select(None))["misspelled"]) == ["q3", "q4"]
