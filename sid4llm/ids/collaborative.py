"""Collaborative input for ID methods: what items are consumed together, beside what their text says.

Codes learned from text embeddings alone group items by content (genre, words of the title), so the first
code of the next item is a content guess the recommender must learn to undo. Mixing in an embedding of item
co-occurrence in the train histories groups items that the same users consume in sequence, which is what a
next-item model predicts: on MovieLens-1M it nearly doubled the from-scratch model's recall at equal steps
(docs/per_cpu_minute.md).

The co-occurrence embedding is the truncated eigen-decomposition of the positive PMI matrix of item pairs
within ``window`` events of each other in a history (weight 1/distance), scaled by the root eigenvalues and
L2-normalised (the factorisation word2vec-style item embeddings approximate). An item without train events,
and every item added later (cold start), gets the co-occurrence part predicted from its text by a ridge map
fitted on the items that have events, so new items still only need text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .base import IdInputError

logger = logging.getLogger(__name__)

MAP_FILE = "collaborative_map.safetensors"
MAX_ITEMS = 15_000  # the PPMI matrix is dense: 15k items take ~2 GB per copy and about a minute of eigh on 2 cores


@dataclass(frozen=True)
class CollaborativeSettings:
    """How much of the ID input comes from co-occurrence, and how that embedding is built."""

    weight: float = 0.8  # share of the squared norm of the mixed input (text gets 1 - weight)
    dim: int = 64
    window: int = 10

    def __post_init__(self):
        if not 0.0 < self.weight < 1.0:
            raise IdInputError(f"collaborative_weight must be in (0, 1) to mix with text (0: text only), got {self.weight}")
        if self.dim < 1 or self.window < 1:
            raise IdInputError(f"collaborative_dim and collaborative_window must be >= 1, got {self.dim}, {self.window}")

    def to_dict(self) -> dict:
        return asdict(self)


def cooccurrence_embeddings(histories: Sequence[Sequence[int]], n_items: int, dim: int = 64,
                            window: int = 10) -> np.ndarray:
    """``[n_items, dim]`` float32 PPMI eigen-embeddings of items within ``window`` events of each other;
    rows of items that co-occur with nothing are zero."""
    if n_items > MAX_ITEMS:
        raise IdInputError(f"{n_items:,} items: the co-occurrence embedding is built densely and supports at most "
                           f"{MAX_ITEMS:,}; embed the most consumed ones (CollaborativeInput.fit does)")
    keys, weights = [], []
    for row, history in enumerate(histories):
        events = np.asarray(history, dtype=np.int64)
        if events.size and (events.min() < 0 or events.max() >= n_items):
            raise IdInputError(f"history {row}: item index out of range [0, {n_items})")
        for offset in range(1, min(window, len(events) - 1) + 1):
            keys.append(events[:-offset] * n_items + events[offset:])
            weights.append(np.full(len(events) - offset, 1.0 / offset))
    if not keys:
        raise IdInputError("no two events in any history: nothing co-occurs, so there is no collaborative signal")
    counts = np.bincount(np.concatenate(keys), weights=np.concatenate(weights), minlength=n_items * n_items)
    counts = counts.reshape(n_items, n_items)
    counts = counts + counts.T
    marginal = counts.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * counts.sum() / np.outer(marginal, marginal))
    pmi[~np.isfinite(pmi)] = 0.0
    np.maximum(pmi, 0.0, out=pmi)
    values, vectors = np.linalg.eigh(pmi)
    top = np.argsort(-values)[: min(dim, n_items)]
    emb = vectors[:, top] * np.sqrt(np.maximum(values[top], 0.0))
    if emb.shape[1] < dim:
        emb = np.pad(emb, ((0, 0), (0, dim - emb.shape[1])))
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.where(norms > 0, emb / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


class CollaborativeInput:
    """Turns text embeddings into the mixed ID input: ``[√(1-w)·text, √w·co-occurrence]``, unit norm.

    ``text_map`` (``[text_dim, dim]``) predicts the co-occurrence part of an item from its text."""

    def __init__(self, settings: CollaborativeSettings, text_map: np.ndarray):
        self.settings = settings
        self.text_map = np.asarray(text_map, dtype=np.float32)

    @property
    def input_dim(self) -> int:
        return self.text_map.shape[0] + self.settings.dim

    @classmethod
    def fit(cls, text: np.ndarray, histories: Sequence[Sequence[int]], settings: CollaborativeSettings,
            ridge: float = 1.0) -> tuple[CollaborativeInput, np.ndarray]:
        """Build the co-occurrence embeddings of the catalogue and the text map; returns the mixer and the
        mixed input of every catalogue item (items without co-occurrence get the predicted part)."""
        text = np.asarray(text, dtype=np.float32)
        cooc = _cooccurrence_of_head(histories, len(text), settings)
        known = np.linalg.norm(cooc, axis=1) > 0
        a = text[known].astype(np.float64)
        text_map = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ cooc[known].astype(np.float64))
        mixer = cls(settings, text_map)
        cooc[~known] = mixer.predicted(text[~known])
        return mixer, mixer.mix(text, cooc)

    def predicted(self, text: np.ndarray) -> np.ndarray:
        """The co-occurrence part of items known only by their text, unit norm."""
        guess = np.asarray(text, dtype=np.float32) @ self.text_map
        return guess / np.maximum(np.linalg.norm(guess, axis=1, keepdims=True), 1e-12)

    def mix(self, text: np.ndarray, cooc: np.ndarray | None = None) -> np.ndarray:
        """The ID input for items with these text embeddings (and co-occurrence embeddings, when known)."""
        text = np.asarray(text, dtype=np.float32)
        if text.ndim != 2 or text.shape[1] != self.text_map.shape[0]:
            raise IdInputError(f"embedding dimension mismatch: the codebook's collaborative input expects text "
                               f"embeddings of dimension {self.text_map.shape[0]}, got shape {tuple(text.shape)}")
        cooc = self.predicted(text) if cooc is None else cooc
        w = self.settings.weight
        mixed = np.concatenate([text * np.sqrt(1 - w), cooc * np.sqrt(w)], axis=1)
        return (mixed / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def save(self, directory: str | Path) -> None:
        save_file({"text_map": np.ascontiguousarray(self.text_map)}, str(Path(directory) / MAP_FILE))

    @classmethod
    def load(cls, directory: str | Path, settings: dict) -> CollaborativeInput:
        path = Path(directory) / MAP_FILE
        if not path.is_file():
            raise IdInputError(f"{path} missing: the codebook config says its IDs read a collaborative input")
        return cls(CollaborativeSettings(**settings), load_file(str(path))["text_map"])


def _cooccurrence_of_head(histories: Sequence[Sequence[int]], n_items: int,
                          settings: CollaborativeSettings) -> np.ndarray:
    """Co-occurrence embeddings of the catalogue, or of its ``MAX_ITEMS`` most consumed items when it is larger
    (the rest, the tail, then get theirs predicted from text like cold items)."""
    if n_items <= MAX_ITEMS:
        return cooccurrence_embeddings(histories, n_items, settings.dim, settings.window)
    counts = np.bincount(np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]), minlength=n_items)
    head = np.argsort(-counts, kind="stable")[:MAX_ITEMS]
    position = np.full(n_items, -1, dtype=np.int64)
    position[head] = np.arange(len(head))
    logger.warning("%s items: the co-occurrence embedding covers the %s most consumed; the rest get it from text",
                   f"{n_items:,}", f"{MAX_ITEMS:,}")
    kept = [p[p >= 0] for p in (position[np.asarray(h, dtype=np.int64)] for h in histories)]
    cooc = np.zeros((n_items, settings.dim), dtype=np.float32)
    cooc[head] = cooccurrence_embeddings(kept, len(head), settings.dim, settings.window)
    return cooc
