"""How long a recommender trains, and which of its states is kept.

- :func:`plan_training_steps`: training counted in epochs gives a small dataset few updates (three epochs of a
  90k-event dataset are 234 steps, below the most-popular floor); a floor in steps (``min_steps``) gives every
  dataset enough, and the plan says what it chose and why.
- :class:`ValidationRecall`: recall@K on a seeded sample of the *valid* split's users at set intervals, the best
  state kept in memory and restored at the end (so training past the best point costs time, never quality),
  and an optional stop after ``patience`` evaluations without a gain.
- :class:`WeightAverage`: an exponential moving average of the weights, which validation scores and the saved
  model becomes.
- :class:`TrainingTimeBudget`: a run counted in steps takes twice the minutes on a machine twice as slow; with a
  budget in minutes the run measures its own step (and validation) time and shortens itself to fit, the
  learning-rate schedule re-fitted to the new length, so a recipe sized for 2 cores keeps its minutes anywhere.
- :func:`fit_transition_prior_weight`: how much a count of item transitions re-ranks the kept model's beam,
  chosen on valid users (0 when it does not help).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Literal

import torch
from transformers import TrainerCallback, TrainingArguments

from ..metrics import ranking_metrics

logger = logging.getLogger(__name__)

clock = time.perf_counter  # what the validation and budget callbacks time with (a test runs them on its own clock)


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
        lists = [[r["index"] for r in found] for found in ranked]
        return ranking_metrics(lists, self.targets, max(len(lists), 1), ks=(self.k,))[f"recall@{self.k}"]

    def _evaluate(self, state, model) -> None:
        start = clock()
        recall = self.recall(model)
        self.seconds += clock() - start
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


class TrainingTimeBudget(TrainerCallback):
    """Fits the run into ``minutes`` of training (validation included), counted from the first step.

    After ``probe_steps`` steps (the first ``skip_steps`` left out of the timing: they pay one-time costs) the
    measured seconds per step set the step count — never more than the plan — and the schedule is re-fitted
    to it, so the learning rate still decays to its end; after the first validation evaluation its measured
    cost is counted in and the count is set again. The pace of the first steps is not the pace of the run (a
    machine warms up, a neighbour's job ends or starts), so the count is set again every ``refits`` -th of the
    plan from the pace of the steps since the last fit, up or down (up to the plan): the run ends on its clock
    with its schedule at its end, not early or cut. Past ``minutes`` the run stops whatever the estimate said
    (the kept model is then the best one validated so far). ``plan`` (the dict of :func:`plan_training_steps`)
    gets a ``time_budget`` entry that says what was measured and chosen. A resumed run times itself again and
    gets the whole budget from where it resumes."""

    def __init__(self, minutes: float, plan: dict | None = None, validation: ValidationRecall | None = None,
                 probe_steps: int = 20, skip_steps: int = 5, rescale_validation: bool = True, refits: int = 20):
        if minutes <= 0:
            raise ValueError(f"the training time budget must be positive minutes, got {minutes}")
        self.seconds, self.plan, self.validation = 60.0 * minutes, plan, validation
        self.probe_steps, self.skip_steps = max(1, probe_steps), max(0, skip_steps)
        self.rescale_validation = rescale_validation  # validation every tenth of the shortened run, not the planned one
        self.refits = max(0, refits)
        self._next_refit: int | None = None
        self.progress = None  # the trainer's ProgressCallback, when it has one: its bar is re-sized with the run
        self._start = self._mark = self._device = None
        self._mark_step, self._mark_validation = 0, 0.0
        self._fitted_with_validation = self._probed = False
        self.report: dict = {"minutes": minutes, "planned_steps": None, "steps": None, "seconds_per_step": None,
                             "seconds_per_validation": None, "stopped_by_clock": False}

    def _validation_seconds(self) -> float:
        return self.validation.seconds if self.validation is not None else 0.0

    def _validations(self) -> int:
        return len(self.validation.history) if self.validation is not None else 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._device = clock(), args.device  # the device carries the processes' agreement (agreed)
        self.report["planned_steps"] = self.report["steps"] = state.max_steps
        self._publish()

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        now = clock()
        step = state.global_step
        if step == self.skip_steps or (self._mark is None and step > self.skip_steps):
            self._mark, self._mark_step, self._mark_validation = now, step, self._validation_seconds()
        probe_done = not self._probed and self._mark is not None and step == self._mark_step + self.probe_steps
        first_validation = (not self._fitted_with_validation and self._validations() > 0
                            and self._mark is not None and step > self._mark_step)
        refit_due = self._next_refit is not None and step >= self._next_refit
        if probe_done or first_validation or refit_due:
            self._fitted_with_validation |= first_validation
            self._probed |= probe_done
            self._fit(now, state, lr_scheduler, announce=not refit_due)
            planned = self.report["planned_steps"]
            if self.refits and planned:
                self._next_refit = step + max(self.probe_steps, planned // self.refits)
        if agreed(now - self._start, self._device, "max") >= self.seconds and step < state.max_steps:
            logger.warning("training time budget of %.1f min spent: stopping at step %d of %d", self.seconds / 60,
                           step, state.max_steps)
            self.report.update(steps=step, stopped_by_clock=True)
            self._publish()
            control.should_training_stop = True
        return control

    def _fit(self, now: float, state, lr_scheduler, announce: bool = True) -> None:
        step = state.global_step
        validated = self._validation_seconds() - self._mark_validation
        per_step = max((now - self._mark - validated) / max(step - self._mark_step, 1), 1e-9)
        done = self._validations()
        per_validation = self._validation_seconds() / done if done else 0.0
        every = self.validation.every if self.validation is not None else None
        elapsed = now - self._start

        def seconds_for(steps: int) -> float:
            evaluations = ((steps - 1) // every + 1) if every else 0  # every `every` steps, and once at the end
            return elapsed + (steps - step) * per_step + max(evaluations - done, 0) * per_validation

        fits = max(self.report["planned_steps"] or state.max_steps, step + 1)  # a later fit may give steps back
        if seconds_for(fits) > self.seconds:
            low, high = step, fits  # the largest count that fits, by bisection (time grows with steps)
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if seconds_for(mid) <= self.seconds else (low, mid - 1)
            fits = max(low, step + 1)
        fits = int(agreed(fits, self._device, "min"))  # every process of a distributed run stops at the same step
        self.report.update(seconds_per_step=round(per_step, 4), seconds_per_validation=round(per_validation, 2) or None)
        if fits != state.max_steps:
            if announce or abs(fits - state.max_steps) > 0.02 * state.max_steps:
                logger.warning("training time budget %.1f min: %.3f s a step%s here, so %s steps instead of %s",
                               self.seconds / 60, per_step,
                               f" and {per_validation:.1f} s a validation" if per_validation else "",
                               f"{fits:,}", f"{state.max_steps:,}")
            state.max_steps = fits
            refit_schedule(lr_scheduler, fits)
            bar = getattr(self.progress, "training_bar", None)
            if bar is not None:  # the progress bar counts to the new end
                bar.total = fits
                bar.refresh()
            if self.rescale_validation and self.validation is not None and not done:
                self.validation.every = max(1, fits // 10)  # still a tenth of the (shorter) run
            self.report["steps"] = fits
        self._mark, self._mark_step, self._mark_validation = now, step, self._validation_seconds()  # the next window
        self._publish()

    def on_train_end(self, args, state, control, **kwargs):
        self.report.update(steps=state.global_step, minutes_used=round((clock() - self._start) / 60, 2))
        self._publish()

    def _publish(self) -> None:
        if self.plan is not None:
            self.plan["time_budget"] = dict(self.report)


def agreed(value: float, device=None, op: Literal["min", "max"] = "min") -> float:
    """``value`` reduced over the processes of a distributed run (itself when there is one process): decisions
    that each process takes from its own clock must be the same everywhere, or one process waits forever."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    return tensor.item()


def refit_schedule(lr_scheduler, steps: int) -> bool:
    """Point a transformers schedule (a ``LambdaLR`` over ``partial``s with ``num_training_steps``: linear,
    cosine, polynomial, …) at a new total; False (and nothing changed) for a schedule without a length."""
    lambdas = getattr(lr_scheduler, "lr_lambdas", None)
    if not lambdas or not all(isinstance(f, partial) and "num_training_steps" in f.keywords for f in lambdas):
        if lr_scheduler is not None:
            logger.warning("the learning-rate schedule %s has no length to re-fit; it runs as planned",
                           type(lr_scheduler).__name__)
        return False
    lr_scheduler.lr_lambdas = [partial(f.func, *f.args, **{**f.keywords, "num_training_steps": steps}) for f in lambdas]
    return True


def fit_transition_prior_weight(recommender, prior, histories: list[list[int]], targets: list[int],
                                weights: list[float], k: int = 10, batch_size: int = 32,
                                cooccurrence_weights: list[float] | None = None, candidates: int = 0) -> dict:
    """Set ``prior.config.weight`` to the weight of ``weights`` whose re-ranking of the kept model's beam gives the
    best recall@``k`` on ``histories`` → ``targets`` (valid users), ties going to the better ndcg@``k`` — recall
    moves in steps of one user, so equal recalls are common on a few hundred — and then to the smaller weight; 0
    is always a candidate, so the prior is used only where it helps. With ``cooccurrence_weights`` (and a prior that
    has its co-occurrence neighbours), ``prior.config.cooccurrence_weight`` is chosen on the same grid, 0 always a
    candidate. The beam is decoded once and every pair of weights re-ranks the same candidates. With
    ``candidates`` > 0, each user's ``candidates`` best items by the prior (as each co-occurrence weight makes it)
    join the beam's, scored by the model exactly, as decoding does (``prior.config.candidates``). Returns what was
    measured."""
    start = clock()
    beams = max(recommender.generation_config.num_beams or k, k)
    found = recommender.recommend(histories, k=beams, num_beams=beams, batch_size=batch_size, prior_weight=0.0)
    ranked = [[(r["index"], r["score"]) for r in lists] for lists in found]
    n = max([prior.config.n_items] + [i + 1 for r in ranked for i, _ in r])
    transitions = prior.transition_log_prior(histories, n)  # the same for every weight
    ratios = sorted({0.0, *map(float, cooccurrence_weights or [])}) if prior.has_cooccurrence else [0.0]
    cooccurrence = prior.cooccurrence_log_prior(histories, n, prior.config.cooccurrence_temperature) \
        if len(ratios) > 1 else torch.zeros_like(transitions)
    pools = {ratio: ranked for ratio in ratios}
    if candidates:
        pools = prior_candidate_pools(recommender, prior, histories, ranked, transitions, cooccurrence, ratios, candidates)
    recall, ndcg = {}, {}
    for ratio in ratios:
        terms = transitions + ratio * cooccurrence
        log_priors = [[float(terms[u, i]) for i, _ in r] for u, r in enumerate(pools[ratio])]
        for weight in sorted({0.0, *map(float, weights)}):
            if not weight and ratio:  # the model alone: measured once, at ratio 0
                continue
            ranks = [[i for i, _ in prior.fuse(r, p, k, weight)] for r, p in zip(pools[ratio] if weight else ranked,
                                                                                  log_priors)]
            measured = ranking_metrics(ranks, targets, max(len(ranks), 1), ks=(k,))  # (coverage not read)
            recall[weight, ratio] = round(measured[f"recall@{k}"], 4)
            ndcg[weight, ratio] = round(measured[f"ndcg@{k}"], 4)
    chosen = max(recall, key=lambda wr: (recall[wr], ndcg[wr], -wr[0], -wr[1]))
    prior.config.weight, prior.config.cooccurrence_weight = chosen if chosen[0] else (0.0, 0.0)
    prior.config.candidates = candidates if chosen[0] else 0
    ratio = prior.config.cooccurrence_weight
    by_weight = {w: recall[w, r] for w, r in recall if r == ratio or not w}
    logger.warning("transition prior: valid recall@%d (ndcg@%d) by weight %s (%d users): weight %g kept%s", k, k,
                   ", ".join(f"{w:g}: {recall[w, r]:.4f} ({ndcg[w, r]:.4f})" for w, r in recall if r == ratio or not w),
                   len(targets), prior.config.weight,
                   f", co-occurrence weight {ratio:g} (of {', '.join(f'{r:g}' for r in ratios)})" if len(ratios) > 1 else "")
    summary = {"weight": prior.config.weight, f"valid_recall@{k}_by_weight": {f"{w:g}": r for w, r in by_weight.items()},
               f"valid_ndcg@{k}_by_weight": {f"{w:g}": ndcg[w, r] for w, r in recall if r == ratio or not w},
               "users": len(targets), "candidates": beams, "prior_candidates": prior.config.candidates,
               "seconds": round(clock() - start, 1)}
    if len(ratios) > 1:
        best = {r: max(recall[w, r2] for w, r2 in recall if r2 == r or not w) for r in ratios}
        summary.update(cooccurrence_weight=ratio, cooccurrence_temperature=prior.config.cooccurrence_temperature,
                       **{f"valid_recall@{k}_by_cooccurrence_weight": {f"{r:g}": v for r, v in best.items()}})
    return summary


def prior_candidate_pools(recommender, prior, histories: list[list[int]], ranked: list[list[tuple[int, float]]],
                          transitions: torch.Tensor, cooccurrence: torch.Tensor, ratios: list[float],
                          candidates: int) -> dict[float, list[list[tuple[int, float]]]]:
    """For each co-occurrence weight, every user's beam (``ranked``) joined by the prior's ``candidates`` best
    unseen items under that weight, each scored by the model: the pools decoding with that prior re-ranks. The
    items of all weights are scored in one pass."""
    tops = {ratio: prior.top_items(histories, candidates, exclude=histories, log_prior=transitions + ratio * cooccurrence)
            for ratio in ratios}
    found = [{i for i, _ in r} for r in ranked]
    missing = [sorted({i for ratio in ratios for i in tops[ratio][u]} - found[u]) for u in range(len(ranked))]
    scores = [dict(zip(items, values)) for items, values in zip(missing, recommender.item_log_probs(histories, missing))]
    return {ratio: [r + [(i, scores[u][i]) for i in tops[ratio][u] if i not in found[u]] for u, r in enumerate(ranked)]
            for ratio in ratios}
