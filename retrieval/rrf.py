"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009).

``RRF(d) = sum over lists L containing d of 1 / (k + rank_L(d))`` with 1-based
ranks; k = 60 in the paper. Scores of the fused lists are ignored, only ranks
count, which is why BM25 and cosine scores need no calibration to be combined.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from retrieval.types import Hits


def fuse(runs: Mapping[str, Hits], k: int = 60, limit: int | None = None) -> Hits:
    """RRF-fused hits, best first; ties broken by doc row for determinism.

    Args:
        runs: Ranked hits by source name (rank = position + 1).
        k: The RRF constant; larger k flattens the weight of top ranks.
        limit: Keep only the best ``limit`` fused hits.
    """
    if k < 1:
        raise ValueError(f"RRF constant k={k} must be >= 1")
    parts = [run for run in runs.values() if len(run)]
    if not parts:
        return Hits.empty()
    docs = np.concatenate([run.docs for run in parts])
    weights = np.concatenate([1.0 / (k + np.arange(1, len(run) + 1)) for run in parts])
    unique, inverse = np.unique(docs, return_inverse=True)
    fused = np.bincount(inverse, weights=weights)
    order = np.lexsort((unique, -fused))[:limit]
    return Hits.of(unique[order], fused[order])
