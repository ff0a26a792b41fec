"""The consumer loop shared by every consumer: poll a batch, handle it, commit.

``handle`` must be idempotent by event id and durable when it returns; only
then are the offsets committed. Bad messages (not valid events) are counted
and written to a dead-letter file, not retried forever.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from online_learning.events import InteractionEvent, RankingEvent, parse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    event: RankingEvent | InteractionEvent


class ConsumerLoop:
    """Poll ``topics`` as ``group`` and pass batches of parsed events to ``handle``."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str],
                 handle: Callable[[list[Delivered]], None], dead_letters: Path, max_records: int = 1000,
                 session_timeout_ms: int = 6000) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = list(topics)
        self.handle = handle
        self.dead_letters = dead_letters
        self.max_records = max_records
        self.session_timeout_ms = session_timeout_ms
        self.stop_event = threading.Event()
        self.consumed = 0
        self.invalid = 0

    def _consumer(self):  # type: ignore[no-untyped-def]
        from kafka import KafkaConsumer

        return KafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap, group_id=self.group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=self.session_timeout_ms,
                             heartbeat_interval_ms=max(1000, self.session_timeout_ms // 3),
                             max_poll_records=self.max_records)

    def run(self, idle_exit: float | None = None) -> None:
        """Consume until :meth:`stop` (or ``idle_exit`` seconds without messages)."""
        consumer = None
        last_message = time.monotonic()
        while not self.stop_event.is_set():
            try:
                consumer = consumer or self._consumer()
                polled = consumer.poll(timeout_ms=500)
            except Exception as err:  # noqa: BLE001 - broker gone: reconnect with back-off
                logger.warning("%s: poll failed (%s); reconnecting", self.group, err)
                consumer = self._close(consumer)
                self.stop_event.wait(1.0)
                continue
            batch = []
            for records in polled.values():
                for record in records:
                    try:
                        batch.append(Delivered(record.topic, record.partition, record.offset, parse(record.value)))
                    except ValueError as err:
                        self._dead_letter(record, err)
            if batch:
                try:
                    self.handle(batch)
                except BaseException:
                    self._close(consumer)  # like a dying process: no commit, the batch is re-delivered
                    raise
                self.consumed += len(batch)
            if polled:
                last_message = time.monotonic()
                try:
                    consumer.commit()
                except Exception as err:  # noqa: BLE001 - will be re-delivered: handle is idempotent
                    logger.warning("%s: commit failed (%s); records will be re-delivered", self.group, err)
                    consumer = self._close(consumer)
            elif not consumer.assignment():
                last_message = time.monotonic()  # still joining the group: not idle yet
            elif idle_exit is not None and time.monotonic() - last_message > idle_exit:
                break
        self._close(consumer)

    def _dead_letter(self, record, err: Exception) -> None:  # type: ignore[no-untyped-def]
        self.invalid += 1
        self.dead_letters.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letters.open("a") as handle:
            handle.write(json.dumps({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                                     "error": str(err)[:500], "value": record.value.decode(errors="replace")}) + "\n")

    @staticmethod
    def _close(consumer):  # type: ignore[no-untyped-def]
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
        return None

    def stop(self) -> None:
        self.stop_event.set()
