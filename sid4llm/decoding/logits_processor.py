"""Trie-constrained ``model.generate``: :class:`TrieLogitsProcessor` masks every token that would leave the trie,
for all users × beams at once (tensor ops, no Python per beam). ``mode="id"`` makes the answer one ID that
starts right after the prompt (an ID stream, or text ending with the begin marker); ``mode="mixed"`` lets the
model write free text, constrains it once it opens an ID, frees it again after the ID closes (chat)."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .columns import IdDecoder


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
        scores = scores.masked_fill(~mask, float("-inf"))
        if dec.trie_softmax and len(rows_in):  # renormalised over the continuations, as the model was trained
            scores[rows_in] = torch.log_softmax(scores[rows_in], dim=-1)
        return scores
