"""Live product updates (``POST /v1/admin/products``): a product's price, stock or promotion written
to the online store at once, without re-indexing (:mod:`core.product_changes`).

The facts go to the ``view:feature`` that ``features.facts`` names for each, and only those that the
store holds can be written; the other server processes read the changed products again within
``features.changes_poll_s`` (the change feed), the answering one before it answers. Cached result pages
are keyed on the facts they were worked out from, so none made before an update is served after it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound, NotReady
from core.feature_store import StoreUnavailable
from core.product_changes import open_changes, write_facts
from serving.engine import SearchEngine

logger = logging.getLogger(__name__)

LIVE_FACTS = ("price", "in_stock", "promoted")  # what an update may set


def update_facts(engine: SearchEngine, updates: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Write ``updates`` (product id -> {fact: value}) and read them back into this process.

    Raises:
        Conflict: no feature store is open (facts then come from the catalog: ``shoprank index --upsert``).
        NotFound: a product is not in the index.
        InvalidInput: a fact the store does not hold.
    """
    reader = engine.models.features
    if reader is None:
        raise Conflict("live product updates need the feature store (shoprank features apply and materialize); "
                       "without it the catalog's columns are the facts: update them with `shoprank index "
                       "--catalog FILE --upsert`")
    missing = [p for p in updates if engine.index.doc_of(p) is None]
    if missing:
        raise NotFound(f"products {missing[:10]} are not in the index {engine.index.path.parent.name!r}; "
                       "add them with `shoprank index --upsert` first")
    held = {fact: ref for fact, ref in engine.settings.features.facts.items() if fact in reader.facts}
    asked = {fact for values in updates.values() for fact in values}
    if asked - set(held):
        raise InvalidInput(f"facts {sorted(asked - set(held))} are not held by the feature store "
                           f"(it holds {sorted(held)} of {list(LIVE_FACTS)}; features.facts names where)")
    try:
        feed = reader.feed if reader.feed is not None else open_changes(reader.store)
        written = write_facts(reader.store, updates, held, feed)
    except Exception as error:  # noqa: BLE001 - the online store out of reach (redis-py's and sqlite's own classes)
        if not isinstance(error, (ConnectionError, TimeoutError, OSError, StoreUnavailable)) and \
                type(error).__module__.split(".")[0] not in ("redis", "sqlite3"):
            raise
        raise NotReady(f"the online store cannot be written now ({type(error).__name__}: {error}); nothing is "
                       "lost by sending the update again", retry_after=5.0) from None
    try:
        reader.catch_up(list(updates))
    except Exception as error:  # noqa: BLE001 - written: the feed and the rows' TTL bring it in; not a failure
        logger.warning("the update of %d products is written; reading it back failed (%s: %s), the change feed "
                       "reads it within features.changes_poll_s", len(updates), type(error).__name__, error)
    if engine.facts is not None:
        engine.facts.refresh()  # the next search of this process filters and ranks on the new facts
    return {"updated": len(updates), "rows": written}
