"""The search engine: everything one search needs, loaded once.

:class:`SearchEngine` holds the product index, the query encoder and the
pipelines built on them. ``/v1/search`` serves :meth:`SearchEngine.search`
(the ``full`` pipeline), and ``shoprank evaluate --pipeline NAME`` evaluates
:meth:`SearchEngine.pipeline`, so the two can never drift apart.

Pipelines today: ``bm25``, ``dense``, ``hybrid``; ``full`` = ``hybrid`` until
the ranking stages land.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from retrieval.encoder import Encoder
from retrieval.hybrid import BM25Retriever, DenseRetriever, HybridRetriever, Retriever
from retrieval.index import ProductIndex
from retrieval.types import Candidates
from shoprank.errors import Conflict, InvalidInput
from shoprank.settings import Settings

logger = logging.getLogger(__name__)

PIPELINES = ("bm25", "dense", "hybrid", "full")
DEFAULT = "full"


@dataclass(frozen=True)
class SearchResult:
    candidates: Candidates
    pipeline: str
    total_candidates: int


class SearchEngine:
    """Index + encoder + pipelines for one served catalog."""

    def __init__(self, index: ProductIndex, encoder: Encoder, settings: Settings) -> None:
        if index.manifest.encoder_fingerprint != encoder.fingerprint:
            raise Conflict(
                f"index {index.path} was built with encoder {index.manifest.encoder} "
                f"({index.manifest.encoder_fingerprint}) but the query encoder is {encoder.name} "
                f"({encoder.fingerprint}); rebuild the index or set SHOPRANK_ENCODER to the matching model"
            )
        self.index = index
        self.encoder = encoder
        self.settings = settings
        rs = settings.retrieval
        bm25 = BM25Retriever(index)
        dense = DenseRetriever(index, encoder)
        self.executor = ThreadPoolExecutor(max_workers=rs.bm25_threads, thread_name_prefix="bm25")
        hybrid = HybridRetriever(bm25, dense, rrf_k=rs.rrf_k, depth=rs.depth, executor=self.executor)
        self._pipelines: dict[str, Retriever] = {"bm25": bm25, "dense": dense, "hybrid": hybrid, "full": hybrid}

    def pipeline(self, name: str) -> Retriever:
        if name not in self._pipelines:
            raise InvalidInput(f"pipeline {name!r} is not one of {sorted(self._pipelines)}")
        return self._pipelines[name]

    def search(self, query: str, k: int, pipeline: str = DEFAULT) -> SearchResult:
        candidates = self.pipeline(pipeline).search(query, k)
        return SearchResult(candidates=candidates.top(k), pipeline=pipeline, total_candidates=len(candidates))
