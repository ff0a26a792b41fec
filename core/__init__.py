"""The basement every layer stands on; it imports no stage.

``errors.py`` (one root error with its HTTP status), ``settings.py`` (typed
settings, one ``get_settings()``), ``paths.py`` (the artifact home's layout),
``cache.py`` (an LRU with hit counters), ``registry.py`` (versioned models and
their active pointers), ``query.py`` (what a search asks: text, user, filters,
deadline) and ``feature_store.py`` (ShopRank's handle on the Feast repo and the
online feature reader).
"""

__version__ = "0.1.0"
