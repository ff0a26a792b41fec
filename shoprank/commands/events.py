"""``shoprank events import``: historical events into the event log (see online_learning/event_import.py)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from core.errors import InvalidInput
from core.settings import Settings


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.event_import import import_events

    if not 1 <= args.batch <= 1_000_000:
        raise InvalidInput(f"--batch {args.batch} must be in 1..1000000")
    publish = None
    if args.publish:
        from online_learning.event_log import EventLog, KafkaSettings, claim_spool

        if not settings.events.kafka_bootstrap:
            raise InvalidInput("--publish needs a broker: set SHOPRANK_EVENTS__KAFKA_BOOTSTRAP (host:port)")
        spool, _lock = claim_spool(settings.paths.event_spool)
        publish = EventLog(spool, KafkaSettings(settings.events.kafka_bootstrap), store=settings.store)
    try:
        report = import_events(Path(args.file), settings.paths.event_log, settings.store, args.batch, args.strict,
                               args.dry_run, publish, progress=settings.progress)
        shipped = publish.drain(args.drain_s) if publish is not None else None
    finally:
        if publish is not None:
            publish.close()
    out = asdict(report) | {"log": str(settings.paths.event_log), "dry_run": args.dry_run}
    if publish is not None:
        out |= {"published": True, "shipped": shipped,
                "note": None if shipped else "the rest waits in the event spool; a server or the next import "
                "on this home ships it when the broker answers"}
    print(json.dumps(out, indent=2))
    return 1 if report.invalid else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="import historical events (searches shown, clicks, carts, purchases)")
    verbs = events.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("import", help="validate a file of events (JSONL or a JSON array, optionally .gz) and write "
                         "them to the offline event log; exits 1 when a line was invalid")
    p.add_argument("file", help="events in the event schema (GET /openapi.json, POST /v1/events), one per line")
    p.add_argument("--strict", action="store_true", help="write nothing when any line is invalid")
    p.add_argument("--dry-run", action="store_true", help="only validate and count")
    p.add_argument("--publish", action="store_true", help="send them to Kafka through the event spool instead "
                   "(the log sink and the streaming feature consumer take them as live events)")
    p.add_argument("--batch", type=int, default=50_000, help="events per write (default 50000; the log keeps a "
                   "file per hour of event time per write)")
    p.add_argument("--drain-s", type=float, default=300.0, help="--publish: how long to wait for the spool to "
                   "ship (default 300)")
    p.set_defaults(handler=cmd_import)
