"""What every ID method shares: a config dataclass with ``to_dict``/``from_dict``, and a model that turns
unit-norm item embeddings into code sequences (``encode``) and back (``reconstruct``)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


class IdInputError(ValueError):
    """Bad input to an ID method (embeddings, popularity or config); the message says which."""


@dataclass
class IdMethodConfig:
    """Fields common to every method. Subclasses set ``method`` and add their own fields."""

    method: ClassVar[str] = ""
    vocab_size: int = field(default=256, metadata={"help": "Codes in the shared codebook (V)."})
    max_length: int = field(default=4, metadata={"help": "Longest code sequence (L), before disambiguation."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and sampling."})

    def __post_init__(self):
        if self.vocab_size < 2:
            raise IdInputError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.max_length < 1:
            raise IdInputError(f"max_length must be >= 1, got {self.max_length}")

    @property
    def variable_length(self) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IdMethodConfig:
        """The config saved by ``to_dict``. Strict: an unknown or missing field means another sid4llm version
        wrote it, whose encoder this one would build differently, so it is an error naming the fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k != "method"}  # written by to_dict to name the class
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise IdInputError(f"{cls.__name__}: " + "; ".join(
                part for part in (f"unknown field(s) {unknown}" if unknown else "",
                                  f"missing field(s) {missing}" if missing else "") if part))
        return cls(**values)


class IdModel(nn.Module):
    """A trained ID method. ``encode`` is deterministic; ``reconstruct`` returns one reconstruction per prefix."""

    config: IdMethodConfig

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, d] → codes [B, L] (int64) and lengths [B] (1..L); codes past an item's length are ignored."""
        raise NotImplementedError

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, L] → [B, L, d]: position t reconstructs the input from ``codes[:, :t+1]``."""
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        """Loss on a batch; ``progress`` is the fraction of the training steps done so far, 0 → 1 (drives the
        schedules, so they do not depend on the dataset's size)."""
        raise NotImplementedError


def module_device(module: nn.Module) -> torch.device:
    """Where a module lives (RQ-KMeans has only buffers, the learned methods have parameters)."""
    return next(iter([*module.parameters(), *module.buffers()])).device


@torch.no_grad()
def encode_in_batches(model: IdModel, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.encode`` over ``x`` in batches, on the model's device; codes and lengths come back on the CPU."""
    model.eval()
    device = module_device(model)
    outs = [model.encode(part.to(device)) for part in x.split(batch_size)]
    return torch.cat([c for c, _ in outs]).cpu(), torch.cat([n for _, n in outs]).cpu()


def validate_embeddings(embeddings: np.ndarray | torch.Tensor, expected_dim: int | None = None) -> torch.Tensor:
    """A float32 tensor [n, d] with no NaN/inf, or a clear error."""
    x = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    if x.ndim != 2:
        raise IdInputError(f"embeddings must be a 2-D [n_items, dim] array, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise IdInputError("empty catalogue: no item embeddings given")
    if expected_dim is not None and x.shape[1] != expected_dim:
        raise IdInputError(f"embedding dimension mismatch: the model expects {expected_dim}, got {x.shape[1]}")
    x = x.float()
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise IdInputError(f"embeddings contain NaN or infinite values ({int(bad.sum())} rows, first: row {row})")
    return x
