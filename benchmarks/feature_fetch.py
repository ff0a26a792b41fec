"""Online feature fetch and LambdaMART scoring latency, sqlite and Redis online stores.

Needs a home whose feature store is built (``shoprank features build --dataset DIR``,
``features apply``, ``features materialize``). For ``--queries`` requests of 100
random catalog products + 1 random user, prints p50/p95/p99 of:

- Feast's ``get_online_features`` on the ``ranker_v1`` service (the reference path);
- ShopRank's :class:`ranking.features.OnlineFeatureReader` cold (product cache
  cleared before every request: every row read from the store) and warm (the
  serving path: product rows cached for ``product_ttl``, the user read fresh);
- LambdaMART scoring of 100 candidates (the active ``ltr`` version, or a model
  trained here on random rows when none is registered).

Redis: a ``redis-server`` is started on 127.0.0.1 (free port, no persistence),
the same registry is materialized into it, and the same requests are timed.

    python benchmarks/feature_fetch.py [--home artifacts] [--queries 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command, hardware, percentiles, time_each  # noqa: E402
from online_learning.local_broker import free_port  # noqa: E402


def _start_redis(folder: Path) -> tuple[subprocess.Popen, int]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server; `make system-deps`)")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.terminate()
    raise SystemExit("redis-server did not start")


def measure_store(settings, requests: list[tuple[list[str], str]]) -> dict:  # type: ignore[no-untyped-def]
    from core import feast_repo
    from core.feature_store import OnlineFeatureReader

    store = feast_repo.open_store(settings)
    service = store.get_feature_service(settings.features.service)

    def feast_path(request: tuple[list[str], str]) -> None:
        products, user = request
        store.get_online_features(features=service, entity_rows=[{"product_id": p, "user_id": user} for p in products])

    reader = OnlineFeatureReader(store, settings.features.service, product_ttl=3600)

    def fetch(request: tuple[list[str], str]) -> None:
        reader.fetch(*request)

    out = {"feast_get_online_features": percentiles(time_each(requests, feast_path)),
           "reader_cold": percentiles(time_each(requests, fetch, before=reader._cache.clear))}  # emptied untimed
    for request in requests:  # fill the product cache, as serving does
        reader.fetch(*request)
    out["reader_warm"] = percentiles(time_each(requests, fetch))
    batch = reader.fetch(*requests[0])
    out["features"] = len(batch.columns)
    out["non_missing_share"] = round(float(np.mean([np.isfinite(c).mean() for c in batch.columns.values()])), 3)
    return out


def measure_lambdamart(settings, queries: int) -> dict:  # type: ignore[no-untyped-def]
    from core.registry import ModelRegistry
    from ranking.lambdamart import LambdaMART, LambdaMARTConfig, RankingData

    active = ModelRegistry(settings.paths.models).active("ltr")
    rng = np.random.default_rng(0)
    if active is not None and active.path is not None:
        model, source = LambdaMART.load(active.path), f"ltr:{active.version}"
    else:  # no trained model: a 30-feature model on random rows, same LightGBM settings
        names = [f"f{i}" for i in range(30)]
        data = lambda n: RankingData(rng.normal(size=(n * 20, 30)).astype(np.float32),  # noqa: E731
                                     rng.integers(0, 4, n * 20).astype(np.int32), [20] * n, names, list(range(n)))
        model, source = LambdaMART.fit(data(200), data(50), LambdaMARTConfig(max_grade=3)), "random-rows model"
    rows = [rng.normal(size=(100, len(model.names))).astype(np.float32) for _ in range(queries)]
    return {"model": source, "features": len(model.names),
            "score_100": percentiles(time_each(rows, model.predict)),
            "explain_100": percentiles(time_each(rows[: max(50, queries // 4)], model.explain))}


def main() -> None:
    from core.settings import FeatureSettings, Settings
    from simulation.world import StoreWorld

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(__file__).resolve().parents[1] / "artifacts")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()

    settings = Settings(home=args.home, progress=False)
    world = StoreWorld.load(settings.paths.world)
    rng = random.Random(0)
    products, users = world.products["product_id"].tolist(), world.users["user_id"].tolist()
    requests = [(rng.sample(products, args.candidates), rng.choice(users)) for _ in range(args.queries)]
    result: dict = {"hardware": hardware(), "command": command(), "products": len(products), "users": len(users),
                    "candidates": args.candidates, "queries": args.queries,
                    "sqlite": measure_store(settings, requests)}
    if not args.no_redis:
        from core import feast_repo

        with tempfile.TemporaryDirectory() as folder:
            server, port = _start_redis(Path(folder))
            try:
                redis = settings.model_copy(update={"features": FeatureSettings(
                    online_store="redis", redis_url=f"127.0.0.1:{port}")})
                started = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress; stdout is the JSON result
                    feast_repo.materialize(redis)
                result["redis_materialize_s"] = round(time.perf_counter() - started, 1)
                result["redis"] = measure_store(redis, requests)
            finally:
                server.terminate()
                server.wait(timeout=10)
    result["lambdamart"] = measure_lambdamart(settings, args.queries)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
