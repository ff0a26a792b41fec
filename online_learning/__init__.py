"""The learning loop, offline side: events in, better rankers out.

``events.py`` is the versioned event schema (a ranking event per search with
every shown item, and interaction events: click, add to cart, purchase);
``event_log.py`` makes every accepted event durable on local disk first and
ships it to Kafka in order (a broker outage only delays shipping);
``consumers/`` turn the Kafka topics into the offline Parquet log and streaming
features; ``propensity.py`` and ``retrain.py`` train an unbiased candidate from
the logs; ``experiments.py`` (A/B assignment, team-draft interleaving),
``analysis.py``, ``stats.py``, ``promotion.py`` and ``report.py`` decide and
report what gets promoted. Serving an experiment is ``serving/router.py``;
simulated shoppers are ``simulation/``.
"""
