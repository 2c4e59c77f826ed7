"""The ID tokens as columns: the trie over an :class:`IdVocabulary` in column space, and what the decoders share
(left padding, the transformer under the head, the ID tokens' rows of the LM head)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..vocabulary import IdVocabulary
from .trie import IdTrie


@dataclass
class IdDecoder:
    """A trie over an :class:`IdVocabulary`, with tokens as *columns* of the ID-token head:
    column ``j < C-1`` is ``vocab.id_token_ids[j]``, column ``C-1`` the end marker.

    ``trie_softmax``: each ID token's probability is normalised over the trie's continuations of the ID written
    so far (in training and in decoding), so an item's summed log-probability is a log-probability over the
    catalogue's items; else over all ID tokens, with the trie only masking what decoding may choose."""

    vocab: IdVocabulary
    trie: IdTrie
    column_token_ids: torch.Tensor  # [C] tokenizer ids of the columns
    column_of_token: torch.Tensor  # tokenizer id -> column (-1 for non-ID tokens), up to the largest ID token
    trie_softmax: bool = False

    @classmethod
    def build(cls, vocab: IdVocabulary, device: str | torch.device = "cpu", trie_softmax: bool = False) -> IdDecoder:
        end_column = len(vocab.id_token_ids)
        trie = IdTrie.from_sequences(vocab.codebook.sequences, end_token=end_column, device=device)
        columns = torch.tensor([*vocab.id_token_ids, vocab.end_id], dtype=torch.long, device=device)
        lookup = torch.full((int(columns.max()) + 1,), -1, dtype=torch.long, device=device)
        lookup[columns] = torch.arange(len(columns), device=device)
        return cls(vocab, trie, columns, lookup, trie_softmax)

    def to(self, device) -> IdDecoder:
        return IdDecoder(self.vocab, self.trie.to(device), self.column_token_ids.to(device), self.column_of_token.to(device),
                         self.trie_softmax)

    @property
    def num_columns(self) -> int:
        return len(self.column_token_ids)

    def token_to_column(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids → column index (-1 for tokens that are not ID tokens)."""
        lookup = self.column_of_token
        inside = (tokens >= 0) & (tokens < len(lookup))
        return torch.where(inside, lookup[tokens.clamp(0, len(lookup) - 1)], torch.full_like(tokens, -1))

    def prefix_nodes(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] token rows → the trie node each position leaves the ID being read at: the root after a token that
        is not part of an ID (a user-start token, words, a begin marker, an item memory token) or after an end
        marker, else the node reached by the item's tokens read so far (-1 where they leave the trie). The next
        token, when it is an ID token, is one of that node's continuations."""
        columns = self.token_to_column(input_ids)
        restart = (columns < 0) | (columns == self.num_columns - 1)
        nodes = torch.zeros_like(input_ids)
        for _ in range(self.trie.max_depth):  # after d rounds every position at depth <= d of its item is exact
            before = torch.nn.functional.pad(nodes[:, :-1], (1, 0))  # the root before a row's first token
            nodes = torch.where(restart, torch.zeros_like(nodes), self.trie.step(before, columns))
        return nodes

    def continuations(self, nodes: torch.Tensor) -> torch.Tensor:
        """[N] nodes → [N, C] bool: the columns that continue a valid ID from each node; every column for a node
        outside the trie (-1) and for a leaf (a finished ID), so a softmax over them is always defined."""
        return _every_column_where_none(self.trie.allowed_mask(nodes, self.num_columns) | (nodes < 0)[:, None])

    def log_probs(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """[N, C] ID-token logits and the trie's continuations at each row ([N, C] bool) → log-probabilities of the
        next ID token, normalised as the model was trained (:attr:`trie_softmax`: over the continuations; a row
        without any, a finished ID, over every column). Tokens that leave the trie are not masked here."""
        if self.trie_softmax:
            logits = logits.masked_fill(~_every_column_where_none(allowed), float("-inf"))
        return torch.log_softmax(logits, dim=-1)


def _every_column_where_none(allowed: torch.Tensor) -> torch.Tensor:
    """[N, C] bool with every column allowed in rows that allow none (a finished ID), so each row's softmax is defined."""
    return allowed | ~allowed.any(1, keepdim=True)


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


def transformer_of(model):
    """The transformer under the LM head (works through a PEFT wrapper, whose LoRA layers live inside it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix)


def id_head_rows(model, column_token_ids: torch.Tensor) -> torch.Tensor:
    """The LM-head rows of the ID tokens (through PEFT trainable-token wrappers, tied or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "tie_word_embeddings", False) or getattr(base.config.get_text_config(), "tie_word_embeddings", False):
        return model.get_input_embeddings()(column_token_ids)
    head = base.get_output_embeddings()
    layer = getattr(head, "token_adapter", head)  # peft's trainable tokens on an untied head
    weight = layer.base_layer.weight if hasattr(layer, "base_layer") else layer.weight
    rows = weight[column_token_ids]
    if hasattr(layer, "trainable_tokens_delta") and not layer.disable_adapters:
        for adapter in layer.active_adapters:
            if adapter not in layer.trainable_tokens_delta:
                continue
            position = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
            indices = torch.as_tensor(layer.token_indices[adapter], device=weight.device)
            position[indices] = torch.arange(len(indices), device=weight.device)
            found = position[column_token_ids]
            delta = layer.trainable_tokens_delta[adapter]
            rows = torch.where((found >= 0)[:, None], delta[found.clamp(min=0)].to(rows.dtype), rows)
    return rows


def cache_keyword(module) -> str:
    """The keyword ``module.forward`` takes a KV cache under: ``cache`` in the transformers releases that renamed
    it (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache a forward returned, under the name this transformers release gives it."""
    return output["cache"] if "cache" in output.keys() else output.past_key_values
