"""What the cross-encoder score cache saves per search: cold, local store, Redis, in-memory LRU.

For ``--queries`` judged queries of a demo store, times the served pipeline's
teacher stage (scoring its top ``ranking.teacher_depth`` = 20 pairs, micro-batcher
included) per search when every pair is

- **cold**: scored by the model (``serving.score_store=memory``, caches emptied first);
- **local**: read from the sqlite score store (warmed, then a fresh engine: empty LRU);
- **redis**: read from Redis (a ``redis-server`` started on 127.0.0.1, a free port);
- **lru**: read from the engine's in-memory LRU (the same search again);

then the p50/p95 of one store read of 20 keys (``get_many``) and the bytes each
stored pair takes (sqlite file / rows; Redis ``used_memory`` / keys).

The model is the registry's active ``reranker`` of ``--home`` when there is one;
otherwise a stand-in with the teacher's shape and cost is registered in a temporary
home: MiniLM-L6 (6 layers, the bundled bi-encoder's weights) with an untrained
head, exported to ONNX int8 (its scores are meaningless; its cost is the teacher's).

    python benchmarks/score_cache.py [--home DIR] [--queries 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles
from core.query import Query
from core.registry import ModelRegistry
from core.settings import Settings
from evaluation.dataset import load_dataset
from ranking.score_store import score_key, text_hash
from serving.engine import SearchEngine, served_tag
from serving.loading import open_engine, served_precision
from simulation.demo import write_demo


def stand_in_teacher(folder: Path) -> Path:
    """MiniLM-L6 with an untrained scoring head, exported to ONNX (fp32 and int8)."""
    from transformers import AutoTokenizer

    from ranking.cross_encoder import export
    from ranking.cross_encoder_net import PairScorer
    from retrieval.encoder import resolve_model_dir

    base = resolve_model_dir("minilm")
    PairScorer.from_base(base).save(folder)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(folder)
    export(folder)
    return folder


def with_store(settings: Settings, kind: str, url: str | None = None) -> Settings:
    update = {"score_store": kind} | ({"score_store_url": url} if url else {})
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=update)})


def teacher_ms(engine: SearchEngine, queries: list[str], clear: bool) -> list[float]:
    """Seconds the teacher stage took per search (``clear``: LRUs emptied before each)."""
    out = []
    for query in queries:
        if clear:
            engine.clear_caches()
        out.append(engine.search(query, 10).timings["teacher"])
    return out


def read_ms(engine: SearchEngine, queries: list[str], depth: int) -> list[float]:
    """Seconds of one batched store read of the ``depth`` keys a search looks up."""
    store, tag = engine.caches.store, served_tag(engine.teacher, engine.settings.ranking)  # type: ignore[arg-type]
    assert store is not None and tag is not None  # opened with a store and a registered model
    first = engine.pipeline("hybrid")
    out = []
    for query in queries:
        analyzed = first.analyze(Query(query)).text  # type: ignore[attr-defined]
        docs = first.search(query, depth).docs
        keys = [score_key(tag, analyzed, engine.index.product_id(int(d)), text_hash(engine.index.title(int(d))))
                for d in docs]
        started = time.perf_counter()
        store.get_many(keys)
        out.append(time.perf_counter() - started)
    return out


def timed_store(settings: Settings, queries: list[str], depth: int) -> tuple[list[float], list[float], SearchEngine]:
    """Warm the store with every query (one engine), then time a fresh engine reading it."""
    warm = open_engine(settings, warm_features=False)
    teacher_ms(warm, queries, clear=False)
    warm.close()  # flushes the queued writes
    engine = open_engine(settings, warm_features=False)
    teacher_ms(engine, queries[:5], clear=True)  # warm-up: ONNX session, store connection
    seconds = teacher_ms(engine, queries, clear=True)
    return seconds, read_ms(engine, queries, depth), engine


@contextlib.contextmanager
def redis_server(folder: Path):  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="use this home's active reranker and index")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="score-cache-"))
    base = Settings(progress=False, **({"home": args.home} if args.home else {}))
    entry = ModelRegistry(base.paths.models).active("reranker")
    if entry is not None:
        model = f"registered reranker {entry.version} of {base.home} ({entry.params.get('layers', '?')} layers)"
        settings = base
    else:  # a temporary home sharing the cache (encoder export, product vectors), with the stand-in
        home = work / "home"
        home.mkdir()
        (home / "cache").symlink_to(base.paths.cache.resolve(), target_is_directory=True)
        settings = base.model_copy(update={"home": home, "catalog": None})
        ModelRegistry(settings.paths.models).register("reranker", stand_in_teacher(work / "teacher"),
                                                      base_model="minilm", activate=True)
        model = "stand-in teacher: MiniLM-L6, 6 layers, untrained head (no trained teacher registered)"
    settings = settings.model_copy(update={"ranking": settings.ranking.model_copy(update={"student": "none"})})
    depth = settings.ranking.teacher_depth
    demo = write_demo(work / "demo", n_products=2000, n_queries=max(args.queries, 50))
    queries = [q for _, q in load_dataset(demo).select("dev")] + [q for _, q in load_dataset(demo).select("train")]
    queries = list(dict.fromkeys(queries))[: args.queries]
    if args.home is None:
        settings = settings.model_copy(update={"catalog": demo / "products.csv"})

    memory = open_engine(with_store(settings, "memory"), warm_features=False)
    teacher_ms(memory, queries[:5], clear=True)  # warm-up: ONNX sessions, threads, allocator
    cold = teacher_ms(memory, queries, clear=True)
    teacher_ms(memory, queries, clear=False)
    lru = teacher_ms(memory, queries, clear=False)
    memory.close()

    local, local_reads, engine = timed_store(with_store(settings, "local"), queries, depth)
    path = settings.paths.score_store
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    engine.close()
    local_bytes = path.stat().st_size / max(stored, 1)

    redis, redis_reads, redis_bytes = None, None, None
    if shutil.which("redis-server"):
        with redis_server(work) as url:
            import redis as redis_py

            client = redis_py.Redis.from_url(url)
            before = int(client.info("memory")["used_memory"])
            seconds, reads, engine = timed_store(with_store(settings, "redis", url), queries, depth)
            keys = client.dbsize()
            redis_bytes = (int(client.info("memory")["used_memory"]) - before) / max(keys, 1)
            engine.close()
            redis, redis_reads = percentiles(seconds), percentiles(reads)

    result = {
        "benchmark": "score_cache", "hardware": hardware(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": model, "precision": served_precision(settings), "queries": len(queries),
        "pairs_per_search": depth, "micro_batch": settings.serving.micro_batch,
        "teacher_stage_ms_per_search": {"cold (model scores 20 pairs)": percentiles(cold),
                                        "local sqlite store": percentiles(local),
                                        "redis store": redis or "redis-server not installed",
                                        "in-memory LRU": percentiles(lru)},
        "store_read_ms_20_keys": {"local sqlite": percentiles(local_reads), "redis": redis_reads},
        "bytes_per_stored_pair": {"local sqlite": round(local_bytes), "redis": round(redis_bytes) if redis_bytes else None},
        "stored_pairs": stored,
    }
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
