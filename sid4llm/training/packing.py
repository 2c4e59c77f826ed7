"""Packing training segments into rows, and the collator that pads them (and applies the training-only
augmentations: item memory-token dropout, stream item dropout, tie shuffling), for the HF ``Trainer``.

Segments (:mod:`sid4llm.lm.tasks`) are packed best-fit into rows of ``max_seq_length`` tokens whose
``position_ids`` restart at every segment, which transformers turns into a block-diagonal causal mask: one user
never attends to another.
"""

from __future__ import annotations

import bisect
import random

import numpy as np
import torch
from datasets import Dataset

from ..lm.tasks import IGNORE_INDEX, NO_TIE_GROUP


def pack_segments(segments: Dataset, max_seq_length: int, seed: int = 0) -> Dataset:
    """Pack segments into rows of at most ``max_seq_length`` tokens (best fit, longest segments first, then
    rows shuffled), with ``position_ids`` that restart at each segment so attention stays inside it (and the segments'
    ``tie_groups``, when they have them)."""
    lengths = np.array([len(x) for x in segments["input_ids"]])
    if len(lengths) and lengths.max() > max_seq_length:
        raise ValueError(f"a segment of {lengths.max()} tokens is longer than max_seq_length={max_seq_length}")
    rows: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # (free tokens, row), sorted: best fit = the tightest row that still fits
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        at = bisect.bisect_left(rooms, (n, -1))
        if at < len(rooms):
            room, r = rooms.pop(at)
            rows[r].append(int(i))
        else:
            room, r = max_seq_length, len(rows)
            rows.append([int(i)])
        bisect.insort(rooms, (room - n, r))
    random.Random(seed).shuffle(rows)
    columns = {key: segments[key] for key in ("input_ids", "labels", "tie_groups") if key in segments.column_names}
    ids = columns["input_ids"]
    packed: dict[str, list] = {key: [] for key in [*columns, "position_ids"]}
    for row in rows:
        for key, values in columns.items():
            packed[key].append([t for i in row for t in values[i]])
        packed["position_ids"].append([p for i in row for p in range(len(ids[i]))])
    return Dataset.from_dict(packed)


class PackedCollator:
    """Right-pads packed rows: pad tokens get label -100 and position 0 (each a segment of its own).

    With ``memory_dropout`` > 0 (and the vocabulary's ``memory_token_ids``), each item memory token of a batch is
    read as the plain end marker with that probability, drawn afresh every batch: the model learns to read items
    that have no memory token (added after training) and leans less on a per-item vector it may have seen a few
    times only.

    With ``item_dropout`` > 0 (and ``user_id``), each item of a whole-history ID stream (a segment that starts
    with the user-start token) is left out of the batch with that probability — its tokens, its labels and its
    place, positions closed up — drawn afresh every batch: every epoch reads each history with a few items
    skipped, as a user skips rating what they watched, so a small dataset's repeated passes stop being the same
    sequences (random item deletion, an augmentation of sequential recommenders). Request and text segments are
    left whole.

    With ``tie_shuffle`` (and rows with ``tie_groups``, see :func:`stream_tie_groups`), the items of each group —
    a user's items that share a timestamp — are put in a random order, each item's tokens and labels moving
    together, drawn afresh every batch (before any item dropout). :meth:`without_augmentation` is the same collator
    with all of these off (for evaluation)."""

    def __init__(self, pad_token_id: int, memory_token_ids: list[int] | None = None, end_id: int | None = None,
                 memory_dropout: float = 0.0, seed: int = 0, item_dropout: float = 0.0, user_id: int | None = None,
                 tie_shuffle: bool = False):

        if not 0.0 <= memory_dropout <= 1.0:
            raise ValueError(f"item memory dropout must be in [0, 1], got {memory_dropout}")
        if memory_dropout > 0 and memory_token_ids and end_id is None:
            raise ValueError("item memory dropout needs the end marker's token id")
        if not 0.0 <= item_dropout < 1.0:
            raise ValueError(f"stream item dropout must be in [0, 1), got {item_dropout}")
        if item_dropout > 0 and (user_id is None or end_id is None):
            raise ValueError("stream item dropout needs the user-start and end-marker token ids")
        if tie_shuffle and end_id is None:
            raise ValueError("shuffling tied items needs the end-marker token id")
        self.pad_token_id, self.end_id, self.memory_dropout = pad_token_id, end_id, memory_dropout
        self.memory_token_ids, self.seed = list(memory_token_ids or []), seed
        self.memory_ids = torch.tensor(self.memory_token_ids, dtype=torch.long)
        self.item_dropout, self.user_id, self.tie_shuffle = item_dropout, user_id, tie_shuffle
        self.item_ends = {end_id, *self.memory_token_ids} - {None}
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)

    def without_augmentation(self) -> PackedCollator:
        return PackedCollator(self.pad_token_id, self.memory_token_ids, self.end_id, seed=self.seed)

    def __call__(self, rows: list[dict]) -> dict:

        if self.tie_shuffle:
            rows = [self._shuffle_ties(r) if "tie_groups" in r else r for r in rows]
        if self.item_dropout > 0:
            rows = [self._drop_items(r) for r in rows]
        width = max(len(r["input_ids"]) for r in rows)
        out = {}
        for key, pad in (("input_ids", self.pad_token_id), ("labels", IGNORE_INDEX), ("position_ids", 0)):
            out[key] = torch.tensor([list(r[key]) + [pad] * (width - len(r[key])) for r in rows], dtype=torch.long)
        if self.memory_dropout > 0 and len(self.memory_ids):
            ids = out["input_ids"]
            drop = torch.isin(ids, self.memory_ids) & (torch.rand(ids.shape, generator=self.generator) < self.memory_dropout)
            out["input_ids"] = ids.masked_fill(drop, self.end_id)
        return out

    def _shuffle_ties(self, row: dict) -> dict:
        """The row with the items of each tie group in a random order (positions stay: a segment keeps its length)."""
        ids, labels, groups, positions = row["input_ids"], row["labels"], row["tie_groups"], row["position_ids"]
        order: list[tuple[int, int]] = []  # (first token, end) of each item or lone token, in the new order
        run: list[tuple[int, int]] = []  # the items of the current tie group
        run_group, start = NO_TIE_GROUP, 0
        for k, (token, group) in enumerate(zip(ids, groups)):
            if run and (group != run_group or positions[k] == 0) and k == start:  # the group ends before this token
                self.rng.shuffle(run)
                order += run
                run = []
            if group == NO_TIE_GROUP:
                order.append((k, k + 1))
                start = k + 1
            elif token in self.item_ends or k + 1 == len(ids):  # an item's last token
                run.append((start, k + 1))
                run_group, start = group, k + 1
        self.rng.shuffle(run)
        kept = [k for a, b in order + run for k in range(a, b)]
        return {**row, "input_ids": [ids[k] for k in kept], "labels": [labels[k] for k in kept],
                "tie_groups": [groups[k] for k in kept]}

    def _drop_items(self, row: dict) -> dict:
        """The row with each ID-stream item left out with probability ``item_dropout``."""
        ids, labels, positions = list(row["input_ids"]), list(row["labels"]), list(row["position_ids"])
        starts = [k for k, p in enumerate(positions) if p == 0] + [len(ids)]
        kept: list[int] = []
        for a, b in zip(starts, starts[1:]):
            if ids[a] != self.user_id:
                kept += range(a, b)
                continue
            kept.append(a)
            item_start = a + 1
            for k in range(a + 1, b):
                if ids[k] in self.item_ends:
                    if self.rng.random() >= self.item_dropout:
                        kept += range(item_start, k + 1)
                    item_start = k + 1
            kept += range(item_start, b)  # a trailing partial item (none in a well-formed stream) stays
        new_positions, at = [], -1
        for k in kept:
            at = 0 if positions[k] == 0 else at + 1
            new_positions.append(at)
        return {"input_ids": [ids[k] for k in kept], "labels": [labels[k] for k in kept], "position_ids": new_positions}
