"""Live product updates (price, stock, promotion) written to the online store, and the change feed
that tells every server process which products to read again.

:func:`write_facts` writes the given facts of some products into their feature views of the online
store (only those features: a product's other features stay), stamped now. It then appends the
product ids to the change feed, which every server's feature reader follows
(:meth:`core.feature_store.OnlineFeatureReader.follow`): a changed product's row is read again at
once and the filters' facts are rebuilt, instead of at the next ``product_ttl_s`` re-read.

The feed lives beside the online store: a Redis stream (``XADD`` capped at :data:`KEEP` entries)
for the Redis online store, shared by every replica; a sqlite table next to the sqlite online store
for the default, single-machine one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

KEEP = 100_000  # entries a feed keeps; a reader further behind reads every product again
STREAM = "shoprank:product_changes"


class ChangeFeed(Protocol):
    def append(self, product_ids: Sequence[str]) -> None: ...

    def since(self, position: str | None) -> tuple[str, list[str] | None]:
        """The position now and the products changed after ``position`` (None: from now on, nothing
        read); ids None: the feed no longer holds ``position`` (read everything again)."""
        ...


class SqliteChanges:
    """The change feed of a sqlite online store: a table in its own file next to it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "product_id TEXT NOT NULL)")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, product_ids: Sequence[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT INTO changes (product_id) VALUES (?)", [(p,) for p in product_ids])
            self._db.execute("DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (KEEP,))

    def since(self, position: str | None) -> tuple[str, list[str] | None]:
        with self._lock:
            last = self._db.execute("SELECT coalesce(max(seq), 0), coalesce(min(seq), 1) FROM changes").fetchone()
            if position is None:
                return str(last[0]), []
            if int(position) < last[1] - 1:
                return str(last[0]), None
            rows = self._db.execute("SELECT seq, product_id FROM changes WHERE seq > ? ORDER BY seq",
                                    (int(position),)).fetchall()
        return (str(rows[-1][0]) if rows else position), [p for _, p in rows]


class RedisChanges:
    """The change feed of a Redis online store: one capped stream every replica reads."""

    def __init__(self, client: Any, key: str = STREAM) -> None:
        self._client = client
        self._key = key

    def append(self, product_ids: Sequence[str]) -> None:
        self._client.xadd(self._key, {"ids": json.dumps(list(product_ids))}, maxlen=KEEP, approximate=True)

    def since(self, position: str | None) -> tuple[str, list[str] | None]:
        if position is None:
            latest = self._client.xrevrange(self._key, count=1)
            return (_text(latest[0][0]) if latest else "0-0"), []
        first = self._client.xrange(self._key, count=1)
        if first and position != "0-0" and _order(_text(first[0][0])) > _order(position):  # trimmed past it
            return _text(self._client.xrevrange(self._key, count=1)[0][0]), None
        entries = self._client.xrange(self._key, min=f"({position}", count=10_000)
        if not entries:
            return position, []
        ids = [p for _, fields in entries for p in json.loads(_text(fields[b"ids"] if b"ids" in fields
                                                                    else fields["ids"]))]
        return _text(entries[-1][0]), ids


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def open_changes(store: Any) -> ChangeFeed:
    """The change feed beside ``store``'s online store (a Feast ``FeatureStore``)."""
    config = store.config.online_store
    if getattr(config, "type", "sqlite") == "redis":
        provider = store._get_provider()
        key = STREAM if store.project == "shoprank" else f"{STREAM}:{store.project}"  # each store's own feed
        return RedisChanges(provider.online_store._get_client(config), key)
    return SqliteChanges(Path(store.config.online_store.path).with_name("product_changes.sqlite"))


def write_facts(store: Any, updates: Mapping[str, Mapping[str, Any]], facts: Mapping[str, str],
                changes: ChangeFeed | None = None) -> dict[str, int]:
    """Write ``updates`` (product id -> {fact: value}) into the online store, each fact to the
    ``view:feature`` that ``facts`` names, stamped now; then append the products to ``changes``.
    Returns the rows written per view. Raises ValueError naming a fact the store does not hold."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values

    by_view: dict[str, dict[str, dict[str, Any]]] = {}
    for product, values in updates.items():
        for fact, value in values.items():
            if fact not in facts:
                raise ValueError(f"fact {fact!r} has no feature in the store (features.facts: {sorted(facts)})")
            view, _, feature = facts[fact].partition(":")
            by_view.setdefault(view, {}).setdefault(product, {})[feature] = value
    provider = store._get_provider()
    now = datetime.now(UTC)
    written = {}
    for view_name, rows in by_view.items():
        view = store.get_feature_view(view_name)
        types = {f.name: f.dtype.to_value_type() for f in view.features}
        join_key = view.entity_columns[0].name
        data = []
        for product, values in rows.items():
            key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=product)])
            protos = {name: python_values_to_proto_values([value], types[name])[0] for name, value in values.items()}
            data.append((key, protos, now, now))
        provider.online_write_batch(store.config, view, data, None)
        written[view_name] = len(data)
    if changes is not None:
        changes.append(list(updates))
    return written


class FeedCursor:
    """Where one reader is in a change feed. :meth:`catch_up` hands ``on_change(ids or None)`` what
    changed since, then moves on; the position is taken at the first read that succeeds, and one
    whose ``on_change`` failed stays, so the next call reads those products again.

    The position names, across processes and replicas, which live updates a reader has applied:
    what a server worked out from its product facts can be keyed on it (a shared result page)."""

    def __init__(self, changes: ChangeFeed, on_change: Callable[[list[str] | None], None]) -> None:
        self.changes = changes
        self.on_change = on_change
        self.position: str | None = None
        self._lock = threading.Lock()

    def catch_up(self) -> None:
        """Apply what changed since the position (raises what the feed or ``on_change`` raised)."""
        with self._lock:
            if self.position is None:
                self.position, _ = self.changes.since(None)
                return
            position, ids = self.changes.since(self.position)
            if ids is None or ids:
                self.on_change(ids)
            self.position = position


def poll(cursor: FeedCursor, every_s: float, stop: threading.Event) -> None:
    """``cursor.catch_up()`` every ``every_s`` seconds, until ``stop``. A store that is down (at start or
    later) is tried again at the next tick, the rows keeping their TTL meanwhile."""
    failing = False
    while True:
        try:
            cursor.catch_up()
            failing = False
        except Exception:  # noqa: BLE001 - logged once per outage; the next tick tries again
            if stop.is_set():  # closed while reading (the reader's feed and pools go with it): nothing failed
                return
            if not failing:
                logger.exception("following the product change feed failed; trying again every %.1f s", every_s)
            failing = True
        if stop.wait(every_s):
            return
