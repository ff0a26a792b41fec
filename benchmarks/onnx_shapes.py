"""What each new input shape costs a cross-encoder session: memory kept, and time on first use.

Feeds the active teacher (or ``--model DIR``) ``--calls`` batches of random token ids, one
thread, at each ``--precisions`` precision: shapes drawn from 1..32 pairs by 8..48 tokens
(``--widths any``), or with the width rounded up to a multiple of 8 as the bf16 path pads
(``--widths step8``). Prints the process's RSS after loading and after every 100 calls, the
distinct shapes seen, and the mean time of a call with a new shape against one seen before.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=artifacts/amx python benchmarks/onnx_shapes.py --precisions bf16 int8 --widths any step8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware  # noqa: E402
from core.onnx_sessions import BF16_WIDTH_STEP, cpu_session, padded_width  # noqa: E402
from core.registry import ModelRegistry  # noqa: E402
from core.settings import Settings  # noqa: E402
from ranking.cross_encoder import PRECISIONS  # noqa: E402


def run(model: Path, precision: str, widths: str, calls: int, seed: int) -> dict:
    process = psutil.Process()
    session = cpu_session(model / "onnx" / PRECISIONS[precision], threads=1, bf16=precision == "bf16")
    loaded = process.memory_info().rss / 2**20
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()
    new_ms, seen_ms, rss = [], [], []
    for call in range(1, calls + 1):
        batch, width = int(rng.integers(1, 33)), int(rng.integers(8, 49))
        if widths == "step8":
            width = padded_width(width, BF16_WIDTH_STEP)
        ids = rng.integers(1000, 20000, (batch, width)).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        started = time.perf_counter()
        session.run(None, feeds)
        (seen_ms if (batch, width) in seen else new_ms).append((time.perf_counter() - started) * 1e3 / batch)
        seen.add((batch, width))
        if call % 100 == 0:
            rss.append(round(process.memory_info().rss / 2**20))
    return {"precision": precision, "widths": widths, "calls": calls, "distinct_shapes": len(seen),
            "rss_mib_after_load": round(loaded), "rss_mib_every_100_calls": rss,
            "ms_per_pair_new_shape": round(float(np.mean(new_ms)), 2) if new_ms else None,
            "ms_per_pair_seen_shape": round(float(np.mean(seen_ms)), 2) if seen_ms else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a cross-encoder folder (default: the active teacher)")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--widths", nargs="+", default=["any", "step8"], choices=["any", "step8"])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=2, metavar=("PRECISION", "WIDTHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model
    if model is None:
        entry = ModelRegistry(Settings(progress=False).paths.models).active("reranker")
        if entry is None or entry.path is None:
            raise SystemExit("no active teacher: pass --model DIR")
        model = Path(entry.path)
    if args.one:  # one setting in a fresh process, so its memory is its own
        print(json.dumps(run(model, args.one[0], args.one[1], args.calls, args.seed)))
        return
    rows = []
    for precision in args.precisions:
        for widths in args.widths:
            done = subprocess.run([sys.executable, __file__, "--model", str(model), "--calls", str(args.calls),
                                   "--seed", str(args.seed), "--one", precision, widths],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"benchmark": "onnx_shapes", "hardware": hardware(), "command": " ".join(sys.argv),
                      "model": str(model), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
