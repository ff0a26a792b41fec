"""First stage of a search: find a few hundred candidates among all products.

Folder by folder: ``catalog.py`` reads and validates a store's catalog;
``encoder.py`` turns text into vectors (batch for the catalog, fast path for
queries) with ``embedding_cache.py`` so unchanged products are never re-encoded;
``bm25.py`` (tantivy) and ``dense.py`` (FAISS) are the two retrievers, fused by
``rrf.py`` in ``hybrid.py``; ``index.py`` ties them into one persisted,
upsertable :class:`~retrieval.index.ProductIndex`. Every retriever returns
:class:`~retrieval.types.Hits` internally and :class:`~retrieval.types.Candidates`
(columnar, one score and rank column per stage) from ``search``; later stages
extend the same ``Candidates``.
"""
