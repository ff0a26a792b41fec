"""Connections spread over the server processes that share a port.

The kernel hands each new connection to one of the processes that accept on the port, and
a keep-alive connection then stays with it. A process's event loop accepts every connection
waiting when it wakes, so a client that opens its pool at once (8 connections) often finds
6, or all 8, on one process while the other's core idles. With ``api.rebalance_margin`` > 0
each process counts the client connections it serves (those with a request in flight or
answered within the last ``CONNECTION_WINDOW_S``) in a small table of slots that the
processes of one server share (a memory-mapped file in their metrics folder). After
answering, a process holding more than ``margin`` connections above its least busy live
peer asks the client to close that one (``Connection: close``). The client opens a new
connection, which goes to the process that accepts it first: the one whose event loop is
free. Once the split is even within the margin no connection is closed, so a steady pool
costs a few reconnects, not one per busy moment.

A slot is claimed with a lock on its bytes, held for the life of the process (a process
that dies frees it); a slot whose process is gone is skipped. A process publishes its count
when it serves a request, with the number in flight and when its answered connections all
age out of the window: a peer reads the count until then and the number in flight after, so
a process whose clients left is not taken for a busy one because it has served nothing since.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import threading
import time
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from core.processes import alive

SLOTS = 64
SLOT_BYTES = 32  # pid, connections served, of them in flight, when the others age out (monotonic ns): four int64
LIVENESS_S = 1.0  # how often the peers' processes are checked for being alive
CONNECTION_WINDOW_S = 2.0  # a connection idle this long no longer counts as served here


class LoadTable:
    """This process's slot, and its peers', in the file at ``path`` (created when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < SLOTS * SLOT_BYTES:
            os.ftruncate(self._fd, SLOTS * SLOT_BYTES)
        self.slot = self._claim()
        self._map = mmap.mmap(self._fd, SLOTS * SLOT_BYTES)
        self._rows = np.frombuffer(self._map, dtype=np.int64).reshape(SLOTS, SLOT_BYTES // 8)
        self._rows[self.slot] = (os.getpid(), 0, 0, 0)
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

    def publish(self, connections: int, in_flight: int = 0, idle_at: float | None = None) -> None:
        """This process serves ``connections``, ``in_flight`` of them with a request in flight; the others count
        until ``idle_at`` (``time.monotonic()``; None: a connection window from now)."""
        idle_at = time.monotonic() + CONNECTION_WINDOW_S if idle_at is None else idle_at
        self._rows[self.slot, 1:] = (connections, in_flight, int(idle_at * 1e9))

    def least_busy_peer(self) -> int | None:
        """Connections served by the least busy other live process; None when there is none."""
        now = time.monotonic()
        if now - self._checked > LIVENESS_S:
            pids = self._rows[:, 0]
            self._peers = [s for s in range(SLOTS) if s != self.slot and pids[s] > 0 and alive(int(pids[s]))]
            self._checked = now
        if not self._peers:
            return None
        rows = self._rows[self._peers]
        return int(np.where(rows[:, 3] > int(now * 1e9), rows[:, 1], rows[:, 2]).min())

    def close(self) -> None:
        self._rows[self.slot] = (0, 0, 0, 0)
        del self._rows
        self._map.close()
        os.close(self._fd)  # releases the slot's lock


class Balancer:
    """Counts the connections this process serves; says when an answered one should close."""

    def __init__(self, table: LoadTable | None, margin: int, window_s: float = CONNECTION_WINDOW_S) -> None:
        self.table = table
        self.margin = margin
        self.window_s = window_s
        self.closed = 0  # connections this process asked to close
        self._last: dict[Hashable, float] = {}  # connection -> when last answered (inf: a request in flight)
        self._pruned = 0.0
        self._lock = threading.Lock()

    def served(self) -> int:
        """Connections counted as served here now."""
        with self._lock:
            self._prune(time.monotonic())
            return len(self._last)

    def enter(self, connection: Hashable | None) -> None:
        if self.table is None or connection is None:  # off: nothing to count on the request path
            return
        with self._lock:
            self._last[connection] = math.inf
            self._prune(time.monotonic())
            self._publish()

    def leave(self, connection: Hashable | None) -> bool:
        """One request on ``connection`` answered; True when it should close (this process serves more
        than ``margin`` connections above its least busy peer)."""
        if self.table is None or connection is None:
            return False
        with self._lock:
            now = time.monotonic()
            self._last[connection] = now
            self._prune(now)
            peer = self.table.least_busy_peer()
            close = peer is not None and len(self._last) > peer + self.margin
            if close:
                del self._last[connection]
                self.closed += 1
            self._publish()
            return close

    def _publish(self) -> None:
        answered = [t for t in self._last.values() if t != math.inf]
        self.table.publish(len(self._last), len(self._last) - len(answered),  # type: ignore[union-attr]
                           max(answered) + self.window_s if answered else 0.0)

    def _prune(self, now: float) -> None:
        if now - self._pruned < self.window_s / 4:
            return
        self._pruned = now
        idle = [c for c, t in self._last.items() if t < now - self.window_s]
        for connection in idle:
            del self._last[connection]

    def close(self) -> None:
        if self.table is not None:
            self.table.close()
            self.table = None


def open_balancer(folder: str | Path | None, processes: int, margin: int) -> Balancer:
    """A balancer over the table in ``folder`` shared by ``processes`` (> 1, margin > 0), else one that never
    closes a connection."""
    if not folder or processes < 2 or margin <= 0:
        return Balancer(None, margin)
    return Balancer(LoadTable(Path(folder) / "connections.bin"), margin)
