"""The evaluation harness: the bar every model and pipeline is held to.

``dataset.py`` loads a judged dataset folder, ``metrics.py`` holds the IR
metrics (NDCG@k with linear gains, MRR@k, Recall@k, condensed lists), and
``harness.py`` runs a pipeline over a split in ``rerank`` or ``retrieval`` mode.
"""
