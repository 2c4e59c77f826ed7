"""A second opinion for the beam: what followed each of a user's last items in the train histories.

A small sequence model trained for minutes on a small dataset (MovieLens-100k: 943 users) over-fits before it has
learned every first-order transition that a count gets for free, and a count alone misses what the model knows
(longer context, item IDs that share codes). :class:`ItemTransitionPrior` is that count — a decayed first-order
Markov chain over items — kept as the strongest ``keep`` successors of each item, and the recommender re-ranks
its beam's candidates by ``log p_model(item) + weight · log(p_prior(item) + 1/n_items)`` (a product of experts;
the ``1/n_items`` floor keeps items the count never saw in play). ``weight`` is chosen on valid users after
training (``sid4llm finetune --transition_prior``), 0 when the count does not help, so the model alone is never
overruled on a dataset where it knows better.

Optionally the prior also reads the whole history (``cooccurrence_weight`` > 0): EASE item-item weights
(:mod:`sid4llm.decoding.cooccurrence`) score every item by what goes with all of a user's items, whatever the order,
and the prior's log term becomes ``log p_transitions + cooccurrence_weight · log softmax(scores / temperature)`` (a
third expert in the product). ``cooccurrence_weight`` is chosen on valid users with the weight, 0 when it does not
help.

Saved as ``transition_prior/`` beside the model: ``transition_prior.safetensors`` (successor indices and
probabilities, and the co-occurrence neighbours when used) and ``transition_prior_config.json`` (how it was counted
and the chosen weights).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..artifacts import ArtifactError, read_json
from .cooccurrence import cooccurrence_scores, ease_neighbours, sparse_row_sums

PRIOR_DIR = "transition_prior"
WEIGHTS_FILE = "transition_prior.safetensors"
CONFIG_FILE = "transition_prior_config.json"


@dataclass
class TransitionPriorConfig:
    """How the prior was counted and how strongly it re-ranks."""

    n_items: int
    span: int = 3  # the d-th item after another counts as following it, with weight 1/d
    keep: int = 100  # successors kept per item (the rest of a row's mass is dropped)
    recent: int = 5  # a user's last items that vote
    recency_decay: float = 0.9  # the vote of the item n places from the end: decay**n
    weight: float = 0.0  # of log p_prior in the re-ranking score; 0: off
    cooccurrence_weight: float = 0.0  # of the whole-history co-occurrence term inside log p_prior; 0: transitions only
    cooccurrence_temperature: float = 0.1  # of the softmax over EASE scores
    cooccurrence_l2: float | None = None  # EASE's penalty, when the neighbours were learnt
    candidates: int = 0  # the prior's own best items scored by the model beside the beam's before re-ranking; 0: none


class ItemTransitionPrior:
    def __init__(self, successors: torch.Tensor, probabilities: torch.Tensor, config: TransitionPriorConfig,
                 neighbours: torch.Tensor | None = None, neighbour_weights: torch.Tensor | None = None):
        """``successors`` / ``probabilities``: [n_items, keep], each item's strongest successors (index, -1 for
        none) and their share of what followed it; ``neighbours`` / ``neighbour_weights``: [n_items, keep] EASE
        neighbours (:func:`~sid4llm.decoding.cooccurrence.ease_neighbours`), or None."""
        if successors.shape != probabilities.shape or successors.shape[0] != config.n_items:
            raise ValueError(f"transition prior: successors {tuple(successors.shape)} and probabilities "
                             f"{tuple(probabilities.shape)} must both be [n_items={config.n_items}, keep]")
        if (neighbours is None) != (neighbour_weights is None) or (neighbours is not None and (
                neighbours.shape != neighbour_weights.shape or neighbours.shape[0] != config.n_items)):
            raise ValueError("transition prior: neighbours and neighbour_weights must both be [n_items, keep] or both "
                             "be absent")
        if config.cooccurrence_weight and neighbours is None:
            raise ValueError(f"transition prior: cooccurrence_weight {config.cooccurrence_weight} needs the "
                             "co-occurrence neighbours (add_cooccurrence)")
        self.successors, self.probabilities, self.config = successors.long(), probabilities.float(), config
        self.neighbours = None if neighbours is None else neighbours.long()
        self.neighbour_weights = None if neighbour_weights is None else neighbour_weights.float()

    @classmethod
    def count(cls, sequences: Sequence[Sequence[int]], n_items: int, span: int = 3, keep: int = 100,
              recent: int = 5, recency_decay: float = 0.9) -> ItemTransitionPrior:
        """Count from users' item sequences (codebook indices in time order): train histories only, as the
        model is trained."""
        rows, cols, vals = [], [], []
        for seq in sequences:
            seq = np.asarray(seq, dtype=np.int64)
            for d in range(1, span + 1):
                if len(seq) > d:
                    rows.append(seq[:-d]), cols.append(seq[d:]), vals.append(np.full(len(seq) - d, 1.0 / d))
        keep = min(keep, n_items)
        successors = np.full((n_items, keep), -1, dtype=np.int64)
        probabilities = np.zeros((n_items, keep), dtype=np.float32)
        if rows:  # sparse: a catalogue's item pairs never sit in memory as a dense matrix
            pairs, where = np.unique(np.concatenate(rows) * n_items + np.concatenate(cols), return_inverse=True)
            weights = np.bincount(where.ravel(), weights=np.concatenate(vals))
            row, col = pairs // n_items, pairs % n_items
            order = np.lexsort((col, -weights, row))  # by item, strongest successor first (ties: lower index)
            row, col, weights = row[order], col[order], weights[order]
            starts = np.searchsorted(row, row, side="left")
            rank = np.arange(len(row)) - starts
            totals = np.bincount(row, weights=weights, minlength=n_items)
            kept = rank < keep
            successors[row[kept], rank[kept]] = col[kept]
            probabilities[row[kept], rank[kept]] = weights[kept] / totals[row[kept]]
        successors, probabilities = torch.from_numpy(successors), torch.from_numpy(probabilities)
        return cls(successors, probabilities,
                   TransitionPriorConfig(n_items, span, keep, recent, recency_decay))

    def add_cooccurrence(self, sequences: Sequence[Sequence[int]], l2: float = 200.0, keep: int = 500) -> None:
        """Learn the whole-history term's EASE neighbours from the same train histories (its weight stays 0 until
        chosen)."""
        self.neighbours, weights = ease_neighbours(sequences, self.config.n_items, l2, keep)
        self.neighbour_weights = weights.half().float()  # as saved: the weights chosen on valid users are the served ones
        self.config.cooccurrence_l2 = l2

    @property
    def weight(self) -> float:
        return self.config.weight

    @property
    def has_cooccurrence(self) -> bool:
        return self.neighbours is not None

    def log_prior(self, histories: Sequence[Sequence[int]], n_items: int | None = None) -> torch.Tensor:
        """[len(histories), n_items]: the prior's log term of every item for each history: the transitions' log(p +
        1/n), plus ``cooccurrence_weight`` times the co-occurrence log-softmax when that weight is set."""
        transitions = self.transition_log_prior(histories, n_items)
        if not self.config.cooccurrence_weight:
            return transitions
        return transitions + self.config.cooccurrence_weight * self.cooccurrence_log_prior(
            histories, transitions.shape[1], self.config.cooccurrence_temperature)

    def cooccurrence_log_prior(self, histories: Sequence[Sequence[int]], n_items: int,
                               temperature: float) -> torch.Tensor:
        """[len(histories), n_items]: log softmax(EASE score / ``temperature``) over the items. Within one history
        this is the score over the temperature less a constant, so only ``cooccurrence_weight / temperature``
        orders a list: the weight is what is chosen, the temperature keeps the term on a log-probability's scale."""
        if self.neighbours is None:
            raise ValueError("transition prior: no co-occurrence neighbours (add_cooccurrence)")
        scores = cooccurrence_scores(self.neighbours, self.neighbour_weights, histories, n_items) / temperature
        return scores.log_softmax(1)

    def transition_log_prior(self, histories: Sequence[Sequence[int]], n_items: int | None = None) -> torch.Tensor:
        """[len(histories), n_items]: log(p + 1/n) of each item following each history, p the decayed votes of the
        history's last ``recent`` items, normalised. Items past the counted ones (added later) get the floor."""
        n = max(n_items or self.config.n_items, self.config.n_items)
        picks = [[(item, self.config.recency_decay ** age) for age, item in enumerate(reversed(
            [i for i in list(history)[-self.config.recent:] if 0 <= i < self.config.n_items]))] for history in histories]
        votes = sparse_row_sums(self.successors, self.probabilities, picks, n)
        p = votes / votes.sum(1, keepdim=True).clamp(min=1e-12)
        return torch.log(p + 1.0 / n)

    def top_items(self, histories: Sequence[Sequence[int]], m: int, n_items: int | None = None,
                  exclude: Sequence[Collection[int]] | None = None,
                  log_prior: torch.Tensor | None = None) -> list[list[int]]:
        """The ``m`` items the prior rates highest after each history (best first, ties to the lower index), leaving
        out ``exclude``'s (one collection per history); none for an empty history, where the prior knows nothing of
        the user. Candidates the beam may have missed: the prior alone ranks about as well as the model does, on
        other items. ``log_prior``: the [len(histories), n] terms to rank by (default :meth:`log_prior`'s)."""
        if m <= 0 or not histories:
            return [[] for _ in histories]
        prior = (self.log_prior(histories, n_items) if log_prior is None else log_prior).clone()
        for user, items in enumerate(exclude or []):
            prior[user, [i for i in items if 0 <= i < prior.shape[1]]] = float("-inf")
        values, order = prior.sort(dim=1, descending=True, stable=True)
        values, order = values[:, :m].tolist(), order[:, :m].tolist()
        return [[i for i, v in zip(row, vals) if v > float("-inf")] if len(history) else []
                for row, vals, history in zip(order, values, histories)]

    def candidate_log_prior(self, ranked: list[tuple[int, float]], history: Sequence[int]) -> list[float]:
        """log(p_prior + 1/n) at each item of ``ranked`` ((index, log p_model), from the beam): what re-ranking
        adds, weighted, whatever the weight — so weights can be compared on one computation."""
        if not ranked:
            return []
        prior = self.log_prior([history], max(max(i for i, _ in ranked) + 1, self.config.n_items))[0]
        return [float(prior[i]) for i, _ in ranked]

    @staticmethod
    def fuse(ranked: list[tuple[int, float]], log_prior: list[float], k: int,
             weight: float) -> list[tuple[int, float]]:
        """The ``k`` best of ``ranked`` by log p_model + weight · ``log_prior`` (ties: lower index); weight 0: the
        beam's own order."""
        if not weight:
            return list(ranked[:k])
        fused = [(i, s + weight * p) for (i, s), p in zip(ranked, log_prior)]
        return sorted(fused, key=lambda r: (-r[1], r[0]))[:k]

    def rerank(self, ranked: list[tuple[int, float]], history: Sequence[int], k: int,
               weight: float | None = None) -> list[tuple[int, float]]:
        """The ``k`` best of ``ranked`` ((index, log p_model), from the beam) by log p_model + weight · log prior."""
        weight = self.weight if weight is None else weight
        if not weight:
            return list(ranked[:k])
        return self.fuse(ranked, self.candidate_log_prior(ranked, history), k, weight)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path) -> Path:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"successors": self.successors.int().contiguous(), "probabilities": self.probabilities.contiguous()}
        if self.neighbours is not None:
            tensors.update(neighbours=self.neighbours.int().contiguous(),  # half precision: ranks as full does
                           neighbour_weights=self.neighbour_weights.half().contiguous())
        save_file(tensors, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ItemTransitionPrior:
        path = Path(directory)
        values = read_json(path / CONFIG_FILE)
        try:
            config = TransitionPriorConfig(**values)
        except TypeError as err:
            raise ArtifactError(f"{path / CONFIG_FILE}: {err}") from None
        if not (path / WEIGHTS_FILE).is_file():
            raise ArtifactError(f"{path / WEIGHTS_FILE}: file missing (the counted successors of each item)")
        tensors = load_file(str(path / WEIGHTS_FILE))
        try:
            return cls(tensors["successors"], tensors["probabilities"], config, tensors.get("neighbours"),
                       tensors.get("neighbour_weights"))
        except (KeyError, ValueError) as err:
            raise ArtifactError(f"{path / WEIGHTS_FILE}: {err}") from None
