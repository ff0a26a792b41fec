"""``shoprank models list|show|activate|rollback|delete|prune``: the model registry from the shell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import Conflict
from core.registry import ROLES, ModelRegistry
from core.settings import Settings
from online_learning.experiments import served_versions
from shoprank.commands.train_biencoder import MODEL_FILES, fold_served
from shoprank.commands.training import missing_files


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


def _check_servable(settings: Settings, role: str, version: str, action: str) -> None:
    """Refuse a version that must not be served: for a served role one that is damaged or does not load,
    for the bi-encoder one trained without a fold of the queries (``--hold-out``, recorded as ``held_out``)
    or one whose folder lacks a file the encoder loads."""
    if role == "biencoder":
        entry = ModelRegistry(settings.paths.models).get(role, version)
        held_out = entry.params.get("held_out")
        if held_out:
            raise fold_served(held_out, f"{action} biencoder {version}, a model")
        missing = missing_files(Path(entry.path), MODEL_FILES)  # type: ignore[arg-type]
        if missing:
            raise Conflict(f"biencoder {version} does not load: no {' and '.join(missing)} in {entry.path}; "
                           f"cannot {action} it, the active version keeps serving")
    else:
        from serving.loading import check_loads

        check_loads(settings, role, version)


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    _check_servable(settings, args.role, args.version, "activate")
    entry = ModelRegistry(settings.paths.models).activate(args.role, args.version)
    print(json.dumps({"role": args.role, "active": entry.version}))
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    def check(version: str) -> None:  # the earlier version is refused as an activation of it would be
        _check_servable(settings, args.role, version, "roll back to")

    entry = ModelRegistry(settings.paths.models).rollback(args.role, check)
    print(json.dumps({"role": args.role, "active": entry.version}))
    return 0


def _in_use(settings: Settings, role: str) -> set[str]:
    """Versions of ``role`` that must stay: those the running experiment or shadow serves."""
    return served_versions(settings.paths.experiment_config) if role == "ltr" else set()


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    used = _in_use(settings, args.role)
    if args.version in used:
        raise Conflict(f"{args.role} {args.version} is served by the running experiment or shadow; "
                       "stop it first (PUT /v1/admin/experiment with {})")
    entry = ModelRegistry(settings.paths.models).delete(args.role, args.version)
    print(json.dumps({"role": args.role, "deleted": entry.version}))
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    registry = ModelRegistry(settings.paths.models)
    out = {}
    for role in [args.role] if args.role else ROLES:
        used = _in_use(settings, role)
        doomed = registry.prunable(role, args.keep, used) if args.dry_run else registry.prune(role, args.keep, used)
        out[role] = {"deleted" if not args.dry_run else "would_delete": doomed,
                     "kept": [v.version for v in registry.versions(role) if v.version not in doomed]}
    print(json.dumps(out, indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, inspect, activate, roll back or delete registered models")
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
    p = verbs.add_parser("delete", help="remove a version that is not active and not in a running experiment")
    p.add_argument("role", choices=ROLES)
    p.add_argument("version")
    p.set_defaults(handler=cmd_delete)
    p = verbs.add_parser("prune", help="delete all versions but the active one, the KEEP last active before it, "
                         "the KEEP newest and those a running experiment serves")
    p.add_argument("--role", choices=ROLES)
    p.add_argument("--keep", type=int, default=5, help="rollback targets and newest versions to keep (default 5)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    p.set_defaults(handler=cmd_prune)
