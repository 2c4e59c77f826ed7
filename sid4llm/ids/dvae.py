"""The discrete VAE of arXiv 2602.16375, variable length (with the stop head) or fixed length (without).

Loss (minimised), for a batch of interaction events:

- reconstruction ``Σ_t q̃(len=t) ||x − x̂_t||²`` with ``q̃ = (1 − ε) q + ε / L`` so every prefix learns;
- token KL to a uniform prior with free bits: ``β Σ_t max(0, E[P(len ≥ t) (log V − H(q(z_t|x)))] − free_bits)``;
- length KL to a truncated geometric prior ``p(len=t) ∝ exp(−c t)``: ``β (−H(q(len)) + c E[len])``.

τ (Gumbel-Softmax temperature) and β follow cosine schedules over the first ``anneal_fraction`` of the
training steps and are then held: the schedule is defined over steps, so a small catalogue gets the same
annealing as a large one. Inference is deterministic: argmax code per step, ``len = argmax q(len)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import IdMethodConfig, IdModel
from .modules import PrefixDecoder, ResidualEncoder, StopHead, argmax_one_hot, length_log_probs, squared_error


def cosine_schedule(start: float, end: float, progress: float, span: float) -> float:
    """``start`` → ``end`` along a half cosine while ``progress`` (fraction of training done) < ``span``, then ``end``."""
    if span <= 0 or progress >= span:
        return end
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress / span))


@dataclass
class DVAEConfig(IdMethodConfig):
    """Discrete VAE with Gumbel-Softmax; ``variable_length=False`` is the fixed-length baseline."""

    method = "dvae"
    variable_length: bool = field(default=True, metadata={"help": "Learn a length per item (stop head) or use max_length for all."})
    hidden_dim: int = field(default=128, metadata={"help": "Width of the encoder state, codebook and transformers."})
    length_cost: float = field(default=6.0, metadata={"help": "c of the geometric length prior p(len=t) ∝ exp(-c t)."})
    beta: float = field(default=2e-3, metadata={"help": "Final weight of both KL terms (β)."})
    free_bits: float = field(default=2.0, metadata={"help": "Nats per position of token KL that cost nothing."})
    tau_start: float = field(default=1.0, metadata={"help": "Gumbel-Softmax temperature at the start."})
    tau_end: float = field(default=0.6, metadata={"help": "Gumbel-Softmax temperature after annealing."})
    anneal_fraction: float = field(default=0.5, metadata={"help": "Fraction of the training steps over which τ and β follow their cosine schedules."})
    length_smoothing: float = field(default=0.1, metadata={"help": "ε in q̃ = (1-ε) q + ε/L for the reconstruction weights."})
    decoder_layers: int = field(default=2, metadata={"help": "Layers of the causal decoder."})
    stop_layers: int = field(default=1, metadata={"help": "Layers of the causal stop head."})
    heads: int = field(default=4, metadata={"help": "Attention heads in the small transformers."})


class DiscreteVAE(IdModel):
    def __init__(self, config: DVAEConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        L, h = config.max_length, config.hidden_dim
        self.encoder = ResidualEncoder(input_dim, h, config.vocab_size, L)
        self.stop_head = StopHead(h, L, config.stop_layers, config.heads) if config.variable_length and L > 1 else None
        self.decoder = PrefixDecoder(h, input_dim, L, config.decoder_layers, config.heads)

    # ------------------------------------------------------------------ pieces
    def length_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        L = self.config.max_length
        if self.stop_head is None:  # fixed length: all mass on L
            out = torch.full((states.shape[0], L), float("-inf"), device=states.device)
            out[:, -1] = 0.0
            return out
        return length_log_probs(self.stop_head(states))

    # ------------------------------------------------------------------ training
    def training_loss(self, x: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        cfg = self.config
        L, V = cfg.max_length, cfg.vocab_size
        tau = cosine_schedule(cfg.tau_start, cfg.tau_end, progress, cfg.anneal_fraction)
        beta = cosine_schedule(0.0, cfg.beta, progress, cfg.anneal_fraction)

        def gumbel_soft(logits, t):
            return F.gumbel_softmax(logits, tau=tau, hard=False)

        logits, weights, states = self.encoder(x, gumbel_soft)
        x_hat = self.decoder(weights @ self.encoder.codebook)
        log_q_len = self.length_log_probs(states)
        q_len = log_q_len.exp()
        q_smooth = (1 - cfg.length_smoothing) * q_len + cfg.length_smoothing / L
        recon = (q_smooth * squared_error(x, x_hat)).sum(1).mean()

        survival = torch.flip(torch.cumsum(torch.flip(q_len, [1]), 1), [1])  # P(len ≥ t)
        log_p = F.log_softmax(logits, -1)
        token_kl = math.log(V) + (log_p.exp() * log_p).sum(-1)  # log V − H(q(z_t|x)), [B, L]
        token_kl_term = torch.clamp((survival * token_kl).mean(0) - cfg.free_bits, min=0).sum()

        positions = torch.arange(1, L + 1, device=x.device, dtype=x.dtype)
        expected_len = (q_len * positions).sum(1).mean()
        if self.stop_head is not None:
            entropy_len = -(q_len * log_q_len.clamp(min=-1e9)).sum(1).mean()
            length_term = -entropy_len + cfg.length_cost * expected_len
        else:
            length_term = torch.zeros((), device=x.device)
        loss = recon + beta * (token_kl_term + length_term)
        return {"loss": loss, "recon": recon.detach(), "token_kl": token_kl.mean().detach(),
                "mean_length": expected_len.detach(), "tau": torch.tensor(tau), "beta": torch.tensor(beta)}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _, states = self.encoder(x, argmax_one_hot)
        codes = logits.argmax(-1)
        lengths = self.length_log_probs(states).argmax(-1) + 1
        return codes, lengths

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.codebook[codes])
