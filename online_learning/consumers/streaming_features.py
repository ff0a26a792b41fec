"""Streaming feature updater: events -> popularity and user activity in Feast.

Keeps per-product daily counts (impressions from ranking events, clicks,
purchases; those of listings and recommendation shelves count too, so a
product's CTR divides every click by every impression) and per-user purchases
in a local sqlite state, and pushes the
resulting *absolute* values (7/30-day counts, smoothed CTR; a user's top
categories, usual price and recent items) to Feast's push sources
``popularity_push`` and ``user_activity_push``.

The windows end at the events' clock (the latest event's time, never past the wall clock), by UTC day. When
the clock enters a new day, the products with counts on the days that leave a
window are pushed too, though they had no new event: the online store keeps a
row until it is pushed again, so their 7- and 30-day counts drop there as they
do in the state (a quiet product's counts fall to 0 rather than freezing).

No loss, no double counting across crashes: the event ids, the counts and a
"dirty" mark on what changed are committed in one sqlite transaction; the
dirty rows are then pushed and un-marked (those read, by generation: a mark
made again during the push stays; one process pushes at a time, so the last
push sends the latest state); only then are offsets committed. A
re-delivered event is recognised by id and skipped; a push interrupted by a
crash is redone at start (pushing absolute values twice is harmless).
"""

from __future__ import annotations

import logging
import sqlite3
from bisect import insort
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.files import holding
from online_learning.consumers.base import Delivered
from online_learning.consumers.seen import ensure_table, key_of, mark, seen
from online_learning.events import InteractionEvent, RankingEvent

logger = logging.getLogger(__name__)

Push = Callable[[str, pd.DataFrame], None]
Products = dict[str, tuple[int, float]]  # product_id -> (category_id, price)
WINDOWS = (7, 30)  # the popularity windows, in days up to the events' clock


def open_state(state: Path) -> sqlite3.Connection:
    """The consumer's sqlite state at ``state`` (its tables made when new)."""
    state.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript("""
        CREATE TABLE IF NOT EXISTS daily (product_id TEXT, day TEXT, impressions INT DEFAULT 0,
            clicks INT DEFAULT 0, purchases INT DEFAULT 0, PRIMARY KEY (product_id, day));
        CREATE TABLE IF NOT EXISTS purchases (user_id TEXT, product_id TEXT, ts TEXT, event_id TEXT PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS dirty (kind TEXT, key TEXT, generation INT NOT NULL DEFAULT 0,
            PRIMARY KEY (kind, key));
        CREATE TABLE IF NOT EXISTS clock (id INT PRIMARY KEY CHECK (id = 0), now TEXT);
        CREATE INDEX IF NOT EXISTS daily_by_day ON daily (day);
    """)
    if "generation" not in {row[1] for row in db.execute("PRAGMA table_info(dirty)")}:  # a state made before
        try:
            with db:
                db.execute("ALTER TABLE dirty ADD COLUMN generation INT NOT NULL DEFAULT 0")
        except sqlite3.OperationalError as error:  # another process opening the state added it since the look
            if "duplicate column" not in str(error):
                raise
    ensure_table(db)
    return db


@contextmanager
def counting(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on the state, its write lock taken as it begins (``BEGIN IMMEDIATE``), for a
    look-up of the seen ids and the counts and marks that follow from it. Processes sharing the state (several
    consumers on one home, ``seed_state`` under a live consumer) take their turns: the ids one reads stay true
    until it commits, so an event given to two of them is counted once."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        yield


def mark_dirty(db: sqlite3.Connection, kind: str, keys: Iterable[str]) -> None:
    """Mark the products (``kind`` "product") or shoppers ("user") ``keys`` to push (inside the caller's
    transaction), with a new generation, one past the table's highest (read once per call: the table has no
    index on it). A push un-marks only the marks it read, by generation (:meth:`StreamingFeatures._flush_dirty`):
    a shopper marked again while it pushed (``events forget`` resetting a profile the push is sending with the
    erased purchases) stays marked for the next push."""
    (highest,) = db.execute("SELECT COALESCE(MAX(generation), 0) FROM dirty").fetchone()
    db.executemany("INSERT OR REPLACE INTO dirty (kind, key, generation) VALUES (?, ?, ?)",
                   [(kind, k, highest + 1) for k in keys])


def seed_state(state: Path, rankings: pd.DataFrame, interactions: pd.DataFrame) -> int:
    """Count the logged events the state at ``state`` has not seen (``rankings``: one row per shown product;
    ``interactions``; both with ``event_id``, ``product_id``, ``timestamp``, and ``user_id`` for purchases),
    as the consumer counts them, without marking anything to push: the offline feature tables written from
    the same log carry those values. So the consumer's next push of a product or a shopper adds to their
    history instead of starting it again. Returns the events counted."""
    db = open_state(state)
    try:
        keys = list(dict.fromkeys([*(("ranking", i) for i in rankings["event_id"].astype(str)),
                                   *(("interaction", i) for i in interactions["event_id"].astype(str))]))
        with counting(db):
            known = seen(db, keys)
            # a search that found nothing is logged as one row without a product: its id is marked seen, nothing counted
            shown = rankings[rankings["product_id"].notna()]
            shown = shown[~shown["event_id"].astype(str).isin({i for kind, i in known if kind == "ranking"})]
            acted = interactions[interactions["product_id"].notna()]
            acted = acted[~acted["event_id"].astype(str).isin({i for kind, i in known if kind != "ranking"})]
            counts: Counter[tuple[str, str, str]] = Counter()
            shown_at = pd.to_datetime(shown["timestamp"], utc=True)
            acted_at = pd.to_datetime(acted["timestamp"], utc=True)
            for product, when in zip(shown["product_id"], shown_at):
                counts[(str(product), when.strftime("%Y-%m-%d"), "impressions")] += 1
            for product, kind, when in zip(acted["product_id"], acted["type"], acted_at):
                if kind in ("click", "purchase"):
                    column = "clicks" if kind == "click" else "purchases"
                    counts[(str(product), when.strftime("%Y-%m-%d"), column)] += 1
            bought = acted[(acted["type"] == "purchase") & acted["user_id"].notna()]
            latest = max([at.max() for at in (shown_at, acted_at) if len(at)], default=None)
            mark(db, [key for key in keys if key not in known])
            _add(db, counts, [(str(u), str(p), pd.Timestamp(t).isoformat(), str(e)) for u, p, t, e in
                              zip(bought["user_id"], bought["product_id"], acted_at[bought.index], bought["event_id"])],
                 latest)
        return len(set(shown["event_id"].astype(str)) | set(acted["event_id"].astype(str)))
    finally:
        db.close()


def counted_products(state: Path) -> set[str]:
    """The products the state at ``state`` holds daily counts of (none when it does not exist yet)."""
    if not state.is_file():
        return set()
    db = open_state(state)
    try:
        return {str(p) for (p,) in db.execute("SELECT DISTINCT product_id FROM daily")}
    finally:
        db.close()


def seed_history(state: Path, purchases: pd.DataFrame, prefix: str) -> int:
    """Put a purchase history that never went through Kafka (``user_id``, ``product_id``, ``event_timestamp``;
    a simulated store world's) in the state at ``state``, in place of the one seeded before under the same
    event id ``prefix``, so the profiles the consumer pushes keep it. Only profiles read it: daily counts,
    seen ids and nothing to push are left as they are. Returns the purchases put in."""
    db = open_state(state)
    try:
        rows = [(str(u), str(p), pd.Timestamp(t).isoformat(), f"{prefix}{i}") for i, (u, p, t) in
                enumerate(zip(purchases["user_id"], purchases["product_id"], purchases["event_timestamp"]))]
        with db:
            db.execute("DELETE FROM purchases WHERE event_id LIKE ?", (prefix.replace("%", "") + "%",))
            db.executemany("INSERT OR IGNORE INTO purchases VALUES (?, ?, ?, ?)", rows)
        return len(rows)
    finally:
        db.close()


def _add(db: sqlite3.Connection, counts: Counter[tuple[str, str, str]], purchases: list[tuple[str, str, str, str]],
         latest: object | None) -> None:
    """Add daily ``counts`` ((product, day, column) -> n), ``purchases`` (user, product, time, event id) and move
    the state's clock to ``latest``, never past the wall clock (inside the caller's transaction): a client's
    clock may run up to a day ahead (:data:`online_learning.events.MAX_AHEAD`), and one such event would end
    every window a day early, unlike the feature tables training reads (their windows end at the wall clock);
    it is counted on its own day, which the windows reach when the day comes."""
    for (product, day, column), n in counts.items():
        db.execute(f"INSERT INTO daily (product_id, day, {column}) VALUES (?, ?, ?) "
                   f"ON CONFLICT (product_id, day) DO UPDATE SET {column} = {column} + excluded.{column}",
                   (product, day, n))
    db.executemany("INSERT OR IGNORE INTO purchases VALUES (?, ?, ?, ?)", purchases)
    if latest is not None:
        latest = min(pd.Timestamp(latest), pd.Timestamp.now(tz="UTC"))
        db.execute("INSERT INTO clock VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET now = max(now, excluded.now)",
                   (latest.isoformat(),))


def _clock_day(db: sqlite3.Connection) -> date | None:
    """The UTC day of the state's clock (the latest event counted); None before any."""
    row = db.execute("SELECT now FROM clock WHERE id = 0").fetchone()
    return pd.Timestamp(row[0]).tz_convert("UTC").date() if row else None


def first_day(now: object, window: int) -> pd.Timestamp:
    """Midnight (UTC) of the first of the ``window`` whole UTC days that end with ``now``'s day: a popularity
    window counts the events from then on. One rule for the consumer's pushes and the offline table
    (``feature_tables.popularity``), so both count the same events."""
    at = pd.Timestamp(now)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    return at.normalize() - pd.Timedelta(days=window - 1)


def _leaving(db: sqlite3.Connection, before: date | None, after: date | None) -> list[str]:
    """The products with counts on a day that leaves one of the :data:`WINDOWS` when the clock moves from day
    ``before`` to day ``after``: a window of ``w`` days at day ``D`` holds the days after ``D - w``, so the days
    in ``(before - w, after - w]`` leave it, and those products' sums drop."""
    if before is None or after is None or after <= before:
        return []
    spans = [((before - timedelta(days=w)).isoformat(), (after - timedelta(days=w)).isoformat()) for w in WINDOWS]
    rows = db.execute("SELECT DISTINCT product_id FROM daily WHERE "
                      + " OR ".join("(day > ? AND day <= ?)" for _ in spans), [d for span in spans for d in span])
    return [str(product) for (product,) in rows]


TOP_CATEGORIES = 5
RECENT_ITEMS = 5


class RunningProfile:
    """A shopper's profile from their purchases added so far, oldest first, each ``(product_id, category_id,
    price)`` (a category below 0, a NaN price: not known): the top categories by share of the purchases of a
    known category (ties: the lower id), the median of the known prices, the purchase count and the last items
    bought. Kept up to date one purchase at a time: the offline table's profile after each purchase
    (``feature_tables.user_profiles``) costs a shopper's purchases times their categories, not their purchases
    squared (a shopper with 13,000 purchases took half a minute)."""

    def __init__(self) -> None:
        self.shares: Counter[int] = Counter()
        self.known = 0  # purchases of a known category
        self.prices: list[float] = []  # the known prices, sorted
        self.count = 0
        self.recent: deque[str] = deque(maxlen=RECENT_ITEMS)

    def add(self, item: tuple[str, int, float]) -> None:
        product, category, price = item
        self.count += 1
        self.recent.append(product)
        if category >= 0:
            self.shares[int(category)] += 1
            self.known += 1
        if price == price:  # not NaN
            insort(self.prices, float(price))

    def profile(self) -> dict[str, object]:
        top = sorted(self.shares, key=lambda c: (-self.shares[c], c))[:TOP_CATEGORIES]  # ties: the lower id
        n, middle = len(self.prices), len(self.prices) // 2
        median = (float("nan") if not n else self.prices[middle] if n % 2
                  else (self.prices[middle - 1] + self.prices[middle]) / 2)
        return {"top_categories": top, "category_affinity": [self.shares[c] / self.known for c in top],
                "median_price": median, "purchases": self.count, "recent_items": list(self.recent)[::-1]}


def profile_of(bought: Sequence[tuple[str, int, float]]) -> dict[str, object]:
    """:class:`RunningProfile` of the purchases ``bought``, oldest first: one profile for the streaming consumer
    and the offline table."""
    running = RunningProfile()
    for item in bought:
        running.add(item)
    return running.profile()


class ProductAttributes:
    """Each product's category id and price from the offline ``product_attributes`` table at ``table``:
    calling it reads the file again when it changed (its modification time or the file itself, which
    ``features build`` replaces whole) and else returns what it read last. So a running consumer builds a
    profile with the products a rebuild of the tables added, or their new prices, without a restart."""

    def __init__(self, table: Path) -> None:
        self.table = table
        self._read: tuple[int, int] | None = None
        self._products: Products = {}

    def __call__(self) -> Products:
        try:
            stat = self.table.stat()
            if (stat.st_mtime_ns, stat.st_ino) != self._read:
                attributes = pd.read_parquet(self.table, columns=["product_id", "category_id", "price"])
                self._products = {str(p): (int(c), float(x)) for p, c, x in
                                  zip(attributes["product_id"], attributes["category_id"], attributes["price"])}
                self._read = (stat.st_mtime_ns, stat.st_ino)
        except (OSError, ValueError) as err:  # gone or unreadable for now: the last map until it is back
            logger.warning("could not read the product attributes %s (%s); keeping the %d products read before",
                           self.table, err, len(self._products))
        return self._products


class StreamingFeatures:
    """Args:
        state: sqlite file of counts and seen ids.
        products: product_id -> (category_id, price), to build user profiles; or a function that returns
            the current map (:class:`ProductAttributes`), called once per batch.
        push: ``push(push_source_name, frame)``, e.g. Feast ``FeatureStore.push``.
    """

    def __init__(self, state: Path, products: Products | Callable[[], Products], push: Push) -> None:
        self.db = open_state(state)
        self.push_lock = state.with_name(f"{state.name}.push.lock")  # see _flush_dirty
        self._current = products if callable(products) else None
        self.products = products() if callable(products) else products
        self.push = push
        self.pushed = {"popularity": 0, "users": 0}
        self._stamped = pd.Timestamp(0, tz="UTC")
        try:
            self._flush_dirty()  # what a crash left marked
        except Exception as err:  # noqa: BLE001 - the store is down: the marks stay for the next batch's push
            logger.warning("pushing the features left marked failed (%s); they are pushed with the next batch", err)

    def __call__(self, batch: list[Delivered]) -> None:
        """Count ``batch`` (:meth:`write`) and push what it changed (:meth:`after`)."""
        self.write(batch)
        self.after()

    def write(self, batch: list[Delivered]) -> None:
        """Count ``batch``: its event ids, counts and purchases and the marks on what changed, in one sqlite
        transaction, which also looks up the ids seen before (:func:`counting`). The consumer loop holds the
        erasure list's lock meanwhile, and lets it go before :meth:`after` pushes: a slow push holds no erasure
        off, nor, through the erasure waiting at the gate, the other consumers' batches; the push reads the state
        when it holds ``<state>.push.lock``, so it sends an erasure's deletions as they are, and the erasure's own
        push still lands after it."""
        if self._current is not None:
            self.products = self._current()
        with counting(self.db):
            known = seen(self.db, [key_of(d.event) for d in batch])
            counts: Counter[tuple[str, str, str]] = Counter()
            purchases = []
            latest = None
            for delivered in batch:
                event = delivered.event
                if key_of(event) in known:
                    continue
                known.add(key_of(event))
                day = pd.Timestamp(event.timestamp).tz_convert("UTC").strftime("%Y-%m-%d")
                latest = max(latest or event.timestamp, event.timestamp)
                if isinstance(event, RankingEvent):
                    for item in event.items:
                        counts[(item.product_id, day, "impressions")] += 1
                elif isinstance(event, InteractionEvent) and event.type in ("click", "purchase"):
                    counts[(event.product_id, day, "clicks" if event.type == "click" else "purchases")] += 1
                    if event.type == "purchase" and event.user_id:
                        purchases.append((event.user_id, event.product_id, event.timestamp.isoformat(),
                                          event.event_id))
            before = _clock_day(self.db)
            mark(self.db, known)  # those seen before are kept as they are
            _add(self.db, counts, purchases, latest)
            changed = [*(p for p, _, _ in counts), *_leaving(self.db, before, _clock_day(self.db))]
            mark_dirty(self.db, "product", dict.fromkeys(changed))
            mark_dirty(self.db, "user", dict.fromkeys(p[0] for p in purchases))

    def after(self) -> None:
        """Push what is marked (:meth:`_flush_dirty`): the step of a batch after :meth:`write`, run outside
        the erasure list's lock (:class:`~online_learning.consumers.base.ConsumerLoop`)."""
        self._flush_dirty()

    def _now(self) -> pd.Timestamp:
        row = self.db.execute("SELECT now FROM clock WHERE id = 0").fetchone()
        return pd.Timestamp(row[0]) if row else pd.Timestamp.now(tz="UTC")

    def _stamp(self) -> pd.Timestamp:
        """The time a push is stamped with: the wall clock, strictly after this consumer's last push. An online
        store keeps a row only when it is newer than the one it holds (Feast's Redis store skips an older or
        equal stamp), so rows stamped with the events' clock were dropped: a late event's counts, a profile
        reset by ``events forget`` with no newer event since, rows stamped ahead by a client's clock."""
        self._stamped = max(pd.Timestamp.now(tz="UTC").floor("us"), self._stamped + pd.Timedelta(microseconds=1))
        return self._stamped

    def popularity(self, products: list[str]) -> pd.DataFrame:
        now, stamp = self._now(), self._stamp()  # windows end at the events' clock
        rows = []
        for product in products:
            record: dict[str, object] = {"product_id": product, "event_timestamp": stamp}
            for window in WINDOWS:
                since = first_day(now, window).strftime("%Y-%m-%d")
                sums = self.db.execute("SELECT COALESCE(SUM(impressions),0), COALESCE(SUM(clicks),0), "
                                       "COALESCE(SUM(purchases),0) FROM daily WHERE product_id = ? AND day >= ?",
                                       (product, since)).fetchone()
                for name, value in zip(("impressions", "clicks", "purchases"), sums):
                    record[f"{name}_{window}d"] = int(value)
                record[f"ctr_{window}d"] = np.float32((sums[1] + 1) / (sums[0] + 30))
            rows.append(record)
        return pd.DataFrame(rows)

    def profiles(self, users: list[str]) -> pd.DataFrame:
        stamp = self._stamp()
        rows = []
        for user in users:
            bought = self.db.execute("SELECT product_id FROM purchases WHERE user_id = ? ORDER BY ts", (user,)).fetchall()
            known = [(p, *self.products.get(p, (-1, float("nan")))) for (p,) in bought]
            rows.append({"user_id": user, **profile_of(known), "event_timestamp": stamp})
        return pd.DataFrame(rows)

    def _flush_dirty(self) -> None:
        """Push what is marked and un-mark it, one process at a time (``<state>.push.lock``). The marks are
        read, the rows built and pushed and the marks read deleted while it is held: a push reads the state
        after the pushes before it ended, and lands after them. Else a push built before ``events forget``
        deleted a shopper's purchases could land after the erasure's own push (which took its new mark),
        and the online store would keep the erased profile, with no mark left to push it again."""
        with holding(self.push_lock):
            dirty = self.db.execute("SELECT kind, key, generation FROM dirty").fetchall()
            if not dirty:
                return
            products = [k for kind, k, _ in dirty if kind == "product"]
            users = [k for kind, k, _ in dirty if kind == "user"]
            if products:
                self.push("popularity_push", self.popularity(products))
                self.pushed["popularity"] += len(products)
            if users:
                self.push("user_activity_push", self.profiles(users))
                self.pushed["users"] += len(users)
            with self.db:
                # the marks as read: one made again meanwhile (a new generation) is pushed next time
                self.db.executemany("DELETE FROM dirty WHERE kind = ? AND key = ? AND generation = ?", dirty)


def feast_push(store) -> Push:  # type: ignore[no-untyped-def]
    """Push to Feast's online store (the offline history is the Parquet event log)."""
    from feast.data_source import PushMode

    def push(source: str, frame: pd.DataFrame) -> None:
        store.push(source, frame, to=PushMode.ONLINE)

    return push
