"""Promotion policy: promote only on a significant win that breaks no guardrail;
roll back when the active model regresses.

A/B (:func:`decide_ab`): the treatment is promoted when its primary metric
(purchase rate by default) is significantly higher (two-proportion z-test,
alpha 0.05) with at least ``min_searches`` per arm, and no guardrail fails:
p95 latency at most ``max_latency_increase`` above control, and no
significant increase of the zero-result or degraded rates. A significant
loss on the primary metric rejects it; otherwise the experiment continues.

Interleaving (:func:`decide_interleaving`): promoted when the treatment wins
significantly more queries (sign test), rejected when it loses significantly.

Rollback (:func:`check_regression`): the active version's searches since its
activation are compared with the previous version's last searches; a
significant drop of the primary metric rolls back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from online_learning.analysis import InterleavingResult, compare_arms
from online_learning.stats import two_proportions


@dataclass(frozen=True)
class Policy:
    primary: str = "purchase_rate"
    alpha: float = 0.05
    min_searches: int = 300
    max_latency_increase: float = 0.2


@dataclass
class Decision:
    action: str  # promote | reject | continue | rollback | keep
    reasons: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def decide_ab(table: pd.DataFrame, control: str, treatment: str, policy: Policy = Policy()) -> Decision:
    report = compare_arms(table, control, treatment)
    metrics = report.by_metric()
    details = {"sizes": report.sizes, "needed_per_arm": report.needed_per_arm,
               "comparisons": [c.to_json() for c in report.comparisons]}
    if min(report.sizes.values()) < policy.min_searches:
        return Decision("continue", [f"need {policy.min_searches} searches per arm, have {report.sizes}"], details)
    primary = metrics[policy.primary]
    reasons = []
    for guard in ("zero_result_rate", "degraded_rate"):
        c = metrics[guard]
        if c.p_value < policy.alpha and c.treatment > c.control:
            reasons.append(f"guardrail {guard}: {c.control:.4f} -> {c.treatment:.4f} (p={c.p_value:.3g})")
    p95 = {arm: float(np.nanpercentile(table[table["arm"] == arm]["latency_ms"].astype(float), 95))
           for arm in (control, treatment)}
    details["latency_p95_ms"] = p95
    if p95[treatment] > p95[control] * (1 + policy.max_latency_increase):
        reasons.append(f"guardrail latency p95: {p95[control]:.1f} -> {p95[treatment]:.1f} ms")
    if primary.p_value < policy.alpha and primary.treatment < primary.control:
        return Decision("reject", [f"{policy.primary} fell {primary.control:.4f} -> {primary.treatment:.4f} "
                                   f"(p={primary.p_value:.3g})", *reasons], details)
    if reasons:
        return Decision("reject", reasons, details)
    if primary.p_value < policy.alpha and primary.treatment > primary.control:
        return Decision("promote", [f"{policy.primary} rose {primary.control:.4f} -> {primary.treatment:.4f} "
                                    f"({primary.lift:+.1%}, p={primary.p_value:.3g})"], details)
    return Decision("continue", [f"{policy.primary}: no significant difference yet (p={primary.p_value:.3g})"], details)


def decide_interleaving(result: InterleavingResult, control: str, treatment: str, policy: Policy = Policy()) -> Decision:
    details = {"wins": result.wins, "ties": result.ties, "preference": result.preference, "p_value": result.p_value}
    decided = result.wins[control] + result.wins[treatment]
    if decided < 30:
        return Decision("continue", [f"only {decided} queries with a winner"], details)
    if result.p_value < policy.alpha:
        if result.wins[treatment] > result.wins[control]:
            return Decision("promote", [f"interleaving prefers {treatment} ({result.preference:+.3f}, p={result.p_value:.3g})"], details)
        return Decision("reject", [f"interleaving prefers {control} ({result.preference:+.3f}, p={result.p_value:.3g})"], details)
    return Decision("continue", [f"no significant preference (p={result.p_value:.3g})"], details)


def check_regression(table: pd.DataFrame, active: str, previous: str, policy: Policy = Policy()) -> Decision:
    """Roll back when searches served by ``active`` convert significantly worse than ``previous``'s."""
    served = table.assign(ltr=table["models"].map(lambda m: json.loads(m).get("ltr") if isinstance(m, str) else None))
    a, b = served[served["ltr"] == previous], served[served["ltr"] == active]
    if len(a) < policy.min_searches or len(b) < policy.min_searches:
        return Decision("keep", [f"too few searches to judge ({len(a)} before, {len(b)} after)"])
    c = two_proportions(policy.primary, int(a["bought"].sum()), len(a), int(b["bought"].sum()), len(b))
    details = {"comparison": c.to_json()}
    if c.p_value < policy.alpha and c.treatment < c.control:
        return Decision("rollback", [f"{policy.primary} of {active} {c.treatment:.4f} < {previous} {c.control:.4f} "
                                     f"(p={c.p_value:.3g})"], details)
    return Decision("keep", [f"no significant regression (p={c.p_value:.3g})"], details)
