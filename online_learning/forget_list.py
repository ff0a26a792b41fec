"""The erasure list: shoppers whose data ``shoprank events forget`` erased, and when.

An erasure reaches the data at rest (the event log, the feature state), but events of the
shopper may still be on their way: in a server's spool, in Kafka, in a file waiting for
``shoprank events import``. Each consumer and the import read this list and drop an event of
a listed user or session dated at or before its erasure, so none of it comes back; what the
shopper does later is kept.

One JSON line per erased id, ``{"id": <HMAC-SHA256 of "user:<id>" or "session:<id>">, "at": <ISO
time>}``, under ``<store>/privacy/forgotten.jsonl``: the list names no shopper in clear, and its
key (``forgotten.key`` beside it, made with the list, readable by its owner only) keeps a guessable
id (``u42``) from being confirmed from the list alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from online_learning.events import InteractionEvent, RankingEvent

T = TypeVar("T")


class ForgetList:
    """The erased ids at ``path``, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key_path = path.with_suffix(".key")
        self._key: bytes | None = None
        self._stamp: tuple[int, int] | None = None
        self._until: dict[str, datetime] = {}

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

    def add(self, users: Iterable[str], sessions: Iterable[str], at: datetime) -> int:
        """List ``users`` and ``sessions`` as erased at ``at`` (appended and fsynced); returns how many."""
        self._secret(create=True)
        lines = [json.dumps({"id": self.digest(kind, value), "at": at.isoformat()})
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

    def erased_at(self, user_id: str) -> datetime | None:
        """When the shopper ``user_id`` was last erased (None: never), as last read (:meth:`refresh`)."""
        return self._until.get(self.digest("user", user_id)) if self._until else None

    def erased(self, event: RankingEvent | InteractionEvent) -> bool:
        """Whether ``event`` belongs to an erased shopper and happened at or before the erasure
        (as last read: :meth:`refresh`; :meth:`keep` does both for a batch)."""
        if not self._until:
            return False
        for kind, value in (("user", event.user_id), ("session", event.session_id)):
            if value is not None:
                at = self._until.get(self.digest(kind, value))
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
