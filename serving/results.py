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

The first stage's lists (:class:`SharedLists`, behind :class:`retrieval.memo.MemoizedRetriever`)
are kept in the same store, as bytes (a JSON header and raw columns), for as long as scores:
they depend on the catalog, the encoder and the retrieval settings, which their keys name, not
on the time or the user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Callable, Hashable, Sequence
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
    facets: dict[str, Any] | None = None  # counts over the whole list (ranking.facts.CatalogFacts.facets)


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
            "analysis": dataclasses.asdict(result.analysis) if result.analysis is not None else None,
            "facets": result.facets}
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
    return SearchResult(candidates, page["pipeline"], int(page["total"]), notes=page["notes"], analysis=analysis,
                        facets=page["facets"])


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


LIST_PREFIX = "fs:"
_HEADER = struct.Struct("<I")  # a list's value starts with the length of its JSON header


def list_key(key: Hashable) -> str:
    """The store key of one first-stage list: ``fs:<digest of (scope, query, k)>``."""
    return LIST_PREFIX + hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


def encode_list(candidates: Candidates) -> bytes:
    """A first-stage list as bytes: a JSON header (stage, columns, dtypes) and the raw columns.
    Product ids are not kept: the key names the catalog, whose rows give them back."""
    columns = [("docs", "", candidates.docs)]
    columns += [("scores", name, v) for name, v in candidates.scores.items()]
    columns += [("ranks", name, v) for name, v in candidates.ranks.items()]
    header = json.dumps({"stage": candidates.stage, "n": len(candidates),
                         "columns": [[table, name, values.dtype.str] for table, name, values in columns]}).encode()
    return b"".join([_HEADER.pack(len(header)), header, *(np.ascontiguousarray(v).tobytes() for *_, v in columns)])


def decode_list(payload: bytes, product_ids: Callable[[np.ndarray], list[str]]) -> Candidates:
    (size,) = _HEADER.unpack_from(payload)
    header = json.loads(payload[_HEADER.size : _HEADER.size + size])
    n, offset = int(header["n"]), _HEADER.size + size
    tables: dict[str, dict[str, np.ndarray]] = {"docs": {}, "scores": {}, "ranks": {}}
    for table, name, dtype in header["columns"]:
        values = np.frombuffer(payload, dtype=np.dtype(dtype), count=n, offset=offset)
        offset += values.nbytes
        tables[table][name] = values
    if offset != len(payload):
        raise ValueError(f"a stored list of {len(payload)} bytes holds {offset}")
    docs = tables["docs"][""]
    return Candidates(docs, product_ids(docs), header["stage"], tables["scores"], tables["ranks"])


class SharedLists:
    """First-stage lists in the shared store (:class:`retrieval.memo.ListTier`), behind each process's
    LRU: one process's (or the nightly warm-up's) retrieval of a query serves every other process and
    replica until the catalog changes (the key's scope names it). Kept like scores
    (``serving.score_store_ttl_days``).

    Args:
        store: The shared score store.
        product_ids: The index's product ids of rows (the key names the catalog they come from).
        counts: Hits and misses of this tier (``/metrics``).
        block_writes: Wait for room in the store's write queue instead of dropping (batch jobs).
    """

    def __init__(self, store: ScoreStore, product_ids: Callable[[np.ndarray], list[str]],
                 counts: TierCounts | None = None, block_writes: bool = False) -> None:
        self.store = store
        self.product_ids = product_ids
        self.counts = counts or TierCounts()
        self.block_writes = block_writes

    def get(self, keys: Sequence[Hashable]) -> list[Candidates | None]:
        out: list[Candidates | None] = []
        for payload in self.store.get_blobs([list_key(k) for k in keys]):
            try:
                out.append(decode_list(payload, self.product_ids) if payload is not None else None)
            except (ValueError, KeyError, TypeError, IndexError, struct.error):  # another release's: search again
                out.append(None)
        hits = sum(c is not None for c in out)
        self.counts.add(hits, len(out) - hits)
        return out

    def put(self, items: Sequence[tuple[Hashable, Candidates]]) -> None:
        self.store.put_many([(list_key(k), encode_list(c)) for k, c in items], block=self.block_writes)


def settings_digest(*sections: Any) -> str:
    """A short digest of settings sections (pydantic models) that shape a ranking."""
    text = "\x1f".join(section.model_dump_json() for section in sections)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
