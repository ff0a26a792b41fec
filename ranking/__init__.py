"""Second stage of a search: order the first stage's candidates.

``cross_encoder.py`` scores (query, product) pairs with our own trained
cross-encoders on ONNX Runtime; ``cascade.py`` chains a small distilled student
and the teacher in tiers (1,000 -> 100 -> k), each stage a pure function of
:class:`~retrieval.types.Candidates`; ``training/`` trains the models
(``shoprank train reranker|student|biencoder``).
"""
