"""Connections spread over the server processes that share a port.

The kernel hands each new connection to one of the processes that accept on the port, and
a keep-alive connection then stays with it: 8 connections over 2 processes split 5/3 or
6/2 (or 8/0), and the busier process's searches queue while the other has a core to spare.
With ``api.rebalance_margin`` > 0 (off by default) each process keeps its requests in flight
in a small table of slots that the processes of one server share (a memory-mapped file in
their metrics folder), and after answering, a process holding at least that many more
requests in flight than its least busy live peer asks the client to close the connection
(``Connection: close``). The client opens a new one, which goes to the process that accepts
it first: the one with time to spare. On 2 cores it evened the split without raising
throughput or lowering p95, and cost CPU at 32 connections (benchmarks/RESULTS.md, server
processes), hence off.

A slot is claimed with a lock on its bytes, held for the life of the process (a process
that dies frees it); a slot whose process is gone is skipped.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
import time
from pathlib import Path

import numpy as np

from core.processes import alive

SLOTS = 64
SLOT_BYTES = 16  # pid, requests in flight: two int64
LIVENESS_S = 1.0  # how often the peers' processes are checked for being alive


class LoadTable:
    """This process's slot, and its peers', in the file at ``path`` (created when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < SLOTS * SLOT_BYTES:
            os.ftruncate(self._fd, SLOTS * SLOT_BYTES)
        self.slot = self._claim()
        self._map = mmap.mmap(self._fd, SLOTS * SLOT_BYTES)
        self._rows = np.frombuffer(self._map, dtype=np.int64).reshape(SLOTS, 2)
        self._rows[self.slot] = (os.getpid(), 0)
        self._peers: list[int] = []
        self._checked = 0.0

    def _claim(self) -> int:
        for slot in range(SLOTS):
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, SLOT_BYTES, slot * SLOT_BYTES, os.SEEK_SET)
            except OSError:
                continue
            return slot
        os.close(self._fd)
        raise RuntimeError(f"all {SLOTS} slots of {self.path} are held: more server processes than it can balance")

    def publish(self, in_flight: int) -> None:
        self._rows[self.slot, 1] = in_flight

    def least_busy_peer(self) -> int | None:
        """Requests in flight in the least busy other live process; None when there is none."""
        now = time.monotonic()
        if now - self._checked > LIVENESS_S:
            pids = self._rows[:, 0]
            self._peers = [s for s in range(SLOTS) if s != self.slot and pids[s] > 0 and alive(int(pids[s]))]
            self._checked = now
        if not self._peers:
            return None
        return int(self._rows[self._peers, 1].min())

    def close(self) -> None:
        self._rows[self.slot] = (0, 0)
        del self._rows
        self._map.close()
        os.close(self._fd)  # releases the slot's lock


class Balancer:
    """Counts this process's requests in flight; says when an answered connection should close."""

    def __init__(self, table: LoadTable | None, margin: int) -> None:
        self.table = table
        self.margin = margin
        self.in_flight = 0
        self.closed = 0  # connections this process asked to close
        self._lock = threading.Lock()

    def enter(self) -> None:
        if self.table is None:  # off: nothing to count on the request path
            return
        with self._lock:
            self.in_flight += 1
            self.table.publish(self.in_flight)

    def leave(self) -> bool:
        """One request answered; True when its connection should close (this process is the busier)."""
        if self.table is None:
            return False
        with self._lock:
            self.in_flight -= 1
            self.table.publish(self.in_flight)
            peer = self.table.least_busy_peer()
            close = peer is not None and self.in_flight >= peer + self.margin
            self.closed += close
            return close

    def close(self) -> None:
        if self.table is not None:
            self.table.close()
            self.table = None


def open_balancer(folder: str | None, processes: int, margin: int) -> Balancer:
    """A balancer over the table in ``folder`` shared by ``processes`` (> 1, margin > 0), else one that never
    closes a connection."""
    if not folder or processes < 2 or margin <= 0:
        return Balancer(None, margin)
    return Balancer(LoadTable(Path(folder) / "in-flight.bin"), margin)
