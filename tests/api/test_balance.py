"""Connections handed back by the server process serving more of them (api/balance.py),
with a real second process holding its slot of the shared table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api import balance
from api.balance import Balancer, LoadTable, open_balancer
from api.main import create_app
from core.settings import Settings
from serving.loading import Served

ROOT = Path(__file__).resolve().parents[2]
PEER = """
import sys, time
from pathlib import Path
from api.balance import LoadTable
table = LoadTable(Path(sys.argv[1]))
print(table.slot, flush=True)
for line in sys.stdin:  # each line: the connections to publish [in flight, seconds until the others age out]
    connections, *rest = line.split()
    idle_at = time.monotonic() + float(rest[1]) if rest else None
    table.publish(int(connections), int(rest[0]) if rest else 0, idle_at)
    print("ok", flush=True)
"""


@contextmanager
def peer(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another server process's slot in the table at ``path``; write a count to its stdin to publish it."""
    process = subprocess.Popen([sys.executable, "-c", PEER, str(path)], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline().strip().isdigit()
    try:
        yield process
    finally:
        if process.poll() is None:
            process.stdin.close()  # type: ignore[union-attr]
            process.wait(timeout=10)


def publish(process: subprocess.Popen[str], connections: int, in_flight: int | None = None,
            idle_in_s: float = 0.0) -> None:
    """The peer serves ``connections`` (``in_flight`` of them in flight, the others counting for ``idle_in_s``;
    None: all counting for a connection window)."""
    line = f"{connections}" if in_flight is None else f"{connections} {in_flight} {idle_in_s}"
    process.stdin.write(line + "\n")  # type: ignore[union-attr]
    process.stdin.flush()  # type: ignore[union-attr]
    assert process.stdout.readline().strip() == "ok"  # type: ignore[union-attr]


def answer(balancer: Balancer, *connections: int) -> list[bool]:
    """One request on each of ``connections`` (client ports), in turn; whether each was asked to close."""
    closed = []
    for port in connections:
        balancer.enter(("127.0.0.1", port))
        closed.append(balancer.leave(("127.0.0.1", port)))
    return closed


def test_the_process_serving_more_connections_hands_them_back_until_the_split_is_even(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(balance, "LIVENESS_S", 0.0)
    path = tmp_path / "connections.bin"
    with peer(path) as other:
        mine = Balancer(LoadTable(path), margin=1)
        assert mine.table is not None and mine.table.slot == 1  # the peer holds slot 0
        publish(other, 0)
        # a pool opened at once, all of it landing here: the second connection goes back (2 against 0)
        assert answer(mine, 1, 2) == [False, True]
        assert mine.served() == 1  # the one handed back no longer counts here
        publish(other, 1)  # the client reopened it, on the peer
        assert answer(mine, 3, 1, 3) == [False] * 3, "a split within the margin (2 against 1) still handed back"
        publish(other, 0)  # the peer's connection went idle
        assert answer(mine, 1) == [True]  # 2 against 0
        assert mine.closed == 2
        publish(other, 5)
        assert answer(mine, 5, 6) == [False, False]  # the peer is the busier one
    assert answer(mine, 7) == [False], "a peer that has left still counted"
    mine.close()


def test_a_peer_whose_clients_left_counts_only_its_requests_in_flight(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A process publishes when it serves a request: once its clients leave it serves none, and its last count
    must not keep it looking busy (its peers would never hand connections back)."""
    monkeypatch.setattr(balance, "LIVENESS_S", 0.0)
    path = tmp_path / "connections.bin"
    with peer(path) as other:
        mine = Balancer(LoadTable(path), margin=1)
        publish(other, 6, in_flight=0, idle_in_s=10.0)  # six connections answered just now
        assert answer(mine, 1, 2) == [False, False]
        publish(other, 6, in_flight=0, idle_in_s=-0.5)  # the last of them answered longer than the window ago
        assert answer(mine, 1, 2) == [True, False]  # 2 against 0: one goes back
        publish(other, 6, in_flight=2, idle_in_s=-0.5)  # two slow searches still in flight there
        assert answer(mine, 2, 3) == [False, False]  # 2 against 2
    mine.close()


def test_a_connection_counts_while_its_request_is_in_flight_and_for_a_window_after(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = [100.0]
    monkeypatch.setattr(balance.time, "monotonic", lambda: clock[0])
    mine = Balancer(LoadTable(tmp_path / "connections.bin"), margin=1, window_s=2.0)
    mine.enter(("127.0.0.1", 1))  # a slow search: in flight for longer than the window
    answer(mine, 2)
    clock[0] += 1.0
    assert mine.served() == 2
    clock[0] += 1.5  # connection 2 idle for 2.5 s: it no longer counts; connection 1 is still in flight
    assert mine.served() == 1
    assert not mine.leave(("127.0.0.1", 1))  # no peer: never closes
    clock[0] += 2.5
    assert mine.served() == 0
    mine.enter(None)  # a connection it cannot tell apart (behind a proxy's X-Forwarded-For): not counted
    assert not mine.leave(None) and mine.served() == 0
    mine.close()


def test_a_slot_freed_by_a_process_that_died_is_claimed_again(tmp_path: Path) -> None:
    path = tmp_path / "connections.bin"
    with peer(path) as first:
        publish(first, 7)
        first.kill()
        first.wait(timeout=10)
        with peer(path) as second:  # claims slot 0 again and starts at 0 in flight
            table = LoadTable(path)
            assert table.slot == 1
            assert table.least_busy_peer() == 0
            publish(second, 3)
            assert table.least_busy_peer() == 3
            table.close()


def test_one_process_or_margin_zero_never_closes(tmp_path: Path) -> None:
    for folder, processes, margin in ((None, 2, 1), (str(tmp_path), 1, 1), (str(tmp_path), 2, 0)):
        alone = open_balancer(folder, processes, margin)
        assert alone.table is None
        assert answer(alone, 1, 2, 3, 4) == [False] * 4
    assert not (tmp_path / "connections.bin").exists()


def test_a_response_asks_the_client_to_close_when_this_process_serves_more_connections(tmp_path: Path,
                                                                             settings: Settings) -> None:
    def not_loaded(_: Settings, previous: Served | None) -> Served:
        raise RuntimeError("no engine in this test")  # the middleware answers /healthz without one

    path = tmp_path / "connections.bin"
    with peer(path) as other, TestClient(create_app(settings, loader=not_loaded)) as client:
        publish(other, 0)
        busy = Balancer(LoadTable(path), margin=1)
        answer(busy, 1)  # another client connection served here
        client.app.state.balancer = busy  # type: ignore[attr-defined]
        answered = client.get("/healthz")
        assert answered.status_code == 200 and answered.headers["connection"] == "close"
        publish(other, 1)
        answered = client.get("/healthz")
        assert answered.status_code == 200 and answered.headers.get("connection") != "close"
        assert "shoprank_connections_rebalanced_total 1.0" in client.get("/metrics").text
        busy.close()


def test_a_process_loading_beside_ready_peers_claims_its_slot_once_loaded(tmp_path: Path, settings: Settings,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Respawned beside ready peers, a process takes connections once loaded: until then it holds no slot in the
    table, else its peers would read it as their least busy one (0 connections) and close most of theirs."""
    import threading

    from api import main

    monkeypatch.setattr(main, "shared_folder", lambda: tmp_path)
    monkeypatch.setattr(main, "peer_ready", lambda folder: True)
    loading, loaded = threading.Event(), threading.Event()

    def slow(_: Settings, previous: Served | None) -> Served:
        loading.set()
        loaded.wait(10)
        raise RuntimeError("no engine in this test")

    def claimed() -> bool:  # a slot of the table names this process
        path = tmp_path / "connections.bin"
        return path.is_file() and os.getpid() in np.fromfile(path, dtype=np.int64).reshape(-1, 2)[:, 0]

    two = settings.model_copy(update={"api": settings.api.model_copy(update={"workers": 2, "rebalance_margin": 1})})
    client = TestClient(create_app(two, loader=slow))
    starting = threading.Thread(target=client.__enter__)
    starting.start()
    try:
        assert loading.wait(10)
        time.sleep(0.2)
        assert not claimed()  # before: claimed, and read 0 connections, while it loaded
    finally:
        loaded.set()
        starting.join(10)
    try:
        assert claimed() and client.app.state.balancer.table is not None  # type: ignore[attr-defined]
    finally:
        client.__exit__(None, None, None)
    assert not claimed()
