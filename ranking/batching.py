"""Micro-batching: one ONNX run for the cross-encoder work of concurrent requests.

Requests put their (query, texts) on a queue and wait; a worker takes what
arrived within ``max_wait`` seconds (up to ``max_pairs`` pairs), scores it in
one call (the scorer sorts pairs by length, so mixing requests does not add
padding) and hands each request its scores. Under concurrency this trades up
to ``max_wait`` of latency for larger, more efficient matrix products; alone,
a request waits at most ``max_wait``.

The batcher also knows its backlog: the pairs queued or being scored, and the
pairs a second it has been scoring lately (an average over recent batches, so
it slows when other work takes the cores). With ``shed_wait`` set, a request
whose pairs would not all be scored within that time (the backlog, then its own
pairs) is refused at once
(:class:`StageShed`): the caller serves the previous order instead of queueing,
so overload costs quality on the searches that need the model, not latency on
every search. With ``shed_past_deadline`` (on by default) the same estimate
refuses a request whose pairs would not be scored before its deadline: it
would be skipped at the deadline anyway, after waiting for it, and its pairs
would have taken the model's time from the requests behind it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ranking.cross_encoder import StageShed, StageTimeout


@dataclass
class _Job:
    query: str
    texts: Sequence[str]
    future: Future


class MicroBatcher:
    """Wraps a scorer with ``score_pairs(queries, texts)``; same ``score`` API."""

    def __init__(self, scorer, max_pairs: int = 256, max_wait: float = 0.002,  # type: ignore[no-untyped-def]
                 shed_wait: float | None = None, shed_past_deadline: bool = True) -> None:
        self.scorer = scorer
        self.max_pairs = max_pairs
        self.max_wait = max_wait
        self.shed_wait = shed_wait
        self.shed_past_deadline = shed_past_deadline
        self.pending = 0  # pairs queued or being scored
        self._running = 0  # pairs of the batch being scored, and since when (perf_counter)
        self._running_since = 0.0
        self.rate = 0.0  # pairs a second, averaged over recent batches (0: none scored yet)
        self.shed = 0  # requests refused for the backlog (shed_wait or their deadline)
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0
        self.jobs = 0
        self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._worker.start()

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> np.ndarray:
        if not len(texts):
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            wait = self.expected_wait(len(texts))
            if self.shed_wait is not None and wait > self.shed_wait:
                self.shed += 1
                raise StageShed(f"{self.pending} pairs ahead, ~{wait * 1e3:.0f} ms to wait")
            left = None if deadline is None or not self.shed_past_deadline else deadline - time.monotonic()
            if left is not None and wait > left:
                self.shed += 1
                raise StageShed(f"{self.pending} pairs ahead, ~{wait * 1e3:.0f} ms to wait, "
                                f"{max(0.0, left) * 1e3:.0f} ms to the deadline")
            self.pending += len(texts)
        job = _Job(query, texts, Future())
        self._queue.put(job)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return job.future.result(timeout=timeout)
        except TimeoutError as err:
            if job.future.cancel():  # never started: its pairs leave the backlog here
                self._done(len(texts))
            raise StageTimeout("micro-batch did not finish before the deadline") from err

    def expected_wait(self, pairs: int) -> float:
        """Seconds until ``pairs`` more would be scored behind the backlog (0 before the first batch):
        the batch being scored counts for the part of it not yet done, at the recent rate."""
        if self.rate <= 0:
            return 0.0
        done = min(self._running, (time.perf_counter() - self._running_since) * self.rate) if self._running else 0.0
        return (self.pending - done + pairs) / self.rate

    def _done(self, pairs: int) -> None:
        with self._lock:
            self.pending = max(0, self.pending - pairs)

    def _observe(self, pairs: int, seconds: float, weight: float = 0.2) -> None:
        """Fold one batch's pairs a second into the running average."""
        if seconds <= 0:
            return
        rate = pairs / seconds
        self.rate = rate if self.rate == 0 else (1 - weight) * self.rate + weight * rate

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, pairs = [first], len(first.texts)
        until = time.monotonic() + self.max_wait
        while pairs < self.max_pairs:
            try:
                job = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            pairs += len(job.texts)
        return [j for j in jobs if j.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            if not jobs:
                continue
            queries = [j.query for j in jobs for _ in j.texts]
            texts = [t for j in jobs for t in j.texts]
            started = time.perf_counter()
            with self._lock:
                self._running, self._running_since = len(texts), started
            try:
                scores = self.scorer.score_pairs(queries, texts)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                self._running = 0
                self._done(len(texts))
                for job in jobs:
                    job.future.set_exception(err)
                continue
            self._observe(len(texts), time.perf_counter() - started)
            self._running = 0
            self._done(len(texts))
            self.batches += 1
            self.jobs += len(jobs)
            start = 0
            for job in jobs:
                job.future.set_result(scores[start : start + len(job.texts)])
                start += len(job.texts)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)
