"""Kafka clients that are closed again when they fail to start.

kafka-python (3.x) starts a client's network thread before it reaches a broker.
When that first contact times out, the constructor raises, and the half-made
client lives on with its thread, reconnecting to the unreachable broker for
the life of the process. A consumer loop or an event log that tries again
through a broker outage would leave one such thread behind at every try.
:func:`open_client` builds the client with a network client that records
itself, and closes what it recorded when the constructor raises.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def open_client(kind: type, *args: Any, bootstrap_timeout_s: float | None = None, **config: Any) -> Any:
    """``kind(*args, **config)`` (``KafkaConsumer``, ``KafkaProducer`` or ``KafkaAdminClient``), or the
    constructor's error with nothing of the client left running. ``bootstrap_timeout_s`` bounds the
    first contact with the brokers where the library has that setting."""
    defaults = getattr(kind, "DEFAULT_CONFIG", {})
    if bootstrap_timeout_s is not None and "bootstrap_timeout_ms" in defaults:
        config["bootstrap_timeout_ms"] = int(bootstrap_timeout_s * 1000)
    network = config.get("kafka_client") or defaults.get("kafka_client")
    if network is None:
        return kind(*args, **config)
    made: list[Any] = []

    class Recorded(network):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    try:
        return kind(*args, **{**config, "kafka_client": Recorded})
    except BaseException:
        for client in made:
            try:
                client.close()
            except Exception as err:  # noqa: BLE001 - half-built: close what there is
                logger.debug("closing a Kafka client that did not start: %s", err)
        raise
