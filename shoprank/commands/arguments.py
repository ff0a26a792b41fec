"""argparse types shared by the commands: depths, shares, files, names and times, checked with a message
that names the bad value and what is allowed. Counts and sizes (``count``, ``positive``,
``positive_number``, ``whole_at_least``, ``random_seed``) are in :mod:`core.arguments`, which the standalone
trainers use too."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.arguments import number, whole, whole_at_least
from core.paths import INDEX_NAME
from ranking.training.data import Fold
from retrieval.encoder import BUNDLED

at_least_100 = whole_at_least(100)  # a retrieval depth: the metrics read 100 deep


def share(text: str) -> float:
    """argparse type for a share: a number from 0 to 1."""
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


def fraction(text: str) -> float:
    """argparse type for a share of a maximum that must hold something: a number in (0, 1]."""
    value = share(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1]")
    return value


def fold(text: str) -> Fold:
    """argparse type for a fold of the queries: ``I/K``."""
    try:
        return Fold.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


MAX_DAYS = 36_500  # a century: pandas' timedeltas hold about 106,000 days


def days(text: str) -> int:
    """argparse type for a window in days: a whole number from 1 to 36500."""
    value = whole(text)
    if value is None or not 1 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days from 1 to {MAX_DAYS}")
    return value


MAX_MINUTES = 525_600  # a year: pandas' timedeltas hold about 292


def minutes(text: str) -> float:
    """argparse type for a span in minutes: a number from 0 to 525600 (a year)."""
    value = number(text)
    if not 0 <= value <= MAX_MINUTES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes from 0 to {MAX_MINUTES} (a year)")
    return value


def out_file(text: str) -> str:
    """argparse type for a file a command writes: not a folder, in a folder that exists."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file to write")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: its folder {str(path.parent)!r} does not exist")
    return text


def out_folder(text: str) -> Path:
    """argparse type for a folder a command writes files into: not a file, made (with its parents) where none is."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; name a folder to write")
    above = next(parent for parent in path.absolute().parents if parent.exists())
    if not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(above)!r} is a file, not a folder; name a folder to write")
    return path


def base_model(text: str) -> str:
    """argparse type for the model a trainer starts from: ``minilm`` (the bundled all-MiniLM-L6-v2) or a model
    folder with its config and fast tokenizer (``config.json``, ``tokenizer.json``), as a trained model's holds."""
    if text == BUNDLED:
        return text
    missing = [name for name in ("config.json", "tokenizer.json") if not (Path(text) / name).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'minilm' (the bundled MiniLM) nor a model folder "
                                         f"(no {' or '.join(missing)} there); give 'minilm' or a folder with "
                                         "config.json and tokenizer.json")
    return text


def index_name(text: str) -> str:
    """argparse type for an index name (a folder under <home>/indexes/)."""
    if not INDEX_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an index name: 1-64 letters, digits, '_', '-' or '.', "
                                         "not starting with '.'")
    return text


def run_name(text: str) -> str:
    """argparse type for a training run's name (a folder under <home>/training/): a name, never a path."""
    if not INDEX_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a run name: 1-64 letters, digits, '_', '-' or '.', "
                                         "not starting with '.' (a name, not a path)")
    return text


def in_file(text: str) -> str:
    """argparse type for a file a command reads: an existing file."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file" + (" (a folder)" if Path(text).is_dir() else ""))
    return text


def timestamp(text: str) -> str:
    """argparse type for a point in time: ISO 8601 (a date, or a date and time; no offset: UTC) that both Python
    and pandas read (the commands read it with pandas, which reads no ISO week date such as ``2026-W44-1``)."""
    from datetime import datetime

    import pandas as pd

    try:
        datetime.fromisoformat(text)
        pd.Timestamp(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (2026-12-01 or 2026-12-01T08:00:00; "
                                         "no week date such as 2026-W44-1)") from None
    return text
