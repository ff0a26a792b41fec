"""Serving side of experiments: which ranker answers a search, and shadow scoring.

The :class:`ExperimentRouter` sits between ``/v1/search`` and the engine:

- no experiment: the active models answer;
- **A/B**: the user's arm (stable hash, :func:`~online_learning.experiments.assign`)
  picks the LambdaMART version;
- **interleave**: both arms rank the query (the cross-encoder scores are cached,
  so the second ranking costs little) and the lists are team-draft merged;
  every shown product carries its team in the ranking event;
- **shadow**: a candidate version re-ranks the same query on a background
  thread after the response is sent; top-10 overlap, Kendall tau and latency
  go to ``<home>/shadow/<version>.jsonl``. A full shadow queue
  (``serving.shadow_queue``) drops work (counted) rather than slow serving.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from core.files import append_line
from core.paths import Home
from core.query import Query
from online_learning.experiments import Experiment, assign, read_config, team_draft, write_config
from retrieval.types import Candidates
from serving.engine import SearchEngine, SearchResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    result: SearchResult
    experiment: str | None = None
    arm: str | None = None
    ltr: str | None = None
    teams: dict[str, str | None] = field(default_factory=dict)  # interleaved: the arm that placed each row
    # the encoder and the model versions that ranked the search, by role (SearchEngine.ranked_by); an
    # interleaved search names each arm's LambdaMART as ``ltr:<arm>`` and no single ``ltr``
    versions: dict[str, str] = field(default_factory=dict)
    # interleaved: the LambdaMART version of each team (None: the rows the rules placed, from the control's list)
    team_ltr: dict[str | None, str] = field(default_factory=dict)

    def explain(self, engine: SearchEngine, query: Query) -> list[dict[str, float]] | None:
        """LambdaMART feature contributions per row of the page, each from the model that scored the row, so
        they add up to its served score: an interleaved row's from its team's arm, a row the rules placed
        from the control's (its list gave the row); otherwise from the search's LambdaMART."""
        result = self.result
        if not self.team_ltr:
            return engine.explain(query, result.candidates, self.ltr, result.analysis)
        rows: dict[str, list[int]] = {}  # the page's rows by the LambdaMART that scored them
        for i, product in enumerate(result.candidates.product_ids):
            rows.setdefault(self.team_ltr[self.teams.get(product)], []).append(i)
        contributions: list[dict[str, float]] = [{} for _ in result.candidates.product_ids]
        for version, at in rows.items():
            part = engine.explain(query, result.candidates.take(np.array(at)), version, result.analysis)
            if part is None:
                return None
            for i, row in zip(at, part):
                contributions[i] = row
        return contributions

    def ltr_label(self, active: str | None) -> str | None:
        """The LambdaMART that ranked the list shown: the arm's, both arms' for an interleaved list, else
        the active one."""
        if self.ltr:
            return self.ltr
        arms = [version for role, version in self.versions.items() if role.startswith("ltr:")]
        return f"interleaved:{','.join(arms)}" if arms else active

    def ranked_by(self, version: str, active: str | None) -> bool:
        """Whether LambdaMART ``version`` ranked the list shown (alone or as an interleaved arm)."""
        arms = {v for role, v in self.versions.items() if role.startswith("ltr:")}
        return version in arms if arms else version == (self.ltr or active)


def _merge(first: Candidates, second: Candidates, products: list[str], teams: list[str | None],
           names: tuple[str, str]) -> Candidates:
    rows = None
    for product, team in zip(products, teams):
        side = second if team == names[1] else first  # a row the rules placed (no team): the first arm's
        row = side.take(np.array([side.product_ids.index(product)]))
        rows = row if rows is None else rows.then(row)
    return rows if rows is not None else first.top(0)


def _placed(notes: dict[str, list[str]], product_ids: list[str]) -> dict[str, int]:
    """The rows the rules pinned, by the place (1-based) they put each at."""
    out = {}
    for product in product_ids:
        for note in notes.get(product, ()):
            if note.startswith("pinned(") and note.endswith(")") and note[7:-1].isdigit():
                out[product] = int(note[7:-1])
    return out


class ExperimentRouter:
    def __init__(self, experiment: Experiment | None = None, shadow: str | None = None,
                 shadow_dir: Path | None = None, shadow_queue: int = 64) -> None:
        self.experiment = experiment
        self.shadow = shadow
        self.shadow_dir = shadow_dir
        self.shadow_queue = shadow_queue
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shadow") if shadow else None
        self._pending = 0
        self._lock = threading.Lock()
        self.shadow_dropped = 0
        self.shadow_done = 0

    @property
    def ltr_versions(self) -> list[str]:
        """LambdaMART versions the engine must load for this router."""
        versions = [arm.ltr for arm in self.experiment.arms.values()] if self.experiment else []
        return sorted(set(versions + ([self.shadow] if self.shadow else [])))

    def search(self, engine: SearchEngine, query: Query, k: int, offset: int, unit: str, use_cache: bool) -> Routed:
        experiment = self.experiment
        if experiment is None:
            result = engine.search(query, k, offset=offset, use_cache=use_cache)
            routed = Routed(result, versions=engine.ranked_by(result.pipeline))
        elif experiment.mode == "ab":
            arm = assign(experiment, unit)
            version = experiment.arms[arm].ltr
            result = engine.search(query, k, offset=offset, use_cache=use_cache, ltr=version)
            routed = Routed(result, experiment.name, arm, version, versions=engine.ranked_by(result.pipeline, version))
        elif query.sort != "relevance":  # a list sorted by price is not interleaved: the control serves it, outside
            version = experiment.arms[experiment.control].ltr  # the experiment (logged as no arm's search)
            result = engine.search(query, k, offset=offset, use_cache=use_cache, ltr=version)
            routed = Routed(result, None, None, version, versions=engine.ranked_by(result.pipeline, version))
        else:
            routed = self._interleave(engine, experiment, query, k, offset, unit)
        if self.shadow and not routed.ranked_by(self.shadow, engine.versions.get("ltr")):  # not itself again
            self._submit_shadow(engine, query, k, offset, routed)
        return routed

    def _interleave(self, engine: SearchEngine, experiment: Experiment, query: Query, k: int, offset: int,
                    unit: str) -> Routed:
        names = (experiment.control, experiment.treatment)
        depth = k + offset
        a = engine.search(query, depth, ltr=experiment.arms[names[0]].ltr)
        b = engine.search(query, depth, ltr=experiment.arms[names[1]].ltr)
        rng = random.Random(f"{experiment.name}:{unit}:{query.text}")
        # the rows the business rules placed (pins: the same in both arms) stay at their places, credited to
        # neither arm; the arms' own rows are drafted around them
        placed = _placed(a.notes, a.candidates.product_ids)
        products, teams = team_draft([p for p in a.candidates.product_ids if p not in placed],
                                     [p for p in b.candidates.product_ids if p not in placed],
                                     depth - len(placed), rng, names)
        drafted: list[str | None] = list(teams)
        for product, slot in sorted(placed.items(), key=lambda item: item[1]):
            at = min(slot - 1, len(products))
            products.insert(at, product)
            drafted.insert(at, None)
        merged = _merge(a.candidates, b.candidates, products, drafted, names).take(slice(offset, offset + k))
        team_of = dict(zip(products, drafted))
        timings = {f"{names[0]}:{s}": t for s, t in a.timings.items()} | {f"{names[1]}:{s}": t for s, t in b.timings.items()}
        result = replace(a, candidates=merged, timings=timings, degraded=a.degraded + b.degraded,
                         notes={**b.notes, **a.notes}, cached=False)
        versions: dict[str, str] = {}
        for name in names:  # both arms ranked it: each arm's LambdaMART by its name, not the active one
            arm = engine.ranked_by(a.pipeline, experiment.arms[name].ltr)
            ltr = arm.pop("ltr", None)
            versions |= arm | ({f"ltr:{name}": ltr} if ltr else {})
        team_ltr: dict[str | None, str] = {name: experiment.arms[name].ltr for name in names}
        team_ltr[None] = team_ltr[names[0]]  # a row the rules placed is the first arm's row (_merge)
        return Routed(result, experiment.name, "interleaved", None,
                      {p: team_of[p] for p in merged.product_ids}, versions, team_ltr)

    def _submit_shadow(self, engine: SearchEngine, query: Query, k: int, offset: int, served: Routed) -> None:
        assert self._pool is not None
        with self._lock:
            if self._pending >= self.shadow_queue:
                self.shadow_dropped += 1
                return
            self._pending += 1
        # no deadline, and never a skip from the live searches' degrade budget (it runs in the background)
        self._pool.submit(self._run_shadow, engine, replace(query, deadline=None, skip_model=None), k, offset, served)

    def _run_shadow(self, engine: SearchEngine, query: Query, k: int, offset: int, served: Routed) -> None:
        try:
            started = time.perf_counter()
            shadow = engine.search(query, k, offset=offset, ltr=self.shadow)  # the same page of the candidate
            seconds = time.perf_counter() - started
            a, b = served.result.candidates.product_ids[:10], shadow.candidates.product_ids[:10]
            common = [p for p in a if p in b]
            tau = float(kendalltau([a.index(p) for p in common], [b.index(p) for p in common]).statistic) \
                if len(common) > 2 else None
            record = {"time": time.time(), "query": query.text, "user_id": query.user_id, "offset": offset,
                      "served_ltr": served.ltr_label(engine.versions.get("ltr")), "shadow_ltr": self.shadow,
                      "overlap@10": len(common) / max(1, min(10, len(a))), "kendall_tau@10": tau,
                      # a page answered from the results cache was not ranked now: its time is unknown, not 0
                      "served_ms": (None if served.result.cached
                                    else round(sum(served.result.timings.values()) * 1e3, 2)),
                      "shadow_ms": round(seconds * 1e3, 2), "shadow_top10": b, "served_top10": a}
            if self.shadow_dir is not None:  # in the background: a rewrite by `events forget` or `prune` makes
                # this wait (the time it reads and writes the file); a search never does (shadow_queue)
                append_line(self.shadow_dir / f"{self.shadow}.jsonl", json.dumps(record))
            self.shadow_done += 1
        except Exception:  # noqa: BLE001 - shadow never affects serving
            logger.exception("shadow scoring failed")
        finally:
            with self._lock:
                self._pending -= 1

    def drain(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def load_router(paths: Home, shadow_queue: int = 64) -> ExperimentRouter:
    """The router described by ``<home>/experiments/current.json`` (none: active models only)."""
    experiment, shadow = read_config(paths.experiment_config)
    return ExperimentRouter(experiment, shadow, paths.shadow, shadow_queue)


def save_router_config(paths: Home, experiment: Experiment | None, shadow: str | None) -> None:
    write_config(paths.experiment_config, experiment, shadow)
