"""Second stage of a search: order the first stage's candidates.

``cascade.py`` chains the stages, each a pure function of
:class:`~retrieval.types.Candidates` with its own budget; ``cross_encoder.py``
scores (query, product) pairs with our own cross-encoders on ONNX Runtime
(``cross_encoder_net.py`` is the network, ``batching.py`` micro-batches
concurrent requests, ``cache.py`` keeps their scores); ``features.py`` builds
the LambdaMART features, ``lambdamart.py`` is the model and ``ltr.py`` its
stage; ``rules.py`` holds the business rules and the rules stage, the last
stage of a served cascade; ``unbiased.py`` is the inverse-propensity objective
of retraining from clicks. ``training/`` trains the models (``shoprank train
biencoder|reranker|student|ltr``).
"""
