"""How long a recommender trains, and which of its states is kept.

- :func:`plan_training_steps`: training counted in epochs gives a small dataset few updates (three epochs of a
  90k-event dataset are 234 steps, below the most-popular floor); a floor in steps (``min_steps``) gives every
  dataset enough, and the plan says what it chose and why.
- :class:`ValidationRecall`: recall@K on a seeded sample of the *valid* split's users at set intervals, the best
  state kept in memory and restored at the end (so training past the best point costs time, never quality),
  and an optional stop after ``patience`` evaluations without a gain.
- :class:`WeightAverage`: an exponential moving average of the weights, which validation scores and the saved
  model becomes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from transformers import TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)


def plan_training_steps(training_args: TrainingArguments, train_rows: int, min_steps: int = 0,
                        world_size: int = 1) -> dict:
    """The optimizer steps this run takes, and why: ``max_steps`` when set (> 0), else ``num_train_epochs`` over
    ``train_rows`` packed rows, raised to ``min_steps``. Sets ``training_args.max_steps`` when the floor applies."""
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world_size
    steps_per_epoch = max(1, math.ceil(train_rows / per_step))
    if training_args.max_steps > 0:
        steps, reason = training_args.max_steps, "max_steps was set"
    else:
        planned = math.ceil(training_args.num_train_epochs * steps_per_epoch)
        if planned < min_steps:
            steps = min_steps
            reason = (f"{training_args.num_train_epochs:g} epoch(s) are only {planned:,} steps here, below the floor "
                      f"min_steps={min_steps:,}")
            training_args.max_steps = min_steps
        else:
            steps, reason = planned, f"{training_args.num_train_epochs:g} epoch(s)"
    plan = {"steps": steps, "epochs": round(steps / steps_per_epoch, 2), "steps_per_epoch": steps_per_epoch,
            "reason": reason}
    logger.warning("training %s steps (%s epochs of %s steps): %s", f"{steps:,}", plan["epochs"],
                   f"{steps_per_epoch:,}", reason)
    return plan


def sampled_users(n_users: int, count: int, seed: int) -> list[int]:
    """A seeded sample of ``count`` users (all when there are fewer), the same on every call."""
    if count >= n_users:
        return list(range(n_users))
    return sorted(np.random.default_rng(seed).choice(n_users, size=count, replace=False).tolist())


def _trainable(model) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((name, param) for name, param in model.named_parameters() if param.requires_grad)


class WeightAverage(TrainerCallback):
    """An exponential moving average of the trainable weights, updated after every optimizer step with ``decay``
    and bias-corrected (after n steps each step's weight is ``(1 − decay)·decay^age / (1 − decay^n)``, so the
    average never leans on the initial weights). The average of the
    last ~1/(1 − decay) steps sits nearer the middle of the region the optimizer circles than any one step does,
    which is what a noisy high learning rate on a small dataset needs. :class:`ValidationRecall` scores the
    average, and the model ends training holding it. The average is not in checkpoints: a resumed run starts it
    again from the weights it resumes with."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.average: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.average = {name: param.detach().clone() for name, param in _trainable(model)}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.updates += 1
        weight = (1.0 - self.decay) / (1.0 - self.decay ** self.updates)
        with torch.no_grad():
            for name, param in _trainable(model):
                self.average[name].lerp_(param.detach(), weight)

    @contextmanager
    def applied(self, model) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own after."""
        own = {name: param.detach().clone() for name, param in _trainable(model)}
        self._copy_into(model, self.average)
        try:
            yield
        finally:
            self._copy_into(model, own)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._copy_into(model, self.average)

    @staticmethod
    def _copy_into(model, weights: dict[str, torch.Tensor] | None) -> None:
        if weights is None:
            return
        with torch.no_grad():
            for name, param in _trainable(model):
                param.copy_(weights[name])


class ValidationRecall(TrainerCallback):
    """recall@``k`` on ``users`` of the valid split (history → its next item, seen items left out), every
    ``every`` steps and at the end; the best state is restored when training ends. ``recommender_for(model)``
    gives the :class:`SidRecommender` that decodes with the model being trained. ``patience`` 0 or None: no
    early stop. With ``averaged`` (a :class:`WeightAverage` placed before this callback), the averaged weights are
    the ones scored and kept."""

    def __init__(self, recommender_for, histories: list[list[int]], targets: list[int], every: int, k: int = 10,
                 num_beams: int | None = None, patience: int | None = None, averaged: WeightAverage | None = None):
        self.recommender_for, self.histories, self.targets = recommender_for, histories, targets
        self.every, self.k, self.num_beams, self.patience = max(1, every), k, num_beams, patience or None
        self.averaged = averaged
        self.history: list[dict] = []
        self.best: dict | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._since_best = 0
        self.seconds = 0.0

    def recall(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            ranked = self.recommender_for(model).recommend(self.histories, k=self.k, num_beams=self.num_beams,
                                                           batch_size=32)
        finally:
            model.train(was_training)
        hits = sum(t in {r["index"] for r in lists} for t, lists in zip(self.targets, ranked))
        return hits / max(len(self.targets), 1)

    def _evaluate(self, state, model) -> None:
        start = time.time()
        recall = self.recall(model)
        self.seconds += time.time() - start
        point = {"step": state.global_step, f"valid_recall@{self.k}": round(recall, 4)}
        self.history.append(point)
        logger.warning("step %d: valid recall@%d %.4f (%d users)", state.global_step, self.k, recall, len(self.targets))
        if self.best is None or recall > self.best[f"valid_recall@{self.k}"]:
            self.best, self._since_best = point, 0
            self._best_state = {n: p.detach().clone() for n, p in _trainable(model)}
        else:
            self._since_best += 1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            with self.averaged.applied(model) if self.averaged else nullcontext():
                self._evaluate(state, model)
            if self.patience is not None and self._since_best >= self.patience:
                logger.warning("no valid recall gain in %d evaluations: stopping at step %d", self.patience,
                               state.global_step)
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # (a WeightAverage placed before this callback has just put the average into the model)
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._evaluate(state, model)
        if self._best_state is not None and self.best["step"] != state.global_step:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name in self._best_state:
                        param.copy_(self._best_state[name])
            logger.warning("kept the model of step %d (valid recall@%d %.4f), the best of %d evaluations",
                           self.best["step"], self.k, self.best[f"valid_recall@{self.k}"], len(self.history))
        self._best_state = None

    def summary(self) -> dict:
        return {"best": self.best, "curve": self.history, "users": len(self.targets), "seconds": round(self.seconds, 1)}
