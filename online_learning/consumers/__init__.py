"""Kafka consumers of the event topics (consumer groups, at-least-once delivery).

Each consumer makes its side effect idempotent by event id and commits Kafka
offsets only after the side effect is durable, so a crash or broker restart
leads to re-delivery, never to loss, and re-delivery never double counts.
"""
