"""``shoprank keys create|list|revoke``: API keys per store and scope (see core/keys.py)."""

from __future__ import annotations

import argparse
import json

from core.errors import InvalidInput
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
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps([k.public() for k in KeyStore(settings.paths.keys).keys()], indent=2))
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(KeyStore(settings.paths.keys).revoke(args.id).public(), indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="create, list or revoke API keys (enforced with SHOPRANK_API__KEYS_REQUIRED)")
    verbs = keys.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("create", help="a new key; prints it once")
    p.add_argument("--scope", action="append", choices=SCOPES, required=True,
                   help="what the key may call: search, events, admin (repeat for several)")
    p.add_argument("--store", default=None, help="the store it is for (default: the --store given to shoprank, else the default store)")
    p.add_argument("--name", default="", help="who or what uses it, for `keys list`")
    p.set_defaults(handler=cmd_create)
    verbs.add_parser("list", help="every key without its secret").set_defaults(handler=cmd_list)
    p = verbs.add_parser("revoke", help="revoke a key by id (takes effect on the next request)")
    p.add_argument("id")
    p.set_defaults(handler=cmd_revoke)
