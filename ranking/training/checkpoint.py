"""Resumable training: model, optimizer, scheduler, the loop's state and torch's random number
generators in one file.

Written atomically (a temporary file, then a rename), so a job killed mid-write resumes from
the checkpoint before; restored only when it was written under the same config, so changing a
setting starts the run afresh instead of mixing two runs' weights. The generators' states (the
CPU's, and each CUDA device's when CUDA is in use) are saved too, so a resumed run draws the dropout
masks the uninterrupted run would have drawn and ends with the same weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class Checkpoint:
    """Model, optimizer, scheduler, loop state and torch's random number generators in one file,
    written atomically; restored only when it was written under the same config."""

    def __init__(self, path: Path, config: dict[str, object], model, optimizer, scheduler) -> None:  # type: ignore[no-untyped-def]
        self.path, self.config = path, config
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def restore(self, device: str) -> dict:  # type: ignore[type-arg]
        """The saved loop state (its weights and random number generators loaded), or a fresh one."""
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
        if "rng" in saved:  # a checkpoint written before the generators were saved resumes without them
            _set_rng_state(saved["rng"])
        logger.info("resuming from epoch %d step %d", saved["state"]["epoch"], saved["state"]["step"])
        return saved["state"]

    def save(self, state: dict) -> None:  # type: ignore[type-arg]
        import torch

        self.path.parent.mkdir(exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"config": self.config, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "state": state, "rng": _rng_state()}, tmp)
        tmp.replace(self.path)


def _rng_state() -> dict[str, object]:
    """torch's random number generators: the CPU's, and every CUDA device's once CUDA is in use."""
    import torch

    state: dict[str, object] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, object]) -> None:
    """Put back what :func:`_rng_state` saved (states are CPU byte tensors, wherever the checkpoint was loaded)."""
    import torch

    torch.set_rng_state(state["cpu"].cpu())  # type: ignore[attr-defined]
    if "cuda" in state and torch.cuda.is_available():
        devices = torch.cuda.device_count()  # a run resumed on a machine with fewer GPUs sets those it has
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"][:devices]])  # type: ignore[index]
