"""The stores one server serves, each with its own engine, experiment, event spool and topics.

The default store is the artifact home itself (routes ``/v1/search``, ``/v1/events``,
``/v1/admin``); every folder under ``<home>/stores/`` is another store (the same routes
under ``/v1/stores/{store}/``), made by ``shoprank --store NAME index --catalog FILE``.
A store's index, models, features, rules, experiments and events are its own: a search
of one store never reaches another's engine, and a swap or re-index of one reloads only
its own unit. The bi-encoder is shared when the stores use the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path, Request

from api.state import ServedHolder
from core.errors import NotFound
from core.keys import MAX_STORE_CHARS, check_store_name
from core.settings import Settings
from online_learning.event_log import EventLog

logger = logging.getLogger(__name__)

@dataclass
class StoreRuntime:
    """What the server holds for one store."""

    name: str
    settings: Settings
    holder: ServedHolder
    event_log: EventLog
    spool_lock: Any

    def close(self) -> None:
        """At shutdown: the served unit as a whole (its router, then its engine, whose score-store writes still
        queued are written and whose feature-store client closes), the event log and the spool. The holder's
        :meth:`~api.state.ServedHolder.stop` closes the units swaps replaced and ends the swaps (one under way
        closes what it loaded): the unit served once it returns is the last, and it is closed here."""
        self.holder.stop()
        if self.holder.ready.is_set() and self.holder.error is None:
            self.holder.get().close()
        self.event_log.close()
        self.spool_lock.close()


def other_stores(settings: Settings) -> list[str]:
    """Stores besides the default one: the valid folder names under ``<home>/stores/``."""
    folder = settings.paths.stores
    if not folder.is_dir():
        return []
    names = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir():
            continue
        if path.name == settings.index_name:  # its routes and keys are the default store's: never reachable
            logger.warning("ignoring %s: a store cannot take the default store's name %r", path, path.name)
            continue
        try:
            names.append(check_store_name(path.name))
        except Exception:  # noqa: BLE001 - a stray folder is not a store
            logger.warning("ignoring %s: not a valid store name", path)
    return names


def ready_to_serve(default: StoreRuntime, runtimes: Iterable[StoreRuntime]) -> bool:
    """Whether this server takes traffic, as ``/readyz`` and ``shoprank_ready`` both say: the default store
    loaded without error and no store still loading (a store that failed to load answers 503 itself, while the
    others serve)."""
    return (default.holder.ready.is_set() and default.holder.error is None
            and all(runtime.holder.ready.is_set() for runtime in runtimes))


def current(request: Request) -> StoreRuntime:
    """The store of this request: the one named in the path, else the default store."""
    runtime = getattr(request.state, "store", None)
    return runtime if runtime is not None else request.app.state.stores[request.app.state.default_store]


def in_store(request: Request, store: Annotated[str, Path(description=f"The store's name, 1..{MAX_STORE_CHARS} "
                                                          "characters (`shoprank --store NAME index ...`).")]) -> None:
    """Route dependency of ``/v1/stores/{store}/...``: the named store, or 404 naming the served ones
    (a malformed name is no served store either: it runs before the key check, which needs the store).
    The name's length is checked here, not by a ``Path`` constraint: a name that failed one would leave
    this dependency out while the key check still ran, for the default store."""
    served = sorted(request.app.state.stores)
    if len(store) > MAX_STORE_CHARS:
        raise NotFound(f"store {store[:MAX_STORE_CHARS]!r}... ({len(store)} characters) is not served here: a "
                       f"store's name has at most {MAX_STORE_CHARS} characters; served stores: {served}")
    runtime = request.app.state.stores.get(store)
    if runtime is None:
        raise NotFound(f"store {store!r} is not served here; served stores: {served}")
    request.state.store = runtime
