"""How long erasing shoppers and pruning the event log take, and building the feature tables from it.

    python benchmarks/privacy.py [--searches 100000] [--out FILE]

Imports a synthetic history (``benchmarks/event_import.py``'s: ``--searches`` searches of 10 shown
products over 90 days, a click on a third, a purchase on a tenth; one user per five searches) into
an empty offline log, then times, each on the same log:

- ``shoprank events forget`` of one shopper (a dry run, then the erasure) and of 100 shoppers;
- ``shoprank events prune --keep-days 30`` (the log's first 60 days);
- ``shoprank features build --from-catalog``'s tables from a 50,000-product catalog and the log's
  last 30 days, with the streaming state seeded from them.

Prints JSON with the CPU, the command, the log's size and each step's seconds and counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from benchmarks.event_import import write_history  # noqa: E402
from core.paths import Home  # noqa: E402
from online_learning.consumers.log_sink import read_log  # noqa: E402
from online_learning.event_import import import_events  # noqa: E402
from online_learning.feature_tables import write_catalog_tables  # noqa: E402
from online_learning.privacy import forget, prune  # noqa: E402


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = Home(Path(tmp) / "home")
        events = write_history(Path(tmp) / "history.jsonl.gz", args.searches, shuffled=False)
        report, seconds = timed(lambda: import_events(Path(tmp) / "history.jsonl.gz", paths.event_log, progress=False))
        files = sorted(paths.event_log.rglob("*.parquet"))
        users = read_log(paths.event_log, "rankings", ["user_id"])["user_id"].dropna().unique()
        rng = np.random.default_rng(1)
        at = datetime.now(UTC)
        out: dict[str, object] = {
            "cpu": hardware(), "command": " ".join(["python", *sys.argv]),
            "log": {"events": events, "import_s": seconds, "files": len(files),
                    "mib": round(sum(f.stat().st_size for f in files) / 2**20, 1), "shoppers": len(users)}}
        one = [str(rng.choice(users))]
        dry, out["forget_one_dry_run_s"] = timed(lambda: forget(paths, one, [], at, dry_run=True))
        done, out["forget_one_s"] = timed(lambda: forget(paths, one, [], at))
        out["forget_one"] = {"rows": done.log_rows, "files_rewritten": done.log_files}
        hundred = [str(u) for u in rng.choice(users, 100, replace=False)]
        done, out["forget_100_s"] = timed(lambda: forget(paths, hundred, [], at))
        out["forget_100"] = {"rows": done.log_rows, "files_rewritten": done.log_files}
        last = max(pd.to_datetime(read_log(paths.event_log, "rankings", ["timestamp"])["timestamp"], utc=True))
        done, out["prune_s"] = timed(lambda: prune(paths, 30, last.to_pydatetime()))
        out["prune"] = {"days": done.log_days, "files": done.log_files}
        catalog = pd.DataFrame({"product_id": [f"P{i}" for i in range(50_000)], "title": "product",
                                "category": [f"Dept {i % 9} > Category {i % 48}" for i in range(50_000)],
                                "price": rng.lognormal(3, 1, 50_000).round(2), "in_stock": rng.random(50_000) > 0.1})
        counts, out["feature_tables_s"] = timed(lambda: write_catalog_tables(
            catalog, paths.event_log, paths.features, last.to_pydatetime() + timedelta(seconds=1),
            paths.streaming_state))
        out["feature_tables"] = counts
        out["note"] = f"import: {report.written} events written"
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
