"""The learning loop: events in, better rankers out.

``events.py`` is the versioned event schema (a ranking event per search with
every shown item, and interaction events: click, add to cart, purchase);
``event_log.py`` makes every accepted event durable on local disk first and
ships it to Kafka in order (a broker outage only delays shipping);
``consumers/`` turn the Kafka topics into the offline Parquet log and streaming
features; then retraining, shadow scoring, A/B tests and interleaving decide
what gets promoted.
"""
