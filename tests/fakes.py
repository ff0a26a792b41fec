"""In-memory fakes for unit tests of our own logic (never for what users run)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np


class HashingEncoder:
    """Bag-of-words vectors from hashed tokens: fast, deterministic, no model.

    Texts sharing words get a positive cosine, so retrieval logic can be tested
    with closed-form expectations. Counts calls to check caching.
    """

    name = "hashing-test"
    fingerprint = "hashingtest00001"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                slot = int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little") % self.dim
                out[row, slot] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
            if not norm:
                out[row, 0] = 1.0
        return out
