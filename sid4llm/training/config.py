"""How a recommender is trained: ``SidTrainingConfig`` extends ``transformers.TrainingArguments`` the way trl's
``SFTConfig`` does, with what sid4llm adds to the loop — the loss over ID tokens, the training-only
augmentations, validation on valid users, the weight average, the time budget and the transition prior's fit.

None of these is needed to *use* a trained model: they are recorded in the saved folder for the model card and for
reproduction (``training`` in ``sid4llm_config.json``), free-form, so a new training setting never changes the
format a model is saved in. What inference reads (the prompt, the softmax form, decoding) is saved apart
(:class:`~sid4llm.lm.recommender_config.SidRecommenderConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from transformers import TrainingArguments

from ..artifacts import SettingsError


@dataclass
class SidTrainingConfig(TrainingArguments):
    """``TrainingArguments`` plus sid4llm's training settings (every ``TrainingArguments`` flag still works)."""

    # ---- the loss
    id_softmax: bool = field(default=True, metadata={"help": "Score ID targets over the ID tokens only (the softmax "
                                                             "decoding uses); False: over the whole vocabulary."})
    trie_softmax: bool = field(default=False, metadata={
        "help": "Normalise each ID token over the trie's continuations of the ID written so far, in training and in "
                "decoding: the model learns a distribution over the catalogue's items rather than over token strings, "
                "and spends nothing on tokens no valid ID can take there. It is then never taught to avoid those tokens: "
                "decode it with the trie, as every sid4llm path does (unconstrained, it writes invalid IDs). False: "
                "over all ID tokens."})
    last_layer_at_targets: bool = field(default=True, metadata={
        "help": "Compute the last decoder layer only at the positions the loss reads (the other positions give it "
                "keys and values only): the same loss and gradients with less arithmetic — most of a step when one "
                "layer is kept (sid4llm.training.scored_positions). Llama, Mistral and Qwen2 layers on packed rows; "
                "other models run as before. False: every position, as a plain forward."})
    # ---- augmentation (training only; evaluation reads examples as they are)
    item_memory_dropout: float = field(default=0.0, metadata={
        "help": "With item_memory_tokens: the share of history items read with the plain end marker instead, drawn "
                "every batch (so items without a memory token read as in training)."})
    stream_item_dropout: float = field(
        default=0.0, metadata={"help": "Whole-history ID streams in training: each item is left out of a batch with this "
                                       "probability, drawn afresh every batch (random item deletion: a small dataset's "
                                       "epochs stop repeating the same sequences). 0: off."})
    stream_tie_shuffle: bool = field(
        default=False, metadata={"help": "Whole-history ID streams in training: a user's items that share a timestamp "
                                          "(ratings saved in one go: three quarters of the MovieLens events) are read in "
                                          "a random order, drawn afresh every batch, since their order in the file is "
                                          "no sequence."})
    # ---- how long, and which state is kept
    eval_examples: int = field(default=256, metadata={"help": "Validation examples (next-item on the valid split) for eval loss."})
    min_steps: int = field(default=0, metadata={
        "help": "Train at least this many steps whatever the dataset's size (epochs of a small dataset are few "
                "updates); applies when max_steps is unset. 0: no floor."})
    valid_users: int = field(default=0, metadata={
        "help": "Every valid_every steps, recall@10 on this many seeded users of the valid split; the best model "
                "is kept. 0: off."})
    valid_every: int | None = field(default=None, metadata={
        "help": "Steps between validation-recall evaluations (default: a tenth of the run)."})
    valid_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many validation evaluations without a gain (0 or None: train to the end)."})
    weight_average_decay: float = field(default=0.0, metadata={
        "help": "Keep an exponential moving average of the weights with this decay per step (e.g. 0.99: about the "
                "last 100 steps); validation scores it and the saved model is it. 0: off, the last weights."})
    max_train_minutes: float = field(default=0.0, metadata={
        "help": "Fit training (validation included) into this many minutes on this machine: the run times its "
                "first steps and takes fewer steps than planned when they would not fit, the learning-rate schedule "
                "re-fitted to them; it stops at the limit whatever. 0: no limit, the planned steps."})
    transition_prior: bool = field(default=False, metadata={
        "help": "After training, count item transitions in the train histories and choose on valid users how much "
                "they re-rank the model's beam (sid4llm.decoding.transition_prior); saved with the model, weight 0 "
                "when they do not help."})
    transition_prior_weights: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.8, 1.0], metadata={
        "help": "The re-ranking weights tried (0, the model alone, always is)."})
    transition_prior_users: int = field(default=2000, metadata={
        "help": "Seeded valid users the weight is chosen on (all when fewer)."})
    transition_prior_cooccurrence: list[float] = field(default_factory=lambda: [0.0], metadata={
        "help": "Weights tried for the prior's whole-history term (EASE item co-occurrence, "
                "sid4llm.decoding.cooccurrence), chosen on the same valid users with the prior's weight (0 always "
                "is). [0]: transitions only, nothing learnt."})
    transition_prior_candidates: int = field(default=20, metadata={
        "help": "The prior's own best items per user, scored by the model and re-ranked with the beam's: the beam "
                "finds what the model rates highest, the prior other good items (alone it ranks about as well). "
                "0: the beam's items only."})
    cooccurrence_l2: float = field(default=200.0, metadata={
        "help": "EASE's L2 penalty for the co-occurrence term."})
    cooccurrence_keep: int = field(default=500, metadata={
        "help": "Neighbours kept per item for the co-occurrence term (by magnitude; saved with the model)."})

    def __post_init__(self):
        half = "bf16" if self.bf16 else "fp16" if self.fp16 else None
        if half and not accelerator_available():
            raise SettingsError(f"--{half} true needs a GPU (or another accelerator), and this machine has none: pass "
                                f"--{half} false to train in fp32 on the CPU")
        super().__post_init__()
        if not 0.0 <= self.item_memory_dropout <= 1.0:
            raise ValueError(f"item_memory_dropout must be in [0, 1], got {self.item_memory_dropout}")
        if not 0.0 <= self.stream_item_dropout < 1.0:
            raise ValueError(f"stream_item_dropout must be in [0, 1), got {self.stream_item_dropout}")
        if self.transition_prior_candidates < 0:
            raise ValueError(f"transition_prior_candidates must be >= 0, got {self.transition_prior_candidates}")
        if any(w < 0 for w in self.transition_prior_cooccurrence) or self.cooccurrence_l2 <= 0 or self.cooccurrence_keep < 1:
            raise ValueError("transition_prior_cooccurrence must be >= 0, cooccurrence_l2 > 0 and cooccurrence_keep >= 1, "
                             f"got {self.transition_prior_cooccurrence}, {self.cooccurrence_l2} and {self.cooccurrence_keep}")
        if self.max_train_minutes < 0:
            raise ValueError(f"max_train_minutes must be >= 0, got {self.max_train_minutes}")


# TrainingArguments fields that change what a run learns (not where it logs or how often it saves).
LEARNING_SETTINGS = ("max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay",
                     "max_grad_norm", "label_smoothing_factor", "seed")


def recorded_settings(training_args: TrainingArguments) -> dict:
    """What a run's ``training_args`` record in the saved model: the learning settings and every sid4llm
    setting (of this class or of a subclass that adds more)."""
    base = {f.name for f in fields(TrainingArguments)}
    own = [f.name for f in fields(training_args) if f.name not in base]
    return {k: getattr(training_args, k, None) for k in (*LEARNING_SETTINGS, *own)}


def accelerator_available() -> bool:
    """Whether torch sees a CUDA, XPU or MPS device (what mixed precision in the Trainer needs)."""
    return bool(torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
                or torch.backends.mps.is_available())
