from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np
import pytest

from retrieval.bm25 import BM25Index

TITLES = [
    "DeWalt 20-volt cordless drill kit",
    "Behr interior paint white satin",
    "Cordless impact driver with drill bits",
    "Garden hose 50 ft rubber",
    "Milwaukee cordless hammer drill",
    "White ceiling fan with light kit",
]


@pytest.fixture()
def bm25(tmp_path: Path) -> BM25Index:
    return BM25Index.build(tmp_path / "bm25", [(i, t, "") for i, t in enumerate(TITLES)])


def test_search_ranks_matching_titles(bm25: BM25Index) -> None:
    hits = bm25.search("cordless drills", 10)
    assert set(hits.docs.tolist()) == {0, 2, 4}
    assert (np.diff(hits.scores) <= 0).all()
    assert len(bm25.search("", 5)) == 0 and len(bm25.search("AND OR ( : ^", 5)) == 0
    assert len(bm25.search("zzzz", 5)) == 0


def test_scores_match_bm25s_lucene_formula(bm25: BM25Index) -> None:
    """Parity with bm25s (method='lucene', k1=1.2, b=0.75) on the same analysed tokens."""
    corpus = [bm25.terms(t) for t in TITLES]
    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    reference.index(corpus, show_progress=False)
    for query in ("cordless drill", "white paint", "hose", "drill kit light"):
        expected = reference.get_scores(bm25.terms(query))
        ours = np.array(bm25.score(query, list(range(len(TITLES)))))
        # tantivy keeps the classic (k1 + 1) numerator that Lucene 8 dropped, and weights
        # title matches by title_boost: both are constant factors, so rankings are identical
        np.testing.assert_allclose(ours / bm25.title_boost / 2.2, expected, rtol=1e-4, atol=1e-5)


def test_score_given_docs_only(bm25: BM25Index) -> None:
    scores = bm25.score("cordless drill", [3, 2, 4])  # 4 is the shorter title: higher BM25
    assert scores[0] == 0.0 and scores[1] > 0 and scores[2] > scores[1]
    assert bm25.score("zzzz", [1, 2]).tolist() == [0.0, 0.0]


def test_upsert_and_delete_in_place(bm25: BM25Index, tmp_path: Path) -> None:
    bm25.upsert([(6, "Makita cordless drill driver", "")], replace=[0])
    docs = set(bm25.search("cordless drill", 10).docs.tolist())
    assert 0 not in docs and 6 in docs
    bm25.delete([6, 2])
    assert bm25.search("cordless drill", 10).docs.tolist() == [4]
    assert bm25.num_docs == len(TITLES) - 2
    reopened = BM25Index(tmp_path / "bm25")
    assert reopened.search("cordless drill", 10).docs.tolist() == [4]


def test_description_matches_count_less_than_title(tmp_path: Path) -> None:
    index = BM25Index.build(tmp_path / "b", [(0, "Hammer", "with a drill holder"), (1, "Drill", "")])
    assert index.search("drill", 5).docs.tolist() == [1, 0]


def test_the_fusion_benchmarks_bm25_at_tantivys_k1_and_b_orders_as_the_index(tmp_path: Path) -> None:
    """``benchmarks/fusion_grid.py --bm25-params`` tells what other k1 and b would give only if, at
    tantivy's own values, it ranks as the served index does."""
    from types import SimpleNamespace

    import pandas as pd

    from benchmarks.fusion_grid import bm25_runs_at
    from retrieval.vocabulary import normalize

    index = BM25Index.build(tmp_path / "bm25", [(i, normalize(t), "") for i, t in enumerate(TITLES)])
    queries = ["cordless drill", "white paint", "hose", "drill kit light", "zzzz"]
    runs = bm25_runs_at(SimpleNamespace(bm25=index, products=pd.DataFrame({"title": TITLES})), queries, 10,
                        [(1.2, 0.75), (0.6, 0.25)])
    for query, run in zip(queries, runs[(1.2, 0.75)]):
        assert run.docs.tolist() == index.search(query, 10).docs.tolist()
    assert [len(run) for run in runs[(0.6, 0.25)]] == [3, 2, 1, 4, 0]


@pytest.mark.parametrize("term_set_max", [4096, 0])  # tantivy matches the allowed rows / a deep read, then kept
def test_a_filtered_search_keeps_the_unfiltered_scores_and_order(bm25: BM25Index, term_set_max: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval import bm25 as module

    monkeypatch.setattr(module, "TERM_SET_MAX", term_set_max)
    everything = bm25.search("cordless drill light", 10)
    allow = np.array([False, True, True, False, True, True, True])  # one row past the index: never a hit
    hits = bm25.search("cordless drill light", 10, allow)
    kept = [(d, s) for d, s in zip(everything.docs.tolist(), everything.scores.tolist()) if allow[d]]
    assert hits.docs.tolist() == [d for d, _ in kept] and len(kept) == 3
    np.testing.assert_allclose(hits.scores, [s for _, s in kept], rtol=1e-6)
    assert bm25.search("cordless drill light", 1, allow).docs.tolist() == [kept[0][0]]
    assert not len(bm25.search("cordless drill", 10, np.zeros(6, dtype=bool)))


@pytest.mark.parametrize("term_sets", [8, 1])  # tantivy matches the rows a set at a time / a read from the top
def test_a_filter_keeping_many_rows_that_match_low_still_returns_k_of_them(tmp_path: Path, term_sets: int,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past TERM_SET_MAX allowed rows tantivy matches them a set at a time, or (past TERM_SETS sets) the run is
    read from the top and the allowed rows kept, further while it found fewer than k: either way rows that all
    rank below the first window are found too."""
    from retrieval import bm25 as module

    monkeypatch.setattr(module, "TERM_SETS", term_sets)
    n = 12_000
    long = "drill bit set with case and extra long description words here"  # a long title: a lower score
    index = BM25Index.build(tmp_path / "bm25", [(i, "cordless drill" if i < n // 2 else long, "") for i in range(n)])
    allow = np.zeros(n, dtype=bool)
    allow[n // 2 :] = True  # 6,000 rows, every one below each row the filter leaves out
    hits = index.search("drill", 10, allow)
    assert len(hits) == 10 and (hits.docs >= n // 2).all()
    allow[n // 2 + 5 :] = False
    allow[:4100] = True  # 4,100 that match high, 5 that match low: all of them
    assert len(index.search("drill", 5000, allow)) == 4105


def test_a_read_from_the_top_stops_at_its_widest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the term sets a filtered run reads the ranking at most WIDEST_READ deep: a filter whose rows all
    match only below that gets what the read found (the dense run fills the fused list), in bounded time."""
    from retrieval import bm25 as module

    monkeypatch.setattr(module, "TERM_SETS", 1)
    n = 12_000
    index = BM25Index.build(tmp_path / "bm25", [(i, "cordless drill", "") for i in range(n)])
    allow = np.zeros(n, dtype=bool)
    allow[3_000:] = True  # 9,000 rows, each below the 3,000 the filter leaves out
    assert index.search("drill", 10, allow).docs.tolist() == list(range(3_000, 3_010))
    monkeypatch.setattr(module, "WIDEST_READ", 2_000)
    assert not len(index.search("drill", 10, allow))  # read 27, 54, ... 2,000 deep: no deeper


def test_an_index_whose_rows_were_all_deleted_finds_nothing(tmp_path: Path) -> None:
    """tantivy panics (an error no ``except Exception`` catches) on a limit of 0; a search never asks it for one."""
    index = BM25Index.build(tmp_path / "bm25", [(i, "cordless drill", "") for i in range(5000)])
    index.delete(list(range(5000)))
    assert not len(index.search("drill", 10, np.ones(5000, dtype=bool)))
    assert not len(index.search("drill", 10))


def test_a_long_run_of_chinese_or_thai_is_indexed_whole(tmp_path: Path) -> None:
    """These scripts write no space between words: a title's run is one token of 3 bytes a character."""
    titles = ["东芝电动工具无绳电钻套装十八伏", "สว่านไร้สายแบตเตอรี่ลิเธียม", "cordless drill"]
    bm25 = BM25Index.build(tmp_path / "bm25", [(i, t, "") for i, t in enumerate(titles)])
    assert bm25.search(titles[0], 5).docs.tolist() == [0]
    assert bm25.search(titles[1], 5).docs.tolist() == [1]
    longest = "电" * 85  # 255 bytes: the longest token indexed
    bm25 = BM25Index.build(tmp_path / "bm25-long", [(0, longest, ""), (1, longest + "钻", "")])
    assert bm25.search(longest, 5).docs.tolist() == [0]


def test_a_search_deeper_than_the_index_asks_tantivy_for_what_it_holds(bm25: BM25Index) -> None:
    """tantivy sets aside 16 bytes a result asked for before it searches: a limit of 10**12 aborted the process
    (``shoprank evaluate --pipeline bm25 --depth 10000000000``), which no ``except`` catches."""
    searcher, asked = bm25._searcher, []

    class Recording:  # refuses what tantivy would abort on, so the test fails without killing the process
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(searcher, name)

        def search(self, query, limit: int, count: bool):  # type: ignore[no-untyped-def]
            asked.append(limit)
            if limit > len(TITLES):
                raise ValueError(f"asked tantivy for {limit} results of {len(TITLES)}")
            return searcher.search(query, limit, count=count)

    expected = bm25.search("cordless drills", 10).docs.tolist()
    bm25._searcher = Recording()  # type: ignore[assignment]
    assert bm25.search("cordless drills", 10**12).docs.tolist() == expected
    assert bm25.score("cordless drills", [0, 5]).tolist()[1] == 0.0
    assert asked and max(asked) <= len(TITLES)
