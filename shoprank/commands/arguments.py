"""argparse types shared by the commands: counts, depths and shares, checked with a message
that names the bad value and what is allowed."""

from __future__ import annotations

import argparse
import math

from ranking.training.data import Fold


def count(text: str) -> int:
    """argparse type for a number of items: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def positive(text: str) -> int:
    """argparse type for a depth: a whole number >= 1."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def share(text: str) -> float:
    """argparse type for a share: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


def weight(text: str) -> float:
    """argparse type for a loss weight: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def fold(text: str) -> Fold:
    """argparse type for a fold of the queries: ``I/K``."""
    try:
        return Fold.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
