"""Liveness and readiness probes."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import HolderDep
from api.schemas import Health
from core.hardware import cpu

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok", pid=os.getpid(), cpu=cpu().as_dict())


@router.get("/readyz", response_model=Health, summary="Readiness: index and models loaded",
            responses={503: {"model": Health}})
def readyz(holder: HolderDep) -> Health | JSONResponse:
    if holder.ready.is_set() and holder.error is None:
        return Health(status="ready", pid=os.getpid(), versions=holder.get().engine.versions)
    detail = holder.error or "loading index and models"
    return JSONResponse(status_code=503, content=Health(status="not_ready", detail=detail, pid=os.getpid()).model_dump())
