"""``shoprank keys create|list|revoke``: API keys per store and scope (see core/keys.py).

With an artifact store (``artifacts_url``), ``create`` and ``revoke`` push the key file at once,
so replicas take the change at their next pull (``serving.reload_poll_s``).
"""

from __future__ import annotations

import argparse
import json

from core.errors import InvalidInput, NotReady
from core.keys import SCOPES, KeyStore, check_store_name
from core.settings import Settings


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    # imported here: the parser loads no server module (FAISS reads its threads when it loads)
    from api.stores import other_stores

    store = check_store_name(settings.store_name if args.store is None else args.store)
    stores = [settings.index_name, *other_stores(settings.for_store(None))]
    if store not in stores:  # a key for no store would answer 403 everywhere
        raise InvalidInput(f"--store {store!r} is not a store of this home; its stores are {stores} "
                           f"(`shoprank --store {store} index --catalog FILE` makes one)")
    record, key = KeyStore(settings.paths.keys).create(store, args.scope, args.name)
    print(json.dumps({"key": key, **record.public(),
                      "note": "shown once: store it now; only its hash is kept"}, indent=2))
    _publish(settings, f"key {record.id} was created")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps([k.public() for k in KeyStore(settings.paths.keys).keys()], indent=2))
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(KeyStore(settings.paths.keys).revoke(args.id).public(), indent=2))
    _publish(settings, f"key {args.id} was revoked")
    return 0


def _publish(settings: Settings, done: str) -> None:
    """Push the key file to the artifact store, when one is set: replicas that share no volume with this home
    take the change at their next pull (the store's copy is merged in first, so no other change is lost)."""
    if not settings.artifacts_url:
        return
    from core.artifacts import KEYS, ArtifactStore

    store = ArtifactStore(settings.artifacts_url, settings.home)
    try:
        store.push((KEYS,))
    except OSError as error:
        raise NotReady(f"{done} in {settings.paths.keys}, but the artifact store {store.url} could not be written "
                       f"({error}): replicas do not know yet; run `shoprank artifacts push` once it is "
                       "reachable") from None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="create, list or revoke API keys (enforced with SHOPRANK_API__KEYS_REQUIRED)")
    verbs = keys.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("create", help="a new key; prints it once")
    p.add_argument("--scope", action="append", choices=SCOPES, required=True,
                   help="what the key may call: search, events, admin (repeat for several)")
    p.add_argument("--store", default=None, help="the store it is for (default: the --store given to shoprank, else the default store)")
    p.add_argument("--name", default="", help="who or what uses it, for `keys list`")
    p.set_defaults(handler=cmd_create)
    # the key file is the home's, every store's keys in it: no SHOPRANK_STORE is used (shoprank/cli.py)
    verbs.add_parser("list", help="every key without its secret").set_defaults(handler=cmd_list, home_wide=True)
    p = verbs.add_parser("revoke", help="revoke a key by id (takes effect on the next request; on replicas "
                        "sharing an artifact store, at their next pull)")
    p.add_argument("id")
    p.set_defaults(handler=cmd_revoke, home_wide=True)
