"""Settings of a running service: search deadlines, caches and shedding (``serving``), where events
go (``events``), the HTTP server (``api``) and where batch jobs run (``compute``). Sections of
:class:`core.settings.Settings`, beside the stages' own in that module."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from core.hardware import usable_cores

STAGE_BUDGETS_MS = {"student": 600.0, "teacher": 900.0, "ltr": 200.0, "rules": 100.0}  # serving.stage_budgets_ms


def redis_url(value: str) -> str:
    """``value`` when Redis's client can read it as a URL; else the error naming the form to give."""
    try:
        from redis.connection import parse_url
    except ImportError:  # without the redis extra the store cannot open anyway: it says so then
        return value
    try:
        parse_url(value)
    except ValueError as error:
        raise ValueError(f"not a Redis URL ({error}); give redis://HOST:PORT/DB") from None
    return value


def check_kafka_bootstrap(value: str) -> str:
    """``value`` when it is a Kafka bootstrap list as Kafka's clients read it, ``HOST[:PORT][,HOST[:PORT]...]``
    (the port 9092 when left out, an IPv6 host in brackets before a port, a leading ``PLAINTEXT://`` or other
    protocol ignored); else the error naming the bad entry and the form to give."""
    for entry in value.split(","):
        address = re.sub(r"^[A-Za-z_]+://", "", entry.strip())
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None if not rest else "x"
        elif address.count(":") == 1:
            host, port = address.split(":")
        else:  # a name, or a bare IPv6 address: Kafka's default port
            host, port = address, None
        if not host or any(c.isspace() or c in "[]/" for c in host) or (
                port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(f"{entry.strip()!r} of {value!r} is not HOST[:PORT] (a port 1-65535): give "
                             "HOST:PORT[,HOST:PORT...], e.g. 127.0.0.1:9092")
    return value


# a Redis the service connects to (the score store, the rate limits' buckets)
RedisUrl = Annotated[str, StringConstraints(pattern=r"^(redis|rediss|unix)://"), AfterValidator(redis_url)]


class ServingSettings(BaseModel):
    """Deadlines, batching and caches of /v1/search."""

    model_config = ConfigDict(extra="forbid")

    budget_ms: float = Field(1500, gt=0, description="Time for the ranking stages of one search.")
    stage_budgets_ms: dict[Literal["student", "teacher", "ltr", "rules"], Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: dict(STAGE_BUDGETS_MS),
        description="Per-stage deadline in ms (student, teacher, ltr, rules; each > 0); a stage past it is "
                    "skipped (degraded). The stages not given keep their defaults.")

    @field_validator("stage_budgets_ms")
    @classmethod
    def _with_defaults(cls, value: dict[str, float]) -> dict[str, float]:
        return {**STAGE_BUDGETS_MS, **value}
    micro_batch: bool = Field(True, description="Batch cross-encoder work across concurrent requests.")
    micro_batch_wait_ms: float = Field(2.0, ge=0, le=100, description="Longest wait for other requests' pairs.")
    micro_batch_pairs: int = Field(256, ge=1, le=10_000, description="Most pairs in one micro-batch.")
    score_cache_size: int = Field(200_000, ge=0, description="(query, product) cross-encoder scores kept.")
    score_store: Literal["memory", "local", "redis"] = Field(
        "local", description="Shared tier behind the in-memory score cache, kept across restarts: 'local' (a "
        "sqlite file under the artifact home, shared by the server processes of one machine), 'redis' "
        "(score_store_url, shared by replicas) or 'memory' (none: each process keeps its own scores).")
    score_store_url: RedisUrl = Field("redis://127.0.0.1:6379/0", description="Redis of the score store when "
                                      "score_store is 'redis' (redis://HOST:PORT/DB).")

    score_store_timeout_ms: float = Field(50.0, gt=0, le=10_000, description="Longest wait for one read of the "
                                          "score store; past it the search scores the pairs itself.")
    score_store_retry_s: float = Field(30.0, ge=0, le=3600, description="After a score store error, seconds "
                                       "it is left alone (searches score the pairs) before it is tried again; "
                                       "errors are logged at most once per this interval.")
    score_store_queue: int = Field(10_000, ge=1, le=1_000_000, description="Scores waiting to be written to "
                                   "the store at most (in the background); more are dropped (counted).")
    score_store_ttl_days: float = Field(30.0, ge=0, le=3650, description="Days a stored score is kept (Redis: "
                                        "key expiry; local: pruned by `shoprank warm-scores`). 0: forever.")
    # On 2 cores (EPYC, head-heavy stream, 5,000 warmed heads): the store answered 60-77% of the list lookups, a
    # ranked search's first stage fell from 17.5 to 1.2-1.3 ms at the median at 8 connections; throughput moved
    # within the runs' spread and the p95 tied (benchmarks/RESULTS.md, "First-stage lists kept").
    sort_depth: int = Field(100, ge=1, le=1000, description="A search sorted by price (sort: price_asc | "
                            "price_desc) sorts its this many most relevant products, and shows no more.")
    facts_refresh_s: float = Field(60.0, gt=0, le=86_400, description="Product facts for filters (category, "
                                   "brand, price, stock) are re-read from the feature reader's cache this often, "
                                   "in the background, and again once its rows older than features.product_ttl_s "
                                   "are read again from the store (ranking/facts.py).")
    first_stage_cache_size: int = Field(500, ge=0, le=1_000_000, description="First-stage lists kept in "
                                        "memory per server process (LRU; each ~40 KB at the default "
                                        "ranking.first_stage_depth of 1000): a "
                                        "query's retrieval depends only on the query, the catalog, the encoder "
                                        "and the retrieval settings, so it is kept until the catalog changes. "
                                        "0: none in memory.")
    shared_first_stage: bool = Field(True, description="First-stage lists are also kept in the score store "
                                     "(score_store 'local' or 'redis'), where every server process, replica "
                                     "and restart reads them and the nightly `shoprank warm-scores` writes the "
                                     "head queries'.")
    results_cache_size: int = Field(10_000, ge=0, description="Result pages kept (LRU; 0: no results cache).")
    results_ttl_s: float = Field(60.0, ge=0, description="How long a cached result list is served.")
    shared_results: bool = Field(True, description="Result pages are also kept in the score store "
                                 "(score_store 'local' or 'redis'), so one ranked by a server process is served "
                                 "by the others (and replicas) until results_ttl_s after it was ranked.")
    reload_poll_s: float = Field(2.0, ge=0, le=3600, description="Seconds between checks of the shared state "
                                 "(active model versions, experiment); a change made by another server process "
                                 "or the CLI is loaded within this time. 0: never check.")
    shadow_queue: int = Field(64, ge=1, le=10_000, description="Shadow searches waiting at most; more are "
                              "dropped (counted) so shadow scoring never slows serving.")
    # One per two cores (was two per core): a full-depth teacher batch already uses every core. On 2 cores, with
    # shed_depth 5, the head-heavy stream's p95 at 8 connections was 186-192 ms at 4, 152-163 at 2 and 140-145 at 1,
    # none skipping the teacher (benchmarks/RESULTS.md, "The full pipeline under two query streams").
    shed_in_flight: int = Field(0, ge=0, le=1024, description="Searches in flight per server process above "
                                "which new ones are shed: their cross-encoders re-rank from cached scores, or "
                                "only their top shed_depth (0: skipped, served in LambdaMART / first-stage "
                                "order, marked degraded), instead of queueing behind the model. 0: one per "
                                "two of the process's share of the cores (at least one).")
    # Measured on the Home Depot catalog (benchmarks/RESULTS.md, "The full pipeline under two query streams" and
    # "What an overloaded search loses"): at 5 (in-flight limit 4), no search skipped the teacher at 8 or 32
    # connections where 0 skipped it on 12-95% of them, at similar p95; a top-5 teacher keeps two thirds of what the
    # teacher adds.
    shed_depth: int = Field(5, ge=0, le=1000, description="A search admitted over shed_in_flight whose "
                            "cross-encoder scores are not all cached still has its top shed_depth scored by "
                            "each cross-encoder stage (marked degraded 'shallow (top N), overload' where the stage "
                            "would score more, so its page is not cached; 0: the stage is skipped, marked "
                            "degraded).")
    # On 2 cores (EPYC, head-heavy stream, 1,000 warmed heads), three pairs of runs: at 0.04 the 8-connection level
    # served 139-144 searches/s at p95 204-206 ms against 120-125 at 224-233 ms off (runs with the connections split
    # evenly over the processes), 32 connections 165-182 against 140-172 /s, the 50/s open loop's p95 108-117 against
    # 126-177 ms; 4.0-4.1% degraded. With 5,000 warmed heads (fewer searches run the model) it tied
    # (benchmarks/RESULTS.md, "A degrade budget").
    skip_share: float = Field(0.04, ge=0, le=1, description="Degrade budget: the share of searches, at most, "
                              "that skip a cross-encoder whose scores they find uncached while another search is "
                              "in flight in the same process (served in LambdaMART / first-stage order, marked "
                              "degraded 'shed, budget'), so the searches that would run the model under load stop "
                              "setting the p95. Per server process, counted over every search it admits. 0: off.")
    # On 2 cores (EPYC, head-heavy stream, 5,000 warmed heads), three runs at 5 against three at 0, alternated: at
    # 8 connections the teacher stage's p95 fell from 98-124 to 63-75 ms while first stage and LambdaMART slowed,
    # so the searches' p95 tied (151-178 against 151-185 ms), as did throughput; the 50/s open loop's p95 was
    # 13-18 ms lower in each pair (68-82 against 82-95 ms). Off by default: niced searches also yield to any
    # other job on the machine (benchmarks/RESULTS.md, "Search threads below the model").
    search_nice: int = Field(0, ge=0, le=19, description="Nice levels by which the threads that answer "
                             "searches run below the cross-encoders' micro-batch threads (Linux, with "
                             "micro_batch): under load the model's work gets the cores first; the rest of every "
                             "search waits a little longer. 0: off.")
    shed_wait_ms: float = Field(0.0, ge=0, le=60_000, description="A search whose cross-encoder pairs would not "
                                "all be scored within this time (the pairs queued ahead of them and its own, at the "
                                "model's recent pairs a second) skips that stage (served in LambdaMART / first-stage order, marked "
                                "degraded 'shed, queue'); needs micro_batch. 0: off.")
    shed_past_deadline: bool = Field(True, description="A search whose cross-encoder pairs would not all be "
                                     "scored before the stage's deadline (stage_budgets_ms, or what is left of "
                                     "budget_ms; same estimate as shed_wait_ms) skips that stage at once (degraded "
                                     "'shed, queue') instead of waiting for the deadline and skipping it then, so "
                                     "its pairs leave the model to the searches it can still serve; needs "
                                     "micro_batch. Off: such a search waits, and times out at the deadline.")
    math_threads: int = Field(1, ge=0, le=64, description="Threads of the math libraries in a server process "
                              "(OpenMP in FAISS, OpenBLAS in NumPy). Searches run side by side, so one each: more "
                              "spin and oversubscribe the cores (benchmarks/RESULTS.md, 'Replicas'). 0: the "
                              "libraries' default (one per core). OMP_NUM_THREADS in the environment wins.")
    max_in_flight: int = Field(0, ge=0, le=1024, description="Searches ranked at once per worker; more wait "
                               "(their deadline keeps running), and one still waiting at its deadline (budget_ms) "
                               "is refused with 503 and Retry-After. 0: no limit.")


class EventSettings(BaseModel):
    """Where events go: a durable local log, shipped to Kafka when configured."""

    model_config = ConfigDict(extra="forbid")

    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; None = log on disk only.")
    log_impressions: bool = Field(True, description="Log a ranking event for every search.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str | None) -> str | None:
        # blank: no Kafka, as unset (a compose file's `=${KAFKA:-}`)
        return None if value is None or not value.strip() else check_kafka_bootstrap(value)


class ApiSettings(BaseModel):
    """The HTTP server: address, admin token, server processes."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Bind address: an IP address or host name, e.g. 127.0.0.1 (this "
                      "machine only) or 0.0.0.0 (every IPv4 interface); never empty.")

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        # uvicorn binds an empty address to every interface, IPv4 and IPv6: a setting left blank must not expose
        # the server
        if not host.strip() or any(c.isspace() for c in host):
            raise ValueError(f"{host!r} is not a bind address: give an IP address or host name, e.g. 127.0.0.1 "
                             "(this machine only) or 0.0.0.0 (every IPv4 interface)")
        return host

    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    admin_token: str | None = Field(None, description="Bearer token of /v1/admin (unset: admin disabled unless "
                                    "keys are required and an admin-scope key is sent).")
    cors_origins: list[str] = Field(default_factory=list, description="Web pages' origins whose scripts may call the "
                                    "API from a browser (CORS: search, suggest, browse, recommend, events), e.g. "
                                    "[\"https://shop.example.com\"]; [\"*\"]: any. Empty: none (a storefront's "
                                    "backend, or a proxy on the page's own origin, calls it).")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin: give scheme://host[:port] (no path), or *")
        return origins

    keys_required: bool = Field(False, description="Require an API key (`shoprank keys create`) on search, events "
                                "and admin: 401 without one, 403 for another store or scope. Off for local runs; "
                                "on in production (docs/operations.md).")
    rate_limit_per_s: float = Field(0.0, ge=0, le=100_000, description="Requests per second each key may make "
                                    "(a token bucket, in each server process or shared: rate_limit_store); over "
                                    "it: 429 with Retry-After. 0: no limit.")
    rate_burst: int = Field(20, ge=1, le=100_000, description="Requests a key may make at once above its rate.")
    rate_limit_store: Literal["process", "redis"] = Field(
        "process", description="Where a key's bucket is kept: 'process' (each server process has its own, so a key "
        "may make the rate once per process and replica) or 'redis' (rate_limit_url, one bucket per key shared by "
        "every process and replica; while Redis does not answer, each process falls back to its own bucket).")
    rate_limit_url: RedisUrl = Field("redis://127.0.0.1:6379/0", description="Redis of the shared buckets when "
                                     "rate_limit_store is 'redis' (redis://HOST:PORT/DB).")
    # the largest valid batches: 1,000 events with every field at its longest and its text sent as \uXXXX escapes
    # measured 3.4 MiB (0.8 MiB as plain ASCII), 1,000 product updates 1.5 MiB
    max_body_bytes: int = Field(8 * 2**20, ge=1024, le=2**31, description="Largest request body in bytes: a "
                                "larger Content-Length is refused with 413 before the body is read (before the "
                                "key check too), and a body sent in chunks once it passes this. The default holds "
                                "the largest valid batch of events or product updates twice over; raise it for "
                                "larger admin bodies (rules or synonyms of more than 8 MiB as JSON).")

    workers: int = Field(0, ge=0, le=64, description="Server processes of `shoprank serve`; each loads its own "
                         "engine (index and models) and they share the artifact home. 0: one per usable core.")
    # measured on 2 cores (benchmarks/RESULTS.md, server processes): at 1 the uniform stream's 8 connections
    # split 50/50 in every run (0-11 connections closed a level) instead of up to 63/37, and p95 stayed at
    # 211-233 ms where the uneven runs of the kernel's split reached 257-268
    rebalance_margin: int = Field(1, ge=0, le=1024, description="With several server processes: one serving "
                                  "more than this many client connections above its least busy peer (a "
                                  "connection counts while a request on it is in flight and for 2 s after) "
                                  "closes the one it has just answered (Connection: close). The client opens a "
                                  "new one, which the process that accepts first takes; the kernel keeps a "
                                  "keep-alive connection on the process that accepted it, and a pool opened at "
                                  "once often lands on one. 0: off.")

    worker_start_s: float = Field(120.0, gt=0, le=3600, description="With several server processes: how long "
                                  "a process started by a rolling restart (SIGHUP to `shoprank serve`) may take "
                                  "to load before the restart is given up. It takes connections only once "
                                  "loaded while its peers serve, so a rolling restart never answers 503.")

    def processes(self) -> int:
        """Server processes ``shoprank serve`` runs: ``workers``, or one per usable core."""
        return self.workers or usable_cores()


class ComputeSettings(BaseModel):
    """Where the batch jobs run (catalog encoding, LambdaMART training, reading the event log)."""

    model_config = ConfigDict(extra="forbid")

    scheduler: str | None = Field(None, description="None: in this process, no Dask. 'local': a Dask cluster of "
                                  "processes on this machine, started by the job. 'tcp://HOST:8786': the running "
                                  "dask.distributed scheduler at that address.")
    workers: int = Field(0, ge=0, le=256, description="Worker processes of a 'local' cluster (0: one per core).")
    partitions: int = Field(0, ge=0, le=100_000, description="Partitions a job splits its input into (0: 2 per "
                            "worker).")
