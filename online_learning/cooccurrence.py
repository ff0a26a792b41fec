"""Products shoppers act on together, from the offline event log (``/v1/recommend``'s
``bought_together`` and ``viewed_together``; ``shoprank recommendations``, nightly).

Each logged interaction after the traffic filters (:mod:`online_learning.traffic_filter`) is
credited to a shopper: its user, else its session, else the user or session of the search that
showed the product, else that search alone. A product's **shoppers** are those who acted on it:
added it to a cart or bought it (``bought``), or clicked it (``viewed``). Two products are
neighbours when at least ``min_shoppers`` distinct shoppers acted on both; their score is the
cosine of their shopper sets, ``|A & B| / sqrt(|A| |B|)`` (item-based collaborative filtering:
Sarwar et al., WWW 2001), so a best-seller is not everyone's neighbour. The floor keeps what
one shopper did (or a bot that slipped the filters) from being shown to others.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from core.files import write_text_atomic
from online_learning.consumers.log_sink import read_log
from online_learning.traffic_filter import FilterConfig, clean, shopper_ids

SIGNALS = {"bought": ("add_to_cart", "purchase"), "viewed": ("click",)}
MAX_ITEMS_PER_SHOPPER = 200  # a shopper's most recent products counted; a long history adds pairs as its square


@dataclass(frozen=True)
class Neighbour:
    """A product acted on with another: the cosine of their shopper sets and how many shoppers share them."""

    product_id: str
    score: float
    shoppers: int


def shopper_actions(log_root: Path, since: pd.Timestamp | None = None,
                    filters: FilterConfig | None = FilterConfig()) -> pd.DataFrame:
    """One row per (shopper, product, signal) of the log's interactions after ``since``: columns
    ``shopper``, ``product_id``, ``signal`` (``bought`` | ``viewed``), ``timestamp`` (the latest)."""
    rankings = read_log(log_root, "rankings", since=since)
    interactions = read_log(log_root, "interactions", since=since)
    empty = pd.DataFrame(columns=["shopper", "product_id", "signal", "timestamp"])
    if interactions.empty:
        return empty
    if since is not None:
        interactions = interactions[pd.to_datetime(interactions["timestamp"], utc=True) > since]
    if filters is not None and not rankings.empty:
        interactions = clean(rankings, interactions, filters).interactions
    if interactions.empty:
        return empty
    shopper = _shoppers(interactions, rankings)
    frame = pd.DataFrame({"shopper": shopper.astype(str).to_numpy(),
                          "product_id": interactions["product_id"].astype(str).to_numpy(),
                          "type": interactions["type"].to_numpy(),
                          "timestamp": pd.to_datetime(interactions["timestamp"], utc=True).to_numpy()})
    signal = {kind: name for name, kinds in SIGNALS.items() for kind in kinds}
    frame["signal"] = frame["type"].map(signal)
    frame = frame.dropna(subset=["signal"])
    return (frame.groupby(["shopper", "product_id", "signal"], as_index=False)["timestamp"].max()
            [["shopper", "product_id", "signal", "timestamp"]])


def _shoppers(interactions: pd.DataFrame, rankings: pd.DataFrame) -> pd.Series:
    """Who did each interaction, one name per person: its user; else the user its search was served to;
    else the one user its session (or its search's) is seen with in the log (a cart filled before logging
    in; a session seen with several users, a kiosk's, stays itself); else the session; else the search
    alone. Before, a session's cart and its user's purchase were two shoppers, and one checkout passed the
    ``min_shoppers`` floor."""
    user, session = shopper_ids(interactions, "user_id"), shopper_ids(interactions, "session_id")
    request = interactions["request_id"]
    searches = (rankings.drop_duplicates("request_id").set_index("request_id") if not rankings.empty
                else pd.DataFrame(index=pd.Index([], name="request_id")))
    searched_by, searched_in = shopper_ids(searches, "user_id"), shopper_ids(searches, "session_id")
    search_user, search_session = request.map(searched_by), request.map(searched_in)
    seen = pd.concat([pd.DataFrame({"session": session, "user": user}),
                      pd.DataFrame({"session": searched_in.to_numpy(), "user": searched_by.to_numpy()})]).dropna()
    users = seen.drop_duplicates().groupby("session")["user"]
    user_of = users.first()[users.nunique() == 1]  # a session seen with one user only (not a shared kiosk's)
    return (user.fillna(search_user).fillna(session.map(user_of)).fillna(search_session.map(user_of))
            .fillna(session).fillna(search_session).fillna("search:" + request.astype(str)))


def neighbours(actions: pd.DataFrame, min_shoppers: int = 2, top: int = 50,
               max_items: int = MAX_ITEMS_PER_SHOPPER) -> dict[str, list[Neighbour]]:
    """Each product's ``top`` neighbours (best first, ties by product id) among ``actions`` of one
    signal (columns ``shopper``, ``product_id``, ``timestamp``), pairs of at least ``min_shoppers``."""
    if actions.empty:
        return {}
    recent = actions.sort_values("timestamp", ascending=False).groupby("shopper").head(max_items)
    shoppers, who = np.unique(recent["shopper"].to_numpy(dtype=str), return_inverse=True)
    products, what = np.unique(recent["product_id"].to_numpy(dtype=str), return_inverse=True)
    acted = sparse.csr_matrix((np.ones(len(recent), np.float32), (who, what)), shape=(len(shoppers), len(products)))
    acted.data[:] = 1.0  # a shopper counts once per product
    both = (acted.T @ acted).tocoo()  # shared shoppers of every pair of products (the diagonal: each one's own)
    own = np.asarray(acted.sum(axis=0)).ravel()
    keep = (both.row != both.col) & (both.data >= min_shoppers)
    rows, cols, shared = both.row[keep], both.col[keep], both.data[keep]
    scores = shared / np.sqrt(own[rows] * own[cols])
    order = np.lexsort((products[cols], -scores, rows))  # per product: best first, ties by id
    out: dict[str, list[Neighbour]] = {}
    for row, col, score, count in zip(rows[order], cols[order], scores[order], shared[order]):
        found = out.setdefault(str(products[row]), [])
        if len(found) < top:
            found.append(Neighbour(str(products[col]), round(float(score), 6), int(count)))
    return out


def together(log_root: Path, since: pd.Timestamp | None = None, min_shoppers: int = 2, top: int = 50,
             filters: FilterConfig | None = FilterConfig()) -> dict[str, dict[str, list[Neighbour]]]:
    """Every signal's neighbours (:data:`SIGNALS`) from the log after ``since``."""
    actions = shopper_actions(log_root, since, filters)
    return {name: neighbours(actions[actions["signal"] == name], min_shoppers, top) for name in SIGNALS}


def write_together(path: Path, tables: dict[str, dict[str, list[Neighbour]]], **about: object) -> None:
    """Save the neighbours (atomic), with what they were counted from (``about``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**about, "products": {name: len(table) for name, table in tables.items()},
            "neighbours": {name: {p: [[n.product_id, n.score, n.shoppers] for n in found]
                                  for p, found in sorted(table.items())} for name, table in tables.items()}}
    write_text_atomic(path, json.dumps(body, separators=(",", ":"), sort_keys=True))


def read_together(path: Path) -> dict[str, dict[str, list[Neighbour]]]:
    """The neighbours saved at ``path`` (none of any signal when it does not exist).

    Raises:
        ValueError: a score is not a finite number (JSON readers take ``NaN`` and ``Infinity``, which a
            shelf would serve as a null score): the file is damaged, as one cut short is.
    """
    if not path.is_file():
        return {name: {} for name in SIGNALS}
    saved = json.loads(path.read_text())["neighbours"]
    tables = {name: {p: [Neighbour(str(o), float(s), int(n)) for o, s, n in found]
                     for p, found in saved.get(name, {}).items()} for name in SIGNALS}
    for name, table in tables.items():
        for product, found in table.items():
            if not all(math.isfinite(n.score) for n in found):
                raise ValueError(f"{path}: the {name} neighbours of {product} have scores "
                                 f"{[n.score for n in found]}; a score is a finite number: run "
                                 "`shoprank recommendations` to write the file again")
    return tables
