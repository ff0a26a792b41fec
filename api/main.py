"""The FastAPI app: ``create_app(settings)``; the engine loads in the lifespan."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api import errors
from api.routes import health, search
from api.state import EngineHolder
from shoprank import __version__
from shoprank.engine import SearchEngine
from shoprank.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def load_engine(settings: Settings) -> SearchEngine:
    """Load (building on first run) the served index and the query encoder."""
    from shoprank import artifacts

    encoder = artifacts.open_encoder(settings)
    index = artifacts.ensure_served_index(settings, encoder)
    engine = SearchEngine.open(index, encoder, settings)
    logger.info("serving index %s: %d products", index.path, index.count)
    return engine


def create_app(settings: Settings | None = None,
               loader: Callable[[Settings], SearchEngine] = load_engine) -> FastAPI:
    """The API app; ``loader`` builds the engine in the background at start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder = EngineHolder(lambda: loader(settings))
        app.state.engine = holder
        holder.start()
        yield

    app = FastAPI(
        title="ShopRank",
        version=__version__,
        summary="Learning-to-rank product search for online stores.",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        response = await call_next(request)
        response.headers["x-request-id"] = request.state.request_id
        return response

    errors.install(app)

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        # models validated inside a route (GET /v1/search) report like body validation
        return await app.exception_handlers[RequestValidationError](
            request, RequestValidationError(exc.errors(include_url=False)))

    app.include_router(health.router)
    app.include_router(search.router)
    return app
