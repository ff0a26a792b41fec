"""Ragged arrays: one variable-length row of integers per product, kept flat (CSR), and the
character 3-gram codes of normalized texts in that layout, so that the relevance features
of any number of candidates are a fixed number of numpy operations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789./ "
_OTHER = len(_ALPHABET)  # one code for any other ASCII character
_CODE = np.full(128, _OTHER, dtype=np.int64)
_CODE[[ord(c) for c in _ALPHABET]] = np.arange(len(_ALPHABET))
_CODE[0] = -1  # separates texts
# a character outside ASCII (Cyrillic, CJK, accented Latin the analyzer kept) gets one of _BUCKETS codes of its
# own by a hash of its code point: folded into the one "other" code, any two Cyrillic words of a length would
# share every 3-gram. ASCII texts keep the codes they always had.
_BUCKETS = 1021
_BASE = _OTHER + 1 + _BUCKETS  # _BASE**3 codes fit uint32


def _codes(text: str) -> np.ndarray:
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ascii_ = points < 128
    return np.where(ascii_, _CODE[np.where(ascii_, points, 0)], _OTHER + 1 + (points * 2654435761) % _BUCKETS)


@dataclass(frozen=True)
class Ragged:
    """One variable-length row of values per product (CSR layout: ``values[ptr[i]:ptr[i + 1]]``)."""

    ptr: np.ndarray
    values: np.ndarray

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], dtype: type = np.int32) -> Ragged:
        ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=ptr[1:])
        return cls(ptr, np.fromiter(chain.from_iterable(rows), dtype=dtype, count=int(ptr[-1])))

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(values, row in ``docs`` of each value, position in its row, row lengths) of ``docs``' rows."""
        starts, lens = self.ptr[docs], self.ptr[docs + 1] - self.ptr[docs]
        seg = np.repeat(np.arange(len(docs)), lens)
        within = np.arange(len(seg)) - np.repeat(np.cumsum(lens) - lens, lens)
        return self.values[starts[seg] + within], seg, within, lens


def char3(texts: Sequence[str]) -> Ragged:
    """The sorted distinct character 3-gram codes of each normalized text, padded ``" text "``."""
    if not texts:
        return Ragged(np.zeros(1, np.int64), np.zeros(0, np.uint32))
    chars = _codes("".join(f" {t} \x00" for t in texts))
    row = np.repeat(np.arange(len(texts), dtype=np.int64), [len(t) + 3 for t in texts])
    a, b, c = chars[:-2], chars[1:-1], chars[2:]
    valid = (a >= 0) & (b >= 0) & (c >= 0)
    keys = distinct((row[:-2] * _BASE**3 + (a * _BASE + b) * _BASE + c)[valid])
    ptr = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // _BASE**3, minlength=len(texts)), out=ptr[1:])
    return Ragged(ptr, (keys % _BASE**3).astype(np.uint32))


def distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + compare: numpy 2.4's hash-based ``np.unique`` is ~10x slower here)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
