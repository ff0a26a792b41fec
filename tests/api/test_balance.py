"""Connections handed back by the busier of the server processes on one port (api/balance.py),
with a real second process holding its slot of the shared table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from api import balance
from api.balance import Balancer, LoadTable, open_balancer
from api.main import create_app
from core.settings import Settings
from serving.loading import Served

ROOT = Path(__file__).resolve().parents[2]
PEER = """
import sys
from pathlib import Path
from api.balance import LoadTable
table = LoadTable(Path(sys.argv[1]))
print(table.slot, flush=True)
for line in sys.stdin:  # each line: the requests in flight to publish; end of input: leave
    table.publish(int(line))
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


def publish(process: subprocess.Popen[str], in_flight: int) -> None:
    process.stdin.write(f"{in_flight}\n")  # type: ignore[union-attr]
    process.stdin.flush()  # type: ignore[union-attr]
    assert process.stdout.readline().strip() == "ok"  # type: ignore[union-attr]


def test_the_busier_process_closes_and_the_less_busy_one_keeps(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(balance, "LIVENESS_S", 0.0)
    path = tmp_path / "in-flight.bin"
    with peer(path) as other:
        mine = Balancer(LoadTable(path), margin=1)
        assert mine.table is not None and mine.table.slot == 1  # the peer holds slot 0
        publish(other, 2)
        for _ in range(4):
            mine.enter()
        assert mine.leave()  # 3 left in flight here, 2 there: hand this connection back
        assert not mine.leave()  # 2 and 2
        publish(other, 0)
        assert mine.leave()  # 1 against 0
        publish(other, 5)
        assert not mine.leave()  # 0 against 5: the peer is the busier one
        assert mine.closed == 2
        mine.enter()
        mine.enter()
        publish(other, 0)
    assert not mine.leave(), "a peer that has left still counted"  # its process is gone
    mine.close()


def test_a_slot_freed_by_a_process_that_died_is_claimed_again(tmp_path: Path) -> None:
    path = tmp_path / "in-flight.bin"
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
        alone.enter()
        alone.enter()
        assert not alone.leave()
    assert not (tmp_path / "in-flight.bin").exists()


def test_a_response_asks_the_client_to_close_when_this_process_is_the_busier(tmp_path: Path,
                                                                             settings: Settings) -> None:
    def not_loaded(_: Settings, previous: Served | None) -> Served:
        raise RuntimeError("no engine in this test")  # the middleware answers /healthz without one

    path = tmp_path / "in-flight.bin"
    with peer(path) as other, TestClient(create_app(settings, loader=not_loaded)) as client:
        publish(other, 0)
        busy = Balancer(LoadTable(path), margin=1)
        busy.in_flight = 1  # another request still in flight here
        client.app.state.balancer = busy  # type: ignore[attr-defined]
        answered = client.get("/healthz")
        assert answered.status_code == 200 and answered.headers["connection"] == "close"
        publish(other, 1)
        answered = client.get("/healthz")
        assert answered.status_code == 200 and answered.headers.get("connection") != "close"
        assert "shoprank_connections_rebalanced_total 1.0" in client.get("/metrics").text
        busy.close()
