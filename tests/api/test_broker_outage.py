"""The real broker stops mid-load and comes back: every event the API accepted arrives once.

Load (searches, which log impressions, and click batches on ``/v1/events``) runs
from two threads the whole time. The consumer (the Parquet log sink, a real
Kafka consumer group) drains what was sent before the stop, since Tansu keeps
messages in memory only and forgets them on a restart; production Kafka keeps
them; for the same reason the sink consumer is restarted with the broker (an
empty Tansu starts offsets from 0 again). While the broker is down the API keeps
answering 202 (events land in the durable local spool); after the restart the
spool is replayed in order and the sink, de-duplicating by event id, ends with
exactly the accepted set.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.service_settings import EventSettings
from core.settings import Settings
from online_learning.consumers.base import ConsumerLoop
from online_learning.consumers.log_sink import ParquetLogSink, read_log
from online_learning.events import INTERACTIONS_TOPIC, RANKINGS_TOPIC
from online_learning.local_broker import LocalBroker, create_topics
from tests.helpers import app_on

pytestmark = pytest.mark.integration


class Load:
    """Clicks and searches in a loop until stopped; remembers what was accepted."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.clicks: list[str] = []
        self.searches: list[str] = []
        self.failures: list[int] = []
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.busy = 0  # requests in flight
        self.threads = [threading.Thread(target=self._clicks, daemon=True),
                        threading.Thread(target=self._searches, daemon=True)]

    def start(self) -> Load:
        self.running.set()
        for thread in self.threads:
            thread.start()
        return self

    def _clicks(self) -> None:
        i = 0
        while not self.stopped.is_set():
            if not self.running.wait(0.05):
                continue
            ids = [f"c{i}-{j}" for j in range(5)]
            body = [{"type": "click", "event_id": e, "request_id": f"r{i}", "product_id": "P100001", "position": 1,
                     "user_id": f"u{i % 13}"} for e in ids]
            with self._request():
                response = self.client.post("/v1/events", json=body)
                with self.lock:
                    (self.clicks.extend(ids) if response.status_code == 202
                     else self.failures.append(response.status_code))
            i += 1
            time.sleep(0.01)

    def _searches(self) -> None:
        queries = ["drill", "garden hose", "led bulb", "paint roller"]
        i = 0
        while not self.stopped.is_set():
            if not self.running.wait(0.05):
                continue
            with self._request():
                response = self.client.post("/v1/search", json={"query": queries[i % len(queries)], "k": 5,
                                                                 "user_id": f"u{i % 13}"})
                with self.lock:
                    (self.searches.append(response.json()["request_id"]) if response.status_code == 200
                     else self.failures.append(response.status_code))
            i += 1

    @contextlib.contextmanager
    def _request(self):  # type: ignore[no-untyped-def]
        with self.lock:
            self.busy += 1
        try:
            yield
        finally:
            with self.lock:
                self.busy -= 1

    def pause(self) -> None:
        """Stop sending and wait for the requests in flight to be answered."""
        self.running.clear()
        wait_for(lambda: self.busy == 0, 60, "requests in flight")

    def accepted(self) -> tuple[set[str], set[str]]:
        with self.lock:
            return set(self.clicks), set(self.searches)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.clicks), len(self.searches)

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sunk(root: Path) -> tuple[list[str], list[str]]:
    """Click event ids as written (no de-duplication on read) and the request ids of impressions."""
    files = sorted((root / "interactions").rglob("*.parquet"))
    clicks = pd.concat([pd.read_parquet(f, columns=["event_id"]) for f in files]) if files else pd.DataFrame()
    rankings = read_log(root, "rankings")
    return (clicks["event_id"].tolist() if len(clicks) else [],
            rankings["request_id"].drop_duplicates().tolist() if len(rankings) else [])


def test_broker_stops_mid_load_and_nothing_accepted_is_lost(tmp_path: Path, settings: Settings, real_index,  # type: ignore[no-untyped-def]
                                                            real_encoder) -> None:
    broker = LocalBroker(log=tmp_path / "tansu.log").start()
    create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
    sink_root = tmp_path / "offline-log"

    def start_consumer() -> tuple[ConsumerLoop, threading.Thread]:
        loop = ConsumerLoop(broker.bootstrap, "sink", [RANKINGS_TOPIC, INTERACTIONS_TOPIC],
                            ParquetLogSink(sink_root), dead_letters=tmp_path / "dead.jsonl")
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        return loop, thread

    loop, consumer = start_consumer()
    served = settings.model_copy(update={"home": tmp_path / "home",
                                         "events": EventSettings(kafka_bootstrap=broker.bootstrap)})
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "cache").symlink_to(settings.paths.cache.resolve(), target_is_directory=True)
    app = app_on(served, real_index, real_encoder)
    try:
        with TestClient(app) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200, 60, "readiness")
            load = Load(client).start()
            wait_for(lambda: load.counts()[0] >= 100, 60, "load before the outage")
            # let the consumer drain, then stop the broker while the load resumes
            load.pause()
            before = load.counts()
            clicks_before, searches_before = load.accepted()
            wait_for(lambda: app.state.event_log.pending() == 0, 60, "the shipper to catch up")
            wait_for(lambda: set(sunk(sink_root)[0]) >= clicks_before and set(sunk(sink_root)[1]) >= searches_before,
                     90, "the sink to drain")
            # Tansu restarts empty, with offsets from 0 again; a real cluster keeps its log and offsets.
            # A consumer that outlives such a restart would fetch from its old (now meaningless) offsets,
            # so the sink is restarted with the broker, as a process restarted with it would be.
            loop.stop()
            consumer.join(timeout=30)
            broker.stop()
            load.running.set()
            wait_for(lambda: load.counts()[0] >= before[0] + 150, 60, "load while the broker is down")
            during = load.counts()
            assert app.state.event_log.pending() > 0, "events accepted during the outage must wait in the spool"
            broker.start()  # same port, empty (memory storage)
            create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
            loop, consumer = start_consumer()
            wait_for(lambda: load.counts()[0] >= during[0] + 100, 60, "load after the restart")
            load.stop()
            wait_for(lambda: app.state.event_log.pending() == 0, 90, "the spool to be replayed")
            accepted_clicks, accepted_searches = set(load.clicks), set(load.searches)
            wait_for(lambda: set(sunk(sink_root)[0]) >= accepted_clicks
                     and set(sunk(sink_root)[1]) >= accepted_searches, 120, "every accepted event in the sink")
    finally:
        loop.stop()
        consumer.join(timeout=30)
        broker.stop()
    clicks, impressions = sunk(sink_root)
    assert not load.failures, f"requests failed during the outage: {load.failures[:5]}"
    assert len(clicks) == len(set(clicks)), "the sink holds a click twice"
    assert set(clicks) == accepted_clicks  # nothing lost, nothing invented
    assert set(impressions) == accepted_searches
    print(f"accepted {len(accepted_clicks)} clicks + {len(accepted_searches)} impressions "
          f"({during[0] - before[0]} clicks during the outage); received each exactly once")
