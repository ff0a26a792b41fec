"""``shoprank cluster status|down|up`` over a state file that outlived its topology (a crash, a reboot): a
process that took a piece's id is not the piece, and is never signalled."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.errors import Conflict
from core.processes import start_time
from core.settings import Settings, get_settings
from shoprank.layout import Layout, Piece
from shoprank.topology import Topology
from tests.helpers import run_cli


@pytest.fixture()
def stranger() -> Iterator[subprocess.Popen]:
    """An unrelated process in a session of its own (``setsid sleep``): what a killed piece's id may name later."""
    process = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def write_state(home: Path, pid: int, started: str | None) -> Path:
    """A state file naming ``pid`` as the topology's Redis (``started``: None writes no start time, as
    an older ShopRank did)."""
    layout = Layout(18080, [18081], 18082, 18083)
    layout.pieces["redis"] = Piece("redis", ["redis-server"], 18082, pid, started=started)
    data = layout.to_json()
    if started is None:
        del data["pieces"]["redis"]["started"]  # type: ignore[index]
    state = home / "cluster" / "state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(data))
    return state


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SHOPRANK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_a_process_that_took_a_pieces_id_is_not_the_piece(home: Path, stranger: subprocess.Popen,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    started = start_time(stranger.pid)
    assert started is not None
    state = write_state(home, stranger.pid, f"{started}0")  # the piece started at another time
    code, out, _ = run_cli(capsys, "cluster", "status")
    assert code == 0 and json.loads(out)["pieces"]["redis"]["alive"] is False
    code, out, _ = run_cli(capsys, "cluster", "down")
    assert code == 0 and json.loads(out) == {"stopped": []}
    assert stranger.poll() is None, "cluster down signalled a process that is not its piece"
    assert not state.is_file()
    # `up` goes on to start its pieces (the first one fails here, so nothing starts)
    write_state(home, stranger.pid, f"{started}0")
    monkeypatch.setattr(Topology, "start_redis", lambda self: (_ for _ in ()).throw(RuntimeError("redis starts")))
    with pytest.raises(RuntimeError, match="redis starts"):
        Topology(Settings(home=home), replicas=1).up()
    assert stranger.poll() is None

def test_a_state_file_without_start_times_signals_nothing_and_says_so(home: Path, stranger: subprocess.Popen,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    state = write_state(home, stranger.pid, None)
    code, out, _ = run_cli(capsys, "cluster", "status")
    redis = json.loads(out)["pieces"]["redis"]
    assert code == 0 and redis["alive"] is None and "names no start time for redis" in redis["note"]
    with pytest.raises(Conflict, match=f"{{'redis': {stranger.pid}}}, without their start times"):
        Topology(Settings(home=home), replicas=1).up()
    code, out, err = run_cli(capsys, "cluster", "down")
    assert code == 0 and json.loads(out)["stopped"] == [] and "redis" in json.loads(out)["not_signalled"]
    assert stranger.poll() is None, "cluster down signalled a process it cannot tell to be its piece"
    assert not state.is_file()  # forgotten: `up` starts a topology now


EDITED = {"port": 18080, "replicas": [18081], "redis_port": 18082, "broker_port": 18083,
          "pieces": {"redis": {"name": "redis", "argv": ["redis-server"], "port": 18082, "pid": 1, "env": {},
                               "started": "1"}}}


@pytest.mark.parametrize("text", ["", "{broken", '{"port": 18080}', "[]", json.dumps({**EDITED, "pieces": []}),
                                  json.dumps({**EDITED, "pieces": {"redis": {**EDITED["pieces"]["redis"],
                                                                             "pid": "123"}}}),
                                  json.dumps({**EDITED, "replicas": "18081"}), json.dumps({**EDITED, "port": True})])
def test_a_damaged_state_file_is_named_not_a_traceback(home: Path, text: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    state = home / "cluster" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(text)
    for verb in ("status", "down", "up"):
        # before: JSONDecodeError, KeyError 'replicas', TypeError; with the right keys edited by hand, an
        # AttributeError ("pieces": []), or a TypeError comparing a pid of text
        code, _, err = run_cli(capsys, "cluster", verb)
        assert code == 2 and "Traceback" not in err, (verb, err)
        assert err.strip().startswith(f"error: {state} is not a topology's state") and "move it away" in err, err
    assert state.read_text() == text


def test_down_refuses_while_up_starts_the_pieces(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`cluster down` from another terminal while `up` builds the index: refused, rather than stopping Redis and
    the broker under `up`, which then went on and said it was up. Pieces are stand-in ``sleep`` processes."""
    topology = Topology(Settings(home=home), replicas=1)
    sleep = ["sleep", "120"]
    monkeypatch.setattr(topology, "start_redis", lambda: topology._spawn(Piece("redis", sleep)))
    monkeypatch.setattr(topology, "start_broker", lambda: topology._spawn(Piece("broker", sleep)))
    monkeypatch.setattr(topology, "stores", lambda: [])
    monkeypatch.setattr(topology, "feature_stores", lambda: [])
    downs: list[tuple[int, str]] = []
    monkeypatch.setattr(topology, "_build_index", lambda: downs.append(run_cli(capsys, "cluster", "down")[::2]))
    monkeypatch.setattr(topology, "start_replica", lambda i, wait=True: topology._spawn(Piece(f"replica-{i}", sleep)))
    monkeypatch.setattr(topology, "wait_replica", lambda i, process=None, seconds=300: None)
    monkeypatch.setattr(topology, "start_haproxy", lambda: topology._spawn(Piece("haproxy", sleep)))
    monkeypatch.setattr(topology, "wait_balanced", lambda seconds=30: None)
    monkeypatch.setattr("shoprank.topology.check_catalog_to_build", lambda settings: None)
    monkeypatch.setattr("shoprank.topology.httpx.get", lambda *a, **k: (_ for _ in ()).throw(httpx.ConnectError("")))
    try:
        summary = topology.up()
        assert len(downs) == 1 and downs[0][0] == 2 and "`shoprank cluster up` is in progress" in downs[0][1], downs
        assert all(piece["alive"] for piece in summary["pieces"].values())  # before: Redis and the broker stopped
    finally:
        topology.down()
    code, out, err = run_cli(capsys, "cluster", "down")  # once `up` is done, `down` takes the lock
    assert code == 2 and "no topology runs" in err
