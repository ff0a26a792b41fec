"""Resumable training: model, optimizer, scheduler and the loop's state in one file.

Written atomically (a temporary file, then a rename), so a job killed mid-write resumes from
the checkpoint before; restored only when it was written under the same config, so changing a
setting starts the run afresh instead of mixing two runs' weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class Checkpoint:
    """Model, optimizer, scheduler and loop state in one file, written atomically; restored only
    when it was written under the same config."""

    def __init__(self, path: Path, config: dict[str, object], model, optimizer, scheduler) -> None:  # type: ignore[no-untyped-def]
        self.path, self.config = path, config
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def restore(self, device: str) -> dict:  # type: ignore[type-arg]
        """The saved loop state (its weights loaded), or a fresh one."""
        import torch

        state = {"epoch": 0, "step": 0, "best": None, "history": [], "seconds": 0.0}
        if not self.path.is_file():
            return state
        saved = torch.load(self.path, weights_only=False, map_location=device)
        if saved["config"] != self.config:
            logger.warning("ignoring checkpoint with a different config at %s", self.path)
            return state
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        logger.info("resuming from epoch %d step %d", saved["state"]["epoch"], saved["state"]["step"])
        return saved["state"]

    def save(self, state: dict) -> None:  # type: ignore[type-arg]
        import torch

        self.path.parent.mkdir(exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"config": self.config, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "state": state}, tmp)
        tmp.replace(self.path)
