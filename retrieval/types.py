"""Result types shared by every retriever and ranking stage.

Results are columnar (numpy arrays) because a search moves ~1,000 candidates
through several stages; per-item objects are made only for what is returned.

- :class:`Hits`: one retriever's ranked list (rank = position + 1).
- :class:`Candidates`: the list on its way through the stages; each stage that
  scores it adds its own score and rank column (``bm25``, ``dense``, ``rrf``,
  later ``student``, ``teacher``, ``ltr``), so later stages can use them as
  features and the API can show them.
- :class:`Candidate`: a read-only view of one row, for responses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Hits:
    """One retriever's results, best first.

    Attributes:
        docs: Product rows in the :class:`~retrieval.index.ProductIndex` (int64).
        scores: The retriever's own scores (float32), same order.
    """

    docs: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(cls, docs: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Hits:
        return cls(np.asarray(docs, dtype=np.int64), np.asarray(scores, dtype=np.float32))

    @classmethod
    def empty(cls) -> Hits:
        return cls.of([], [])

    @classmethod
    def ranked(cls, docs: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> Hits:
        """Hits sorted by descending score; ties keep the given order."""
        docs_a = np.asarray(docs, dtype=np.int64)
        scores_a = np.asarray(scores, dtype=np.float32)
        order = np.argsort(-scores_a, kind="stable")
        return cls(docs_a[order], scores_a[order])

    def __len__(self) -> int:
        return len(self.docs)

    def top(self, k: int) -> Hits:
        """The best ``k`` hits."""
        return Hits(self.docs[:k], self.scores[:k])

    def lookup(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score and 1-based rank of each of ``docs`` in these hits (NaN / 0 if absent)."""
        scores = np.full(len(docs), np.nan, dtype=np.float32)
        ranks = np.zeros(len(docs), dtype=np.int32)
        if len(self.docs) and len(docs):
            order = np.argsort(self.docs, kind="stable")
            sorted_docs = self.docs[order]
            pos = np.minimum(np.searchsorted(sorted_docs, docs), len(sorted_docs) - 1)
            found = sorted_docs[pos] == docs
            scores[found] = self.scores[order[pos[found]]]
            ranks[found] = order[pos[found]] + 1
        return scores, ranks


@dataclass(frozen=True, slots=True)
class Candidate:
    """One result row: the product, the ordering stage's score and rank, and every stage's."""

    doc: int
    product_id: str
    score: float
    rank: int
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidates:
    """Ranked candidates with a score and rank column per stage that saw them.

    ``stage`` names the column that orders the rows. A stage that did not see a
    row (e.g. BM25 matched no word of the query) has NaN score and rank 0 there.
    """

    docs: np.ndarray
    product_ids: list[str]
    stage: str
    scores: Mapping[str, np.ndarray]
    ranks: Mapping[str, np.ndarray]

    @classmethod
    def from_hits(cls, hits: Hits, stage: str, product_ids: list[str],
                  others: Mapping[str, Hits] | None = None) -> Candidates:
        """Candidates ordered as ``hits`` (named ``stage``), with columns looked up in ``others``."""
        scores = {stage: hits.scores}
        ranks = {stage: np.arange(1, len(hits) + 1, dtype=np.int32)}
        for name, run in (others or {}).items():
            scores[name], ranks[name] = run.lookup(hits.docs)
        return cls(hits.docs, product_ids, stage, scores, ranks)

    def __len__(self) -> int:
        return len(self.docs)

    @property
    def score(self) -> np.ndarray:
        return self.scores[self.stage]

    def take(self, rows: np.ndarray | slice) -> Candidates:
        """The rows at ``rows`` (positions), keeping every column."""
        if isinstance(rows, slice):  # a head or a tail: views of the columns, a slice of the ids
            picked: np.ndarray | slice = rows
            ids = self.product_ids[rows]
        else:
            picked = np.asarray(rows, dtype=np.int64)
            ids = [self.product_ids[i] for i in picked.tolist()]
        return Candidates(
            self.docs[picked], ids, self.stage,
            {k: v[picked] for k, v in self.scores.items()}, {k: v[picked] for k, v in self.ranks.items()},
        )

    def top(self, k: int) -> Candidates:
        return self.take(slice(0, k))

    def then(self, tail: Candidates) -> Candidates:
        """These rows followed by ``tail``'s; a column missing on one side is NaN / 0 there."""

        def column(side: Candidates, name: str, table: str) -> np.ndarray:
            values = getattr(side, table)
            if name in values:
                return values[name]
            return np.full(len(side), np.nan, np.float32) if table == "scores" else np.zeros(len(side), np.int32)

        def joined(table: str) -> dict[str, np.ndarray]:
            names = dict.fromkeys([*getattr(self, table), *getattr(tail, table)])
            return {n: np.concatenate([column(self, n, table), column(tail, n, table)]) for n in names}

        return Candidates(np.concatenate([self.docs, tail.docs]), self.product_ids + tail.product_ids,
                          self.stage, joined("scores"), joined("ranks"))

    def reorder(self, stage: str, scores: np.ndarray) -> Candidates:
        """Re-rank by ``scores`` under the name ``stage`` (stable: ties keep current order)."""
        scores = np.asarray(scores, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        moved = self.take(order)
        return Candidates(
            moved.docs, moved.product_ids, stage,
            {**moved.scores, stage: scores[order]},
            {**moved.ranks, stage: np.arange(1, len(order) + 1, dtype=np.int32)},
        )

    def __iter__(self) -> Iterator[Candidate]:
        for i in range(len(self)):
            seen = {name: int(r[i]) for name, r in self.ranks.items() if r[i] > 0}
            yield Candidate(
                doc=int(self.docs[i]), product_id=self.product_ids[i], score=float(self.score[i]),
                rank=i + 1, scores={name: float(self.scores[name][i]) for name in seen}, ranks=seen,
            )
