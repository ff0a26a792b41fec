"""Liveness and readiness probes.

Both are ``async``: they answer on the event loop, needing none of the worker threads that
searches and events run in, so a probe answers while every thread is busy. Both take HEAD as
well as GET (a load balancer's check may send either).
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.schemas import Health
from api.state import ServedHolder
from api.stores import ready_to_serve
from core.hardware import cpu, usable_cores
from serving.indexing import server_threads
from serving.loading import served_precision

router = APIRouter(tags=["health"])
NOT_READY_RETRY_S = 2  # as a route's 503 while its store loads (NotReady)


# HEAD answers as GET does (monitors probe with it); each method its own operation id in the OpenAPI document
@router.head("/healthz", include_in_schema=False, response_model=None)
@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz(request: Request) -> Health:
    settings = request.app.state.settings
    served = {"cross_encoder_precision": served_precision(settings)}  # ranking.precision, auto resolved here
    return Health(status="ok", pid=os.getpid(), cpu=cpu().as_dict() | served,
                  server={"processes": settings.api.processes(), "usable_cores": usable_cores(),
                          "onnx_threads": server_threads(settings)})


def _state(holder: ServedHolder) -> str:
    if not holder.ready.is_set():
        return "loading"
    return f"failed: {holder.error}" if holder.error else "ready"


@router.head("/readyz", include_in_schema=False, response_model=None)
@router.get("/readyz", response_model=Health, summary="Readiness: index and models loaded",
            responses={503: {"model": Health, "description": "Loading, or failed to load; Retry-After"}})
async def readyz(request: Request) -> Health | JSONResponse:
    """Ready when the default store is loaded and every other store finished loading (a store
    that failed is named in ``stores`` and answers 503 itself; the others serve)."""
    runtimes = request.app.state.stores
    holder = runtimes[request.app.state.default_store].holder
    stores = {name: _state(runtime.holder) for name, runtime in runtimes.items()}
    if ready_to_serve(runtimes[request.app.state.default_store], runtimes.values()):
        failed = {name: r.holder.reload_error for name, r in runtimes.items() if r.holder.reload_error}
        return Health(status="ready", pid=os.getpid(), versions=holder.get().engine.versions, stores=stores,
                      reload_errors=failed or None)
    detail = holder.error or "loading index and models"
    return JSONResponse(status_code=503, headers={"Retry-After": str(NOT_READY_RETRY_S)},
                        content=Health(status="not_ready", detail=detail, pid=os.getpid(), stores=stores).model_dump())
