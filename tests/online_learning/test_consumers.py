"""Consumers against a real Kafka-protocol broker: crash, resume, no loss, no double counting."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from online_learning.consumers.base import ConsumerLoop, Delivered
from online_learning.consumers.log_sink import ParquetLogSink, read_log
from online_learning.consumers.streaming_features import StreamingFeatures
from online_learning.event_log import EventLog, KafkaSettings
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
    ShownItem,
)
from online_learning.forget_list import ForgetList
from online_learning.local_broker import LocalBroker, create_topics

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def events(n: int) -> list[RankingEvent | InteractionEvent]:
    out: list[RankingEvent | InteractionEvent] = []
    for i in range(n):
        when = T0 + timedelta(minutes=i)
        out.append(RankingEvent(event_id=f"r{i}", request_id=f"r{i}", timestamp=when, user_id=f"u{i % 7}",
                                query="drill", pipeline="full", filters={"brand": ["A"]} if i % 3 == 0 else None,
                                items=[ShownItem(product_id=f"p{j}", position=j + 1) for j in range(3)]))
        if i % 2 == 0:
            out.append(InteractionEvent(type="click", event_id=f"c{i}", request_id=f"r{i}", timestamp=when,
                                        user_id=f"u{i % 7}", product_id="p0", position=1))
        if i % 5 == 0:
            out.append(InteractionEvent(type="purchase", event_id=f"b{i}", request_id=f"r{i}", timestamp=when,
                                        user_id=f"u{i % 7}", product_id="p1", position=2, revenue=10.0))
    return out


@pytest.fixture()
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    with LocalBroker(log=tmp_path / "tansu.log") as running:
        create_topics(running.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        yield running


def publish(broker: LocalBroker, folder: Path, batch: list) -> None:
    log = EventLog(folder, KafkaSettings(broker.bootstrap))
    try:
        log.append(batch)
        assert log.drain(60)
    finally:
        log.close()


class CrashAfter(ConsumerLoop):
    """Stops hard after ``batches`` handled batches, before committing the last one."""

    def __init__(self, *args, batches: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        inner = kwargs["handle"]
        self.left = batches

        def handle(batch: list[Delivered]) -> None:
            inner(batch)
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt("simulated crash before the offset commit")

        kwargs["handle"] = handle
        super().__init__(*args, **kwargs)


def run_loop(loop: ConsumerLoop) -> None:
    try:
        loop.run(idle_exit=8.0)
    except KeyboardInterrupt:
        pass


def test_log_sink_survives_a_crash_before_commit(broker: LocalBroker, tmp_path: Path) -> None:
    batch = events(60)
    publish(broker, tmp_path / "spool", batch + batch[:10])  # the first 10 sent twice (a client retry)
    sink_root = tmp_path / "log"
    first = CrashAfter(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], handle=ParquetLogSink(sink_root),
                       dead_letters=tmp_path / "dead.jsonl", max_records=20, batches=2)
    run_loop(first)
    sink = ParquetLogSink(sink_root)  # a new process: state from disk
    run_loop(ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], sink, tmp_path / "dead.jsonl"))
    rankings = pd.concat([pd.read_parquet(f) for f in (sink_root / "rankings").rglob("*.parquet")])
    interactions = pd.concat([pd.read_parquet(f) for f in (sink_root / "interactions").rglob("*.parquet")])
    assert sorted(rankings["event_id"].unique()) == sorted(f"r{i}" for i in range(60))
    assert len(rankings) == 60 * 3  # one row per shown item, no duplicate rows on disk
    expected = {e.event_id for e in batch if isinstance(e, InteractionEvent)}
    assert set(interactions["event_id"]) == expected and len(interactions) == len(expected)
    assert sink.duplicates > 0  # re-delivered and retried events were recognised
    assert (sink_root / "rankings" / "date=2026-11-01" / "hour=12").is_dir()
    assert len(read_log(sink_root, "rankings")) == 180


def kafka_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("kafka-io")}


def test_a_loop_ended_by_an_error_leaves_no_client_running(broker: LocalBroker, tmp_path: Path) -> None:
    """An error out of ``handle`` ends the loop with its consumer and its topic watch closed: left open,
    their network threads would live on, and the consumer would hold its partitions from the group's
    next consumer."""
    publish(broker, tmp_path / "spool", events(20))
    before = kafka_threads()
    run_loop(CrashAfter(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], handle=lambda batch: None,
                        dead_letters=tmp_path / "dead.jsonl", max_records=5, batches=1, topic_check_s=0.0))
    assert kafka_threads() <= before


def test_a_record_without_a_value_is_dead_lettered_and_the_rest_is_read(broker: LocalBroker, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        producer.send(RANKINGS_TOPIC, key=b"u0", value=None).get(30)  # a tombstone, ahead of the events
    finally:
        producer.close()
    batch = events(10)
    publish(broker, tmp_path / "spool", batch)
    loop = ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC],
                        ParquetLogSink(tmp_path / "log"), tmp_path / "dead.jsonl")
    run_loop(loop)
    assert loop.invalid == 1 and loop.consumed == len(batch)
    (letter,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letter["topic"] == RANKINGS_TOPIC and letter["value"] is None


def test_a_bad_record_at_an_offset_dead_lettered_before_the_topic_was_recreated_is_dead_lettered(
        tmp_path: Path) -> None:
    """A recreated topic's offsets start again at 0: a bad record at an offset the old topic had dead-lettered
    is another record, written and counted, not taken for the old one read again."""
    from collections import namedtuple

    Part, Record = namedtuple("Part", "topic partition"), namedtuple("Record", "topic partition offset value")
    part = Part(RANKINGS_TOPIC, 0)
    polls = [{part: [Record(RANKINGS_TOPIC, 0, 0, b"old topic, not an event")]},
             {part: [Record(RANKINGS_TOPIC, 0, 0, b"new topic, not an event either")]}]

    class Consumer:
        def assignment(self) -> set:
            return {part}

        def poll(self, timeout_ms: int) -> dict:
            if not polls:
                loop.stop()
                return {}
            return polls.pop(0)

        def commit(self) -> None:
            pass

        def seek_to_beginning(self, *partitions: object) -> None:
            pass

        def close(self, autocommit: bool) -> None:
            pass

    loop = ConsumerLoop("127.0.0.1:1", "sink", [RANKINGS_TOPIC], lambda batch: None, tmp_path / "dead.jsonl")
    watched = iter([[], [RANKINGS_TOPIC]])  # the topic watch sees a new topic id before the second poll
    loop._consumer = Consumer  # type: ignore[method-assign]
    loop._recreated_topics = lambda: next(watched, [])  # type: ignore[method-assign]
    loop.run()
    letters = [json.loads(line)["value"] for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert letters == ["old topic, not an event", "new topic, not an event either"] and loop.invalid == 2


@pytest.mark.parametrize("fails", [True, False])
def test_with_an_idle_exit_a_consumer_given_no_partitions_gives_up_naming_the_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    """A broker out of reach (its polls fail) or a group never joined (polls find no partition): the job that
    drains the topics with --idle-exit ends with NotReady naming the broker, not a loop that never exits."""
    from core.errors import NotReady
    from online_learning.consumers import base

    class Consumer:
        def assignment(self) -> set:
            return set()

        def poll(self, timeout_ms: int) -> dict:
            if fails:
                raise ConnectionError("DNS lookup failed")
            return {}

        def close(self, autocommit: bool) -> None:
            pass

    monkeypatch.setattr(base, "UNREACHABLE_S", 0.3)
    loop = ConsumerLoop("broker.invalid:9092", "sink", [RANKINGS_TOPIC], lambda batch: None, tmp_path / "dead.jsonl")
    loop._consumer = Consumer  # type: ignore[method-assign]
    loop._recreated_topics = lambda: []  # type: ignore[method-assign]
    loop.stop_event.wait = lambda timeout=None: False  # type: ignore[method-assign]  # no back-off here
    with pytest.raises(NotReady, match=r"sink: the Kafka broker at broker.invalid:9092 gave this consumer no "
                                       r"partitions for 0 s"):
        loop.run(idle_exit=0.1)


def test_sink_recovers_a_file_recorded_but_not_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    sink = ParquetLogSink(tmp_path / "log")
    delivered = [Delivered(INTERACTIONS_TOPIC, 0, i, e) for i, e in enumerate(events(4)) if isinstance(e, InteractionEvent)]
    real_replace = os.replace

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        sink(delivered)
    monkeypatch.setattr(os, "replace", real_replace)
    again = ParquetLogSink(tmp_path / "log")  # restart: the recorded file is renamed into place
    again(delivered)  # and a re-delivery adds nothing
    assert len(read_log(tmp_path / "log", "interactions")) == len(delivered)
    assert len(list((tmp_path / "log").rglob("*.parquet"))) == 1


def test_a_sink_starting_leaves_the_files_another_sink_is_writing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A second sink (``events import``, another consumer) starting while the first has written and recorded
    a file, and not yet renamed it, waits for it: removing the file then lost its events for good (their ids
    were taken, so Kafka's re-delivery was dropped)."""
    import online_learning.consumers.log_sink as log_sink

    root = tmp_path / "log"
    live = ParquetLogSink(root)
    batch = [Delivered(INTERACTIONS_TOPIC, 0, i, e) for i, e in enumerate(events(6)) if isinstance(e, InteractionEvent)]
    starting: list[threading.Thread] = []
    real_mark = log_sink.mark

    def mark(db, keys):  # type: ignore[no-untyped-def]
        starting.append(threading.Thread(target=ParquetLogSink, args=(root,)))  # starts between steps 2 and 4
        starting[0].start()
        starting[0].join(1.0)  # it waits for the lock (without it, it removed the temporary file by now)
        return real_mark(db, keys)

    monkeypatch.setattr(log_sink, "mark", mark)
    live(batch)
    starting[0].join(30)
    assert not starting[0].is_alive() and len(read_log(root, "interactions")) == len(batch)


def test_a_file_removed_before_it_is_renamed_is_written_when_its_batch_comes_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporary file removed under the sink (by a process that does not take the log's lock) fails the batch
    and its events are taken again, instead of being counted as written and dropped as repeats."""
    import online_learning.consumers.log_sink as log_sink

    root = tmp_path / "log"
    sink = ParquetLogSink(root)
    batch = [Delivered(INTERACTIONS_TOPIC, 0, i, e) for i, e in enumerate(events(6)) if isinstance(e, InteractionEvent)]
    real_mark = log_sink.mark

    def mark(db, keys):  # type: ignore[no-untyped-def]
        for tmp in root.rglob("*.parquet.tmp"):
            tmp.unlink()
        return real_mark(db, keys)

    monkeypatch.setattr(log_sink, "mark", mark)
    with pytest.raises(FileNotFoundError):
        sink(batch)
    monkeypatch.setattr(log_sink, "mark", real_mark)
    sink(batch)  # the loop reads the batch again
    assert sink.duplicates == 0 and len(read_log(root, "interactions")) == len(batch)


def test_the_sink_keeps_the_filters_of_each_search(tmp_path: Path) -> None:
    sink = ParquetLogSink(tmp_path / "log")
    sink([Delivered(RANKINGS_TOPIC, 0, i, e) for i, e in enumerate(events(6)) if isinstance(e, RankingEvent)])
    rankings = read_log(tmp_path / "log", "rankings", ["filters"]).drop_duplicates("event_id").set_index("event_id")
    assert json.loads(rankings.at["r3", "filters"]) == {"brand": ["A"]} and rankings.at["r1", "filters"] is None


def test_a_click_and_a_search_with_the_same_id_are_both_kept(tmp_path: Path) -> None:
    import sqlite3

    search = RankingEvent(event_id="1", request_id="1", timestamp=T0, user_id="u1", query="drill", pipeline="full",
                          items=[ShownItem(product_id="p0", position=1)])
    click = InteractionEvent(type="click", event_id="1", request_id="1", timestamp=T0, user_id="u1", product_id="p0",
                             position=1)  # an export that numbers each table from 1; or a caller's own ids
    (tmp_path / "log").mkdir()
    legacy = sqlite3.connect(tmp_path / "log" / "_sink_state.sqlite")
    with legacy:  # a state written before ids were kept per kind: "old" taken, kind unknown
        legacy.execute("CREATE TABLE seen (event_id TEXT PRIMARY KEY)")
        legacy.execute("INSERT INTO seen VALUES ('old')")
    legacy.close()
    sink = ParquetLogSink(tmp_path / "log")
    sink([Delivered(RANKINGS_TOPIC, 0, 0, search), Delivered(INTERACTIONS_TOPIC, 0, 0, click)])
    assert sink.duplicates == 0
    assert len(read_log(tmp_path / "log", "rankings")) == 1 and len(read_log(tmp_path / "log", "interactions")) == 1
    sink([Delivered(RANKINGS_TOPIC, 0, 0, search), Delivered(INTERACTIONS_TOPIC, 0, 0, click)])  # re-delivered
    old = click.model_copy(update={"event_id": "old"})
    sink([Delivered(INTERACTIONS_TOPIC, 0, 1, old)])  # taken before the upgrade: still not taken twice
    assert sink.duplicates == 3 and len(read_log(tmp_path / "log", "interactions")) == 1
    pushed: list[pd.DataFrame] = []
    features = StreamingFeatures(tmp_path / "state.sqlite", {"p0": (1, 9.0)}, lambda name, frame: pushed.append(frame))
    features([Delivered(RANKINGS_TOPIC, 0, 0, search), Delivered(INTERACTIONS_TOPIC, 0, 0, click)])
    features([Delivered(INTERACTIONS_TOPIC, 0, 0, click)])
    row = features.db.execute("SELECT impressions, clicks FROM daily WHERE product_id = 'p0'").fetchone()
    assert row == (1, 1)  # the click counted once, and not mistaken for the search


def test_a_quiet_products_counts_drop_in_the_online_store_as_its_days_leave_the_windows(tmp_path: Path) -> None:
    online: dict[str, dict] = {}  # the online store: product -> the last row pushed
    pushed: list[set[str]] = []

    def push(source: str, frame: pd.DataFrame) -> None:
        pushed.append(set(frame["product_id"]))
        online.update({row["product_id"]: row for row in frame.to_dict("records")})

    def shown(product: str, day: int, n: int) -> list[Delivered]:
        when = T0 - timedelta(days=100 - day)  # days before T0: a timestamp ahead of the clock is refused
        return [Delivered(RANKINGS_TOPIC, 0, 0, RankingEvent(
            event_id=f"{product}-{day}-{i}", request_id=f"{product}-{day}-{i}", timestamp=when, query="q",
            pipeline="full", items=[ShownItem(product_id=product, position=1)])) for i in range(n)]

    def served(product: str) -> tuple[int, int]:
        return online[product]["impressions_7d"], online[product]["impressions_30d"]

    features = StreamingFeatures(tmp_path / "state.sqlite", {}, push)
    features(shown("p_old", 0, 10) + shown("p_mid", 3, 2))
    for day, expected in ((6, (10, 10)), (7, (0, 10)), (29, (0, 10)), (30, (0, 0)), (90, (0, 0))):
        features(shown("p_new", day, 1))  # only another product's events move the clock
        assert served("p_old") == expected, day
        state = features.popularity(sorted(online)).set_index("product_id")
        for product, row in online.items():  # the store serves what the state computes
            assert all(row[c] == state.loc[product, c] for c in state.columns if c != "event_timestamp"), product
    assert served("p_mid") == (0, 0)
    before = len(pushed)
    features(shown("p_new", 90, 2))  # one more event the same day: no day left a window, only p_new is pushed
    assert pushed[before:] == [{"p_new"}]


def test_two_processes_opening_a_state_made_before_marks_had_a_generation(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer starting and ``events forget`` open an old state at once: both looked for the column, and
    the second to add it failed ("duplicate column name: generation")."""
    import sqlite3

    import online_learning.consumers.streaming_features as streaming_features

    state = tmp_path / "state.sqlite"
    with sqlite3.connect(state) as db:
        db.execute("CREATE TABLE dirty (kind TEXT, key TEXT, PRIMARY KEY (kind, key))")
        db.execute("INSERT INTO dirty VALUES ('user', 'u1')")
    connect = sqlite3.connect

    class Late:  # a connection whose look at the columns comes just before the other process adds the column
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.db = connect(*args, **kwargs)  # type: ignore[arg-type]

        def execute(self, sql: str, *args: object) -> object:
            if sql != "PRAGMA table_info(dirty)":
                return self.db.execute(sql, *args)
            rows = self.db.execute(sql, *args).fetchall()
            with connect(state) as other:
                other.execute("ALTER TABLE dirty ADD COLUMN generation INT NOT NULL DEFAULT 0")
            return rows

        def __getattr__(self, name: str) -> object:
            return getattr(self.db, name)

        def __enter__(self) -> object:
            return self.db.__enter__()

        def __exit__(self, *exc: object) -> object:
            return self.db.__exit__(*exc)

    monkeypatch.setattr(streaming_features.sqlite3, "connect", Late)
    streaming_features.open_state(state).close()
    monkeypatch.undo()
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT kind, key, generation FROM dirty").fetchall() == [("user", "u1", 0)]


def test_two_processes_given_one_event_at_once_count_it_once(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Consumers sharing a state (several on one home, or ``seed_state`` under a live one) each look up the
    seen ids; the second to look must wait for the first to commit, or both count the event."""
    import online_learning.consumers.streaming_features as streaming_features

    state = tmp_path / "state.sqlite"
    first, second = (StreamingFeatures(state, {}, lambda source, frame: None) for _ in range(2))
    search = RankingEvent(event_id="r1", request_id="r1", timestamp=T0, query="drill", pipeline="full",
                          items=[ShownItem(product_id="p1", position=1)])
    batch = [Delivered(RANKINGS_TOPIC, 0, 0, search)]
    lookup, others = streaming_features.seen, []

    def seen(db: object, keys: list) -> set:  # the other process writes the event while the first looks it up
        known = lookup(db, keys)
        if not others:
            others.append(threading.Thread(target=second.write, args=(batch,)))
            others[0].start()
            others[0].join(1.0)  # waits for the first to commit, or has counted the event already
        return known

    monkeypatch.setattr(streaming_features, "seen", seen)
    first.write(batch)
    others[0].join(30)
    assert first.db.execute("SELECT impressions FROM daily WHERE product_id = 'p1'").fetchone() == (1,)


def test_an_online_store_out_of_reach_delays_the_features_and_loses_nothing(broker: LocalBroker,
                                                                           tmp_path: Path) -> None:
    publish(broker, tmp_path / "spool", events(20))
    down = [True, True, True]  # the online store refuses the first pushes, then answers
    pushed: list[pd.DataFrame] = []

    def push(source: str, frame: pd.DataFrame) -> None:
        if down and down.pop():
            raise ConnectionError("Redis is down")
        pushed.append(frame)

    updater = StreamingFeatures(tmp_path / "features.sqlite", {"p0": (1, 10.0)}, push)  # starts though it is down
    erased = ForgetList(tmp_path / "forgotten.jsonl")
    erased.add(["u0"], [], at=T0 + timedelta(days=1))  # u0's 3 searches, 2 clicks and a purchase are dropped
    loop = ConsumerLoop(broker.bootstrap, "features-outage", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], updater,
                        tmp_path / "d.jsonl", forget=erased)
    run_loop(loop)  # the consumer keeps going: it no longer dies on the first refused push
    assert not down and pushed and loop.handle_failures == 0
    latest = updater.popularity(["p0"]).set_index("product_id")
    assert latest.loc["p0", "impressions_7d"] == 17  # each event once, across the retries
    assert loop.forgotten == 6  # counted once, not again at each retry of a failed batch


def test_streaming_features_count_once_across_a_crash(broker: LocalBroker, tmp_path: Path) -> None:
    batch = events(40)
    publish(broker, tmp_path / "spool", batch)
    pushes: list[tuple[str, pd.DataFrame]] = []
    products = {"p0": (1, 10.0), "p1": (2, 30.0), "p2": (1, 20.0)}

    def push(source: str, frame: pd.DataFrame) -> None:
        pushes.append((source, frame))

    state = tmp_path / "features.sqlite"
    run_loop(CrashAfter(broker.bootstrap, "features", [RANKINGS_TOPIC, INTERACTIONS_TOPIC],
                        handle=StreamingFeatures(state, products, push), dead_letters=tmp_path / "d.jsonl",
                        max_records=15, batches=2))
    updater = StreamingFeatures(state, products, push)
    run_loop(ConsumerLoop(broker.bootstrap, "features", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], updater,
                          tmp_path / "d.jsonl"))
    latest = updater.popularity(["p0", "p1"]).set_index("product_id")
    assert latest.loc["p0", "impressions_7d"] == 40 and latest.loc["p0", "clicks_7d"] == 20
    assert latest.loc["p1", "purchases_7d"] == 8 and latest.loc["p1", "impressions_30d"] == 40
    profile = updater.profiles(["u0"]).iloc[0]
    assert profile["top_categories"] == [2] and profile["median_price"] == 30.0
    assert {source for source, _ in pushes} == {"popularity_push", "user_activity_push"}
    last = [f for s, f in pushes if s == "popularity_push"][-1].set_index("product_id")
    assert last.loc["p0", "impressions_7d"] == 40  # the online store got the final absolute count


def consume_across(broker: LocalBroker, tmp_path: Path, loop: ConsumerLoop, sink: ParquetLogSink,
                   first: list, second: list, lose_topics: Callable[[], None], seconds: float) -> None:
    """Publish ``first``, consume it with ``loop`` (in a thread), ``lose_topics()`` under it, create the
    topics again, publish ``second`` and wait (at most ``seconds``) until the sink wrote both."""
    import threading
    import time

    def wait_for(written: int, limit: float) -> None:
        deadline = time.monotonic() + limit
        while sink.written != written and time.monotonic() < deadline:
            time.sleep(0.2)

    publish(broker, tmp_path / "spool", first)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for(len(first), 60)
        assert sink.written == len(first)
        lose_topics()
        create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        publish(broker, tmp_path / "spool2", second)
        wait_for(len(first) + len(second), seconds)
    finally:
        loop.stop()
        thread.join(15)


def assert_complete(sink_root: Path, batch: list) -> None:
    rankings = read_log(sink_root, "rankings")
    assert sorted(rankings["event_id"].unique()) == sorted(e.event_id for e in batch if isinstance(e, RankingEvent))
    assert len(rankings) == len(rankings["event_id"].unique()) * 3  # later files did not replace earlier ones
    expected = {e.event_id for e in batch if isinstance(e, InteractionEvent)}
    assert set(read_log(sink_root, "interactions")["event_id"]) == expected


def test_log_sink_keeps_everything_across_a_broker_restart(tmp_path: Path) -> None:
    """The broker restarts under a live consumer (Tansu in memory: offsets start again at 0).

    The consumer may keep its pre-restart positions through the rejoin, and
    even commit them to the new broker; Tansu answers a fetch past its new end
    with nothing rather than "offset out of range". Requests 45..59 are fewer
    than 0..44 in every partition (keys are users u0..u6), so the old
    positions lie past the new ends: only the loop's topic-id watch brings the
    new events in, whichever way the reconnect goes. One record per poll:
    every file is one offset, so the second batch's files carry the first
    batch's offsets again (the names must still differ).
    """
    batch = events(60)
    first = [e for e in batch if int(e.request_id[1:]) < 45]
    second = [e for e in batch if int(e.request_id[1:]) >= 45]
    sink_root = tmp_path / "log"
    sink = ParquetLogSink(sink_root)
    broker = LocalBroker(log=tmp_path / "tansu.log").start()
    loop = ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], sink,
                        tmp_path / "dead.jsonl", max_records=1, topic_check_s=1.0)

    def restart() -> None:
        broker.stop()
        broker.start()

    try:
        create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        consume_across(broker, tmp_path, loop, sink, first, second, restart, 90)
    finally:
        broker.stop()
    assert_complete(sink_root, batch)


def test_a_topic_recreated_under_the_consumer_is_read_again_from_its_start(broker: LocalBroker,
                                                                         tmp_path: Path) -> None:
    """Topics deleted and created again while the group lives on with committed offsets past their new ends.

    Without the topic-id watch the consumer resumes at those offsets and never
    sees the new events (Tansu); a Kafka broker would answer "out of range"
    only while the new log is shorter than the old position.
    """
    from kafka import KafkaAdminClient

    batch = events(40)
    first, second = batch[: len(batch) * 3 // 4], batch[len(batch) * 3 // 4 :]
    sink_root = tmp_path / "log"
    sink = ParquetLogSink(sink_root)
    loop = ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], sink,
                        tmp_path / "dead.jsonl", topic_check_s=0.5)

    def delete_topics() -> None:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.delete_topics([RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        finally:
            admin.close()

    consume_across(broker, tmp_path, loop, sink, first, second, delete_topics, 60)
    assert_complete(sink_root, batch)
    assert loop.topic_resets >= 1


def test_a_log_partition_dated_past_pandas_times_is_left_out_by_its_readers(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A file a ShopRank that took any timestamp from a topic wrote under date=3000-01-01: before, every reader
    of the log (retrain, recommendations, reports) failed on it with OutOfBoundsDatetime."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from online_learning.consumers.log_sink import log_files

    delivered = [Delivered(INTERACTIONS_TOPIC, 0, i, InteractionEvent(
        type="click", event_id=f"e{i}", request_id=f"r{i}", product_id="P1", timestamp=T0)) for i in range(3)]
    ParquetLogSink(tmp_path / "log")(delivered)
    [written] = list((tmp_path / "log").rglob("*.parquet"))
    far = tmp_path / "log" / "interactions" / "date=3000-01-01" / written.name
    far.parent.mkdir(parents=True)
    table = pq.read_table(written)
    stamps = pa.array([datetime(3000, 1, 1, tzinfo=UTC)] * len(table), pa.timestamp("us", tz="UTC"))
    pq.write_table(table.set_column(table.schema.get_field_index("timestamp"), "timestamp", stamps), far)
    assert len(read_log(tmp_path / "log", "interactions")) == 3 and far.is_file()
    assert far not in log_files(tmp_path / "log", "interactions") and "date=3000-01-01" in caplog.text


def test_a_log_partition_is_left_out_by_the_day_its_name_says_not_by_its_text(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The names were compared as text with the last day: ``date=latest`` (read before) was left out as a day
    after 2262-04-11, and ``date=10000-01-01`` was read. Only a name that is a day after it is left out now (a
    year past 9999 too); ``readable_only=False`` (``events forget``, which reads with pyarrow) lists them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from online_learning.consumers.log_sink import log_files

    root = tmp_path / "log"
    names = ["date=2262-04-11", "date=2262-04-12", "date=10000-01-01", "date=2025-02-30", "date=latest"]
    for name in names:
        (root / "interactions" / name / "hour=00").mkdir(parents=True)
        pq.write_table(pa.table({"event_id": ["e1"]}), root / "interactions" / name / "hour=00" / "a.parquet")
    listed = [f.parts[-3] for f in log_files(root, "interactions")]
    assert listed == ["date=2025-02-30", "date=2262-04-11", "date=latest"]  # sorted paths; no day: listed
    assert "date=2262-04-12" in caplog.text and "date=10000-01-01" in caplog.text and "latest" not in caplog.text
    assert [f.parts[-3] for f in log_files(root, "interactions", readable_only=False)] == sorted(names)
    # the window goes by the days too; a name that says no day is listed whatever the window
    window = log_files(root, "interactions", pd.Timestamp("2262-04-01"), pd.Timestamp("2262-04-11"))
    assert [f.parts[-3] for f in window] == ["date=2025-02-30", "date=2262-04-11", "date=latest"]


def test_an_event_stamped_ahead_of_the_clock_does_not_end_the_windows_early(tmp_path: Path) -> None:
    """A client's clock may run up to a day ahead: before, one such event moved the state's clock to tomorrow,
    and every product's 7-day window lost the day that then left it (served 0 impressions for a product the
    feature tables training reads count 5 for)."""
    online: dict[str, dict] = {}
    now = datetime.now(UTC)

    def shown(product: str, when: datetime, n: int) -> list[Delivered]:
        return [Delivered(RANKINGS_TOPIC, 0, 0, RankingEvent(
            event_id=f"{product}-{when:%j%H}-{i}", request_id=f"{product}-{when:%j%H}-{i}", timestamp=when,
            query="q", pipeline="full", items=[ShownItem(product_id=product, position=1)])) for i in range(n)]

    features = StreamingFeatures(tmp_path / "state.sqlite", {},
                                 lambda source, frame: online.update({r["product_id"]: r for r in frame.to_dict(
                                     "records")}))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    features(shown("p1", today - timedelta(days=6), 5))  # the first day of today's 7-day window
    features(shown("p3", now - timedelta(seconds=1), 1))
    assert online["p1"]["impressions_7d"] == 5
    features(shown("p2", today + timedelta(days=1, minutes=1), 1))  # stamped tomorrow, by a shopper's device
    assert online["p1"]["impressions_7d"] == 5 and features._now() <= pd.Timestamp.now(tz="UTC")
