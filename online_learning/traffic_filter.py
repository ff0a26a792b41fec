"""Learn only from real shoppers: interactions checked before any training set or decision.

Logged clicks steer the nightly model, so anyone who can post events could steer
it (1,000 fake clicks on one product for one query). Before the retrain job
builds a training set, and before the promotion policy or the guard compare
arms, :func:`clean` drops, and counts by reason:

1. ``no_impression``: an interaction that refers to no logged impression of that
   product in that search (the product was never shown there);
2. ``other_shopper``: an interaction whose user or session differs from the one
   the search was served to;
3. ``repeat``: repeated interactions beyond ``max_repeats`` of one type by one
   shopper on one product for one query (the first ones are kept; an interaction
   sent without user or session belongs to the shopper its search was served to);
4. ``anomalous:<why>``: every interaction, and every search, of a shopper (user,
   else session) or API key whose behaviour is anomalous: ``volume`` (more
   searches than ``max_searches``), ``click_rate`` (click-through over
   ``ctr_ratio`` times the population's and over one search in two, with at least
   ``min_searches``), or
   ``no_conversion`` (``min_clicks`` clicks or more and not one add to cart or
   purchase), judged on all it did (its repeats too, before the repeat cap);
5. ``anomalous:pair``: the clicks on one product for one query when a swarm of
   shoppers, none very active alone, clicks it far more than its positions earn
   (``pair_min_clicks`` clicks or more, a click on at least ``pair_min_ctr`` of its
   impressions, over ``pair_ratio`` times the clicks every other product earned at
   the same positions) and not one of them adds it to a cart
   or buys it.

The thresholds are chosen so honest traffic loses nothing measurable (see
benchmarks/RESULTS.md); every exclusion is reported by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FilterConfig:
    max_repeats: int = 3
    max_searches: int = 2000
    ctr_ratio: float = 3.0
    min_searches: int = 20
    min_clicks: int = 200
    pair_min_clicks: int = 20
    pair_ratio: float = 6.0
    pair_min_ctr: float = 0.5


@dataclass
class Cleaned:
    """The logs an honest-traffic consumer may use, and what was dropped."""

    rankings: pd.DataFrame
    interactions: pd.DataFrame
    excluded: Counter = field(default_factory=Counter)
    anomalous: dict[str, str] = field(default_factory=dict)  # shopper or key -> why

    def report(self, name: Callable[[str], str | None] = lambda who: None) -> dict[str, object]:
        """What was dropped, to print or keep: interactions and anomalous shoppers (and API keys) by reason, and
        up to 20 of them named: a key by its id (``key:<id>``), a shopper by ``name(its id)``, or not at all when
        that is None (the default). A report is kept where an erasure does not reach (a model's metrics), so it
        names no shopper in clear: pass a keyed hash (:meth:`online_learning.forget_list.ForgetList.pseudonym`)."""
        named = ((who if who.startswith("key:") and why == "all_shoppers_anomalous" else name(who), why)
                 for who, why in self.anomalous.items())
        return {"excluded_interactions": dict(self.excluded), "excluded_shoppers": len(self.anomalous),
                "anomalous_by_reason": dict(Counter(self.anomalous.values())),
                "anomalous": dict(sorted((who, why) for who, why in named if who is not None)[:20])}


def shopper_ids(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame``'s ``column`` of shopper ids, a blank one (``""``, as some exports write no id) missing."""
    if column not in frame:
        return pd.Series(None, index=frame.index, dtype=object)
    ids = frame[column]
    return ids.where(ids.isna() | (ids.astype(str).str.strip() != ""), None)


def _shopper(frame: pd.DataFrame) -> pd.Series:
    user, session = shopper_ids(frame, "user_id"), shopper_ids(frame, "session_id")
    # an anonymous search is its own shopper (as online_learning.analysis.shopper reads it): taking every
    # anonymous visitor for one shopper judged them all as one bot and dropped their searches and clicks
    anonymous = ("anonymous:" + frame["request_id"].astype(str)) if "request_id" in frame else "anonymous"
    return user.fillna(session).fillna(anonymous).astype(str)


def _anomalous(rankings: pd.DataFrame, interactions: pd.DataFrame, config: FilterConfig) -> dict[str, str]:
    searches = rankings.drop_duplicates("request_id")
    per_search = searches.groupby("who").size()
    clicks = interactions[interactions["type"] == "click"].groupby("who")["request_id"].nunique()
    converts = interactions[interactions["type"] != "click"].groupby("who").size()
    found: dict[str, str] = {}
    for who in per_search[per_search > config.max_searches].index:
        found[who] = "volume"
    ctr = (clicks.reindex(per_search.index).fillna(0) / per_search).astype(float)
    population = float(clicks.sum() / max(1, per_search.sum()))
    high = ctr[(per_search >= config.min_searches) & (ctr > config.ctr_ratio * population) & (ctr > 0.5)]
    for who in high.index:
        found.setdefault(who, "click_rate")
    total_clicks = interactions[interactions["type"] == "click"].groupby("who").size()
    for who in total_clicks[total_clicks >= config.min_clicks].index:
        if converts.get(who, 0) == 0:
            found.setdefault(who, "no_conversion")
    if "key_id" in rankings:
        keys = searches.dropna(subset=["key_id"]).groupby("key_id")["who"].agg(lambda w: set(w))
        for key, shoppers in keys.items():  # a key whose every shopper is anomalous is itself anomalous
            if shoppers and all(s in found for s in shoppers):
                found[f"key:{key}"] = "all_shoppers_anomalous"
    return found


def _swarmed_pairs(rankings: pd.DataFrame, interactions: pd.DataFrame, config: FilterConfig) -> set[tuple]:
    """(query, product) pairs clicked far above their positions' rate by shoppers who never convert."""
    shown = rankings.assign(query=rankings["query"].str.lower().str.strip())
    clicked = interactions[interactions["type"] == "click"].drop_duplicates(["request_id", "product_id"])
    shown = shown.merge(clicked[["request_id", "product_id"]].assign(click=1), how="left",
                        on=["request_id", "product_id"])
    shown["click"] = shown["click"].fillna(0)
    by_position = shown.groupby("position")["click"].agg(["sum", "size"])
    cells = shown.groupby(["query", "product_id", "position"])["click"].agg(["sum", "size"]).reset_index()
    # the rate every other product earned at the same position (the pair's own rows left out)
    rest = by_position.reindex(cells["position"]).to_numpy() - cells[["sum", "size"]].to_numpy()
    cells["expected"] = np.where(rest[:, 1] > 0, cells["size"] * rest[:, 0] / np.maximum(rest[:, 1], 1), np.nan)
    pairs = cells.groupby(["query", "product_id"])[["sum", "size", "expected"]].sum(min_count=1)
    pairs = pairs[(pairs["sum"] >= config.pair_min_clicks) & (pairs["sum"] > config.pair_ratio * pairs["expected"])
                  & (pairs["sum"] >= config.pair_min_ctr * pairs["size"])]
    if pairs.empty:
        return set()
    converted = set(zip(interactions.loc[interactions["type"] != "click", "query"],
                        interactions.loc[interactions["type"] != "click", "product_id"]))
    return {pair for pair in pairs.index if pair not in converted}


def clean(rankings: pd.DataFrame, interactions: pd.DataFrame, config: FilterConfig = FilterConfig()) -> Cleaned:
    """Drop what is not a real shopper's reaction to a real impression (see the module docstring).

    Args:
        rankings: Logged impressions, one row per shown product (``request_id``,
            ``product_id``, ``user_id``, ``session_id``, ``query``).
        interactions: Logged interactions (``request_id``, ``product_id``, ``type``,
            ``user_id``, ``session_id``, ``timestamp``).
    """
    if rankings.empty:
        return Cleaned(rankings, interactions)
    if interactions.empty:  # nobody reacted: a shopper's (or key's) volume of searches is all there is to judge
        searchers = rankings.assign(who=_shopper(rankings))
        none = pd.DataFrame({"request_id": pd.Series(dtype=object), "type": pd.Series(dtype=object),
                             "who": pd.Series(dtype=object)})
        anomalous = _anomalous(searchers, none, config)
        kept = _without(anomalous, searchers, none, Counter())[0] if anomalous else searchers
        return Cleaned(kept.drop(columns="who"), interactions, Counter(), anomalous)
    rankings = rankings.assign(who=_shopper(rankings))
    interactions = interactions.assign(who=_shopper(interactions))
    excluded: Counter = Counter()
    interactions = _on_impressions(rankings, interactions, excluded)
    query = rankings.drop_duplicates("request_id").set_index("request_id")["query"]
    interactions = interactions.assign(query=interactions["request_id"].map(query).str.lower().str.strip())
    order = interactions.sort_values("timestamp") if "timestamp" in interactions else interactions
    rank = order.groupby(["who", "query", "product_id", "type"]).cumcount()
    repeat = (rank >= config.max_repeats).reindex(interactions.index).to_numpy()
    excluded["repeat"] += int(repeat.sum())
    # a shopper is judged on everything it did: capping its repeats first would hide a bot's click rate
    anomalous = _anomalous(rankings, interactions, config)
    interactions = interactions[~repeat]
    swarmed = _swarmed_pairs(rankings, interactions, config)
    if swarmed:
        pair = pd.Series(list(zip(interactions["query"], interactions["product_id"])), index=interactions.index)
        hit = pair.isin(swarmed) & (interactions["type"] == "click")
        excluded["anomalous:pair"] += int(hit.sum())
        interactions = interactions[~hit]
    if anomalous:
        rankings, interactions = _without(anomalous, rankings, interactions, excluded)
    counted = Counter({reason: n for reason, n in excluded.items() if n})
    return Cleaned(rankings.drop(columns="who"), interactions.drop(columns=["who", "query"]), counted, anomalous)


def _on_impressions(rankings: pd.DataFrame, interactions: pd.DataFrame, excluded: Counter) -> pd.DataFrame:
    """The interactions with a product the search showed, by the shopper it was shown to: an interaction is
    another shopper's when both carry a user id and they differ, or, when not both carry one, both carry a
    session id and they differ; one that names only ids the search lacks, or none (a click sent with the
    session alone, a shopper who logged in meanwhile), is given the shopper its search was served to."""
    shown = rankings.drop_duplicates(["request_id", "product_id"]).set_index(["request_id", "product_id"])
    keys = pd.MultiIndex.from_frame(interactions[["request_id", "product_id"]])
    served_to = shown["who"].reindex(keys).to_numpy()
    no_impression = pd.isna(served_to)
    ids = {}
    for column in ("user_id", "session_id"):
        searched = shopper_ids(shown, column).reindex(keys).to_numpy()
        sent = shopper_ids(interactions, column).to_numpy()
        both = ~pd.isna(searched) & ~pd.isna(sent)
        ids[column] = (both, both & (searched.astype(str) != sent.astype(str)))
    (users, other_user), (_, other_session) = ids["user_id"], ids["session_id"]
    # users first, as a shopper is read: the same user in a new session (app, then web) is the same shopper
    other = (other_user | (~users & other_session)) & ~no_impression
    excluded["no_impression"] += int(no_impression.sum())
    excluded["other_shopper"] += int(other.sum())
    interactions = interactions.assign(who=np.where(no_impression, interactions["who"], served_to))
    return interactions[~(no_impression | other)]


def _without(anomalous: dict[str, str], rankings: pd.DataFrame, interactions: pd.DataFrame,
             excluded: Counter) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rankings and interactions less the anomalous shoppers' (and API keys') searches and actions."""
    bad_keys = {k.removeprefix("key:") for k in anomalous if k.startswith("key:")}
    bad = rankings["who"].isin(anomalous)
    if "key_id" in rankings and bad_keys:
        bad |= rankings["key_id"].isin(bad_keys)
    bad_requests = set(rankings.loc[bad, "request_id"])
    dropped = interactions["who"].isin(anomalous) | interactions["request_id"].isin(bad_requests)
    for who, why in anomalous.items():
        n = int((interactions["who"] == who).sum())
        if n:
            excluded[f"anomalous:{why}"] += n
    return rankings[~bad], interactions[~dropped]


def engagement(rankings: pd.DataFrame, interactions: pd.DataFrame, levels: dict[str, int]) -> np.ndarray:
    """Each impression row's best interaction level (0: none)."""
    if interactions.empty:
        return np.zeros(len(rankings), dtype=int)
    best = interactions.assign(level=interactions["type"].map(levels)).groupby(["request_id", "product_id"])["level"].max()
    keys = pd.MultiIndex.from_frame(rankings[["request_id", "product_id"]])
    return best.reindex(keys).fillna(0).astype(int).to_numpy()
