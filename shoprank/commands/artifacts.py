"""``shoprank artifacts push|pull``: publish this home's indexes and models to the artifact store, or fetch them."""

from __future__ import annotations

import argparse
import json

from core.errors import InvalidInput, NotFound
from core.settings import Settings


def _store(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    from core.artifacts import ArtifactStore

    url = args.url or settings.artifacts_url
    if not url:
        raise InvalidInput("no artifact store: pass --url URL (e.g. s3://bucket/shoprank or file:///mnt/shared) "
                           "or set SHOPRANK_ARTIFACTS_URL")
    settings.home.mkdir(parents=True, exist_ok=True)
    return ArtifactStore(url, settings.home)


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(args, settings)
    try:
        from serving.loading import named_files

        named = named_files(settings)  # rules and synonyms files a setting names, when they are in the home
        moved = store.push_state(named) if args.state_only else store.push(extra=named)
    except (NotADirectoryError, PermissionError, FileExistsError) as error:
        raise InvalidInput(f"cannot write to the artifact store {store.url}: {error}") from None
    print(json.dumps({"pushed": moved.to_json(), "url": store.url}))
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from core.artifacts import MANIFEST

    store = _store(args, settings)
    if not store.fs.exists(f"{store.root}/{MANIFEST}"):
        raise NotFound(f"nothing to pull: {store.url} has no {MANIFEST} (check the URL, or run `shoprank artifacts "
                       "push` where the indexes and models were built)")
    print(json.dumps({"pulled": store.pull().to_json(), "url": store.url}))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    artifacts = sub.add_parser("artifacts", help="push this home's indexes, models and experiment to the artifact "
                                                 "store replicas read (settings.artifacts_url), or pull them")
    artifacts.set_defaults(home_wide=True)  # every store's files: no SHOPRANK_STORE is used (shoprank/cli.py)
    verbs = artifacts.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("push", help="upload what the store lacks (after `shoprank index`, training, a swap)")
    p.add_argument("--url", default=None, help="fsspec URL (default: settings.artifacts_url)")
    p.add_argument("--state-only", action="store_true", help="only the active versions, the experiment, the "
                   "business rules and the synonyms (with the model versions they name, where the store lacks them)")
    p.set_defaults(handler=cmd_push)
    p = verbs.add_parser("pull", help="download what changed in the store (servers do this themselves)")
    p.add_argument("--url", default=None, help="fsspec URL (default: settings.artifacts_url)")
    p.set_defaults(handler=cmd_pull)
