"""Bi-encoders whose weights are averaged (model soups; WiSE-FT when one part is the base model).

Each ``--mix NAME=FOLDER:WEIGHT,FOLDER:WEIGHT,...`` builds a model whose every tensor is the
weighted sum of the same tensor in each folder (sentence-transformers folders fine-tuned from the
same base, such as ``python -m ranking.training.biencoder``'s outputs), writes it under ``--out``,
and runs the training's per-epoch check on it: exact dense search of the whole catalog for the
export file's dev queries, Recall@100 and NDCG@10 (:mod:`ranking.training.dense_check`). Give a
folder with weight 1 alone as the reference. The folders written can be registered with
``shoprank train biencoder --dataset D --trained OUT/NAME``. JSON lines on stdout.

    HF_HUB_OFFLINE=1 python benchmarks/weight_average.py --examples examples.json.gz --out soups \\
        --mix ref=t128:1 soup=t128:0.5,t128n:0.5 wise=t128:0.9,BASE:0.1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402


def parse_mix(text: str) -> tuple[str, list[tuple[Path, float]]]:
    """``"NAME=A:0.5,B:0.5"`` -> (NAME, [(A, 0.5), (B, 0.5)]); ValueError naming the bad part."""
    name, sep, parts = text.partition("=")
    if not sep or not name or not parts:
        raise ValueError(f"--mix {text!r} is not NAME=FOLDER:WEIGHT,...")
    out = []
    for part in parts.split(","):
        folder, sep, weight = part.rpartition(":")
        try:
            out.append((Path(folder), float(weight)))
        except ValueError:
            sep = ""
        if not sep or not folder:
            raise ValueError(f"--mix {text!r}: {part!r} is not FOLDER:WEIGHT")
    return name, out


def average(parts: list[tuple[Path, float]], out: Path) -> None:
    """Write the weighted sum of the parts' ``model.safetensors`` into ``out`` (a copy of the first
    part's folder, so the tokenizer and modules come with it)."""
    from safetensors.torch import load_file, save_file

    weights = [(load_file(str(folder / "model.safetensors")), w) for folder, w in parts]
    first = weights[0][0]
    for (folder, _), (tensors, _) in zip(parts[1:], weights[1:]):
        if missing := sorted(set(first) - set(tensors)):  # extra buffers (position ids) are left out
            raise ValueError(f"{folder} has no {missing[0]} ({len(missing)} tensors of {parts[0][0]} missing): "
                             "average models of one base only")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(parts[0][0], out)
    mixed = {key: sum(w * tensors[key].float() for tensors, w in weights).contiguous() for key in first}
    save_file(mixed, str(out / "model.safetensors"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", required=True, type=Path,
                        help="a file written by shoprank train biencoder --export")
    parser.add_argument("--out", required=True, type=Path, help="where the averaged models are written")
    parser.add_argument("--mix", required=True, nargs="+", metavar="NAME=FOLDER:WEIGHT,...")
    args = parser.parse_args(argv)
    try:
        mixes = [parse_mix(text) for text in args.mix]
    except ValueError as exc:
        parser.error(str(exc))

    from sentence_transformers import SentenceTransformer

    from ranking.training.biencoder import load_examples
    from ranking.training.dense_check import dense_dev_metrics

    examples = load_examples(args.examples)
    if examples.dev is None:
        parser.error(f"{args.examples} holds no dev queries to check the models on")
    print(json.dumps({"hardware": hardware(), "command": " ".join(sys.argv if argv is None else argv)}), flush=True)
    for name, parts in mixes:
        started = time.perf_counter()
        average(parts, args.out / name)
        model = SentenceTransformer(str(args.out / name), device="cpu")
        metrics = dense_dev_metrics(model, examples.texts, examples.dev)
        print(json.dumps({"mix": name, "parts": {str(f): w for f, w in parts}, **metrics,
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
