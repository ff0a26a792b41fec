"""Live figures of several server processes: what each writes, and how /metrics merges them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from api.metrics import (
    _LiveCollector,
    _LivePublisher,
    _Merged,
    dump_families,
    merge_live,
    read_live,
    read_retired,
)
from core.cache import LRUCache


def process_state(hits: int, misses: int, entries: int, ready: bool, version: str) -> dict:
    cache = LRUCache(100)
    for i in range(entries):
        cache.put(i, i)
    cache.hits, cache.misses = hits, misses
    return {"caches": {"results": cache}, "spool_pending": 2, "shipped": 5, "ready": ready,
            "versions": {"reranker": version}}


def families(state: dict):  # type: ignore[no-untyped-def]
    return dump_families(_LiveCollector(lambda: state).collect())


def exposition(dumped: list, retired: list | None = None) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(_Merged(merge_live(dumped, retired)))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_counts_are_summed_and_the_hit_rate_recomputed_over_every_process() -> None:
    merged = exposition([families(process_state(3, 1, 4, True, "v1")), families(process_state(0, 4, 6, True, "v1"))])
    assert merged['shoprank_cache_lookups_total{cache="results",result="hit"}'] == 3
    assert merged['shoprank_cache_lookups_total{cache="results",result="miss"}'] == 5
    assert merged['shoprank_cache_hit_rate{cache="results"}'] == 3 / 8  # not 0.75 + 0.0
    assert merged['shoprank_cache_entries{cache="results"}'] == 10
    assert merged["shoprank_event_spool_pending"] == 4
    assert merged["shoprank_ready"] == 1
    assert merged['shoprank_model_info{role="reranker",version="v1"}'] == 1
    assert merged["shoprank_server_processes"] == 2


def test_not_ready_while_one_process_is_not_and_both_versions_show_mid_swap() -> None:
    merged = exposition([families(process_state(0, 0, 0, True, "v1")), families(process_state(0, 0, 0, False, "v2"))])
    assert merged["shoprank_ready"] == 0
    assert merged['shoprank_model_info{role="reranker",version="v1"}'] == 1
    assert merged['shoprank_model_info{role="reranker",version="v2"}'] == 1


def test_a_process_publishes_its_figures_and_removes_them_when_it_stops(tmp_path: Path) -> None:
    publisher = _LivePublisher(tmp_path, lambda: list(_LiveCollector(lambda: process_state(1, 1, 1, True, "v1"))
                                                      .collect()))
    publisher.start()
    try:
        path = tmp_path / f"live-{os.getpid()}.json"
        publisher.publish()
        assert read_live(tmp_path) == [json.loads(path.read_text())]
        assert read_live(tmp_path, exclude=os.getpid()) == []  # the answering process reads its own live
    finally:
        publisher.stop()
    assert not path.exists() and read_retired(tmp_path)  # its counters kept among the retired


def test_figures_of_a_process_that_is_gone_are_not_merged(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / f"live-{gone.stdout.strip()}.json").write_text(json.dumps(families(process_state(1, 0, 1, True, "v1"))))
    (tmp_path / "live-notapid.json").write_text("{}")
    assert read_live(tmp_path) == []


def test_the_counters_of_a_process_that_is_gone_keep_counting(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)  # a worker killed and respawned: its counts must not leave the totals
    (tmp_path / f"live-{gone.stdout.strip()}.json").write_text(json.dumps(families(process_state(7, 2, 4, True, "v1"))))
    assert read_live(tmp_path) == [] and not list(tmp_path.glob("live-*.json"))  # folded, once
    merged = exposition([families(process_state(1, 1, 3, True, "v1"))], read_retired(tmp_path))
    assert merged['shoprank_cache_lookups_total{cache="results",result="hit"}'] == 8  # 7 of the gone one + 1
    assert merged['shoprank_cache_entries{cache="results"}'] == 3  # a gauge is the live processes' only
    assert merged["shoprank_ready"] == 1 and merged["shoprank_server_processes"] == 1


COUNT_ONE_SEARCH = """
import os, sys
from api.metrics import Metrics, shared_folder  # imports prometheus_client
{after_import}
metrics = Metrics()
metrics.searches.labels(shed="false").inc()
print("FOLDER", shared_folder())
sys.stdout.write(metrics.exposition().decode())
"""


def count_one_search(after_import: str, env: dict[str, str]) -> str:
    script = COUNT_ONE_SEARCH.format(after_import=after_import)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[2]).stdout


def test_a_process_keeps_its_own_figures_when_a_later_import_names_a_shared_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    # Feast, imported after prometheus_client, names a folder of its own when none is set
    out = count_one_search("import feast; assert os.environ['PROMETHEUS_MULTIPROC_DIR']", env)
    assert "FOLDER None" in out
    assert 'shoprank_searches_total{shed="false"} 1.0' in out
    # a folder named before the import is where the counters go, and /metrics reads them from there
    out = count_one_search("", {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert f"FOLDER {tmp_path}" in out
    assert 'shoprank_searches_total{shed="false"} 1.0' in out
    assert list(tmp_path.glob("counter_*.db"))


def test_a_cache_never_looked_up_has_no_hit_rate() -> None:
    idle = LRUCache(10)
    assert idle.hit_rate is None  # before: 0.0, read as "every lookup missed"
    state = {"caches": {"results": idle}, "ready": True}
    own = exposition([families(state)])
    assert 'shoprank_cache_hit_rate{cache="results"}' not in own
    assert own['shoprank_cache_lookups_total{cache="results",result="miss"}'] == 0  # the counts are there
    merged = exposition([families(state), families({"caches": {"results": LRUCache(10)}, "ready": True})])
    assert 'shoprank_cache_hit_rate{cache="results"}' not in merged
    idle.get("absent")
    assert exposition([families(state)])['shoprank_cache_hit_rate{cache="results"}'] == 0.0  # looked up: a rate


def test_a_damaged_retired_file_is_begun_again_not_a_failed_scrape_or_shutdown(tmp_path: Path) -> None:
    """A crash left retired.json empty: a process found gone is still folded in (its counters start the file
    again), and a process leaving still retires its own; before, both raised, and /metrics answered 500."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / "retired.json").write_text("")
    (tmp_path / f"live-{gone.stdout.strip()}.json").write_text(json.dumps(families(process_state(7, 2, 4, True, "v1"))))
    assert read_live(tmp_path) == [] and not list(tmp_path.glob("live-*.json"))
    merged = exposition([], read_retired(tmp_path))
    assert merged['shoprank_cache_lookups_total{cache="results",result="hit"}'] == 7
    for damaged in ('{"not": "families"}', '[{"samples": []}]', '[{"type": "counter", "samples": []}]'):
        (tmp_path / "retired.json").write_text(damaged)
        assert read_retired(tmp_path) == [] and exposition([], read_retired(tmp_path)) is not None
    (tmp_path / "retired.json").write_text('[{"samples": []}]')
    publisher = _LivePublisher(tmp_path, lambda: list(_LiveCollector(lambda: process_state(1, 1, 1, True, "v1"))
                                                      .collect()))
    publisher.start()
    publisher.stop()  # no exception
    assert not list(tmp_path.glob("live-*.json")) and read_retired(tmp_path)
