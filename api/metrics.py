"""Prometheus metrics of the API (served on ``/metrics``).

One registry per app (tests build many apps). Request and stage latencies are
histograms; cache hit rates, event-log size and served model versions are read
at scrape time from the live engine and event log.

Several server processes (``api.workers``) share a folder named by
``PROMETHEUS_MULTIPROC_DIR`` (``shoprank serve`` makes one): each process writes its
counters and histograms there, and ``/metrics``, whichever process answers, sums every
process's. The live figures (caches, event spool, cross-encoder backlog, served versions)
are read from each process's engine: every process also writes them to
``live-<pid>.json`` in that folder once a second (:data:`LIVE_INTERVAL_S`), and the
answering process merges its own, read now, with those of the other processes still
running: counts and sizes are summed, hit rates recomputed from the summed lookups,
``shoprank_ready`` is 1 only when every process is ready, and
``shoprank_server_processes`` says how many processes were merged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.files import write_text_atomic
from core.processes import alive

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when it is first imported
LIVE_INTERVAL_S = 1.0  # how often each process writes its live figures for the others
BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)


def shared_folder() -> Path | None:
    """The folder this process's counters and histograms are written to, shared with the other
    server processes: ``PROMETHEUS_MULTIPROC_DIR`` when prometheus_client writes there, else None.

    prometheus_client chooses where values live once, when it is first imported. A library imported
    later may still set the variable (Feast sets it when it is unset, to a folder of its own): this
    process's figures then stay in its registry, and are served from there."""
    folder = os.environ.get(MULTIPROCESS_DIR)
    if not folder or values.ValueClass is values.MutexValue:
        return None
    return Path(folder)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("shoprank_request_seconds", "HTTP request latency", ["route", "status"],
                                  buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("shoprank_stage_seconds", "Latency per search stage", ["stage"],
                                buckets=BUCKETS, registry=self.registry)
        self.degraded = Counter("shoprank_degraded_total", "Search stages skipped or cut short (reason: timeout, "
                                "shed, shallow: only the top serving.shed_depth scored, skipped, error; cause, for "
                                "a shed or shallow stage: budget, overload or queue)",
                                ["stage", "reason", "cause"], registry=self.registry)
        self.searches = Counter("shoprank_searches_total", "Searches served; shed=true: admitted over the "
                                "shed limit (cross-encoders from cached scores, else their top serving.shed_depth "
                                "only, or skipped)", ["shed"], registry=self.registry)
        self.rebalanced = Counter("shoprank_connections_rebalanced_total", "Connections a server process "
                                  "serving more of them than its peers closed after answering, so that the "
                                  "client reconnects to another (api.rebalance_margin)", registry=self.registry)
        self.events = Counter("shoprank_events_total", "Events accepted", ["type"], registry=self.registry)
        self.rules = Counter("shoprank_rules_applied_total", "Searches whose page a business rule changed, by rule "
                             "(pinned, buried, boosted, promotion_boost, out_of_stock_demoted, redirect)", ["rule"],
                             registry=self.registry)
        self.swaps = Counter("shoprank_model_swaps_total", "Model activations and rollbacks", ["role", "action"],
                             registry=self.registry)
        self._live: list[Collector] = []  # read at scrape time, from this process
        self._publisher: _LivePublisher | None = None

    def watch(self, state: Callable[[], dict[str, Any]]) -> None:
        """Export gauges read from ``state()`` at scrape time (and, with several server
        processes, published for the others once a second)."""
        collector = _LiveCollector(state)
        self.registry.register(collector)
        self._live.append(collector)
        folder = shared_folder()
        if folder and self._publisher is None:
            self._publisher = _LivePublisher(folder, self._live_families)
            self._publisher.start()

    def close(self) -> None:
        """Stop publishing this process's live figures and remove them (the process is leaving)."""
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None

    def _live_families(self) -> list[Metric]:
        return [family for collector in self._live for family in collector.collect()]

    def exposition(self) -> bytes:
        """The text ``/metrics`` serves: every server process's counters, histograms and live
        figures merged when several share a ``PROMETHEUS_MULTIPROC_DIR``, else this process's."""
        folder = shared_folder()
        if not folder:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))
        others, retired = read_figures(folder, exclude=os.getpid())
        registry.register(_Merged(merge_live([dump_families(self._live_families()), *others], retired)))
        return generate_latest(registry)


# -- live figures of several processes -------------------------------------------------------------
Dumped = list[dict[str, Any]]  # families as JSON: name, type, documentation, samples [name, labels, value]


def dump_families(families: Iterable[Metric]) -> Dumped:
    return [{"name": f.name, "type": f.type, "documentation": f.documentation,
             "samples": [[s.name, s.labels, s.value] for s in f.samples]} for f in families]


def read_live(folder: Path, exclude: int | None = None) -> list[Dumped]:
    """The live figures other running processes last wrote to ``folder`` (:func:`read_figures`)."""
    return read_figures(folder, exclude)[0]


def read_figures(folder: Path, exclude: int | None = None) -> tuple[list[Dumped], Dumped]:
    """The live figures other running processes last wrote to ``folder`` (a file being replaced is read whole
    or not at all) and the summed counters of the processes that are gone: those of a process found gone are
    folded first (:func:`retire`), then both are read under the folder's lock, so a process that ends
    meanwhile is counted once, never twice or not at all, and a counter never goes down."""
    files = []
    for path in sorted(folder.glob("live-*.json")):
        try:
            pid = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        if pid == exclude:
            continue
        if alive(pid):
            files.append(path)
        else:
            retire(path)
    with open(folder / "retired.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        out = []
        for path in files:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # retired meanwhile: its counters are in the retired sums read next
                continue
        return out, read_retired(folder)


def peer_ready(folder: Path) -> bool:
    """Whether another running process of this server, by the live figures it last wrote to ``folder``,
    has its search engine loaded (``shoprank_ready`` 1)."""
    return any(sample[0] == "shoprank_ready" and sample[2] == 1
               for dumped in read_live(folder, exclude=os.getpid()) for family in dumped
               for sample in family.get("samples", ()))


RETIRED = "retired.json"  # the counters of the processes that are gone, summed


def read_retired(folder: Path) -> Dumped:
    """The summed counters of the processes that are gone (:func:`retire`); none yet: empty."""
    try:
        return _families(json.loads((folder / RETIRED).read_text()))
    except (OSError, ValueError):
        return []


def _families(data: Any) -> Dumped:
    """The families of a live or retired file's JSON; what is not a family is left out (a damaged file)."""
    return [f for f in data if isinstance(f, dict) and isinstance(f.get("samples"), list)
            and all(isinstance(f.get(key), str) for key in ("name", "type", "documentation"))] \
        if isinstance(data, list) else []


def retire(path: Path) -> None:
    """Fold the counters of the live file at ``path`` (a process that ended) into its folder's
    ``retired.json`` and remove the file: once, whichever process does it (a lock on the folder)."""
    folder = path.parent
    with open(folder / "retired.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            dumped = _families(json.loads(path.read_text()))
        except FileNotFoundError:  # another process retired it first
            return
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            return
        target = folder / RETIRED
        base = read_retired(folder)
        if not base and target.is_file() and target.stat().st_size:  # damaged (a crash mid-write): begin again
            logger.warning("%s cannot be read: the counters of the server processes that ended before are lost "
                           "from /metrics; it is written again from this one's", target)
        sums: dict[str, dict[str, Any]] = {f["name"]: f for f in base}
        for family in dumped:
            if family.get("type") != "counter":
                continue
            kept = sums.setdefault(family["name"], {**family, "samples": []})
            index = {(n, tuple(sorted(labels.items()))): i for i, (n, labels, _) in enumerate(kept["samples"])}
            for name, labels, value in family["samples"]:
                key = (name, tuple(sorted(labels.items())))
                if key in index:
                    kept["samples"][index[key]][2] += float(value)
                else:
                    index[key] = len(kept["samples"])
                    kept["samples"].append([name, labels, float(value)])
        write_text_atomic(target, json.dumps(list(sums.values())))
        path.unlink(missing_ok=True)


def merge_live(processes: list[Dumped], retired: Dumped | None = None) -> list[Metric]:
    """One set of families from each process's: values of the same sample summed, except
    ``shoprank_ready`` (the least: 1 when every process is ready), ``shoprank_model_info``
    (1 per version any process serves) and ``shoprank_cache_hit_rate`` (hits over the summed
    lookups; left out while there were none); plus ``shoprank_server_processes``. ``retired``: the
    counters of processes that are gone, added to the counters."""
    families: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for dumped in [*processes, [f for f in retired or [] if f.get("type") == "counter"]]:
        for family in dumped:
            families.setdefault(family["name"], family)
            seen = values.setdefault(family["name"], {})
            for name, labels, value in family["samples"]:
                seen.setdefault((name, tuple(sorted(labels.items()))), []).append(float(value))
    lookups: dict[str, dict[str, float]] = {}
    for (_, labels), found in values.get("shoprank_cache_lookups", {}).items():
        named = dict(labels)
        lookups.setdefault(named["cache"], {}).setdefault(named["result"], 0.0)
        lookups[named["cache"]][named["result"]] += sum(found)
    out = []
    for name, family in families.items():
        metric = Metric(name, family["documentation"], family["type"])
        for (sample, labels), found in values[name].items():
            if name == "shoprank_ready":
                value = min(found) if len(found) == len(processes) else 0.0
            elif name == "shoprank_model_info":
                value = max(found)
            elif name == "shoprank_cache_hit_rate" and dict(labels)["cache"] in lookups:
                counts = lookups[dict(labels)["cache"]]
                total = counts.get("hit", 0.0) + counts.get("miss", 0.0)
                if not total:  # no process looked it up: no rate (0 would read as every lookup missing)
                    continue
                value = counts.get("hit", 0.0) / total
            else:
                value = sum(found)
            metric.add_sample(sample, dict(labels), value)
        out.append(metric)
    processes_metric = GaugeMetricFamily("shoprank_server_processes", "Server processes whose live figures "
                                         "this scrape merged")
    processes_metric.add_metric([], len(processes))
    return [*out, processes_metric]


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class _LivePublisher:
    """Writes this process's live figures to ``live-<pid>.json`` every :data:`LIVE_INTERVAL_S`."""

    def __init__(self, folder: Path, families: Callable[[], list[Metric]]) -> None:
        self.path = folder / f"live-{os.getpid()}.json"
        self.families = families
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one writer of the file at a time
        self._thread = threading.Thread(target=self._run, name="live-metrics", daemon=True)

    def start(self) -> None:
        if self.path.is_file():  # left by a process that ended with this pid: its counters are not this one's
            retire(self.path)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.publish()  # the last figures: its counters then live on among the retired
        except Exception:  # noqa: BLE001 - metrics never take a server down
            logger.exception("could not publish the last live metrics to %s", self.path)
        with self._lock:
            try:
                retire(self.path)
            except Exception:  # noqa: BLE001 - metrics never take a server down (nor its shutdown)
                logger.exception("could not retire the live metrics of %s", self.path)

    def publish(self) -> None:
        text = json.dumps(dump_families(self.families()))
        partial = self.path.with_suffix(".tmp")
        with self._lock:
            partial.write_text(text)
            partial.replace(self.path)  # readers see the old file or the new one, whole

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - metrics never take a server down
                logger.exception("could not publish live metrics to %s", self.path)
            self._stop.wait(LIVE_INTERVAL_S)


class _LiveCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.state()
        hit_rate = GaugeMetricFamily("shoprank_cache_hit_rate", "Hit rate per cache since the process started", labels=["cache"])
        size = GaugeMetricFamily("shoprank_cache_entries", "Entries per cache", labels=["cache"])
        lookups = CounterMetricFamily("shoprank_cache_lookups", "Lookups per cache (and tier: "
                                      "<role>_scores in memory, <role>_scores_store in the score store) by result",
                                      labels=["cache", "result"])
        store = CounterMetricFamily("shoprank_score_store_events", "Score store: read/write errors, reads "
                                    "skipped while it is left alone after an error, scores written and dropped",
                                    labels=["event"])
        for name, cache in state.get("caches", {}).items():
            if hasattr(cache, "hit_rate"):
                if cache.hit_rate is not None:  # never looked up: no rate rather than 0
                    hit_rate.add_metric([name], cache.hit_rate)
                lookups.add_metric([name, "hit"], cache.hits)
                lookups.add_metric([name, "miss"], cache.misses)
            if hasattr(cache, "__len__"):
                size.add_metric([name], len(cache))
            if name == "score_store":
                for event in cache.EVENTS:
                    store.add_metric([event], getattr(cache, event))
        yield hit_rate
        yield size
        yield lookups
        yield store
        spool = GaugeMetricFamily("shoprank_event_spool_pending", "Events accepted but not yet shipped to Kafka")
        spool.add_metric([], state.get("spool_pending", 0))
        yield spool
        # a counter: a process that ends leaves its share in the retired sums, so the total never goes down
        shipped = CounterMetricFamily("shoprank_events_shipped", "Events shipped to Kafka")
        shipped.add_metric([], state.get("shipped", 0))
        yield shipped
        backlog = GaugeMetricFamily("shoprank_cross_encoder_backlog_pairs", "Cross-encoder pairs queued or being "
                                    "scored, per role", labels=["role"])
        rate = GaugeMetricFamily("shoprank_cross_encoder_pairs_per_second", "Cross-encoder pairs a second over "
                                 "recent micro-batches, per role", labels=["role"])
        refused = CounterMetricFamily("shoprank_cross_encoder_shed", "Searches whose cross-encoder pairs were "
                                      "refused for the backlog (serving.shed_wait_ms, serving.shed_past_deadline), per role", labels=["role"])
        for role, batcher in state.get("batchers", {}).items():
            backlog.add_metric([role], batcher.pending)
            rate.add_metric([role], batcher.rate)
            refused.add_metric([role], batcher.shed)
        yield backlog
        yield rate
        yield refused
        models = GaugeMetricFamily("shoprank_model_info", "Served model versions (value 1)", labels=["role", "version"])
        for role, version in state.get("versions", {}).items():
            models.add_metric([role, version], 1)
        yield models
        ready = GaugeMetricFamily("shoprank_ready", "1 when index and models are loaded")
        ready.add_metric([], 1 if state.get("ready") else 0)
        yield ready
