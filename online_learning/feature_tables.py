"""The feature store's offline tables from a store's own data: its catalog and its event log.

``shoprank features build --from-catalog`` writes the Parquet files ``feature_repo/`` reads,
for a store in production (``features build`` without it simulates a store world instead):

- ``product_attributes``: price, category and brand from the catalog's columns; ``category_id``
  and ``department_id`` are stable ids of the category text and of its top level (the part
  before the first ``>``), so profiles built at different times agree;
- ``inventory``: ``in_stock`` and ``quantity`` for the products whose catalog row gives either
  (a product without them has no row, and counts as in stock);
- ``promotions``: ``promoted`` and ``discount`` where the catalog has those columns;
- ``popularity``: impressions, clicks and purchases over the last 7 and 30 days per product (whole
  UTC days, the last one the build's), with their smoothed CTR, counted from the event log as the
  streaming consumer counts them
  (a store that imported its history with ``shoprank events import`` starts with it);
- ``user_profile``: for each shopper with a purchase in the log, their top categories and
  affinities, median price, purchases and recent items, a row after each purchase.

Each build adds its rows to those of the builds before, so a training join of an impression logged
before the latest build reads the catalog's values and the shopper's profile it was served with
(:func:`with_history`); rows from before the event log's first day go, but for each product's last
one, so ``shoprank events prune`` bounds the files too.

The streaming feature consumer keeps popularity and profiles current from then on: its state is
seeded with the same events, so its next push of a product or a shopper goes on from what the tables
hold (it reads each product's category id and price from ``product_attributes``). It pushes to the
online store only: a training join reads popularity as the last build before the impression counted
it, not the counts the consumer pushed since.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.files import write_text_atomic
from online_learning.consumers.log_sink import log_files, read_log
from online_learning.consumers.streaming_features import (
    WINDOWS,
    RunningProfile,
    counted_products,
    first_day,
    seed_state,
)
from online_learning.forget_list import ForgetList
from retrieval.catalog import as_bool

logger = logging.getLogger(__name__)

_STAMP = pa.field("event_timestamp", pa.timestamp("ns", tz="UTC"))
_COUNTS = [f"{kind}_{window}d" for window in WINDOWS for kind in ("impressions", "clicks", "purchases")]
#: Each offline table's columns and types, those of the ``feature_repo/`` views: a table with no rows keeps
#: them too (Feast's point-in-time join fails on a key column of another type than the entity's).
SCHEMAS: dict[str, pa.Schema] = {
    "product_attributes": pa.schema([
        ("product_id", pa.string()), ("price", pa.float32()), ("category_id", pa.int64()),
        ("department_id", pa.int64()), ("category", pa.string()), ("brand", pa.string()), _STAMP]),
    "inventory": pa.schema([("product_id", pa.string()), ("in_stock", pa.int64()), ("quantity", pa.int64()), _STAMP]),
    "promotions": pa.schema([
        ("product_id", pa.string()), ("promoted", pa.int64()), ("discount", pa.float32()),
        ("campaign_start", pa.int64()), ("campaign_end", pa.int64()), _STAMP]),
    "popularity": pa.schema([("product_id", pa.string()), *((name, pa.int64()) for name in _COUNTS),
                             *((f"ctr_{window}d", pa.float32()) for window in WINDOWS), _STAMP]),
    "user_profile": pa.schema([
        ("user_id", pa.string()), ("top_categories", pa.list_(pa.int64())),
        ("category_affinity", pa.list_(pa.float32())), ("median_price", pa.float32()), ("purchases", pa.int64()),
        ("recent_items", pa.list_(pa.string())), _STAMP]),
}


_KEYS = {"user_profile": "user_id"}  # each table's key (the others: product_id)


def write_table(frame: pd.DataFrame, folder: Path, name: str) -> None:
    """Write ``frame`` as the offline table ``name`` (``folder/<name>.parquet``) with the columns and types of
    :data:`SCHEMAS`, whole: a reader (a materialize, the streaming consumer) sees the old file or the new one."""
    schema = SCHEMAS[name]
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False) if len(frame) else schema.empty_table()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_text_atomic(folder / f"{name}.parquet", sink.getvalue().to_pybytes())

def stable_id(text: object) -> int:
    """A positive 56-bit id of ``text`` that does not change between builds or machines (-1: no text)."""
    if not isinstance(text, str) or not text.strip():
        return -1
    return int.from_bytes(hashlib.blake2b(text.strip().encode(), digest_size=7).digest(), "big")


def _flag(values: pd.Series) -> pd.Series:
    """A catalog column of booleans (true/false, yes/no, 1/0, 1.0/0.0) as 1 / 0, None where empty."""
    def one(value: object) -> int | None:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        try:
            return int(as_bool(value))
        except ValueError:  # not a boolean: the catalog's check names it; here it counts as not set
            return 0

    return values.map(one)


def product_tables(products: pd.DataFrame, now: datetime) -> dict[str, pd.DataFrame]:
    """``product_attributes``, ``inventory`` and ``promotions`` from the catalog's columns."""
    def column(name: str) -> pd.Series:
        return products[name] if name in products else pd.Series([None] * len(products), index=products.index)

    ids, stamp = products["product_id"].astype(str), pd.Timestamp(now)
    category = column("category")
    tables = {"product_attributes": pd.DataFrame({
        "product_id": ids, "price": pd.to_numeric(column("price"), errors="coerce").astype("float32"),
        "category_id": category.map(stable_id).astype("int64"),
        "department_id": category.map(lambda c: stable_id(c.split(">")[0]) if isinstance(c, str) else -1)
        .astype("int64"),
        "category": category.astype(object), "brand": column("brand").astype(object), "event_timestamp": stamp})}
    stocked, quantity = _flag(column("in_stock")), pd.to_numeric(column("quantity"), errors="coerce")
    known = stocked.notna() | quantity.notna()
    in_stock = stocked.where(stocked.notna(), (quantity > 0).astype(float))
    tables["inventory"] = pd.DataFrame({
        "product_id": ids[known], "in_stock": in_stock[known].astype("int64"),
        "quantity": quantity[known].fillna(-1).astype("int64"), "event_timestamp": stamp})
    promoted, discount = _flag(column("promoted")), pd.to_numeric(column("discount"), errors="coerce")
    offered = promoted.notna() | discount.notna()
    tables["promotions"] = pd.DataFrame({
        "product_id": ids[offered], "promoted": promoted[offered].fillna((discount[offered] > 0).astype(int))
        .astype("int64"), "discount": discount[offered].fillna(0.0).astype("float32"),
        "campaign_start": np.zeros(int(offered.sum()), dtype="int64"),
        "campaign_end": np.zeros(int(offered.sum()), dtype="int64"), "event_timestamp": stamp})
    return tables


def popularity(rankings: pd.DataFrame, interactions: pd.DataFrame, now: datetime,
               also: Iterable[str] = ()) -> pd.DataFrame:
    """Per product: impressions (rows shown), clicks and purchases over the 7 and 30 whole UTC days that end
    with ``now``'s day, as the streaming consumer counts them (:func:`first_day`), and its CTR
    ((clicks + 1) / (impressions + 30)); the products of ``also`` without an event in the window get a row of
    zeros (an online row is only ever overwritten: a product whose sales stopped would keep its old counts)."""
    columns = {"product_id": pd.Series(dtype=object)}
    counts = []
    for window in WINDOWS:
        since = first_day(now, window)
        shown = rankings[rankings["timestamp"] >= since].groupby("product_id").size().rename(f"impressions_{window}d")
        recent = interactions[interactions["timestamp"] >= since]
        counts.append(shown)
        for kind, name in (("click", "clicks"), ("purchase", "purchases")):
            counts.append(recent[recent["type"] == kind].groupby("product_id").size().rename(f"{name}_{window}d"))
    table = pd.concat(counts, axis=1).fillna(0).astype("int64") if counts else pd.DataFrame(columns)
    table = table.reset_index().rename(columns={"index": "product_id"})
    quiet = sorted(set(map(str, also)) - set(table["product_id"].astype(str)))
    if quiet:
        zeros = pd.DataFrame(0, index=range(len(quiet)), columns=[c for c in table.columns if c != "product_id"])
        table = pd.concat([table, zeros.assign(product_id=quiet)], ignore_index=True)
    for window in WINDOWS:
        table[f"ctr_{window}d"] = ((table[f"clicks_{window}d"] + 1) / (table[f"impressions_{window}d"] + 30)) \
            .astype("float32")
    table["event_timestamp"] = pd.Timestamp(now)
    return table


def user_profiles(interactions: pd.DataFrame, attributes: pd.DataFrame,
                  latest: datetime | None = None) -> pd.DataFrame:
    """A shopper's profile after each of their purchases, as the streaming consumer builds it then (from
    the purchases before it here), so a point-in-time join reads the profile a search was served with.
    Each row is stamped at its purchase, no later than ``latest``: materialize reads rows up to its own
    clock, and a purchase stamped ahead by a client's clock would leave its shopper's profile out. Purchases
    at one time (a cart bought at once) give one row, the profile after them all."""
    bought = interactions[(interactions["type"] == "purchase") & interactions["user_id"].notna()]
    # categories stay integers (ids of 64 bits: a float column after the merge would round them)
    bought = bought.merge(attributes[["product_id", "category_id", "price"]].astype({"category_id": "Int64"}),
                          on="product_id", how="left")
    rows = []
    for user, events in bought.sort_values("timestamp", kind="stable").groupby("user_id", sort=True):
        categories = [-1 if pd.isna(c) else int(c) for c in events["category_id"]]
        running = RunningProfile()
        for item, when in zip(zip(events["product_id"].astype(str), categories, events["price"].astype(float)),
                              events["timestamp"]):
            running.add(item)
            stamp = min(pd.Timestamp(when), pd.Timestamp(latest)) if latest is not None else pd.Timestamp(when)
            rows.append({"user_id": str(user), **running.profile(), "event_timestamp": stamp})
    profiles = pd.DataFrame(rows, columns=SCHEMAS["user_profile"].names)
    return profiles.drop_duplicates(["user_id", "event_timestamp"], keep="last").reset_index(drop=True)


def first_logged_day(log_root: Path) -> pd.Timestamp | None:
    """Midnight (UTC) of the event log's first day at ``log_root`` (None: nothing logged)."""
    days = [part.removeprefix("date=") for kind in ("rankings", "interactions") for path in log_files(log_root, kind)
            for part in path.parts if part.startswith("date=")]
    return pd.Timestamp(min(days), tz="UTC") if days else None


def with_history(frame: pd.DataFrame, table: Path, key: str, first_day: pd.Timestamp) -> pd.DataFrame:
    """This build's rows of a table (``frame``, keyed by ``key``) after the rows the file ``table`` holds from
    the builds before: a training join of an impression logged before this build reads the values of then.

    A row already written stays as written (this build's row for the same key and time is dropped). Only
    the rows the logged impressions can still join to are kept: those stamped from ``first_day`` (the event
    log's first day) on and, for each product, its last row before that day. A shopper's profile rows from
    before that day go: the purchases they come from left the log (``shoprank events prune``)."""
    if not table.is_file():
        return frame
    parts = [part for part in (pd.read_parquet(table), frame) if len(part)]
    if not parts:
        return frame
    rows = pd.concat(parts, ignore_index=True)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    rows = rows.drop_duplicates([key, "event_timestamp"], keep="first")
    old = rows["event_timestamp"] < first_day
    kept = ~old
    if key != "user_id":
        kept |= rows.index.isin(rows[old].sort_values("event_timestamp", kind="stable")
                                .drop_duplicates(key, keep="last").index)
    return rows[kept].reset_index(drop=True)


def without_erased(profiles: pd.DataFrame, forgotten: Path) -> pd.DataFrame:
    """``profiles`` less the rows of a shopper ``shoprank events forget`` erased at or after the row's time (the
    erasure list at ``forgotten``): an erasure while a build ran must not bring their rows back."""
    erasures = ForgetList(forgotten)
    erasures.refresh()
    if not len(erasures) or profiles.empty:
        return profiles
    erased_at = {user: erasures.erased_at(user) for user in profiles["user_id"].astype(str).unique()}
    kept = [erased_at[str(user)] is None or when > erased_at[str(user)]
            for user, when in zip(profiles["user_id"], pd.to_datetime(profiles["event_timestamp"], utc=True))]
    return profiles[kept].reset_index(drop=True)


def _not_erased(events: pd.DataFrame, erasures: ForgetList | None) -> pd.DataFrame:
    """The logged ``events`` less those of a user or session the erasure list holds, dated at or before its
    erasure (as :meth:`ForgetList.erased` judges an event; the log keeps no time of receipt)."""
    if erasures is None or not len(erasures) or events.empty:
        return events
    erased = pd.Series(False, index=events.index)
    for column, kind in (("user_id", "user"), ("session_id", "session")):
        if column in events:
            ids = events[column].dropna().astype(str)
            until = pd.to_datetime(ids.map({i: erasures.erased_at(i, kind) for i in ids.unique()}), utc=True)
            erased |= events["timestamp"] <= until.reindex(events.index)  # NaT (no erasure): False
    return events[~erased]


def _products_in(table: Path) -> set[str]:
    """The products of the offline table at ``table`` (none when there is no such file)."""
    if not table.is_file():
        return set()
    return set(pd.read_parquet(table, columns=["product_id"])["product_id"].astype(str))


def _logged(log_root: Path, kind: str, columns: list[str], since: pd.Timestamp | None = None) -> pd.DataFrame:
    """The event log's rows of ``kind`` (rankings | interactions) after ``since`` (None: all of them), with
    ``event_id``, ``columns`` and their ``timestamp`` in UTC."""
    frame = read_log(log_root, kind, columns, since)
    if frame.empty:
        return pd.DataFrame({"event_id": [], "product_id": [], "user_id": [], "type": [],
                             "timestamp": pd.to_datetime([], utc=True)})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame if since is None else frame[frame["timestamp"] > since]


def write_catalog_tables(products: pd.DataFrame, log_root: Path, folder: Path, now: datetime,
                         state: Path | None = None, forgotten: Path | None = None) -> dict[str, int]:
    """Add every offline table's rows from ``products`` (the live catalog) and the event log at ``log_root``
    (popularity from its last 30 days before ``now``, profiles from every purchase it holds, each event counted
    as the streaming consumer counts it) to the rows of the builds before (:func:`with_history`; tables a
    simulated world wrote are replaced); returns this build's rows per table. ``state``: the streaming
    consumer's state, which counts the same events (:func:`online_learning.consumers.streaming_features.seed_state`),
    so its next push of a product or a shopper adds to what the tables hold. ``forgotten``: the erasure list,
    whose shoppers' events and profile rows are not kept (:func:`without_erased`). The log is read first; then
    the list's lock is held (shared: :meth:`ForgetList.reading`) while the events of the shoppers it lists are
    left out and until the state is seeded and the tables written, so an erasure listed meanwhile waits, and
    then finds their rows where this build put them, and one listed during the read has its events left out.
    (The read, the longest part, holds no erasure up, nor the consumers an erasure waiting would hold up.)"""
    since = pd.Timestamp(now) - pd.Timedelta(days=30)
    read = _LogRead(since, _logged(log_root, "rankings", ["product_id", "timestamp"], since),
                    _logged(log_root, "interactions", ["product_id", "user_id", "session_id", "type", "timestamp"]),
                    first_logged_day(log_root))
    if forgotten is None:
        return _write_catalog_tables(products, read, folder, now, state, None)
    erasures = ForgetList(forgotten)
    with erasures.reading():
        return _write_catalog_tables(products, read, folder, now, state, erasures)


@dataclass(frozen=True)
class _LogRead:
    """What a catalog build reads of the event log before it takes the erasure list's lock."""

    since: pd.Timestamp  # the start of the last 30 days
    rankings: pd.DataFrame  # since then
    logged: pd.DataFrame  # every interaction
    first_day: pd.Timestamp | None  # the log's first day (None: nothing logged)


def _write_catalog_tables(products: pd.DataFrame, read: _LogRead, folder: Path, now: datetime, state: Path | None,
                          erasures: ForgetList | None) -> dict[str, int]:
    """:func:`write_catalog_tables` once the log is ``read``, the erasure list's lock held (``erasures``: None,
    no list)."""
    since, rankings = read.since, read.rankings
    stamp = now - timedelta(seconds=1)  # every row's time: before the materialize that follows reads up to now
    tables = product_tables(products, stamp)
    # an erasure listed before this build held the list's lock may not have reached the log yet: not counted
    logged = _not_erased(read.logged, erasures)
    interactions = logged[logged["timestamp"] > since]
    # every logged purchase: the consumer's state keeps each one until ``events prune`` drops its day from the log
    purchases = logged[logged["type"] == "purchase"]
    for name, unknown in (("inventory", {"in_stock": 1, "quantity": -1}),  # unknown stock counts as in stock
                          ("promotions", {"promoted": 0, "discount": 0.0, "campaign_start": 0, "campaign_end": 0})):
        # a product the last tables gave a value the catalog no longer gives: its online row is overwritten
        # with "unknown" (else the old promotion or stock-out stays served: materialize only overwrites rows)
        dropped = sorted(_products_in(folder / f"{name}.parquet") - set(tables[name]["product_id"].astype(str)))
        if dropped:
            rows = pd.DataFrame({"product_id": dropped, **unknown, "event_timestamp": pd.Timestamp(stamp)})
            tables[name] = pd.concat([tables[name], rows.astype(tables[name].dtypes.to_dict())], ignore_index=True)
    counted = _products_in(folder / "popularity.parquet")  # products given counts before: now quiet, zeros
    if state is not None:
        counted |= counted_products(state)
        seed_state(state, rankings, pd.concat([interactions, purchases]).drop_duplicates("event_id"))
    tables["popularity"] = popularity(rankings, interactions, stamp, counted)
    folder.mkdir(parents=True, exist_ok=True)
    readme = folder / "README.md"
    simulated = readme.is_file() and "SIMULATED" in readme.read_text(encoding="utf-8")
    first_day = read.first_day or pd.Timestamp(stamp)

    def kept(name: str) -> pd.DataFrame:  # this build's rows after the builds' before (a simulated world's go)
        frame = tables[name]
        return frame if simulated else with_history(frame, folder / f"{name}.parquet", _KEYS.get(name, "product_id"),
                                                    first_day)

    # the last row of each product the attributes file keeps, deleted ones too, as the consumer reads it
    attribute_rows = kept("product_attributes")  # read with its history once: the profiles and its file use it
    attributes = attribute_rows.sort_values("event_timestamp", kind="stable")
    tables["user_profile"] = user_profiles(purchases, attributes.drop_duplicates("product_id", keep="last"), stamp)
    for name in tables:
        rows = attribute_rows if name == "product_attributes" else kept(name)
        if name == "user_profile" and erasures is not None:
            rows = without_erased(rows, erasures.path)
        write_table(rows, folder, name)
    readme.write_text(
        "# Offline feature tables\n\nFrom the store's own data (`shoprank features build --from-catalog`): the "
        "catalog's prices, categories, brands, stock and promotions; popularity from the event log's last 30 "
        "days and shopper profiles from every purchase it holds. Each build adds its rows to those of the "
        "builds before (from the event log's first day on).\n")
    counts = {name: len(frame) for name, frame in tables.items()}
    logger.info("wrote feature tables from the catalog and the event log to %s: %s", folder, counts)
    return counts
