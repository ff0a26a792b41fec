"""Promotion policy: promote only on a significant win that breaks no guardrail;
roll back when the active model regresses.

The nightly job reads the same experiment again each night, so a promotion needs the
always-valid p-value (mSPRT, :func:`online_learning.stats.sequential_p`), which holds however
often it is read: a fixed-horizon test read nightly for two weeks promoted one A/A experiment
in ten. ``Policy(sequential=False)`` promotes on the fixed-horizon p-value, for a single look
at a planned sample size. A harm (a significant loss: reject, rollback; a guardrail) is acted
on at the fixed-horizon p-value: the cautious side, where an error keeps the model in place.

A/B (:func:`decide_ab`): the treatment is promoted when its primary metric
(purchase rate by default) is significantly higher (shoppers as the unit of
assignment, :func:`online_learning.stats.clustered_means`; alpha
0.05, divided among the treatments when there are several) with at least
``min_searches`` and ``min_shoppers`` per arm, the arms' shoppers match the configured weights (no
sample ratio mismatch), and no guardrail fails: p95 latency at most
``max_latency_increase`` above control, and no significant increase of the
zero-result or degraded rates. A significant loss on the primary metric rejects
it; otherwise the experiment continues, with the searches per arm the observed
lift would need.

Interleaving (:func:`decide_interleaving`): promoted when significantly more shoppers prefer the treatment
(each shopper votes once, :func:`online_learning.analysis.interleaving`; the mean of +1 per shopper won and -1
per shopper lost against none; the sign test when not sequential), rejected when significantly more prefer
the control (sign test).

Both decide only on the searches each arm's configured version served, from the last one served by another
version on (:func:`served_by_arms`; :func:`online_learning.analysis.served_since_change`).

Rollback (:func:`check_regression`): the active version's searches since its
activation are compared with the previous version's last searches over as long a time
(each side with at least ``min_searches`` and ``min_shoppers``); a significant drop of the
primary metric rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from online_learning.analysis import (
    RATES,
    InterleavingResult,
    compare_arms,
    per_shopper,
    served_ltr,
    served_since_change,
    shopper,
)
from online_learning.experiments import Experiment
from online_learning.stats import Comparison, clustered_means, sample_ratio_p, sequential_p

SRM_ALPHA = 0.001  # a sample ratio mismatch this unlikely by chance stops the decision


@dataclass(frozen=True)
class Policy:
    primary: str = "purchase_rate"
    alpha: float = 0.05
    min_searches: int = 300
    min_shoppers: int = 30  # per arm: a few shoppers' many searches tell little (they are the units)
    max_latency_increase: float = 0.2
    sequential: bool = True  # promote on always-valid p-values (the nightly job looks again every night)
    mixture_preference: float = 0.1  # interleaving's sequential test: the spread of preferences it looks for


    def p_value(self, comparison: Comparison) -> float:
        """The p-value a promotion reads: the always-valid one when sequential, else the fixed-horizon one."""
        return comparison.sequential_p if self.sequential else comparison.p_value

    def label(self, p_value: float) -> str:
        return f"{'always-valid p' if self.sequential else 'p'}={p_value:.3g}"


@dataclass
class Decision:
    action: str  # promote | reject | continue | rollback | keep
    reasons: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def decide_ab(table: pd.DataFrame, control: str, treatment: str, policy: Policy = Policy(),
              weights: dict[str, float] | None = None, harm_alpha: float | None = None) -> Decision:
    """The decision on ``treatment`` against ``control`` over ``table`` (:func:`online_learning.analysis.searches`);
    ``weights``: the experiment's arm weights, checked against the shoppers each arm logged. A harm (the primary
    metric's fall, a guardrail) is judged at ``harm_alpha`` (default ``policy.alpha``): an experiment with several
    treatments divides the alpha of its promotions, not the protection of its shoppers."""
    harm_alpha = policy.alpha if harm_alpha is None else harm_alpha
    report = compare_arms(table, control, treatment)
    metrics = report.by_metric()
    details = {"sizes": report.sizes, "shoppers": report.shoppers, "needed_per_arm": report.needed_per_arm,
               "design_effect": round(report.design_effect, 3),
               "comparisons": [c.to_json() for c in report.comparisons]}
    if min(report.sizes.values()) < policy.min_searches or min(report.shoppers.values()) < policy.min_shoppers:
        return Decision("continue", [f"need {policy.min_searches} searches and {policy.min_shoppers} shoppers per "
                                     f"arm, have {report.sizes} searches and {report.shoppers} shoppers"], details)
    if weights is not None:
        shares = {arm: weights[arm] for arm in (control, treatment) if arm in weights}
        srm = sample_ratio_p(report.shoppers, shares)
        details["sample_ratio_p"] = srm
        if srm < SRM_ALPHA:
            return Decision("continue", [
                f"sample ratio mismatch: shoppers per arm {report.shoppers} against weights {shares} (p={srm:.3g}); "
                "some arm's searches are lost or assigned wrongly, so no result of this experiment can be trusted: "
                "check the assignment and the event pipeline"], details)
    primary = metrics[policy.primary]
    p_primary = policy.p_value(primary)
    reasons = []
    for guard in ("zero_result_rate", "degraded_rate"):
        c = metrics[guard]
        if c.p_value < harm_alpha and c.treatment > c.control:
            reasons.append(f"guardrail {guard}: {c.control:.4f} -> {c.treatment:.4f} (p={c.p_value:.3g})")
    p95 = {arm: float(np.nanpercentile(table[table["arm"] == arm]["latency_ms"].astype(float), 95))
           for arm in (control, treatment)}
    details["latency_p95_ms"] = {arm: (v if np.isfinite(v) else None) for arm, v in p95.items()}
    if p95[treatment] > p95[control] * (1 + policy.max_latency_increase):
        reasons.append(f"guardrail latency p95: {p95[control]:.1f} -> {p95[treatment]:.1f} ms")
    p = policy.label(p_primary)
    if primary.p_value < harm_alpha and primary.treatment < primary.control:  # a harm: the fixed-horizon p
        return Decision("reject", [f"{policy.primary} fell {primary.control:.4f} -> {primary.treatment:.4f} "
                                   f"(p={primary.p_value:.3g})", *reasons], details)
    if reasons:
        return Decision("reject", reasons, details)
    if p_primary < policy.alpha and primary.treatment > primary.control:
        return Decision("promote", [f"{policy.primary} rose {primary.control:.4f} -> {primary.treatment:.4f} "
                                    f"({primary.lift:+.1%}, {p})"], details)
    needed = report.needed_for(primary.lift, policy.alpha) if policy.primary == "purchase_rate" else 0
    more = (f"; at the observed lift ({primary.lift:+.1%}) a single test at a planned size would need about "
            f"{needed} searches per arm (each has {min(report.sizes.values())})" if needed else "")
    return Decision("continue", [f"{policy.primary}: no significant difference yet ({p}){more}"], details)


def served_by_arms(table: pd.DataFrame, experiment: Experiment) -> pd.DataFrame:
    """The searches of ``table`` (:func:`online_learning.analysis.searches`) each served by the LambdaMART its
    arm is configured with now, made after the last one served otherwise.

    The log keeps an experiment's searches by its name, so an arm pointed at another version since, or an
    experiment started again under an old name, left searches that tell nothing of the version a promotion
    would activate. The other arms' searches from before such a change are left out too, so that all arms
    are counted over the same time: their shoppers would otherwise be compared with none of the changed
    arm's (a sample ratio mismatch)."""
    return served_since_change(table, {arm: a.ltr for arm, a in experiment.arms.items()})


def decide_experiment(table: pd.DataFrame, experiment: Experiment, policy: Policy = Policy()) -> tuple[Decision, str]:
    """The decision on an A/B ``experiment`` and the arm it names, on the searches of ``table`` its arms'
    configured versions served (:func:`served_by_arms`; continue while an arm has none): each treatment arm
    against the control at ``policy.alpha`` divided by the number of treatments (Bonferroni: several tests,
    one decision); harms (a fall of the primary metric, a guardrail) at the whole ``policy.alpha``, as with
    one treatment. Promote the winner with the highest primary metric when any is promoted; reject when every
    treatment is rejected; otherwise continue. Each reason names its arm."""
    treatments = [arm for arm in experiment.arms if arm != experiment.control]
    served = served_by_arms(table, experiment)
    searched = {arm: int((served["arm"] == arm).sum()) for arm in experiment.arms}
    if not all(searched.values()):
        configured = {arm: a.ltr for arm, a in experiment.arms.items()}
        return Decision("continue", [
            f"searches per arm served by its configured LambdaMART {configured} since the last one served by "
            f"another: {searched}, of {len(table)} logged under experiment {experiment.name!r}; nothing to decide "
            "on until every arm has some"], {"sizes": searched}), treatments[0]
    table = served
    weights = {arm: a.weight for arm, a in experiment.arms.items()}
    shoppers = {arm: int(shopper(table[table["arm"] == arm]).nunique()) for arm in experiment.arms}
    if len(table) and (srm := sample_ratio_p(shoppers, weights)) < SRM_ALPHA:  # every arm at once, first
        return Decision("continue", [
            f"sample ratio mismatch: shoppers per arm {shoppers} against weights {weights} (p={srm:.3g}); some "
            "arm's searches are lost or assigned wrongly, so no result of this experiment can be trusted: check "
            "the assignment and the event pipeline"], {"shoppers": shoppers, "sample_ratio_p": srm}), treatments[0]
    split = replace(policy, alpha=policy.alpha / len(treatments))
    decided = {arm: decide_ab(table, experiment.control, arm, split, weights, harm_alpha=policy.alpha)
               for arm in treatments}
    if len(treatments) == 1:
        return decided[treatments[0]], treatments[0]
    details = {"alpha_per_treatment": split.alpha, "arms": {arm: d.details for arm, d in decided.items()}}
    reasons = [f"{arm}: {reason}" for arm, d in decided.items() for reason in d.reasons]
    winners = [arm for arm, d in decided.items() if d.action == "promote"]
    if winners:
        primary = {arm: decided[arm].details["comparisons"] for arm in winners}
        best = max(winners, key=lambda arm: next(c["treatment"] for c in primary[arm] if c["metric"] == policy.primary))
        return Decision("promote", reasons, details), best
    action = "reject" if all(d.action == "reject" for d in decided.values()) else "continue"
    return Decision(action, reasons, details), treatments[0]


def decide_interleaving(result: InterleavingResult, control: str, treatment: str, policy: Policy = Policy()) -> Decision:
    """The decision on an interleaving experiment from its shoppers' votes
    (:func:`online_learning.analysis.interleaving`: one per shopper, for the team that won more of their
    searches)."""
    decided = result.wins[control] + result.wins[treatment]
    # +1 a shopper who preferred the treatment, -1 one who preferred the control: their mean, of variance 1 / n
    # under no preference
    mean = (result.wins[treatment] - result.wins[control]) / decided if decided else 0.0
    always = sequential_p(mean, 1 / decided, policy.mixture_preference) if decided else 1.0
    details = {"unit": "shopper", "wins": result.wins, "ties": result.ties, "searches": result.searches,
               "preference": result.preference, "p_value": result.p_value, "sequential_p": always}
    if decided < 30:
        return Decision("continue", [f"only {decided} shoppers with a preference"], details)
    p_value = always if policy.sequential else result.p_value
    p = policy.label(p_value)
    if p_value < policy.alpha and result.wins[treatment] > result.wins[control]:
        return Decision("promote", [f"interleaving: more shoppers prefer {treatment} ({result.wins[treatment]} "
                                    f"against {result.wins[control]}, preference {result.preference:+.3f}, {p})"],
                        details)
    if result.p_value < policy.alpha and result.wins[control] > result.wins[treatment]:  # a harm: the sign test
        return Decision("reject", [f"interleaving: more shoppers prefer {control} ({result.wins[control]} against "
                                   f"{result.wins[treatment]}, preference {result.preference:+.3f}, "
                                   f"p={result.p_value:.3g})"], details)
    return Decision("continue", [f"no significant preference ({p})"], details)


def check_regression(table: pd.DataFrame, active: str, previous: str, policy: Policy = Policy()) -> Decision:
    """Roll back when the searches ``active`` served since its activation convert significantly worse than
    ``previous``'s last ones; ``table``: :func:`online_learning.analysis.searches`' rows, all of the log.

    The registry does not record when a version became active, so the log tells it: ``active``'s searches
    from its first one after ``previous``'s last one (a version activated again, after a time of another,
    is judged on its current time, not its first). They are compared with ``previous``'s searches over as
    long a time up to its last one: the weeks just before, not a season long gone. Too few searches or
    shoppers (``policy.min_searches``, ``policy.min_shoppers``, each side) keep the active version: a few
    shoppers' many searches tell little."""
    ltr = table["models"].map(served_ltr)
    before, after = table[ltr == previous], table[ltr == active]
    if len(before):
        after = after[after["timestamp"] > before["timestamp"].max()]
    if len(after):
        start = after["timestamp"].min()
        before = before[before["timestamp"] < start]
        if len(before):
            before = before[before["timestamp"] >= before["timestamp"].max() - (after["timestamp"].max() - start)]
    sizes = {previous: len(before), active: len(after)}
    shoppers = {previous: int(shopper(before).nunique()), active: int(shopper(after).nunique())}
    details = {"sizes": sizes, "shoppers": shoppers,
               "windows": {version: [part["timestamp"].min().isoformat(), part["timestamp"].max().isoformat()]
                           if len(part) else None
                           for version, part in ((previous, before), (active, after))}}
    if min(sizes.values()) < policy.min_searches:
        return Decision("keep", [f"too few searches to judge ({len(before)} before, {len(after)} after; "
                                 f"need {policy.min_searches} each)"], details)
    if min(shoppers.values()) < policy.min_shoppers:
        return Decision("keep", [f"too few shoppers to judge ({shoppers[previous]} before, {shoppers[active]} "
                                 f"after; need {policy.min_shoppers} each)"], details)
    column = dict(RATES)[policy.primary]
    c = clustered_means(policy.primary, *per_shopper(before, column), *per_shopper(after, column))
    details["comparison"] = c.to_json()
    if c.p_value < policy.alpha and c.treatment < c.control:  # a harm: the fixed-horizon p
        return Decision("rollback", [f"{policy.primary} of {active} {c.treatment:.4f} < {previous} {c.control:.4f} "
                                     f"(p={c.p_value:.3g})"], details)
    return Decision("keep", [f"no significant regression (p={c.p_value:.3g})"], details)
