"""Dependency aliases: routes ask for what they need by type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.state import ServedHolder
from api.stores import current
from core.settings import Settings
from serving.loading import Served


def get_app_settings(request: Request) -> Settings:
    """The settings of the request's store (its paths: index, models, experiment)."""
    return current(request).settings


def get_holder(request: Request) -> ServedHolder:
    """The served unit of the request's store."""
    return current(request).holder


def get_served(request: Request) -> Served:
    return get_holder(request).get()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
HolderDep = Annotated[ServedHolder, Depends(get_holder)]
ServedDep = Annotated[Served, Depends(get_served)]
