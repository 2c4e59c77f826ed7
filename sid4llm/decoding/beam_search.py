"""Decoding IDs that always name a real item.

1. :class:`TrieLogitsProcessor` plugs into ``model.generate``: it masks every token that would leave the
   trie, for all users × beams at once (tensor ops, no Python per beam). ``mode="id"`` makes the answer one
   ID that starts right after the prompt (an ID stream, or text ending with the begin marker);
   ``mode="mixed"`` lets the model write free text, constrains it once it opens an ID, frees it again after
   the ID closes (chat).
2. :func:`recommend_top_k` is the fast path for top-K items: one prompt pass, then a beam search over the
   trie that reuses the prompt's KV cache (tree attention: one new token per beam per step, all beams of a
   user in one sequence) and scores only the ID tokens' rows of the LM head (normalised over them), in
   batches of users with left padding. Summed log-probabilities rank candidates (no length normalisation);
   the search stops as soon as no open beam can beat the K-th finished item. Items a user must not get (the
   history, as evaluations in the field leave it out) are never finished: their end marker is masked.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from ..lm.tokenization import IdVocabulary
from .trie import IdTrie


@dataclass
class IdDecoder:
    """A trie over an :class:`IdVocabulary`, with tokens as *columns* of the ID-token head:
    column ``j < C-1`` is ``vocab.id_token_ids[j]``, column ``C-1`` the end marker."""

    vocab: IdVocabulary
    trie: IdTrie
    column_token_ids: torch.Tensor  # [C] tokenizer ids of the columns
    column_of_token: torch.Tensor  # tokenizer id -> column (-1 for non-ID tokens), up to the largest ID token

    @classmethod
    def build(cls, vocab: IdVocabulary, device: str | torch.device = "cpu") -> IdDecoder:
        end_column = len(vocab.id_token_ids)
        trie = IdTrie.from_sequences(vocab.codebook.sequences, end_token=end_column, device=device)
        columns = torch.tensor([*vocab.id_token_ids, vocab.end_id], dtype=torch.long, device=device)
        lookup = torch.full((int(columns.max()) + 1,), -1, dtype=torch.long, device=device)
        lookup[columns] = torch.arange(len(columns), device=device)
        return cls(vocab, trie, columns, lookup)

    def to(self, device) -> IdDecoder:
        return IdDecoder(self.vocab, self.trie.to(device), self.column_token_ids.to(device), self.column_of_token.to(device))

    @property
    def num_columns(self) -> int:
        return len(self.column_token_ids)

    def token_to_column(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids → column index (-1 for tokens that are not ID tokens)."""
        lookup = self.column_of_token
        inside = (tokens >= 0) & (tokens < len(lookup))
        return torch.where(inside, lookup[tokens.clamp(0, len(lookup) - 1)], torch.full_like(tokens, -1))


def _last_position(hits: torch.Tensor) -> torch.Tensor:
    """Per row, the last column where ``hits`` is True (-1 when none, or when there are no columns)."""
    if hits.shape[1] == 0:
        return torch.full((hits.shape[0],), -1, dtype=torch.long, device=hits.device)
    positions = torch.arange(hits.shape[1], device=hits.device).expand_as(hits)
    return torch.where(hits, positions, torch.full_like(positions, -1)).amax(1)


class TrieLogitsProcessor(LogitsProcessor):
    """Constrain ``generate`` to valid IDs. ``prompt_length`` is the (left-padded) prompt width."""

    def __init__(self, decoder: IdDecoder, prompt_length: int, mode: str = "id", eos_token_id: int | None = None):
        if mode not in ("id", "mixed"):
            raise ValueError("mode must be 'id' or 'mixed'")
        self.decoder, self.prompt_length, self.mode = decoder, prompt_length, mode
        vocab = decoder.vocab
        self.begin_id, self.end_id = vocab.begin_id, vocab.end_id
        self.eos_token_id = eos_token_id if eos_token_id is not None else vocab.tokenizer.eos_token_id
        self.id_token_ids = torch.tensor(vocab.new_token_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        n, t = generated.shape
        device = scores.device
        dec = self.decoder
        if dec.column_token_ids.device != device:
            self.decoder = dec = dec.to(device)
        last_end = _last_position(generated == self.end_id)
        if self.mode == "id":  # one ID from the first generated token to its end marker
            inside = last_end < 0
            span_valid = inside[:, None].expand(n, t)
        else:  # an ID is open after a begin marker that no end marker closed
            last_begin = _last_position(generated == self.begin_id)
            inside = last_begin > last_end
            positions = torch.arange(t, device=device).expand(n, t)
            span_valid = (positions > last_begin[:, None]) & inside[:, None]
        # Walk the trie over the tokens written since the ID opened (no tokens: the root).
        nodes = dec.trie.walk(dec.token_to_column(generated), span_valid)
        allowed_cols = dec.trie.allowed_mask(nodes, dec.num_columns)  # [n, C]
        mask = torch.zeros_like(scores, dtype=torch.bool)
        rows_in = inside.nonzero().squeeze(1)
        if len(rows_in):
            cols = allowed_cols[rows_in]
            r, c = cols.nonzero(as_tuple=True)
            mask[rows_in[r], dec.column_token_ids[c]] = True
        outside = ~inside
        if self.mode == "id":
            if self.eos_token_id is not None:
                mask[outside, self.eos_token_id] = True  # the ID is closed: stop
        else:  # free text outside IDs, but ID tokens only inside an opened ID
            free = torch.ones(scores.shape[1], dtype=torch.bool, device=device)
            free[self.id_token_ids.to(device)] = False
            free[self.begin_id] = True
            mask[outside] = free
        return scores.masked_fill(~mask, float("-inf"))


# --------------------------------------------------------------------------------------------- fast top-K


def left_pad(prompts: list[list[int]], pad_token_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask for prompts of different lengths, padded on the left (so every
    prompt ends at the last column, where generation continues)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    attention = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p, device=device)
        attention[i, width - len(p):] = 1
    return input_ids, attention


def _backbone(model):
    """The transformer under the LM head (works through a PEFT wrapper, whose LoRA layers live inside it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def id_head_rows(model, column_token_ids: torch.Tensor) -> torch.Tensor:
    """The LM-head rows of the ID tokens (through PEFT trainable-token wrappers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "tie_word_embeddings", False) or getattr(base.config.get_text_config(), "tie_word_embeddings", False):
        return model.get_input_embeddings()(column_token_ids)
    head = base.get_output_embeddings()
    weight = head.weight if hasattr(head, "weight") else head.base_layer.weight
    return weight[column_token_ids]


@torch.no_grad()
def recommend_top_k(model, decoder: IdDecoder, prompts: list[list[int]], k: int = 10, num_beams: int | None = None,
                    pad_token_id: int = 0, exclude: list[Collection[int]] | None = None) -> list[list[tuple[int, float]]]:
    """Top-``k`` (codebook index, summed log-prob) per prompt; the next token after each prompt starts an ID.
    ``exclude``: per prompt, codebook indices never to return."""
    num_beams = max(num_beams or k, k)
    device = next(model.parameters()).device
    dec = decoder if decoder.column_token_ids.device == device else decoder.to(device)
    trie, C = dec.trie, dec.num_columns
    B = len(prompts)
    input_ids, attention = left_pad(prompts, pad_token_id, device)
    width = input_ids.shape[1]
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    backbone = _backbone(model)
    out = backbone(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    cache = out.past_key_values
    head = id_head_rows(model, dec.column_token_ids)  # [C, H]
    banned = torch.zeros((B, len(dec.vocab.codebook)), dtype=torch.bool, device=device)
    for user, items in enumerate(exclude or []):
        banned[user, list(items)] = True
    end_column = torch.full((1,), C - 1, dtype=torch.long, device=device)
    any_banned = bool(banned.any())

    def allowed(nodes: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Trie continuations of each node, without the end marker that would finish a left-out item."""
        mask = trie.allowed_mask(nodes, C)
        if not any_banned:
            return mask
        finishing = trie.items_of(trie.step(nodes, end_column.expand_as(nodes)))
        mask[:, C - 1] &= ~((finishing >= 0) & banned[users, finishing.clamp(min=0)])
        return mask

    # First expansion: from the root, each user keeps its best `num_beams` first tokens.
    logp = torch.log_softmax(out.last_hidden_state[:, -1] @ head.T, dim=-1)
    root = torch.zeros(B, dtype=torch.long, device=device)
    logp = logp.masked_fill(~allowed(root, torch.arange(B, device=device)), float("-inf"))
    beams = num_beams
    first = min(beams, C)
    scores = torch.full((B, beams), float("-inf"), device=device)
    cols = torch.zeros((B, beams), dtype=torch.long, device=device)
    scores[:, :first], cols[:, :first] = logp.topk(first, dim=1)  # beams past `first` start empty (-inf)
    nodes = trie.step(root.repeat_interleave(beams), cols.reshape(-1))
    scores = scores.reshape(-1)
    # Tree attention with a growing tree cache: each step feeds one new token per beam, all beams of a user as
    # one sequence, appended to that user's cache (prompt + every token fed so far). A beam's token attends to
    # the prompt and to the cached tokens of its own ancestors only, so the prompt cache is never copied per
    # beam or reordered and no token is computed twice.
    first_position = positions[:, -1] + 1  # [B]
    dtype = out.last_hidden_state.dtype
    blocked = torch.finfo(dtype).min
    prompt_mask = torch.where(attention.bool(), 0.0, blocked).to(dtype)  # [B, W]
    last_cols = cols.reshape(-1)  # the token each beam chose last, not yet fed to the model
    ancestors = torch.empty((B * beams, 0), dtype=torch.long, device=device)  # tree-cache slots of fed tokens
    user_of = torch.arange(B, device=device).repeat_interleave(beams)
    fed = 0  # tree tokens in the cache (per user)
    finished: list[list[tuple[float, int]]] = [[] for _ in range(B)]

    for depth in range(trie.max_depth):
        items = trie.items_of(nodes)
        done = (items >= 0) & (scores > float("-inf"))
        for flat, item, score in zip(done.nonzero().squeeze(1).tolist(), items[done].tolist(), scores[done].tolist()):
            finished[flat // beams].append((score, item))
        scores = torch.where(items >= 0, torch.full_like(scores, float("-inf")), scores)
        # Stop when no open beam can beat the k-th finished item of its user (log-probs only decrease).
        best_open = scores.reshape(B, beams).max(1).values
        kth = torch.tensor([sorted(f, reverse=True)[k - 1][0] if len(f) >= k else float("-inf") for f in finished],
                           device=device)
        if bool(((best_open == float("-inf")) | (best_open <= kth)).all()):
            break
        own = fed + torch.arange(beams, device=device).repeat(B)  # this step's slot of each beam
        visible = torch.cat([ancestors, own[:, None]], 1)  # [B*beams, depth + 1]
        tree_mask = torch.full((B * beams, fed + beams), blocked, dtype=dtype, device=device)
        tree_mask.scatter_(1, visible, 0.0)
        mask = torch.cat([prompt_mask[user_of], tree_mask], 1).reshape(B, 1, beams, width + fed + beams)
        out = backbone(input_ids=dec.column_token_ids[last_cols].reshape(B, beams), attention_mask=mask,
                       position_ids=(first_position + depth)[:, None].expand(B, beams), past_key_values=cache,
                       use_cache=True)
        cache = out.past_key_values
        fed += beams
        logp = torch.log_softmax(out.last_hidden_state.reshape(B * beams, -1) @ head.T, dim=-1)
        logp = logp.masked_fill(~allowed(nodes, user_of), float("-inf"))
        candidates = (scores[:, None] + logp).reshape(B, beams * C)
        scores, flat_idx = candidates.topk(beams, dim=1)
        parent = ((flat_idx // C) + torch.arange(B, device=device)[:, None] * beams).reshape(-1)
        last_cols = (flat_idx % C).reshape(-1)
        scores = scores.reshape(-1)
        ancestors = visible[parent]
        nodes = trie.step(nodes[parent], last_cols)
    results = []
    for f in finished:
        best = sorted(f, key=lambda s: (-s[0], s[1]))[:k]
        results.append([(item, score) for score, item in best])
    return results
