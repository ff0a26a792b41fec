"""The bi-encoder's per-epoch check during training: exact dense search over the whole catalog for
held-out queries (Recall@100 and NDCG@10), recorded in the model's training history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.metrics import ndcg_at_k, recall_at_k


@dataclass(frozen=True)
class DevSet:
    """Held-out queries for a per-epoch check of the dense search alone: exact top 100 over
    ``texts`` (the whole catalog), Recall@100 at ``relevant_grade`` and NDCG@10."""

    queries: list[tuple[str, str, dict[str, int]]]  # (qid, query, grades)
    relevant_grade: int


def dense_dev_metrics(model, texts: dict[str, str], dev: DevSet,  # type: ignore[no-untyped-def]
                      batch_size: int = 256) -> dict[str, float | None]:
    """Recall@100 and NDCG@10 of exact dense search with ``model`` (a SentenceTransformer). None where
    no query counts: Recall@100 over the queries with a relevant product, both without dev queries."""
    import torch

    if not dev.queries:  # nothing to search (encoding no query would fail, and lose the model being trained)
        return {"recall@100": None, "ndcg@10": None, "queries": 0}
    ids = list(texts)
    with torch.no_grad():
        docs = model.encode([texts[p] for p in ids], batch_size=batch_size, convert_to_tensor=True,
                            normalize_embeddings=True, show_progress_bar=False)
        queries = model.encode([q for _, q, _ in dev.queries], batch_size=batch_size, convert_to_tensor=True,
                               normalize_embeddings=True, show_progress_bar=False)
        top = torch.topk(queries @ docs.T, k=min(100, len(ids)), dim=1).indices.cpu().numpy()
    recall, ndcg = [], []
    for (_, _, grades), row in zip(dev.queries, top):
        ranked = [ids[i] for i in row]
        value = recall_at_k(ranked, grades, 100, dev.relevant_grade)
        if value is not None:
            recall.append(value)
        ndcg.append(ndcg_at_k(ranked, grades, 10))
    return {"recall@100": round(float(np.mean(recall)), 4) if recall else None,
            "ndcg@10": round(float(np.mean(ndcg)), 4), "queries": len(dev.queries)}
