"""The benchmark scripts' shared timing helper and wrk script (benchmarks/common.py, benchmarks/load_test.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import time_each
from benchmarks.load_test import search_script


def test_time_each_runs_before_ahead_of_every_timed_call_only() -> None:
    calls: list[str] = []
    seconds = time_each([1, 2, 3], lambda item: calls.append(f"fn {item}"), warmup=2,
                        before=lambda: calls.append("before"))
    assert len(seconds) == 3
    # the warm-up's calls come first and unprepared; then every timed call has its own ``before``
    assert calls == ["fn 1", "fn 2", "before", "fn 1", "before", "fn 2", "before", "fn 3"]


def test_search_script_gives_each_wrk_thread_its_own_stride(tmp_path: Path) -> None:
    queries = tmp_path / "queries.txt"
    one, two = search_script(tmp_path, queries, 1), search_script(tmp_path, queries, 2)
    assert one != two and one.parent == two.parent == tmp_path
    text = two.read_text()
    assert f'io.lines("{queries}")' in text and 'thread:set("id", #threads)' in text
    assert "local n = counter * 2 + id" in text and "queries[(n % #queries) + 1]" in text
    assert '"user_id": "load-\' .. (n % 500)' in text  # the users walk the same stride
