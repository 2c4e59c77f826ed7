"""The last decoder layer computed only where the loss reads it.

The loss reads the final hidden state only at positions whose next token is a target (an ID token to predict, an
answer's words). In a packed row of ID streams that is about half the positions (the first part of each window is
context), in a request only its answer. Elsewhere the last layer's output is never read: those positions matter to
it only as keys and values of its attention. So the last layer needs their key and value projections and nothing
else — their queries, attention output and MLP (most of a Llama block's arithmetic) are wasted. With one decoder
layer kept (the quickstart's ID path) that waste is most of a training step.

:func:`last_layer_at_scored_positions` computes the last layer at the scored positions only, with the same weights
and the same arithmetic, so the loss and its gradients are those of the full forward (up to float summation order).
It knows the pre-norm rotary blocks of Llama, Mistral and Qwen2 (SmolLM2 is a Llama); any other decoder layer, or
one wrapped by FSDP or DeepSpeed (hooks it cannot replay), runs as before. It reads packed rows: ``position_ids``
that restart at each segment, no attention mask, no cache (what :class:`~sid4llm.training.packing.PackedCollator`
gives and :class:`~sid4llm.training.trainer.IdLossTrainer` calls with).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..lm.models import decoder_layer_list

# Decoder blocks whose forward is: h + attn(norm(h)), then + mlp(norm(...)), rotary on q and k, grouped-query heads.
KNOWN_LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer")


def selectable_last_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's last decoder layer when its arithmetic is known here and nothing hooks into it; else None."""
    try:
        decoder, name = decoder_layer_list(model)
    except ValueError:
        return None
    layers = getattr(decoder, name)
    if not len(layers):
        return None
    layer = layers[-1]
    if type(layer).__name__ not in KNOWN_LAYERS:
        return None
    attn = getattr(layer, "self_attn", None)
    if attn is None or not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")):
        return None
    if any(foreign_hooks(m) for m in (layer, attn)):
        return None  # e.g. block dropout, ZeRO-3 parameter gathering: the selective path would skip them
    return layer


def foreign_hooks(module: torch.nn.Module) -> bool:
    """Whether something hooks into ``module`` besides transformers' own recorder of outputs (installed for good
    at the first ``output_hidden_states``; it records what the layer returns, so it still works)."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return any(getattr(h, "__name__", "") != "output_capturing_hook" for h in hooks)


@contextmanager
def last_layer_at_scored_positions(model: torch.nn.Module, scored: torch.Tensor) -> Iterator[bool]:
    """Within the block, the forward of ``model`` computes its last decoder layer only at the positions where
    ``scored`` ([batch, length] bool) is True; the other positions keep the layer's input there (no one reads them).
    Yields whether the selective path is on (False: the model runs as it is)."""
    layer = selectable_last_layer(model)
    if layer is None:
        yield False
        return

    def forward(hidden_states, attention_mask=None, position_ids=None, position_embeddings=None, **kwargs):
        if (position_ids is None or position_embeddings is None or kwargs.get("cache") is not None
                or attention_dropout_on(layer)):  # packed rows are read block-diagonally only without a cache
            return type(layer).forward(layer, hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                       position_embeddings=position_embeddings, **kwargs)
        return layer_at(layer, hidden_states, position_ids, position_embeddings, scored.to(hidden_states.device))

    layer.forward = forward
    try:
        yield True
    finally:
        del layer.forward


def attention_dropout_on(layer: torch.nn.Module) -> bool:
    return bool(layer.training and getattr(layer.self_attn, "attention_dropout", 0.0))


def layer_at(layer: torch.nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor,
             position_embeddings: tuple[torch.Tensor, torch.Tensor], scored: torch.Tensor) -> torch.Tensor:
    """``layer``'s output at the ``scored`` positions of packed rows (the input elsewhere)."""
    batch, length, _ = hidden.shape
    attn = layer.self_attn
    dim = attn.head_dim
    counts = scored.sum(1)
    width = int(counts.max()) if batch else 0
    if width == 0:
        return hidden
    x = layer.input_layernorm(hidden)
    keys = attn.k_proj(x).view(batch, length, -1, dim).transpose(1, 2)  # [B, kv heads, T, d]
    values = attn.v_proj(x).view(batch, length, -1, dim).transpose(1, 2)
    # Each row's scored positions first (in order), padded with unscored ones whose results are dropped.
    at = torch.argsort((~scored).to(torch.int8), dim=1, stable=True)[:, :width]  # [B, Q]
    rows = torch.arange(batch, device=hidden.device)[:, None].expand(batch, width)
    kept = torch.arange(width, device=hidden.device)[None] < counts[:, None]
    queries = attn.q_proj(x[rows, at]).view(batch, width, -1, dim).transpose(1, 2)  # [B, heads, Q, d]
    cos, sin = (t.expand(batch, *t.shape[1:]) for t in position_embeddings)  # [B, T, d]
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    queries = rotate(queries, queries, cos[rows, at], sin[rows, at])[0]
    keys = rotate(keys, keys, cos, sin)[1]
    groups = queries.shape[1] // keys.shape[1]
    keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    # A query attends to its own segment up to itself: a segment starts where position_ids restart.
    positions = position_ids.expand(batch, length)
    first = at - positions[rows, at]
    key_at = torch.arange(length, device=hidden.device)
    allowed = (key_at <= at[..., None]) & (key_at >= first[..., None])  # [B, Q, T]
    window = attn.sliding_window if hasattr(attn, "sliding_window") else getattr(attn.config, "sliding_window", None)
    if window:
        allowed &= at[..., None] - key_at < window
    mixed = torch.nn.functional.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed[:, None],
                                                             scale=attn.scaling)
    mixed = mixed.transpose(1, 2).reshape(batch, width, -1)[kept]  # [N, heads * d]
    rows, at = rows[kept], at[kept]
    out = hidden[rows, at] + attn.o_proj(mixed)
    out = out + layer.mlp(layer.post_attention_layernorm(out))
    return hidden.index_put((rows, at), out)
