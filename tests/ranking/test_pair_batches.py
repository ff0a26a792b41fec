"""How a cross-encoder's pairs become ONNX inputs: batches of similar length, each padded to its
own longest pair, rounded up to a width step on the bf16 path (a bounded set of input shapes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ranking.cross_encoder import _batches


@dataclass
class Encoding:  # the fields of a tokenizers.Encoding that _batches reads
    ids: list[int]
    type_ids: list[int]


def encodings(lengths: list[int]) -> list[Encoding]:
    return [Encoding(ids=list(range(100, 100 + n)), type_ids=[0] * (n // 2) + [1] * (n - n // 2)) for n in lengths]


def test_batches_sort_by_length_and_pad_to_their_longest() -> None:
    pairs = encodings([9, 3, 17, 5])
    batches = _batches(pairs, batch_size=2)
    assert [rows.tolist() for rows, _ in batches] == [[1, 3], [0, 2]]
    assert [feeds["input_ids"].shape for _, feeds in batches] == [(2, 5), (2, 17)]
    rows, feeds = batches[1]
    for r, i in enumerate(rows):  # each pair's tokens, then padding that the mask leaves out
        n = len(pairs[i].ids)
        assert feeds["input_ids"][r, :n].tolist() == pairs[i].ids
        assert feeds["token_type_ids"][r, :n].tolist() == pairs[i].type_ids
        assert feeds["attention_mask"][r].tolist() == [1] * n + [0] * (17 - n)
        assert not feeds["input_ids"][r, n:].any()


def test_width_step_rounds_each_batch_up_and_keeps_the_tokens() -> None:
    pairs = encodings([9, 3, 17, 5, 16])
    plain = _batches(pairs, batch_size=32)
    stepped = _batches(pairs, batch_size=32, width_step=8)
    assert plain[0][1]["input_ids"].shape == (5, 17)
    assert stepped[0][1]["input_ids"].shape == (5, 24)
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert np.array_equal(stepped[0][1][name][:, :17], plain[0][1][name])
        assert not stepped[0][1][name][:, 17:].any()
    assert _batches(encodings([16]), batch_size=4, width_step=8)[0][1]["input_ids"].shape == (1, 16)  # a multiple already
    widths = {feeds["input_ids"].shape[1] for n in range(1, 41) for _, feeds in _batches(encodings([n]), 1, 8)}
    assert widths == {8, 16, 24, 32, 40}
