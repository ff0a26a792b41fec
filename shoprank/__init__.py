"""ShopRank: learning-to-rank product search for online stores.

The request path is traced folder by folder: ``api/`` receives a search,
``retrieval/`` finds candidates (BM25 + bi-encoder, fused by RRF), ``ranking/``
orders them. This package holds what every stage shares: settings, errors,
the CLI, the demo data generator and the evaluation harness.
"""

__version__ = "0.1.0"
