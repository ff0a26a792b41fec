"""The erasure list: shoppers whose data ``shoprank events forget`` erased, and when.

An erasure reaches the data at rest (the event log, the feature state), but events of the
shopper may still be on their way: in a server's spool, in Kafka, in a file waiting for
``shoprank events import``. Each consumer and the import read this list and drop an event of
a listed user or session dated at or before its erasure, so none of it comes back; what the
shopper does later is kept.

One JSON line per erased id, ``{"id": <sha256 of "user:<id>" or "session:<id>">, "at": <ISO
time>}``, under ``<store>/privacy/forgotten.jsonl``: the list names no shopper in clear.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from online_learning.events import InteractionEvent, RankingEvent

T = TypeVar("T")


def digest(kind: str, value: str) -> str:
    """The listed form of a user id (``kind`` "user") or session id ("session")."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class ForgetList:
    """The erased ids at ``path``, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._until: dict[str, datetime] = {}

    def add(self, users: Iterable[str], sessions: Iterable[str], at: datetime) -> int:
        """List ``users`` and ``sessions`` as erased at ``at`` (appended and fsynced); returns how many."""
        lines = [json.dumps({"id": digest(kind, value), "at": at.isoformat()})
                 for kind, values in (("user", users), ("session", sessions)) for value in values]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        return len(lines)

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
        for line in self.path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["at"])
                until[entry["id"]] = max(at, until.get(entry["id"], at))
        self._stamp, self._until = stamp, until

    def __len__(self) -> int:
        self.refresh()
        return len(self._until)

    def erased(self, event: RankingEvent | InteractionEvent) -> bool:
        """Whether ``event`` belongs to an erased shopper and happened at or before the erasure
        (as last read: :meth:`refresh`; :meth:`keep` does both for a batch)."""
        for kind, value in (("user", event.user_id), ("session", event.session_id)):
            if value is not None:
                at = self._until.get(digest(kind, value))
                if at is not None and event.timestamp <= at:
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
