"""What the app holds at run time: the engine once loaded, or why it is not."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shoprank.engine import SearchEngine
from shoprank.errors import NotReady

logger = logging.getLogger(__name__)


class EngineHolder:
    """Loads the :class:`SearchEngine` in a background thread.

    Liveness (``/healthz``) answers at once; readiness (``/readyz``) and
    searches wait for the load, and report its error if it failed.
    """

    def __init__(self, load: Callable[[], SearchEngine]) -> None:
        self._load = load
        self._engine: SearchEngine | None = None
        self.error: str | None = None
        self.ready = threading.Event()
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
        if self._engine is not None:
            return self._engine
        if self.error:
            raise NotReady(f"the search engine failed to load: {self.error}")
        raise NotReady("the search engine is still loading (index and models); retry shortly")
