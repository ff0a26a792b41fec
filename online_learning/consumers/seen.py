"""The events a consumer has already taken, by kind and id, in its sqlite state.

A ranking event and an interaction may carry the same ``event_id`` (a search's id is its
``request_id``, which a caller may also give a click; an export from another engine numbers each
table from 1), so an id is seen per kind: ``ranking`` or ``interaction``. States written before
the kind was kept have their ids moved over with kind ``""``, which still matches either kind, so
a re-delivered old event is not taken twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from online_learning.events import InteractionEvent, RankingEvent

Key = tuple[str, str]  # (kind, event id)


def kind_of(event: RankingEvent | InteractionEvent) -> str:
    return "ranking" if isinstance(event, RankingEvent) else "interaction"


def key_of(event: RankingEvent | InteractionEvent) -> Key:
    return kind_of(event), event.event_id


def ensure_table(db: sqlite3.Connection) -> None:
    """Make the ``seen_events`` table, moving a state's ids of the earlier ``seen`` table into it."""
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS seen_events (kind TEXT NOT NULL, event_id TEXT NOT NULL, "
                   "PRIMARY KEY (kind, event_id))")
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seen'").fetchone():
            db.execute("INSERT OR IGNORE INTO seen_events SELECT '', event_id FROM seen")
            db.execute("DROP TABLE seen")


def seen(db: sqlite3.Connection, keys: Sequence[Key]) -> set[Key]:
    """Which of ``keys`` the state holds: per kind, its ids and the legacy ones (kind ``""``), looked up through
    the table's (kind, event_id) key 900 at a time (sqlite's bound on parameters), never by a scan."""
    known: set[Key] = set()
    by_kind: dict[str, list[str]] = {}
    for kind, event_id in dict.fromkeys(keys):
        by_kind.setdefault(kind, []).append(event_id)
    for kind, ids in by_kind.items():
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            rows = db.execute(f"SELECT event_id FROM seen_events WHERE kind IN (?, '') AND event_id IN "
                              f"({','.join('?' * len(chunk))})", [kind, *chunk])
            known |= {(kind, event_id) for (event_id,) in rows}
    return known


def mark(db: sqlite3.Connection, keys: Iterable[Key]) -> None:
    """Record ``keys`` as taken (inside the caller's transaction)."""
    db.executemany("INSERT OR IGNORE INTO seen_events VALUES (?, ?)", list(keys))
