"""Several stores in one server: memory per extra store, and one store's latency while another
store swaps models or is re-indexed.

The default store serves the Home Depot catalog (54,667 products); extra stores are a second
copy of it (``big``) and the generated demo store (``small``, 2,000 products, SIMULATED, with
two LambdaMART versions). The server is started three times, with no extra store, with
``small``, and with ``small`` and ``big``, and its resident memory is read after every store
has answered searches. Then, with both extra stores, wrk searches the default store at 8
connections for ``--seconds`` three times: alone, while ``small``'s LambdaMART is swapped
through the admin API every 2 s, and while ``small`` is re-indexed in a loop
(``shoprank --store small index``, another process on the same cores).

    HF_HUB_OFFLINE=1 python benchmarks/stores.py [--seconds 20] [--dataset DIR]

Prints JSON with the CPU, the command and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware, wait_ready  # noqa: E402
from benchmarks.replicas import wrk  # noqa: E402
from online_learning.local_broker import free_port  # noqa: E402
from serving.indexing import build_index_in_child  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "homedepot"
TOKEN = "stores-admin"


def shoprank(home: Path, *argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "shoprank.cli", "--no-progress", *argv], check=True,
                   env={**os.environ, **(env or {}), "SHOPRANK_HOME": str(home)}, stdout=subprocess.DEVNULL)


def serve(home: Path, catalog: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SHOPRANK_HOME": str(home), "SHOPRANK_CATALOG": str(catalog), "SHOPRANK_PROGRESS": "false",
           "SHOPRANK_API__ADMIN_TOKEN": TOKEN, "SHOPRANK_SERVING__RESULTS_CACHE_SIZE": "0"}
    process = subprocess.Popen([sys.executable, "-m", "shoprank.cli", "serve", "--port", str(port)], env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    return process, base


def rss_gib(process: subprocess.Popen) -> float:
    proc = psutil.Process(process.pid)
    return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**30, 3)


def warm(base: str, stores: list[str], queries: list[str]) -> None:
    with httpx.Client(timeout=60) as client:
        for store in stores:
            prefix = "/v1" if store == "default" else f"/v1/stores/{store}"
            for q in queries[:100]:
                client.get(f"{base}{prefix}/search", params={"q": q}).raise_for_status()


def link_home(base: Path, target: Path, stores: list[str]) -> Path:
    """A home sharing ``base``'s caches and indexes, serving only ``stores`` beside the default one."""
    target.mkdir()
    for part in ("cache", "indexes"):
        (target / part).symlink_to(base / part, target_is_directory=True)
    if stores:
        (target / "stores").mkdir()
        for store in stores:
            (target / "stores" / store).symlink_to(base / "stores" / store, target_is_directory=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoprank-stores-"))
    base = work / "base"
    base.mkdir()
    (base / "cache").symlink_to((ROOT / "artifacts" / "cache").resolve(), target_is_directory=True)
    catalog = args.dataset / "products.csv"
    queries = pd.read_csv(args.dataset / "queries.csv", dtype=str)
    queries = queries[queries["split"] == "dev"]["query"].tolist()
    demo = work / "demo"
    subprocess.run([sys.executable, "-m", "shoprank.cli", "demo", "--out", str(demo)], check=True,
                   stdout=subprocess.DEVNULL)
    started = time.monotonic()
    build_index_in_child({**os.environ, "SHOPRANK_HOME": str(base), "SHOPRANK_CATALOG": str(catalog)})
    shoprank(base, "--store", "big", "index", "--catalog", str(catalog))
    shoprank(base, "--store", "small", "index", "--catalog", str(demo / "products.csv"))
    for _ in range(2):
        shoprank(base, "--store", "small", "train", "ltr", "--dataset", str(demo), "--no-store-features")
    result: dict[str, object] = {"benchmark": "stores", "hardware": hardware(), "command": " ".join(sys.argv),
                                 "setup_s": round(time.monotonic() - started, 1), "rss_gib": {}}
    for stores in ([], ["small"], ["small", "big"]):
        home = link_home(base, work / f"home-{len(stores)}", stores)
        process, url = serve(home, catalog, work / f"serve-{len(stores)}.log")
        try:
            warm(url, ["default", *stores], queries)
            result["rss_gib"]["+".join(["default", *stores])] = rss_gib(process)  # type: ignore[index]
        finally:
            process.terminate()
            process.wait(30)
    rss = result["rss_gib"]
    result["extra_store_gib"] = {"small (2,000 products)": round(rss["default+small"] - rss["default"], 3),  # type: ignore[index]
                                 "big (54,667 products)": round(rss["default+small+big"] - rss["default+small"], 3)}  # type: ignore[index]
    (work / "queries.txt").write_text("\n".join(json.dumps(q) for q in queries))  # wrk's (replicas.wrk)
    home = work / "home-2"
    process, url = serve(home, catalog, work / "serve-load.log")
    latency: dict[str, object] = {}
    try:
        warm(url, ["default", "small", "big"], queries)
        wrk(url, work, 2, 5)
        latency["alone"] = wrk(url, work, 8, args.seconds)
        stop = threading.Event()

        def swaps() -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            version = "v1"
            count = 0
            while not stop.is_set():
                version = "v2" if version == "v1" else "v1"
                httpx.post(f"{url}/v1/stores/small/admin/models/ltr/activate", json={"version": version},
                           headers=headers, timeout=60).raise_for_status()
                count += 1
                stop.wait(2)
            latency["swaps_done"] = count

        def reindex() -> None:
            count = 0
            while not stop.is_set():
                shoprank(home, "--store", "small", "index", "--catalog", str(demo / "products.csv"))
                count += 1
            latency["reindexes_done"] = count

        for name, job in (("while_small_swaps_models", swaps), ("while_small_reindexes", reindex)):
            stop.clear()
            thread = threading.Thread(target=job, daemon=True)
            thread.start()
            latency[name] = wrk(url, work, 8, args.seconds)
            stop.set()
            thread.join(timeout=300)
        default_versions = httpx.get(f"{url}/v1/search", params={"q": "drill"}).json()["versions"]
        latency["default_store_versions_after"] = default_versions
    finally:
        process.terminate()
        process.wait(30)
    result["default_store_under_load"] = latency
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
