"""The training checkpoint: what a resumed run gets back."""

from __future__ import annotations

from pathlib import Path

import torch

from ranking.training.checkpoint import Checkpoint


def checkpoint(path: Path) -> Checkpoint:
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return Checkpoint(path, {"seed": 13}, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))


def test_a_resumed_run_draws_what_the_uninterrupted_run_draws(tmp_path: Path) -> None:
    """Dropout masks after a resume are those the run would have drawn: torch's generator is saved with the
    weights (without it, a resumed run ended with other weights than an uninterrupted one)."""
    path = tmp_path / "state.pt"
    torch.manual_seed(13)
    torch.rand(100)  # the steps before the checkpoint drew their dropout masks
    checkpoint(path).save({"epoch": 0, "step": 2})
    uninterrupted = torch.rand(8)
    torch.manual_seed(13)  # a new process seeds again before it restores
    state = checkpoint(path).restore("cpu")
    assert state == {"epoch": 0, "step": 2}
    assert torch.equal(torch.rand(8), uninterrupted)
