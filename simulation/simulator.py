"""Traffic simulator: simulated shoppers search the real HTTP API and act on results.

``shoprank simulate`` runs it. Shoppers are the store world's users
(SIMULATED, :mod:`simulation.world`); each picks a real query of the judged
dataset (train/dev splits only), leaning to queries about categories it likes,
searches ``POST /v1/search``, then clicks, adds to cart and buys under the
position-biased :class:`~simulation.click_model.ClickModel`, posting the
interactions to ``POST /v1/events``. Out-of-stock products are never bought.

Because it knows the truth (grades and hidden tastes), it reports the true
NDCG@10 of what was served, besides CTR, purchase rate and revenue, overall and
per experiment arm. Session ``n`` of seed ``s`` is always the same shopper,
query and click randomness, so two runs with the same seed against two models
are a paired replay (:func:`compare_replays`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np

from core.errors import InvalidInput
from evaluation.dataset import EvalDataset
from simulation.attack import ClickAttack
from simulation.click_model import ClickModel, ndcg
from simulation.world import StoreWorld, purchase_propensity

logger = logging.getLogger(__name__)


@dataclass
class ArmStats:
    """One arm's figures: searches, the searches with a click / cart / purchase, the events themselves."""

    searches: int = 0
    clicked: int = 0  # searches with at least one click
    carted: int = 0
    bought: int = 0
    clicks: int = 0  # click events (a search may have several)
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    true_ndcg: list[float] = field(default_factory=list)
    judged_ndcg: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Rates are shares of searches with at least one click / cart / purchase (as the replay's and `report
        ab`'s); ``*_per_search`` count the events."""
        n = max(1, self.searches)
        lat = np.asarray(self.latency_ms, dtype=float)
        lat = lat[np.isfinite(lat)]
        p50, p95 = np.percentile(lat, [50, 95]) if len(lat) else (np.nan, np.nan)  # none: null in the report
        return {"searches": self.searches, "ctr": round(self.clicked / n, 4), "cart_rate": round(self.carted / n, 4),
                "purchase_rate": round(self.bought / n, 4), "clicks_per_search": round(self.clicks / n, 4),
                "carts_per_search": round(self.carts / n, 4), "purchases_per_search": round(self.purchases / n, 4),
                "revenue": round(self.revenue, 2),
                "true_ndcg@10": round(float(np.mean(self.true_ndcg or [np.nan])), 4),
                "judged_ndcg@10": round(float(np.mean(self.judged_ndcg or [np.nan])), 4),
                "latency_p50_ms": round(float(p50), 1), "latency_p95_ms": round(float(p95), 1)}


class TrafficSimulator:
    def __init__(self, base_url: str, world: StoreWorld, dataset: EvalDataset, split: str,
                 click_model: ClickModel | None = None, seed: int = 0, k: int = 10) -> None:
        """``click_model``: by default one whose grades run to the dataset's own top grade."""
        if split not in ("train", "dev"):
            raise InvalidInput(f"split {split!r}: the simulator only uses 'train' or 'dev' queries")
        self.base_url = base_url.rstrip("/")
        self.split = split
        self.world = world
        self.dataset = dataset
        self.click_model = click_model or ClickModel(max_grade=dataset.max_grade)
        self.seed = seed
        self.k = k
        self.row_of = {p: i for i, p in enumerate(world.products["product_id"])}
        self.prices = world.products["price"].to_numpy()
        self.in_stock = world.products["in_stock"].to_numpy()
        categories = world.products["category_id"].to_numpy()
        self.queries_by_category: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for qid, text in dataset.select(split):
            judged = [self.row_of[p] for p in dataset.qrels.get(qid, {}) if p in self.row_of]
            if judged and any(dataset.qrels[qid].values()):
                main = Counter(categories[judged]).most_common(1)[0][0]
                self.queries_by_category[int(main)].append((qid, text))
        if not self.queries_by_category:
            raise InvalidInput(f"no judged queries of split {split!r} match the world's catalog")
        self.stats: dict[str, ArmStats] = defaultdict(ArmStats)
        self.errors: Counter[str] = Counter()
        self.sessions: dict[int, dict] = {}  # per session: what a paired replay comparison needs
        self._lock = threading.Lock()

    def _pick(self, rng: random.Random) -> tuple[int, str, str]:
        users = self.world.users
        u = rng.randrange(len(users))
        prefs = self.world.preferences()[u]
        categories = list(self.queries_by_category)
        weights = [prefs[c] + 0.02 for c in categories]
        category = rng.choices(categories, weights=weights)[0]
        qid, text = rng.choice(self.queries_by_category[category])
        return u, qid, text

    def session(self, client: httpx.Client, number: int) -> None:
        """One shopper: a search, the simulated clicks, carts and purchases on what it showed (posted
        as events), and the session's figures under the arm that served it."""
        rng = random.Random(self.seed * 1_000_003 + number)
        u, qid, text = self._pick(rng)
        user_id = self.world.users["user_id"].iat[u]
        searched = self._search(client, text, user_id, f"s{self.seed}-{number}")
        if searched is None:
            return
        body, latency = searched
        shown = [i["product_id"] for i in body["items"]]
        rows = np.array([self.row_of.get(p, -1) for p in shown], dtype=np.int64)  # an empty page too
        known = rows >= 0
        grades_map = self.dataset.qrels.get(qid, {})
        grades = np.array([grades_map.get(p, 0) for p in shown], dtype=float)
        propensity = self._propensity(u, rows)
        stock = np.where(known, self.in_stock[np.maximum(rows, 0)], False)
        actions = self.click_model.simulate(np.random.default_rng(rng.randrange(2**32)), grades, propensity, stock)
        self._post_events(client, body["request_id"], user_id, shown, rows, actions)
        # the ideal list holds every judged product, those the world does not hold as the served list counts them
        # (propensity 0), so neither NDCG exceeds 1
        all_rows = np.array([self.row_of.get(p, -1) for p in grades_map], dtype=np.int64)
        all_grades = np.array(list(grades_map.values()), dtype=float)
        true_ndcg = ndcg(self.click_model.true_gains(grades, propensity),
                         self.click_model.true_gains(all_grades, self._propensity(u, all_rows)))
        arm = body.get("arm") or "all"
        kinds = Counter(kind for _, kind in actions)
        with self._lock:
            stats = self.stats[arm]
            stats.searches += 1
            stats.clicked += int(kinds["click"] > 0)
            stats.carted += int(kinds["add_to_cart"] > 0)
            stats.bought += int(kinds["purchase"] > 0)
            stats.clicks += kinds["click"]
            stats.carts += kinds["add_to_cart"]
            stats.purchases += kinds["purchase"]
            stats.revenue += sum(float(self.prices[rows[p]]) for p, kind in actions if kind == "purchase")
            stats.true_ndcg.append(true_ndcg)
            stats.judged_ndcg.append(ndcg(grades, all_grades))
            stats.latency_ms.append(latency)
            self.sessions[number] = {"user_id": str(user_id), "query_id": str(qid), "arm": arm,
                                     "true_ndcg@10": float(true_ndcg),
                                     "purchased": int(kinds["purchase"] > 0), "clicked": int(kinds["click"] > 0)}

    def _propensity(self, u: int, rows: np.ndarray) -> np.ndarray:
        """User ``u``'s purchase propensity for each product row; 0 for a product the world does not hold (-1)."""
        out = np.zeros(len(rows))
        known = rows >= 0
        if known.any():
            out[known] = purchase_propensity(self.world, np.full(known.sum(), u), rows[known])
        return out

    def _search(self, client: httpx.Client, text: str, user_id: str, session_id: str) -> tuple[dict, float] | None:  # type: ignore[type-arg]
        """The search's response body and its latency in ms; None (the error counted) when it failed."""
        started = time.perf_counter()
        try:
            response = client.post(f"{self.base_url}/v1/search", json={
                "query": text, "k": self.k, "user_id": user_id, "session_id": session_id})
        except httpx.HTTPError as err:
            with self._lock:
                self.errors[type(err).__name__] += 1
            return None
        latency = (time.perf_counter() - started) * 1e3
        if response.status_code != 200:
            with self._lock:
                self.errors[f"search {response.status_code}"] += 1
            return None
        return response.json(), latency

    def _post_events(self, client: httpx.Client, request_id: str, user_id: str, shown: list[str],
                     rows: np.ndarray, actions: list[tuple[int, str]]) -> None:
        """The shopper's actions as interaction events (a purchase with its revenue); a failed post is counted in
        the run's errors."""
        events = []
        for position, kind in actions:
            event = {"event_id": f"{request_id}-{position + 1}-{kind}", "request_id": request_id,
                     "type": kind, "product_id": shown[position], "position": position + 1, "user_id": user_id}
            if kind == "purchase":
                event["revenue"] = float(self.prices[rows[position]])
            events.append(event)
        if not events:
            return
        try:
            posted = client.post(f"{self.base_url}/v1/events", json=events)
        except httpx.HTTPError as err:  # counted like a failed search: the run and its report go on
            with self._lock:
                self.errors[f"events {type(err).__name__}"] += 1
            return
        if posted.status_code != 202:
            with self._lock:
                self.errors[f"events {posted.status_code}"] += 1

    def run(self, sessions: int, concurrency: int = 4, start: int = 0, progress: bool = True,
            attack: ClickAttack | None = None) -> dict:
        """``sessions`` honest sessions (and, with ``attack``, its bot searches spread among them)."""
        from tqdm.auto import tqdm

        started = time.perf_counter()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        with httpx.Client(timeout=30.0, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(self.session, client, start + i) if kind == "session"
                       else pool.submit(attack.search, client, self.base_url, i)  # type: ignore[union-attr]
                       for kind, i in interleave(sessions, attack.searches if attack is not None else 0)]
            for future in tqdm(futures, disable=not progress, desc="simulated sessions", unit="s"):
                future.result()
        total = ArmStats()
        for stats in self.stats.values():
            for name in ("searches", "clicked", "carted", "bought", "clicks", "carts", "purchases", "revenue"):
                setattr(total, name, getattr(total, name) + getattr(stats, name))
            total.true_ndcg += stats.true_ndcg
            total.judged_ndcg += stats.judged_ndcg
            total.latency_ms += stats.latency_ms
        return {"sessions": sessions, "seed": self.seed, "k": self.k, "split": self.split,
                "seconds": round(time.perf_counter() - started, 1),
                "overall": total.summary(), "arms": {a: s.summary() for a, s in sorted(self.stats.items())},
                "errors": dict(self.errors), "note": "SIMULATED shoppers (simulation.world)",
                **({"attack": attack.report()} if attack is not None else {}),
                "sessions_detail": {str(n): r for n, r in sorted(self.sessions.items())}}


def interleave(sessions: int, attacks: int) -> list[tuple[str, int]]:
    """The order of a run's work: ``attacks`` attack searches spread evenly among ``sessions`` honest ones.

    Each job sits at the middle of its share of the run ((i + 0.5) / n), so the bots
    search all day long, not after the shoppers (a retrain splits its logs by time).
    """
    jobs = [((i + 0.5) / sessions, 0, "session", i) for i in range(sessions)]
    jobs += [((n + 0.5) / attacks, 1, "attack", n) for n in range(attacks)]
    return [(kind, i) for _, _, kind, i in sorted(jobs)]


def compare_replays(first: dict, second: dict) -> dict:
    """Paired comparison of two :meth:`TrafficSimulator.run` reports of the same sessions (same seed).

    Each session is the same user, query and click-model randomness in both
    runs; only the served ranking differs, so the per-session differences
    are tested (paired t-test), which needs far fewer sessions than an A/B.
    """
    from online_learning.stats import paired_means

    for setting in ("seed", "split", "k"):  # reports of an earlier release hold none: not checked there
        if setting in first and setting in second and first[setting] != second[setting]:
            raise InvalidInput(f"the two replays ran with {setting} {first[setting]!r} and {second[setting]!r}: "
                               f"their sessions are other shoppers' searches; run both with the same --{setting}")
    a, b = first["sessions_detail"], second["sessions_detail"]
    common = sorted(set(a) & set(b), key=int)
    differ = [n for n in common if (a[n].get("user_id"), a[n].get("query_id")) != (b[n].get("user_id"),
                                                                                    b[n].get("query_id"))]
    if differ:
        raise InvalidInput(f"{len(differ)} of the {len(common)} sessions the two replays share are another shopper "
                           f"or query in each (session {differ[0]} first): they are not the same sessions; run both "
                           "on the same dataset with the same --seed, --split and --start")
    if len(common) < 2:
        raise InvalidInput(f"the two replays share {len(common)} sessions; run both with the same --seed and --start")
    out = {"paired_sessions": len(common)}
    for metric in ("true_ndcg@10", "purchased", "clicked"):
        out[metric] = paired_means(metric, np.array([a[n][metric] for n in common]),
                                   np.array([b[n][metric] for n in common])).to_json()
    return out
