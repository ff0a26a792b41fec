"""What filters and business rules know of each product: category, brand, price, stock, promotion.

Each fact comes from the feature store when the store has it (``features.facts`` names a view
and feature per fact; the online reader reads them beside the ranker's features), else from
the catalog's column of the same name, else it is unknown (NaN / None).

:class:`CatalogFacts` keeps every product's facts as one array per fact over the rows of the
index. It is built again when the index changes (an upsert or a delete), when a server's
first read of every product into the reader's cache finishes (:meth:`CatalogFacts.refresh`),
and from that cache every ``refresh_s`` seconds (in the background; searches use the arrays
they have meanwhile); then the reader reads again its rows older than ``features.product_ttl_s``
(:meth:`OnlineFeatureReader.refresh_stale`: searches re-read only the rows they touch, and a product
every in-stock filter leaves out is touched by none), and the arrays are built again if it read any.
So a live update the reader holds reaches the filters at once, and the store's other updates within the
reader's ``features.product_ttl_s`` plus ``refresh_s``.

A request's filters become one mask over the index (:meth:`CatalogFacts.allowed`, kept per
distinct filter), and the first stage searches only the products it marks
(``retrieval.hybrid``): every product a search returns matches its filters, on every page,
and a filter that keeps 2% of the catalog fills the page with the best of that 2%, ranked
and featurized as if the catalog held only them. The rules stage then reads stock,
promotion and price fresh for the rows it shows (:meth:`CatalogFacts.__call__`) and checks
the filters on them again.

Facets (:meth:`CatalogFacts.facets`) count the values of the products a search found (its
whole list, after the filters: the first stage's ``ranking.first_stage_depth`` best), for a
storefront's filter menus.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.cache import LRUCache
from core.errors import InvalidInput
from core.feature_store import OnlineFeatureReader, as_number
from core.query import Filters
from retrieval.index import ProductIndex
from retrieval.types import Candidates

logger = logging.getLogger(__name__)

TEXT_FACTS = ("category", "brand")
NUMBER_FACTS = {"price": np.nan, "in_stock": np.nan, "promoted": 0.0, "popularity": 0.0}  # the value when unknown
ORDERS = ("popular", "price_asc", "price_desc")  # how a listing (browse) is ordered
# what a search page reads of a product's facts: its filters and facets, the rules (stock, promotion, a boost's
# category or brand) and the price orders; popularity only orders listings and shelves
SEARCHED_FACTS = ("category", "brand", "price", "in_stock", "promoted")


@dataclass(frozen=True)
class ProductFacts:
    """Facts of some products, one entry each: category and brand (str, None when unknown),
    price, stock (NaN when unknown; a product of unknown stock counts as in stock), promotion and
    popularity (purchases in the last 30 days by default; 0 when unknown)."""

    category: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    in_stock: np.ndarray
    promoted: np.ndarray
    popularity: np.ndarray

    @property
    def stocked(self) -> np.ndarray:
        return np.nan_to_num(self.in_stock, nan=1.0) > 0

    def take(self, rows: np.ndarray) -> ProductFacts:
        return ProductFacts(**{name: getattr(self, name)[rows] for name in (*TEXT_FACTS, *NUMBER_FACTS)})

    def matching(self, filters: Filters) -> np.ndarray:
        """Which products match ``filters`` (a product without a price fails a price filter)."""
        keep = np.ones(len(self.price), dtype=bool)
        for name in TEXT_FACTS:
            wanted = getattr(filters, name)
            if wanted:
                values = getattr(self, name)
                keep &= np.logical_or.reduce([values == value for value in wanted])
        if filters.min_price is not None:
            keep &= np.nan_to_num(self.price, nan=-np.inf) >= filters.min_price
        if filters.max_price is not None:
            keep &= np.nan_to_num(self.price, nan=np.inf) <= filters.max_price
        if filters.in_stock:
            keep &= self.stocked
        return keep


def _texts(values: list[Any]) -> np.ndarray:
    """Text facts: a non-empty string, else None (unknown)."""
    return np.array([v if isinstance(v, str) and v else None for v in values], dtype=object)


def by_price(price: np.ndarray, order: str) -> np.ndarray:
    """Positions of ``price`` ordered by ``order`` (``price_asc`` or ``price_desc``), products without a
    price last, ties in the order given."""
    if order not in ("price_asc", "price_desc"):
        raise InvalidInput(f"order {order!r} is not one of ['price_asc', 'price_desc']")
    key = np.where(np.isnan(price), np.inf, price if order == "price_asc" else -price)
    return np.lexsort((np.arange(len(price)), key))


def overlay(facts: dict[str, np.ndarray], rows: list[dict[str, Any]], features: dict[str, str]) -> None:
    """Replace ``facts``' values by the store's (``rows``, one per product), where a row has one."""
    for fact, feature in features.items():
        values = [row.get(feature) for row in rows]
        if fact in TEXT_FACTS:
            given = _texts(values)
            known = np.array([v is not None for v in given], dtype=bool)
            facts[fact] = np.where(known, given, facts[fact])
        else:
            fresh = np.array([as_number(v) for v in values], dtype=np.float64)
            if fact == "price":
                fresh = as_written(fresh)
            facts[fact] = np.where(np.isnan(fresh), facts[fact], fresh)


def as_written(values: np.ndarray) -> np.ndarray:
    """Prices the store keeps as float32 (``product_attributes:price``) as the decimals written: 1795.24, not
    1795.239990234375, so a filter from 1795.24 to 1795.24 finds it and answers show it as written. A value
    float32 cannot hold exactly was not read from float32 and stays."""
    out = values.copy()
    single = np.isfinite(values) & (values.astype(np.float32).astype(np.float64) == values)
    out[single] = [float(str(v)) for v in values[single].astype(np.float32)]
    return out


def searched_digest(facts: ProductFacts) -> str:
    """A digest of the facts a search page reads (:data:`SEARCHED_FACTS`), the same for the same facts in every
    process. Text facts are hashed as the codes of their distinct values and those values, numbers as their
    bytes: tens of milliseconds for a million products, worked out once a build (:meth:`CatalogFacts._build`)."""
    digest = hashlib.sha1()  # a key, not a secret; several times faster than blake2b over megabytes on CPUs with SHA-NI
    for name in SEARCHED_FACTS:
        values = getattr(facts, name)
        digest.update(name.encode())
        if values.dtype == object:  # text, None when unknown (code -1)
            codes, distinct = pd.factorize(values)
            digest.update(codes.astype(np.int32).data)
            digest.update(json.dumps(distinct.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(values, dtype=np.float64).data)
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class _Table:
    key: int  # the index's generation (ProductIndex.generation): a write, a new table
    built: float
    generation: int
    facts: ProductFacts
    digest: str  # searched_digest(facts)
    changes: int = 0  # the reader's change batches read when it was built
    position: str | None = None  # the change feed's position the reader had read when it was built


class CatalogFacts:
    """Facts of every product of ``index``, the store's (``reader``) over the catalog's columns.

    Args:
        index: The served index; its ``products`` hold the catalog's columns.
        reader: The online feature reader, or None (the catalog's columns only).
        refresh_s: Seconds between rebuilds from the reader's cache (its stale rows read again first).
        masks: Distinct filters whose masks are kept.
    """

    def __init__(self, index: ProductIndex, reader: OnlineFeatureReader | None, refresh_s: float = 60.0,
                 masks: int = 256) -> None:
        self.index = index
        self.reader = reader if reader is not None and reader.facts else None
        self.refresh_s = refresh_s
        self._table: _Table | None = None
        self._lock = threading.Lock()
        self._refreshing = False
        self._generations = itertools.count(1)
        self._masks = LRUCache(masks)
        self._unknown_of: tuple[int, frozenset[str]] = (-1, frozenset())  # (index generation, facts)

    def table(self) -> ProductFacts:
        """Facts of every row of the index (deleted rows included), as last built."""
        return self._current().facts

    @property
    def version(self) -> int:
        """Which build of the facts is in use: it changes when they are built again (a live update read,
        the periodic refresh, an index write), so what was worked out from older facts can be told apart."""
        return self._current().generation

    @property
    def position(self) -> str | None:
        """The live-update feed's position these facts reflect (None: no feed followed). It names the same
        updates in every process and replica, so a page worked out from the facts can be shared under it."""
        return self._current().position

    @property
    def digest(self) -> str:
        """A digest of the facts a search page reads (:data:`SEARCHED_FACTS`) as last built (the catalog's
        columns and the store's values), worked out with the build: what a page shared between processes
        was worked out from, so a change the change feed does not carry (none followed, a catalog's
        attribute write, another replica's catalog) reads other keys, and one no search reads (popularity)
        does not."""
        return self._current().digest

    def _current(self) -> _Table:
        table, key = self._table, self.index.generation
        if table is None or table.key != key:
            with self._lock:
                if self._table is None or self._table.key != key:
                    self._table = self._build(key)
                return self._table
        if self.reader is not None and not self._refreshing and (time.monotonic() - table.built > self.refresh_s
                                                                  or self.reader.changes != table.changes
                                                                  or self.reader.position != table.position):
            self._refreshing = True
            threading.Thread(target=self._refresh, args=(key,), name="facts-refresh", daemon=True).start()
        return table

    def refresh(self) -> None:
        """Build the arrays again now, from the catalog and the reader's cache (after it read every product)."""
        fresh = self._build(self.index.generation)
        with self._lock:
            self._install(fresh)

    def _refresh(self, key: int) -> None:
        try:
            self._rebuild(key)  # first from the cache as it is: a live update it holds reaches the filters now
            # then the rows no search re-reads (a product out of stock) are read again from the store, and the
            # arrays built again if any was: those reads may take seconds on a large catalog
            if self.reader is not None and self.reader.refresh_stale(self.index.products["product_id"].tolist()):
                self._rebuild(key)
        except Exception:  # noqa: BLE001 - the arrays in use stay; the next search tries again
            logger.exception("re-reading the product facts failed")
        finally:
            self._refreshing = False

    def _rebuild(self, key: int) -> None:
        fresh = self._build(key)
        with self._lock:
            if self.index.generation == key:
                self._install(fresh)

    def _install(self, fresh: _Table) -> None:
        """Serve ``fresh`` unless a build that started after it is served already (a background rebuild that
        read the store before a live update must not put back what that update changed). Under the lock."""
        if fresh.key != self.index.generation:  # built for rows an index write has changed since
            return
        if self._table is None or self._table.key != fresh.key or fresh.generation > self._table.generation:
            self._table = fresh

    def _build(self, key: int) -> _Table:
        generation = next(self._generations)  # in the order builds start: a later one read later rows
        products = self.index.products
        facts: dict[str, np.ndarray] = {}
        for name in TEXT_FACTS:
            facts[name] = _texts(products[name].tolist() if name in products.columns else [None] * len(products))
        for name, unknown in NUMBER_FACTS.items():
            column = products[name].tolist() if name in products.columns else []
            facts[name] = (np.array([as_number(v) for v in column], dtype=np.float64) if column
                           else np.full(len(products), np.nan))
            if name == "in_stock" and "quantity" in products.columns:  # stock given as a quantity only, as
                quantity = pd.to_numeric(products["quantity"], errors="coerce").to_numpy(dtype=np.float64)
                told = np.isnan(facts[name]) & ~np.isnan(quantity)  # features build --from-catalog reads it
                facts[name][told] = (quantity[told] > 0).astype(np.float64)
            if name == "promoted" and "discount" in products.columns:  # likewise a discount without the flag
                discount = pd.to_numeric(products["discount"], errors="coerce").to_numpy(dtype=np.float64)
                told = np.isnan(facts[name]) & ~np.isnan(discount)
                facts[name][told] = (discount[told] > 0).astype(np.float64)
            if not np.isnan(unknown):
                facts[name] = np.nan_to_num(facts[name], nan=unknown)
        changes = self.reader.changes if self.reader is not None else 0  # read before the rows it reflects
        position = self.reader.position if self.reader is not None else None
        if self.reader is not None:
            overlay(facts, self.reader.cached_rows(products["product_id"].tolist()), self.reader.facts)
        built = ProductFacts(**facts)
        return _Table(key, time.monotonic(), generation, built, searched_digest(built), changes, position)

    def allowed(self, filters: Filters) -> np.ndarray | None:
        """The rows of the index that match ``filters`` (read-only; None: no filter).

        Raises:
            InvalidInput: a filter on a fact no product has (a brand filter on a catalog without brands): it
                could only ever find nothing.
        """
        if not filters.active():
            return None
        table = self._current()
        key = (filters, table.generation)
        mask = self._masks.get(key)
        if mask is None:
            for name, fact in (("category", "category"), ("brand", "brand"), ("min_price", "price"),
                               ("max_price", "price")):
                if getattr(filters, name) not in (None, ()) and fact in self._unknown(table):
                    raise InvalidInput(f"filter {name!r} cannot match: no product of this catalog has a {fact} "
                                       f"(a catalog column '{fact}', or the feature store's fact); leave it out")
            mask = table.facts.matching(filters)
            mask.flags.writeable = False
            self._masks.put(key, mask)
        return mask

    def _unknown(self, table: _Table) -> frozenset[str]:
        """The facts this catalog cannot have: no product's catalog column holds it and the feature store does
        not supply it (a fact the store supplies is known even while its rows are still being read, or while
        the store is down). Worked out once an index write."""
        if self._unknown_of[0] != table.key:
            products = self.index.products
            if "live" in products.columns:  # a fact only deleted products had is no fact of the catalog
                products = products[products["live"].astype(bool)]
            supplied = set(self.reader.facts) if self.reader is not None else set()
            missing = set()
            for fact in (*TEXT_FACTS, "price"):
                column = products[fact] if fact in products.columns else None
                in_catalog = column is not None and bool(
                    column.map(lambda v: v is not None and v == v and str(v).strip() != "").any())
                if not in_catalog and fact not in supplied:
                    missing.add(fact)
            self._unknown_of = (table.key, frozenset(missing))
        return self._unknown_of[1]

    def facets(self, docs: np.ndarray, names: tuple[str, ...], values: int = 20) -> dict[str, Any]:
        """Facet counts over the products ``docs``: for ``category`` and ``brand`` the ``values`` most
        frequent values with their counts (most first, then by value), for ``price`` the lowest and
        highest price; ``counted``: how many products were counted."""
        table = self.table()
        out: dict[str, Any] = {"counted": len(docs)}
        for name in names:
            if name == "price":
                prices = table.price[docs]
                known = prices[~np.isnan(prices)]
                out[name] = ({"min": float(known.min()), "max": float(known.max()), "products": len(known)}
                             if len(known) else None)
                continue
            counts = Counter(v for v in getattr(table, name)[docs].tolist() if v is not None)
            top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:values]
            out[name] = [{"value": value, "count": count} for value, count in top]
        return out

    def listing(self, filters: Filters, order: str = "popular", hide_out_of_stock: bool = False) -> np.ndarray:
        """Every live row of the index that matches ``filters`` (and is in stock, with
        ``hide_out_of_stock``), ordered by ``order`` (:data:`ORDERS`: most popular first, or by
        price, products without a price last), ties by catalog row."""
        if order not in ORDERS:
            raise InvalidInput(f"order {order!r} is not one of {list(ORDERS)}")
        rows = np.flatnonzero(self.shown(filters, hide_out_of_stock))
        if order == "popular":
            return self.most_popular(rows)
        return rows[by_price(self.table().price[rows], order)]  # rows ascend: ties by catalog row

    def shown(self, filters: Filters, hide_out_of_stock: bool = False) -> np.ndarray:
        """A fresh mask of the live rows of the index that match ``filters`` (and are in stock, with
        ``hide_out_of_stock``): what a listing or a recommendation shelf may show."""
        keep = self.index.products["live"].to_numpy(dtype=bool).copy()
        mask = self.allowed(filters)
        if mask is not None:
            keep &= mask[: len(keep)]
        if hide_out_of_stock:
            keep &= self.table().stocked[: len(keep)]
        return keep

    def most_popular(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` most popular first (unknown popularity counts as 0), ties by catalog row."""
        return rows[np.lexsort((rows, -self.table().popularity[rows]))]

    def known(self, candidates: Candidates) -> ProductFacts:
        """Facts of ``candidates`` as last built (nothing read now)."""
        return self.table().take(candidates.docs)

    def __call__(self, candidates: Candidates) -> ProductFacts:
        """Facts of ``candidates`` as the rules stage reads them: category and brand as last built;
        stock, promotion and price read now (:meth:`OnlineFeatureReader.rows`: the reader's
        cache, a stale row re-read in the background)."""
        facts = self.known(candidates)
        if self.reader is None or not len(candidates):
            return facts
        fresh = {name: getattr(facts, name) for name in (*TEXT_FACTS, *NUMBER_FACTS)}
        overlay(fresh, self.reader.rows(candidates.product_ids),
                {fact: feature for fact, feature in self.reader.facts.items() if fact in NUMBER_FACTS})
        return ProductFacts(**fresh)
