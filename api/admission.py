"""Admission of searches into one server process: shed the costly stages before queueing.

Two limits per process. Above ``shed_at`` searches in flight, a new search is
still served but shed (``Query.shed``): a cross-encoder stage whose scores are all
cached re-ranks from them at its full depth; one that would need the model re-ranks
only its top ``serving.shed_depth`` (marked ``degraded`` "shallow (top N), overload"
where it would have scored more, so the page is not cached; or, at 0, is skipped: the
LambdaMART / first-stage order, marked ``degraded``), so p95 stays near the cheap path's
instead of climbing behind the model. At ``max_in_flight`` (when set) a new search waits for
a slot, its deadline running (so it degrades further once admitted); one still waiting
at its deadline is refused (503, ``Retry-After``), so waiting searches never hold the
server's worker threads for longer than a search's budget.
The share of searches over the limit is a metric
(``shoprank_searches_total{shed="true"}``), and each skipped or shallow stage another
(``shoprank_degraded_total``).

A degrade budget (``serving.skip_share``, 4% by default) goes one step further
for the searches that set the tail: a search that would run a cross-encoder on
uncached pairs while another search is in flight beside it skips that model
(degraded "shed, budget") as long as the skipped searches stay within the
budget's share of all searches admitted (a token bucket: each admitted search
adds the share, a skip takes one whole token).

With ``serving.search_nice`` (off by default; Linux) the threads that answer
searches run at a lower CPU priority than the cross-encoders' micro-batch
threads: under load the model's work gets the cores first, and the rest of every
search (first stage, LambdaMART) waits a little longer.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import Overloaded
from core.hardware import cores_per_process

logger = logging.getLogger(__name__)
_THREAD = threading.local()


def yield_to_models(steps: int) -> None:
    """Lower the calling thread's CPU priority by ``steps`` nice levels, once per thread (a search
    thread keeps it; a thread's priority cannot be raised back without privileges). On Linux
    each thread has its own nice value; elsewhere this does nothing. Threads a lowered thread
    starts inherit its priority (the BM25 pool, started by the first search, runs with the
    searches); the engine and its micro-batchers are loaded in other threads."""
    if steps <= 0 or getattr(_THREAD, "lowered", False) or not sys.platform.startswith("linux"):
        return
    _THREAD.lowered = True
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError as err:  # a sandbox that forbids it: searches run at the default priority
        logger.warning("could not lower a search thread's CPU priority (serving.search_nice): %s", err)


def default_shed_at(processes: int) -> int:
    """Searches in flight in one of ``processes`` server processes above which new ones are
    shed: one per two of its share of the cores (a full-depth teacher batch already uses
    two), at least one."""
    return max(1, cores_per_process(processes) // 2)


class Admission:
    """Counts searches in flight; says whether the next one must shed its costly stages."""

    BURST = 2.0  # tokens kept at most: skips come spread over the load, not saved up while idle

    def __init__(self, max_in_flight: int, shed_at: int, skip_share: float = 0.0) -> None:
        self.shed_at = shed_at
        self.skip_share = skip_share
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self._lock = threading.Lock()
        self.in_flight = 0
        self._tokens = 0.0

    def skip_model(self) -> bool:
        """Whether a search about to run a cross-encoder on uncached pairs skips it instead: only
        while another search is in flight beside it, and within the budget (takes a token)."""
        with self._lock:
            if self.in_flight > 1 and self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
        return False

    @contextmanager
    def enter(self, wait_s: float | None = None) -> Iterator[bool]:
        """Hold a slot for one search; yields True when it should shed the costly stages. A search waiting
        for a slot (``max_in_flight``) counts as in flight: the queue is load, and sheds the next ones. It
        waits at most ``wait_s`` seconds (None: as long as it takes), then :class:`Overloaded`."""
        with self._lock:
            shed = self.in_flight >= self.shed_at
            self.in_flight += 1
        try:
            timeout = None if wait_s is None else max(0.0, wait_s)
            if self._slots is not None and not self._slots.acquire(timeout=timeout):
                raise Overloaded(f"this server process ranks at most {self.max_in_flight} searches at once "
                                 f"(serving.max_in_flight) and none finished within this one's {timeout:.2f} s "
                                 "(what was left of serving.budget_ms); retry after Retry-After, or serve with "
                                 "more processes or replicas", retry_after=1.0)
            if self.skip_share:  # a share of the searches admitted: one refused adds nothing to the budget
                with self._lock:
                    self._tokens = min(self._tokens + self.skip_share, self.BURST)
            try:
                yield shed
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            with self._lock:
                self.in_flight -= 1
