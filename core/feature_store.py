"""Store features for candidates at request time, from Feast's online store.

The Feast store itself is opened by :func:`core.feast_repo.open_store`.

:class:`OnlineFeatureReader` reads the features of a Feast ``FeatureService``
(``ranker_v1``) for one user and a list of candidate products through Feast's
``OnlineStore.online_read`` (the interface every online store implements,
sqlite and Redis alike), and computes the service's on-demand features with the
repo's own transformation. Product rows are cached in-process, because Feast's
full ``get_online_features`` took ~47 ms for 100 products + 1 user on this
machine (``benchmarks/feature_fetch.py``) against a 5 ms budget: a server warms
the cache with every product in the background at start (:meth:`warm`; it is ready
once that is done, or after ``features.warm_wait_s``), a row
older than ``product_ttl`` seconds (``features.product_ttl_s``) is served while it is re-read in the
background (stale-while-revalidate), so a search never waits for a product read
once the cache is warm; users are always read fresh. The product facts' periodic refresh re-reads the
stale rows no search touched (:meth:`OnlineFeatureReader.refresh_stale`). A read stores its rows only over
cached rows read before it started, so a slow background read never puts back a row a live update replaced.

Missing values (a product with no popularity yet, an anonymous user) are NaN,
which LightGBM treats as missing.

An online store that is down or slow never stalls a search: a search's reads (each view's rows of its
products never read, and its user's) all start at once and wait together at most ``read_timeout``
seconds, less when the search's deadline comes first; a failed or late read opens a breaker for
``retry_after`` seconds during which reads are not tried at all. Background reads (warm-up, live updates,
stale rows) are allowed longer and are late only past their own timeout. Meanwhile
products keep their cached rows, unread rows and the user's row are missing
(NaN), and :attr:`FeatureBatch.unavailable` says why, so the search reports it
in ``degraded``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.product_changes import ChangeFeed, FeedCursor, poll

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

CHUNK = 2000  # products a background read (warm-up, live updates, stale rows) asks the store for at once
BACKGROUND_READ_S = 10.0  # how long a background read of a chunk may take (a search's: read_timeout)


def _value(proto: Any) -> Any:
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(proto)


@dataclass(frozen=True)
class FeatureBatch:
    """Numeric features for candidates, one float32 column per name (NaN = missing);
    ``unavailable``: why some rows could not be read (the online store is down), else None."""

    product_ids: list[str]
    columns: dict[str, np.ndarray]
    unavailable: str | None = None

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        return np.column_stack([self.columns[n] for n in names]).astype(np.float32) if names else np.zeros((len(self.product_ids), 0), np.float32)


class StoreUnavailable(RuntimeError):
    """The online store did not answer in time (or is resting after it failed)."""


class OnlineFeatureReader:
    """Reads a feature service's features for (user, candidates) from the online store."""

    def __init__(self, store: FeatureStore, service: str, product_ttl: float = 30.0, read_timeout: float = 0.25,
                 retry_after: float = 2.0, facts: Mapping[str, str] | None = None) -> None:
        self.read_timeout = read_timeout
        self.retry_after = retry_after
        self._down_until = 0.0
        self._down_reason = ""
        self._io = ThreadPoolExecutor(8, thread_name_prefix="feature-read")  # a search's reads, one a view, at once
        self._pending: dict[Future, float] = {}  # the reads under way, and when each is late (its own timeout)
        self.failures = 0
        self.store = store
        self.provider = store._get_provider()  # the OnlineStore behind get_online_features
        self.service = store.get_feature_service(service)
        self.product_ttl = product_ttl
        self._views: dict[str, tuple[Any, list[str], str]] = {}  # view name -> (view, features, join key)
        self._lists: dict[str, tuple[Any, list[str], str]] = {}  # the same, for user_list's views
        self._odfvs = []
        needed: dict[str, set[str]] = {}
        for projection in self.service.feature_view_projections:
            features = [f.name for f in projection.features]
            try:
                odfv = store.get_on_demand_feature_view(projection.name)
            except Exception:  # noqa: BLE001 - not an on-demand view: a stored one
                odfv = None
            if odfv is not None:
                self._odfvs.append((odfv, features))
                for source in odfv.source_feature_view_projections.values():
                    needed.setdefault(source.name, set()).update(f.name for f in source.features)
                continue
            needed.setdefault(projection.name, set()).update(features)
        self.facts = self._facts(store, facts or {}, needed)
        for name, features in needed.items():
            view = store.get_feature_view(name)
            self._views[name] = (view, sorted(features), view.entity_columns[0].name)
        self.names = [f.name for p in self.service.feature_view_projections for f in p.features]
        # the service's product features, kept per product as one float32 vector beside its row, so that a
        # fetch gathers them for its candidates in one stack, not name by name and row by row in Python;
        # a name a user view also has is left out (the product's row wins, and the user's value fills it)
        derived = {f for _, features in self._odfvs for f in features}
        of_products = {f for view, features, key in self._views.values() if key == "product_id" for f in features}
        of_users = {f for view, features, key in self._views.values() if key != "product_id" for f in features}
        self._vectorized = [n for n in self.names if n not in derived and n in of_products and n not in of_users]
        self._of_products = of_products
        self._empty = (0.0, {}, np.full(len(self._vectorized), np.nan, np.float32))  # a row never read
        self._cache: dict[str, tuple[float, dict[str, Any], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        self._refresher = ThreadPoolExecutor(1, thread_name_prefix="feature-refresh")
        self.warming: threading.Thread | None = None  # a server's background read of every product (:meth:`warm`)
        self.hits = 0
        self.misses = 0
        self.changes = 0  # batches of changed products read again (:meth:`follow`): the facts rebuild on it
        self.feed: ChangeFeed | None = None  # the change feed followed
        self.cursor: FeedCursor | None = None  # where this reader is in it
        self._stop = threading.Event()

    @staticmethod
    def _facts(store: FeatureStore, facts: Mapping[str, str], needed: dict[str, set[str]]) -> dict[str, str]:
        """Product facts read beside the service's features (``{"category": "product_attributes:category"}``):
        each one the store has is added to its view's reads; returns fact -> feature name in a row."""
        found = {}
        for fact, ref in facts.items():
            view_name, _, feature = ref.partition(":")
            try:
                view = store.get_feature_view(view_name)
            except Exception:  # noqa: BLE001 - no such view: the catalog's column serves this fact
                logger.info("product fact %s: the feature store has no view %r; read from the catalog", fact,
                            view_name)
                continue
            if view.entity_columns[0].name != "product_id" or feature not in {f.name for f in view.features}:
                logger.info("product fact %s: %r is not a product feature of the store; read from the catalog",
                            fact, ref)
                continue
            needed.setdefault(view_name, set()).add(feature)
            found[fact] = feature
        return found

    def _start(self, reads: Sequence[tuple[str, Sequence[str]]], timeout: float | None = None) -> list[Future]:
        """Start reading each ``(view name, keys)`` of ``reads`` at once, in the read threads, each allowed
        ``timeout`` seconds (default ``read_timeout``; a background read's is longer); raises
        :class:`StoreUnavailable` when the store failed less than ``retry_after`` seconds ago."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(self._down_reason)
        with self._lock:
            first_due = min(self._pending.values(), default=None)
        # a read still under way past its own timeout: the store is slow, though each search left before that (its
        # deadline came first, and a search short of time does not rest the store): rest it now, and stop adding
        # reads behind the ones it holds. A warm-up chunk read for 1 s is not late: it is allowed 60 s
        if first_due is not None and time.monotonic() >= first_due:
            self._rest("online store read timed out")
            raise StoreUnavailable("online store read timed out")
        try:
            due = time.monotonic() + (self.read_timeout if timeout is None else timeout)
            futures = [self._io.submit(self._read_now, view_name, list(keys)) for view_name, keys in reads]
        except RuntimeError as err:  # its threads are shut down: the process is exiting
            raise StoreUnavailable("the feature reader is shut down") from err
        with self._lock:  # noted before a read can end (its callback forgets it), so none stays noted
            self._pending.update(dict.fromkeys(futures, due))
        for future in futures:
            future.add_done_callback(self._finished)
        return futures

    def _finished(self, read: Future) -> None:
        with self._lock:
            self._pending.pop(read, None)

    def _wait(self, read: Future, until: float, cut: bool = False) -> list[dict[str, Any]]:
        """The rows of a read :meth:`_start` began, waiting for them until ``until`` (a ``time.monotonic()``
        time); raises :class:`StoreUnavailable` when the store fails or is late, and rests it ``retry_after``
        seconds. ``cut``: ``until`` is a search's deadline, before ``read_timeout``; a read late for it is
        not the store's fault, and does not rest it."""
        try:
            return read.result(timeout=max(0.0, until - time.monotonic()))
        except TimeoutError as err:
            if cut:
                raise StoreUnavailable("the search's deadline came before the online store answered") from err
            self._rest("online store read timed out")
            raise StoreUnavailable("online store read timed out") from err
        except Exception as err:  # noqa: BLE001 - any store failure: rest, then try again
            reason = f"online store error {type(err).__name__}"
            self._rest(reason)
            raise StoreUnavailable(reason) from err

    def _rest(self, reason: str) -> None:
        """Try the store no more for ``retry_after`` seconds after a read failed (``reason``)."""
        with self._lock:
            first = time.monotonic() >= self._down_until  # else another read (of this search) failed first
            self._down_until = time.monotonic() + self.retry_after
            self._down_reason = reason
            if first:  # counted once a rest: the times the store failed
                self.failures += 1
        if first:
            logger.warning("%s; store features are missing for %.1fs before the next try", reason, self.retry_after)

    def _read(self, view_name: str, keys: Sequence[str], timeout: float | None = None) -> list[dict[str, Any]]:
        """One view's rows for ``keys``, waiting at most ``timeout`` (default ``read_timeout``) seconds;
        raises :class:`StoreUnavailable` as :meth:`_start` and :meth:`_wait` do."""
        [read] = self._start([(view_name, keys)], timeout)
        return self._wait(read, time.monotonic() + (self.read_timeout if timeout is None else timeout))

    def _read_now(self, view_name: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        view, features, join_key = self._views.get(view_name) or self._lists[view_name]
        entity_keys = [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=k)]) for k in keys]
        rows = self.provider.online_read(config=self.store.config, table=view, entity_keys=entity_keys,
                                         requested_features=features)
        return [{f: _value(values[f]) for f in features if f in values} if values else {} for _, values in rows]

    def _read_products(self, product_ids: Sequence[str], timeout: float | None = None, until: float | None = None,
                       cut: bool = False) -> dict[str, dict[str, Any]]:
        """The rows of ``product_ids`` from every product view, read at once, waiting until ``until`` (a
        ``time.monotonic()`` time; default: ``timeout``, else ``read_timeout``, seconds from now; ``cut``: as
        :meth:`_wait` takes it)."""
        if until is None:
            until = time.monotonic() + (self.read_timeout if timeout is None else timeout)
        names = [name for name, (_, _, join_key) in self._views.items() if join_key == "product_id"]
        reads = self._start([(name, product_ids) for name in names], timeout)
        merged: dict[str, dict[str, Any]] = {p: {} for p in product_ids}
        for read in reads:
            for p, row in zip(product_ids, self._wait(read, until, cut)):
                merged[p].update(row)
        return merged

    def _entry(self, row: dict[str, Any], when: float) -> tuple[float, dict[str, Any], np.ndarray]:
        return when, row, np.array([as_number(row.get(n)) for n in self._vectorized], np.float32)

    def _store(self, rows: dict[str, dict[str, Any]], when: float) -> dict[str, tuple[float, dict[str, Any], np.ndarray]]:
        """Cache ``rows`` from a read that started at ``when`` (a ``time.monotonic()`` time), except over a
        row a read started later has cached (a live update's, read back while this read was under way: the
        older row must not replace it); returns the entries cached for ``rows``."""
        entries = {p: self._entry(row, when) for p, row in rows.items()}  # outside the lock
        with self._lock:
            get = self._cache.get
            newer = {p: entry for p in rows if (entry := get(p)) is not None and entry[0] > when}
            self._cache.update({p: e for p, e in entries.items() if p not in newer})
            self._refreshing.difference_update(rows)
        return {**entries, **newer}

    def _stale(self, cached: dict[str, tuple[float, dict[str, Any], np.ndarray] | None], now: float) -> list[str]:
        """The products of ``cached`` (their entries, None: never read) read longer than ``product_ttl`` ago and
        not being read again already. Under the lock."""
        return [p for p, entry in cached.items() if entry is not None and now - entry[0] > self.product_ttl
                and p not in self._refreshing]

    def _read_into_cache(self, product_ids: list[str], timeout: float | None) -> None:
        """Read the rows of ``product_ids`` from the store and cache them as of the read's start (:meth:`_store`:
        never over a row a later read cached)."""
        started = time.monotonic()
        self._store(self._read_products(product_ids, timeout), started)

    def _refresh(self, product_ids: list[str], timeout: float | None = None) -> None:
        try:
            self._read_into_cache(product_ids, timeout)
        except StoreUnavailable:  # the stale rows keep serving; the next access retries
            with self._lock:
                self._refreshing.difference_update(product_ids)
        except Exception:  # noqa: BLE001 - the stale rows keep serving; the next access retries
            logger.exception("refreshing %d products' store features failed", len(product_ids))
            with self._lock:
                self._refreshing.difference_update(product_ids)

    def warm(self, product_ids: Sequence[str], batch: int = CHUNK) -> list[str]:
        """Read every product's rows into the cache (a server does this once, in the background); returns
        the products that could not be read (the store out of reach), for the caller to try again."""
        failed: list[str] = []
        for start in range(0, len(product_ids), batch):
            chunk = list(product_ids[start : start + batch])
            try:
                self._read_into_cache(chunk, 60.0)
            except StoreUnavailable:
                failed += chunk
            except Exception:  # noqa: BLE001 - logged; tried again with the rest
                logger.exception("reading %d products' store features failed", len(chunk))
                failed += chunk
        return failed

    def stopped(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True once the reader is closed (background work ends)."""
        return self._stop.wait(seconds)

    def _products(self, product_ids: Sequence[str], until: float | None = None,
                  cut: bool = False) -> list[tuple[float, dict[str, Any], np.ndarray]]:
        """Cached entries (read time, row, vector): a product never read is read now (waiting until ``until``,
        a ``time.monotonic()`` time, default ``read_timeout`` from now; ``cut``: as :meth:`_wait` takes it); a
        row older than ``product_ttl`` is served as it is and re-read in the background
        (stale-while-revalidate)."""
        now = time.monotonic()
        with self._lock:
            get = self._cache.get
            cached = {p: get(p) for p in product_ids}
            stale = self._stale(cached, now)
            self._refreshing.update(stale)
        missing = [p for p, entry in cached.items() if entry is None]
        self.hits += len(product_ids) - len(missing)
        self.misses += len(missing)
        if stale:
            self._refresher.submit(self._refresh, stale)
        if missing:
            fresh = self._read_products(missing, until=until, cut=cut)  # StoreUnavailable: the caller serves the cache
            cached.update(self._store(fresh, now))
        return [cached[p] for p in product_ids]  # type: ignore[misc]

    def _cached_products(self, product_ids: Sequence[str]) -> list[tuple[float, dict[str, Any], np.ndarray]]:
        """What is cached, a never-read product's entry empty (missing features)."""
        with self._lock:
            return [self._cache.get(p) or self._empty for p in product_ids]

    def cached_rows(self, product_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The rows last read for ``product_ids`` (empty for a product never read); reads nothing."""
        return [entry[1] for entry in self._cached_products(product_ids)]

    def rows(self, product_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of ``product_ids`` as a search reads them (:meth:`fetch`): a product never read is
        read now, a stale row re-read in the background; when the store is down, what is cached."""
        try:
            return [entry[1] for entry in self._products(product_ids)]
        except StoreUnavailable:
            return self.cached_rows(product_ids)

    def _start_user(self, user_id: str | None) -> list[Future]:
        """Start reading ``user_id``'s row from every user view (none for an anonymous user)."""
        if user_id is None:
            return []
        return self._start([(name, [user_id]) for name, (_, _, join_key) in self._views.items()
                            if join_key == "user_id"])

    def _user(self, reads: list[Future], until: float, cut: bool) -> dict[str, Any]:
        """The user's row from the reads :meth:`_start_user` began, waiting until ``until`` (``cut``: as
        :meth:`_wait` takes it)."""
        row: dict[str, Any] = {}
        for read in reads:
            row.update(self._wait(read, until, cut)[0])
        return row

    def follow(self, changes: ChangeFeed, every_s: float = 1.0) -> None:
        """Read the products a live update changed (:mod:`core.product_changes`) again as soon as the feed
        says so, every ``every_s`` seconds, in the background, instead of at their next ``product_ttl``."""
        self.feed = changes
        self.cursor = FeedCursor(changes, self.read_again)
        threading.Thread(target=poll, args=(self.cursor, every_s, self._stop), name="product-changes",
                         daemon=True).start()

    @property
    def position(self) -> str | None:
        """The change feed's position up to which live updates have been read (None: not following one)."""
        return self.cursor.position if self.cursor is not None else None

    def catch_up(self, product_ids: list[str]) -> None:
        """Read ``product_ids`` (just written) again now: through the feed when following one, so every
        update up to now is read and the position moves past them, else directly."""
        if self.cursor is not None and self.cursor.position is not None:
            self.cursor.catch_up()
        else:
            self.read_again(product_ids)

    def read_again(self, product_ids: list[str] | None) -> None:
        """Read ``product_ids`` (None: every product read so far) from the store now, and count the change."""
        if product_ids is None:  # fell behind the feed: every product read so far
            with self._lock:
                product_ids = list(self._cache)
        for start in range(0, len(product_ids), CHUNK):
            chunk = list(dict.fromkeys(product_ids[start : start + CHUNK]))
            self._read_into_cache(chunk, BACKGROUND_READ_S)
        self.changes += 1

    def refresh_stale(self, product_ids: Sequence[str]) -> int:
        """Read again the cached rows of ``product_ids`` older than ``product_ttl`` (never-read ones are left to
        :meth:`warm`), in chunks, each allowed ``BACKGROUND_READ_S``; returns how many were read. The product
        facts' periodic refresh calls it off the search path, so a store update (a materialize, a stock feed)
        reaches products no search touches, such as one out of stock that every in-stock filter leaves out.
        Each row is read at most once per ``product_ttl``; a store that fails ends it (the next call goes on)."""
        now, started = time.monotonic(), time.perf_counter()
        with self._lock:
            get = self._cache.get
            stale = self._stale({p: get(p) for p in product_ids}, now)
        read = 0
        for start in range(0, len(stale), CHUNK):
            chunk = stale[start : start + CHUNK]
            try:
                self._read_into_cache(chunk, BACKGROUND_READ_S)
            except StoreUnavailable as err:  # the stale rows keep serving; the next call reads them
                logger.warning("re-reading %d stale product rows stopped after %d: %s", len(stale), read, err)
                break
            read += len(chunk)
        if read:
            logger.info("re-read %d product rows older than %.0f s in %.1f s", read, self.product_ttl,
                        time.perf_counter() - started)
        return read

    def close(self) -> None:
        """Stop following the change feed and the background reads, and let go of the read threads and the
        feed's connection (else held until a garbage collection: a swap's reader is in a reference cycle)."""
        self._stop.set()
        self._refresher.shutdown(wait=False)
        self._io.shutdown(wait=False)
        close = getattr(self.feed, "close", None)
        if close is not None:
            close()

    def user_list(self, user_id: str, ref: str) -> list[str]:
        """A user's list feature ``ref`` (``view:feature``, e.g. ``user_profile:recent_items``), read now
        (not through the service: a search never reads it); [] when the store has no such user feature
        or no row for the user. Raises :class:`StoreUnavailable` as every read does."""
        view_name, _, feature = ref.partition(":")
        if view_name not in self._lists:
            try:
                view = self.store.get_feature_view(view_name)
            except Exception:  # noqa: BLE001 - no such view
                return []
            if view.entity_columns[0].name != "user_id" or feature not in {f.name for f in view.features}:
                return []
            self._lists[view_name] = (view, [feature], "user_id")
        elif feature not in self._lists[view_name][1]:
            return []
        value = self._read(view_name, [user_id])[0].get(feature)
        return [str(item) for item in value] if isinstance(value, list | tuple) else []

    def fetch(self, product_ids: Sequence[str], user_id: str | None, deadline: float | None = None) -> FeatureBatch:
        """Features of every product for ``user_id`` (None: anonymous); what the store cannot
        give now is missing, and the batch says why (``unavailable``). The reads (the user's row, the products
        never read) start at once and wait together ``read_timeout`` seconds at most, or until ``deadline``
        (the search's, a ``time.monotonic()`` time) when that comes first."""
        until, cut = time.monotonic() + self.read_timeout, False
        if deadline is not None and deadline < until:  # the search's deadline comes first
            until, cut = deadline, True
        unavailable = None
        try:
            user_reads = self._start_user(user_id)  # read beside the products' rows, not after them
        except StoreUnavailable as err:
            user_reads, unavailable = [], str(err)
        try:
            products = self._products(product_ids, until, cut)
        except StoreUnavailable as err:
            products, unavailable = self._cached_products(product_ids), str(err)
        try:
            user = self._user(user_reads, until, cut)
        except StoreUnavailable as err:
            user, unavailable = {}, str(err)
        rows = [entry[1] for entry in products]
        columns: dict[str, np.ndarray] = {}
        if self._vectorized:
            stacked = (np.stack([entry[2] for entry in products], axis=1) if products
                       else np.zeros((len(self._vectorized), 0), np.float32))
            columns.update(zip(self._vectorized, stacked))  # one contiguous row per name
        for odfv, features in self._odfvs:
            # each row as the product's row over the user's ({**user, **row}), without building it
            inputs = {name: ([r.get(name, given) for r in rows] if name in self._of_products else [given] * len(rows))
                      for name in _odfv_inputs(odfv) for given in (user.get(name),)}
            output = odfv.feature_transformation.udf(inputs)
            for feature in features:
                columns[feature] = np.asarray(output[feature], dtype=np.float32)
        for name in self.names:
            if name not in columns:
                columns[name] = np.asarray([as_number(r.get(name, user.get(name))) for r in rows], dtype=np.float32)
        return FeatureBatch(list(product_ids), columns, unavailable)

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups; None before the first lookup (no rate yet, rather than a rate of 0)."""
        total = self.hits + self.misses
        return self.hits / total if total else None


def _odfv_inputs(odfv: Any) -> list[str]:
    return [f.name for source in odfv.source_feature_view_projections.values() for f in source.features]


def as_number(value: Any) -> float:
    if value is None or isinstance(value, (list, str)):
        return float("nan")
    return float(value)
