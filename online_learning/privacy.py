"""Erasing shoppers' data, and keeping the event log to a window.

:func:`forget` (``shoprank events forget --user ID --session ID``) erases what ShopRank keeps
about shoppers, by user id or session id:

- the offline event log (Parquet: the searches they were shown, their clicks, carts and
  purchases): each file that holds their rows is written again without them (atomically; a
  file left empty is removed). A file the log sink recorded but did not rename into place
  (it stopped between the two) is renamed first, as the sink does when it starts, so that its
  rows are erased too and not brought back by the sink's restart. The log's lock is held meanwhile
  (:func:`~online_learning.consumers.log_sink.writing`): a sink waits, and writes its batch after (a dry
  run, which only reads, takes no lock);
- the streaming feature state (their purchases) and their online profile (``user_profile``:
  recent items, category affinities, median price): the rows are deleted and every named
  shopper's profile is pushed again, empty (the caller's ``push``; else the streaming consumer
  pushes it at its next batch or start); their rows of the offline ``user_profile`` table go too (and
  a later ``features build --from-catalog`` keeps none of them, reading the erasure list);
- dead letters (events a consumer could not read) and shadow-scoring records: their lines go;
- without Kafka, the event spool is the record of events (``<store>/event_spool``): its segments
  are written again without their lines, all but the one a running server appends to (a server
  starts a new segment each time it starts, so a run after a restart covers it);
- events still on their way (with Kafka, a server's spool and the topics; a file to import):
  the erasure list (:mod:`online_learning.forget_list`) makes the consumers and the import drop
  them.

Aggregates that name no shopper stay: popularity counts, the products bought together, the
searched texts (each kept only once enough shoppers searched it). Kafka's topics expire by the
broker's own retention.

:func:`prune` (``shoprank events prune --keep-days N``) removes the event log's days older than
N days, the streaming state's purchases as old (their shoppers' profiles pushed again without
them), the shadow-scoring records, the dead letters and the spool's lines set aside as old and,
without Kafka, the spool's lines as old.

A dead letter, shadow-scoring or set-aside spool file is appended to by running processes: each append holds
the file's lock shared (:func:`core.files.append_line`), and a rewrite here holds it alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.files import exclusive, fsync_path, write_text_atomic
from core.paths import Home
from online_learning.consumers.log_sink import log_files, place, unplaced, writing
from online_learning.consumers.streaming_features import mark_dirty, open_state
from online_learning.event_log import hold_slot, slot_held
from online_learning.forget_list import ForgetList

logger = logging.getLogger(__name__)

KINDS = ("rankings", "interactions")  # the event log's two tables
PushDirty = Callable[[], None]  # push the streaming state's marked profiles to the online store


@dataclass
class ForgetReport:
    """What :func:`forget` found (and, unless a dry run, erased)."""

    users: int
    sessions: int
    log_rows: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    log_files: int = 0  # files written again (or removed, left empty)
    purchases: int = 0  # streaming state rows
    profiles: str = "none"  # what became of the online profiles
    feature_rows: int = 0  # rows of the offline user_profile table
    dead_letters: int = 0
    shadow_records: int = 0
    spool_set_aside: int = 0  # lines the spool's shipper set aside as not events (corrupt.jsonl) that named them
    spool_events: int = 0  # lines of the event spool erased (without Kafka)
    spool_open: int = 0  # segments a running server appends to, left as they are
    spool_open_events: int = 0  # their lines in those segments: erased by a run after that server restarts
    listed: int = 0  # ids added to the erasure list
    not_found: list[str] = field(default_factory=list)  # ids named that no log row holds (the first 100)


@dataclass
class PruneReport:
    """What :func:`prune` found older than its window (and, unless a dry run, removed)."""

    before: str  # the first day kept (UTC)
    log_days: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    log_files: int = 0
    purchases: int = 0
    profiles: str = "none"
    shadow_records: int = 0
    dead_letters: int = 0
    spool_set_aside: int = 0  # lines of corrupt.jsonl (the spool's lines set aside as not events)
    undated: int = 0  # dead letters and set-aside lines with no time to go by (no event time, no "time"): kept
    spool_events: int = 0
    spool_open: int = 0


def forget(paths: Home, users: Collection[str], sessions: Collection[str], at: datetime, dry_run: bool = False,
           push: PushDirty | None = None, kafka: bool = False) -> ForgetReport:
    """Erase the data of ``users`` and ``sessions`` (see the module's docstring) as of ``at`` (tz-aware);
    ``kafka``: the servers ship the event spool to Kafka (it is then left to the erasure list)."""
    users, sessions = set(users), set(sessions)
    report = ForgetReport(len(users), len(sessions))
    if not dry_run:  # listed first: events arriving while the rest is erased are dropped too
        report.listed = ForgetList(paths.forgotten).add(sorted(users), sorted(sessions), at)
    seen: set[str] = set()
    wanted = {"user_id": pa.array(sorted(users), pa.string()), "session_id": pa.array(sorted(sessions), pa.string())}
    # no sink writes meanwhile, nor removes the files erased below; a dry run changes nothing, and takes no lock
    with nullcontext() if dry_run else writing(paths.event_log):
        pending = unplaced(paths.event_log)  # files a stopped sink recorded (their ids taken), not yet renamed
        if not dry_run:
            for path, tmp in pending:
                place(path, tmp)
        for kind in KINDS:
            # with the days after pandas' last (2262-04-11): read and rewritten with pyarrow, which holds them
            files = log_files(paths.event_log, kind, readable_only=False)
            if dry_run:  # read where they are: <kind>/date=/hour=/<file>
                files += [tmp for _, tmp in pending if tmp.parents[2].name == kind]
            for path in files:
                try:
                    table, found = _shopper_hits(path, wanted)
                except FileNotFoundError:  # renamed or removed by a writer meanwhile: a dry run holds no lock
                    if not dry_run:
                        raise
                    continue
                hit = found["user_id"] | found["session_id"]
                if hit.any():
                    for column, label in (("user_id", "user"), ("session_id", "session")):
                        if found[column].any():
                            values = table.column(column).filter(pa.array(found[column])).to_pylist()
                            seen |= {f"{label} {v}" for v in values}
                    report.log_rows[kind] += int(hit.sum())
                    report.log_files += 1
                    if not dry_run:
                        _replace(path, pq.read_table(path).filter(pa.array(~hit)))
    owners = _purchases_of(paths.streaming_state, lambda user, ts: user in users, dry_run)
    report.purchases = len(owners)
    profiled = paths.streaming_state.is_file() or (paths.features / "user_profile.parquet").is_file()
    report.profiles = _drop_purchases(paths.streaming_state, owners, dry_run, push, "reset",
                                      also=users if profiled else ())
    offline = paths.features / "user_profile.parquet"
    if offline.is_file():
        table = pq.read_table(offline)
        theirs = np.isin(table.column("user_id").to_numpy(zero_copy_only=False), list(users))
        report.feature_rows = int(theirs.sum())
        if report.feature_rows and not dry_run:
            _replace(offline, table.filter(pa.array(~theirs)), keep_empty=True)
    for path in sorted((paths.base / "dead_letters").glob("*.jsonl")):
        report.dead_letters += _drop_appended(path, lambda line: _names(line, users, sessions), dry_run)
    for path in sorted(paths.shadow.glob("*.jsonl")):
        report.shadow_records += _drop_appended(path, lambda line: json.loads(line).get("user_id") in users,
                                                dry_run)
    # with Kafka or not: never shipped (the spool's shipper appends to it under its lock, as to the files above)
    for path in sorted(paths.event_spool.glob("slot-*/corrupt.jsonl")):
        report.spool_set_aside += _drop_appended(path, lambda line: _mentions(line, users, sessions), dry_run)
    if not kafka:
        def theirs(event: dict) -> bool:
            found = [f"user {event.get('user_id')}"] if event.get("user_id") in users else []
            found += [f"session {event.get('session_id')}"] if event.get("session_id") in sessions else []
            seen.update(found)  # found in the spool is found: not listed in not_found
            return bool(found)

        report.spool_events, report.spool_open, report.spool_open_events = _spool(paths.event_spool, theirs, dry_run)
    named = [f"user {u}" for u in sorted(users)] + [f"session {s}" for s in sorted(sessions)]
    report.not_found = [n for n in named if n not in seen][:100]
    logger.info("forget %d users, %d sessions%s: %s", len(users), len(sessions), " (dry run)" if dry_run else "",
                report)
    return report


def prune(paths: Home, keep_days: int, now: datetime, dry_run: bool = False,
          push: PushDirty | None = None, kafka: bool = False) -> PruneReport:
    """Remove the event log's days before ``now - keep_days`` (UTC days), the streaming state's purchases,
    the shadow-scoring records, the dead letters and the spool's lines set aside (by :func:`_when`; a line with
    no time is kept and counted) and, without ``kafka``, the spool's lines older than that."""
    first: date = (now - timedelta(days=keep_days)).date()
    report = PruneReport(first.isoformat())
    with nullcontext() if dry_run else writing(paths.event_log):  # no sink writes in a day while it is removed
        for kind in KINDS:
            for folder in sorted((paths.event_log / kind).glob("date=*")):
                try:
                    day = date.fromisoformat(folder.name.removeprefix("date="))
                except ValueError:
                    continue  # not a folder the log sink writes
                if day < first:
                    report.log_days[kind] += 1
                    report.log_files += sum(1 for _ in folder.rglob("*.parquet"))
                    if not dry_run:
                        shutil.rmtree(folder)
    cutoff = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    old = _purchases_of(paths.streaming_state, lambda user, ts: datetime.fromisoformat(ts) < cutoff, dry_run)
    report.purchases = len(old)
    report.profiles = _drop_purchases(paths.streaming_state, old, dry_run, push, "pushed again")
    for path in sorted(paths.shadow.glob("*.jsonl")):
        report.shadow_records += _drop_appended(
            path, lambda line: json.loads(line).get("time", 0) < cutoff.timestamp(), dry_run)
    undated = 0

    def expired(line: str, spooled: bool) -> bool:
        nonlocal undated
        when = _when(line, spooled)
        undated += when is None
        return when is not None and when < cutoff

    for path in sorted((paths.base / "dead_letters").glob("*.jsonl")):
        report.dead_letters += _drop_appended(path, lambda line: expired(line, False), dry_run)
    for path in sorted(paths.event_spool.glob("slot-*/corrupt.jsonl")):
        report.spool_set_aside += _drop_appended(path, lambda line: expired(line, True), dry_run)
    report.undated = undated
    if not kafka:
        def old(event: dict) -> bool:
            return "timestamp" in event and datetime.fromisoformat(event["timestamp"]) < cutoff

        report.spool_events, report.spool_open, _ = _spool(paths.event_spool, old, dry_run)
    return report


def _shopper_hits(path: Path, wanted: dict[str, pa.Array]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The shopper columns (``user_id``, ``session_id``) of the Parquet file at ``path`` and, per column, which
    rows hold one of the ``wanted`` ids (read with pyarrow alone: a third of pandas' time a file; a file
    written before a column was logged has none)."""
    try:
        table = pq.read_table(path, columns=list(wanted))
    except (pa.ArrowInvalid, KeyError):  # a column missing from this file
        present = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[c for c in wanted if c in present])
    out = {c: np.zeros(table.num_rows, dtype=bool) for c in wanted}
    for column in [c for c in wanted if c in table.column_names and len(wanted[c])]:
        values = table.column(column).cast(pa.string())  # a column all null in this file is of type null
        out[column] = pc.fill_null(pc.is_in(values, value_set=wanted[column]), False).to_numpy(zero_copy_only=False)
    return table, out


def _replace(path: Path, table: pa.Table, keep_empty: bool = False) -> None:
    """``table`` in place of the Parquet file at ``path`` (a reader sees the old file or the new one); no
    rows left: the file is removed (unless ``keep_empty``: a table others read). The temporary name is one
    the log sink removes if a crash leaves it, and not the one it writes that file's rows to."""
    if table.num_rows == 0 and not keep_empty:
        path.unlink()
        return
    tmp = path.with_name(f"{path.stem}.erasing{path.suffix}.tmp")
    pq.write_table(table, tmp)
    fsync_path(tmp)
    os.replace(tmp, path)


def _purchases_of(state: Path, match: Callable[[str, str], bool], read_only: bool = False) -> dict[str, str]:
    """event id -> user id of the streaming state's purchases that ``match(user_id, timestamp)``. ``read_only``
    (a dry run): the state is opened for reading only, and nothing is made beside it, so one who may not write
    it (nor its folder) counts, and one who may leaves no file the consumer's user could not write (:func:`_read`)."""
    if not state.is_file():
        return {}
    query = "SELECT event_id, user_id, ts FROM purchases"
    rows = _read(state, query) if read_only else _rows(sqlite3.connect(state), query)
    return {event: user for event, user, ts in rows if match(user, ts)}


def _rows(db: sqlite3.Connection, query: str) -> list[tuple]:
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _read(state: Path, query: str, tries: int = 5) -> list[tuple]:
    """``query``'s rows of the sqlite file ``state`` (in WAL mode), opened for reading only. With its write-ahead
    log there (a consumer has the file open), read with it; without (all of it in the file), read as a file that
    does not change (``immutable``: no lock, and no log made beside it, which a reader could not remove and the
    consumer's user might not write); as a writer may open it and fold its log in meanwhile, a read the file
    changed under (or that sqlite found torn) is read again."""
    uri = state.resolve().as_uri()
    if state.with_name(f"{state.name}-wal").exists():
        return _rows(sqlite3.connect(f"{uri}?mode=ro", uri=True), query)
    for attempt in range(tries):
        before = _version(state)
        try:
            rows = _rows(sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True), query)
        except sqlite3.DatabaseError:
            if attempt == tries - 1:
                raise
            continue
        if _version(state) == before:
            return rows
    return _rows(sqlite3.connect(f"{uri}?mode=ro", uri=True), query)


def _version(state: Path) -> tuple[int, int, int, bool]:
    stat = state.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, state.with_name(f"{state.name}-wal").exists()


def _drop_purchases(state: Path, purchases: dict[str, str], dry_run: bool, push: PushDirty | None,
                    done: str, also: Collection[str] = ()) -> str:
    """Delete ``purchases`` (event id -> user) from the streaming state and mark their shoppers' profiles
    (and those of ``also``) to push again; then push them with ``push``. Says what became of the profiles."""
    users = sorted(set(purchases.values()) | set(also))
    if not users:
        return "none"
    if dry_run:
        return f"{len(users)} to be {done}"
    db = open_state(state)
    try:
        with db:
            events = list(purchases)
            for start in range(0, len(events), 900):
                chunk = events[start : start + 900]
                db.execute(f"DELETE FROM purchases WHERE event_id IN ({','.join('?' * len(chunk))})", chunk)
            mark_dirty(db, "user", users)  # a new mark, even on one a push in flight read
    finally:
        db.close()
    if push is None:
        return f"{len(users)} marked: the streaming consumer pushes them at its next batch or start"
    try:
        push()
    except Exception as error:  # noqa: BLE001 - the marks stay: the consumer pushes them later
        logger.warning("profiles not pushed (%s); the streaming consumer pushes them at its next batch", error)
        return f"{len(users)} marked, not pushed ({error}): the streaming consumer pushes them at its next batch"
    return f"{len(users)} {done} in the online store"


def _when(line: str, spooled: bool) -> datetime | None:
    """When a dead letter (``spooled``: a spool line set aside, whose value is a whole spool line) happened: its
    event's ``timestamp`` (no offset: UTC) when its value reads as one, else when it was written (``time``: the
    dead letters written since it is kept), else None."""
    record = None
    try:
        record = json.loads(line)
        event = json.loads(record.get("value") or "")
        stamp = datetime.fromisoformat((event["value"] if spooled else event)["timestamp"])
        return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
    except (ValueError, KeyError, TypeError, AttributeError):  # damaged, or not an event
        pass
    at = record.get("time") if isinstance(record, dict) else None
    try:
        return datetime.fromtimestamp(at, UTC) if isinstance(at, int | float) else None
    except (OverflowError, OSError, ValueError):  # out of the clock's range
        return None


def _drop_appended(path: Path, drop: Callable[[str], bool], dry_run: bool) -> int:
    """:func:`_drop_lines` on a file processes append to (dead letters, shadow records), holding its lock alone
    (:func:`core.files.exclusive`) from the read until the file is replaced, so no line
    appended meanwhile is lost: an append waits meanwhile (a search never does: shadow records are written in
    the background). A dry run, which writes nothing, takes no lock."""
    with nullcontext() if dry_run else exclusive(path):
        return _drop_lines(path, drop, dry_run)


def _drop_lines(path: Path, drop: Callable[[str], bool], dry_run: bool) -> int:
    """Remove the JSON lines of ``path`` that ``drop`` names (a line that is not JSON stays); returns how many."""
    kept, dropped = [], 0
    for line in path.read_text().splitlines(keepends=True):
        if _named(line, drop):
            dropped += 1
        else:
            kept.append(line)
    if dropped and not dry_run:
        write_text_atomic(path, "".join(kept))
    return dropped


def _spool(root: Path, drop: Callable[[dict], bool], dry_run: bool) -> tuple[int, int, int]:
    """Drop the lines whose event ``drop`` names from the spool's segments (a spool no server ships to
    Kafka); a slot a running server holds keeps its last segment, which that server appends to (its
    lines are only counted). Returns the lines dropped, the segments left open and their lines named.
    A dry run holds no slot (it only looks whether a server does: :func:`slot_held`) and writes nothing, so
    one who may only read the spool counts."""
    def named(line: str) -> bool:
        return drop(json.loads(line).get("value") or {})

    dropped = left = left_lines = 0
    for folder in sorted(p for p in root.glob("slot-*") if p.is_dir()):
        segments = sorted(folder.glob("segment-*.jsonl"))
        if not segments:
            continue
        lock = None if dry_run else hold_slot(root, folder.name)
        served = slot_held(root, folder.name) if dry_run else lock is None
        if served:  # a server holds the slot and appends to its last segment
            left += 1
            left_lines += _drop_lines(segments[-1], named, dry_run=True)
            segments = segments[:-1]
        try:
            shipped = folder / "shipped.json"  # left by a server that once shipped to Kafka: kept true
            position = json.loads(shipped.read_text()) if shipped.is_file() else None
            for path in segments:
                if position is not None and path.name == f"segment-{int(position['segment']):08d}.jsonl":
                    position["offset"] = _offset_after(path, named, int(position["offset"]))
                dropped += _drop_lines(path, named, dry_run)
            if position is not None and not dry_run:
                write_text_atomic(shipped, json.dumps(position))
        finally:
            if lock is not None:
                lock.close()
    return dropped, left, left_lines


def _offset_after(path: Path, drop: Callable[[str], bool], offset: int) -> int:
    """Where byte ``offset`` of ``path`` (a shipper's position, at a line's start) is once the lines ``drop``
    names are removed: the bytes of the lines kept before it."""
    kept = start = 0
    for line in path.read_text().splitlines(keepends=True):
        if start >= offset:
            break
        size = len(line.encode())
        kept += 0 if _named(line, drop) else size
        start += size
    return kept


def _named(line: str, drop: Callable[[str], bool]) -> bool:
    """Whether ``drop`` names the JSON ``line`` (a blank line, or one that is not JSON, never is)."""
    try:
        return bool(line.strip()) and drop(line)
    except (ValueError, AttributeError, TypeError):
        return False


def _mentions(line: str, users: set[str], sessions: set[str]) -> bool:
    """Whether a spool line set aside as not an event (its text under ``value``) holds one of the ids as a JSON
    string anywhere: it is damaged, so where an id sits in it cannot be trusted."""
    value = str(json.loads(line).get("value", ""))
    return any(json.dumps(i) in value for i in (*users, *sessions))


def _names(line: str, users: set[str], sessions: set[str]) -> bool:
    """Whether a dead letter holds one of the ids: its event's ``user_id`` / ``session_id`` when the event
    is JSON, else any of the ids as a JSON string anywhere in it."""
    value = json.loads(line).get("value", "")
    # an id sent as a number (refused, so dead-lettered) matches its text as it was written (1e20) and as Python
    # writes the number (1e+20); each read on its own: Python refuses an integer of over 4,300 digits elsewhere in
    # the event (a ValueError), and the text as written must still match then
    events = []
    for numbers in (str, None):  # as written, then as Python reads them (None: json's own)
        try:
            events.append(json.loads(value, parse_int=numbers, parse_float=numbers))
        except ValueError:  # not JSON (then neither reads), or an integer too long for Python
            pass
    if all(isinstance(event, dict) for event in events) and events:
        return any(_text(event.get("user_id")) in users or _text(event.get("session_id")) in sessions
                   for event in events)
    return any(json.dumps(i) in value for i in (*users, *sessions))


def _text(value: object) -> str | None:
    """A dead letter's id as text (``12345`` as ``"12345"``); None for none, or one that is no single value."""
    return None if value is None or isinstance(value, dict | list) else str(value)
