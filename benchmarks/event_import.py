"""How fast ``shoprank events import`` reads a store's history.

    python benchmarks/event_import.py [--searches 100000] [--out DIR]

Writes a synthetic history (``--searches`` ranking events of 10 shown products each over 90
days, a click on a third of them and a purchase on a tenth; one event per line, gzipped) to a
temporary folder in time order, as a log export is, and shuffled; imports each into an empty
offline log, then the ordered one again (every event already there). Prints JSON with the CPU,
the command, the file's size and each run's seconds, events per second and Parquet files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from online_learning.event_import import import_events  # noqa: E402


def write_history(path: Path, searches: int, shuffled: bool, seed: int = 0) -> int:
    """``searches`` searches with their clicks and purchases over 90 days, in time order or not;
    returns the events written."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 90 * 86400, searches))
    if shuffled:
        seconds = rng.permutation(seconds)
    written = 0
    with gzip.open(path, "wt") as out:
        for i in range(searches):
            at = start + timedelta(seconds=int(seconds[i]))
            shown = [f"P{p}" for p in rng.choice(50_000, 10, replace=False)]
            user = f"u{rng.integers(0, searches // 5 + 1)}"
            out.write(json.dumps({"type": "ranking", "event_id": f"r{i}", "request_id": f"r{i}", "user_id": user,
                                  "timestamp": at.isoformat(), "query": f"query {rng.integers(0, 5000)}",
                                  "pipeline": "legacy", "items": [{"product_id": p, "position": j + 1}
                                                                  for j, p in enumerate(shown)]}) + "\n")
            written += 1
            for kind, share in (("click", 1 / 3), ("purchase", 1 / 10)):
                if rng.random() < share:
                    out.write(json.dumps({"type": kind, "event_id": f"{kind}{i}", "request_id": f"r{i}",
                                          "product_id": shown[0], "user_id": user,
                                          "timestamp": (at + timedelta(seconds=30)).isoformat()}) + "\n")
                    written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="keep the file and the log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        runs, counts = {}, {}
        for name, shuffled, log in (("in time order", False, "ordered"), ("shuffled", True, "shuffled"),
                                    ("in time order again (all duplicates)", False, "ordered")):
            source = folder / f"history-{log}.jsonl.gz"
            if not source.exists():
                counts[log] = write_history(source, args.searches, shuffled)
            events = counts[log]
            started = time.perf_counter()
            report = import_events(source, folder / log, progress=False)
            seconds = time.perf_counter() - started
            runs[name] = {"events": events, "seconds": round(seconds, 2), "events_per_s": round(events / seconds),
                          "written": report.written, "duplicates": report.duplicates,
                          "parquet_files": len(list((folder / log).rglob("*.parquet")))}
        print(json.dumps({"hardware": hardware(), "command": " ".join(sys.argv),
                          "file_mb": round(source.stat().st_size / 2**20, 1), "batch": 50_000, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
