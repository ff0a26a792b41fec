"""How often the A/B test calls a difference that is not there, and how often it finds one that is.

    python benchmarks/ab_calibration.py [--experiments 2000] [--shoppers 500] [--searches 8] [--out FILE]

SIMULATED experiments, no server: each has ``--shoppers`` shoppers per arm, each searching
``--searches`` times (Poisson, at least one) with a purchase rate of their own, drawn from a Beta
whose mean is the arm's rate and whose concentration sets how alike one shopper's searches are
(``--concentration``; smaller: shoppers differ more, and their searches are more alike). For each
experiment, the purchase rate is tested two ways at alpha 0.05:

- ``shoppers``: the test ``shoprank promote`` and ``report ab`` run (``online_learning.stats.
  clustered_means``: shoppers are the unit of assignment);
- ``independent searches``: a two-proportion z-test that counts every search as independent (what
  the A/B analysis did before it).

Prints JSON with the CPU, the command and, per test, the share of A/A experiments (both arms at
``--rate``) called significant (should be 5%) and of A/B experiments (treatment at ``--rate`` times
``1 + --lift``) called significant (the power), with the mean design effect.

``--looks N``: each experiment's shoppers arrive over N nights, and the decision is read after each
night, as the nightly ``shoprank promote`` reads it. Counted per experiment: promoted (a significant
win of the treatment) at any look, by the fixed-horizon p read once at the end, the fixed-horizon p
read nightly, and the always-valid p (mSPRT) the promotion policy reads nightly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from online_learning.stats import clustered_means, design_effect  # noqa: E402


def arm(rng: np.random.Generator, shoppers: int, searches: float, rate: float,
        concentration: float) -> tuple[np.ndarray, np.ndarray]:
    """Each shopper's purchases and searches."""
    n = np.maximum(1, rng.poisson(searches, shoppers))
    own = rng.beta(rate * concentration, (1 - rate) * concentration, shoppers)
    return rng.binomial(n, own).astype(float), n.astype(float)


def independent_p(ya: np.ndarray, na: np.ndarray, yb: np.ndarray, nb: np.ndarray) -> float:
    """The pooled two-proportion z-test over searches."""
    sa, sb, ta, tb = ya.sum(), yb.sum(), na.sum(), nb.sum()
    pooled = (sa + sb) / (ta + tb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / ta + 1 / tb))
    return float(2 * sps.norm.sf(abs(sb / tb - sa / ta) / se)) if se > 0 else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--shoppers", type=int, default=500, help="per arm")
    parser.add_argument("--searches", type=float, default=8.0, help="mean searches per shopper")
    parser.add_argument("--rate", type=float, default=0.08, help="the control's purchase rate")
    parser.add_argument("--lift", type=float, default=0.2, help="the treatment's relative lift in the A/B runs")
    parser.add_argument("--concentration", type=float, default=4.0, help="Beta a + b of the shoppers' own rates")
    parser.add_argument("--looks", type=int, default=0, help="nights the shoppers arrive over, the decision "
                        "read after each (0: one test of every shopper, both ways)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    if args.looks:
        return report(args, nightly(args, rng), started)
    calls = {"shoppers": {"aa": 0, "ab": 0}, "independent searches": {"aa": 0, "ab": 0}}
    effects = []
    for _ in range(args.experiments):
        for kind, treated in (("aa", args.rate), ("ab", args.rate * (1 + args.lift))):
            ya, na = arm(rng, args.shoppers, args.searches, args.rate, args.concentration)
            yb, nb = arm(rng, args.shoppers, args.searches, treated, args.concentration)
            calls["shoppers"][kind] += clustered_means("purchase_rate", ya, na, yb, nb).significant
            calls["independent searches"][kind] += independent_p(ya, na, yb, nb) < 0.05
            if kind == "aa":
                effects.append(design_effect(ya, na))
    report(args, {"mean_design_effect": round(float(np.mean(effects)), 2),
                  "tests": {name: {"aa_called_significant": round(c["aa"] / args.experiments, 4),
                                   "ab_called_significant (power)": round(c["ab"] / args.experiments, 4)}
                            for name, c in calls.items()}}, started)


def nightly(args: argparse.Namespace, rng: np.random.Generator) -> dict:
    """The share of A/A and A/B experiments promoted when the decision is read after each of ``--looks``
    nights: by the fixed-horizon p at the end only, by it every night, by the always-valid p every night."""
    ways = ("fixed p, read once at the end", "fixed p, read every night", "always-valid p, read every night")
    promoted = {way: {"aa": 0, "ab": 0} for way in ways}
    nights = np.linspace(0, args.shoppers, args.looks + 1).astype(int)[1:]
    for _ in range(args.experiments):
        for kind, treated in (("aa", args.rate), ("ab", args.rate * (1 + args.lift))):
            ya, na = arm(rng, args.shoppers, args.searches, args.rate, args.concentration)
            yb, nb = arm(rng, args.shoppers, args.searches, treated, args.concentration)
            looks = [clustered_means("purchase_rate", ya[:k], na[:k], yb[:k], nb[:k]) for k in nights]
            fixed = [c.p_value < 0.05 and c.treatment > c.control for c in looks]
            always = [c.sequential_p < 0.05 and c.treatment > c.control for c in looks]
            for way, won in zip(ways, (fixed[-1], any(fixed), any(always))):
                promoted[way][kind] += won
    return {"looks": args.looks, "promoted": {
        way: {"aa_promoted (a win by chance; one side of 5%: 2.5%)": round(c["aa"] / args.experiments, 4),
              "ab_promoted (power)": round(c["ab"] / args.experiments, 4)} for way, c in promoted.items()}}


def report(args: argparse.Namespace, figures: dict, started: float) -> None:
    out = {"cpu": hardware(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "simulated": {k: v for k, v in vars(args).items() if k != "out"}, **figures,
           "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
