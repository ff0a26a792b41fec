"""Prometheus metrics of the API (served on ``/metrics``).

One registry per app (tests build many apps). Request and stage latencies are
histograms; cache hit rates, event-log size and served model versions are read
at scrape time from the live engine and event log.

Several server processes (``api.workers``) share a folder named by
``PROMETHEUS_MULTIPROC_DIR`` (``shoprank serve`` makes one): each process writes its
counters and histograms there, and ``/metrics``, whichever process answers, sums every
process's; the live gauges are the answering process's (its ``pid`` is in ``/healthz``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when it is first imported
BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("shoprank_request_seconds", "HTTP request latency", ["route", "status"],
                                  buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("shoprank_stage_seconds", "Latency per search stage", ["stage"],
                                buckets=BUCKETS, registry=self.registry)
        self.degraded = Counter("shoprank_degraded_total", "Search stages skipped (timeout, error, budget)",
                                ["stage", "reason"], registry=self.registry)
        self.searches = Counter("shoprank_searches_total", "Searches served; shed=true: admitted over the "
                                "shed limit (cross-encoders from cached scores, else their top serving.shed_depth "
                                "only, or skipped)", ["shed"], registry=self.registry)
        self.events = Counter("shoprank_events_total", "Events accepted", ["type"], registry=self.registry)
        self.swaps = Counter("shoprank_model_swaps_total", "Model activations and rollbacks", ["role", "action"],
                             registry=self.registry)
        self._live: list[Collector] = []  # read at scrape time, from this process

    def watch(self, state: Callable[[], dict[str, Any]]) -> None:
        """Export gauges read from ``state()`` at scrape time."""
        collector = _LiveCollector(state)
        self.registry.register(collector)
        self._live.append(collector)

    def exposition(self) -> bytes:
        """The text ``/metrics`` serves: every server process's counters and histograms summed
        when several share a ``PROMETHEUS_MULTIPROC_DIR``, else this process's; live gauges
        from this process."""
        folder = os.environ.get(MULTIPROCESS_DIR)
        if not folder:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)
        for collector in self._live:
            registry.register(collector)
        return generate_latest(registry)


class _LiveCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.state()
        hit_rate = GaugeMetricFamily("shoprank_cache_hit_rate", "Hit rate per cache", labels=["cache"])
        size = GaugeMetricFamily("shoprank_cache_entries", "Entries per cache", labels=["cache"])
        lookups = CounterMetricFamily("shoprank_cache_lookups", "Lookups per cache (and tier: "
                                      "<role>_scores in memory, <role>_scores_store in the score store) by result",
                                      labels=["cache", "result"])
        store = CounterMetricFamily("shoprank_score_store_events", "Score store: read/write errors, reads "
                                    "skipped while it is left alone after an error, scores written and dropped",
                                    labels=["event"])
        for name, cache in state.get("caches", {}).items():
            if hasattr(cache, "hit_rate"):
                hit_rate.add_metric([name], cache.hit_rate)
                lookups.add_metric([name, "hit"], cache.hits)
                lookups.add_metric([name, "miss"], cache.misses)
            if hasattr(cache, "__len__"):
                size.add_metric([name], len(cache))
            if name == "score_store":
                for event in ("errors", "skipped", "written", "dropped"):
                    store.add_metric([event], getattr(cache, event))
        yield hit_rate
        yield size
        yield lookups
        yield store
        spool = GaugeMetricFamily("shoprank_event_spool_pending", "Events accepted but not yet shipped to Kafka")
        spool.add_metric([], state.get("spool_pending", 0))
        yield spool
        shipped = GaugeMetricFamily("shoprank_events_shipped", "Events shipped to Kafka since start")
        shipped.add_metric([], state.get("shipped", 0))
        yield shipped
        backlog = GaugeMetricFamily("shoprank_cross_encoder_backlog_pairs", "Cross-encoder pairs queued or being "
                                    "scored, per role", labels=["role"])
        rate = GaugeMetricFamily("shoprank_cross_encoder_pairs_per_second", "Cross-encoder pairs a second over "
                                 "recent micro-batches, per role", labels=["role"])
        refused = CounterMetricFamily("shoprank_cross_encoder_shed", "Searches whose cross-encoder pairs were "
                                      "refused for the backlog (serving.shed_wait_ms), per role", labels=["role"])
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
