"""The cross-encoder network: transformer + mean pooling + a linear score head.

Why not Hugging Face's ``BertForSequenceClassification``: it scores the
``[CLS]`` token through a pooler, but all-MiniLM-L6-v2 was trained with *mean*
pooling, and its ``[CLS]`` output is nearly the same for every input (measured:
identical scores to 3 decimals for 8 different products at initialisation, and
no learning after 40 steps). Mean pooling starts from what the weights know.

Saved as a Hugging Face encoder folder (``config.json``, weights, tokenizer)
plus ``score_head.pt``, so the encoder part stays loadable by any HF tool.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.errors import InvalidInput

HEAD = "score_head.pt"


class PairScorer(torch.nn.Module):
    """Scores a tokenised (query, product) pair; higher = more relevant."""

    def __init__(self, encoder: torch.nn.Module, hidden: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(hidden, 1)

    @classmethod
    def from_base(cls, base: str | Path, layers: int | None = None) -> PairScorer:
        """A fresh scorer on ``base``'s weights, keeping its first ``layers`` layers.

        If ``base`` is itself a saved scorer, its head is kept too (students start
        from their teacher).
        """
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(str(base), add_pooling_layer=False)
        blocks = encoder.encoder.layer
        if layers is not None and not 1 <= layers <= len(blocks):
            raise InvalidInput(f"layers={layers}: the base model has {len(blocks)} layers; keep 1..{len(blocks)}")
        if layers is not None and layers < len(blocks):
            encoder.encoder.layer = blocks[:layers]
            encoder.config.num_hidden_layers = layers
        model = cls(encoder, encoder.config.hidden_size)
        head = Path(base) / HEAD
        if head.is_file():
            model.head.load_state_dict(torch.load(head, weights_only=True))
        else:
            torch.nn.init.normal_(model.head.weight, std=0.02)
            torch.nn.init.zeros_(model.head.bias)
        return model

    load = from_base

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(pooled).squeeze(-1)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder)
        torch.save({k: v.cpu() for k, v in self.head.state_dict().items()}, folder / HEAD)
