"""Unbiased LambdaMART from logged clicks: IPS-weighted lambdas on LightGBM trees.

Clicks are biased by position: a product shown first gets clicks a better
product shown tenth never gets. With propensities ``theta_k`` (the chance of
examining position k, :mod:`online_learning.propensity`), each preference pair
(i more engaged than j; engagement 3 purchase > 2 add to cart > 1 click > 0)
is weighted by ``1 / theta_{position of i}`` (inverse propensity weighting,
Joachims, Swaminathan and Schnabel 2017) and by LambdaMART's ``|delta DCG|``
for swapping i and j in the current ranking (Burges 2010; the unbiased
LambdaMART of Hu et al. 2019 with fixed propensities). Gradients are computed
for all query groups at once on padded arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class PaddedGroups:
    """Row indices of each query group, padded to the longest group."""

    def __init__(self, groups: Sequence[int]) -> None:
        sizes = np.asarray(groups, dtype=int)
        self.n_rows = int(sizes.sum())
        width = int(sizes.max()) if len(sizes) else 0
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        offsets = np.arange(width)
        self.mask = offsets[None, :] < sizes[:, None]
        self.index = np.where(self.mask, starts[:, None] + offsets[None, :], 0)

    def gather(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        return np.where(self.mask, np.asarray(values)[self.index], fill)


def _ranks(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """0-based rank of every row within its group, by descending score."""
    order = np.argsort(-np.where(mask, scores, -np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), 0), axis=1)
    return ranks


def _discounts(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(_ranks(scores, mask) + 2.0)


def ips_lambdarank_objective(groups: Sequence[int], labels: np.ndarray, inverse_propensity: np.ndarray,
                             sigma: float = 1.0) -> Callable:
    """A LightGBM custom objective ``(preds, dataset) -> (grad, hess)``."""
    padded = PaddedGroups(groups)
    label = padded.gather(labels, -1.0)
    weight = padded.gather(inverse_propensity, 0.0)
    valid = padded.mask[:, :, None] & padded.mask[:, None, :]
    better = (label[:, :, None] > label[:, None, :]) & valid
    gain_gap = np.where(better, label[:, :, None] - label[:, None, :], 0.0)

    def objective(preds: np.ndarray, dataset: object) -> tuple[np.ndarray, np.ndarray]:
        scores = padded.gather(preds)
        discount = _discounts(scores, padded.mask)
        delta = gain_gap * np.abs(discount[:, :, None] - discount[:, None, :]) * weight[:, :, None]
        rho = 1.0 / (1.0 + np.exp(np.clip(sigma * (scores[:, :, None] - scores[:, None, :]), -50, 50)))
        lam = sigma * rho * delta
        hess_pair = sigma * sigma * rho * (1 - rho) * delta
        grad = -lam.sum(axis=2) + lam.sum(axis=1)
        hess = hess_pair.sum(axis=2) + hess_pair.sum(axis=1)
        out_grad = np.zeros(padded.n_rows)
        out_hess = np.zeros(padded.n_rows)
        out_grad[padded.index[padded.mask]] = grad[padded.mask]
        out_hess[padded.index[padded.mask]] = np.maximum(hess[padded.mask], 1e-6)
        return out_grad, out_hess

    return objective


def ips_dcg(groups: Sequence[int], labels: np.ndarray, inverse_propensity: np.ndarray, scores: np.ndarray,
            k: int = 10) -> float:
    """Self-normalised IPS estimate of DCG@k of engagement under ``scores`` (higher is better)."""
    padded = PaddedGroups(groups)
    label = padded.gather(labels, 0.0)
    weight = padded.gather(inverse_propensity, 0.0)
    ranks = _ranks(padded.gather(scores, -np.inf), padded.mask)
    contribution = np.where(ranks < k, label * weight / np.log2(ranks + 2.0), 0.0)
    total_weight = (weight * (label > 0)).sum()
    return float(contribution.sum() / total_weight) if total_weight else 0.0
