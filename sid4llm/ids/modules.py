"""Building blocks shared by the learned ID methods (dVAE and REINFORCE).

- :class:`ResidualEncoder`: ``h_1 = RMSNorm(MLP(x))``; step t scores the shared codebook with a learned-scale
  cosine, picks a (soft or hard) code ``g_t`` and moves on to ``h_{t+1} = RMSNorm(h_t − γ_t · g_t C)``.
- :class:`StopHead`: a small causal transformer over the residual states that gives one stop logit per step.
- :class:`PrefixDecoder`: a small causal transformer over the code embeddings; position t reconstructs the
  (unit-norm) input from the prefix ``z_1..z_t``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(n: int, device: torch.device) -> torch.Tensor:
    return torch.triu(torch.full((n, n), float("-inf"), device=device), diagonal=1)


def small_transformer(dim: int, layers: int, heads: int, dropout: float = 0.0) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True,
                                       norm_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class ResidualEncoder(nn.Module):
    """Residual encoder over one shared codebook ``C ∈ R^{V×h}``."""

    def __init__(self, input_dim: int, hidden_dim: int, vocab_size: int, max_length: int, init_scale: float = 10.0,
                 init_step_size: float = 1.0):
        super().__init__()
        self.max_length = max_length
        self.mlp = nn.Sequential(nn.Linear(input_dim, 2 * hidden_dim), nn.GELU(), nn.Linear(2 * hidden_dim, hidden_dim))
        self.codebook = nn.Parameter(torch.randn(vocab_size, hidden_dim) / math.sqrt(hidden_dim))
        self.log_scale = nn.Parameter(torch.full((max_length,), math.log(init_scale)))  # s_t, cosine logit scale
        self.step_size = nn.Parameter(torch.full((max_length,), float(init_step_size)))  # γ_t
        self.norm = nn.RMSNorm(hidden_dim, elementwise_affine=False)

    def logits(self, h: torch.Tensor, t: int) -> torch.Tensor:
        cos = F.normalize(h, dim=-1) @ F.normalize(self.codebook, dim=-1).T
        return self.log_scale[t].exp() * cos

    def forward(self, x: torch.Tensor, choose) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run all ``max_length`` steps. ``choose(logits, t)`` returns the code weights ``g_t`` ([B, V]; soft
        Gumbel-Softmax, a sampled or an argmax one-hot). Returns logits [B, L, V], code weights [B, L, V] and
        the residual states after each step [B, L, h]."""
        h = self.norm(self.mlp(x))
        all_logits, weights, states = [], [], []
        for t in range(self.max_length):
            logits = self.logits(h, t)
            g = choose(logits, t)
            h = self.norm(h - self.step_size[t] * (g @ self.codebook))
            all_logits.append(logits)
            weights.append(g)
            states.append(h)
        return torch.stack(all_logits, 1), torch.stack(weights, 1), torch.stack(states, 1)


class StopHead(nn.Module):
    """Stop logits for steps 1..L−1 from the residual left after each step (causal: step t sees steps ≤ t)."""

    def __init__(self, hidden_dim: int, max_length: int, layers: int = 1, heads: int = 4):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_length - 1, hidden_dim))
        self.transformer = small_transformer(hidden_dim, layers, heads)
        self.out = nn.Linear(hidden_dim, 1)
        # Per-step bias, initialised so the length distribution starts uniform: stop_t = 1 / (L − t + 1).
        self.step_bias = nn.Parameter(torch.tensor([-math.log(max_length - t) for t in range(1, max_length)]))
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        s = states[:, :-1] + self.pos
        y = self.transformer(s, mask=causal_mask(s.shape[1], s.device), is_causal=True)
        return self.out(y).squeeze(-1) + self.step_bias


def length_log_probs(stop_logits: torch.Tensor) -> torch.Tensor:
    """log q(len = t), t = 1..L, from L−1 stop logits: ``q(t) = stop_t Π_{j<t}(1 − stop_j)``, the rest on L."""
    log_stop = F.logsigmoid(stop_logits)
    log_go = F.logsigmoid(-stop_logits)
    survive = torch.cat([torch.zeros_like(log_go[:, :1]), torch.cumsum(log_go, dim=1)], dim=1)  # log P(len ≥ t)
    return torch.cat([log_stop + survive[:, :-1], survive[:, -1:]], dim=1)


class PrefixDecoder(nn.Module):
    """Reconstructs the input from every prefix of the code sequence."""

    def __init__(self, hidden_dim: int, output_dim: int, max_length: int, layers: int = 2, heads: int = 4):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_length, hidden_dim))
        self.transformer = small_transformer(hidden_dim, layers, heads)
        self.out = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, output_dim))

    def forward(self, code_embeddings: torch.Tensor) -> torch.Tensor:
        """[B, L, h] code embeddings → [B, L, d] unit-norm reconstructions, one per prefix length."""
        e = code_embeddings + self.pos[: code_embeddings.shape[1]]
        y = self.transformer(e, mask=causal_mask(e.shape[1], e.device), is_causal=True)
        return F.normalize(self.out(y), dim=-1)


def argmax_one_hot(logits: torch.Tensor, t: int) -> torch.Tensor:
    """Deterministic code choice for ``ResidualEncoder``: the one-hot of the best code."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x − x̂_t||² for every prefix: x [B, d], x_hat [B, L, d] → [B, L]."""
    return (x_hat - x[:, None, :]).pow(2).sum(-1)
