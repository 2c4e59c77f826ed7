"""A prefix trie of every valid ID, stored as tensors (CSR transitions) so decoding can be constrained for a
whole batch of users × beams with a few tensor operations per step.

The trie starts right after the begin-of-ID marker. A path is the item's ID tokens followed by the end
marker; the node reached after the end marker is a leaf that names the item. Nodes are numbered level by
level; the edges of node ``n`` are ``edge_tokens[indptr[n]:indptr[n+1]]`` (sorted), leading to
``edge_children[...]``. A transition (node, token) is found with one ``searchsorted`` over
``edge_keys = parent * key_base + token``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class IdTrie:
    def __init__(self, indptr, edge_tokens, edge_children, edge_keys, node_item, key_base: int, max_depth: int):
        self.indptr = indptr
        self.edge_tokens = edge_tokens
        self.edge_children = edge_children
        self.edge_keys = edge_keys
        self.node_item = node_item
        self.key_base = key_base
        self.max_depth = max_depth

    # ------------------------------------------------------------------ building
    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], end_token: int, device: str | torch.device = "cpu") -> IdTrie:
        """Build from each item's token ids (without markers); item ``i`` is ``sequences[i]``.

        Vectorised: one ``np.unique`` per depth, so a million items take seconds."""
        n = len(sequences)
        if n == 0:
            raise ValueError("cannot build a trie with no items")
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n)
        depth = int(lengths.max()) + 1  # + the end marker
        paths = np.full((n, depth), -1, dtype=np.int64)
        flat = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        paths[rows, cols] = flat
        paths[np.arange(n), lengths] = end_token
        key_base = int(max(flat.max(initial=0), end_token)) + 1

        node = np.zeros(n, dtype=np.int64)  # every item starts at the root (node 0)
        n_nodes = 1
        parents, tokens, children = [], [], []
        for d in range(depth):
            active = lengths >= d  # items whose path has a token at depth d (the end marker sits at d == length)
            keys = node[active] * key_base + paths[active, d]
            unique_keys, inverse = np.unique(keys, return_inverse=True)
            child_ids = n_nodes + np.arange(len(unique_keys))
            parents.append(unique_keys // key_base)
            tokens.append(unique_keys % key_base)
            children.append(child_ids)
            node[active] = child_ids[inverse]
            n_nodes += len(unique_keys)
        parents, tokens, children = (np.concatenate(a) for a in (parents, tokens, children))
        if len(np.unique(node)) != n:
            raise ValueError("two items share one ID: the trie needs unique IDs (deduplicate the codebook)")
        order = np.lexsort((tokens, parents))
        parents, tokens, children = parents[order], tokens[order], children[order]
        indptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.add.at(indptr, parents + 1, 1)
        indptr = np.cumsum(indptr)
        node_item = np.full(n_nodes, -1, dtype=np.int64)
        node_item[node] = np.arange(n)
        t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        return cls(t(indptr), t(tokens), t(children), t(parents * key_base + tokens), t(node_item), key_base, depth)

    def to(self, device: str | torch.device) -> IdTrie:
        return IdTrie(self.indptr.to(device), self.edge_tokens.to(device), self.edge_children.to(device),
                      self.edge_keys.to(device), self.node_item.to(device), self.key_base, self.max_depth)

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.edge_tokens, self.edge_children,
                                                           self.edge_keys, self.node_item))

    # ------------------------------------------------------------------ walking
    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each (node, token); -1 where the token leaves the trie (or the node is -1)."""
        keys = nodes.clamp(min=0) * self.key_base + tokens.clamp(min=0, max=self.key_base - 1)
        pos = torch.searchsorted(self.edge_keys, keys).clamp(max=len(self.edge_keys) - 1)
        ok = (self.edge_keys[pos] == keys) & (nodes >= 0) & (tokens >= 0) & (tokens < self.key_base)
        return torch.where(ok, self.edge_children[pos], torch.full_like(nodes, -1))

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """[len(nodes), vocab_size] bool: the tokens that continue a valid ID from each node."""
        nodes = nodes.clamp(min=0)
        starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
        counts = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
        offsets = torch.arange(int(counts.sum()), device=nodes.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self.edge_tokens[torch.repeat_interleave(starts, counts) + offsets]] = True
        return mask

    def walk(self, token_rows: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Node reached by each row of tokens from the root ([B, T]; ``valid`` masks trailing positions)."""
        nodes = torch.zeros(token_rows.shape[0], dtype=torch.long, device=token_rows.device)
        for j in range(token_rows.shape[1]):
            nxt = self.step(nodes, token_rows[:, j])
            nodes = nxt if valid is None else torch.where(valid[:, j], nxt, nodes)
        return nodes

    def items_of(self, nodes: torch.Tensor) -> torch.Tensor:
        return torch.where(nodes >= 0, self.node_item[nodes.clamp(min=0)], torch.full_like(nodes, -1))
