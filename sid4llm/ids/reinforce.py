"""Emergent-communication baseline, as in the paper's own code (its RQ3 configs): a sender samples one code per
step from the same residual encoder as the dVAE; a receiver reconstructs the item from the message. The receiver
learns by gradient on the cosine loss of the message it got; the sender by REINFORCE.

Variable length follows EGG: code 0 is the end-of-message symbol of the same categorical (never at step 1, so
every ID has at least one code), and an item's length is the number of codes before it (``max_length`` when it
never comes). The sender's loss, per item, with ``Σ log p`` over the emitted symbols (the end symbol included):

- reconstruction: ``(loss − b_loss) · Σ log p``, ``loss = 1 − cos(x, x̂_len)``;
- length: ``(c · len − b_len) · Σ log p``, c annealed from ``length_cost_start`` to ``length_cost_end``;
- entropy bonus: ``− coef · Σ_t H_t / len``, coef annealed from ``entropy_coef_start`` to ``entropy_coef_end``;

``b_loss`` and ``b_len`` are moving averages (started at the first batch's mean). Both schedules are cosine
over the first ``schedule_fraction`` of the steps. The paper reports this baseline as the unstable one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .base import IdInputError, IdMethodConfig, IdModel
from .dvae import cosine_schedule
from .modules import PrefixDecoder, ResidualEncoder, argmax_one_hot

END = 0  # the end-of-message code of a variable-length sender


@dataclass
class ReinforceConfig(IdMethodConfig):
    method = "reinforce"
    variable_length: bool = field(default=True, metadata={"help": "Let the sender end its message (code 0 = end)."})
    hidden_dim: int = field(default=128, metadata={"help": "Width of sender state, codebook and receiver."})
    length_cost_start: float = field(default=0.0, metadata={"help": "Cost per code (in cosine loss) at the start."})
    length_cost_end: float = field(default=0.005, metadata={"help": "Cost per code after the schedule (paper: 0.005)."})
    entropy_coef_start: float = field(default=0.03, metadata={"help": "Weight of the sender's entropy bonus at the start."})
    entropy_coef_end: float = field(default=0.001, metadata={"help": "Weight of the entropy bonus after the schedule."})
    schedule_fraction: float = field(default=0.5, metadata={"help": "Fraction of the steps over which both schedules run."})
    baseline_momentum: float = field(default=0.99, metadata={"help": "Momentum of the moving-average baselines."})
    init_logit_scale: float = field(default=5.0, metadata={"help": "Initial scale of the sender's cosine logits."})
    init_step_size: float = field(default=0.2, metadata={"help": "Initial residual step size γ of the sender."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the sender's input while training."})
    decoder_layers: int = field(default=2, metadata={"help": "Layers of the receiver."})
    heads: int = field(default=4, metadata={"help": "Attention heads."})

    def __post_init__(self):
        super().__post_init__()
        if self.variable_length and self.vocab_size < 3:
            raise IdInputError("a variable-length REINFORCE sender needs vocab_size >= 3 (code 0 ends the message)")


class ReinforceSenderReceiver(IdModel):
    def __init__(self, config: ReinforceConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        L, h = config.max_length, config.hidden_dim
        self.sender = ResidualEncoder(input_dim, h, config.vocab_size, L, init_scale=config.init_logit_scale,
                                      init_step_size=config.init_step_size)
        self.dropout = nn.Dropout(config.dropout)
        self.receiver_embeddings = nn.Embedding(config.vocab_size, h)
        self.receiver = PrefixDecoder(h, input_dim, L, config.decoder_layers, config.heads)
        self.register_buffer("loss_baseline", torch.zeros(()))
        self.register_buffer("length_baseline", torch.zeros(()))
        self.register_buffer("baselines_started", torch.zeros((), dtype=torch.bool))

    def _mask(self, logits: torch.Tensor, t: int) -> torch.Tensor:
        """No end symbol at the first step: every ID has at least one code."""
        if self.config.variable_length and t == 0:
            logits = logits.clone()
            logits[..., END] = float("-inf")
        return logits

    def _mask_steps(self, logits: torch.Tensor) -> torch.Tensor:
        """``_mask`` on the stacked logits of every step [B, L, V] (only step 1 changes)."""
        return torch.cat([self._mask(logits[:, :1], 0), logits[:, 1:]], 1)

    def _lengths(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes before the first end symbol (``max_length`` when there is none)."""
        L = codes.shape[1]
        if not self.config.variable_length:
            return torch.full((codes.shape[0],), L, device=codes.device, dtype=torch.long)
        is_end = codes == END
        return torch.where(is_end.any(1), is_end.float().argmax(1), torch.full_like(codes[:, 0], L)).long()

    def training_loss(self, x: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        cfg = self.config
        L = cfg.max_length
        sampled: list[torch.Tensor] = []

        def sample(logits, t):
            z = torch.distributions.Categorical(logits=self._mask(logits, t)).sample()
            sampled.append(z)
            return F.one_hot(z, cfg.vocab_size).to(logits.dtype)

        logits, _, _ = self.sender(self.dropout(x), sample)
        logits = self._mask_steps(logits)
        codes = torch.stack(sampled, 1)
        lengths = self._lengths(codes)
        log_p = F.log_softmax(logits, -1)
        log_p_codes = log_p.gather(-1, codes[..., None]).squeeze(-1)  # [B, L]
        entropy = -(log_p.exp() * log_p.clamp(min=-1e9)).sum(-1)  # [B, L]
        steps = torch.arange(L, device=x.device)[None, :]
        emitted = (steps <= lengths[:, None]).to(x.dtype)  # the codes and the end symbol the receiver was sent
        if not cfg.variable_length:
            emitted = torch.ones_like(emitted)
        x_hat = self.receiver(self.receiver_embeddings(codes))  # [B, L, d]
        chosen = x_hat[torch.arange(x.shape[0], device=x.device), lengths - 1]
        loss_vec = 1 - F.cosine_similarity(x, chosen, dim=-1)  # [B]

        length_cost = cosine_schedule(cfg.length_cost_start, cfg.length_cost_end, progress, cfg.schedule_fraction)
        entropy_coef = cosine_schedule(cfg.entropy_coef_start, cfg.entropy_coef_end, progress, cfg.schedule_fraction)
        length_loss = length_cost * lengths.to(x.dtype) if cfg.variable_length else torch.zeros_like(loss_vec)
        with torch.no_grad():
            if not self.baselines_started:
                self.loss_baseline.copy_(loss_vec.mean())
                self.length_baseline.copy_(length_loss.mean())
                self.baselines_started.fill_(True)
        sender_log_prob = (log_p_codes * emitted).sum(1)
        policy_loss = ((loss_vec.detach() - self.loss_baseline) * sender_log_prob).mean()
        policy_length_loss = ((length_loss - self.length_baseline) * sender_log_prob).mean()
        mean_entropy = ((entropy * emitted).sum(1) / emitted.sum(1)).mean()
        loss = policy_loss + policy_length_loss - entropy_coef * mean_entropy + loss_vec.mean()
        if self.training:
            with torch.no_grad():
                m = cfg.baseline_momentum
                self.loss_baseline.lerp_(loss_vec.mean(), 1 - m)
                self.length_baseline.lerp_(length_loss.mean(), 1 - m)
        return {"loss": loss, "recon": 2 * loss_vec.mean().detach(), "mean_length": lengths.float().mean(),
                "entropy": mean_entropy.detach(), "distinct_first_codes": torch.tensor(float(codes[:, 0].unique().numel()))}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _, _ = self.sender(x, lambda lg, t: argmax_one_hot(self._mask(lg, t), t))
        codes = self._mask_steps(logits).argmax(-1)
        return codes, self._lengths(codes)

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        return self.receiver(self.receiver_embeddings(codes))
