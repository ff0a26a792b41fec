"""The event log: durable appends, in-order shipping, and a real broker outage."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from online_learning.event_log import EventLog, KafkaSettings
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
    parse,
)
from online_learning.local_broker import LocalBroker, create_topics


def click(i: int) -> InteractionEvent:
    return InteractionEvent(type="click", event_id=f"e{i}", request_id=f"r{i}", product_id=f"p{i}", position=1,
                            user_id="u1", timestamp=datetime(2026, 11, 1, tzinfo=UTC))


def ranking(i: int) -> RankingEvent:
    return RankingEvent(event_id=f"r{i}", request_id=f"r{i}", query="drill", pipeline="full", user_id="u1",
                        items=[ShownItem(product_id="p1", position=1, score=0.5)])


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("segment-*.jsonl")) for line in p.read_text().splitlines()]


def test_without_kafka_the_log_on_disk_is_the_event_log(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([ranking(1), click(1)])
    log.append([click(2)], durable=False)
    log.close()
    records = lines(tmp_path)
    assert [r["event_id"] for r in records] == ["r1", "e1", "e2"]
    assert [r["topic"] for r in records] == [RANKINGS_TOPIC, INTERACTIONS_TOPIC, INTERACTIONS_TOPIC]
    assert parse(json.dumps(records[1]["value"])) == click(1)
    reopened = EventLog(tmp_path)  # appends continue after a restart
    reopened.append([click(3)])
    reopened.close()
    assert [r["event_id"] for r in lines(tmp_path)][-1] == "e3"
    for _ in range(3):  # restarts that take no event add no empty segment each
        EventLog(tmp_path).close()
    assert len(list(tmp_path.glob("segment-*.jsonl"))) == 3  # the first run's, the second's, one empty
    last = EventLog(tmp_path)
    last.append([click(4)])
    last.close()
    assert [r["event_id"] for r in lines(tmp_path)] == ["r1", "e1", "e2", "e3", "e4"]


def consume(bootstrap: str, expected: int, timeout: float = 40.0) -> list[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(INTERACTIONS_TOPIC, bootstrap_servers=bootstrap, group_id="test",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                             consumer_timeout_ms=2000)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        for message in consumer:
            seen.append(json.loads(message.value)["event_id"])
    consumer.close()
    return seen


@pytest.mark.integration
def test_broker_outage_spools_then_ships_everything_in_order(tmp_path: Path) -> None:
    broker = LocalBroker(log=tmp_path / "tansu.log")
    log = EventLog(tmp_path / "spool", KafkaSettings(broker.bootstrap, send_timeout=2.0))
    try:
        log.append([click(i) for i in range(50)])  # broker down: accepted into the spool
        assert lines(tmp_path / "spool") and log.pending() == 50
        broker.start()
        create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        log.append([click(i) for i in range(50, 80)])
        assert log.drain(timeout=60), f"{log.pending()} events still spooled"
        received = consume(broker.bootstrap, 80)
        assert sorted(set(received), key=lambda e: int(e[1:])) == [f"e{i}" for i in range(80)]
        # per key (one user here) the order is the order of acceptance
        first = {e: received.index(e) for e in dict.fromkeys(received)}
        assert sorted(first, key=first.get) == [f"e{i}" for i in range(80)]
        assert not list((tmp_path / "spool").glob("segment-*.jsonl")) or log.pending() == 0
    finally:
        log.close()
        broker.stop()


def test_an_append_the_disk_cannot_hold_leaves_no_half_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import online_learning.event_log as event_log

    log = EventLog(tmp_path)
    log.append([click(1)])
    real_write = os.write

    def full_disk(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        real_write(fd, bytes(data[: len(data) // 2]))  # half of it goes down, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_log.os, "write", full_disk)
    with pytest.raises(OSError):
        log.append([click(2), click(3)])
    monkeypatch.setattr(event_log.os, "write", real_write)
    log.append([click(4)])  # space again
    log.close()
    assert [r["event_id"] for r in lines(tmp_path)] == ["e1", "e4"]  # every line whole: the refused ones are out


@pytest.mark.integration
def test_a_spool_slot_no_process_holds_is_shipped_by_a_live_one(tmp_path: Path) -> None:
    from online_learning.event_log import claim_spool

    root = tmp_path / "spool"
    left, lock = claim_spool(root)  # slot-0: a server process that accepted events and died
    dead = EventLog(left, None)
    dead.append([click(i) for i in range(7)])
    dead.close()
    mine, my_lock = claim_spool(root)  # slot-1 now: the one that runs
    lock.close()  # the dead process's lock goes with it
    broker = LocalBroker(log=tmp_path / "tansu.log")
    broker.start()
    try:
        create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        log = EventLog(mine, KafkaSettings(broker.bootstrap, send_timeout=5.0), adopt_every_s=0)
        try:
            assert log.adopt_orphans() == 7 and log.orphan_pending == 0
            assert sorted(set(consume(broker.bootstrap, 7))) == sorted(f"e{i}" for i in range(7))
        finally:
            log.close()
    finally:
        my_lock.close()
        broker.stop()


def test_a_segment_the_disk_refuses_leaves_the_log_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    import online_learning.event_log as event_log

    monkeypatch.setattr(event_log, "SEGMENT_BYTES", 100)
    log = EventLog(tmp_path)
    log.append([click(1)])  # over 100 bytes: the next append opens a new segment
    real_open, refused = builtins.open, []

    def full_disk(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "segment-" in str(path) and "a" in mode and not refused:
            refused.append(path)
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(OSError):
        log.append([click(2)])
    monkeypatch.setattr(builtins, "open", real_open)
    log.append([click(3)])  # space again: the log goes on (it was a closed file for good)
    log.close()
    assert [r["event_id"] for r in lines(tmp_path)] == ["e1", "e3"]


def test_an_orphan_slot_is_looked_at_by_its_sizes_before_a_producer_is_opened(tmp_path: Path) -> None:
    import json

    from online_learning.event_log import _holds_unshipped

    slot = tmp_path / "slot-3"
    slot.mkdir()
    assert not _holds_unshipped(slot)  # empty: adopting it opens no Kafka producer (before: every 30 s)
    log = EventLog(slot, None)
    log.append([click(1), click(2)])
    log.close()
    assert _holds_unshipped(slot)
    segment = sorted(slot.glob("segment-*.jsonl"))[-1]
    number = int(segment.stem.split("-")[1])
    (slot / "shipped.json").write_text(json.dumps({"segment": number, "offset": segment.stat().st_size}))
    assert not _holds_unshipped(slot)  # all shipped
    (slot / "shipped.json").write_text("{torn")
    assert _holds_unshipped(slot)  # unreadable: the slot's own reader decides


class _Producer:
    """A broker that acknowledges every send at once, and keeps the event ids in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        self.sent.append(json.loads(value)["event_id"])
        return self

    def get(self, timeout: float | None = None) -> None:
        return None

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


def test_an_append_landing_while_the_shipper_reads_is_shipped_before_its_segment_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    import online_learning.event_log as event_log

    log = EventLog(tmp_path, None)  # no ship thread: the rounds are driven here
    log.kafka = KafkaSettings("broker:9092")
    producer = _Producer()
    monkeypatch.setattr(log, "_connect", lambda: producer)
    log.append([click(1)])
    monkeypatch.setattr(event_log, "SEGMENT_BYTES", next(tmp_path.glob("segment-*")).stat().st_size + 10)
    real_open, injected = builtins.open, []

    def reading(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real_open(path, mode, *args, **kwargs)
        if mode == "rb" and "segment-" in str(path) and not injected:
            injected.append(path)
            real_close = handle.close

            def close() -> None:  # the shipper read the open segment to its end: two appends land now,
                real_close()  # one in that segment, one that fills it and goes to the next
                log.append([click(2)])
                log.append([click(3)])

            handle.close = close  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(builtins, "open", reading)
    for _ in range(3):
        log._ship_once()
    monkeypatch.setattr(builtins, "open", real_open)
    assert injected and log._segment == 2  # the appends did go to the next segment
    assert producer.sent == ["e1", "e2", "e3"] and log.pending() == 0  # before: e2 deleted with its segment
    log.close()


def test_a_spool_line_that_is_not_an_event_is_set_aside_and_the_rest_is_shipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash can leave a whole line of a closed segment unreadable (zeros where its bytes never reached the
    disk): it is copied to ``corrupt.jsonl`` beside the segments and shipping goes on past it, rather than
    stopping there for good."""
    producer = _Producer()
    monkeypatch.setattr(EventLog, "_connect", lambda self: producer)

    def line(i: int) -> bytes:
        return json.dumps({"topic": INTERACTIONS_TOPIC, "key": "u1", "event_id": f"e{i}",
                           "value": click(i).model_dump(mode="json")}).encode() + b"\n"

    damaged = [b"\0" * 40 + line(2)[20:], b"null\n"]
    zeroed = b"\0" * 30 + line(5)  # a line lost to zeros, its line end too: the event after it is whole
    (tmp_path / "segment-00000001.jsonl").write_bytes(line(1) + damaged[0] + line(3) + damaged[1] + zeroed)
    log = EventLog(tmp_path, KafkaSettings("broker:9092"), adopt_every_s=0)
    try:
        assert log.drain(5)
        log.append([click(4)])
        assert log.drain(5)
    finally:
        log.close()
    assert producer.sent == ["e1", "e3", "e5", "e4"] and log.quarantined == 2
    kept = [json.loads(kept) for kept in (tmp_path / "corrupt.jsonl").read_text().splitlines()]
    assert [record["value"].encode() for record in kept] == damaged
    assert [(record["segment"], record["offset"]) for record in kept] == [(1, len(line(1))),
                                                                          (1, len(line(1) + damaged[0] + line(3)))]


def test_a_failed_fsync_takes_the_append_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import online_learning.event_log as event_log

    log = EventLog(tmp_path, None)
    log.append([click(1)])
    real_fsync = event_log.os.fsync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(event_log.os, "fsync", failing)
    with pytest.raises(OSError):
        log.append([click(2), click(3)])
    assert log.appended == 1 and [r["event_id"] for r in lines(tmp_path)] == ["e1"]  # before: kept, counted
    assert log._read_batch(*log._position())[0][-1]["event_id"] == "e1"  # nothing of it to ship either
    monkeypatch.setattr(event_log.os, "fsync", real_fsync)
    log.append([click(4)])
    log.close()
    assert log.appended == 2 and [r["event_id"] for r in lines(tmp_path)] == ["e1", "e4"]


def test_a_take_back_the_disk_refuses_too_refuses_the_call_and_keeps_the_lines(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync and then the truncate fail: the call is refused all the same (not an unexpected error), and the lines
    that stay are counted and shipped once a later fsync holds (a resend of them is kept once, by event_id)."""
    import errno

    import online_learning.event_log as event_log

    log = EventLog(tmp_path, None)
    log.append([click(1)])
    real_fsync, real_truncate = event_log.os.fsync, event_log.os.ftruncate

    def failing(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(event_log.os, "fsync", failing)
    monkeypatch.setattr(event_log.os, "ftruncate", failing)
    with pytest.raises(OSError):
        log.append([click(2)])
    monkeypatch.setattr(event_log.os, "fsync", real_fsync)
    monkeypatch.setattr(event_log.os, "ftruncate", real_truncate)
    log.append([click(3)])
    assert log.appended == 3 and [r["event_id"] for r in log._read_batch(*log._position())[0]] == ["e1", "e2", "e3"]
    log.close()


def test_the_shipper_sends_only_what_an_fsync_covered(tmp_path: Path) -> None:
    log = EventLog(tmp_path, None, sync_interval=3600)  # no background fsync while the test looks
    log.append([click(1)])
    log.append([click(2)], durable=False)  # flushed, not fsynced yet: a failed fsync may take it back
    assert [r["event_id"] for r in log._read_batch(*log._position())[0]] == ["e1"]
    log.append([click(3)])  # fsynced, and e2 with it
    assert [r["event_id"] for r in log._read_batch(*log._position())[0]] == ["e1", "e2", "e3"]
    log.close()


def test_a_position_the_disk_cannot_record_is_kept_and_nothing_is_sent_twice(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk refused shipped.json after the broker took a batch: before, the shipper read the position from
    the file again and sent the same batch every round until the disk had room (14 copies of an event in a run);
    now it goes on from where it shipped to, and records it once it can."""
    import errno

    sent: list[str] = []

    class Producer:
        def send(self, topic: str, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
            sent.append(json.loads(value)["event_id"])
            return self

        def get(self, timeout: float | None = None) -> None:
            return None

        def flush(self, timeout: float | None = None) -> None:
            return None

        def close(self, *args: object, **kwargs: object) -> None:
            return None

    refused = []
    save = EventLog._save_position

    def full(self: EventLog, segment: int, offset: int) -> None:
        if len(refused) < 3:
            refused.append((segment, offset))
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, segment, offset)

    monkeypatch.setattr(EventLog, "_connect", lambda self: Producer())
    monkeypatch.setattr(EventLog, "_save_position", full)
    log = EventLog(tmp_path / "spool", KafkaSettings("127.0.0.1:9", send_timeout=1.0))
    try:
        for start, end in ((0, 30), (30, 40), (40, 45), (45, 50)):
            log.append([click(i) for i in range(start, end)])
            assert log.drain(timeout=30), f"{log.pending()} events still spooled"
    finally:
        log.close()
    assert sent == [f"e{i}" for i in range(50)] and len(refused) == 3
    assert json.loads((tmp_path / "spool" / "shipped.json").read_text())["offset"] > 0


def test_lines_a_full_disk_keeps_out_of_corrupt_jsonl_are_kept_and_the_batch_is_not_sent_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines that are not events are copied to ``corrupt.jsonl`` after the broker took the batch: before, a full
    disk that refused the copy raised before the position moved, and the batch went out again at every back-off.
    Now the lines are kept here and copied at a later round, and ``shipped.json`` stays before them until then (a
    crash meanwhile reads them again: they are never lost)."""
    import errno

    import online_learning.event_log as event_log

    def line(i: int) -> bytes:
        return json.dumps({"topic": INTERACTIONS_TOPIC, "key": "u1", "event_id": f"e{i}",
                           "value": click(i).model_dump(mode="json")}).encode() + b"\n"

    damaged = b"not an event\n"
    (tmp_path / "segment-00000001.jsonl").write_bytes(line(1) + damaged + line(3))
    log = EventLog(tmp_path, None)  # no ship thread: the rounds are driven here
    log.kafka = KafkaSettings("broker:9092")
    producer = _Producer()
    monkeypatch.setattr(log, "_connect", lambda: producer)
    real_append = event_log.append_line

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_log, "append_line", full)
    try:
        log._ship_once()  # before: OSError here, and e1, e3 sent again at every round
        log.append([click(4)])
        log._ship_once()
        assert producer.sent == ["e1", "e3", "e4"] and not (tmp_path / "corrupt.jsonl").exists()
        assert json.loads((tmp_path / "shipped.json").read_text()) == {"segment": 1, "offset": len(line(1))}
        assert (tmp_path / "segment-00000001.jsonl").is_file() and log.quarantined == 0
        monkeypatch.setattr(event_log, "append_line", real_append)  # room again
        log._retry_at = 0.0  # a round with nothing new tries again after 5 s: now
        assert log._ship_once() == 0 and producer.sent == ["e1", "e3", "e4"]
        kept = [json.loads(kept) for kept in (tmp_path / "corrupt.jsonl").read_text().splitlines()]
        assert [(k["segment"], k["offset"], k["value"].encode()) for k in kept] == [(1, len(line(1)), damaged)]
        assert json.loads((tmp_path / "shipped.json").read_text())["segment"] == 2 and log.quarantined == 1
        assert not (tmp_path / "segment-00000001.jsonl").exists()  # shipped and set aside: removed
    finally:
        log.close()


def test_an_adopted_slot_whose_position_a_full_disk_refuses_is_not_sent_again_every_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each adoption round opened a new log of the orphan slot and closed it, and with it where it had shipped
    to: with ``shipped.json`` refused by a full disk, every round (30 s) sent the slot's whole backlog again. The
    adopter now keeps that position per slot for its next log of it, as long as the slot's file is unchanged."""
    import errno

    from online_learning.event_log import _holds_unshipped

    root = tmp_path / "event_spool"
    dead = EventLog(root / "slot-1")  # a server process that died with 5 events not shipped
    dead.append([click(i) for i in range(5)])
    dead.close()
    producer = _Producer()
    monkeypatch.setattr(EventLog, "_connect", lambda self: producer)
    save, room = EventLog._save_position, []

    def full(self: EventLog, segment: int, offset: int) -> None:
        if not room:
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, segment, offset)

    monkeypatch.setattr(EventLog, "_save_position", full)
    live = EventLog(root / "slot-0", KafkaSettings("broker:9092", send_timeout=1.0), adopt_every_s=0)
    try:
        assert [live.adopt_orphans(drain_s=5) for _ in range(3)] == [5, 0, 0]  # before: 5 at every round
        assert producer.sent == [f"e{i}" for i in range(5)] and live.orphan_pending == 0
        # another process shipped the slot meanwhile and recorded where to: its file says, not what was kept
        (root / "slot-1" / "shipped.json").write_text(json.dumps({"segment": 1, "offset": 0}))
        assert live.adopt_orphans(drain_s=5) == 5 and live.adopt_orphans(drain_s=5) == 0
        room.append(True)
        assert live.adopt_orphans(drain_s=5) == 0  # the position kept is recorded now: the slot is done
        assert not _holds_unshipped(root / "slot-1") and not live._adopted
    finally:
        live.close()
    assert len(producer.sent) == 10
