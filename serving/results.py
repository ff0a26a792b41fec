"""A search's result page, and the shared tier of the results cache.

Each server process keeps its recent result pages in an LRU for
``serving.results_ttl_s``. With several processes (or replicas) behind one
address, a repeated query often lands on a process that has not seen it yet
and ranks it again. :class:`SharedResults` keeps the pages in the score store
as well (``serving.score_store``: the sqlite file of the machine, or Redis), so
a page ranked by one process is served by the others until it is
``results_ttl_s`` old, counted from when it was ranked, in whichever process.

A page's key names everything its ranking depended on: the index (its folder
and catalog hash, so a catalog change reads other keys), the served model
versions (a swap reads other keys), a digest of the settings that shape a
ranking, and the request (pipeline, LambdaMART version, analyzed query, rewrite
flag, user, filters, k, offset). Pages are JSON (no code runs when one is
read), written in the background like the scores; expired ones are deleted by
the store (Redis expiry; sqlite at most every ``results_ttl_s``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.query import Analysis, Rewrite
from ranking.cache import TierCounts
from ranking.score_store import ScoreStore, page_key
from retrieval.types import Candidates


@dataclass(frozen=True)
class SearchResult:
    candidates: Candidates
    pipeline: str
    total_candidates: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    cached: bool = False
    analysis: Analysis | None = None


def _column(values: np.ndarray) -> list[Any]:
    return [str(values.dtype), values.tolist()]


def _array(column: list[Any]) -> np.ndarray:
    return np.asarray(column[1], dtype=np.dtype(column[0]))


def encode(result: SearchResult) -> bytes:
    """A complete (not degraded) result page as JSON bytes; timings are not kept."""
    c = result.candidates
    page = {"docs": _column(c.docs), "ids": list(c.product_ids), "stage": c.stage,
            "scores": {k: _column(v) for k, v in c.scores.items()},
            "ranks": {k: _column(v) for k, v in c.ranks.items()},
            "pipeline": result.pipeline, "total": result.total_candidates, "notes": result.notes,
            "analysis": dataclasses.asdict(result.analysis) if result.analysis is not None else None}
    return json.dumps(page, separators=(",", ":")).encode()


def decode(payload: bytes) -> SearchResult:
    page = json.loads(payload)
    candidates = Candidates(_array(page["docs"]), list(page["ids"]), page["stage"],
                            {k: _array(v) for k, v in page["scores"].items()},
                            {k: _array(v) for k, v in page["ranks"].items()})
    analysis = None
    if page["analysis"] is not None:
        a = page["analysis"]
        analysis = Analysis(a["original"], a["text"], tuple(a["tokens"]),
                            tuple(Rewrite(**r) for r in a["rewrites"]), tuple(a["brand"]),
                            tuple(a["product_type"]), tuple(a["numbers"]))
    return SearchResult(candidates, page["pipeline"], int(page["total"]), notes=page["notes"], analysis=analysis)


class SharedResults:
    """Result pages in the shared store, behind each process's LRU (hits counted in ``counts``)."""

    def __init__(self, store: ScoreStore, ttl_s: float, counts: TierCounts) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.counts = counts

    @staticmethod
    def key(scope: str, versions: dict[str, str], request: Hashable) -> str:
        """The store key of a page: ``scope`` (index, catalog, settings), model versions, the request."""
        return page_key(repr((scope, sorted(versions.items()), request)))

    def get(self, key: str) -> tuple[SearchResult, float] | None:
        """The page stored under ``key`` and its age in seconds, if younger than the TTL."""
        found = self.store.get_page(key, self.ttl_s)
        if found is None:
            self.counts.add(0, 1)
            return None
        payload, age = found
        try:
            result = decode(payload)
        except (ValueError, KeyError, TypeError, IndexError):  # written by another release: rank again
            self.counts.add(0, 1)
            return None
        self.counts.add(1, 0)
        return result, age

    def put(self, key: str, result: SearchResult) -> None:
        self.store.put_page(key, encode(result))


def settings_digest(*sections: Any) -> str:
    """A short digest of settings sections (pydantic models) that shape a ranking."""
    text = "\x1f".join(section.model_dump_json() for section in sections)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
