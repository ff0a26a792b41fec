"""The evaluation harness: the bar every model and pipeline is held to.

``dataset.py`` loads a judged dataset folder, ``metrics.py`` holds the IR
metrics (NDCG@k with linear gains, MRR@k, Recall@k, condensed lists),
``harness.py`` runs a pipeline over a split in ``rerank`` or ``retrieval`` mode
(optionally on a named query subset from ``subsets.py``: ``misspelled`` queries,
holding a word outside the catalog vocabulary, and their complement
``correct``), and ``compare.py`` compares two pipelines on the same queries
(mean difference per metric, paired bootstrap CI, paired t-test p-value).
"""
