"""Experiment analysis from the offline event log: one row per search, per-arm results.

:func:`searches` joins ranking events with their interactions into one row per
search (arm, latency, clicked / added / bought, revenue, zero results,
degraded). :func:`compare_arms` tests every metric of the treatment against
the control (:mod:`online_learning.stats`); :func:`interleaving` scores
team-draft interleaving by clicks per team, one vote per shopper. Used by the promotion
policy, the HTML report and the analyst notebook.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from online_learning.consumers.log_sink import read_log, searches_only
from online_learning.stats import (
    Comparison,
    clustered_means,
    design_effect,
    min_sample_size,
    sign_test,
)
from online_learning.traffic_filter import Cleaned, FilterConfig, clean, shopper_ids
from retrieval.vocabulary import normalize

RATES = (("ctr", "clicked"), ("add_to_cart_rate", "carted"), ("purchase_rate", "bought"),
         ("zero_result_rate", "zero_results"), ("degraded_rate", "is_degraded"))


SEARCH_COLUMNS = ["request_id", "timestamp", "user_id", "session_id", "query", "searched", "filters", "arm",
                  "pipeline", "latency_ms", "shown", "degraded", "models", "clicked", "carted", "bought", "revenue",
                  "zero_results", "is_degraded"]  # :func:`searches`' rows, also when there is none


def cleaned_by_day(rankings: pd.DataFrame, interactions: pd.DataFrame, filters: FilterConfig) -> Cleaned:
    """The traffic filters (:func:`~online_learning.traffic_filter.clean`) applied one UTC day of searches at a
    time, each with the interactions on its searches, as the nightly retrain, the experiments and the guard read
    the log: a shopper's volume and clicks are judged per day, so an honest shopper of 35 searches a day is not
    dropped from months of searches for passing ``max_searches`` over all of them. A search belongs to the day
    it was first logged (one logged as two ranking events stays whole). An interaction on no logged search is
    left out, as the filters leave it out, and counted as ``no_impression``; the days' exclusions are summed,
    and a shopper anomalous on several days is named once, with its first day's reason."""
    times = pd.to_datetime(rankings["timestamp"], utc=True)
    days = times.groupby(rankings["request_id"].to_numpy(), dropna=False).transform("min").dt.floor("D")
    on_day: dict = {}
    excluded: Counter = Counter()
    if not interactions.empty:  # each interaction with the day of its search, read once
        day_of = pd.Series(days.to_numpy(), index=rankings["request_id"].to_numpy())
        day_of = day_of[~day_of.index.duplicated()]
        their_day = interactions["request_id"].map(day_of)
        excluded["no_impression"] = int(their_day.isna().sum())
        on_day = dict(tuple(interactions.groupby(their_day, sort=False)))
    kept: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    anomalous: dict[str, str] = {}
    for day, searched in rankings.groupby(days, sort=True):
        cleaned = clean(searched, on_day.get(day, interactions.iloc[:0]), filters)
        kept.append((cleaned.rankings, cleaned.interactions))
        excluded.update(cleaned.excluded)
        for who, why in cleaned.anomalous.items():
            anomalous.setdefault(who, why)
    return Cleaned(pd.concat([r for r, _ in kept], ignore_index=True),
                   pd.concat([i for _, i in kept], ignore_index=True), +excluded, anomalous)


def searches(log_root: Path, experiment: str | None = None, filters: FilterConfig | None = FilterConfig(),
             since: pd.Timestamp | None = None, shelves: bool = False) -> pd.DataFrame:
    """One row per search of ``experiment`` (all searches when None) after ``since`` (the log's
    older days are not read), after the traffic filters (:mod:`online_learning.traffic_filter`;
    None: every logged event counts), so the promotion policy and the guard cannot be steered by
    the traffic the retrain job ignores. With ``shelves``, one row per listing and recommendation
    shelf shown instead (``pipeline`` says which). The later pages of a search are its own row's
    (:func:`_pages_folded`)."""
    rankings = searches_only(read_log(log_root, "rankings", since=since), shelves)
    if since is not None and not rankings.empty:
        rankings = rankings[pd.to_datetime(rankings["timestamp"], utc=True) > since]
    if experiment is not None and not rankings.empty:
        rankings = rankings[rankings["experiment"] == experiment]
    if rankings.empty:
        return pd.DataFrame(columns=SEARCH_COLUMNS)
    interactions = read_log(log_root, "interactions", since=since)
    if filters is not None and not rankings.empty:
        cleaned = cleaned_by_day(rankings, interactions, filters)
        rankings, interactions = cleaned.rankings, cleaned.interactions
    for column in ("session_id", "searched", "filters", "sort"):  # absent from logs written before they were logged
        if column not in rankings:
            rankings = rankings.assign(**{column: None})
    per_search = rankings.groupby("request_id").agg(
        timestamp=("timestamp", "first"), user_id=("user_id", "first"), session_id=("session_id", "first"),
        query=("query", "first"), searched=("searched", "first"), filters=("filters", "first"),
        sort=("sort", "first"), arm=("arm", "first"), pipeline=("pipeline", "first"),
        latency_ms=("latency_ms", "first"), shown=("shown", "first"), first_shown=("position", "min"),
        degraded=("degraded", "first"), models=("models", "first")).reset_index()
    for kind, column in (("click", "clicked"), ("add_to_cart", "carted"), ("purchase", "bought")):
        hits = interactions[interactions["type"] == kind].groupby("request_id").size() if not interactions.empty else pd.Series(dtype=int)
        per_search[column] = per_search["request_id"].map(hits).fillna(0).astype(int).clip(upper=1)
    revenue = (interactions[interactions["type"] == "purchase"].groupby("request_id")["revenue"].sum()
               if not interactions.empty else pd.Series(dtype=float))
    per_search["revenue"] = per_search["request_id"].map(revenue).fillna(0.0)
    per_search["zero_results"] = (per_search["shown"] == 0).astype(int)
    per_search["is_degraded"] = (per_search["degraded"].fillna("[]") != "[]").astype(int)
    per_search["timestamp"] = pd.to_datetime(per_search["timestamp"], utc=True)
    for column in ("user_id", "session_id"):  # a blank id ("", in logs written before ingestion read it as none)
        per_search[column] = shopper_ids(per_search, column)
    # by time, a later page after the one before it when logged in the same instant
    per_search = _pages_folded(per_search.sort_values(["timestamp", "first_shown"], kind="stable", ignore_index=True))
    return per_search.drop(columns=["sort", "first_shown"])


PAGE_GAP = pd.Timedelta(minutes=30)  # the longest a shopper reads a page of results before asking for the next


def _pages_folded(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`searches`' rows (by time, then first position) with each later page of results (one whose first
    row was shown below position 1) folded into the search the same shopper (user, else session) was paging
    through: the last one for the same text, filters, order, pipeline and arm whose previous page was shown at
    most :data:`PAGE_GAP` before. A shopper paging through a query made one search, and a click on page 2 is
    that search's. A later page with no such search before it (its first page is before the log's window)
    starts one of its own; an anonymous shopper's pages are searches of their own. A page asked for past the
    last result shows nothing and logs no position: it reads as a search that showed nothing."""
    later, first = (rows["first_shown"] > 1).to_numpy(), (rows["first_shown"] == 1).to_numpy()
    if not later.any():
        return rows
    who = rows["user_id"].fillna(rows["session_id"])
    key = who + "\x1f" + searched_text(rows)
    for column in ("filters", "sort", "pipeline", "arm"):
        key = key + "\x1f" + rows[column].astype(str)
    involved = key.notna().to_numpy() & key.isin(set(key[later].dropna())).to_numpy()
    ids, keys = rows["request_id"].to_numpy(), key.to_numpy()
    times, target = pd.to_datetime(rows["timestamp"], utc=True).dt.tz_localize(None).to_numpy(), ids.copy()
    paging: dict[str, tuple[str, np.datetime64]] = {}  # key -> (the search, when its latest page was shown)
    gap = PAGE_GAP.to_timedelta64()
    for n in np.flatnonzero(involved):
        search = paging.get(keys[n])
        if later[n] and search is not None and times[n] - search[1] <= gap:
            target[n] = search[0]
            paging[keys[n]] = (search[0], times[n])
        elif first[n] or later[n]:  # a first page, or a later one with no search to continue: a search
            paging[keys[n]] = (ids[n], times[n])
        # a page that showed nothing (past the last result: no position) is a row of its own, and the search
        # the shopper pages through stays the one it was
    folded = target != ids
    credit = rows.groupby(pd.Series(target, index=rows.index)).agg(
        clicked=("clicked", "max"), carted=("carted", "max"), bought=("bought", "max"), revenue=("revenue", "sum"))
    kept = rows[~folded].copy()
    for column in credit.columns:
        kept[column] = kept["request_id"].map(credit[column]).to_numpy()
    return kept.reset_index(drop=True)


def searched_text(rows: pd.DataFrame) -> pd.Series:
    """What each logged search searched: the analyzer's output (``searched``), else (an imported event,
    or a log from before that column) the typed text normalized as the analyzer normalizes it, so
    ``Garden HOSE`` and ``garden hose`` count as one text."""
    queries = rows["query"].astype(str)
    typed = queries.map({q: " ".join(normalize(q).split()) for q in queries.unique()})  # each text once
    return (rows["searched"].fillna(typed) if "searched" in rows else typed).astype(str).str.strip()


def head_queries(log_root: Path, n: int) -> list[tuple[str, int]]:
    """The ``n`` most searched queries of the log, most frequent first, with their search counts.

    Searches are counted by the text that was searched (``searched``: the analyzer's output, so
    ``Cordless Drill`` and ``cordless drill`` are one query; the query as typed where a log
    predates that column), and each is returned as its most frequent typed form, which the
    analyzer turns back into that text. Ties are broken by the text, so the list is stable.
    """
    rankings = searches_only(read_log(log_root, "rankings"))
    if rankings.empty:
        return []
    per_search = rankings.drop_duplicates("event_id")
    typed = per_search["query"].astype(str)
    frame = pd.DataFrame({"typed": typed.to_numpy(), "searched": searched_text(per_search).to_numpy()})
    frame = frame[frame["searched"].str.strip() != ""]
    counts = frame.groupby("searched").size().rename("searches").reset_index()
    forms = frame.groupby(["searched", "typed"]).size().rename("n").reset_index()
    forms = forms.sort_values(["searched", "n", "typed"], ascending=[True, False, True]).drop_duplicates("searched")
    top = counts.merge(forms, on="searched").sort_values(["searches", "searched"], ascending=[False, True]).head(n)
    return [(str(t), int(c)) for t, c in zip(top["typed"], top["searches"])]


def shopper(per_search: pd.DataFrame) -> pd.Series:
    """Who made each of :func:`searches`' rows (whose blank ids it read as none): its user, else its session,
    else the search alone."""
    return per_search["user_id"].fillna(per_search["session_id"]).fillna(per_search["request_id"]).astype(str)


def logged_models(models: object) -> dict[str, str]:
    """A logged search's ``models`` (the JSON the log sink writes: role -> version) as a dict; {} when it
    names none or cannot be read."""
    try:
        found = json.loads(models) if isinstance(models, str) else None
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def served_ltr(models: object) -> str | None:
    """The LambdaMART version a logged search's ``models`` names (None: none alone, as for an interleaved
    search, which names each arm's as ``ltr:<arm>``)."""
    return logged_models(models).get("ltr")


def served_by(rows: pd.DataFrame, versions: dict[str, str]) -> pd.DataFrame:
    """The rows of ``rows`` (:func:`searches`' rows, or :func:`interleaved_searches`' shown rows) served by the
    LambdaMART versions ``versions`` names per arm: an A/B search whose logged ``ltr`` is its arm's version, an
    interleaved search whose logged ``ltr:<arm>`` is each arm's. The log keeps an experiment's searches by its
    name, so an arm pointed at another version since, or an experiment started again under an old name, left
    searches of versions that are not the ones a promotion would activate now."""
    return rows[_served_mask(rows, versions)] if not rows.empty else rows


def served_since_change(rows: pd.DataFrame, versions: dict[str, str]) -> pd.DataFrame:
    """The rows :func:`served_by` keeps that were made after the last row it leaves out: the searches since
    the arms were last pointed at these versions. An arm pointed elsewhere and back would otherwise count its
    searches of the earlier time, and the other arms' searches from before such a change would be compared
    with none of the changed arm's; so all arms are counted over the same time."""
    if rows.empty:
        return rows
    kept = _served_mask(rows, versions)
    served, other = rows[kept], rows[~kept & rows["arm"].isin([*versions, "interleaved"]).to_numpy()]
    return served[served["timestamp"] > other["timestamp"].max()] if len(other) else served


def _served_mask(rows: pd.DataFrame, versions: dict[str, str]) -> np.ndarray:
    """Which rows :func:`served_by` keeps."""
    models = rows["models"].map(logged_models) if "models" in rows else pd.Series([{}] * len(rows), index=rows.index)
    keep = [all(m.get(f"ltr:{name}") == version for name, version in versions.items()) if arm == "interleaved"
            else arm in versions and m.get("ltr") == versions[arm]
            for m, arm in zip(models, rows["arm"])]
    return np.array(keep, dtype=bool)


def search_terms(per_search: pd.DataFrame) -> pd.DataFrame:
    """One row per searched text (the analyzer's output, else the text as typed) of :func:`searches`'
    rows: searches, distinct shoppers (user, else session, else the search), and the share of its
    searches that showed nothing, got a click, an add to cart, a purchase, or set a filter; most
    searched first, ties by text."""
    if per_search.empty:
        return pd.DataFrame(columns=["text", "searches", "shoppers", "zero_result_rate", "ctr", "add_to_cart_rate",
                                     "purchase_rate", "filtered_share"])
    frame = per_search.assign(
        text=searched_text(per_search),
        who=shopper(per_search),
        filtered=per_search["filters"].notna().astype(int))
    terms = frame.groupby("text").agg(
        searches=("request_id", "size"), shoppers=("who", "nunique"), zero_result_rate=("zero_results", "mean"),
        ctr=("clicked", "mean"), add_to_cart_rate=("carted", "mean"), purchase_rate=("bought", "mean"),
        filtered_share=("filtered", "mean")).reset_index()
    return terms.sort_values(["searches", "text"], ascending=[False, True], ignore_index=True)


def terms_report(per_search: pd.DataFrame, top: int = 50, min_searches: int = 5) -> dict[str, object]:
    """What merchandisers read first: the totals, the most searched texts, and among the texts
    searched at least ``min_searches`` times those whose searches mostly showed nothing and those
    never clicked (most searched first)."""
    terms = search_terms(per_search)
    frequent = terms[terms["searches"] >= min_searches]

    def rows(table: pd.DataFrame) -> list[dict[str, object]]:
        return [{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in row.items()}
                for row in table.head(top).to_dict("records")]

    return {
        "searches": int(len(per_search)), "texts": int(len(terms)),
        "zero_result_rate": round(float(per_search["zero_results"].mean()), 4) if len(per_search) else None,
        "ctr": round(float(per_search["clicked"].mean()), 4) if len(per_search) else None,
        "min_searches": min_searches,
        "top": rows(terms),
        "no_results": rows(frequent[frequent["zero_result_rate"] >= 0.5]),
        "no_clicks": rows(frequent[frequent["ctr"] == 0]),
    }


def shelves_report(per_shelf: pd.DataFrame) -> dict[str, object]:
    """Per listing and recommendation shelf (``pipeline``: ``browse``, ``recommend:<kind>``) of
    :func:`searches` ``(shelves=True)``: how many were shown, to how many shoppers, the shares that
    showed nothing, got a click, an add to cart, a purchase, and the revenue; most shown first."""
    if per_shelf.empty:
        return {"shown": 0, "shelves": []}
    frame = per_shelf.assign(who=shopper(per_shelf))
    table = frame.groupby("pipeline").agg(
        shown=("request_id", "size"), shoppers=("who", "nunique"), zero_result_rate=("zero_results", "mean"),
        ctr=("clicked", "mean"), add_to_cart_rate=("carted", "mean"), purchase_rate=("bought", "mean"),
        revenue=("revenue", "sum")).reset_index().rename(columns={"pipeline": "shelf"})
    table["revenue_per_shelf"] = table["revenue"] / table["shown"]
    table = table.sort_values(["shown", "shelf"], ascending=[False, True])
    return {"shown": int(len(per_shelf)),
            "shelves": [{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in row.items()}
                        for row in table.to_dict("records")]}


def searched_texts(log_root: Path, min_shoppers: int = 3, since: pd.Timestamp | None = None) -> dict[str, int]:
    """The texts searched (``searched``, the analyzer's output) by at least ``min_shoppers``
    distinct shoppers since ``since``, with how many (:func:`search_terms`' shoppers); a search
    that showed nothing does not count. One visitor repeating a text, or a bot, counts once, and
    the searches that name no user and no session count once all together (one anonymous visitor
    could have made them all): a text few shoppers typed (a name, a phone number) is never
    suggested to others."""
    per_search = searches(log_root, filters=None, since=since)
    if per_search.empty:
        return {}
    known = per_search["user_id"].notna() | per_search["session_id"].notna()
    per_search = per_search.assign(request_id=per_search["request_id"].where(known, "anonymous"))
    terms = search_terms(per_search[per_search["shown"] > 0])
    kept = terms[(terms["shoppers"] >= min_shoppers) & (terms["text"] != "")].sort_values("text")
    return {str(text): int(n) for text, n in zip(kept["text"], kept["shoppers"])}


@dataclass(frozen=True)
class ArmReport:
    control: str
    treatment: str
    comparisons: list[Comparison]
    sizes: dict[str, int]  # searches per arm
    needed_per_arm: int  # searches per arm to detect the ``min_lift`` on the purchase rate
    shoppers: dict[str, int] = field(default_factory=dict)  # shoppers per arm: the unit of assignment
    design_effect: float = 1.0  # the purchase rate's variance over the one of as many independent searches

    def by_metric(self) -> dict[str, Comparison]:
        return {c.metric: c for c in self.comparisons}

    def needed_for(self, lift: float, alpha: float = 0.05) -> int:
        """Searches per arm to detect a relative ``lift`` of the control's purchase rate at ``alpha`` (0: none
        can be)."""
        base = self.by_metric()["purchase_rate"].control
        if not math.isfinite(lift) or not math.isfinite(base) or lift == 0:
            return 0
        return math.ceil(min_sample_size(base, lift, alpha) * self.design_effect)


UNKNOWN_WHEN_MISSING = frozenset({"latency_ms"})  # a search logged without it was not timed, not 0 ms


def measured(part: pd.DataFrame, column: str) -> pd.DataFrame:
    """``part``'s searches that hold a value of ``column`` where a missing one is unknown (latency), else all
    of them (a missing click, purchase or revenue is none)."""
    return part[part[column].notna()] if column in UNKNOWN_WHEN_MISSING else part


def per_shopper(part: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Each shopper's (:func:`shopper`) sum of ``column`` over their searches in ``part``, and how many."""
    grouped = part.assign(who=shopper(part), value=part[column].astype(float).fillna(0.0)).groupby("who")["value"]
    return grouped.sum().to_numpy(), grouped.size().to_numpy()


def compare_arms(table: pd.DataFrame, control: str, treatment: str, min_lift: float = 0.1) -> ArmReport:
    """Treatment vs control on every rate, revenue per search and latency, per search, with shoppers as the
    unit of assignment (:func:`online_learning.stats.clustered_means`)."""
    a, b = table[table["arm"] == control], table[table["arm"] == treatment]
    columns = [*RATES, ("revenue_per_search", "revenue"), ("latency_ms", "latency_ms")]
    comparisons = [clustered_means(name, *per_shopper(measured(a, col), col), *per_shopper(measured(b, col), col))
                   for name, col in columns]
    effect = design_effect(*per_shopper(a, "bought"))
    base = float(a["bought"].mean()) if len(a) else 0.0
    return ArmReport(control, treatment, comparisons, {control: len(a), treatment: len(b)},
                     math.ceil(min_sample_size(base, min_lift) * effect),
                     {control: int(shopper(a).nunique()), treatment: int(shopper(b).nunique())}, effect)


SEGMENTS = (("with filters", lambda t: t["filters"].notna()), ("without filters", lambda t: t["filters"].isna()),
            ("known shoppers", lambda t: t["user_id"].notna()), ("anonymous", lambda t: t["user_id"].isna()))


def segments(table: pd.DataFrame, control: str, treatment: str) -> list[tuple[str, ArmReport]]:
    """:func:`compare_arms` within each segment of :data:`SEGMENTS` that both arms searched in: searches
    with and without filters, by known shoppers and anonymous ones. Several segments mean several tests:
    a lone significant one among them can be chance."""
    out = []
    for name, member in SEGMENTS:
        part = table[member(table)]
        if (part["arm"] == control).any() and (part["arm"] == treatment).any():
            out.append((name, compare_arms(part, control, treatment)))
    return out


@dataclass(frozen=True)
class InterleavingResult:
    """Team-draft interleaving counted per shopper (:func:`interleaving`): each shopper votes once."""

    wins: dict[str, int]  # shoppers who preferred each team: it won more of their searches with clicks
    ties: int  # shoppers with credited clicks whose searches each team won as often
    preference: float  # (shoppers preferring the treatment - those preferring the control) / shoppers with clicks
    p_value: float  # the sign test over the shoppers with a preference
    searches: int = 0  # the searches with a credited click those shoppers made


def interleaved_searches(log_root: Path, experiment: str,
                         filters: FilterConfig | None = FilterConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shown rows (with their ``team``) of ``experiment``'s interleaved searches and the clicks on
    them, after the same traffic filters as :func:`searches`, one UTC day at a time (None: every logged event
    counts)."""
    rankings = searches_only(read_log(log_root, "rankings"))
    if rankings.empty or "team" not in rankings:
        return pd.DataFrame(columns=["request_id", "product_id", "team"]), pd.DataFrame(
            columns=["request_id", "product_id"])
    rankings = rankings[(rankings["experiment"] == experiment) & rankings["team"].notna()]
    interactions = read_log(log_root, "interactions")
    if filters is not None and not rankings.empty:  # one UTC day at a time, as the A/B path reads it
        cleaned = cleaned_by_day(rankings, interactions, filters)
        rankings, interactions = cleaned.rankings, cleaned.interactions
    clicks = (interactions[interactions["type"] == "click"][["request_id", "product_id"]] if not interactions.empty
              else pd.DataFrame(columns=["request_id", "product_id"]))
    return rankings, clicks


def interleaving(log_root: Path, experiment: str, control: str, treatment: str,
                 filters: FilterConfig | None = FilterConfig(),
                 versions: dict[str, str] | None = None) -> InterleavingResult:
    """Which team each shopper preferred, after the traffic filters (one shopper's repeated clicks, bots), as
    the A/B analysis reads the log; ``versions`` (arm -> LambdaMART version): only the searches both arms'
    versions served since the last one served by others (:func:`served_since_change`; None: every search of
    ``experiment``).

    A search is won by the team whose shown products got more of its clicks, a product clicked again (a double
    click, a return from its page) counting once. A shopper's searches are not independent: the router seeds
    the draft with the experiment, the shopper and the query, so a shopper who searches a query again sees the
    same teams in the same places and tends to click the same way. Each shopper therefore votes once, for the
    team that won more of their searches (none on a tie), and the sign test counts shoppers, as the A/B tests do.
    """
    rankings, clicks = interleaved_searches(log_root, experiment, filters)
    if versions is not None:
        rankings = served_since_change(rankings, versions)
    clicks = clicks.drop_duplicates(["request_id", "product_id"])
    credited = clicks.merge(rankings[["request_id", "product_id", "team"]], on=["request_id", "product_id"])
    per_search = (credited.groupby(["request_id", "team"]).size().unstack(fill_value=0) if not credited.empty
                  else pd.DataFrame())
    for team in (control, treatment):
        if team not in per_search.columns:
            per_search[team] = 0
    per_search = per_search[(per_search[control] > 0) | (per_search[treatment] > 0)]
    made = rankings.drop_duplicates("request_id")
    made = made.assign(user_id=shopper_ids(made, "user_id"), session_id=shopper_ids(made, "session_id"))
    who = pd.Series(shopper(made).to_numpy(), index=made["request_id"]).loc[per_search.index].to_numpy()
    won = np.sign(per_search[treatment] - per_search[control]).to_numpy()  # +1: the treatment won it, -1: the control
    votes = np.sign(pd.Series(won, dtype=float).groupby(who).sum()) if len(won) else pd.Series(dtype=float)
    wins_t, wins_c, ties = int((votes > 0).sum()), int((votes < 0).sum()), int((votes == 0).sum())
    total = wins_t + wins_c + ties
    return InterleavingResult({control: wins_c, treatment: wins_t}, ties,
                              (wins_t - wins_c) / total if total else 0.0, sign_test(wins_t, wins_c), len(won))


def logged_teams(log_root: Path, experiment: str) -> list[str]:
    """The teams ``experiment``'s interleaved searches logged, sorted."""
    rankings, _ = interleaved_searches(log_root, experiment, filters=None)
    return sorted(str(t) for t in rankings["team"].dropna().unique())


def over_time(table: pd.DataFrame, column: str, freq: str = "1h") -> pd.DataFrame:
    """Per arm and time bucket: the cumulative per-search mean of ``column`` and its normal-approximation 95%
    band, with shoppers as the unit (the variance of :func:`online_learning.stats.clustered_mean` over the
    searches so far; a band over independent searches is as much too narrow as the design effect's root)."""
    rows = []
    for arm, part in table.groupby("arm"):
        part = measured(part, column).sort_values("timestamp", kind="stable")
        if part.empty:
            continue
        value = part[column].astype(float).fillna(0.0).to_numpy()
        by_shopper = pd.Series(value).groupby(shopper(part).to_numpy())
        before, count = by_shopper.cumsum().to_numpy() - value, by_shopper.cumcount().to_numpy()
        # running sums over shoppers of total^2, total * searches and searches^2, each search adding its change
        total2 = np.cumsum(2 * before * value + value ** 2)
        cross = np.cumsum(before + value * count + value)
        searches2 = np.cumsum(2 * count + 1.0)
        n, shoppers = np.arange(1, len(value) + 1), np.cumsum(count == 0)
        mean = np.cumsum(value) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = ((total2 - 2 * mean * cross + mean ** 2 * searches2) / n ** 2
                        * np.where(shoppers > 1, shoppers / (shoppers - 1), np.nan))
        half = 1.96 * np.sqrt(np.clip(variance, 0.0, None))
        frame = pd.DataFrame({"mean": mean, "low": mean - half, "high": mean + half},
                             index=pd.DatetimeIndex(part["timestamp"]))
        frame = frame.resample(freq).last().dropna()
        frame["arm"] = arm
        rows.append(frame.reset_index())
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
