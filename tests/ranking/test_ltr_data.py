"""LambdaMART training lists: judged products plus mined unjudged negatives with grade 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.query import Query
from core.settings import Settings
from ranking.features import RANK_FEATURES, feature_names
from ranking.relevance import RELEVANCE_FEATURES
from ranking.training.data import Group, mine_negatives
from ranking.training.ltr_data import entity_rows, judged_lists, ranking_data, served_lists
from retrieval.encoder import Encoder
from retrieval.index import ProductIndex
from retrieval.types import Candidates
from serving.engine import assemble


def test_judged_lists_hold_judged_products_and_mined_negatives(settings: Settings, real_index, real_encoder) -> None:  # type: ignore[no-untyped-def]
    engine = assemble(real_index, real_encoder, settings)
    first = engine.pipeline("hybrid")
    hits = first.search("cordless drill", 10).product_ids
    judged = {hits[0]: 3, hits[1]: 1}
    group = Group("q1", "cordless drill", judged, mined=[hits[5], "not-in-the-catalog"])
    lists = judged_lists([group], first, real_index)
    assert sorted(lists[0].candidates.product_ids) == sorted([hits[0], hits[1], hits[5]])
    data = ranking_data(lists, engine.featurizer(feature_names(["base"])), None, {}, progress=False)
    assert data.groups == [3] and data.features.shape == (3, 4)
    assert sorted(data.labels.tolist()) == [0, 1, 3]
    # the Feast entity rows follow the same lists, so the point-in-time join lines up row for row
    rows = entity_rows(lists, {"q1": "u1"}, pd.Timestamp("2026-11-01", tz="UTC"))
    assert rows["product_id"].tolist() == lists[0].candidates.product_ids
    # the rank features are the served list's ranks, as in serving, not places among the three
    ranks = ranking_data(lists, engine.featurizer(["rank_rrf"]), None, {}, progress=False).features[:, 0]
    assert lists[0].candidates.product_ids == [hits[0], hits[1], hits[5]] and ranks.tolist() == [1, 2, 6]


def test_negatives_are_mined_from_an_index_with_updated_products(real_index: ProductIndex) -> None:
    """An updated product keeps its old row, no longer live, beside its new one: its title is the new one."""
    products = real_index.products.copy()
    first = products["product_id"].iat[0]
    products = pd.concat([products, products.iloc[[0]].assign(title="the new title")], ignore_index=True)
    products.loc[0, "live"] = False
    index = type("Updated", (), {"products": products,
                                 "live_products": lambda self: products[products["live"]].drop(columns="live")})()
    retriever = type("Fixed", (), {"search": lambda self, query, depth: Candidates(
        np.arange(3), [first, *products["product_id"].iloc[1:3]], "hybrid", {}, {})})()
    group = Group("q1", "query", {str(products["product_id"].iat[1]): 3})
    mine_negatives([group], retriever, index, negatives=5, progress=False)  # type: ignore[arg-type]
    assert sorted(group.mined) == sorted([first, products["product_id"].iat[2]])


def test_a_row_the_fused_list_lacks_ranks_below_all_of_it() -> None:
    """LightGBM reads NaN as 0 where training had no missing value: a fused rank is never missing
    in a served list, so a given product the fused list lacks is ranked at infinity, not above the top."""
    from ranking.features import LtrFeaturizer

    def candidates(ranks: dict[str, list[int]]) -> Candidates:
        scores = {name: np.zeros(2, np.float32) for name in ranks}
        return Candidates(np.array([4, 7]), ["a", "b"], "rrf", scores,
                          {name: np.array(r, np.int32) for name, r in ranks.items()})

    got = LtrFeaturizer._ranks(candidates({"bm25": [1, 0], "dense": [3, 0], "rrf": [2, 0]}))
    assert got["rank_rrf"].tolist() == [2, np.inf]
    assert got["rank_bm25"][0] == 1 and np.isnan(got["rank_bm25"][1]) and np.isnan(got["rank_dense"][1])
    assert np.isnan(LtrFeaturizer._ranks(candidates({"bm25": [1, 2]}))["rank_rrf"]).all()  # no fused run at all


def test_served_lists_are_the_first_stage_top_with_served_ranks(settings: Settings, real_index, real_encoder) -> None:  # type: ignore[no-untyped-def]
    engine = assemble(real_index, real_encoder, settings)
    first = engine.pipeline("hybrid")
    served = first.search("cordles drill", 50)  # misspelled: the list is of the analyzed query
    judged = {served.product_ids[2]: 3, served.product_ids[30]: 2, "not-retrieved": 1}
    group = Group("q1", "cordles drill", judged)
    top = served_lists([group], first, real_index, depth=10, negatives=None, progress=False)[0]
    assert top.query.text == "cordless drill" and top.query.analysis.rewrites
    assert top.candidates.product_ids == served.product_ids[:10] and top.labels.sum() == 3  # the top 10 as served
    every = served_lists([group], first, real_index, depth=10, negatives=None, progress=False, below=True)[0]
    assert every.candidates.product_ids[:10] == served.product_ids[:10]  # the top 10 as served ...
    assert every.candidates.product_ids[10:] == [served.product_ids[30]]  # ... then judged ones below it
    assert every.labels.tolist()[2] == 3 and every.labels.tolist()[10] == 2 and every.labels.sum() == 5
    some = served_lists([group], first, real_index, depth=10, negatives=3, progress=False, below=True)[0]
    assert len(some.candidates) == 5 and sorted(some.labels.tolist()) == [0, 0, 0, 2, 3]
    names = feature_names(["base", "ranks", "relevance"])
    data = ranking_data([every], engine.featurizer(names), None, {}, progress=False)
    assert data.names == names and data.features.shape == (11, len(names))
    ranks = data.features[:, names.index("rank_rrf")]
    assert ranks[:10].tolist() == list(range(1, 11)) and ranks[10] == 31  # served fused ranks
    assert len(RANK_FEATURES) == 3 and set(RELEVANCE_FEATURES) <= set(names)


def test_monotone_features_only_raise_the_score() -> None:
    import numpy as np
    import pytest

    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    rng = np.random.default_rng(0)

    def lists(n: int) -> RankingData:
        x = rng.normal(size=(n * 10, 2)).astype(np.float32)
        # a label that falls with "bm25" at its top end: unconstrained trees learn the dip
        labels = np.clip(np.round(2 + x[:, 0] - 2.5 * (x[:, 0] > 1.0) + 0.3 * x[:, 1]), 0, 4).astype(np.int32)
        return RankingData(x, labels, [10] * n, ["bm25", "price"])

    train, dev = lists(300), lists(60)
    grid = np.column_stack([np.linspace(-3, 3, 61), np.zeros(61)]).astype(np.float32)
    free = LambdaMART.fit(train, dev, LambdaMARTConfig(max_grade=4, min_data_in_leaf=5))
    assert np.any(np.diff(free.predict(grid)) < -1e-9)  # the dip is learnt without the constraint
    bound = LambdaMART.fit(train, dev, LambdaMARTConfig(max_grade=4, min_data_in_leaf=5, monotone=("bm25",)))
    assert np.all(np.diff(bound.predict(grid)) >= -1e-9)
    with pytest.raises(ValueError, match="teacher"):
        LambdaMART.fit(train, dev, LambdaMARTConfig(max_grade=4, monotone=("teacher",)))


def test_bm25_feature_is_the_exact_score_whether_reused_or_computed(settings: Settings, real_index, real_encoder) -> None:  # type: ignore[no-untyped-def]
    engine = assemble(real_index, real_encoder, settings)
    served = engine.pipeline("hybrid").search("cordless drill bit set", 300)
    known = served.scores["bm25"]
    assert np.isnan(known).any() and (~np.isnan(known)).any()  # rows from both runs and the dense run only
    featurizer = engine.featurizer(["bm25"])
    reused = featurizer(Query("cordless drill bit set"), served)[:, 0]
    exact = real_index.bm25.score("cordless drill bit set", served.docs)
    np.testing.assert_allclose(reused, exact, rtol=1e-6)
    assert (reused[np.isnan(known)] == 0).any()  # rows BM25 did not retrieve: no query word


def test_exponential_gains_weigh_the_top_grades_and_are_kept_with_the_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import pytest

    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData, label_gain

    assert label_gain(LambdaMARTConfig(max_grade=3)) == [0.0, 1.0, 2.0, 3.0]
    assert label_gain(LambdaMARTConfig(max_grade=3, gains="exponential")) == [0.0, 1.0, 3.0, 7.0]
    with pytest.raises(ValueError, match="cubic"):
        label_gain(LambdaMARTConfig(gains="cubic"))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 2)).astype(np.float32)
    labels = np.clip(np.round(1.5 + x[:, 0]), 0, 3).astype(np.int32)
    data = RankingData(x, labels, [10] * 60, ["bm25", "dense"])
    model = LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=3, min_data_in_leaf=5, max_rounds=20,
                                                        gains="exponential"))
    model.save(tmp_path / "m")
    assert LambdaMART.load(tmp_path / "m").config.gains == "exponential"


def test_the_xendcg_objective_trains_and_is_kept_with_the_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import pytest

    from ranking.dask_lambdamart import ndcg
    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData, _params

    with pytest.raises(ValueError, match="'listnet' is not one of lambdarank, rank_xendcg"):
        _params(LambdaMARTConfig(objective="listnet"), ["bm25"])
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 2)).astype(np.float32)
    labels = np.clip(np.round(1.5 + x[:, 0]), 0, 3).astype(np.int32)
    data = RankingData(x, labels, [10] * 60, ["bm25", "dense"])
    config = LambdaMARTConfig(max_grade=3, min_data_in_leaf=5, max_rounds=30, objective="rank_xendcg")
    assert _params(config, data.names)["objective"] == "rank_xendcg"
    model = LambdaMART.fit(data, data, config)
    assert ndcg(data.groups, labels, model.predict(x)) > ndcg(data.groups, labels, x[:, 1]) + 0.05  # it learned
    model.save(tmp_path / "m")
    assert LambdaMART.load(tmp_path / "m").config.objective == "rank_xendcg"


def test_a_feature_missing_in_training_is_not_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    x[:, 2] = np.nan  # no teacher when the model was trained
    labels = np.clip(np.round(1.5 + x[:, 0]), 0, 3).astype(np.int32)
    data = RankingData(x, labels, [10] * 60, ["bm25", "dense", "teacher"])
    model = LambdaMART.fit(data, data, LambdaMARTConfig(max_grade=3, min_data_in_leaf=5, max_rounds=20))
    model.save(tmp_path / "m")
    loaded = LambdaMART.load(tmp_path / "m")
    assert loaded.reads("bm25") and not loaded.reads("teacher") and not loaded.reads("student")


def test_saved_rows_load_back_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ranking.lambdamart import RankingData
    from ranking.training.ltr_data import load_ranking_data, save_ranking_data

    data = RankingData(np.arange(12, dtype=np.float32).reshape(4, 3), np.array([2, 0, 1, 0], np.int32), [3, 1],
                       ["bm25", "dense", "rank_rrf"], ["q1", "q2"], ["p1", "p2", "p3", "p9"])
    save_ranking_data(tmp_path / "rows" / "train.npz", data)
    back = load_ranking_data(tmp_path / "rows" / "train.npz")
    assert np.array_equal(back.features, data.features) and back.features.dtype == np.float32
    assert back.labels.tolist() == [2, 0, 1, 0] and back.groups == [3, 1] and back.names == data.names
    assert back.query_ids == ["q1", "q2"] and back.product_ids == ["p1", "p2", "p3", "p9"]
    assert [(qid, back.product_ids[part]) for qid, part in back.lists()] == [("q1", ["p1", "p2", "p3"]),
                                                                             ("q2", ["p9"])]


def test_lambdamart_settings_by_name() -> None:
    import pytest

    from ranking.lambdamart import LambdaMARTConfig, parse_tunable

    assert parse_tunable("num_leaves=63") == ("num_leaves", 63)
    assert parse_tunable(" learning_rate = 0.1") == ("learning_rate", 0.1)
    assert LambdaMARTConfig(**dict([parse_tunable("lambda_l2=0")])).lambda_l2 == 0
    for bad, says in [("leaves=3", "one of learning_rate"), ("num_leaves=big", "takes a int, not 'big'"),
                      ("num_leaves", "NAME=VALUE"), ("min_data_in_leaf=0", "must be a finite number > 0"),
                      ("lambda_l2=-1", "must be a finite number >= 0"), ("learning_rate=inf", r"in \(0.0, 10.0\]"),
                      ("feature_fraction=1.5", r"in \(0.0, 1.0\]"), ("num_leaves=1", "whole number from 2 to 131072"), ("num_leaves=200000", "to 131072"),
                      ("learning_rate=nan", "learning_rate must be")]:
        with pytest.raises(ValueError, match=says):
            parse_tunable(bad)


def test_an_explanation_adds_up_to_the_served_score_of_a_corrected_query(settings: Settings, real_index: ProductIndex,
                                                                        real_encoder: Encoder) -> None:
    """The contributions are those of the query the list was ranked for (spelling fixed), so with the bias
    they sum to each row's LambdaMART score; computed for the text as typed, they explained another ranking."""
    from core.registry import ServedModel
    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData
    from serving.pipelines import Models

    names = feature_names(["base", "ranks", "relevance"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, len(names))).astype(np.float32)
    labels = np.clip((x[:, names.index("dense")] * 2 + x[:, names.index("bm25")] + 2).round(), 0, 4).astype(int)
    data = RankingData(x, labels, [20] * 40, names)
    model = LambdaMART.fit(data, data, LambdaMARTConfig(max_rounds=30, early_stopping=10, min_data_in_leaf=5,
                                                        max_grade=4))
    engine = assemble(real_index, real_encoder, settings, Models(ltr=ServedModel("ltr", "v1", model)))
    try:
        result = engine.search(Query("Cordles DRILL"), 5)
        assert result.analysis is not None and result.analysis.text == "cordless drill"
        explained = engine.explain(Query("Cordles DRILL"), result.candidates, analysis=result.analysis)
        served = result.candidates.scores["ltr"]
        assert np.allclose([sum(row.values()) for row in explained], served, atol=1e-3)
    finally:
        engine.close()


def test_a_cross_encoder_score_in_training_follows_the_served_rank_not_the_place_in_the_list(
        settings: Settings, real_index: ProductIndex, real_encoder: Encoder) -> None:
    """Serving scores the first stage's top ``student_depth`` with the student and leaves the rest NaN. A
    training list of sampled rows puts a row served at rank 40 third: it must stay NaN there too, or the
    model learns a pattern of missing scores that serving never shows it."""
    from ranking.features import LtrFeaturizer

    engine = assemble(real_index, real_encoder, settings)
    try:
        first = engine.pipeline("hybrid")
        top = first.search("cordless drill", 50)
        judged = {top.product_ids[0]: 3, top.product_ids[25]: 2, top.product_ids[40]: 1}
        lists = served_lists([Group("q1", "cordless drill", judged)], first, real_index, depth=50, negatives=3,
                             seed=1, progress=False)

        class Ones:
            def score(self, query: str, titles: list[str]) -> np.ndarray:
                return np.ones(len(titles), np.float32)

        featurizer = LtrFeaturizer(real_index, lambda text: engine.dense.embed([text])[0], None,
                                   ["student", "rank_rrf"], student=Ones(), student_depth=10)
        rows = ranking_data(lists, featurizer, None, {}, progress=False).features
        served_top = (rows[:, 1] > 0) & (rows[:, 1] <= 10)
        assert served_top.any() and (~served_top).sum() >= 3
        assert (rows[served_top, 0] == 1.0).all() and np.isnan(rows[~served_top, 0]).all()
    finally:
        engine.close()


def test_a_row_below_the_fused_list_gets_the_features_rank_gives_it(fake_index: ProductIndex) -> None:
    """A row the first stage lists below its fused list (only a deeper read found it) has no fused rank:
    LambdaMART's ``rank_rrf`` puts it below every fused row, in a served list as for the same product given
    to ``rank`` (a training list's rows); a cross-encoder score is filled in for it where the served stage
    scores it, within its depth of the served list's positions (before, never: served, it was scored)."""
    from ranking.cascade import Cascade, ScoreStage
    from ranking.features import LtrFeaturizer
    from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever
    from tests.fakes import HashingEncoder

    class Ones:
        def score(self, query: str, titles: list[str]) -> np.ndarray:
            return np.ones(len(titles), np.float32)

    encoder = HashingEncoder()
    hybrid = HybridRetriever(BM25Retriever(fake_index), DenseRetriever(fake_index, encoder), depth=20)
    listed = hybrid.search("cordless drill", 120)
    ranked = hybrid.rank("cordless drill", listed.docs)
    place = {doc: i for i, doc in enumerate(ranked.docs.tolist())}
    given = ranked.take(np.array([place[doc] for doc in listed.docs.tolist()]))  # the same rows, from rank()
    featurizer = LtrFeaturizer(fake_index, lambda text: encoder.encode([text])[0], None, ["student", "rank_rrf"],
                               student=Ones(), student_depth=100)
    served, trained = featurizer(Query("cordless drill"), listed), featurizer(Query("cordless drill"), given)
    np.testing.assert_array_equal(served, trained)
    below = listed.scores["rrf"] == 0
    assert below[:100].any() and not below[:20].any()  # rows past the fused list within the student's depth
    assert np.isinf(served[below, 1]).all() and (served[~below, 1] > 0).all()
    # the student's top 100 of the served list, rows below the fused list among them, as the served stage scores
    cascade = Cascade("cascade", hybrid, [ScoreStage("student", lambda text, docs, deadline: np.ones(len(docs)), 100)],
                      first_stage_depth=120).search("cordless drill", 120)
    assert cascade.docs[np.isfinite(cascade.scores["student"])].tolist() == listed.docs[:100].tolist()
    assert (served[:100, 0] == 1.0).all() and np.isnan(served[100:, 0]).all()


class _Ones:
    """A teacher that scores every title 1."""

    def score(self, query: str, titles: list[str]) -> np.ndarray:
        return np.ones(len(titles), np.float32)


class _DeepFirst:
    """A student that likes the rows the first stage serves deepest (its score: the served position)."""

    def __init__(self, index: ProductIndex, positions: dict[str, float]) -> None:
        self.index = index
        self.positions = positions

    def score(self, query: str, titles: list[str]) -> np.ndarray:
        return np.array([self.positions[t] for t in titles], np.float32)

    def stage(self, depth: int):  # type: ignore[no-untyped-def]
        from ranking.cascade import ScoreStage

        return ScoreStage("student", lambda text, docs, deadline: self.score(
            text, [self.index.title(int(d)) for d in docs]), depth)


def _teacher_stage(depth: int):  # type: ignore[no-untyped-def]
    from ranking.cascade import ScoreStage

    return ScoreStage("teacher", lambda text, docs, deadline: np.ones(len(docs), np.float32), depth)


def _deep_first_student(index: ProductIndex):  # type: ignore[no-untyped-def]
    """The hashing encoder, a hybrid first stage 60 deep over ``index``, its list for "cordless drill" and a
    student that orders that list deepest first."""
    from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever
    from tests.fakes import HashingEncoder

    encoder = HashingEncoder()
    hybrid = HybridRetriever(BM25Retriever(index), DenseRetriever(index, encoder), depth=60)
    listed = hybrid.search("cordless drill", 60)
    return encoder, hybrid, listed, _DeepFirst(index, {index.title(int(d)): float(i)
                                                       for i, d in enumerate(listed.docs)})


def test_the_teacher_scores_in_training_the_rows_it_scores_behind_a_deeper_student(fake_index: ProductIndex) -> None:
    """Served behind a student that scores deeper than it, the teacher scores the top ``teacher_depth`` of the
    student's order, not of the first stage's: a training list (its rows in another order) gets teacher scores
    for the same rows, or LambdaMART learns from teacher scores of rows serving never gives it."""
    from ranking.cascade import Cascade
    from ranking.features import LtrFeaturizer

    encoder, hybrid, listed, student = _deep_first_student(fake_index)
    served = Cascade("cascade", hybrid, [student.stage(30), _teacher_stage(10)], first_stage_depth=60).search(
        "cordless drill", 60)
    served_teacher = set(served.docs[~np.isnan(served.scores["teacher"])].tolist())

    shuffled = listed.take(np.random.default_rng(0).permutation(len(listed)))  # a training list's own order
    featurizer = LtrFeaturizer(fake_index, lambda text: encoder.encode([text])[0], None, ["teacher"],
                               student=student, teacher=_Ones(), student_depth=30, teacher_depth=10)
    trained = featurizer(Query("cordless drill"), shuffled)[:, 0]
    assert served_teacher != set(listed.docs[:10].tolist())  # not the first stage's top 10
    assert set(shuffled.docs[~np.isnan(trained)].tolist()) == served_teacher


def test_the_teacher_scores_in_training_a_list_with_gaps_by_served_rank(fake_index: ProductIndex) -> None:
    """A training list holds only some served rows (sampled negatives, judged products retrieved deep), each with
    its served rank: the teacher is filled in for the rows within its depth by served rank, the student's order
    placing the rows within the student's depth among the ranks they hold, and never for a row served below both
    depths, which serving never scores."""
    from ranking.cascade import Cascade, ScoreStage
    from ranking.features import LtrFeaturizer, first_stage_rank
    from retrieval.types import Candidates

    encoder, hybrid, listed, deep_student = _deep_first_student(fake_index)

    def teacher_ranks(rows: Candidates, student_depth: int, teacher_depth: int) -> list[int]:
        featurizer = LtrFeaturizer(fake_index, lambda text: encoder.encode([text])[0], None, ["teacher"],
                                   student=deep_student if student_depth else None, teacher=_Ones(),
                                   student_depth=student_depth, teacher_depth=teacher_depth)
        scored = ~np.isnan(featurizer(Query("cordless drill"), rows)[:, 0])
        return sorted(first_stage_rank(rows)[scored].tolist())

    def served_ranks(rows: Candidates, stages: list[ScoreStage]) -> list[int]:
        """The served ranks of ``rows`` that the served cascade's teacher scores."""
        served = Cascade("cascade", hybrid, stages, first_stage_depth=60).search("cordless drill", 60)
        scored = np.isin(rows.docs, served.docs[~np.isnan(served.scores["teacher"])])
        return sorted(first_stage_rank(rows)[scored].tolist())

    student = deep_student.stage(30)
    teacher = _teacher_stage

    # served ranks 50, 1, 30, 5, sampled from the served list in another order
    sampled = listed.take(np.array([49, 0, 29, 4]))
    assert first_stage_rank(sampled).tolist() == [50, 1, 30, 5]
    assert teacher_ranks(sampled, 0, 20) == served_ranks(sampled, [teacher(20)]) == [1, 5]
    # judged products ranked with the served ranks they hold
    judged = hybrid.rank("cordless drill", listed.docs[[1, 7, 24, 39, 44, 55]])
    assert sorted(first_stage_rank(judged).tolist()) == [2, 8, 25, 40, 45, 56]
    assert teacher_ranks(judged, 0, 20) == served_ranks(judged, [teacher(20)]) == [2, 8]
    # behind a student deeper than the teacher: its order puts the rows served at 30 and 25 in the ranks 1 and 5
    # the list's head holds, within the teacher's 10; the rows served at 36 and 51 are below both depths
    gapped = listed.take(np.array([50, 4, 29, 35, 0, 24]))
    assert sorted(first_stage_rank(gapped).tolist()) == [1, 5, 25, 30, 36, 51]
    assert teacher_ranks(gapped, 30, 10) == served_ranks(gapped, [student, teacher(10)]) == [25, 30]


class _Hashed:
    """A cross-encoder stand-in: a score per (query, title) from a hash, the same at every call."""

    precision = "fp32"

    def score(self, query: str, titles: list[str], deadline: float | None = None) -> np.ndarray:
        import hashlib

        return np.array([int.from_bytes(hashlib.md5(f"{query}|{t}".encode()).digest()[:4], "little") / 2**32
                         for t in titles], np.float32)

    def score_pairs(self, queries: list[str], titles: list[str], deadline: float | None = None) -> np.ndarray:
        return np.concatenate([self.score(q, [t]) for q, t in zip(queries, titles)]).astype(np.float32)


@pytest.mark.parametrize("retrieval, ranking, depths", [
    ({}, {}, {5, 20}),  # the defaults: the teacher's query-adaptive depth, 5 where BM25 and dense agree
    ({}, {"student_depth": 30}, {5, 20}),  # behind an adaptive student, deciding on the fused top 10 too
    ({"depth": 5}, {"teacher_depth_confident": 0}, {20}),  # a 5-deep fusion: rows below it within the depth
])
def test_the_cross_encoder_scores_of_a_training_list_are_those_of_the_rows_the_served_cascade_scores(
        fake_index: ProductIndex, settings: Settings, retrieval: dict, ranking: dict, depths: set[int]) -> None:
    """``shoprank train ltr``'s featurizer fills in a cross-encoder's score for the rows the served stage scores:
    its query-adaptive depth (on by default) decided on the first stage's fused top 10 as the served cascade
    decides it, and the served list's top positions, rows below the fused list among them. Before, it filled
    the full depths (rows a confident search serves with no score: NaN, which LambdaMART only learnt for rows
    below the depth) and only rows with a fused rank."""
    from core.registry import ServedModel
    from serving.pipelines import Models
    from tests.fakes import HashingEncoder

    home = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update=retrieval),
                                       "ranking": settings.ranking.model_copy(update=ranking)})
    engine = assemble(fake_index, HashingEncoder(), home, Models(teacher=ServedModel("reranker", "v1", _Hashed()),
                                                                 student=ServedModel("student", "v1", _Hashed())))
    try:
        first, served_depths, below = engine.pipeline("hybrid"), set(), 0
        for text in ("cordless drill", "garden hose", "ceiling fan", "toilet seat", "led light bulb", "paint"):
            top = first.search(text, 1).product_ids[0]
            (training,) = served_lists([Group("q", text, {top: 1})], first, fake_index, depth=60, negatives=None,
                                       progress=False)
            served = engine.pipeline("cascade").run(Query(text), 60).candidates
            for stage in ("student", "teacher") if home.ranking.student_depth else ("teacher",):
                trained = ranking_data([training], engine.featurizer([stage]), None, {}, progress=False).features[:, 0]
                expected = {p for p, s in zip(served.product_ids, served.scores[stage]) if np.isfinite(s)}
                got = {p for p, s in zip(training.candidates.product_ids, trained) if np.isfinite(s)}
                assert got == expected, (text, stage)
            teacher = np.isfinite(served.scores["teacher"])
            served_depths.add(int(teacher.sum()))
            below += int((served.ranks["rrf"][teacher] == 0).sum())
        assert served_depths == depths and (below > 0) == (home.retrieval.depth == 5)
    finally:
        engine.close()


def test_rows_the_feature_store_has_nothing_for_are_warned_of_when_most_are(
        caplog: pytest.LogCaptureFixture) -> None:
    """Feature tables stamped after the time training rows are joined at (a catalog-built store beside an older
    simulated world) give every row no store feature: before, one INFO line said so, and LambdaMART learnt the
    store features as always missing."""
    import logging
    from types import SimpleNamespace

    from ranking.training.ltr_data import ROW, historical_features

    def store(found: int):  # type: ignore[no-untyped-def]
        def joined(entity_df: pd.DataFrame, features: object) -> SimpleNamespace:
            out = entity_df.copy()
            out["price"] = [1.0 if i < found else np.nan for i in range(len(out))]
            return SimpleNamespace(to_df=lambda: out[[ROW, "price"]])

        return SimpleNamespace(get_historical_features=joined, get_feature_service=lambda name: name)

    rows = pd.DataFrame({"product_id": ["a", "b", "c"], "user_id": ["u"] * 3,
                         "event_timestamp": pd.Timestamp("2026-11-01", tz="UTC")})
    with caplog.at_level(logging.INFO, logger="ranking.training.ltr_data"):
        assert historical_features(store(0), "ranker", rows)["price"].isna().all()
        historical_features(store(2), "ranker", rows)
    levels = [(r.levelname, r.getMessage()[:44]) for r in caplog.records]
    assert levels == [("WARNING", "Feast returned no features for 3 of 3 rows ("),
                      ("INFO", "Feast returned no features for 1 of 3 rows (")]
    assert "--no-store-features" in caplog.records[0].getMessage()
