"""``shoprank cluster up|down|status``: the local multi-replica topology (see :mod:`shoprank.topology`)."""

from __future__ import annotations

import argparse
import json

from core.settings import Settings


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from shoprank.topology import Topology

    topology = Topology(settings, replicas=args.replicas, port=args.port)
    print(json.dumps(topology.up(), indent=2))
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from shoprank.topology import Topology

    print(json.dumps(Topology.attach(settings).down()))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from shoprank.topology import Topology

    print(json.dumps(Topology.attach(settings).status(), indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="start, inspect or stop a local topology: HAProxy, N replicas, Redis, "
                                             "the broker and the event consumers on 127.0.0.1")
    cluster.set_defaults(home_wide=True)  # every store's: no SHOPRANK_STORE is used (shoprank/cli.py)
    verbs = cluster.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("up", help="start every piece; returns when HAProxy serves a ready replica")
    p.add_argument("--replicas", type=int, default=2, help="API replicas behind HAProxy (default 2)")
    p.add_argument("--port", type=int, default=None, help="HAProxy's port (default: api.port, 8000)")
    p.set_defaults(handler=cmd_up)
    verbs.add_parser("down", help="stop every piece of the running topology").set_defaults(handler=cmd_down)
    verbs.add_parser("status", help="each piece's pid, port and readiness").set_defaults(handler=cmd_status)
