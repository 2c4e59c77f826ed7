"""Which items go with a user's whole history: EASE item-item weights, kept sparse.

The transition count (:mod:`sid4llm.decoding.transition_prior`) reads only what *followed* a user's last items. A
user's whole history says more: items that are watched (bought, read) by the same people whatever the order.
EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) learns that in closed form: item-item
weights ``B`` that rebuild each train history from the other items of it, with an L2 penalty and a zero diagonal,
``B = I - P · diag(1 / diag(P))`` for ``P = (XᵀX + λI)⁻¹``. A history's score for item ``j`` is the sum of ``B[i, j]``
over its items ``i``. One ``n_items × n_items`` inverse: seconds for a few thousand items, minutes at 20,000
(:data:`MAX_ITEMS` guards the memory); each item's ``keep`` strongest neighbours, by magnitude, are kept
(500 of MovieLens-1M's 3,416 recall as well as all of them, for 10 MB saved in half precision).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

MAX_ITEMS = 20_000  # an n × n float32 inverse: 1.6 GB at this size


def ease_neighbours(sequences: Sequence[Sequence[int]], n_items: int, l2: float = 200.0,
                    keep: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_items, keep] indices (-1: none) and weights of each item's strongest EASE neighbours (by magnitude), learnt from
    users' item sequences (train histories only, as the model is trained)."""
    if n_items > MAX_ITEMS:
        raise ValueError(f"co-occurrence prior: {n_items:,} items is more than the {MAX_ITEMS:,} its dense "
                         "item-item inverse is sized for; leave it off (transition_prior_cooccurrence: [0])")
    if l2 <= 0:
        raise ValueError(f"co-occurrence prior: l2 must be > 0, got {l2}")
    rows = [np.unique(np.asarray(seq, dtype=np.int64)) for seq in sequences]
    gram = np.zeros((n_items, n_items), dtype=np.float32)
    for items in rows:  # XᵀX without the dense user × item matrix
        items = items[(items >= 0) & (items < n_items)]
        gram[np.ix_(items, items)] += 1.0
    gram[np.diag_indices(n_items)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    keep = min(keep, n_items)
    # The strongest by magnitude: a negative weight (items that do not go together) speaks as much as a positive one.
    top = np.argpartition(-np.abs(weights), keep - 1, axis=1)[:, :keep] if keep < n_items else \
        np.tile(np.arange(n_items), (n_items, 1))
    values = np.take_along_axis(weights, top, axis=1)
    order = np.argsort(-np.abs(values), axis=1, kind="stable")
    top, values = np.take_along_axis(top, order, 1), np.take_along_axis(values, order, 1)
    top[values == 0] = -1
    return torch.from_numpy(top.astype(np.int64)), torch.from_numpy(values.astype(np.float32))


def sparse_row_sums(indices: torch.Tensor, values: torch.Tensor, picks: Sequence[Sequence[tuple[int, float]]],
                    n_items: int) -> torch.Tensor:
    """[len(picks), n_items]: for each history, the sum of ``coefficient · values[item]`` scattered at
    ``indices[item]`` over its (item, coefficient) picks — a sparse [n, keep] table's rows added up (-1: no entry)."""
    sums = torch.zeros((len(picks), n_items + 1))  # column n_items: where the "no entry" slots (-1) land
    for row, items in enumerate(picks):
        for item, coefficient in items:
            cols = indices[item].masked_fill(indices[item] < 0, n_items)
            sums[row].index_add_(0, cols, values[item] * coefficient)
    return sums[:, :n_items]


def cooccurrence_scores(neighbours: torch.Tensor, weights: torch.Tensor, histories: Sequence[Sequence[int]],
                        n_items: int) -> torch.Tensor:
    """[len(histories), n_items] EASE scores: each history's items' neighbour weights summed (each item once)."""
    known = neighbours.shape[0]
    return sparse_row_sums(neighbours, weights, [[(i, 1.0) for i in sorted({i for i in h if 0 <= i < known})]
                                                 for h in histories], n_items)
