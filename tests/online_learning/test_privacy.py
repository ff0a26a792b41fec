"""Erasing a shopper (``shoprank events forget``) and keeping the log to a window (``events prune``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.files import append_line
from core.paths import Home
from core.settings import get_settings
from online_learning.consumers.base import ConsumerLoop, Delivered
from online_learning.consumers.log_sink import ParquetLogSink, read_log
from online_learning.consumers.streaming_features import StreamingFeatures
from online_learning.event_import import import_events
from online_learning.event_log import EventLog, claim_spool
from online_learning.events import (
    INTERACTIONS_TOPIC,
    RANKINGS_TOPIC,
    InteractionEvent,
    RankingEvent,
)
from online_learning.forget_list import ForgetList
from online_learning.local_broker import LocalBroker, create_topics
from online_learning.privacy import forget, prune
from tests.helpers import run_cli
from tests.online_learning.test_consumers import T0, events, publish, run_loop


def delivered(batch: list[RankingEvent | InteractionEvent]) -> list[Delivered]:
    return [Delivered("t", 0, i, e) for i, e in enumerate(batch)]


class Pushed:
    """Collects what the streaming features push (the online store's side is Feast's)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, pd.DataFrame]] = []

    def __call__(self, source: str, frame: pd.DataFrame) -> None:
        self.frames.append((source, frame))


def fill(paths: Home, batch: list[RankingEvent | InteractionEvent], pushed: Pushed) -> StreamingFeatures:
    ParquetLogSink(paths.event_log)(delivered(batch))
    features = StreamingFeatures(paths.streaming_state, {"p1": (3, 10.0)}, pushed)
    features(delivered(batch))
    return features


def test_forget_erases_a_shopper_at_rest_and_keeps_the_others(tmp_path: Path) -> None:
    paths = Home(tmp_path)
    batch = events(35)  # users u0..u6; u1 buys at i = 15
    pushed = Pushed()
    features = fill(paths, batch, pushed)
    dead = paths.dead_letters("sink")
    dead.parent.mkdir(parents=True)
    dead.write_text(json.dumps({"topic": "t", "value": json.dumps({"type": "click", "user_id": "u1"})}) + "\n"
                    + json.dumps({"topic": "t", "value": '{"user_id": "u1", cut'}) + "\n"
                    + json.dumps({"topic": "t", "value": json.dumps({"type": "click", "user_id": "u2"})}) + "\n")
    paths.shadow.mkdir(parents=True)
    (paths.shadow / "v2.jsonl").write_text(json.dumps({"time": 1.0, "user_id": "u1"}) + "\n"
                                           + json.dumps({"time": 1.0, "user_id": None}) + "\n")
    aside = paths.event_spool / "slot-0" / "corrupt.jsonl"  # spool lines a shipper passed over as not events
    aside.parent.mkdir(parents=True)
    aside.write_text(json.dumps({"segment": 1, "offset": 0, "value": '{"topic": "t", "value": {"user_id": "u1"\x00'})
                     + "\n" + json.dumps({"segment": 1, "offset": 40, "value": '{"user_id": "u2", "ty'}) + "\n"
                     + json.dumps({"segment": 1, "offset": 70, "value": '{"topic": "t", "value": {"user_id": "u1"}}'})
                     + "\n")  # the last parses, but lacks its key: the id under value still names it
    before = {kind: read_log(paths.event_log, kind) for kind in ("rankings", "interactions")}
    theirs = {kind: int((frame["user_id"] == "u1").sum()) for kind, frame in before.items()}
    at = T0 + timedelta(days=1)

    dry = forget(paths, ["u1"], [], at, dry_run=True)
    assert dry.log_rows == theirs and dry.purchases == 1 and dry.dead_letters == 2 and dry.shadow_records == 1
    assert dry.listed == 0 and len(ForgetList(paths.forgotten)) == 0 and dry.spool_set_aside == 2
    assert read_log(paths.event_log, "rankings").equals(before["rankings"])  # a dry run changes nothing

    pushed.frames.clear()
    report = forget(paths, ["u1"], [], at, push=lambda: features._flush_dirty())
    assert report.log_rows == theirs and report.log_files > 0 and report.listed == 1
    assert report.profiles == "1 reset in the online store"
    for kind, frame in before.items():
        after = read_log(paths.event_log, kind)
        assert "u1" not in set(after["user_id"]) and len(after) == len(frame) - theirs[kind]
        assert after.equals(frame[frame["user_id"] != "u1"].reset_index(drop=True))  # the others' rows as they were
    (source, profile), = pushed.frames
    assert source == "user_activity_push" and profile.iloc[0]["user_id"] == "u1"
    assert profile.iloc[0]["purchases"] == 0 and list(profile.iloc[0]["recent_items"]) == []
    assert features.db.execute("SELECT COUNT(*) FROM purchases WHERE user_id = 'u1'").fetchone()[0] == 0
    assert features.db.execute("SELECT COUNT(*) FROM purchases").fetchone()[0] > 0
    assert [json.loads(line)["value"] for line in dead.read_text().splitlines()] == [
        json.dumps({"type": "click", "user_id": "u2"})]
    assert [json.loads(line)["user_id"] for line in (paths.shadow / "v2.jsonl").read_text().splitlines()] == [None]
    assert report.spool_set_aside == 2 and [json.loads(line)["offset"] for line in aside.read_text().splitlines()] \
        == [40]
    listed = ForgetList(paths.forgotten)
    assert "u1" not in paths.forgotten.read_text() and listed.digest("user", "u1") in paths.forgotten.read_text()
    assert paths.forgotten.with_suffix(".key").stat().st_mode & 0o777 == 0o600  # the key: its owner's only
    again = forget(paths, ["u1"], [], at)  # nothing left to erase; the profile is pushed empty all the same
    assert again.log_rows == {"rankings": 0, "interactions": 0} and again.not_found == ["user u1"]
    assert again.profiles == "1 marked: the streaming consumer pushes them at its next batch or start"

    # a session id erases that session's rows; a shopper without a profile pushes nothing
    session = [RankingEvent(event_id="s1", request_id="s1", timestamp=T0, session_id="sess-9", query="saw",
                            pipeline="full", items=[{"product_id": "p0", "position": 1}])]
    ParquetLogSink(paths.event_log)(delivered(session))
    gone = forget(paths, [], ["sess-9"], at)
    assert gone.log_rows["rankings"] == 1 and gone.profiles == "none" and gone.not_found == []
    # a profile of the offline feature table (a simulated world's, or built from the log) goes too
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths.features.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u2", "u3"], "purchases": [1, 2]}), paths.features / "user_profile.parquet")
    shown = forget(paths, ["u2", " u3"], [], at, push=lambda: features._flush_dirty())
    assert shown.feature_rows == 1 and shown.not_found == ["user  u3"]  # ids match exactly as stored
    assert pq.read_table(paths.features / "user_profile.parquet").column("user_id").to_pylist() == ["u3"]


def test_forget_erases_a_file_the_sink_recorded_but_did_not_rename_before_it_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    paths = Home(tmp_path)
    batch = events(6)  # u1 at i = 1, the others' rows too
    theirs = sum(e.user_id == "u1" for e in batch if isinstance(e, RankingEvent))
    real_replace = os.replace

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut after the files were recorded, before they were renamed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        ParquetLogSink(paths.event_log)(delivered(batch))
    monkeypatch.setattr(os, "replace", real_replace)
    at = T0 + timedelta(days=1)
    dry = forget(paths, ["u1"], [], at, dry_run=True)
    assert dry.log_rows["rankings"] == theirs * 3 and dry.not_found == []  # three shown items a search
    assert not list(paths.event_log.rglob("*.parquet"))  # a dry run renames nothing
    report = forget(paths, ["u1"], [], at)
    assert report.log_rows == dry.log_rows and report.not_found == []
    sink = ParquetLogSink(paths.event_log)  # the sink starts again: nothing left for it to rename
    sink(delivered(batch))  # and the events come again from Kafka: their ids are taken
    rankings = read_log(paths.event_log, "rankings")
    assert "u1" not in set(rankings["user_id"]) and sink.written == 0
    assert set(rankings["event_id"]) == {e.event_id for e in batch if isinstance(e, RankingEvent) and e.user_id != "u1"}
    assert len(read_log(paths.event_log, "interactions")) == sum(
        isinstance(e, InteractionEvent) and e.user_id != "u1" for e in batch)
    assert not list(paths.event_log.rglob("*.tmp"))


def test_events_on_their_way_are_dropped_up_to_the_erasure_and_later_ones_kept(tmp_path: Path) -> None:
    forgotten = ForgetList(tmp_path / "privacy" / "forgotten.jsonl")
    at = T0 + timedelta(hours=1)
    forgotten.add(["u1"], ["sess-9"], at)
    old = events(10)  # u1 at i = 1 and 8, T0 + minutes
    new = [InteractionEvent(type="click", event_id="late", request_id="r1", timestamp=at + timedelta(seconds=1),
                            user_id="u1", product_id="p0", position=1)]
    kept, dropped = forgotten.keep(old + new, lambda e: e)
    assert dropped == sum(e.user_id == "u1" for e in old) and new[0] in kept
    assert all(e.user_id != "u1" for e in kept[:-1])
    source = tmp_path / "old.jsonl"
    source.write_text("".join(e.model_dump_json() + "\n" for e in old + new))
    dry = import_events(source, tmp_path / "log", progress=False, forget=forgotten, dry_run=True)
    assert dry.forgotten == dropped and dry.written == 0  # a dry run counts what the import leaves out
    report = import_events(source, tmp_path / "log", progress=False, forget=forgotten)
    assert report.forgotten == dropped and report.written == len(old) + 1 - dropped
    assert set(read_log(tmp_path / "log", "interactions").query("user_id == 'u1'")["event_id"]) == {"late"}


@pytest.mark.integration
def test_the_consumers_drop_an_erased_shoppers_events_that_were_still_in_kafka(tmp_path: Path) -> None:
    with LocalBroker(log=tmp_path / "tansu.log") as broker:
        create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        batch = events(14)
        publish(broker, tmp_path / "spool", batch)  # shipped before the erasure, not consumed yet
        forgotten = ForgetList(tmp_path / "forgotten.jsonl")
        forgotten.add(["u1"], [], T0 + timedelta(days=1))
        loop = ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC],
                            ParquetLogSink(tmp_path / "log"), tmp_path / "dead.jsonl", forget=forgotten)
        run_loop(loop)
    theirs = sum(e.user_id == "u1" for e in batch)
    assert loop.forgotten == theirs and loop.consumed == len(batch) - theirs
    assert "u1" not in set(read_log(tmp_path / "log", "rankings")["user_id"])


def forget_while_writing(paths: Home, write, at: datetime):  # type: ignore[no-untyped-def]
    """``write`` (a batch's handling) that runs ``forget`` of u1 from another thread as it starts, gives it a
    second, and then writes: an erasure that does not wait finds none of the batch's rows."""
    import threading

    erasing: list[threading.Thread] = []

    def handle(batch: list[Delivered]) -> None:
        if not erasing:
            erasing.append(threading.Thread(target=forget, args=(paths, ["u1"], [], at)))
            erasing[0].start()
            erasing[0].join(1.0)
        write(batch)

    return handle, erasing


@pytest.mark.integration
def test_an_erasure_waits_for_the_batch_a_consumer_is_writing(tmp_path: Path) -> None:
    """The consumer filters a batch by the erasure list, then writes it: ``events forget`` listing and erasing
    in between found nothing, and the batch then wrote the erased shopper's rows."""
    paths = Home(tmp_path / "home")
    handle, erasing = forget_while_writing(paths, ParquetLogSink(paths.event_log), T0 + timedelta(days=1))
    with LocalBroker(log=tmp_path / "tansu.log") as broker:
        create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
        publish(broker, tmp_path / "spool", events(14))
        loop = ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC], handle,
                            tmp_path / "dead.jsonl", forget=ForgetList(paths.forgotten))
        run_loop(loop)
    erasing[0].join(30)
    assert loop.consumed > 0 and "u1" not in set(read_log(paths.event_log, "rankings")["user_id"])


def test_an_erasure_waits_for_the_batch_an_import_is_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import online_learning.event_import as event_import

    paths = Home(tmp_path / "home")
    source = tmp_path / "old.jsonl"
    source.write_text("".join(e.model_dump_json() + "\n" for e in events(10)))

    class Sink(ParquetLogSink):
        def __call__(self, batch: list[Delivered]) -> None:
            handle(batch)

    sink = Sink(paths.event_log)
    handle, erasing = forget_while_writing(paths, lambda batch: ParquetLogSink.__call__(sink, batch),
                                           T0 + timedelta(days=1))
    monkeypatch.setattr(event_import, "ParquetLogSink", lambda root: sink)
    import_events(source, paths.event_log, progress=False, forget=ForgetList(paths.forgotten))
    erasing[0].join(30)
    assert sink.written > 0 and "u1" not in set(read_log(paths.event_log, "rankings")["user_id"])


def test_an_erasure_waits_only_for_the_batches_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Two consumers whose batches overlap hold the list's lock shared without a gap between them, and
    ``flock`` goes on granting it shared while an erasure waits to hold it alone: the erasure waited as long
    as their backlog lasted. Each thread opens the lock files anew, as another process would."""
    import threading
    import time

    path = tmp_path / "privacy" / "forgotten.jsonl"
    monkeypatch.setattr(ForgetList, "WAIT_WARNING_S", 0.1)
    backlog_over = threading.Event()
    backlog_end = threading.Timer(6.0, backlog_over.set)  # in case the erasure waits for it
    backlog_end.start()

    def consumer(start: float) -> None:
        erased = ForgetList(path)
        time.sleep(start)
        while not backlog_over.is_set():
            with erased.reading():
                time.sleep(0.3)  # a batch written
            time.sleep(0.01)  # commit, and a poll that answers at once

    consumers = [threading.Thread(target=consumer, args=(start,)) for start in (0.0, 0.15)]
    for thread in consumers:
        thread.start()
    time.sleep(0.8)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="online_learning.forget_list"):
        ForgetList(path).add(["u1"], [], T0)
        waited = time.monotonic() - began
        time.sleep(0.3)
    backlog_over.set()
    backlog_end.cancel()
    for thread in consumers:
        thread.join(30)
    assert waited < 2.0  # the batches in flight (0.3 s each), not the 5 s left of the backlog
    assert len([r for r in caplog.records if "waiting for the batches" in r.getMessage()]) <= 1  # said once
    assert len(ForgetList(path)) == 1


def test_an_erasure_waiting_long_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import threading

    path = tmp_path / "privacy" / "forgotten.jsonl"
    monkeypatch.setattr(ForgetList, "WAIT_WARNING_S", 0.1)
    erasing = threading.Thread(target=ForgetList(path).add, args=(["u1"], [], T0))
    with caplog.at_level("WARNING", logger="online_learning.forget_list"):
        with ForgetList(path).reading():  # a slow batch
            erasing.start()
            erasing.join(0.6)
            assert erasing.is_alive()
        erasing.join(30)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: waiting for the batches the consumers and imports are writing (no new batch starts meanwhile)"]


# a consumer's batch (one click of u2, one of u1 before the erasure) filtered by the erasure list at argv[1]
CONSUMER_BATCH = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from online_learning.consumers.base import ConsumerLoop, Delivered
from online_learning.events import InteractionEvent
from online_learning.forget_list import ForgetList
loop = ConsumerLoop("127.0.0.1:1", "g", ["t"], lambda batch: print("handled", len(batch)), Path(sys.argv[2]),
                    forget=ForgetList(Path(sys.argv[1])))
at = datetime(2024, 1, 1, tzinfo=timezone.utc)
batch = [Delivered("t", 0, i, InteractionEvent(type="click", event_id=f"e{i}", request_id="r", product_id="p",
                                               user_id=user, timestamp=at)) for i, user in enumerate(["u2", "u1"])]
print("dropped", loop._filter_and_handle(batch)[1])
print("dropped", loop._filter_and_handle(batch)[1])
"""

# a consumer started with the erasure list at argv[1]: the error it stops with
CONSUMER_START = """
import sys
from pathlib import Path
from core.errors import NotReady
from online_learning.consumers.base import ConsumerLoop
from online_learning.forget_list import ForgetList
loop = ConsumerLoop("127.0.0.1:1", "g", ["t"], lambda batch: print("handled", len(batch)), Path(sys.argv[2]),
                    forget=ForgetList(Path(sys.argv[1])))
try:
    loop.run(idle_exit=0.1)
except NotReady as error:
    print(error.message)
"""


def test_a_consumer_filters_by_an_erasure_list_another_user_made(tmp_path: Path) -> None:
    """``events forget`` run by an operator makes the list and its locks, read-only to the consumers' service
    user (the key made readable to it, as a deployment shares it): a batch took the lock by opening it to
    write, and failed. A list made before it had a gate (none there, none to be made) is read with the list's
    lock alone, said once; without the list's lock, a batch is not written (an erasure would not wait for
    it), and the consumer stops at its start, naming the file and what to do."""
    from tests.helpers import as_another_user

    privacy = tmp_path / "privacy"
    path = privacy / "forgotten.jsonl"
    ForgetList(path).add(["u1"], [], T0 + timedelta(days=1))
    for made in privacy.iterdir():
        made.chmod(0o444)
    privacy.chmod(0o555)
    try:
        run = as_another_user(CONSUMER_BATCH, str(path), str(tmp_path / "dead.jsonl"))
        assert run.returncode == 0 and run.stdout.split() == ["handled", "1", "dropped", "1"] * 2, run.stderr
        assert "may not make it" not in run.stderr
        privacy.chmod(0o755)
        (privacy / "forgotten.jsonl.gate.lock").unlink()
        privacy.chmod(0o555)
        run = as_another_user(CONSUMER_BATCH, str(path), str(tmp_path / "dead.jsonl"))
        assert run.returncode == 0 and run.stdout.split() == ["handled", "1", "dropped", "1"] * 2, run.stderr
        assert run.stderr.count("forgotten.jsonl.gate.lock is not there and this process may not make it") == 1
        privacy.chmod(0o755)
        (privacy / "forgotten.jsonl.lock").unlink()
        privacy.chmod(0o555)
        batch = as_another_user(CONSUMER_BATCH, str(path), str(tmp_path / "dead.jsonl"))
        start = as_another_user(CONSUMER_START, str(path), str(tmp_path / "dead.jsonl"))
    finally:
        privacy.chmod(0o755)
    assert batch.returncode != 0 and "handled" not in batch.stdout
    assert f"NotReady: cannot hold {path}.lock (No such file or directory)" in batch.stderr
    assert start.returncode == 0 and start.stdout.startswith(f"cannot hold {path}.lock"), start.stderr
    assert f"touch {path}.lock {path}.gate.lock" in start.stdout
    assert sorted(p.name for p in privacy.iterdir()) == ["forgotten.jsonl", "forgotten.key"]
    ForgetList(path).add(["u2"], [], T0 + timedelta(days=1))  # an erasure by the owner makes both again
    assert sorted(p.name for p in privacy.iterdir()) == [
        "forgotten.jsonl", "forgotten.jsonl.gate.lock", "forgotten.jsonl.lock", "forgotten.key"]


def test_a_consumer_makes_the_erasure_lists_locks_it_may_make(tmp_path: Path) -> None:
    """A list made before it had a gate, in a folder the consumer may add to: the gate is made, not passed by."""
    path = tmp_path / "privacy" / "forgotten.jsonl"
    ForgetList(path).add(["u1"], [], T0 + timedelta(days=1))
    (tmp_path / "privacy" / "forgotten.jsonl.gate.lock").unlink()
    ForgetList(path).check()
    assert (tmp_path / "privacy" / "forgotten.jsonl.gate.lock").is_file()


def test_a_damaged_line_of_the_erasure_list_is_skipped_and_the_next_erasure_kept(tmp_path: Path) -> None:
    """An ``add`` stopped while it wrote leaves a line cut short: reading the list raised at every batch (the
    consumers and ``events import`` died), and the next ``add`` ran on from it."""
    path = tmp_path / "forgotten.jsonl"
    ForgetList(path).add(["u0"], [], T0 + timedelta(days=1))
    with path.open("a") as handle:
        handle.write('{"id": "ab12')  # cut short
    click = InteractionEvent(type="click", event_id="c1", request_id="r1", timestamp=T0, user_id="u9", product_id="p0")
    assert ForgetList(path).keep([click], lambda e: e) == ([click], 0)
    ForgetList(path).add(["u9"], [], T0 + timedelta(days=1))
    with path.open("a") as handle:
        handle.write("not json\n")  # damaged by hand
    erased = ForgetList(path)
    assert erased.keep([click], lambda e: e) == ([], 1) and len(erased) == 2


def test_a_profile_reset_while_the_consumer_pushes_it_is_pushed_again(tmp_path: Path) -> None:
    """``events forget`` marks the shopper's profile to push while the consumer is pushing it with the erased
    purchases: the consumer then un-marked what it had read, the new mark with it, and the online store kept
    the erased purchases."""
    import sqlite3

    paths = Home(tmp_path / "home")
    online: dict[str, list[str]] = {}

    def push(source: str, frame: pd.DataFrame) -> None:
        if source == "user_activity_push" and not online:  # the push takes a moment: forget runs meanwhile
            forget(paths, ["u1"], [], T0 + timedelta(days=1), kafka=True)
        if source == "user_activity_push":
            online.update({row["user_id"]: row["recent_items"] for row in frame.to_dict("records")})

    features = StreamingFeatures(paths.streaming_state, {"p1": (3, 10.0)}, push)
    bought = InteractionEvent(type="purchase", event_id="b1", request_id="r1", timestamp=T0, user_id="u1",
                              product_id="p1", revenue=10.0)
    features(delivered([bought]))
    assert online["u1"] == ["p1"]  # pushed as read, before the erasure
    features._flush_dirty()  # the consumer's next batch
    assert online["u1"] == []
    legacy = tmp_path / "legacy.sqlite"  # a state made before marks had a generation
    with sqlite3.connect(legacy) as db:
        db.execute("CREATE TABLE dirty (kind TEXT, key TEXT, PRIMARY KEY (kind, key))")
        db.execute("INSERT INTO dirty VALUES ('user', 'u2')")
    pushed = Pushed()
    StreamingFeatures(legacy, {}, pushed)  # pushes what was left marked, at its start
    assert [list(frame["user_id"]) for _, frame in pushed.frames] == [["u2"]]


def _profile_pushes(online: dict[str, list[str]], pushing, landing):  # type: ignore[no-untyped-def]
    """Two pushes of shoppers' profiles into ``online`` (user -> recent items): the consumer's, slow on the network
    (it sets ``pushing``, then lands once ``landing`` is set), and the erasure's own, at once."""
    def slow(source: str, frame: pd.DataFrame) -> None:
        if source == "user_activity_push":
            pushing.set()
            landing.wait(30)
            online.update({row["user_id"]: list(row["recent_items"]) for row in frame.to_dict("records")})

    def fast(source: str, frame: pd.DataFrame) -> None:
        if source == "user_activity_push":
            online.update({row["user_id"]: list(row["recent_items"]) for row in frame.to_dict("records")})

    return slow, fast


def test_a_push_built_before_an_erasure_does_not_land_after_it(tmp_path: Path) -> None:
    """A consumer starting pushes what a failed push left marked (no erasure lock is held there), slowly;
    ``events forget`` meanwhile deletes the purchases, marks the profile and pushes it empty, taking its
    mark: the consumer's push, built before the erasure, landed last, and no mark was left to send the
    empty profile again."""
    import sqlite3
    import threading

    paths = Home(tmp_path / "home")
    products = {"p1": (3, 10.0)}
    online: dict[str, list[str]] = {}
    bought = InteractionEvent(type="purchase", event_id="b1", request_id="r1", timestamp=T0, user_id="u1",
                              product_id="p1", revenue=10.0)

    def down(source: str, frame: pd.DataFrame) -> None:
        raise ConnectionError("the online store is out of reach")

    with pytest.raises(ConnectionError):  # the purchase is counted, its profile left marked
        StreamingFeatures(paths.streaming_state, products, down)(delivered([bought]))
    built, landing = threading.Event(), threading.Event()
    slow, fast = _profile_pushes(online, built, landing)

    starting = threading.Thread(target=lambda: StreamingFeatures(paths.streaming_state, products, slow).db.close())
    starting.start()
    assert built.wait(30)
    reports = []
    erasing = threading.Thread(target=lambda: reports.append(forget(
        paths, ["u1"], [], T0 + timedelta(days=1),
        push=lambda: StreamingFeatures(paths.streaming_state, products, fast).db.close())))
    erasing.start()
    erasing.join(1.0)
    assert erasing.is_alive()  # its push waits for the one in flight
    landing.set()
    starting.join(30)
    erasing.join(30)
    assert reports[0].purchases == 1 and reports[0].profiles == "1 reset in the online store"
    assert online == {"u1": []}
    with sqlite3.connect(paths.streaming_state) as db:
        assert db.execute("SELECT * FROM dirty").fetchall() == []


def test_a_slow_push_holds_off_neither_an_erasure_nor_the_other_consumers(tmp_path: Path) -> None:
    """The streaming consumer pushes a batch after the erasure list's lock is let go: a push slow on the network,
    under the list's lock, held the erasure waiting for it, and the log sink's next batch waited at the gate
    behind the erasure. The erasure's own push still lands last (``<state>.push.lock``)."""
    import threading
    import time

    paths = Home(tmp_path / "home")
    online: dict[str, list[str]] = {}
    pushing, landing = threading.Event(), threading.Event()
    slow, fast = _profile_pushes(online, pushing, landing)

    features = StreamingFeatures(paths.streaming_state, {"p1": (3, 10.0)}, slow)
    stream = ConsumerLoop("127.0.0.1:1", "features", ["t"], features, tmp_path / "dead1.jsonl",
                          forget=ForgetList(paths.forgotten))
    results: list[tuple] = []
    streaming = threading.Thread(target=lambda: results.append(stream._filter_and_handle(delivered(events(20)))))
    streaming.start()
    assert pushing.wait(30)
    reports = []
    erasing = threading.Thread(target=lambda: reports.append(forget(
        paths, ["u0"], [], T0 + timedelta(days=1),
        push=lambda: StreamingFeatures(paths.streaming_state, {"p1": (3, 10.0)}, fast).db.close())))
    erasing.start()
    for _ in range(100):  # listed without waiting for the push; then its own push waits for it
        if len(ForgetList(paths.forgotten)):
            break
        time.sleep(0.05)
    sink = ConsumerLoop("127.0.0.1:1", "sink", ["t"], ParquetLogSink(paths.event_log), tmp_path / "dead2.jsonl",
                        forget=ForgetList(paths.forgotten))
    began = time.monotonic()
    handled, dropped, failed = sink._filter_and_handle(delivered(events(20)))
    assert time.monotonic() - began < 2.0 and failed is None and dropped > 0  # not held behind the push
    assert erasing.is_alive() and streaming.is_alive()
    landing.set()
    streaming.join(30)
    erasing.join(30)
    assert results[0][2] is None and reports[0].profiles == "1 reset in the online store"
    assert online["u0"] == []  # the erasure's push landed after the consumer's


def test_prune_keeps_the_window_and_the_commands_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    paths = Home(tmp_path / "home")
    now = datetime.now(UTC)
    recent, old = events(3), events(3)
    for e in recent:
        object.__setattr__(e, "timestamp", now - timedelta(days=1))
    for e in old:
        object.__setattr__(e, "timestamp", now - timedelta(days=40))
        object.__setattr__(e, "event_id", "old-" + e.event_id)
    pushed = Pushed()
    features = fill(paths, recent + old, pushed)
    dry = prune(paths, 30, now, dry_run=True)
    assert dry.log_days == {"rankings": 1, "interactions": 1} and dry.purchases == 1
    report = prune(paths, 30, now, push=lambda: features._flush_dirty())
    assert report.log_days == dry.log_days and report.profiles == "1 pushed again in the online store"
    assert set(read_log(paths.event_log, "rankings")["event_id"]) == {e.event_id for e in recent
                                                                      if isinstance(e, RankingEvent)}
    assert features.db.execute("SELECT COUNT(*) FROM purchases").fetchone()[0] == 1
    monkeypatch.setenv("SHOPRANK_HOME", str(paths.root))
    monkeypatch.setenv("SHOPRANK_PROGRESS", "false")
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(capsys, "events", "forget", "--user", "u0", "--dry-run")
        assert code == 0 and json.loads(out)["log_rows"]["rankings"] > 0 and json.loads(out)["dry_run"], err
        code, out, err = run_cli(capsys, "events", "forget", "--user", "u0")  # no feature store here: marked
        assert code == 0 and "the streaming consumer pushes them" in json.loads(out)["profiles"], err
        code, out, err = run_cli(capsys, "events", "prune", "--keep-days", "0")
        assert code == 2 and "--keep-days 0 must be in 1..36500" in err
        code, out, err = run_cli(capsys, "events", "forget")
        assert code == 2 and "--user ID" in err
        code, out, err = run_cli(capsys, "events", "forget", "--user", "x" * 129)
        assert code == 2 and "1..128 characters" in err
        # the name a model's metrics give a shopper, now that the erasure made the list's key
        code, out, err = run_cli(capsys, "events", "pseudonym", "--user", "u7")
        expected = ForgetList(paths.forgotten).pseudonym("u7")
        assert code == 0 and expected and json.loads(out)["pseudonyms"] == {"u7": expected}, err
        code, out, err = run_cli(capsys, "events", "pseudonym")
        assert code == 2 and "--user ID" in err
    finally:
        get_settings.cache_clear()


def test_a_dry_run_takes_no_lock_and_makes_nothing(tmp_path: Path) -> None:
    """A dry run of ``forget`` or ``prune`` only reads: it made the event log's folder and its lock, so an
    auditor without the right to write there could not count."""
    paths = Home(tmp_path / "home")
    forget(paths, ["u1"], [], T0, dry_run=True)
    prune(paths, 30, T0, dry_run=True)
    assert not paths.event_log.exists() and not paths.forgotten.parent.exists()
    ParquetLogSink(paths.event_log)(delivered(events(6)))
    (paths.event_log / "_sink.lock").unlink()
    assert forget(paths, ["u1"], [], T0 + timedelta(days=1), dry_run=True).log_rows["rankings"] > 0
    assert prune(paths, 1, T0 + timedelta(days=30), dry_run=True).log_days["rankings"] == 1
    assert not (paths.event_log / "_sink.lock").exists()


# dry runs of forget and prune on the home at argv[1]: what they count
DRY_RUNS = """
import json, sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from core.paths import Home
from online_learning.privacy import forget, prune
from tests.online_learning.test_consumers import T0
paths = Home(Path(sys.argv[1]))
print(json.dumps([asdict(forget(paths, ["u1"], [], T0 + timedelta(days=1), dry_run=True)),
                  asdict(prune(paths, 1, T0 + timedelta(days=30), dry_run=True))]))
"""


def test_a_dry_run_counts_on_a_home_it_may_only_read(tmp_path: Path) -> None:
    """An auditor who may read the home but not write it: a dry run held each spool slot's lock (opened to
    write, made when missing) and opened the streaming state to write (sqlite then made its log beside it,
    and left it, owned by whoever ran it). It counts as a real run would, a server's open segment apart."""
    import subprocess
    import sys

    from tests.helpers import as_another_user

    paths = Home(tmp_path / "home")
    batch = events(35)
    ParquetLogSink(paths.event_log)(delivered(batch))
    StreamingFeatures(paths.streaming_state, {"p1": (3, 10.0)}, Pushed())(delivered(batch))
    served, server = claim_spool(paths.event_spool)  # a running server's slot
    idle, lock = claim_spool(paths.event_spool)  # a stopped server's
    for folder in (served, idle):
        log = EventLog(folder)
        log.append(batch[:9], durable=True)
        log.close()
    lock.close()
    for made in paths.base.rglob("*.lock"):
        if made.name != f"{served.name}.lock":
            made.unlink()  # as a copy of the home, or one made before the locks, has none
    before = sorted(paths.base.rglob("*"))
    try:
        run = subprocess.run([sys.executable, "-c", DRY_RUNS, str(paths.base)], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2], timeout=120)
        assert run.returncode == 0, run.stderr
        counted = json.loads(run.stdout)
        assert sorted(paths.base.rglob("*")) == before  # nothing made, as the owner
        assert counted[0]["purchases"] > 0 and counted[0]["log_rows"]["rankings"] > 0
        assert counted[0]["spool_open"] == 1 and counted[0]["spool_events"] == counted[0]["spool_open_events"] > 0
        assert counted[1]["log_days"]["rankings"] == 1 and counted[1]["spool_open"] == 1
        for live in (False, True):  # a consumer writing the state: its write-ahead log beside it
            consumer = StreamingFeatures(paths.streaming_state, {}, Pushed()) if live else None
            if consumer is not None:
                with consumer.db:
                    consumer.db.execute("INSERT INTO clock VALUES (0, '2024-01-01') ON CONFLICT (id) DO NOTHING")
                assert paths.streaming_state.with_name("state.sqlite-wal").exists()
            try:
                for made in [paths.base, *paths.base.rglob("*")]:
                    made.chmod(0o555 if made.is_dir() else 0o444)
                auditor = as_another_user(DRY_RUNS, str(paths.base))
            finally:
                for made in [paths.base, *paths.base.rglob("*")]:
                    made.chmod(0o755 if made.is_dir() else 0o644)
                if consumer is not None:
                    consumer.db.close()
            assert auditor.returncode == 0 and json.loads(auditor.stdout) == counted, auditor.stderr
    finally:
        server.close()


def test_without_kafka_the_spool_is_erased_but_for_the_segment_a_server_appends_to(tmp_path: Path) -> None:
    paths = Home(tmp_path)
    folder, lock = claim_spool(paths.event_spool)  # a running server's slot
    log = EventLog(folder)
    log.append(events(6))
    report = forget(paths, ["u1"], [], T0 + timedelta(days=1))
    assert (report.spool_events, report.spool_open) == (0, 1)  # its one segment is open
    lines = [json.loads(line) for line in next(folder.glob("segment-*.jsonl")).read_text().splitlines()]
    theirs = sum(line["value"].get("user_id") == "u1" for line in lines)
    assert report.spool_open_events == theirs > 0  # counted, left for a run after a restart
    log.close()
    restarted = EventLog(folder)  # the server restarts, in the same slot: a new segment, the old one closed
    restarted.append(events(1))
    report = forget(paths, ["u1"], [], T0 + timedelta(days=1))
    assert (report.spool_events, report.spool_open, report.spool_open_events) == (theirs, 1, 0)
    restarted.close()
    lock.close()
    left = [json.loads(line) for line in sorted(folder.glob("segment-*.jsonl"))[0].read_text().splitlines()]
    assert len(left) == len(lines) - theirs and all(line["value"].get("user_id") != "u1" for line in left)
    assert prune(paths, 30, T0 + timedelta(days=31)).spool_events == len(left) + len(events(1))  # all older
    assert forget(paths, ["u2"], [], T0, kafka=True).spool_events == 0  # shipped to Kafka: left to the list


def test_a_spool_that_once_shipped_to_kafka_is_erased_and_its_position_kept_true(tmp_path: Path) -> None:
    paths = Home(tmp_path)
    folder, lock = claim_spool(paths.event_spool)
    log = EventLog(folder)
    log.append(events(6))
    log.close()
    lock.close()
    segment = next(folder.glob("segment-*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    shipped_to = sum(len(line) for line in lines[:4])  # Kafka took the first four lines, then it was turned off
    (folder / "shipped.json").write_text(json.dumps({"segment": 1, "offset": shipped_to}))
    before = [json.loads(line) for line in lines[:4]]
    report = forget(paths, ["u1"], [], T0 + timedelta(days=1))
    theirs = sum(json.loads(line)["value"].get("user_id") == "u1" for line in lines)
    assert report.spool_events == theirs > 0 and "u1" not in segment.read_text()
    assert report.not_found == []  # held in the spool only: found, and erased
    offset = json.loads((folder / "shipped.json").read_text())["offset"]
    kept = segment.read_bytes()
    assert kept[:offset].count(b"\n") == sum(line["value"].get("user_id") != "u1" for line in before)
    assert offset == 0 or kept[offset - 1 : offset] == b"\n"  # still at a line's start


def test_a_dry_run_reads_the_state_again_when_a_writer_changed_it_under_the_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its write-ahead log, a dry run reads the state as a file that does not change (no lock); a writer
    may open it and fold its log in meanwhile (a torn read: a wrong count, or 'malformed'): such a read is read
    again."""
    import sqlite3

    from online_learning import privacy
    from online_learning.consumers.streaming_features import open_state

    state = tmp_path / "state.sqlite"
    db = open_state(state)
    with db:
        db.execute("INSERT INTO purchases VALUES ('u1', 'p1', '2024-01-01T00:00:00+00:00', 'e1')")
    db.close()
    assert not state.with_name("state.sqlite-wal").exists()
    real_rows, torn = privacy._rows, iter([sqlite3.DatabaseError("database disk image is malformed")])

    def rows(db: sqlite3.Connection, query: str) -> list[tuple]:
        error = next(torn, None)
        if error is not None:
            db.close()
            raise error
        return real_rows(db, query)

    monkeypatch.setattr(privacy, "_rows", rows)
    assert privacy._purchases_of(state, lambda user, ts: True, read_only=True) == {"e1": "u1"}
    versions = iter([(1, 1, 1, False), (1, 2, 2, False)])  # the file grew during the first read
    real_version = privacy._version
    monkeypatch.setattr(privacy, "_version", lambda path: next(versions, None) or real_version(path))
    assert privacy._purchases_of(state, lambda user, ts: True, read_only=True) == {"e1": "u1"}


def test_an_event_a_server_received_before_the_erasure_is_dropped_whatever_its_timestamp(
        settings, fake_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A client's clock runs a day ahead: its event, accepted before the erasure and still on its way, carries a
    timestamp after it. The server's received time goes with it through the spool, and the consumer drops it."""
    from online_learning.events import parse
    from tests.fakes import HashingEncoder
    from tests.helpers import app_on, ready_client

    home = settings.model_copy(update={"home": tmp_path / "home"})
    ahead = datetime.now(UTC) + timedelta(hours=20)
    click = {"type": "click", "event_id": "e-ahead", "request_id": "r1", "product_id": "p1", "position": 1,
             "user_id": "u1", "timestamp": ahead.isoformat(), "received": "2001-01-01T00:00:00Z"}
    with ready_client(app_on(home, fake_index, HashingEncoder())) as client:
        assert client.post("/v1/events", json=[click]).status_code == 202
        # the fields the server sets are never checked, only replaced: out of range or too long, still accepted
        odd = {**click, "event_id": "e-odd", "received": "0001-01-01T00:00:00+01:00", "key_id": "k" * 500}
        assert client.post("/v1/events", json=[odd]).status_code == 202  # before: 500, then a 422 for the batch
    spooled_events = {record["event_id"]: parse(json.dumps(record["value"]), stored=True)
                      for path in sorted(home.paths.event_spool.rglob("segment-*.jsonl"))
                      for record in map(json.loads, path.read_text().splitlines())}
    spooled = spooled_events["e-ahead"]
    assert spooled.timestamp == ahead and spooled.received is not None  # the server's time, not the one sent
    for event in (spooled, spooled_events["e-odd"]):
        assert datetime.now(UTC) - timedelta(minutes=5) < event.received <= datetime.now(UTC)
    assert spooled_events["e-odd"].key_id is None  # no keys required: none set
    forgotten = ForgetList(tmp_path / "forgotten.jsonl")
    forgotten.add(["u1"], [], datetime.now(UTC))  # erased after it came in, before its timestamp
    later = spooled.model_copy(update={"event_id": "e-later", "received": ahead})
    kept, dropped = forgotten.keep([spooled, later], lambda e: e)
    assert dropped == 1 and kept == [later]  # what reaches a server after the erasure is kept
    ParquetLogSink(tmp_path / "log")(delivered(kept))
    assert "received" not in read_log(tmp_path / "log", "interactions").columns  # the log's columns as they were
    # a file imported is not a server's spool: a time it gives as received is not one, and erases nothing
    back = (datetime.now(UTC) + timedelta(hours=1)).isoformat()  # the shopper came back after the erasure
    source = tmp_path / "history.jsonl"
    source.write_text(json.dumps({**click, "event_id": "e-back", "timestamp": back,
                                  "received": "1999-01-01T00:00:00Z"}) + "\n")
    report = import_events(source, tmp_path / "log", progress=False, forget=forgotten)
    assert report.written == 1 and report.forgotten == 0


def test_lines_appended_while_forget_rewrites_their_file_are_kept(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer appends a dead letter, a server a shadow record, while `forget` rewrites the file without the
    erased shopper's lines: before, a line appended between the rewrite's read and its replace was lost. Each
    append now holds the file's lock shared and the rewrite holds it alone: the append waits, then lands in the
    new file."""
    import threading
    from types import SimpleNamespace

    import online_learning.privacy as privacy

    paths = Home(tmp_path)
    dead, shadow = paths.dead_letters("sink"), paths.shadow / "v2.jsonl"
    loop = ConsumerLoop("localhost:1", "g", [], lambda batch: None, dead)

    def letter(offset: int, user: str) -> None:
        record = SimpleNamespace(topic="t", partition=0, offset=offset,
                                 value=json.dumps({"type": "click", "user_id": user}).encode())
        loop._dead_letter(record, ValueError("not an event"))

    letter(0, "u1")
    letter(1, "u2")
    append_line(shadow, json.dumps({"time": 1.0, "user_id": "u1"}))
    rewrite, appending = privacy.write_text_atomic, []

    def rewrite_while_appending(path: Path, text: str) -> None:
        late = (lambda: letter(2, "u3")) if path == dead else (
            lambda: append_line(shadow, json.dumps({"time": 2.0, "user_id": "u3"})))
        appending.append(threading.Thread(target=late))
        appending[-1].start()
        appending[-1].join(timeout=0.5)  # before: appended by then, to the file about to be replaced
        rewrite(path, text)

    monkeypatch.setattr(privacy, "write_text_atomic", rewrite_while_appending)
    report = forget(paths, ["u1"], [], T0)
    for thread in appending:
        thread.join()
    assert (report.dead_letters, report.shadow_records, len(appending)) == (1, 1, 2)
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [json.loads(one["value"])["user_id"] for one in letters] == ["u2", "u3"] and "time" in letters[0]
    assert [json.loads(line)["user_id"] for line in shadow.read_text().splitlines()] == ["u3"]


def test_forget_matches_an_id_a_dead_letter_holds_as_a_number(tmp_path: Path) -> None:
    """An event sent with a number for its user or session id is refused (a dead letter): before, `forget --user
    12345` compared the number with the text and left it."""
    paths = Home(tmp_path)
    dead = paths.dead_letters("sink")
    dead.parent.mkdir(parents=True)
    values = [{"type": "purchase", "user_id": 12345}, {"type": "click", "user_id": None, "session_id": 77},
              {"type": "click", "user_id": 123456, "session_id": [77]}]
    dead.write_text("".join(json.dumps({"topic": "t", "value": json.dumps(v)}) + "\n" for v in values))
    assert forget(paths, ["12345"], ["77"], T0).dead_letters == 2
    assert [json.loads(json.loads(line)["value"]) for line in dead.read_text().splitlines()] == values[2:]
    dead.write_text("".join(json.dumps({"topic": "t", "value": v}) + "\n" for v in (
        '{"type": "click", "user_id": 1e20}', '{"type": "click", "user_id": 2.50}')))
    assert forget(paths, ["1e20", "2.50"], [], T0).dead_letters == 2  # as written (before: 1e+20 and 2.5)
    assert dead.read_text() == ""
    dead.write_text("".join(json.dumps({"topic": "t", "value": v}) + "\n" for v in (
        '{"type": "click", "user_id": 1e20}', '{"type": "click", "user_id": 2.50}')))
    assert forget(paths, ["1e+20", "2.5"], [], T0).dead_letters == 2  # and as Python writes the number


def test_forget_matches_a_numeric_id_in_a_dead_letter_python_cannot_read_all_of(tmp_path: Path) -> None:
    """Python refuses an integer of over 4,300 digits: one anywhere in a dead letter's event failed the read of
    its numbers as numbers, and the read of them as written was dropped with it, so ``user_id: 12345`` in that
    event was no longer matched (only an id written as a JSON string was looked for)."""
    paths = Home(tmp_path)
    dead = paths.dead_letters("sink")
    dead.parent.mkdir(parents=True)
    values = ['{"type": "click", "user_id": 12345, "position": %s}' % ("9" * 5000),
              '{"type": "click", "user_id": 678, "position": %s}' % ("9" * 5000)]
    dead.write_text("".join(json.dumps({"topic": "t", "value": v}) + "\n" for v in values))
    assert forget(paths, ["12345"], [], T0).dead_letters == 1
    assert [json.loads(line)["value"] for line in dead.read_text().splitlines()] == values[1:]


def test_forget_erases_a_shopper_in_a_log_partition_dated_past_pandas_times(tmp_path: Path) -> None:
    """The log's readers leave out the days after 2262-04-11 (pandas' last), as a file there stops them: forget
    listed the files the same way and left a shopper's rows there. It reads and rewrites with pyarrow, which holds
    those times, so it erases them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = Home(tmp_path)
    files = []
    for day, year in (("2026-11-01", 2026), ("3000-01-01", 3000)):
        file = paths.event_log / "rankings" / f"date={day}" / "hour=00" / "t-p0-1.parquet"
        file.parent.mkdir(parents=True)
        stamps = pa.array([datetime(year, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC"))
        pq.write_table(pa.table({"event_id": ["r1", "r2"], "user_id": ["u1", "u2"], "session_id": ["s1", "s2"],
                                 "timestamp": stamps}), file)
        files.append(file)
    report = forget(paths, ["u1"], [], T0)
    assert report.log_rows["rankings"] == 2 and report.log_files == 2 and report.not_found == []
    assert [pq.read_table(f).column("user_id").to_pylist() for f in files] == [["u2"], ["u2"]]


def test_prune_removes_the_dead_letters_and_set_aside_spool_lines_older_than_the_window(tmp_path: Path) -> None:
    """Before, `events prune` kept dead letters and the spool's lines set aside (corrupt.jsonl) for ever. It goes by
    the event's timestamp when the value reads as an event, else by the line's own ``time`` (a dead letter
    written now has one), else keeps the line and counts it."""
    paths = Home(tmp_path)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    dead = paths.dead_letters("sink")
    dead.parent.mkdir(parents=True)

    def letter(value: str, **more: float) -> str:
        return json.dumps({"topic": "t", "value": value, **more}) + "\n"

    dead.write_text(letter(json.dumps({"type": "click", "timestamp": old.isoformat(), "quantity": "lots"}))
                    + letter(json.dumps({"type": "click", "timestamp": recent.isoformat()}), time=old.timestamp())
                    + letter('{"user_id": "u1", cut', time=old.timestamp())
                    + letter('{"user_id": "u1", cut', time=recent.timestamp())
                    + letter('{"user_id": "u1", cut'))  # no time at all: kept, counted
    aside = paths.event_spool / "slot-0" / "corrupt.jsonl"
    aside.parent.mkdir(parents=True)
    spooled = [json.dumps({"topic": "t", "value": {"user_id": "u1", "timestamp": at.isoformat()}})
               for at in (old, recent)]
    aside.write_text("".join(json.dumps({"segment": 1, "offset": n, "value": value}) + "\n" for n, value in
                             enumerate([*spooled, '\x00{"topic": "t", "value": {"user_id": "u1"'])))
    dry = prune(paths, 30, now, dry_run=True)
    assert (dry.dead_letters, dry.spool_set_aside, dry.undated) == (2, 1, 2)
    assert len(dead.read_text().splitlines()) == 5  # a dry run removes nothing
    assert prune(paths, 30, now) == dry
    assert [json.loads(line).get("time") for line in dead.read_text().splitlines()] == [old.timestamp(),
                                                                                         recent.timestamp(), None]
    assert [json.loads(line)["offset"] for line in aside.read_text().splitlines()] == [1, 2]


def test_a_line_the_spool_set_aside_is_pruned_by_when_it_was_set_aside(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipper sets a line aside because it does not read as an event (torn, garbled), so its value seldom
    dates it: it records when it set it aside. Before, every such line was kept for good as undated."""
    from types import SimpleNamespace

    import online_learning.event_log as event_log

    paths = Home(tmp_path)
    folder = paths.event_spool / "slot-0"
    now = datetime.now(UTC)
    shipper = SimpleNamespace(folder=folder, quarantined=0)
    monkeypatch.setattr(event_log, "time", SimpleNamespace(time=lambda: (now - timedelta(days=40)).timestamp()))
    torn = b'{"topic": "t", "value": {"user_id": "alice", "ti'
    EventLog._set_aside(shipper, [(1, 0, torn)])  # type: ignore[arg-type]
    monkeypatch.undo()
    EventLog._set_aside(shipper, [(1, 50, b'\x00garbled')])  # type: ignore[arg-type]
    report = prune(paths, 30, now)
    assert (report.spool_set_aside, report.undated) == (1, 0)
    assert [json.loads(line)["offset"] for line in (folder / "corrupt.jsonl").read_text().splitlines()] == [50]
