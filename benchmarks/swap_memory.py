"""A server's memory and threads across hot swaps: rounds of 10 ``POST /v1/admin/reload`` (each builds a new
engine and router and retires the old one), a search after each, then the process's RSS and live threads.

A swap must leave nothing behind: the retired unit is closed (its micro-batcher threads, score caches, feature
reader) once its in-flight requests finish. The retired units are closed after 1 s here instead of the served
30 s, so that a round's figures show what stays, not what waits to be closed.

The home needs an index and an active cross-encoder (``shoprank train reranker`` or a registered one): the
micro-batcher and the model it holds are what a leak would keep.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=HOME python benchmarks/swap_memory.py [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from benchmarks.common import command, hardware  # noqa: E402


def _rss_mib() -> int:
    return round(psutil.Process().memory_info().rss / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["SHOPRANK_API__ADMIN_TOKEN"] = "swap-memory"
    os.environ["SHOPRANK_SERVING__RELOAD_POLL_S"] = "0"  # only the swaps this script makes
    os.environ["SHOPRANK_PROGRESS"] = "false"
    from fastapi.testclient import TestClient

    import api.state
    from api.main import create_app
    from core.registry import ModelRegistry
    from core.settings import get_settings

    settings = get_settings()
    if ModelRegistry(settings.paths.models).active("reranker") is None:
        raise SystemExit(f"{settings.home} has no active reranker: train one (shoprank train reranker --dataset D "
                         "--limit 8 --layers 1) or register one")
    timer = threading.Timer
    api.state.threading.Timer = lambda s, f, *a, **k: timer(1.0, f, *a, **k)  # type: ignore[attr-defined]
    print(f"CPU: {hardware()}\ncommand: {command()}", flush=True)
    rows = []
    auth = {"Authorization": "Bearer swap-memory"}
    with TestClient(create_app(settings)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.2)
        client.get("/v1/search", params={"q": "cordless drill"})
        gc.collect()
        rows.append({"swaps": 0, "rss_mib": _rss_mib(), "threads": threading.active_count()})
        print(rows[-1], flush=True)
        for round_ in range(args.rounds):
            for _ in range(10):
                assert client.post("/v1/admin/reload", headers=auth).status_code == 200
                client.get("/v1/search", params={"q": "cordless drill"})
            time.sleep(3)  # the retired units closed
            gc.collect()
            rows.append({"swaps": 10 * (round_ + 1), "rss_mib": _rss_mib(),
                         "threads": threading.active_count()})
            print(rows[-1], flush=True)
    if args.out:
        args.out.write_text(json.dumps({"cpu": hardware(), "command": " ".join(sys.argv), "home": str(settings.home),
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
