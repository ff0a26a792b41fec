"""What the app holds at run time: the served unit (engine + router), swappable, and why it may not be ready."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.errors import NotReady
from serving.loading import Served

logger = logging.getLogger(__name__)


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
        self._thread = threading.Thread(target=self._run, name="served-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

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
                if stamp in (served.generation if served is not None else None, failed):
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
                error = f"{type(err).__name__}: {err}"
                if error != self.reload_error:  # logged once, not at every poll while it lasts
                    logger.exception("reading or loading the shared serving state failed; the loaded models keep "
                                     "serving, and it is tried again every %.1f s", self._poll_s)
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
            if self._served is None and self.error:  # the first load failed: load anew from the shared state
                try:
                    self._served = self._load(None)
                except Exception as err:
                    self.error = f"{type(err).__name__}: {err}"
                    raise
                self.error = None
                self.reloads += 1
                logger.info("loaded the search engine after a failed start: %s", self._served.engine.versions)
                return self._served, None
            old = self.get()
            if unless is not None and old.generation == unless:
                return old, old
            new = build(old)
            new.carry_counts(old)  # /metrics counters keep counting up across the swap
            self.reloads += 1
            self._served = new
            self.reload_error = None  # the served unit is the shared state's again
        logger.info("swapped engine: %s -> %s", old.engine.versions, new.engine.versions)
        closing = threading.Timer(30.0, old.close)  # in-flight requests finish on the old unit first
        closing.daemon = True  # a process that exits closes nothing more
        closing.start()
        return new, old
