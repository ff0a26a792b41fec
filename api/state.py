"""What the app holds at run time: the served unit (engine + router), swappable, and why it may not be ready."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.errors import NotReady
from serving.loading import Served

logger = logging.getLogger(__name__)

CLOSE_DELAY_S = 30.0  # a unit a swap replaced is closed this long after: in-flight requests finish on it first
STOP_WAIT_S = 5.0  # how long a shutdown waits for a swap under way (a reload still loading) before it goes on


class ServedHolder:
    """Loads the :class:`~serving.loading.Served` unit in a background thread and swaps it atomically.

    Liveness (``/healthz``) answers at once; readiness (``/readyz``) and
    searches wait for the first load and report its error if it failed. A swap
    replaces the reference in one assignment: requests that already hold the old
    unit finish on it; new requests get the new one.

    With ``stamp`` and ``poll_s``, a watcher thread compares ``stamp()`` (the
    shared state's fingerprint, :func:`serving.loading.generation`) with the
    loaded unit's every ``poll_s`` seconds and reloads on a change, so a swap
    made by another server process (or ``shoprank models activate``) reaches
    this one. A reload that fails leaves the old unit serving.

    At shutdown, :meth:`stop` ends the swaps: one under way closes the unit it loaded instead of serving it, so
    the unit served then is the last one, and the caller closes it.
    """

    def __init__(self, load: Callable[[Served | None], Served], stamp: Callable[[], str] | None = None,
                 poll_s: float = 0.0, followed: Callable[[str], None] | None = None) -> None:
        """``followed(role)``: called for each role whose served version a reload the watcher made changed."""
        self._load = load
        self._followed = followed
        self._stamp = stamp
        self._poll_s = poll_s
        self._served: Served | None = None
        self.error: str | None = None
        self.reload_error: str | None = None
        self.reloads = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self._closing: dict[int, Served] = {}  # units swaps replaced, not closed yet (by id)
        self._closing_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="served-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """At shutdown: stop watching and swapping. A swap under way is waited for (``wait_s`` at most, so a long
        load never holds shutdown up: that swap closes the unit it loads rather than serving it), and the units
        swaps replaced that still wait for their in-flight requests are closed now (none is left: the server
        answers no more). The unit served when this returns is the last one: the caller closes it."""
        self._stop.set()  # before the lock: a swap that takes it next serves nothing new
        if self._swap_lock.acquire(timeout=wait_s):
            self._swap_lock.release()
        else:
            logger.warning("a reload was still loading %.0f s into shutdown: shutdown goes on, and the unit it "
                           "loads is closed, not served", wait_s)
        with self._closing_lock:
            replaced, self._closing = list(self._closing.values()), {}
        for unit in replaced:
            try:
                unit.close()
            except Exception:  # noqa: BLE001 - the rest of the shutdown goes on
                logger.exception("closing a unit a swap replaced failed at shutdown")

    def _run(self) -> None:
        watching = self._stamp is not None and self._poll_s > 0
        failed = first = None
        try:
            if watching:
                try:
                    first = self._stamp()  # type: ignore[misc]
                except Exception:  # noqa: BLE001 - the watcher reads it again
                    first = None
            self._served = self._load(None)
        except Exception as err:  # noqa: BLE001 - reported by /readyz and every search
            logger.exception("loading the search engine failed; loaded again once the shared state changes")
            self.error = f"{type(err).__name__}: {err}"
            failed = first if watching and self._served is None else None
        finally:
            self.ready.set()
        if watching:  # also after a failed start: an activation of a version that loads brings the server up
            self._watch(failed)

    def _watch(self, failed: str | None = None) -> None:
        """``failed``: a generation that failed to load: tried again only once the shared state changes."""
        while not self._stop.wait(self._poll_s):
            stamp = None
            try:
                stamp = self._stamp()  # type: ignore[misc]
                served = self._served
                if stamp != failed:  # the state moved on from the one that failed: a return to it is tried again
                    failed = None
                if served is not None and stamp == served.generation:
                    self.reload_error = None  # back on the state it serves (a rollback after a failed swap)
                    continue
                if stamp == failed:
                    continue
                new, replaced = self._swap(self._load, unless=stamp)
                if new is not replaced:  # this watcher swapped (not a swap through this process meanwhile)
                    logger.info("shared serving state changed (%s); reloaded", stamp)
                    versions = replaced.engine.versions if replaced is not None else {}
                    for role in sorted(set(versions) | set(new.engine.versions)):
                        if versions.get(role) != new.engine.versions.get(role) and self._followed is not None:
                            self._followed(role)
                failed, self.reload_error = None, None
            except Exception as err:  # noqa: BLE001 - keep serving the loaded unit, and keep watching
                if self._stop.is_set():  # shut down while it loaded: the unit it loaded is closed already
                    return
                error = f"{type(err).__name__}: {err}"
                if error != self.reload_error:  # logged once, not at every poll while it lasts
                    logger.exception("reading or loading the shared serving state failed; the loaded models keep "
                                     "serving: the state is read again every %.1f s, and a state that did not load "
                                     "is loaded again once it changes", self._poll_s)
                self.reload_error = error
                if stamp is not None:  # the state was read, and what it names did not load
                    failed = stamp

    def get(self) -> Served:
        served = self._served
        if served is not None:
            return served
        if self.error:
            raise NotReady(f"the search engine failed to load: {self.error}")
        raise NotReady("the search engine is still loading (index and models); retry shortly")

    def reload(self, unless: str | None = None) -> Served:
        """Load the unit again from the shared state (same index and encoder) and swap it in.
        With ``unless`` (a generation), nothing is loaded when the served unit is of that
        generation once the swap lock is held: a swap through this process loaded it meanwhile."""
        return self.swap(self._load, unless)

    def swap(self, build: Callable[[Served], Served], unless: str | None = None) -> Served:
        """Build a new unit from the current one (e.g. new models, same index) and swap it in
        (with ``unless``: only when the current unit is not of that generation)."""
        return self._swap(build, unless)[0]

    def _swap(self, build: Callable[[Served], Served], unless: str | None = None) -> tuple[Served, Served | None]:
        """:meth:`swap`, and the unit it replaced: the served one itself when nothing was swapped, None after
        a failed start."""
        with self._swap_lock:
            self._check_running()
            if self._served is None and self.error:  # the first load failed: load anew from the shared state
                try:
                    loaded = self._load(None)
                except Exception as err:
                    self.error = f"{type(err).__name__}: {err}"
                    raise
                self._check_running(loaded)
                self._served, self.error = loaded, None
                self.reloads += 1
                logger.info("loaded the search engine after a failed start: %s", self._served.engine.versions)
                return self._served, None
            old = self.get()
            if unless is not None and old.generation == unless:
                return old, old
            new = build(old)
            self._check_running(new)
            new.carry_counts(old)  # /metrics counters keep counting up across the swap
            self.reloads += 1
            self._served = new
            self.reload_error = None  # the served unit is the shared state's again
            self._close_later(old)  # under the lock: a shutdown that takes it next finds the unit to close
        logger.info("swapped engine: %s -> %s", old.engine.versions, new.engine.versions)
        return new, old

    def _check_running(self, loaded: Served | None = None) -> None:
        """Under the swap lock: after :meth:`stop`, a :class:`NotReady`, and the unit just ``loaded`` is closed
        (never served: the shutdown closed, or closes, the one served)."""
        if not self._stop.is_set():
            return
        if loaded is not None:
            loaded.close()
        raise NotReady("the server is shutting down; nothing is swapped")

    def _close_later(self, unit: Served) -> None:
        """Close ``unit`` (one a swap replaced) in :data:`CLOSE_DELAY_S`, or at :meth:`stop` if that comes first:
        once either way."""
        with self._closing_lock:
            self._closing[id(unit)] = unit

        def close() -> None:
            with self._closing_lock:
                if self._closing.pop(id(unit), None) is None:  # closed by stop() already
                    return
            unit.close()

        closing = threading.Timer(CLOSE_DELAY_S, close)
        closing.daemon = True  # a process that exits without stop() closes nothing more
        closing.start()
