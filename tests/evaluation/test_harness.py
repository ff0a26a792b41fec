"""The harness on a tiny hand-made dataset with a scripted pipeline: known answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InvalidInput
from evaluation.dataset import load_dataset
from evaluation.harness import EvalResult, Thresholds, evaluate, given_order
from retrieval.index import ProductIndex
from retrieval.types import Candidates, Hits


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"product_id": [f"p{i}" for i in range(6)], "title": [f"t{i}" for i in range(6)]}).to_csv(
        folder / "products.csv", index=False)
    pd.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "query": ["a", "b", "c", "d"],
                  "split": ["dev", "dev", "dev", "train"]}).to_csv(folder / "queries.csv", index=False)
    rows = [("q1", "p0", 8), ("q1", "p1", 4), ("q1", "p2", 0),  # usable
            ("q2", "p3", 6),                                    # one judged: skipped in rerank
            ("q3", "p4", 0), ("q3", "p5", 0),                   # single grade (all 0): skipped in both
            ("q4", "p0", 2), ("q4", "p9", 8)]                   # p9 unknown: dropped
    pd.DataFrame(rows, columns=["query_id", "product_id", "grade"]).assign(extra="x").to_csv(
        folder / "judgments.csv", index=False)
    return folder


class Scripted:
    """A pipeline returning fixed product lists per query text."""

    name = "scripted"

    def __init__(self, index: ProductIndex, lists: dict[str, list[str]]) -> None:
        self.index = index
        self.lists = lists

    def _cands(self, pids: Sequence[str]) -> Candidates:
        hits = Hits.of([self.index.doc_of(p) for p in pids], [-i for i in range(len(pids))])
        return Candidates.from_hits(hits, self.name, list(pids))

    def search(self, query: str, k: int) -> Candidates:
        return self._cands(self.lists[query][:k])

    def batch_search(self, queries: Sequence[str], k: int) -> list[Candidates]:
        return [self.search(q, k) for q in queries]

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        given = {self.index.product_id(d) for d in docs}
        return self._cands([p for p in self.lists[query] if p in given])


class FakeIndex:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def doc_of(self, pid: str) -> int | None:
        return self.ids.index(pid) if pid in self.ids else None

    def product_id(self, doc: int) -> str:
        return self.ids[doc]


@pytest.fixture()
def dataset(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_dataset(write_dataset(tmp_path / "ds"))


def test_dataset_loading(dataset) -> None:  # type: ignore[no-untyped-def]
    assert dataset.max_grade == 8 and dataset.dropped_judgments == 1
    assert dataset.splits == ["dev", "train"]
    assert [q for q, _ in dataset.select("dev")] == ["q1", "q2", "q3"]
    assert len(dataset.select(None)) == 4
    with pytest.raises(InvalidInput, match="split 'test' is not in"):
        dataset.select("test")


def test_rerank_mode_skips_queries_without_signal(dataset) -> None:  # type: ignore[no-untyped-def]
    index = FakeIndex([f"p{i}" for i in range(6)])
    pipe = Scripted(index, {"a": ["p2", "p1", "p0"], "b": ["p3"], "c": ["p4", "p5"]})  # type: ignore[arg-type]
    result = evaluate(dataset, index, pipe, "scripted", "rerank", split="dev", progress=False)  # type: ignore[arg-type]
    assert (result.queries, result.skipped) == (1, 2)
    idcg = 8 + 4 / math.log2(3)
    assert result.metrics["ndcg@10"] == pytest.approx(round((4 / math.log2(3) + 8 / 2) / idcg, 4))
    assert result.metrics["mrr@10"] == pytest.approx(round(1 / 3, 4))  # p0 (8 >= 6) at rank 3


class Tied:
    """A pipeline that scores every product alike: it keeps the order it is given (a stable sort)."""

    name = "tied"

    def __init__(self, index: FakeIndex) -> None:
        self.index = index
        self.given: list[list[int]] = []

    def rank(self, query: str, docs: Sequence[int]) -> Candidates:
        self.given.append(list(docs))
        hits = Hits.ranked(docs, [0.0] * len(docs))
        return Candidates.from_hits(hits, self.name, [self.index.product_id(int(d)) for d in hits.docs])


def test_rerank_mode_hands_over_judged_products_in_an_order_drawn_per_query(tmp_path: Path) -> None:
    """A ranker that cannot tell the products apart scores what chance gives, not what the catalog's order
    gives: listed in catalog order, q1's best product came first and the tie scored NDCG 1."""
    folder = tmp_path / "ds"
    folder.mkdir()
    pd.DataFrame({"product_id": [f"p{i}" for i in range(12)], "title": [f"t{i}" for i in range(12)]}).to_csv(
        folder / "products.csv", index=False)
    pd.DataFrame({"query_id": ["q1"], "query": ["a"], "split": ["dev"]}).to_csv(folder / "queries.csv", index=False)
    pd.DataFrame({"query_id": ["q1"] * 12, "product_id": [f"p{i}" for i in range(12)],
                  "grade": [8] + [0] * 11}).to_csv(folder / "judgments.csv", index=False)
    index = FakeIndex([f"p{i}" for i in range(12)])
    pipe = Tied(index)
    first = evaluate(load_dataset(folder), index, pipe, "tied", "rerank", progress=False)  # type: ignore[arg-type]
    again = evaluate(load_dataset(folder), index, pipe, "tied", "rerank", progress=False)  # type: ignore[arg-type]
    assert pipe.given[0] == given_order("q1", range(12)) == pipe.given[1]  # the same at every run
    assert sorted(pipe.given[0]) == list(range(12)) and pipe.given[0] != list(range(12))
    assert first.metrics == again.metrics and first.metrics["mrr@10"] < 1.0


def test_a_metric_of_no_query_is_saved_as_null_and_read_as_nan(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A split with no query at the recall grade has no recall: NaN, which strict JSON readers refuse."""
    index = FakeIndex([f"p{i}" for i in range(6)])
    pipe = Scripted(index, {"d": ["p0"]})  # type: ignore[arg-type]
    result = evaluate(dataset, index, pipe, "scripted", "retrieval", split="train",  # type: ignore[arg-type]
                      progress=False)
    assert math.isnan(result.metrics["recall@100"])
    result.save(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text
    assert math.isnan(EvalResult.load(tmp_path / "r.json").metrics["recall@100"])


def test_retrieval_mode_condensed_ndcg_and_recall(dataset) -> None:  # type: ignore[no-untyped-def]
    index = FakeIndex([f"p{i}" for i in range(6)])
    lists = {"a": ["p5", "p1", "p4", "p0"], "b": ["p0", "p1", "p2"], "c": ["p4"]}
    result = evaluate(dataset, index, Scripted(index, lists), "scripted", "retrieval", split="dev",  # type: ignore[arg-type]
                      thresholds=Thresholds(recall=0.6, mrr=0.75), progress=False)
    assert (result.queries, result.skipped) == (2, 1)  # q3 has only grade 0
    # q1 condensed: [p1 (4), p0 (8)]; q2: p3 never retrieved -> ndcg 0
    q1 = (4 + 8 / math.log2(3)) / (8 + 4 / math.log2(3))
    assert result.metrics["ndcg@10"] == pytest.approx(round(q1 / 2, 4))
    assert result.metrics["mrr@10"] == pytest.approx(round((1 / 2 + 0) / 2, 4))
    # relevant = grade >= 5: q1 {p0} found, q2 {p3} not found
    assert result.metrics["recall@100"] == pytest.approx(0.5)
    assert result.details["recall_queries"] == 2
    # uncondensed, p5 and p4 (unjudged) count as grade 0: q1 [p5, p1, p4, p0] -> gains 0, 4, 0, 8
    q1_raw = (4 / math.log2(3) + 8 / math.log2(5)) / (8 + 4 / math.log2(3))
    assert result.metrics["ndcg@10_unjudged_as_0"] == pytest.approx(round(q1_raw / 2, 4))
    assert result.metrics["judged@10"] == pytest.approx(round((2 / 4 + 0 / 3) / 2, 4))  # q2: p0-p2 are not judged for it
    payload = result.to_json()
    for key in ("dataset", "mode", "pipeline", "split", "queries", "skipped", "ndcg@10", "mrr@10",
                "recall@100", "recall@1000", "latency_ms"):
        assert key in payload
    assert set(payload["latency_ms"]) == {"p50", "p95"}  # type: ignore[arg-type]


def test_bad_grades_are_named(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "ds")
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p0,8\nq1,p1,-1\n")
    with pytest.raises(InvalidInput, match=r"judgments.csv row 2, column 'grade': '-1' is not a whole number from 0 "
                                           r"to 2147483647"):
        load_dataset(folder)
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p0,2.5\n")
    with pytest.raises(InvalidInput, match=r"'2.5' is not a whole number from 0"):
        load_dataset(folder)
    for huge in ("1e20", "9223372036854775808"):  # past 64 bits they had wrapped round to a negative grade
        (folder / "judgments.csv").write_text(f"query_id,product_id,grade\nq1,p0,8\nq1,p1,{huge}\n")
        with pytest.raises(InvalidInput, match=rf"row 2, column 'grade': '{huge}' is not a whole number from 0"):
            load_dataset(folder)
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p0,3\nq1,p1,1\nq1,p0,0\n")
    with pytest.raises(InvalidInput, match=r"judges query 'q1' and product 'p0' 2 times \(grades \[3, 0\]\)"):
        load_dataset(folder)


def test_ids_are_read_as_the_catalog_reads_them(tmp_path: Path) -> None:
    """The catalog reader strips spaces around a product id: a judgment of "p2 " judges p2, not an unknown
    product silently left out (which had raised NDCG); judgments that all name unknown ids are named so."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "products.csv").write_text("product_id,title\np1,cordless drill\np2,drill kit\np3,garden hose\n")
    (folder / "queries.csv").write_text("query_id,query\n q1 ,drill\n")
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p1,2\nq1 ,p2 ,2\nq1, p3,0\n")
    dataset = load_dataset(folder)
    assert dataset.qrels == {"q1": {"p1": 2, "p2": 2, "p3": 0}} and dataset.dropped_judgments == 0
    assert dataset.select(None) == [("q1", "drill")]
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p9,2\nq7,p1,1\nq1,p8,0\n")
    with pytest.raises(InvalidInput, match=r"judgments.csv: all 3 judgment\(s\) name an unknown query or product "
                                           r"\(query_id \['q7'\] not in queries.csv; product_id \['p9', 'p8'\] not in "
                                           r"products.csv\)"):
        load_dataset(folder)


def test_rows_longer_than_the_header_are_read_as_written_or_named(tmp_path: Path) -> None:
    """A trailing comma on every row had shifted the columns by one (pandas took the first as the index), and a
    row longer than the others was reported as a file that is not UTF-8."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "products.csv").write_text("product_id,title\np1,cordless drill\np2,hammer\np3,garden hose\n")
    (folder / "queries.csv").write_text("query_id,query\nq1,drill,\nq2,hose,\n")
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p1,2,\nq1,p2,0,\nq2,p3,1,\n")
    dataset = load_dataset(folder)
    assert dataset.select(None) == [("q1", "drill"), ("q2", "hose")]
    assert dataset.qrels == {"q1": {"p1": 2, "p2": 0}, "q2": {"p3": 1}}
    (folder / "queries.csv").write_text("query_id,query\nq1,drill\nq2,hose,\n")  # a later row's trailing comma
    assert load_dataset(folder).select(None) == [("q1", "drill"), ("q2", "hose")]  # as a catalog reads it
    (folder / "queries.csv").write_text("query_id,query\nq1,drill\nq2,hose, 1/2 in\n")
    with pytest.raises(InvalidInput, match=r"queries.csv row 2: 3 fields, the header names 2 \(extra: \[' 1/2 in'\]"):
        load_dataset(folder)
    (folder / "queries.csv").write_text("query_id,query\nq1,drill, 1/2 in\nq2,hose\n")  # pandas drops ' 1/2 in'
    with pytest.raises(InvalidInput, match=r"queries.csv row 1: 3 fields, the header names 2 \(extra: \[' 1/2 in'\]"):
        load_dataset(folder)
    (folder / "queries.csv").write_bytes(b"query_id,query\nq1,dr\xffill\n")
    with pytest.raises(InvalidInput, match="queries.csv is not a UTF-8 CSV file"):
        load_dataset(folder)


class Fixed:
    """A pipeline returning the same products for every query."""

    def __init__(self, index: FakeIndex, pids: list[str]) -> None:
        self.index, self.pids = index, pids

    def search(self, query: str, k: int) -> Candidates:
        hits = Hits.of([self.index.doc_of(p) for p in self.pids], [-i for i in range(len(self.pids))])
        return Candidates.from_hits(hits, "fixed", list(self.pids))


def test_typos_count_the_queries_left_out_among_those_the_limit_reaches(tmp_path: Path) -> None:
    """--limit 1 searches q2 (q1 has no word a slip can hit, so it is left out): q3 and q4, past the limit,
    were counted as left out too."""
    folder = write_dataset(tmp_path / "ds")
    pd.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "query": ["2x4", "cordless drill", "8 ft", "1/2 in"]}).to_csv(
        folder / "queries.csv", index=False)
    index = FakeIndex([f"p{i}" for i in range(6)])
    result = evaluate(load_dataset(folder), index, Fixed(index, ["p0", "p1"]), "fixed",  # type: ignore[arg-type]
                      "retrieval", limit=1, typos=True, progress=False)
    assert result.details["typos"] == {"slipped": 1, "left_out": 1}
    assert result.details["dropped_judgments"] == 1  # q4's judgment of p9
    unlimited = evaluate(load_dataset(folder), index, Fixed(index, ["p0", "p1"]), "fixed",  # type: ignore[arg-type]
                         "retrieval", typos=True, progress=False)
    assert unlimited.details["typos"] == {"slipped": 1, "left_out": 3}
