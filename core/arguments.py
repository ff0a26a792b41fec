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


def whole(text: str) -> int | None:
    """``text`` as a whole number; None when it is not one."""
    try:
        return int(text)
    except ValueError:
        return None


def whole_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        value = whole(text)
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return value

    return parse


count = whole_at_least(0)  # a number of items
positive = whole_at_least(1)  # a depth, a count of things wanted, epochs, a batch size

SEEDS = 2**32  # numpy's global generator (np.random.seed) takes a seed from 0 to 2**32 - 1


def random_seed(text: str) -> int:
    """argparse type for a random seed: a whole number from 0 to 2**32 - 1."""
    value = whole(text)
    if value is None or not 0 <= value < SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: a whole number from 0 to {SEEDS - 1}")
    return value


def positive_number(text: str) -> float:
    """argparse type for a rate or a size: a finite number > 0."""
    value = number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def non_negative_number(text: str) -> float:
    """argparse type for a weight that may be off: a finite number >= 0."""
    value = number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value
