"""Atomic IDs: one token per item, the classical baseline (SASRec-style item embeddings inside the same LM,
trainer and evaluation), so semantic IDs are always compared with it in one run.

There is nothing to learn: item ``i`` gets code ``i`` and the codebook has one code per item. New items cannot
be encoded from their embedding (a new item would need a new token and a trained row for it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import IdInputError, IdMethodConfig, IdModel


@dataclass
class AtomicConfig(IdMethodConfig):
    method = "atomic"
    max_length: int = field(default=1, metadata={"help": "Always 1: one token per item."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_length != 1:
            raise IdInputError(f"atomic IDs are one token long: max_length must be 1, got {self.max_length}")

    def for_catalogue(self, n_items: int) -> AtomicConfig:
        """The config for a catalogue of ``n_items``: one code per item."""
        return AtomicConfig(vocab_size=max(2, n_items), max_length=1, seed=self.seed)


class AtomicIds(IdModel):
    """Item ``i`` → code ``i``. Holds no weights, and cannot encode items it was not built with."""

    def __init__(self, config: AtomicConfig, input_dim: int):
        super().__init__()
        self.config, self.input_dim = config, input_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise IdInputError("atomic IDs cannot encode new items: each item's ID is a token of its own; "
                           "retrain the IDs and the recommender with the new items")

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        raise IdInputError("atomic IDs have no reconstruction: a code names an item, not a point in embedding space")

    def training_loss(self, x: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        raise IdInputError("atomic IDs are not trained")
