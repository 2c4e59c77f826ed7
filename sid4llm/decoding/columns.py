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
    """The LM-head rows of the ID tokens (through PEFT trainable-token wrappers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "tie_word_embeddings", False) or getattr(base.config.get_text_config(), "tie_word_embeddings", False):
        return model.get_input_embeddings()(column_token_ids)
    head = base.get_output_embeddings()
    weight = head.weight if hasattr(head, "weight") else head.base_layer.weight
    return weight[column_token_ids]


def cache_keyword(module) -> str:
    """The keyword ``module.forward`` takes a KV cache under: ``cache`` in the transformers releases that renamed
    it (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache a forward returned, under the name this transformers release gives it."""
    return output["cache"] if "cache" in output.keys() else output.past_key_values
