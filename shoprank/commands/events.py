"""``shoprank events import``: historical events into the event log (see online_learning/event_import.py);
``shoprank events forget`` and ``prune``: a shopper's data erased, the log kept to a window
(online_learning/privacy.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from core.arguments import non_negative_number
from core.errors import InvalidInput
from core.settings import Settings


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.event_import import import_events
    from online_learning.forget_list import ForgetList

    if not 1 <= args.batch <= 1_000_000:
        raise InvalidInput(f"--batch {args.batch} must be in 1..1000000")
    if (args.file is None) == (not args.spool):
        raise InvalidInput("give a FILE of events, or --spool for this store's event spool (not both)")
    source = settings.paths.event_spool if args.spool else Path(args.file)
    if args.spool and args.publish:  # it would read back the events it publishes (into the same spool), twice
        raise InvalidInput("--spool cannot be used with --publish: servers with a broker ship their own spool "
                           "(a server started with SHOPRANK_EVENTS__KAFKA_BOOTSTRAP sends what it holds); "
                           "--spool alone writes the spool into the offline log")
    if args.publish and _within(source, settings.paths.event_spool):
        raise InvalidInput(f"{source} is this store's event spool (or in it): --publish appends to the spool, so the "
                           "import would read back what it publishes; without --publish it writes the spool into "
                           "the offline log, and servers with a broker ship their own spool")
    if args.spool and not source.is_dir():
        raise InvalidInput(f"this store has no event spool at {source}: no server has accepted events on this home")
    publish = None
    if args.publish:
        from online_learning.event_log import EventLog, KafkaSettings, claim_spool

        if not settings.events.kafka_bootstrap:
            raise InvalidInput("--publish needs a broker: set SHOPRANK_EVENTS__KAFKA_BOOTSTRAP (host:port)")
        spool, _lock = claim_spool(settings.paths.event_spool)
        publish = EventLog(spool, KafkaSettings(settings.events.kafka_bootstrap), store=settings.store)
    try:  # stored: this store's own spool, whose events a server accepted (a folder laid out like it is checked)
        report = import_events(source, settings.paths.event_log, settings.store, args.batch, args.strict,
                               args.dry_run, publish, progress=settings.progress,
                               forget=ForgetList(settings.paths.forgotten),
                               stored=_within(source, settings.paths.event_spool))
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


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies in it (links and ``..`` resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _push(settings: Settings) -> Callable[[], None]:
    """Push the streaming state's marked profiles to the online store (as the streaming consumer does)."""
    def push() -> None:
        from shoprank.commands.loop import streaming_features

        streaming_features(settings).db.close()  # opening it pushes what is marked

    return push


def _ids(values: list[str] | None, option: str) -> list[str]:
    """The ids as given (matched exactly as the API stored them, spaces included)."""
    ids = list(values or [])
    bad = [v for v in ids if not 1 <= len(v) <= 128]
    if bad:
        raise InvalidInput(f"{option} {bad[0]!r}: an id is 1..128 characters, as the API takes it")
    return ids


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.privacy import forget

    users, sessions = _ids(args.user, "--user"), _ids(args.session, "--session")
    if args.from_file:
        path = Path(args.from_file)
        if not path.is_file():
            raise InvalidInput(f"--from-file {path}: no such file (one user id a line)")
        try:
            text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is no part of the first id
        except UnicodeDecodeError as error:
            raise InvalidInput(f"--from-file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8, "
                               "one user id a line") from None
        users += _ids([line for line in text.splitlines() if line.strip()], "--from-file line")
    if not users and not sessions:
        raise InvalidInput("name whom to forget: --user ID, --session ID or --from-file FILE (one user id a line)")
    report = forget(settings.paths, users, sessions, datetime.now(timezone.utc), args.dry_run,
                    None if args.dry_run else _push(settings), kafka=bool(settings.events.kafka_bootstrap))
    print(json.dumps(asdict(report) | {"dry_run": args.dry_run}, indent=2))
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from online_learning.privacy import prune

    if not 1 <= args.keep_days <= 36_500:
        raise InvalidInput(f"--keep-days {args.keep_days} must be in 1..36500")
    report = prune(settings.paths, args.keep_days, datetime.now(timezone.utc), args.dry_run,
                   None if args.dry_run else _push(settings), kafka=bool(settings.events.kafka_bootstrap))
    print(json.dumps(asdict(report) | {"dry_run": args.dry_run}, indent=2))
    return 0


def cmd_pseudonym(args: argparse.Namespace, settings: Settings) -> int:
    """The name a model's metrics give each shopper (the traffic filters' report), to find one there."""
    from online_learning.forget_list import ForgetList

    users = _ids(args.user, "--user")
    if not users:
        raise InvalidInput("name the shopper: --user ID (repeat for several)")
    name = ForgetList(settings.paths.forgotten).pseudonym
    print(json.dumps({"pseudonyms": {user: name(user) for user in users},
                      "note": None if name(users[0]) else "no erasure has made the list's key yet: model metrics "
                      "name no shopper"}, indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="import historical events (searches shown, clicks, carts, purchases); "
                            "erase a shopper's; keep the log to a window")
    verbs = events.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("import", help="validate a file of events (JSONL or a JSON array, optionally .gz) and write "
                         "them to the offline event log; exits 1 when a line was invalid")
    p.add_argument("file", nargs="?", help="events in the event schema (GET /openapi.json, POST /v1/events), one "
                   "per line; or an event spool folder")
    p.add_argument("--spool", action="store_true", help="import this store's event spool (what servers "
                   "accepted without Kafka): the nightly step that brings it into the offline log (events already "
                   "imported are skipped)")
    p.add_argument("--strict", action="store_true", help="write nothing when any line is invalid")
    p.add_argument("--dry-run", action="store_true", help="only validate and count")
    p.add_argument("--publish", action="store_true", help="send them to Kafka through the event spool instead "
                   "(the log sink and the streaming feature consumer take them as live events)")
    p.add_argument("--batch", type=int, default=50_000, help="events per write (default 50000; the log keeps a "
                   "file per hour of event time per write)")
    p.add_argument("--drain-s", type=non_negative_number, default=300.0, help="--publish: how long to wait for the spool to "
                   "ship (default 300)")
    p.set_defaults(handler=cmd_import)

    p = verbs.add_parser("forget", help="erase shoppers' data: their rows of the event log, their purchases in the "
                         "streaming state and online profile, dead letters and shadow records; their events still "
                         "on the way are dropped when they arrive")
    p.add_argument("--user", action="append", help="a user id (repeat for several)")
    p.add_argument("--session", action="append", help="a session id (repeat for several)")
    p.add_argument("--from-file", help="user ids, one a line")
    p.add_argument("--dry-run", action="store_true", help="only count what would be erased")
    p.set_defaults(handler=cmd_forget)
    p = verbs.add_parser("prune", help="remove the event log's days, the streaming state's purchases, the shadow "
                         "records, dead letters and set-aside spool lines older than --keep-days (a retention "
                         "policy; run it nightly)")
    p.add_argument("--keep-days", type=int, required=True, help="days kept, counted back from today (UTC)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    p.set_defaults(handler=cmd_prune)
    p = verbs.add_parser("pseudonym", help="the name a model's metrics give a shopper (the traffic filters' report "
                         "names shoppers by a hash keyed with the erasure list's key), to find one there")
    p.add_argument("--user", action="append", help="a user id (repeat for several)")
    p.set_defaults(handler=cmd_pseudonym)
