"""The serving layer: assembles the stages into what answers a search.

``indexing.py`` opens the bi-encoder and the index (built when missing);
``loading.py`` loads the registered models and assembles the engine
(:func:`~serving.loading.open_engine` is the one front door, used by the API,
the CLI, training and the benchmarks); ``engine.py`` builds the pipelines (a
pure function of the loaded parts) and runs a search; ``router.py`` picks the
LambdaMART version per search for A/B tests, interleaving and shadow scoring.
An engine and its router are loaded and swapped as one :class:`~serving.loading.Served` unit.
"""
