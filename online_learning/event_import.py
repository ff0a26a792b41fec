"""Historical events into ShopRank (``shoprank events import``): a store moving from another
engine brings its past searches and clicks, so retraining, the reports, suggestions and
recommendations start from them.

The file holds events of the event schema (:mod:`online_learning.events`: ranking events with
their shown items, interactions pointing back at them by ``request_id``), one JSON object per
line (``.jsonl``, ``.ndjson``, optionally ``.gz``) or one JSON array (``.json``). Every line is
validated; an invalid one is reported by its line number, field and value and skipped (with
``strict``, any invalid line stops the import before anything is written). Valid events go, in
batches, to the offline Parquet log as the log sink writes them (:class:`ParquetLogSink`: by
event day, de-duplicated by event id, so importing a file twice adds nothing), or with
``publish`` to the event spool that ships them to Kafka, where the log sink and the streaming
feature consumer take them as live events.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from core.errors import InvalidInput
from online_learning.consumers.base import Delivered
from online_learning.consumers.log_sink import ParquetLogSink
from online_learning.event_log import EventLog
from online_learning.events import InteractionEvent, RankingEvent, parse
from online_learning.forget_list import ForgetList, filtered

logger = logging.getLogger(__name__)

MAX_ERRORS = 20  # invalid lines listed in the report (all are counted)
TYPES = ("ranking", "click", "add_to_cart", "purchase")


@dataclass
class ImportReport:
    """What an import read, wrote and rejected."""

    file: str
    lines: int = 0
    valid: int = 0
    invalid: int = 0
    rankings: int = 0
    interactions: int = 0
    written: int = 0  # new events in the log (publish: appended to the spool)
    forgotten: int = 0  # events of shoppers erased since (online_learning.forget_list): not written
    duplicates: int = 0  # already in the log (an earlier import, or live traffic)
    undated: int = 0  # valid events without a timestamp: stamped with the time of the import (as the API does)
    first: str | None = None
    last: str | None = None
    errors: list[str] = field(default_factory=list)  # the first MAX_ERRORS, "line N: field: message (got value)"

    def reject(self, line: int, error: Exception) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"line {line}: {describe(error)}")


def describe(error: Exception) -> str:
    """One line for a rejected event: the field, what was wrong and the value."""
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        loc = list(first.get("loc", ()))
        if loc and loc[0] in TYPES:  # the union's tag: the field is what follows
            loc = loc[1:]
        where = ".".join(str(part) for part in loc) or "event"
        got = repr(first.get("input"))
        return f"{where}: {first['msg']} (got {got[:80]}{'...' if len(got) > 80 else ''}; {error.error_count()} " \
               f"error{'s' if error.error_count() > 1 else ''})"
    return str(error)


def spool_lines(root: Path) -> Iterator[tuple[int, str | ValueError]]:
    """(line number across the files, one event's JSON) of an event spool (``<store>/event_spool``: the
    segments of every server slot, in order): each record's event, out of its ``{"topic", "key", "value"}``
    envelope. A last line still being written (no line end yet) is left for the next import."""
    n = 0
    for segment in sorted(root.glob("slot-*/segment-*.jsonl")) + sorted(root.glob("segment-*.jsonl")):
        name = segment.relative_to(root)  # slot-K/segment-N.jsonl: every slot has a segment of each number
        for k, data in enumerate(segment.read_bytes().splitlines(keepends=True), 1):
            n += 1
            if not data.endswith(b"\n"):
                break
            try:  # zeros a crash left where an earlier line's bytes never reached the disk: as the shipper reads it
                record = json.loads(data.lstrip(b"\0"))
            except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
                yield n, ValueError(f"{name} line {k}: not a spool record ({err})")
                continue
            value = record.get("value") if isinstance(record, dict) else None
            yield n, json.dumps(value) if isinstance(value, dict) else ValueError(
                f"{name} line {k}: a spool record holds an event under 'value'")


def is_spool(path: Path) -> bool:
    """Whether ``path`` is laid out as an event spool folder (maybe with nothing in it yet), to be read as one.
    Its events' timestamps are checked all the same: only this store's own spool (``import_events``'
    ``stored``) holds events a server accepted, whatever folder holds segments like it."""
    return path.is_dir() and (path.name == "event_spool" or any(path.glob("slot-*/segment-*.jsonl"))
                              or any(path.glob("segment-*.jsonl")))


def lines_of(path: Path) -> Iterator[tuple[int, str | ValueError]]:
    """(line number, one event's JSON) of a JSONL file or a JSON array (numbered by element, from 1), or of an
    event spool folder (:func:`spool_lines`); a line that is not UTF-8 comes as the error, to be reported as
    an invalid line."""
    if is_spool(path):
        yield from spool_lines(path)
        return
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file; give a .jsonl, .ndjson or .json file of events (optionally .gz)")
    opener = gzip.open if path.suffix == ".gz" else open
    kind = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    if kind not in (".jsonl", ".ndjson", ".json"):
        raise InvalidInput(f"{path.name}: the file type {kind or '(none)'!r} is not one of .jsonl, .ndjson, .json "
                           "(each optionally .gz)")
    n = 0
    try:
        with opener(path, "rb") as raw:
            if kind == ".json":
                try:
                    items = json.loads(raw.read().decode("utf-8-sig"))
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # nested past Python's stack
                    raise InvalidInput(f"{path.name} is not one JSON array of UTF-8 text: {err}; for a file of one "
                                       "event per line name it .jsonl") from None
                if not isinstance(items, list):
                    raise InvalidInput(f"{path.name} holds a JSON {type(items).__name__}, not an array of events")
                for n, item in enumerate(items, 1):
                    yield n, json.dumps(item)
                return
            for n, data in enumerate(raw, 1):
                try:
                    line = data.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    yield n, ValueError(f"not UTF-8 text (byte {err.start}); save the file as UTF-8")
                    continue
                if line.strip():
                    yield n, line
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; EOFError: cut short
        raise InvalidInput(f"{path.name} could not be read after line {n}: {err or type(err).__name__}; give a "
                           "whole file (gzip only when named .gz)") from None


def import_events(path: Path, log_root: Path, store: str | None = None, batch: int = 50_000, strict: bool = False,
                  dry_run: bool = False, publish: EventLog | None = None, progress: bool = True,
                  forget: ForgetList | None = None, stored: bool = False) -> ImportReport:
    """Validate the events of ``path`` and write the valid ones to the offline log at ``log_root``
    (or append them to ``publish``, an event log shipping to Kafka); with ``dry_run`` or when
    ``strict`` finds an invalid line, nothing is written. The log keeps a file per hour of event
    time per write, so each ``batch`` of events is written in time order: a file in time order
    writes a few files per batch, a shuffled one a file for every hour the batch spans. The events
    of shoppers ``forget`` lists as erased after them are counted and left out. ``stored``: ``path`` is
    this store's own event spool (``events import --spool``), whose events a server accepted, so their
    timestamps are checked against this machine's clock only past twice the allowance (48 hours ahead: a
    server whose clock ran further ahead had its events refused here too); any other file or folder is
    checked against the allowance (no more than 24 hours ahead), though it be laid out like a spool."""
    report = ImportReport(str(path))
    if forget is not None:
        forget.refresh()  # for a dry run's count; each batch written reads it again (_write)
    if strict or dry_run:
        for n, line in tqdm(lines_of(path), desc="validate", unit="event", disable=not progress):
            event = _check(report, n, line, stored)
            if dry_run and event is not None and forget is not None and forget.erased(event):
                report.forgotten += 1  # a dry run counts what the import would leave out
        if dry_run or report.invalid:
            return report
        report = ImportReport(str(path))
    sink = None if publish is not None else ParquetLogSink(log_root)
    pending: list[Delivered] = []
    for n, line in tqdm(lines_of(path), desc="import", unit="event", disable=not progress):
        event = _check(report, n, line, stored)
        if event is not None:
            kind = "rankings" if isinstance(event, RankingEvent) else "interactions"
            pending.append(Delivered(f"import.{store or 'default'}.{kind}", 0, n, event))
        if len(pending) >= batch:
            _write(report, pending, sink, publish, forget)
            pending = []
    _write(report, pending, sink, publish, forget)
    if report.undated:
        logger.warning("%s: %d events gave no timestamp and were stamped with the time of this import: send "
                       "when each happened, as the log, the retrain windows and erasures go by it",
                       path, report.undated)
    return report


def _check(report: ImportReport, n: int, line: str | ValueError,
           stored: bool = False) -> RankingEvent | InteractionEvent | None:
    report.lines += 1
    if isinstance(line, ValueError):
        report.reject(n, line)
        return None
    try:
        event = parse(line, stored)
    except (ValidationError, ValueError) as err:
        report.reject(n, err)
        return None
    if not stored and isinstance(event, InteractionEvent) and event.received is not None:
        # only a server's spool holds the time a server received an event; a file's would count for erasures
        event = event.model_copy(update={"received": None})
    report.valid += 1
    report.undated += "timestamp" not in event.model_fields_set  # the model's default: now
    if isinstance(event, RankingEvent):
        report.rankings += 1
    else:
        report.interactions += 1
    when = event.timestamp.isoformat()
    report.first = min(report.first or when, when)
    report.last = max(report.last or when, when)
    return event


def _write(report: ImportReport, batch: list[Delivered], sink: ParquetLogSink | None,
           publish: EventLog | None, forget: ForgetList | None) -> None:
    """Write ``batch`` less the events of erased shoppers, holding the erasure list's lock shared from its
    reading until the batch is written, as the consumers do (:class:`ForgetList`): an erasure listed
    meanwhile waits, then finds the batch's rows at rest."""
    if not batch:
        return
    with filtered(forget, batch, lambda d: d.event) as (batch, dropped):
        report.forgotten += dropped
        if not batch:
            return
        if publish is not None:
            publish.append([d.event for d in batch], durable=True)
            report.written += len(batch)
            return
        assert sink is not None
        written, duplicates = sink.written, sink.duplicates
        sink(sorted(batch, key=lambda d: d.event.timestamp))
        report.written += sink.written - written
        report.duplicates += sink.duplicates - duplicates
