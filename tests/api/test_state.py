"""The served unit's holder: a change of the shared state is loaded once, whichever noticed it first; a shutdown
closes every unit once, and serves none loaded after it."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from api.state import ServedHolder
from serving.loading import Served


def test_a_swap_through_this_process_is_not_loaded_again_by_the_watcher() -> None:
    shared = {"generation": "g1"}
    loads: list[str] = []
    building = threading.Event()  # the swap through this process is loading
    release = threading.Event()

    def load(previous: Served | None) -> Served:
        loads.append(shared["generation"])
        if previous is not None and len(loads) == 2:
            building.set()
            release.wait(10)
        unit = SimpleNamespace(versions={"reranker": shared["generation"]}, close=lambda: None,
                               carry_counts=lambda previous: None)
        return Served(unit, SimpleNamespace(close=lambda: None), shared["generation"])  # type: ignore[arg-type]

    followed: list[str] = []
    holder = ServedHolder(load, stamp=lambda: shared["generation"], poll_s=0.02, followed=followed.append)
    holder.start()
    assert holder.ready.wait(10) and holder.get().generation == "g1"
    shared["generation"] = "g2"  # a model activated through this process: it swaps at once...
    swapping = threading.Thread(target=holder.reload)
    swapping.start()
    assert building.wait(10)
    time.sleep(0.3)  # ...while its watcher sees the new generation and waits for the swap lock
    release.set()
    swapping.join(10)
    time.sleep(0.3)
    holder.stop()
    assert holder.get().generation == "g2"
    assert loads == ["g1", "g2"], f"the state was loaded {len(loads)} times: {loads}"
    assert holder.reloads == 1
    assert followed == []  # the swap through this process is not also counted as one it followed


def test_the_watcher_outlives_a_shared_state_it_cannot_read() -> None:
    shared: dict[str, object] = {"generation": "g1", "broken": False}

    def stamp() -> str:
        if shared["broken"]:
            raise OSError("the artifact store's manifest is half written")
        return str(shared["generation"])

    def load(previous: Served | None) -> Served:
        unit = SimpleNamespace(versions={}, close=lambda: None, carry_counts=lambda previous: None)
        return Served(unit, SimpleNamespace(close=lambda: None), str(shared["generation"]))  # type: ignore[arg-type]

    holder = ServedHolder(load, stamp=stamp, poll_s=0.02)
    holder.start()
    assert holder.ready.wait(10)
    shared["broken"] = True  # the first poll fails before any state was read
    time.sleep(0.2)
    assert holder.reload_error and "half written" in holder.reload_error
    shared["broken"], shared["generation"] = False, "g2"  # mended, and a push meanwhile
    deadline = time.monotonic() + 10
    while holder.get().generation != "g2":
        assert time.monotonic() < deadline, "the watcher stopped at the failed read"
        time.sleep(0.02)
    assert holder.reload_error is None
    holder.stop()


def test_a_server_whose_first_load_failed_comes_up_once_the_shared_state_changes() -> None:
    from core.errors import NotReady

    shared = {"generation": "g1"}
    loads: list[str] = []
    followed: list[str] = []

    def load(previous: Served | None) -> Served:
        loads.append(shared["generation"])
        if shared["generation"] == "g1":
            raise RuntimeError("ltr v4 reads features this version does not compute")
        unit = SimpleNamespace(versions={"ltr": shared["generation"]}, close=lambda: None,
                               carry_counts=lambda previous: None)
        return Served(unit, SimpleNamespace(close=lambda: None), shared["generation"])  # type: ignore[arg-type]

    holder = ServedHolder(load, stamp=lambda: shared["generation"], poll_s=0.02, followed=followed.append)
    holder.start()
    assert holder.ready.wait(10)
    time.sleep(0.2)
    with pytest.raises(NotReady, match="v4 reads features"):
        holder.get()
    assert loads == ["g1"]  # not loaded again while nothing changed
    shared["generation"] = "g2"  # a version that loads is activated (the CLI, another process)
    deadline = time.monotonic() + 10
    while holder.error is not None:  # before: the watcher never started, and it stayed not ready for good
        assert time.monotonic() < deadline, "the server never came up"
        time.sleep(0.02)
    assert holder.get().generation == "g2" and loads == ["g1", "g2"]
    shared["generation"] = "g3"
    while holder.get().generation != "g3":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    holder.stop()
    assert followed == ["ltr", "ltr"]  # the activations it followed: nothing -> g2, g2 -> g3


def test_a_state_that_failed_to_load_is_loaded_when_it_comes_back() -> None:
    """g2 fails to load once (memory short beside the served models), is rolled back to g1, then activated
    again: the process follows. Before, it kept g2 as failed and served g1 for good, with the old error shown."""
    shared = {"generation": "g1"}
    failures = ["g2"]

    def load(previous: Served | None) -> Served:
        if shared["generation"] in failures:
            failures.remove(shared["generation"])
            raise MemoryError("both cross-encoders loaded side by side")
        unit = SimpleNamespace(versions={"reranker": shared["generation"]}, close=lambda: None,
                               carry_counts=lambda previous: None)
        return Served(unit, SimpleNamespace(close=lambda: None), shared["generation"])  # type: ignore[arg-type]

    def until(done, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    holder = ServedHolder(load, stamp=lambda: shared["generation"], poll_s=0.02)
    holder.start()
    assert holder.ready.wait(10)
    shared["generation"] = "g2"
    until(lambda: holder.reload_error is not None, "the failed load was not reported")
    assert holder.get().generation == "g1"
    shared["generation"] = "g1"  # rolled back
    until(lambda: holder.reload_error is None, "the error stayed after the rollback to what it serves")
    shared["generation"] = "g2"  # activated again, memory freed
    until(lambda: holder.get().generation == "g2", "the process never followed the state back to g2")
    holder.stop()


def _closing_units(closed: list[str], generation: dict[str, str], loading: threading.Event | None = None,
                   release: threading.Event | None = None):  # type: ignore[no-untyped-def]
    """A load of units named by ``generation["now"]`` that note their close in ``closed``; with ``loading`` and
    ``release``, a reload says it started and waits to be released."""

    def load(previous: Served | None) -> Served:
        name = generation["now"]
        if previous is not None and loading is not None and release is not None:
            loading.set()
            release.wait(10)
        engine = SimpleNamespace(versions={"ltr": name}, close=lambda: closed.append(f"engine {name}"),
                                 carry_counts=lambda previous: None)
        router = SimpleNamespace(close=lambda: closed.append(f"router {name}"), shadow=None)
        return Served(engine, router, name)  # type: ignore[arg-type]

    return load


def _reloading(closed: list[str]) -> tuple[ServedHolder, threading.Event]:
    """A holder serving g1 whose watcher is loading g2 (each unit noting in ``closed`` when it closes), and the
    event that lets that load end."""
    generation = {"now": "g1"}
    loading, release = threading.Event(), threading.Event()
    holder = ServedHolder(_closing_units(closed, generation, loading, release), stamp=lambda: generation["now"],
                          poll_s=0.02)
    holder.start()
    assert holder.ready.wait(10)
    generation["now"] = "g2"
    assert loading.wait(10)
    return holder, release


def test_a_shutdown_during_a_reload_closes_each_unit_once_and_serves_nothing_new() -> None:
    """The watcher is loading another replica's swap when the server shuts down: the shutdown waits for it, the
    unit it loaded is closed instead of served, and the one served (closed by the server) is the last."""
    closed: list[str] = []
    holder, release = _reloading(closed)
    threading.Timer(0.2, release.set).start()
    holder.stop()
    assert closed == ["router g2", "engine g2"] and holder.get().generation == "g1"
    holder.get().close()  # StoreRuntime.close
    time.sleep(0.2)
    assert closed == ["router g2", "engine g2", "router g1", "engine g1"]


def test_a_shutdown_goes_on_when_a_reload_takes_long(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []
    holder, release = _reloading(closed)
    started = time.monotonic()
    holder.stop(wait_s=0.1)
    assert time.monotonic() - started < 5 and "still loading" in caplog.text
    release.set()  # the load ends after the shutdown: what it loaded is closed, never served
    deadline = time.monotonic() + 10
    while closed != ["router g2", "engine g2"]:
        assert time.monotonic() < deadline, closed
        time.sleep(0.02)
    assert holder.get().generation == "g1"


def test_a_unit_a_swap_replaced_is_closed_once_at_shutdown_or_after_its_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    import api.state

    monkeypatch.setattr(api.state, "CLOSE_DELAY_S", 0.3)
    for shutdown_first in (True, False):
        closed: list[str] = []
        generation = {"now": "g1"}
        holder = ServedHolder(_closing_units(closed, generation))
        holder.start()
        assert holder.ready.wait(10)
        generation["now"] = "g2"
        holder.reload()
        if not shutdown_first:
            time.sleep(0.6)  # its delay passed: closed by its timer
        holder.stop()
        assert closed == ["router g1", "engine g1"]  # at shutdown at the latest
        time.sleep(0.6)
        assert closed == ["router g1", "engine g1"]  # and once
