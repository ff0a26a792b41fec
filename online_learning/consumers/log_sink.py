"""Log sink: the event topics -> partitioned Parquet, the offline event log.

Layout: ``<root>/<kind>/date=YYYY-MM-DD/hour=HH/<topic>-p<partition>-<first>-<last>-<digest>.parquet``
with ``kind`` = rankings | interactions. ``digest`` hashes the file's event ids:
offsets alone do not name a file uniquely, since they start again at 0 when a
topic is recreated or a broker without durable storage restarts. Rankings are stored one row per shown
item (request, position, product, scores), interactions one row per event.

Exactly-once after de-duplication, across crashes:

1. drop events whose id is already in the sink's state (sqlite);
2. write each file to a temporary name and fsync it;
3. in one sqlite transaction, record the event ids and the file;
4. rename the file into place and fsync the folder;
5. only then does the loop commit the Kafka offsets.

A crash before (3) leaves an orphan temporary file (removed at start) and the
batch is re-delivered; after (3) the ids are known, so re-delivered events are
dropped, and a file recorded but not yet renamed is renamed at start (or by
``shoprank events forget`` before it erases, so an erased shopper's rows in such a file
do not come back when the sink starts again).

One writer of a log at a time (:func:`writing`): every sink (a consumer, ``shoprank events import``),
``events forget`` and ``events prune`` take ``<root>/_sink.lock`` while they change files, so a sink
starting removes only the temporary files a stopped writer left, never those another is about to rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq

from core.files import fsync_path, holding
from online_learning.consumers.base import Delivered
from online_learning.consumers.seen import Key, ensure_table, key_of, mark, seen
from online_learning.events import InteractionEvent, RankingEvent, is_shelf

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

LOCK = "_sink.lock"  # held by whoever writes the log's files (:func:`writing`)


def writing(root: Path) -> AbstractContextManager[None]:
    """Hold the lock of the event log at ``root`` (waiting while another process holds it): taken by each
    sink's start and batch, and by ``events forget`` and ``events prune`` while they change the log's files.
    A sink starting removes the temporary files it finds; without the lock it would remove the one another
    sink wrote and recorded, and not yet renamed, and those events would be lost."""
    return holding(root / LOCK)


class ParquetLogSink:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.db = sqlite3.connect(root / "_sink_state.sqlite", check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        ensure_table(self.db)
        self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, tmp TEXT NOT NULL)")
        self.written = 0
        self.duplicates = 0
        self._recover()

    def _recover(self) -> None:
        with writing(self.root):  # the temporary files left now are a stopped writer's
            for path, tmp in _unplaced(self.db):
                if place(path, tmp):
                    logger.info("recovered %s", path)
            for tmp in self.root.rglob("*.parquet.tmp"):
                tmp.unlink()

    def _new(self, batch: list[Delivered]) -> list[Delivered]:
        """``batch`` without the events already written and the repeats within it (by kind and id)."""
        known = seen(self.db, [key_of(d.event) for d in batch])
        fresh, taken = [], set()
        for delivered in batch:
            key = key_of(delivered.event)
            if key in known or key in taken:
                self.duplicates += 1
                continue
            taken.add(key)
            fresh.append(delivered)
        return fresh

    @staticmethod
    def _rows(delivered: Delivered) -> list[dict]:
        event = delivered.event
        if isinstance(event, RankingEvent):
            base = {"event_id": event.event_id, "request_id": event.request_id, "timestamp": event.timestamp,
                    "user_id": event.user_id, "session_id": event.session_id, "query": event.query,
                    "searched": event.searched, "key_id": event.key_id,
                    "filters": json.dumps(event.filters) if event.filters else None, "sort": event.sort,
                    "pipeline": event.pipeline, "models": json.dumps(event.models), "experiment": event.experiment,
                    "arm": event.arm, "degraded": json.dumps(event.degraded), "latency_ms": event.latency_ms,
                    "shown": len(event.items)}
            return [{**base, "product_id": i.product_id, "position": i.position, "score": i.score,
                     "scores": json.dumps(i.scores), "team": i.team} for i in event.items] or [
                {**base, "product_id": None, "position": None, "score": None, "scores": "{}", "team": None}]
        assert isinstance(event, InteractionEvent)
        return [event.model_dump(mode="python", exclude={"received"})]  # what erasures of events on their way
        # go by; the log's rows are erased whatever their time

    def __call__(self, batch: list[Delivered]) -> None:
        with writing(self.root):
            self._write(batch)

    def _write(self, batch: list[Delivered]) -> None:
        fresh = self._new(batch)
        if not fresh:
            return
        groups: dict[Path, list[dict]] = defaultdict(list)
        spans: dict[Path, list[int]] = defaultdict(list)
        ids: dict[Path, list[str]] = defaultdict(list)
        keys: dict[Path, list[Key]] = defaultdict(list)
        for delivered in fresh:
            event = delivered.event
            kind = "rankings" if isinstance(event, RankingEvent) else "interactions"
            when = pd.Timestamp(event.timestamp).tz_convert("UTC")
            folder = self.root / kind / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"
            key = folder / f"{delivered.topic}-p{delivered.partition}"
            groups[key].extend(self._rows(delivered))
            spans[key].append(delivered.offset)
            ids[key].append(event.event_id)
            keys[key].append(key_of(event))
        staged, taken = [], {}
        for key, rows in groups.items():
            digest = hashlib.sha1("\n".join(sorted(ids[key])).encode()).hexdigest()[:12]
            path = key.parent / f"{key.name}-{min(spans[key]):012d}-{max(spans[key]):012d}-{digest}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            pd.DataFrame(rows).to_parquet(tmp, index=False)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            staged.append((path, tmp))
            taken[path] = keys[key]
        with self.db:
            mark(self.db, [key_of(d.event) for d in fresh])
            self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?)", [(str(p), str(t)) for p, t in staged])
        lost = [path for path, tmp in staged if not place(path, tmp) and not path.exists()]
        if lost:  # removed by hand under the sink: forget the ids again, so the batch read again is written
            with self.db:
                self.db.executemany("DELETE FROM seen_events WHERE kind = ? AND event_id = ?",
                                    [k for path in lost for k in taken[path]])
                self.db.executemany("DELETE FROM files WHERE path = ?", [(str(path),) for path in lost])
            raise FileNotFoundError(f"{len(lost)} of the log's files were removed before they were renamed into "
                                    f"place ({lost[0]}...); their events are taken again when the batch is read again")
        self.written += len(fresh)


def unplaced(root: Path) -> list[tuple[Path, Path]]:
    """The files the sink of the log at ``root`` recorded (step 3) but did not rename into place (step 4):
    ``(path, temporary file)`` each. A sink that stopped between the two renames them when it starts again;
    until then their rows are in no ``*.parquet`` file (:func:`log_files` does not list them)."""
    state = root / "_sink_state.sqlite"
    if not state.is_file():
        return []
    db = sqlite3.connect(state, timeout=30)
    try:
        return _unplaced(db)
    finally:
        db.close()


def _unplaced(db: sqlite3.Connection) -> list[tuple[Path, Path]]:
    try:
        rows = db.execute("SELECT path, tmp FROM files").fetchall()
    except sqlite3.OperationalError:  # a state that never recorded a file
        return []
    return [(Path(p), Path(t)) for p, t in rows if not Path(p).exists() and Path(t).exists()]


def place(path: Path, tmp: Path) -> bool:
    """Rename the recorded ``tmp`` to ``path`` and fsync the folder (step 4). False when ``tmp`` is gone: another
    process placed it first (a sink starting again, ``events forget``), or removed its day (``events prune``)."""
    try:
        os.replace(tmp, path)
    except FileNotFoundError:
        return False
    fsync_path(path.parent)
    return True


def read_log(root: Path, kind: str, columns: Sequence[str] | None = None, since: pd.Timestamp | None = None,
             until: pd.Timestamp | None = None, client: Client | None = None) -> pd.DataFrame:
    """Rows of ``kind`` (rankings | interactions), de-duplicated by event id (and position).

    Args:
        columns: Only these columns (the de-duplication keys are always read).
        since, until: Skip the ``date=`` folders wholly outside this window (UTC days): rows of
            the boundary days outside it are still returned, so filter the timestamps after.
        client: A ``distributed.Client``: the files are read as the partitions of a Dask
            dataframe on its workers (they must see ``root`` at the same path). Each file is
            read as in this process, with its own schema: ``dask.dataframe.read_parquet`` reads
            one schema for all, and a column that is all None in one file (Parquet type null)
            fails to cast to the type it has in the others.
    """
    files = log_files(root, kind, since, until)
    if not files:
        return pd.DataFrame()
    keys = ["event_id", "position"] if kind == "rankings" else ["event_id"]
    wanted = None if columns is None else list(dict.fromkeys([*keys, *columns]))
    if client is None:
        frame = pd.concat([read_file(f, wanted) for f in files], ignore_index=True)
    else:
        import dask
        import dask.dataframe as dd

        with dask.config.set({"dataframe.convert-string": False}):  # keep pandas' dtypes (object strings)
            parts = dd.from_map(read_file, [str(f) for f in files], columns=wanted, enforce_metadata=False)
            frame = client.compute(parts).result().reset_index(drop=True)
    return frame.drop_duplicates(keys, ignore_index=True)


def searches_only(rankings: pd.DataFrame, shelves: bool = False) -> pd.DataFrame:
    """The rows of ``rankings`` that are searches; with ``shelves``, those that are listings and
    recommendation shelves instead (:func:`online_learning.events.is_shelf`). A log written before
    shelves were logged (no ``pipeline`` column) holds searches only."""
    if rankings.empty:
        return rankings
    shelf = (rankings["pipeline"].map(lambda p: isinstance(p, str) and is_shelf(p)).astype(bool)
             if "pipeline" in rankings else pd.Series(False, index=rankings.index))
    return rankings[shelf if shelves else ~shelf]


def read_file(path: Path | str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One Parquet file of the log; a column asked for that the file lacks (written before that
    column was logged) is all None."""
    if columns is None:
        return pd.read_parquet(path)
    present = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in columns if c in present])
    for column in columns:
        if column not in present:
            frame[column] = None
    return frame[list(columns)]


def log_files(root: Path, kind: str, since: pd.Timestamp | None = None,
              until: pd.Timestamp | None = None, readable_only: bool = True) -> list[Path]:
    """The Parquet files of ``kind``, in path order, without the days wholly outside ``(since, until]``, nor
    (``readable_only``) those after the last day pandas' times hold (2262-04-11: written by a ShopRank that took
    in any timestamp from a topic, they would stop every reader; logged as left out, never deleted). A
    ``date=`` folder whose name is not a day (``YYYY-MM-DD``) is listed, whatever the window. ``readable_only``
    False lists those late days too, for a reader that does not make pandas times of the rows (``events forget``
    erases a shopper's rows there with pyarrow)."""
    if kind not in ("rankings", "interactions"):
        raise ValueError(f"log kind {kind!r} is not one of 'rankings', 'interactions'")
    first = _utc_day(since)
    last = _utc_day(until)
    files = []
    for file in sorted((root / kind).rglob("*.parquet")):
        day = next((_day(p.removeprefix("date=")) for p in file.parts if p.startswith("date=")), None)
        if day is not None and ((first and day < first) or (last and day > last)):
            continue
        if readable_only and day is not None and day > _LAST:
            logger.warning("event log file %s is dated after %s, the last day pandas' times hold: left out (move "
                           "it out of the log)", file, LAST_DAY)
            continue
        files.append(file)
    return files


LAST_DAY = f"{pd.Timestamp.max:%Y-%m-%d}"  # the last day a log partition may be read for
_LAST = date.fromisoformat(LAST_DAY)
_DAY = re.compile(r"([0-9]{4,})-([0-9]{2})-([0-9]{2})")


def _day(name: str) -> date | None:
    """The day a ``date=`` folder's ``name`` says (``YYYY-MM-DD``), None when it says none (``latest``, a
    misspelled day: compared as text before, it was left out as a day after the last). A year past 9999, which
    Python's dates do not hold, reads as their last day: after any window and after :data:`LAST_DAY`."""
    match = _DAY.fullmatch(name)
    if match is None:
        return None
    if int(match[1]) > 9999:
        return date.max if 1 <= int(match[2]) <= 12 and 1 <= int(match[3]) <= 31 else None
    try:
        return date.fromisoformat(name)
    except ValueError:  # no such day (2025-02-30)
        return None


def _utc_day(when: pd.Timestamp | None) -> date | None:
    if when is None:
        return None
    when = pd.Timestamp(when)
    return (when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")).date()
