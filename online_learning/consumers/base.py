"""The consumer loop shared by every consumer: poll a batch, handle it, commit.

``handle`` must be idempotent by event id and durable when it returns; only
then are the offsets committed. Bad messages (not valid events) are counted
and written to a dead-letter file, not retried forever.

A topic recreated under a running consumer (deleted and created again, or a
broker without durable storage restarted) starts its offsets again at 0, while
the consumer still holds, and may commit, its old positions. A broker is not
bound to answer a fetch past its new end with "offset out of range" (Tansu in
memory answers with nothing), and when the new log has already grown past the
old position, none is due: either way the new events would be skipped. So the
loop watches each topic's id (every ``topic_check_s`` seconds) and, when it
changes, reads that topic again from its earliest offset; ``handle`` drops the
events it already has.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import NotReady
from core.files import append_line
from online_learning.events import InteractionEvent, RankingEvent, parse
from online_learning.forget_list import ForgetList, filtered
from online_learning.kafka_clients import open_client

logger = logging.getLogger(__name__)

# with an idle exit, how long at least a consumer may be without partitions (a broker out of reach, a group
# never joined) before it gives up; a group join takes seconds (about half the session timeout on some brokers)
UNREACHABLE_S = 60.0


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    event: RankingEvent | InteractionEvent


class ConsumerLoop:
    """Poll ``topics`` as ``group`` and pass batches of parsed events to ``handle``, less the events of
    erased shoppers (``forget``, :mod:`online_learning.forget_list`).

    A handler whose work ends with a step that needs no erasure held off (the streaming consumer's push to
    the online store, which may be slow) has both steps apart: ``handle.write(batch)``, run while the
    erasure list's lock is held, and ``handle.after()``, run once it is let go (:meth:`_filter_and_handle`);
    calling it does both."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str],
                 handle: Callable[[list[Delivered]], None], dead_letters: Path, max_records: int = 1000,
                 session_timeout_ms: int = 6000, topic_check_s: float = 5.0, forget: ForgetList | None = None) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = list(topics)
        self.handle = handle
        self.after: Callable[[], None] | None = getattr(handle, "after", None)  # see the class
        self.write: Callable[[list[Delivered]], None] = getattr(handle, "write") if self.after is not None else handle
        self.dead_letters = dead_letters
        self.max_records = max_records
        self.session_timeout_ms = session_timeout_ms
        self.topic_check_s = topic_check_s
        self.stop_event = threading.Event()
        self.forget = forget
        self.consumed = 0
        self.invalid = 0
        self.handle_failures = 0  # batches in a row whose handling failed (retried with back-off)
        self._dead: set[tuple[str, int, int]] = set()  # records dead-lettered (topic, partition, offset)
        self.forgotten = 0  # events of erased shoppers dropped
        self.topic_resets = 0
        self._topic_ids: dict[str, str] = {}
        self._rewind: set[str] = set()  # recreated topics not yet read again from the start
        self._next_check = 0.0
        self._admin = None  # the topic watch's client
        self._live = None  # the consumer of the running loop

    def _consumer(self):  # type: ignore[no-untyped-def]
        from kafka import KafkaConsumer

        return open_client(KafkaConsumer, *self.topics, bootstrap_timeout_s=10.0, bootstrap_servers=self.bootstrap,
                           group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
                           session_timeout_ms=self.session_timeout_ms,
                           heartbeat_interval_ms=max(1000, self.session_timeout_ms // 3),
                           max_poll_records=self.max_records)

    def run(self, idle_exit: float | None = None) -> None:
        """Consume until :meth:`stop` (or ``idle_exit`` seconds without messages).

        With ``idle_exit``, a broker that gives the consumer no partitions (out of reach, or the group never
        joined) for ``max(idle_exit, UNREACHABLE_S)`` seconds ends the loop with :class:`~core.errors.NotReady`
        naming it, so a job that drains the topics and exits fails instead of waiting forever.

        However the loop ends (stopped, idle, or an error out of ``handle``), its consumer leaves
        the group and its clients are closed: a consumer left open keeps heartbeating from its own
        thread and holds its partitions, so the group's next consumer would wait for it and read
        nothing. A batch that cannot hold the erasure list's lock is not written: the loop stops with
        :class:`~core.errors.NotReady` (:meth:`ForgetList.reading`), at its start when it cannot from the first."""
        if self.forget is not None:
            self.forget.check()
        try:
            self._run(idle_exit)
        finally:
            self._live = self._close(self._live)
            self._admin = self._close(self._admin)

    def _run(self, idle_exit: float | None) -> None:
        consumer = None
        last_message = contact = time.monotonic()  # contact: when the consumer last held partitions
        while not self.stop_event.is_set():
            if idle_exit is not None and time.monotonic() - contact > max(idle_exit, UNREACHABLE_S):
                raise NotReady(f"{self.group}: the Kafka broker at {self.bootstrap} gave this consumer no "
                               f"partitions for {max(idle_exit, UNREACHABLE_S):.0f} s: is it running and "
                               "reachable, are the topics there, and has the group no more consumers than the "
                               "topics have partitions?")
            try:
                consumer = self._live = consumer or self._consumer()
                self._rewind_recreated(consumer)
                polled = consumer.poll(timeout_ms=500)
            except Exception as err:  # noqa: BLE001 - broker gone: reconnect with back-off
                logger.warning("%s: poll failed (%s); reconnecting", self.group, err)
                consumer = self._close(consumer)
                self.stop_event.wait(1.0)
                continue
            if polled or consumer.assignment():
                contact = time.monotonic()
            batch = []
            for records in polled.values():
                for record in records:
                    try:
                        # accepted before: refused only past 48 h ahead of this clock (a producer's far-dated
                        # record, or the events of a server whose clock ran that far fast: dead letters)
                        event = parse(record.value, stored=True)
                        batch.append(Delivered(record.topic, record.partition, record.offset, event))
                    except (ValueError, TypeError) as err:  # not an event (a record without a value too)
                        self._dead_letter(record, err)
            batch, dropped, failed = self._filter_and_handle(batch)
            if batch:
                if failed is not None:  # a store out of reach: no commit, the batch comes again
                    self.handle_failures += 1
                    wait = min(30.0, 0.5 * 2 ** min(self.handle_failures, 6))
                    logger.warning("%s: handling %d events failed (%s: %s); they are read again in %.1f s",
                                   self.group, len(batch), type(failed).__name__, failed, wait)
                    try:  # the same records at the next poll, from this consumer (its place in a rewound topic)
                        for partition, records in polled.items():
                            consumer.seek(partition, records[0].offset)
                    except Exception:  # noqa: BLE001 - a new consumer starts from the committed offsets
                        consumer = self._close(consumer)
                    self.stop_event.wait(wait)
                    continue
                # anything else (KeyboardInterrupt, SystemExit) ends the loop like a dying process: no commit,
                # and run() closes the consumer, so the group's next one is given the batch again
                self.handle_failures = 0
                self.consumed += len(batch)
            self.forgotten += dropped  # once: a batch that failed is read (and its erased events dropped) again
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

    def _filter_and_handle(self, batch: list[Delivered]) -> tuple[list[Delivered], int, Exception | None]:
        """``batch`` less the erased shoppers' events, handled: returns what was handled, how many events
        were dropped, and the error ``handle`` raised (None: handled). The erasure list's lock is held
        shared from the filter until the batch is written (:meth:`ForgetList.reading`), so an erasure listed
        meanwhile waits until then, and finds its rows at rest; a handler's ``after`` step runs once the lock
        is let go (see the class). Anything but an ``Exception`` (KeyboardInterrupt, SystemExit) goes
        through."""
        if not batch:
            return batch, 0, None
        with filtered(self.forget, batch, lambda d: d.event) as (batch, dropped):
            if not batch:
                return batch, dropped, None
            try:
                self.write(batch)
            except Exception as err:  # noqa: BLE001 - the caller retries the batch with back-off
                return batch, dropped, err
        try:
            if self.after is not None:
                self.after()
        except Exception as err:  # noqa: BLE001 - as a batch not written: read again (its ids are known)
            return batch, dropped, err
        return batch, dropped, None

    def _recreated_topics(self) -> list[str]:
        """Topics whose id changed since the last look (at most every ``topic_check_s`` seconds)."""
        now = time.monotonic()
        if now < self._next_check:
            return []
        self._next_check = now + self.topic_check_s
        try:
            if self._admin is None:
                from kafka import KafkaAdminClient

                self._admin = open_client(KafkaAdminClient, bootstrap_timeout_s=5.0, bootstrap_servers=self.bootstrap,
                                          client_id=f"{self.group}-topic-watch")
            described = self._admin.describe_topics(self.topics)
        except Exception as err:  # noqa: BLE001 - broker gone: look again at the next check
            logger.debug("%s: could not describe %s (%s)", self.group, self.topics, err)
            return []
        changed = []
        for topic in described:
            name, topic_id = topic.get("name"), topic.get("topic_id")
            if topic.get("error_code") or not topic_id:
                continue  # not there (yet): keep the id it had
            if self._topic_ids.setdefault(name, str(topic_id)) != str(topic_id):
                self._topic_ids[name] = str(topic_id)
                changed.append(name)
        return changed

    def _rewind_recreated(self, consumer) -> None:  # type: ignore[no-untyped-def]
        """Read a recreated topic again from its earliest offset, once the consumer holds its partitions.

        The old topic's dead-lettered offsets are forgotten: the new topic's records at those offsets are
        other records, and a bad one among them is dead-lettered and counted in its turn."""
        for topic in self._recreated_topics():
            logger.warning("%s: topic %s was recreated (new topic id); its offsets started again at 0: "
                           "reading it again from the earliest offset", self.group, topic)
            self._rewind.add(topic)
            self._dead = {where for where in self._dead if where[0] != topic}
        for topic in sorted(self._rewind):
            partitions = [tp for tp in consumer.assignment() if tp.topic == topic]
            if partitions:
                consumer.seek_to_beginning(*partitions)
                self._rewind.discard(topic)
                self.topic_resets += 1

    def _dead_letter(self, record, err: Exception) -> None:  # type: ignore[no-untyped-def]
        where = (record.topic, record.partition, record.offset)
        if where in self._dead:  # read again after a failed batch: written and counted once
            return
        if len(self._dead) > 100_000:
            self._dead.clear()
        self._dead.add(where)
        self.invalid += 1
        # "time" (when it was written): what `events prune` goes by when the value holds no event time
        append_line(self.dead_letters, json.dumps({
            "topic": record.topic, "partition": record.partition, "offset": record.offset, "error": str(err)[:500],
            "value": None if record.value is None else record.value.decode(errors="replace"), "time": time.time()}))

    @staticmethod
    def _close(client):  # type: ignore[no-untyped-def]
        """Close a consumer (without committing) or an admin client; ``None``, to clear the reference."""
        if client is not None:
            try:
                client.close(autocommit=False) if hasattr(client, "commit") else client.close()
            except Exception:  # noqa: BLE001
                pass
        return None

    def stop(self) -> None:
        self.stop_event.set()
