"""The bi-encoder's training examples: which pairs it learns from, and which in-batch negatives it skips."""

from __future__ import annotations

import pytest

from core.hardware import Cpu
from ranking.cascade import Cascade
from ranking.training.biencoder import (
    BiEncoderConfig,
    Triple,
    _batch_loss,
    denoised,
    false_negatives,
    margin_loss,
    triples,
)
from ranking.training.data import Group, as_served, resolve_precision
from retrieval.analyzer import Analyzer
from retrieval.vocabulary import Vocabulary

TEXTS = {p: f"title {p}" for p in ("a", "b", "c", "d", "e")}
GROUPS = [
    Group("q1", "drill", {"a": 8, "b": 6, "c": 1}, mined=["e"]),  # two relevant, one judged low
    Group("q2", "hose", {"d": 7}, mined=["e"]),  # one relevant, no judged low: mined negative
    Group("q3", "saw", {"e": 2}),  # nothing relevant: no example
]


def config(positives: str, hard_negatives: bool = True) -> BiEncoderConfig:
    return BiEncoderConfig(base_model="unused", positives=positives, hard_negatives=hard_negatives)


def test_one_positive_per_query_when_asked() -> None:
    examples = triples(GROUPS, TEXTS, config("one"), seed=1)
    assert [t.query for t in examples] == ["drill", "hose"]
    assert examples[0].positive in ("title a", "title b")
    assert examples[0].negative == "title c"  # the judged-low product before a mined one
    assert examples[1].negative == "title e"


def test_every_relevant_product_is_an_example_by_default() -> None:
    assert BiEncoderConfig(base_model="unused").positives == "all"
    examples = triples(GROUPS, TEXTS, config("all"), seed=1)
    assert sorted((t.query, t.positive) for t in examples) == [
        ("drill", "title a"), ("drill", "title b"), ("hose", "title d")]
    assert all(t.negative is not None for t in examples)
    assert all(t.negative is None for t in triples(GROUPS, TEXTS, config("all", hard_negatives=False), seed=1))


def test_a_querys_other_positives_and_repeated_products_are_not_negatives() -> None:
    batch = [Triple("drill", "title a", None), Triple("drill", "title b", None),
             Triple("hose", "title d", None), Triple("cordless drill", "title a", None)]
    mask = false_negatives(batch)
    assert mask.tolist() == [
        [False, True, False, True],   # same query (b), same product (a for another query)
        [True, False, False, True],   # same query (a), and a again: another positive of drill, as cordless drill's
        [False, False, False, False],  # nothing shared: every other product is a negative
        [True, False, False, False],
    ]


def test_another_querys_hard_negative_that_is_this_querys_product_is_not_a_negative() -> None:
    """Before: the "garden hose" drill's hard negative stood as a negative of the hose query it is relevant to."""
    import torch

    batch = [Triple("drill", "cordless drill", "garden hose", "q1"), Triple("hose", "garden hose", None, "q2")]
    # columns: cordless drill, garden hose (q2's positive), garden hose (q1's hard negative)
    assert false_negatives(batch).tolist() == [[False, False, False], [False, False, True]]

    def embed(texts: list[str]) -> torch.Tensor:  # a perfect encoder: each query is its products' vector
        slot = {"drill": 0, "cordless drill": 0, "hose": 1, "garden hose": 1}
        return torch.nn.functional.one_hot(torch.tensor([slot[t] for t in texts]), 2).float()

    assert _batch_loss(embed, batch, 20.0, "cpu").item() < 1e-6  # was log(2) / 2: q2 against its own product


def test_a_judged_relevant_product_is_not_a_negative_without_its_own_pair_in_the_batch() -> None:
    """Before: q1's relevant "title b" came as q2's hard negative and stood as q1's negative, since q1's
    own pair for it was in another batch."""
    drill = [t for t in triples(GROUPS, TEXTS, config("all"), seed=1) if t.positive == "title a"]
    assert drill[0].relevant == {"title a", "title b"}  # the judged list's relevant products, not the pair's
    batch = [drill[0], Triple("hose", "title d", "title b", "q2")]
    # columns: title a (q1's positive), title d (q2's), title c (q1's hard negative), title b (q2's)
    assert false_negatives(batch).tolist() == [[False, False, False, True], [False, False, False, False]]
    # triples without the judged list (made by hand): the batch's positives only, as before
    assert false_negatives([Triple("drill", "title a", None, "q1"), batch[1]]).tolist() == [
        [False, False, False], [False, False, False]]


def test_training_queries_are_analyzed_as_the_server_analyzes_them() -> None:
    assert BiEncoderConfig(base_model="unused").queries == "typed"
    analyzer = Analyzer(Vocabulary.build(["Charlotte Pipe 1/2 in. PVC Elbow", "Melnor Brass Garden Hose Nozzle"] * 2))
    groups = [Group("q1", '1/2" PVC elbw', {"a": 8}, mined=["b"]), Group("q2", "garden nozzel", {"b": 7}),
              Group("q3", "!!", {"a": 1})]
    served = as_served(groups, Cascade("hybrid", first=None, stages=(), analyzer=analyzer))  # type: ignore[arg-type]
    assert [g.query for g in served] == ["1/2 in pvc elbow", "garden nozzle", "!!"]  # no word left: as typed
    assert [(g.qid, g.judged, g.mined) for g in served] == [(g.qid, g.judged, g.mined) for g in groups]
    assert groups[0].query == '1/2" PVC elbw'  # the dataset's groups are left as they were
    # a pipeline served without spelling correction trains on normalized, uncorrected queries
    plain = as_served(groups, Cascade("hybrid", first=None, stages=(), analyzer=analyzer, spelling=False))  # type: ignore[arg-type]
    assert [g.query for g in plain] == ["1/2 in pvc elbw", "garden nozzel", "!!"]


def test_a_slipped_query_keeps_its_pairs_and_its_group() -> None:
    clean = triples(GROUPS, TEXTS, config("all"), seed=1)
    slipped = triples(GROUPS, TEXTS, BiEncoderConfig(base_model="unused", typos=1.0), seed=1)
    assert [(t.positive, t.negative, t.group) for t in slipped] == [(t.positive, t.negative, t.group) for t in clean]
    assert all(t.query != c.query for t, c in zip(slipped, clean))  # every query slipped once
    assert [t.group for t in clean] == ["q1", "q1", "q2"]
    # another positive of the same query stays out of the negatives, typed or slipped
    mask = false_negatives([Triple("drll", "title a", None, "q1"), Triple("drill", "title b", None, "q1"),
                            Triple("dril", "title c", None, "q9")])
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_the_teacher_drops_mined_negatives_it_scores_like_a_relevant_product_and_gives_margins() -> None:
    glue = Group("q4", "glue", {"a": 8, "b": 7}, mined=["c", "d", "e"])
    teacher = {"q4": {"a": 2.0, "b": 1.0, "c": 1.5, "d": -1.0, "e": 0.5}}
    assert denoised(glue.mined, ["a", "b"], teacher["q4"]) == ["d", "e"]  # c outscores b, a relevant product
    assert denoised(glue.mined, ["a", "b"], {}) == ["c", "d", "e"]  # no scores: as mined
    assert denoised(["c"], ["a", "b"], {"a": 2.0, "b": 1.0, "c": 1.5}) == ["c"]  # nothing lower: the lowest
    examples = [t for seed in range(20) for t in triples([glue], TEXTS, config("all"), seed, teacher)]
    assert {t.negative for t in examples} == {"title d", "title e"}
    scores = {f"title {p}": s for p, s in teacher["q4"].items()}
    assert all(t.margin == scores[t.positive] - scores[t.negative] for t in examples)
    # judged-low negatives come first, as without a teacher, and carry a margin where both are scored
    [drill] = [t for t in triples(GROUPS, TEXTS, config("one"), 1, {"q1": {"a": 3.0, "b": 2.0, "c": 0.0}})
               if t.group == "q1"]
    assert drill.negative == "title c" and drill.margin in (3.0, 2.0)
    assert all(t.margin is None for t in triples(GROUPS, TEXTS, config("all"), seed=1))


def test_the_margin_loss_asks_the_bi_encoders_margins_to_correlate_with_the_teachers() -> None:
    import torch

    from ranking.training.losses import margin_correlation

    teacher = torch.tensor([0.5, 2.0, -1.0, 1.0])
    assert torch.isclose(margin_correlation(3.0 * teacher + 7.0, teacher), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(margin_correlation(-teacher, teacher), torch.tensor(2.0))  # scale and shift blind
    batch = [Triple("q1", "p1", "n1", margin=2.0), Triple("q2", "p2", None), Triple("q3", "p3", "n3"),
             Triple("q4", "p4", "n4", margin=-1.0), Triple("q5", "p5", "n5", margin=0.5)]
    # columns: p1 p2 p3 p4 p5 n1 n3 n4 n5; the student's margins: 5 - 1, 1 - 2, 2 - 0
    logits = torch.tensor([[5.0, 0, 0, 0, 0, 1.0, 0, 0, 0], [0, 4.0, 0, 0, 0, 0, 0, 0, 0],
                           [0, 0, 3.0, 0, 0, 0, 9.0, 0, 0], [0, 0, 0, 1.0, 0, 0, 0, 2.0, 0],
                           [0, 0, 0, 0, 2.0, 0, 0, 0, 0.0]])
    expected = margin_correlation(torch.tensor([4.0, -1.0, 2.0]), torch.tensor([2.0, -1.0, 0.5]))
    assert torch.isclose(margin_loss(logits, batch), expected)
    assert margin_loss(logits, batch[:2]) is None  # one margin: nothing to correlate

    # in the training loss: the same batch with the teacher's weight 0 is the in-batch softmax alone
    vectors = {text: torch.nn.functional.normalize(torch.randn(8), dim=0) for t in batch
               for text in (t.query, t.positive, t.negative) if text}

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.stack([vectors[t] for t in texts])

    plain = _batch_loss(embed, [Triple(t.query, t.positive, t.negative) for t in batch], 20.0, "cpu")
    assert torch.isclose(_batch_loss(embed, batch, 20.0, "cpu", distill=0.0), plain)
    student = torch.stack([(vectors[t.query] * (vectors[t.positive] - vectors[t.negative])).sum() * 20.0
                           for t in batch if t.margin is not None])
    taught = _batch_loss(embed, batch, 20.0, "cpu", distill=0.5)
    assert torch.isclose(taught, plain + 0.5 * margin_correlation(student, torch.tensor([2.0, -1.0, 0.5])))


def test_no_slips_by_default() -> None:
    assert BiEncoderConfig(base_model="unused").typos == 0.0
    assert [t.query for t in triples(GROUPS, TEXTS, config("all"), seed=1)] == ["drill", "drill", "hose"]


def test_training_precision_auto_is_bf16_on_a_cpu_with_bf16_instructions_and_fp32_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import core.hardware

    monkeypatch.setattr(core.hardware, "cpu", lambda: Cpu("x", 2, "x86_64", ("avx2", "amx_int8", "amx_bf16")))
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"  # a GPU trains as it always did
    assert resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(core.hardware, "cpu", lambda: Cpu("x", 2, "x86_64", ("avx2", "avx512_vnni", "avx512_bf16")))
    assert resolve_precision("auto", "cpu") == "bf16"  # AVX-512 BF16 without the tiles (AMD Zen 4) pays too
    monkeypatch.setattr(core.hardware, "cpu", lambda: Cpu("x", 2, "x86_64", ("avx2", "avx512f", "avx512_vnni")))
    assert resolve_precision("auto", "cpu") == "fp32"  # no bf16 instructions: autocast would emulate them
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="'fp16' is not one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


class HashingModel:
    """What the dense check calls of a SentenceTransformer: ``encode`` (hashed bags of words)."""

    def encode(self, texts, convert_to_tensor: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        import torch

        from tests.fakes import HashingEncoder

        return torch.from_numpy(HashingEncoder().encode(texts))


def test_the_dense_check_without_a_dev_query_reports_none_and_does_not_fail() -> None:
    """Before: an export whose dev split had no judged query failed after the first epoch, the model lost."""
    from ranking.training.dense_check import DevSet, dense_dev_metrics

    assert dense_dev_metrics(HashingModel(), TEXTS, DevSet([], 1)) == {"recall@100": None, "ndcg@10": None,
                                                                      "queries": 0}
    unjudged = dense_dev_metrics(HashingModel(), TEXTS, DevSet([("q", "title a", {"a": 0})], 1))
    assert unjudged["recall@100"] is None and unjudged["queries"] == 1  # no relevant product: no recall (was NaN)
    found = dense_dev_metrics(HashingModel(), TEXTS, DevSet([("q", "title a", {"a": 1})], 1))
    assert found["recall@100"] == 1.0 and found["ndcg@10"] == 1.0
