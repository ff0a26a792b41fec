"""Every accepted event is written to a local log first, then shipped to Kafka in order.

- **Append** (:meth:`EventLog.append`): events are appended to the current
  segment file (JSON lines) and flushed; with ``durable=True`` the call returns
  only after an ``fsync`` that covers them (group commit: concurrent callers
  share one fsync). ``/v1/events`` answers 202 only then, so an accepted event
  survives a crash of the process or the machine. Impressions from searches
  use ``durable=False`` (flushed at once, fsynced within ``sync_interval``).
  An fsync that fails takes back every line it was to cover (cut off the
  segment, uncounted): their callers are told that nothing was kept, and
  nothing of it is shipped.
- **Ship**: a background thread sends the log to Kafka in append order
  (``acks=all``, idempotent producer), only lines an fsync covered, and
  records how far it got only after the broker acknowledged. A broker outage
  leaves the events in the log (the durable spool) and the shipper retries with
  back-off; they go out in order when the broker is back. After a crash the shipper resumes from its last
  recorded position, so an event may be sent twice, never lost: consumers
  de-duplicate by ``event_id``. A whole line that is not an event (zeros a
  crash left where its bytes never reached the disk) is copied to
  ``corrupt.jsonl`` in the spool folder and passed over (:meth:`EventLog._set_aside`),
  so one bad line does not stop the shipping. The segments shipped are then removed: the
  broker holds the events from its acknowledgement on, so a broker without
  durable storage (Tansu in memory, as the local topology runs it) loses on a
  restart the events the consumers had not read yet.
- **No Kafka configured** (the embedded default): the segments are the event
  log on disk; nothing is shipped or deleted.
- **Several server processes**: each claims its own spool folder
  (:func:`claim_spool`, ``slot-0``, ``slot-1``, ... under the spool root, held by
  a file lock), so no two processes append to or ship from the same segments;
  a restarted server takes a free slot back and ships what it left there, and with Kafka a
  running one ships the slots no live process holds (:meth:`EventLog.adopt_orphans`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core.errors import Conflict
from core.files import append_line, write_text_atomic
from online_learning.events import InteractionEvent, RankingEvent, key_of, topic_of

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    client_id: str = "shoprank-api"
    send_timeout: float = 10.0


Damaged = tuple[int, int, bytes]  # a spool line that is not an event: its segment, byte offset and bytes


@dataclass(frozen=True)
class Unrecorded:
    """How far an :class:`EventLog` of a spool slot shipped beyond what its ``shipped.json`` says (a full disk
    refused it): what :meth:`EventLog.adopt_orphans` keeps of a slot it shipped and gives to the next log it
    opens for it, which would otherwise go on from the file and send again what the broker took."""

    recorded: str | None  # the slot's shipped.json then (None: no file); changed since: this is stale
    at: tuple[int, int]  # the (segment, offset) shipped to
    aside: tuple[Damaged, ...] = ()  # lines passed over as not events that corrupt.jsonl does not hold yet


def hold_slot(root: Path, name: str) -> IO[str] | None:
    """The lock of the spool folder ``name`` under ``root``, held (closing the handle lets it go), or None
    when a live process holds it."""
    handle = open(root / f"{name}.lock", "w")  # noqa: SIM115 - the caller holds it as long as it uses the slot
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def slot_held(root: Path, name: str) -> bool:
    """Whether a live process holds the lock of the spool folder ``name`` under ``root`` (:func:`hold_slot`),
    looked at without holding it past the look nor making or writing anything: for a reader that may not
    write the spool (a dry run)."""
    try:
        handle = os.open(root / f"{name}.lock", os.O_RDONLY)
    except FileNotFoundError:  # never held
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)  # lets the look's lock go
    return False


def _holds_unshipped(folder: Path) -> bool:
    """Whether the spool slot at ``folder`` holds bytes after its shipped position (sizes only, nothing read;
    a shipped position that cannot be read: True, the slot's own reader decides)."""
    segments = sorted(int(p.stem.split("-")[1]) for p in folder.glob("segment-*.jsonl"))
    if not segments:
        return False
    try:
        data = json.loads((folder / "shipped.json").read_text())
        segment, offset = int(data["segment"]), int(data["offset"])
    except FileNotFoundError:
        segment, offset = segments[0], 0
    except (OSError, ValueError, KeyError, TypeError):
        return True
    for number in segments:
        if number >= segment:
            try:
                size = (folder / f"segment-{number:08d}.jsonl").stat().st_size
            except FileNotFoundError:
                continue
            if size > (offset if number == segment else 0):
                return True
    return False


def _recorded(folder: Path) -> str | None:
    """The text of the spool slot ``folder``'s shipped.json (None: no file), to tell whether it changed."""
    try:
        return (folder / "shipped.json").read_text()
    except FileNotFoundError:
        return None


def _slot_number(folder: Path) -> int:
    try:
        return int(folder.name.removeprefix("slot-"))
    except ValueError:
        return 1 << 30


def claim_spool(root: Path, slots: int = 64) -> tuple[Path, object]:
    """The first spool folder under ``root`` that no other live process holds, and its lock.

    Keep the returned lock object open as long as the folder is used; the lock is
    released when the process ends, however it ends.
    """
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = hold_slot(root, f"slot-{slot}")
        if handle is not None:
            return root / f"slot-{slot}", handle
    raise Conflict(f"all {slots} event spool slots under {root} are held by live processes; "
                   "run fewer server processes (SHOPRANK_API__WORKERS) on this home")


class EventLog:
    """Durable local event log with an in-order Kafka shipper.

    Args:
        folder: Where segments and the shipped position live.
        kafka: Broker to ship to, or None to keep the log on disk only.
        store: The store whose events these are (its own topics); None: the default store.
        sync_interval: Seconds between background fsyncs of non-durable appends.
        resume: Where an earlier log of this folder in this process shipped to that it could not record
            (:meth:`unrecorded`): shipping goes on from there.
    """

    def __init__(self, folder: Path, kafka: KafkaSettings | None = None, sync_interval: float = 0.1,
                 batch: int = 500, store: str | None = None, adopt_every_s: float = 30.0,
                 resume: Unrecorded | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.store = store
        self.kafka = kafka
        self.batch = batch
        self.sync_interval = sync_interval
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._new_data = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        segments = self._segments()
        # a new segment each start: the earlier ones are closed for good (an erasure may rewrite them); an
        # empty last one (a start that took no event) is taken again, so restarts do not pile up empty files
        last = segments[-1] if segments else 0
        self._segment = last if last and self._path(last).stat().st_size == 0 else last + 1
        # unbuffered: an append is on disk whole, or (a full disk) cut back to where it started
        self._file = open(self._path(self._segment), "ab", buffering=0)  # noqa: SIM115 - held open for appends
        self._written = 0
        self._synced = 0
        # how far the open segment is fsynced: (its file, byte offset, lines written up to there)
        self._mark: tuple[IO[bytes], int, int] = (self._file, 0, 0)
        self._waiting: set[int] = set()  # line counts that durable appends wait to see fsynced
        self._withdrawn: set[int] = set()  # those of them a failed fsync took back
        self.appended = 0
        self.shipped = 0
        self.ship_failures = 0
        self.quarantined = 0  # spool lines that are not events, copied to corrupt.jsonl and passed over
        # where this process has shipped to: ahead of shipped.json while a full disk keeps it from being written
        self._shipped_at: tuple[int, int] | None = resume.at if resume else None
        # the lines passed over as not events that a full disk kept out of corrupt.jsonl: set aside at a later
        # round, and until then shipped.json stays before the first of them (:meth:`_record`)
        self._aside: list[Damaged] = list(resume.aside) if resume else []
        self._unsaved = resume is not None  # shipped.json is behind _shipped_at (or before lines in _aside)
        self._retry_at = 0.0  # the monotonic time from which a round with nothing to send records it again
        self._producer = None
        self.orphan_pending = 0  # events in spool slots no live process holds, not shipped yet
        self._adopted: dict[Path, Unrecorded] = {}  # per slot adopted: where it shipped to, not recorded there
        # left by an earlier run (the lines kept to set aside are not set aside yet: pending, as those after them)
        self._backlog = self._unshipped() + len(self._aside) if kafka is not None else 0
        self._threads = [threading.Thread(target=self._sync_loop, name="event-log-sync", daemon=True)]
        if kafka is not None:
            self._threads.append(threading.Thread(target=self._ship_loop, name="event-log-ship", daemon=True))
            if adopt_every_s > 0 and folder.name.startswith("slot-"):
                self._threads.append(threading.Thread(target=self._adopt_loop, args=(adopt_every_s,),
                                                      name="event-log-adopt", daemon=True))
        for thread in self._threads:
            thread.start()

    # -- files ------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.folder / f"segment-{segment:08d}.jsonl"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("segment-*.jsonl"))

    def _position(self) -> tuple[int, int]:
        if self._shipped_at is not None:
            return self._shipped_at
        file = self.folder / "shipped.json"
        if file.is_file():
            data = json.loads(file.read_text())
            return int(data["segment"]), int(data["offset"])
        segments = self._segments()
        return (segments[0] if segments else 1), 0

    def _save_position(self, segment: int, offset: int) -> None:
        write_text_atomic(self.folder / "shipped.json", json.dumps({"segment": segment, "offset": offset}))

    # -- append -----------------------------------------------------------------
    def append(self, events: Iterable[RankingEvent | InteractionEvent], durable: bool = True) -> None:
        """Append events; with ``durable`` return after they are fsynced."""
        lines = [json.dumps({"topic": topic_of(e, self.store), "key": key_of(e), "event_id": e.event_id,
                             "value": e.model_dump(mode="json")}, separators=(",", ":")).encode() + b"\n"
                 for e in events]
        if not lines:
            return
        with self._lock:
            fd = self._file.fileno()
            if os.fstat(fd).st_size > SEGMENT_BYTES:
                self._rotate()
                fd = self._file.fileno()
            data, start = memoryview(b"".join(lines)), os.fstat(fd).st_size
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError:  # a full disk: none of these events is kept, and no half line either
                os.ftruncate(fd, start)
                raise
            self._written += len(lines)
            self.appended += len(lines)
            target = self._written
            if durable:
                self._waiting.add(target)
        if durable:
            try:
                self._sync(target)
            finally:
                with self._lock:
                    self._waiting.discard(target)
                    self._withdrawn.discard(target)
        with self._new_data:
            self._new_data.notify_all()

    def _rotate(self) -> None:
        # the next segment opened first: a disk that refuses it leaves this one in use, not a closed file
        fresh = open(self._path(self._segment + 1), "ab", buffering=0)  # noqa: SIM115
        os.fsync(self._file.fileno())
        self._file.close()
        self._segment += 1
        self._file = fresh
        self._mark = (fresh, 0, self._written)  # every line before it is in the closed segment, fsynced

    def _sync(self, target: int) -> None:
        """Return once the first ``target`` lines are fsynced; raise OSError when an fsync failed and took
        them back (:meth:`_withdraw`)."""
        with self._sync_lock:
            with self._lock:
                if target in self._withdrawn:
                    raise OSError(errno.EIO, "the event log's fsync failed, and these events were taken back")
                if self._synced >= target:
                    return  # another caller's fsync covered these lines
                written, file = self._written, self._file
                fd, size = file.fileno(), os.fstat(file.fileno()).st_size
            try:
                os.fsync(fd)
            except OSError:
                # the lines not fsynced before are cut (or a rotation meanwhile fsynced them): none is left to sync
                cut = self._withdraw(file)
                self._synced = written
                with self._lock:
                    if cut and target in self._withdrawn:
                        raise
                return
            self._synced = written
            with self._lock:
                if self._file is file and size > self._mark[1]:
                    self._mark = (file, size, written)

    def _withdraw(self, file: IO[bytes]) -> bool:
        """After a failed fsync of ``file``: cut the open segment back to where it was last fsynced and take
        those lines back (uncounted; the durable appends among them fail), as an append the disk refused.
        False when ``file`` is no longer the open segment (a rotation fsynced it since)."""
        with self._lock:
            if file is not self._file:
                return False
            _, offset, lines = self._mark
            taken = {target for target in self._waiting if target > lines}
            self._withdrawn |= taken
            self._waiting -= taken
            try:
                os.ftruncate(file.fileno(), offset)
            except OSError as error:  # the disk refuses this too: the lines stay, and go out once an fsync holds
                logger.error("an fsync of the event log %s failed, and its last %d lines could not be taken back "
                             "(%s): their callers were refused, and they may still be shipped (a consumer keeps an "
                             "event sent again once, by its event_id)", self._path(self._segment),
                             self._written - lines, error)
                return True
            self.appended -= self._written - lines
            self._mark = (file, offset, self._written)  # the lines cut stay numbered: later ones go on from here
            logger.error("an fsync of the event log %s failed: its last %d lines were taken back",
                         self._path(self._segment), self._written - lines)
            return True

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.sync_interval):
            if self._synced < self._written:
                try:
                    self._sync(self._written)
                except (OSError, ValueError):  # file rotated or closed meanwhile
                    pass

    # -- ship -------------------------------------------------------------------
    def pending(self) -> int:
        """Events appended but not yet acknowledged by the broker (0 without Kafka): counted, not read from
        the spool (a long outage's backlog would be read again at every call). Lines set aside as not events
        are not pending."""
        if self.kafka is None:
            return 0
        return max(0, self._backlog + self.appended - self.shipped - self.quarantined)

    def _unshipped(self) -> int:
        """The spool's whole lines after the shipped position (read once, at start; a torn last line, which
        the shipper never sends, does not count)."""
        segment, offset = self._position()
        count = 0
        for s in self._segments():
            if s < segment:
                continue
            with open(self._path(s), "rb") as handle:
                if s == segment:
                    handle.seek(offset)
                count += sum(1 for line in handle if line.endswith(b"\n"))
        return count

    def _connect(self):  # type: ignore[no-untyped-def]
        from kafka import KafkaProducer

        assert self.kafka is not None
        return KafkaProducer(bootstrap_servers=self.kafka.bootstrap_servers, client_id=self.kafka.client_id,
                             acks="all", enable_idempotence=True, linger_ms=5, retries=5,
                             request_timeout_ms=int(self.kafka.send_timeout * 1000),
                             max_block_ms=int(self.kafka.send_timeout * 1000))

    def _read_batch(self, segment: int, offset: int) -> tuple[list[dict], int, int, list[tuple[int, int, bytes]]]:
        """Up to ``batch`` records from the position, the position after them, and the lines passed over as
        not events (segment, offset, line): whole segments up to the one appends go to, and of that one what
        an fsync covered. The open segment is taken before reading: an append landing in it meanwhile (and a
        rotation after it) is read in a later round, and a segment is left behind (then deleted) only once it
        was closed before it was read."""
        with self._lock:
            live = self._segment
            synced = self._mark[1]
        records: list[dict] = []
        damaged: list[tuple[int, int, bytes]] = []
        while len(records) < self.batch:
            path = self._path(segment)
            if not path.is_file():
                break
            with open(path, "rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n") or (segment >= live and offset + len(line) > synced):
                        break  # a write in progress, or lines an fsync may yet take back
                    try:  # zeros a crash left where an earlier line's bytes never reached the disk run into this
                        record = json.loads(line.lstrip(b"\0"))  # line's start: the event after them is whole
                    except ValueError:  # not JSON, or not UTF-8
                        record = None
                    if isinstance(record, dict) and {"topic", "key", "value"} <= record.keys():
                        records.append(record)
                    else:
                        damaged.append((segment, offset, line))
                    offset += len(line)
                    if len(records) >= self.batch:
                        break
            if len(records) >= self.batch or segment >= live:
                break
            segment, offset = segment + 1, 0
        return records, segment, offset, damaged

    def _ship_once(self) -> int:
        segment, offset = self._position()
        records, next_segment, next_offset, damaged = self._read_batch(segment, offset)
        if records:
            if self._producer is None:
                self._producer = self._connect()
            futures = [self._producer.send(r["topic"], key=r["key"].encode(), value=json.dumps(r["value"]).encode())
                       for r in records]
            self._producer.flush(timeout=self.kafka.send_timeout if self.kafka else 10)
            for future in futures:
                future.get(timeout=0)  # raises if any send failed: position not advanced
        elif not damaged and not (self._unsaved and time.monotonic() >= self._retry_at):
            return 0  # nothing new, and nothing left to record (or not yet time to try again)
        self._shipped_at = (next_segment, next_offset)  # the broker has them: this process never sends them again
        self.shipped += len(records)
        self._aside += damaged
        self._record()
        return len(records)

    def _record(self) -> None:
        """Set aside the lines passed over that are not set aside yet (:meth:`_set_aside`), record the position
        shipped to (``shipped.json``) and remove the segments before it. A full disk that refuses the lines keeps
        them here, and the position recorded no further than the first of them (after a crash meanwhile they
        are read again, never lost, and the events after them are sent again: the consumers drop them by id);
        one that refuses the position keeps it here. Whatever the broker took is not sent again: the rounds go
        on from :attr:`_shipped_at`, and one with nothing new tries this again after 5 s."""
        self._unsaved = True
        if self._aside:
            try:
                self._set_aside(self._aside)
                self._aside = []
            except OSError as error:
                logger.warning("%d lines of the event spool %s that are not events could not be copied to %s (%s); "
                               "they are kept here and copied at a later round", len(self._aside), self.folder,
                               self.folder / "corrupt.jsonl", error)
        assert self._shipped_at is not None
        segment, offset = self._aside[0][:2] if self._aside else self._shipped_at
        try:
            self._save_position(segment, offset)
        except OSError as error:  # a full disk: the position is kept here until it can be written (after a crash
            # meanwhile, the batches since the last one written are sent again: the consumers drop them by id)
            logger.warning("the event spool %s could not record where it has shipped to (%s); it goes on from "
                           "there and records it at a later round", self.folder, error)
            self._retry_at = time.monotonic() + 5.0
            return
        self._unsaved = bool(self._aside)
        self._retry_at = time.monotonic() + 5.0
        for s in self._segments():
            if s < segment:
                self._path(s).unlink(missing_ok=True)

    def unrecorded(self) -> Unrecorded | None:
        """Where this log shipped to beyond what its ``shipped.json`` says, with the lines it passed over and
        could not set aside; None when the file says it all. For one that is closed (the ship thread stopped)."""
        if not self._unsaved or self._shipped_at is None:
            return None
        return Unrecorded(_recorded(self.folder), self._shipped_at, tuple(self._aside))

    def _set_aside(self, damaged: list[tuple[int, int, bytes]]) -> None:
        """Copy the spool lines that are not events to ``corrupt.jsonl`` in the spool folder, one JSON object
        each: the segment, the byte offset of the line in it, the line (``value``; bytes that are not UTF-8
        as ``\\xNN``) and when it was set aside (``time``: what `events prune` goes by, as such a line seldom
        reads as an event). Done before the recorded position moves past them: a crash between the two copies
        them again, never loses them; a disk that refuses them (OSError) leaves that to :meth:`_record`."""
        if not damaged:
            return
        now = time.time()
        # under the file's lock, shared: `events forget` and `prune` rewrite it (core.files.append_line)
        append_line(self.folder / "corrupt.jsonl", "\n".join(
            json.dumps({"segment": segment, "offset": offset, "value": line.decode(errors="backslashreplace"),
                        "time": now}) for segment, offset, line in damaged))
        self.quarantined += len(damaged)
        logger.warning("%d lines of the event spool %s are not events (a crash mid-write?): copied to %s and "
                       "passed over (%d so far)", len(damaged), self.folder, self.folder / "corrupt.jsonl",
                       self.quarantined)

    def _ship_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                sent = self._ship_once()
                backoff = 0.1
            except Exception as err:  # noqa: BLE001 - any broker failure: keep the spool, retry later
                self.ship_failures += 1
                logger.warning("shipping events to Kafka failed (%s); retrying in %.1fs", err, backoff)
                if self._producer is not None:
                    try:
                        self._producer.close(timeout=0)
                    except Exception:  # noqa: BLE001
                        pass
                    self._producer = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not sent:
                with self._new_data:
                    self._new_data.wait(0.05)

    def _adopt_loop(self, every_s: float) -> None:
        wait = min(5.0, every_s)  # the first round soon after start: a restart is when slots are left behind
        while not self._stop.wait(wait):
            wait = every_s
            try:
                self.adopt_orphans()
            except Exception:  # noqa: BLE001 - logged; tried again at the next round
                logger.exception("shipping the event spool slots no process holds failed")

    def adopt_orphans(self, drain_s: float = 60.0) -> int:
        """Ship the spool slots beside this one that no live process holds (a server process that died, a
        server started with fewer processes, an import that could not ship): each one's lock taken, its
        events sent in order, the lock let go. Returns the events shipped; what is left is ``orphan_pending``."""
        shipped = left = 0
        for folder in sorted((p for p in self.folder.parent.glob("slot-*") if p.is_dir() and p != self.folder),
                             key=_slot_number):
            lock = hold_slot(self.folder.parent, folder.name)
            if lock is None:  # a live process holds it and ships it
                if _slot_number(folder) < _slot_number(self.folder):  # a live process of a lower slot adopts
                    self.orphan_pending = 0  # (and counts) the orphans: one process, not each
                    return 0
                continue
            # where this process shipped the slot to at an earlier round that a full disk kept out of its
            # shipped.json: gone on from, so what the broker took is not sent again every round
            kept = self._adopted.pop(folder, None)
            try:
                if kept is not None and kept.recorded != _recorded(folder):
                    kept = None  # another process shipped it since and recorded where to: the file says
                if not _holds_unshipped(folder):  # a look at sizes: no producer opened for an empty slot
                    continue
                orphan = EventLog(folder, self.kafka, store=self.store, adopt_every_s=0, resume=kept)
                try:
                    if orphan.pending():
                        orphan.drain(drain_s)
                    shipped += orphan.shipped  # counted by the log: its ship thread may be done before a look
                    left += orphan.pending()
                finally:
                    try:
                        orphan.close()  # records the position if the disk has room now
                    finally:
                        unrecorded = orphan.unrecorded()
                        if unrecorded is not None:
                            self._adopted[folder] = unrecorded
            finally:
                lock.close()
        self.orphan_pending = left
        if shipped:
            logger.info("shipped %d events left in spool slots no process holds", shipped)
        return shipped

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every appended event is shipped (True) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.05)
        return self.pending() == 0

    def close(self) -> None:
        self._stop.set()
        with self._new_data:
            self._new_data.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._unsaved and not any(thread.is_alive() for thread in self._threads):
            self._record()  # a last try at recording where it shipped to (the ship thread is done: no round meanwhile)
        with self._lock:
            os.fsync(self._file.fileno())
            self._file.close()
        if self._producer is not None:
            self._producer.close(timeout=5)
