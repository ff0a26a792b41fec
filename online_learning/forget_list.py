"""The erasure list: shoppers whose data ``shoprank events forget`` erased, and when.

An erasure reaches the data at rest (the event log, the feature state), but events of the
shopper may still be on their way: in a server's spool, in Kafka, in a file waiting for
``shoprank events import``. Each consumer and the import read this list and drop an event of
a listed user or session dated at or before its erasure, or received by a server by then (a
client's clock may run ahead), so none of it comes back; what the shopper does later is kept.

One JSON line per erased id, ``{"id": <HMAC-SHA256 of "user:<id>" or "session:<id>">, "at": <ISO
time>}``, under ``<store>/privacy/forgotten.jsonl``: the list names no shopper in clear, and its
key (``forgotten.key`` beside it, made with the list, readable by its owner only) keeps a guessable
id (``u42``) from being confirmed from the list alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from core.errors import NotReady
from core.files import holding
from online_learning.events import InteractionEvent, RankingEvent

T = TypeVar("T")

logger = logging.getLogger(__name__)


def _cut_torn_end(fd: int) -> None:
    """Cut the file open at ``fd`` back to its last line end: a last line without one was cut short. Only
    its last byte is read when it ends whole (every add checks it, and the list only grows)."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, data.rfind(b"\n") + 1)


class ForgetList:
    """The erased ids at ``path``, read again when the file changes.

    A consumer filters a batch and then writes it; an erasure listed in between would find none of the
    batch's rows at rest, and the batch would write them after it. So a consumer holds the list's lock
    shared (:meth:`reading`) from its filter until the batch is written, and :meth:`add` holds it alone:
    an erasure waits for the batches in flight, and every batch after it is filtered by it.

    ``flock`` goes on granting the shared lock while one waits to hold it alone: two consumers (or a consumer
    and an import) whose batches overlap would keep it taken as long as their backlog lasts. So an erasure
    first holds a second lock, the gate (``<list>.gate.lock``), alone, and a batch passes the gate (takes it
    shared and lets it go at once) before it takes the list's lock: once an erasure waits, no new batch
    starts, and it waits only for the batches already in flight.

    A batch that cannot hold the list's lock (not there, and this process may not make it) is not written:
    :meth:`reading` raises :class:`~core.errors.NotReady`, naming the file and what to do, and a consumer
    says so at its start (:meth:`check`). Without the gate (a list made before it had one, in a folder this
    process may not add to), a batch takes the list's lock alone, and says so once."""

    WAIT_WARNING_S = 5.0  # an erasure waiting this long for the batches in flight says so, once

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key_path = path.with_suffix(".key")
        self.lock_path = path.with_name(f"{path.name}.lock")
        self.gate_path = path.with_name(f"{path.name}.gate.lock")
        self._key: bytes | None = None
        self._stamp: tuple[int, int] | None = None
        self._until: dict[str, datetime] = {}
        self._said_ungated = False

    def _secret(self, create: bool = False) -> bytes | None:
        """The list's key: made (with the list) when ``create``, else None while there is none."""
        if self._key is None and self.key_path.is_file():
            self._key = self.key_path.read_bytes()
        if self._key is None and create:
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
            self._key = self.key_path.read_bytes()
        return self._key

    def digest(self, kind: str, value: str) -> str:
        """The listed form of a user id (``kind`` "user") or session id ("session")."""
        key = self._secret()
        assert key is not None, "no key yet: nothing was listed"
        return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def pseudonym(self, shopper: str) -> str | None:
        """A shopper's name in what is kept where an erasure does not reach (a model's metrics: the traffic filters'
        report): ``shopper:`` and 16 hex digits of the HMAC of ``"shopper:<id>"`` under the list's key, so it names
        no one in clear and matches no entry of the list; None (name no one) while there is no key (no erasure
        yet: this makes none) or it cannot be read. The owner of the key finds a shopper's with this method."""
        try:
            key = self._secret()
        except OSError:
            return None
        return None if key is None else "shopper:" + hmac.new(key, f"shopper:{shopper}".encode(),
                                                                hashlib.sha256).hexdigest()[:16]

    def add(self, users: Iterable[str], sessions: Iterable[str], at: datetime) -> int:
        """List ``users`` and ``sessions`` as erased at ``at`` (appended and fsynced); returns how many.

        A last line without its line end (an earlier ``add`` stopped while it wrote) is cut off first,
        so the new lines do not run on from it."""
        self._secret(create=True)
        data = "".join(json.dumps({"id": self.digest(kind, value), "at": at.isoformat()}) + "\n"
                       for kind, values in (("user", users), ("session", sessions)) for value in values).encode()
        waiting = threading.Timer(self.WAIT_WARNING_S, logger.warning, args=(
            "%s: waiting for the batches the consumers and imports are writing (no new batch starts meanwhile)",
            self.path))
        waiting.daemon = True
        waiting.start()
        try:
            with holding(self.gate_path), holding(self.lock_path):  # once the batches in flight are (see the class)
                waiting.cancel()
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
                try:
                    _cut_torn_end(fd)
                    written = 0
                    while written < len(data):
                        written += os.write(fd, data[written:])
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            waiting.cancel()
        return data.count(b"\n")

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the list's lock shared, from reading the list for a batch until the batch is written: an
        erasure (:meth:`add`) waits meanwhile. The gate is passed first: while an erasure waits, this waits
        for it (see the class). Raises :class:`NotReady` when the list's lock cannot be held."""
        with holding(self.gate_path, shared=True, missing_ok=True) as gated:  # made here when missing, if it may be
            pass
        with ExitStack() as held:
            try:
                held.enter_context(holding(self.lock_path, shared=True))
            except (FileNotFoundError, PermissionError) as error:
                raise NotReady(
                    f"cannot hold {self.lock_path} ({error.strerror}): a batch holds it while it is written, so that "
                    f"an erasure (events forget) waits for it, and none is written without it. Make it as the "
                    f"owner of the home (mkdir -p {self.lock_path.parent} && touch {self.lock_path} "
                    f"{self.gate_path}), readable by this process's user, or run this as that owner") from error
            if not gated and not self._said_ungated:  # an erasure makes it (run as the home's owner)
                self._said_ungated = True
                logger.warning("%s is not there and this process may not make it: batches take %s alone, and an "
                               "erasure may wait as long as overlapping batches go on; make it (touch it, as the "
                               "owner of %s) or run one `shoprank events forget` as that owner",
                               self.gate_path, self.lock_path.name, self.gate_path.parent)
            yield

    def check(self) -> None:
        """Raise :class:`NotReady` now, at a consumer's start, when a batch could not hold the list's lock
        (:meth:`reading`), rather than at its first batch."""
        with self.reading():
            pass

    def refresh(self) -> None:
        """Read the file again if it changed."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._until = None, {}
            return
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return
        until: dict[str, datetime] = {}
        *lines, _ = self.path.read_bytes().split(b"\n")  # after the last line end: being written, or cut short
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                erased, at = str(entry["id"]), datetime.fromisoformat(entry["at"])
            except (ValueError, KeyError, TypeError) as err:  # one damaged line: the others still hold
                logger.warning("%s line %d is not an erasure entry (%s); skipped", self.path, n, err)
                continue
            until[erased] = max(at, until.get(erased, at))
        self._stamp, self._until = stamp, until

    def __len__(self) -> int:
        self.refresh()
        return len(self._until)

    def erased_at(self, user_id: str, kind: str = "user") -> datetime | None:
        """When the shopper ``user_id`` (``kind`` "session": the session id) was last erased (None: never), as
        last read (:meth:`refresh`)."""
        return self._until.get(self.digest(kind, user_id)) if self._until else None

    def erased(self, event: RankingEvent | InteractionEvent) -> bool:
        """Whether ``event`` belongs to an erased shopper and happened, or reached a server, at or before the
        erasure (as last read: :meth:`refresh`; :meth:`keep` does both for a batch). The time a server received
        it counts too: a client's timestamp may run up to a day ahead (``events.MAX_AHEAD``)."""
        if not self._until:
            return False
        received = getattr(event, "received", None)
        when = event.timestamp if received is None else min(event.timestamp, received)
        for kind, value in (("user", event.user_id), ("session", event.session_id)):
            if value is not None:
                at = self._until.get(self.digest(kind, value))
                if at is not None and when <= at:
                    return True
        return False

    def keep(self, items: Sequence[T],
             event_of: Callable[[T], RankingEvent | InteractionEvent]) -> tuple[list[T], int]:
        """``items`` less those whose event (``event_of(item)``) :meth:`erased` covers, and how many went."""
        self.refresh()
        if not self._until:
            return list(items), 0
        kept = [item for item in items if not self.erased(event_of(item))]
        return kept, len(items) - len(kept)


@contextmanager
def filtered(forget: ForgetList | None, items: Sequence[T],
             event_of: Callable[[T], RankingEvent | InteractionEvent]) -> Iterator[tuple[list[T], int]]:
    """``items`` less the erased shoppers' (:meth:`ForgetList.keep`) and how many went, with the list's lock
    held shared (:meth:`ForgetList.reading`) until the block ends, so the batch is written before an erasure
    listed meanwhile goes on; without a list, ``items`` as they are."""
    if forget is None:
        yield list(items), 0
        return
    with forget.reading():
        yield forget.keep(items, event_of)
