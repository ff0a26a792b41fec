"""What the ``shoprank train`` commands share: the dev sample they select on, the first stage
that mines their negatives, and a model trained on another machine (``--export`` / ``--trained``)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InvalidInput, NotFound
from core.registry import ModelRegistry, ModelVersion
from core.settings import Settings
from evaluation.dataset import EvalDataset
from retrieval.encoder import BUNDLED
from shoprank.commands.arguments import out_file

if TYPE_CHECKING:  # serving loads FAISS: imported where used, after `shoprank serve` set its OpenMP threads
    from serving.engine import SearchEngine


def dev_sample(dataset: EvalDataset, split: str, size: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """A fixed sample of queries with signal (>= 2 judged, >= 2 distinct grades); InvalidInput where the split
    has none (every epoch would score NaN, and model selection would keep the first)."""
    from ranking.training.data import groups_from

    groups = [g for g in groups_from(dataset, split, 2) if len(set(g.judged.values())) > 1]
    if not groups:
        raise InvalidInput(f"the dev split {split!r} has no query to select the best epoch on: that needs a query "
                           "with >= 2 judged products of >= 2 distinct grades (products all graded alike rank "
                           "as well in any order); give another --dev-split")
    random.Random(seed).shuffle(groups)
    return groups[:size]


def first_stage(settings: Settings, dataset: EvalDataset) -> SearchEngine:
    """An engine over the dataset's catalog without the registered models (mining negatives)."""
    from serving.loading import open_engine

    return open_engine(settings, dataset.products, models=False)


def teacher_model(settings: Settings, version: str, missing: str) -> ModelVersion:
    """The reranker a student or a bi-encoder learns from: ``version``, "active" or "vN" (NotFound
    with ``missing`` where no reranker is active; one not registered names those that are)."""
    registry = ModelRegistry(settings.paths.models)
    teacher = registry.active("reranker") if version == "active" else registry.get("reranker", version)
    if teacher is None or teacher.path is None:
        raise NotFound(missing)
    return teacher


def base_label(args: argparse.Namespace, summary: dict) -> str:
    """The base model a manifest names: --base; for a model trained elsewhere, else the folder its
    training named (a path on that machine); else the bundled MiniLM."""
    if args.base is not None:
        return args.base
    if args.trained is not None:
        return str(summary.get("config", {}).get("base_model") or BUNDLED)
    return BUNDLED


def add_elsewhere_arguments(p: argparse.ArgumentParser, kind: str, written: str, needs: str) -> None:
    """``--device``, and ``--export`` / ``--trained`` (read by :func:`trained`): train a ``kind`` model
    on another machine from the ``written`` examples, with Python packages ``needs`` there."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train: auto (a CUDA GPU when torch sees one, default), cpu or cuda")
    p.add_argument("--export", type=lambda text: Path(out_file(text)), default=None, metavar="FILE",
                   help=f"mine the negatives and write {written} to FILE (gzipped JSON) instead of training: "
                        f"`python -m ranking.training.{kind} FILE --out FOLDER` trains from it on any machine with "
                        f"{needs} (a GPU box)")
    p.add_argument("--trained", type=Path, default=None, metavar="FOLDER",
                   help="register FOLDER, trained from an --export file, instead of training here")


def check_work_folder(work: Path, settings: Settings) -> None:
    """A folder a training command may empty and fill: a folder (or none yet), not the artifact home or one
    holding it (else an InvalidInput naming it). For a folder given by hand (``train reranker --work-dir``);
    one named by ``--run-name`` is under ``<home>/training/`` by construction."""
    into, home = work.resolve(), settings.home.resolve()
    if into == home or into in home.parents:
        raise InvalidInput(f"the work folder {work} is (or holds) the artifact home {settings.home}: give a folder of "
                           "its own, e.g. under <home>/training/ (its contents are replaced)")
    if into.exists() and not into.is_dir():
        raise InvalidInput(f"the work folder {work} is a file: give a folder")


def own_training_folder(settings: Settings, name: str) -> Path:
    """A work folder under ``<home>/training/`` named ``name`` and this process and moment, so no other run,
    nor a local run's checkpoint (``<kind>-<run name>``), is in it; the caller removes it when done."""
    return settings.paths.training(f"{name}-{os.getpid()}-{time.time_ns()}")


def missing_files(folder: Path, needs: tuple[str, ...]) -> list[str]:
    """The names of ``needs`` that ``folder`` does not hold: a name ending in / is a folder, ``a|b`` either file."""
    def held(name: str) -> bool:
        if name.endswith("/"):
            return (folder / name).is_dir()
        return any((folder / one).is_file() for one in name.split("|"))

    return [name.replace("|", " or ") for name in needs if not held(name)]


def trained(args: argparse.Namespace, settings: Settings, work: Path, kind: str,
            train_here: Callable[[argparse.Namespace, Settings, Path], dict | None],
            needs: tuple[str, ...], keys: tuple[str, ...] = ()) -> tuple[dict, dict, Path] | None:
    """The training summary, manifest params and folder of a ``kind`` model: trained here into ``work``, or
    trained elsewhere from an --export file (--trained), its folder copied into one of this run's own under
    ``<home>/training/`` (never ``work``, where a local run of the name keeps its checkpoint), which the caller
    removes once registered; None with --export."""
    if args.trained is None:
        summary = train_here(args, settings, work)
        return None if summary is None else (summary, dict(summary["config"]) | {"split": args.split}, work)
    missing = missing_files(args.trained, needs)
    if missing:
        raise InvalidInput(f"--trained {args.trained}: no {' and '.join(missing)} there; give the folder that "
                           f"`python -m ranking.training.{kind} FILE --out FOLDER` wrote")
    copy = own_training_folder(settings, f"{kind}-trained")
    if copy.resolve().is_relative_to(args.trained.resolve()):  # the copy would copy itself
        raise InvalidInput(f"--trained {args.trained} holds this command's work folder {copy.parent}: "
                           "give the folder the training wrote, anywhere else")
    try:
        summary = json.loads((args.trained / "train_summary.json").read_text())
    except (ValueError, OSError) as error:
        raise InvalidInput(f"--trained {args.trained}: train_summary.json cannot be read ({error}); give the folder "
                           f"that `python -m ranking.training.{kind} FILE --out FOLDER` wrote") from None
    if not isinstance(summary, dict) or not set(keys) <= set(summary):
        raise InvalidInput(f"--trained {args.trained}: train_summary.json is not a summary `python -m ranking.training."
                           f"{kind}` writes (a JSON object with {', '.join(keys) or 'its figures'})")
    shutil.copytree(args.trained, copy)
    params = {k: v for k, v in summary.get("config", {}).items() if k != "base_model"}  # a path over there
    return summary, params | {"trained_on": summary.get("device"), "split": args.split}, copy
