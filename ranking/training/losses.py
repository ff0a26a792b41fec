"""Ranking losses over one query group's scores (torch).

- :func:`pairwise_loss`: RankNet (Burges et al. 2005) over ordered pairs, each
  weighted by its grade difference, so swapping an 8 with a 0 costs more than
  swapping a 5 with a 4 (a cheap stand-in for LambdaRank's |delta NDCG|).
- :func:`margin_mse`: Margin-MSE distillation (Hofstatter et al. 2020): the
  student matches the teacher's score *differences* between pairs, not its
  absolute scores, which suits models with different score scales.
- :func:`margin_correlation`: distillation that ignores both models' scales:
  across a batch of pairs, the student's margins must correlate with the
  teacher's (one minus Pearson's r), so a pair the teacher finds close gets a
  smaller margin than one it finds clear, whatever the absolute sizes.
"""

from __future__ import annotations

import torch


def pairwise_loss(scores: torch.Tensor, better: torch.Tensor, worse: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """Weighted RankNet loss: mean of ``w * log(1 + exp(-(s_better - s_worse)))``."""
    if better.numel() == 0:
        return scores.sum() * 0.0
    margins = scores[better] - scores[worse]
    return (weights * torch.nn.functional.softplus(-margins)).sum() / weights.sum().clamp(min=1e-6)


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between all pairwise score differences of one group."""
    ds = student.unsqueeze(0) - student.unsqueeze(1)
    dt = teacher.unsqueeze(0) - teacher.unsqueeze(1)
    return ((ds - dt) ** 2).mean()


def margin_correlation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - r``, Pearson's correlation between the student's and the teacher's margins (each the
    preferred item's score minus the other's) over a batch of pairs: 0 when one is an increasing
    linear function of the other, 2 when decreasing."""
    s = student - student.mean()
    t = teacher - teacher.mean()
    return 1.0 - (s * t).sum() / (s.norm() * t.norm()).clamp(min=1e-9)
