"""Dependency aliases: routes ask for what they need by type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.state import EngineHolder
from shoprank.engine import SearchEngine
from shoprank.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_holder(request: Request) -> EngineHolder:
    return request.app.state.engine


def get_engine(request: Request) -> SearchEngine:
    return get_holder(request).get()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
HolderDep = Annotated[EngineHolder, Depends(get_holder)]
EngineDep = Annotated[SearchEngine, Depends(get_engine)]
