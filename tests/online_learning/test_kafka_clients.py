"""Kafka clients that cannot reach a broker leave nothing running."""

from __future__ import annotations

import threading

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from online_learning.kafka_clients import open_client
from online_learning.local_broker import free_port


def kafka_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("kafka-io")}


@pytest.mark.parametrize("kind", [KafkaConsumer, KafkaAdminClient])
def test_a_client_that_cannot_reach_its_broker_leaves_no_thread_behind(kind: type) -> None:
    before = kafka_threads()
    with pytest.raises(Exception, match="(?i)timeout|timed out|brokers"):
        open_client(kind, bootstrap_timeout_s=0.5, bootstrap_servers=f"127.0.0.1:{free_port()}")
    assert kafka_threads() <= before
