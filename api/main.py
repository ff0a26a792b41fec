"""The FastAPI app: ``create_app(settings)``; the engine and router load in the lifespan.

Also here: the request-id middleware (``X-Request-ID`` in and out; ``X-Served-By`` names the
host, port and process that answered), request
timing into Prometheus, one structured (JSON) access-log line per request, and
the event log that every search's impression and every interaction goes to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect

from api import errors
from api.admission import Admission, default_shed_at
from api.auth import open_limiter
from api.balance import open_balancer
from api.metrics import Metrics, peer_ready, shared_folder
from api.routes import admin, events, health, products, recommend, search
from api.schemas import TOO_LARGE
from api.state import ServedHolder
from api.stores import StoreRuntime, in_store, other_stores, ready_to_serve
from core import __version__
from core.keys import KeyStore
from core.settings import Settings, get_settings
from online_learning.event_log import EventLog, KafkaSettings, claim_spool
from serving.loading import Served, generation, open_served, pull_artifacts

logger = logging.getLogger(__name__)
access = logging.getLogger("shoprank.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
CLIENT_CLOSED = 499  # the status logged for a client that closed its connection before its request arrived (nginx's)


Loader = Callable[[Settings, Served | None], Served]


def create_app(settings: Settings | None = None, loader: Loader = open_served) -> FastAPI:
    """The API app; ``loader(settings, previous)`` builds the served unit (engine + experiment
    router) in the background at start-up, and again for every hot swap."""
    settings = settings or get_settings()
    metrics = Metrics()
    app = FastAPI(title="ShopRank", version=__version__, lifespan=_lifespan(settings, metrics, loader),
                  summary="Learning-to-rank product search for online stores.")
    app.state.settings = settings
    app.state.keys = KeyStore(settings.paths.keys)
    app.state.limiter = open_limiter(settings)
    limit = settings.serving.max_in_flight
    app.state.admission = Admission(limit, settings.serving.shed_in_flight or default_shed_at(settings.api.processes()),
                                    settings.serving.skip_share)
    app.state.metrics = metrics
    app.state.balancer = open_balancer(None, 1, 0)  # the lifespan opens the processes' shared table
    app.state.served_by = f"{socket.gethostname()}:{settings.api.port}:{os.getpid()}"  # which replica and process
    app.middleware("http")(_request_context)
    if settings.api.cors_origins:  # a storefront page's own scripts call the API (suggestions as the shopper types)
        app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
                           expose_headers=["x-request-id", "x-served-by", "retry-after"], max_age=600)
    errors.install(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        # in asyncio's own threads (it reads the processes' files), not the worker threads searches may all hold
        return Response(await asyncio.to_thread(metrics.exposition), media_type=CONTENT_TYPE_LATEST)

    app.include_router(health.router)
    too_large = {413: TOO_LARGE}  # a body over api.max_body_bytes: refused by the middleware before any route
    for router in (search.router, recommend.router, events.router, admin.router, products.router):
        app.include_router(router, prefix="/v1", responses=too_large)  # the default store
        app.include_router(router, prefix="/v1/stores/{store}", dependencies=[Depends(in_store)], responses=too_large)
    return app


def _open_runtime(settings: Settings, store: str | None, loader: Loader, metrics: Metrics) -> StoreRuntime:
    """One store's served unit (loaded in the background once started), event spool and event log."""
    store_settings = settings.for_store(store)

    def load(previous: Served | None) -> Served:
        return loader(store_settings, previous)

    def stamp() -> str:
        if store is None:  # swaps and experiments published by other replicas or the CLI (an error is logged once
            # and shown by /readyz until a tick pulls again); an index being written here is left for a later tick
            pull_artifacts(settings, wait=False)
        return generation(store_settings)

    def followed(role: str) -> None:  # a swap made elsewhere (the CLI, cron, another process) reached this one
        metrics.swaps.labels(role, "followed").inc()

    holder = ServedHolder(load, stamp, settings.serving.reload_poll_s, followed)
    kafka = KafkaSettings(settings.events.kafka_bootstrap) if settings.events.kafka_bootstrap else None
    spool, spool_lock = claim_spool(store_settings.paths.event_spool)
    return StoreRuntime(store_settings.store_name, store_settings, holder, EventLog(spool, kafka, store=store),
                        spool_lock)


def _lifespan(settings: Settings, metrics: Metrics,
              loader: Loader) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app opens at start (every store's served unit, event log and spool; the live
    metrics; the processes' connection balance) and closes at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a replica builds nothing: it serves what the artifact store holds (when one is configured)
        await asyncio.to_thread(pull_artifacts, settings)
        runtimes = [_open_runtime(settings, None, loader, metrics),
                    *(_open_runtime(settings, name, loader, metrics) for name in other_stores(settings))]
        app.state.stores = {r.name: r for r in runtimes}
        app.state.default_store = runtimes[0].name
        app.state.served = runtimes[0].holder  # the default store's, as the routes without a store use
        app.state.event_log = runtimes[0].event_log
        metrics.watch(lambda: _live_state(runtimes))
        for runtime in runtimes:
            runtime.holder.start()
        folder = shared_folder()
        if folder is not None and settings.api.processes() > 1 and peer_ready(folder):
            # started beside ready peers (respawned after one died): they serve the port while this process
            # loads, and it takes connections once loaded (or failed), rather than answering 503 meanwhile
            logger.info("peers are serving; this process takes connections once its stores are loaded")
            for runtime in runtimes:
                await asyncio.to_thread(runtime.holder.ready.wait)
        # with several server processes on one port: a busier process hands connections back to the kernel.
        # Its slot in the processes' table is claimed once it takes connections: a process still loading would
        # read as the least busy peer (0 connections), and its peers would close connections only to get them back
        app.state.balancer = open_balancer(folder, settings.api.processes(), settings.api.rebalance_margin)
        try:
            yield
        finally:  # each part closed even when one before it fails (queued score writes, the event log)
            for close in (metrics.close, app.state.balancer.close, app.state.limiter.close,
                          *(runtime.close for runtime in runtimes)):
                try:
                    close()
                except Exception:  # noqa: BLE001 - logged; the others still close
                    logger.exception("closing %r at shutdown failed", close)

    return lifespan


async def _request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every request: its id (the caller's ``X-Request-ID`` when it is a plain token), its
    latency in Prometheus, ``X-Served-By``, one JSON access-log line; a busier process of
    several, serving more connections than its peers, closes this one after answering
    (``api.rebalance_margin``). A body is read here, at most ``api.max_body_bytes`` of it
    (413 beyond), before FastAPI parses it or any key is checked."""
    state = request.app.state
    request.state.arrived = time.monotonic()  # a search's budget runs from here, the wait for a thread included
    given = request.headers.get("x-request-id", "")
    request.state.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    # the id a logged search, listing or shelf goes by (its events name it): unique even when a caller sends
    # one X-Request-ID with several requests (a page's trace id), else the consumers would keep one of them
    request.state.event_id = (f"{given}.{uuid.uuid4().hex[:12]}" if request.state.request_id == given
                              else request.state.request_id)
    started = time.perf_counter()
    balance = state.balancer
    connection = _connection(request)
    balance.enter(connection)
    try:
        problem, response = None, None
        try:
            oversized = await errors.read_body(request, state.settings.api.max_body_bytes)
        except ClientDisconnect:  # gone before its body arrived: nothing to answer, but logged and counted
            oversized, response = None, Response(status_code=CLIENT_CLOSED)
        if response is None and not oversized and request.method in ("POST", "PUT", "PATCH") and \
                "json" in request.headers.get("content-type", "").lower():  # a media type is any case
            body = await request.body()
            problem = errors.not_utf8(body) or errors.lone_surrogate(body)
        try:
            if response is None and oversized:
                response = errors.too_large(request, oversized)
            elif response is None:
                response = errors.invalid(request, problem) if problem else await call_next(request)
        except Exception:  # a fault no handler maps: a JSON 500 that is counted and logged like any answer
            logger.exception("request %s failed", request.state.request_id)
            response = errors.internal(request)
    finally:
        rebalance = balance.leave(connection)
    seconds = time.perf_counter() - started
    if rebalance:
        response.headers["connection"] = "close"
        state.metrics.rebalanced.inc()
    elif response.status_code == 503:  # this process cannot serve yet (loading): the client's next try may
        response.headers["connection"] = "close"  # reach a ready peer on the port, not this one again
    path = _route_template(request)
    state.metrics.requests.labels(path, str(response.status_code)).observe(seconds)
    response.headers["x-request-id"] = request.state.request_id
    response.headers["x-served-by"] = state.served_by
    access.info(json.dumps({"request_id": request.state.request_id, "method": request.method, "path": path,
                            "status": response.status_code, "ms": round(seconds * 1e3, 2)}))
    return response


def _connection(request: Request) -> tuple[str, int] | None:
    """The client connection a request came on (address and port); None when unknown, as when a
    trusted proxy's X-Forwarded-For replaced the peer (port 0)."""
    client = request.scope.get("client")
    if not client or not client[1]:
        return None
    return client[0], client[1]


def _route_template(request: Request) -> str:
    """The matched route's path template (``/v1/stores/{store}/search``), for metric labels: FastAPI
    keeps the prefix a router was included with in its effective route context. A request answered
    before routing (a body refused by the middleware) is labelled with the route it would have reached;
    one no route takes, ``unmatched``."""
    context = (request.scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(context, "path", None) or getattr(request.scope.get("route"), "path", None)
    if not path:  # answered before routing (a body the middleware refused): the route it would have reached
        path = errors.route_of(request)
    return str(path) if path else "unmatched"


def _live_state(runtimes: list[StoreRuntime]) -> dict:
    """Event spool figures of every store; readiness as ``/readyz`` says it; caches and versions of the
    default store."""
    state = {"spool_pending": sum(r.event_log.pending() + r.event_log.orphan_pending for r in runtimes),
             "shipped": sum(r.event_log.shipped for r in runtimes), "ready": ready_to_serve(runtimes[0], runtimes)}
    try:
        engine = runtimes[0].holder.get().engine
    except Exception:  # noqa: BLE001 - not loaded yet
        return state
    return state | {"caches": engine.cache_stats(), "versions": engine.versions, "batchers": engine.batchers}


def app_from_env() -> FastAPI:
    """The app of one server process when ``shoprank serve`` runs several (settings from the environment),
    logging as the command does (a worker is a fresh process: without this it would log nothing)."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)
