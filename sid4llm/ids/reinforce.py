"""Emergent-communication baseline: a sender samples discrete codes (and, variable-length, when to stop),
a receiver reconstructs the item from them. The receiver learns by gradient; the sender by REINFORCE with
a moving-average baseline and an entropy bonus. The paper compares against it as the unstable alternative.

Reward per item: ``−||x − x̂_len||² − length_cost · len``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .base import IdMethodConfig, IdModel
from .modules import PrefixDecoder, ResidualEncoder, StopHead, argmax_one_hot, length_log_probs, squared_error


@dataclass
class ReinforceConfig(IdMethodConfig):
    method = "reinforce"
    variable_length: bool = field(default=True, metadata={"help": "Let the sender choose when to stop."})
    hidden_dim: int = field(default=128, metadata={"help": "Width of sender state, codebook and receiver."})
    length_cost: float = field(default=0.01, metadata={"help": "Reward penalty per emitted token."})
    entropy_coef: float = field(default=0.01, metadata={"help": "Weight of the sender's entropy bonus."})
    baseline_momentum: float = field(default=0.99, metadata={"help": "Momentum of the moving-average reward baseline."})
    normalize_advantage: bool = field(default=False, metadata={"help": "Divide advantages by their batch std (variance reduction)."})
    decoder_layers: int = field(default=2, metadata={"help": "Layers of the receiver."})
    stop_layers: int = field(default=1, metadata={"help": "Layers of the stop head."})
    heads: int = field(default=4, metadata={"help": "Attention heads."})


class ReinforceSenderReceiver(IdModel):
    def __init__(self, config: ReinforceConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        L, h = config.max_length, config.hidden_dim
        self.sender = ResidualEncoder(input_dim, h, config.vocab_size, L)
        self.stop_head = StopHead(h, L, config.stop_layers, config.heads) if config.variable_length and L > 1 else None
        self.receiver_embeddings = nn.Embedding(config.vocab_size, h)
        self.receiver = PrefixDecoder(h, input_dim, L, config.decoder_layers, config.heads)
        self.register_buffer("baseline", torch.zeros(()))

    def training_loss(self, x: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        cfg = self.config
        L = cfg.max_length
        sampled: list[torch.Tensor] = []

        def sample(logits, t):
            z = torch.distributions.Categorical(logits=logits).sample()
            sampled.append(z)
            return F.one_hot(z, cfg.vocab_size).to(logits.dtype)

        logits, _, states = self.sender(x, sample)
        codes = torch.stack(sampled, 1)
        log_p = F.log_softmax(logits, -1)
        log_p_codes = log_p.gather(-1, codes[..., None]).squeeze(-1)  # [B, L]
        entropy = -(log_p.exp() * log_p).sum(-1)  # [B, L]
        errors = squared_error(x, self.receiver(self.receiver_embeddings(codes)))  # [B, L]

        if self.stop_head is not None:
            log_q_len = length_log_probs(self.stop_head(states))
            lengths = torch.distributions.Categorical(logits=log_q_len).sample() + 1
            log_p_len = log_q_len.gather(1, (lengths - 1)[:, None]).squeeze(1)
            len_entropy = -(log_q_len.exp() * log_q_len).sum(1)
        else:
            lengths = torch.full((x.shape[0],), L, device=x.device)
            log_p_len = len_entropy = torch.zeros(x.shape[0], device=x.device)
        steps = torch.arange(1, L + 1, device=x.device)
        emitted = (steps[None, :] <= lengths[:, None]).to(x.dtype)  # tokens the receiver actually saw
        final_error = errors.gather(1, (lengths - 1)[:, None]).squeeze(1)
        reward = -(final_error + cfg.length_cost * lengths.to(x.dtype)).detach()
        advantage = reward - self.baseline
        if cfg.normalize_advantage and advantage.numel() > 1:
            advantage = advantage / (advantage.std() + 1e-6)
        sender_log_prob = (log_p_codes * emitted).sum(1) + log_p_len
        sender_loss = -(advantage * sender_log_prob).mean()
        entropy_bonus = ((entropy * emitted).sum(1) + len_entropy).mean()
        receiver_loss = errors.mean()  # every prefix, so any length can be decoded
        with torch.no_grad():
            m = cfg.baseline_momentum if self.baseline.item() != 0 else 0.0
            self.baseline.mul_(m).add_((1 - m) * reward.mean())
        loss = receiver_loss + sender_loss - cfg.entropy_coef * entropy_bonus
        return {"loss": loss, "recon": final_error.mean().detach(), "mean_length": lengths.float().mean(),
                "reward": reward.mean(), "entropy": entropy.mean().detach()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _, states = self.sender(x, argmax_one_hot)
        if self.stop_head is None:
            lengths = torch.full((x.shape[0],), self.config.max_length, device=x.device, dtype=torch.long)
        else:
            lengths = length_log_probs(self.stop_head(states)).argmax(-1) + 1
        return logits.argmax(-1), lengths

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        return self.receiver(self.receiver_embeddings(codes))
