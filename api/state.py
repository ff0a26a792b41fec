"""What the app holds at run time: the engine (swappable) and why it may not be ready."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shoprank.engine import SearchEngine
from shoprank.errors import NotReady

logger = logging.getLogger(__name__)


class EngineHolder:
    """Loads the :class:`SearchEngine` in a background thread and swaps it atomically.

    Liveness (``/healthz``) answers at once; readiness (``/readyz``) and
    searches wait for the first load and report its error if it failed. A swap
    replaces the reference in one assignment: requests that already hold the old
    engine finish on it; new requests get the new one.
    """

    def __init__(self, load: Callable[[], SearchEngine]) -> None:
        self._load = load
        self._engine: SearchEngine | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self._swap_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="engine-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._engine = self._load()
        except Exception as err:  # noqa: BLE001 - reported by /readyz and every search
            logger.exception("loading the search engine failed")
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.ready.set()

    def get(self) -> SearchEngine:
        engine = self._engine
        if engine is not None:
            return engine
        if self.error:
            raise NotReady(f"the search engine failed to load: {self.error}")
        raise NotReady("the search engine is still loading (index and models); retry shortly")

    def rebuild(self, build: Callable[[SearchEngine], SearchEngine]) -> SearchEngine:
        """Build a new engine from the current one (e.g. new models, same index) and swap it in."""
        with self._swap_lock:
            old = self.get()
            new = build(old)
            self._engine = new
        logger.info("swapped engine: %s -> %s", old.versions, new.versions)
        threading.Timer(30.0, old.close).start()  # in-flight requests finish on the old engine first
        return new
