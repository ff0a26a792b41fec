"""argparse types for counts and sizes, checked with a message that names the bad value and what is
allowed: shared by the CLI (:mod:`shoprank.commands.arguments`) and the trainers a GPU box runs alone
(``python -m ranking.training.biencoder|reranker``), which import nothing above ``ranking``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(text: str) -> float:
    """``text`` as a float; NaN (which every range check refuses) when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def count(text: str) -> int:
    """argparse type for a number of items: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def whole_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        value = count(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return value

    return parse


positive = whole_at_least(1)  # a depth, a count of things wanted, epochs, a batch size


def positive_number(text: str) -> float:
    """argparse type for a rate or a size: a finite number > 0."""
    value = number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value
