"""``shoprank models list|show|activate|rollback``: the model registry from the shell."""

from __future__ import annotations

import argparse
import json

from core.registry import ROLES, ModelRegistry
from core.settings import Settings


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = ModelRegistry(settings.paths.models)
    out = {}
    for role in [args.role] if args.role else ROLES:
        active = registry.active(role)
        out[role] = [{"version": v.version, "active": bool(active and active.version == v.version),
                      "created": v.created, "parent": v.parent, "metrics": v.metrics} for v in registry.versions(role)]
    print(json.dumps(out, indent=2))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(ModelRegistry(settings.paths.models).get(args.role, args.version).to_json(), indent=2))
    return 0


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    if args.role != "biencoder":  # a served role: refuse a version that is damaged or does not load
        from serving.loading import check_loads

        check_loads(settings, args.role, args.version)
    entry = ModelRegistry(settings.paths.models).activate(args.role, args.version)
    print(json.dumps({"role": args.role, "active": entry.version}))
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    entry = ModelRegistry(settings.paths.models).rollback(args.role)
    print(json.dumps({"role": args.role, "active": entry.version}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, inspect, activate or roll back registered models")
    verbs = models.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list")
    p.add_argument("--role", choices=ROLES)
    p.set_defaults(handler=cmd_list)
    p = verbs.add_parser("show")
    p.add_argument("role", choices=ROLES)
    p.add_argument("version")
    p.set_defaults(handler=cmd_show)
    p = verbs.add_parser("activate")
    p.add_argument("role", choices=ROLES)
    p.add_argument("version")
    p.set_defaults(handler=cmd_activate)
    p = verbs.add_parser("rollback")
    p.add_argument("role", choices=ROLES)
    p.set_defaults(handler=cmd_rollback)
