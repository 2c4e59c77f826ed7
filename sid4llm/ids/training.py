"""Training any ID method on item embeddings and wrapping the result in a :class:`SemanticIdCodebook`.

Gradient-trained methods see **interaction events**: every epoch is one pass over the train events in a
random order, so an item appears as often as it was interacted with. That is what lets popular items earn
short codes. RQ-KMeans is fitted on the items themselves, as it usually is.

Training is counted in optimizer steps: ``epochs`` asks for passes over the events, ``min_steps`` raises that
for small datasets (90k events are 88 steps an epoch at batch 1,024: two epochs leave the τ/β schedules, free
bits and the length prior no room, and the codebook collapses to 1-code IDs), and every schedule is a fraction
of the steps. A codebook that still collapses is an error, not a warning (:func:`save_training_outputs`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import AtomicConfig
from .base import IdInputError, IdMethodConfig, encode_in_batches, validate_embeddings
from .codebook import SemanticIdCodebook
from .collaborative import CollaborativeInput, CollaborativeSettings
from .quality import collapse_problems, id_metrics, plot_length_vs_popularity, prefix_errors
from .registry import build_model
from .rqkmeans import ResidualKMeans

logger = logging.getLogger(__name__)


@dataclass
class IdTrainingArguments:
    """How to train (the method's own knobs live in its config)."""

    # Where the command reads and writes; train_semantic_ids itself needs neither (these double as its settings).
    data_dir: str | None = field(default=None, metadata={"help": "A folder written by sid4llm prepare-data (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where to write codebook/, metrics.json and the plot (required)."})
    method: Literal["dvae", "rqkmeans", "reinforce", "atomic"] = field(default="dvae", metadata={
        "help": "The ID method (atomic: one token per item)."})
    epochs: float = field(default=5.0, metadata={"help": "Passes over the train interaction events (raised to reach min_steps)."})
    min_steps: int = field(default=2000, metadata={"help": "Train at least this many steps whatever the dataset's size, so small catalogues get enough updates."})
    max_steps: int = field(default=-1, metadata={"help": "Train exactly this many steps (overrides epochs and min_steps when > 0)."})
    batch_size: int = field(default=1024, metadata={"help": "Interaction events per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    sampling: Literal["interactions", "uniform"] = field(default="interactions", metadata={
        "help": "interactions (each event once per epoch) or uniform (each item once)."})
    collaborative_weight: float = field(default=0.0, metadata={
        "help": "Share of the ID input from item co-occurrence in the train histories, beside the text embedding "
                "(0 = text only; items added later get it predicted from their text)."})
    collaborative_dim: int = field(default=64, metadata={"help": "Dimension of the co-occurrence embedding."})
    collaborative_window: int = field(default=10, metadata={"help": "Events apart that still count as co-occurring."})
    grad_clip: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0 = off)."})
    log_every: int = field(default=100, metadata={"help": "Log losses every this many steps."})
    plot: bool = field(default=True, metadata={"help": "Write length_vs_popularity.png."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the codebook to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub."})
    min_codebook_usage: float = field(default=0.5, metadata={"help": "Below this share of the codebook in use, training failed (collapse)."})
    min_mean_length: float = field(default=1.5, metadata={"help": "Variable length: below this mean codes per item, training failed (1-code collapse)."})
    allow_collapse: bool = field(default=False, metadata={"help": "Save a collapsed codebook anyway instead of stopping with an error."})

    def __post_init__(self):
        if self.sampling not in ("interactions", "uniform"):
            raise IdInputError(f"sampling must be 'interactions' or 'uniform', got {self.sampling!r}")
        if self.collaborative_weight != 0:
            self.collaborative_for(None)  # CollaborativeSettings checks the weight, dimension and window

    def collaborative_for(self, config: IdMethodConfig | None) -> CollaborativeSettings | None:
        """The co-occurrence input ``config``'s method reads, or None: text-only IDs, and atomic IDs (which read
        no input at all)."""
        if self.collaborative_weight == 0 or isinstance(config, AtomicConfig):
            return None
        return CollaborativeSettings(self.collaborative_weight, self.collaborative_dim, self.collaborative_window)

    def total_steps(self, events_per_epoch: int) -> int:
        """Optimizer steps of a run over ``events_per_epoch`` examples: ``max_steps``, else ``epochs`` of them
        but never fewer than ``min_steps``."""
        if self.max_steps > 0:
            return self.max_steps
        per_epoch = max(1, math.ceil(events_per_epoch / self.batch_size))
        return max(self.min_steps, 1, int(round(self.epochs * per_epoch)))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def event_order(popularity: np.ndarray, sampling: str, rng: np.random.Generator) -> np.ndarray:
    """One epoch of training examples: item indices, each repeated once per train event (or once)."""
    if sampling == "uniform":
        return rng.permutation(len(popularity))
    events = np.repeat(np.arange(len(popularity), dtype=np.int64), popularity)
    rng.shuffle(events)
    return events


def train_semantic_ids(
    embeddings: np.ndarray | torch.Tensor,
    popularity: np.ndarray,
    config: IdMethodConfig,
    args: IdTrainingArguments,
    item_ids: list[str] | None = None,
    titles: list[str] | None = None,
    accelerator=None,
    histories: list[list[int]] | None = None,
) -> SemanticIdCodebook:
    """Train ``config``'s method; return a codebook whose ``metrics`` hold the full report. ``histories`` (the
    train events of each user, as item indices) are needed when ``args.collaborative_weight`` > 0."""
    x = validate_embeddings(embeddings)
    text_dim, collaborative, settings = x.shape[1], None, args.collaborative_for(config)
    if settings is not None:
        if histories is None:
            raise IdInputError("collaborative_weight > 0 needs the train histories (train_semantic_ids(histories=...))")
        collaborative, mixed = CollaborativeInput.fit(x.numpy(), histories, settings)
        x = torch.from_numpy(mixed)
    popularity = np.asarray(popularity, dtype=np.int64)
    if len(popularity) != len(x):
        raise IdInputError(f"{len(popularity)} popularity counts for {len(x)} embeddings")
    if (popularity < 0).any():
        raise IdInputError("popularity counts must be >= 0")
    if args.sampling == "interactions" and popularity.sum() == 0:
        raise IdInputError("no train interactions to sample from; use sampling='uniform'")
    item_ids = item_ids or [str(i) for i in range(len(x))]
    set_seed(config.seed)
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    if isinstance(config, AtomicConfig):
        return _atomic_codebook(x, popularity, config.for_catalogue(len(x)), item_ids, titles)
    model = build_model(config, x.shape[1]).to(device)
    start = time.time()
    history: list[dict] = []
    steps = 0
    if isinstance(model, ResidualKMeans):
        model.fit(x.to(device))
    else:
        steps, history = _gradient_training(model, x, popularity, args, accelerator)
    train_seconds = time.time() - start

    codes, lengths = encode_in_batches(model, x)
    codebook = SemanticIdCodebook.from_codes(item_ids, codes, lengths, popularity, config, model.cpu(), titles,
                                             embedding_dim=text_dim, collaborative=collaborative)
    errors = prefix_errors(codebook.model, x, codes)
    metrics = id_metrics(errors, codes.numpy(), lengths.numpy(), popularity, codebook.disambiguation, config.vocab_size)
    metrics.update({
        "method": config.method, "variable_length": config.variable_length, "vocab_size": config.vocab_size,
        "max_length": config.max_length, "train_seconds": round(train_seconds, 2), "train_steps": steps,
        "train_examples_per_second": round(steps * args.batch_size / train_seconds, 1) if steps else None,
        "device": str(device), "history": history,
        "collaborative": settings.to_dict() if settings is not None else None,
    })
    metrics["collapse"] = collapse_problems(metrics, args.min_codebook_usage, args.min_mean_length)
    codebook.metrics = metrics
    return codebook


def _atomic_codebook(x: torch.Tensor, popularity: np.ndarray, config: AtomicConfig, item_ids: list[str],
                     titles: list[str] | None) -> SemanticIdCodebook:
    """One token per item: nothing to train, no encoder kept, no reconstruction to report."""
    n = len(x)
    codes, lengths = np.arange(n)[:, None], np.ones(n, dtype=np.int64)
    codebook = SemanticIdCodebook.from_codes(item_ids, codes, lengths, popularity, config, None, titles,
                                             embedding_dim=x.shape[1])
    metrics = id_metrics(np.zeros((n, 1)), codes, lengths, popularity, codebook.disambiguation, config.vocab_size)
    for key in ("recon_mse_uniform", "recon_mse_unigram", "recon_mse_at_length"):
        metrics[key] = None
    metrics.update({"method": config.method, "variable_length": False, "vocab_size": config.vocab_size,
                    "max_length": 1, "train_seconds": 0.0, "train_steps": 0, "history": []})
    codebook.metrics = metrics
    return codebook


def _gradient_training(model, x, popularity, args: IdTrainingArguments, accelerator) -> tuple[int, list[dict]]:
    rng = np.random.default_rng(model.config.seed)
    per_epoch = int(popularity.sum()) if args.sampling == "interactions" else len(popularity)
    steps_per_epoch = max(1, math.ceil(per_epoch / args.batch_size))
    total = args.total_steps(per_epoch)
    if args.max_steps <= 0 and total > round(args.epochs * steps_per_epoch):
        logger.info("%d steps (%.1f epochs of %d events): min_steps raised %g epochs of %d steps", total,
                    total / steps_per_epoch, per_epoch, args.epochs, steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    x_device = x.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)
    history, order, cursor = [], np.empty(0, dtype=np.int64), 0
    running: dict[str, float] = {}
    model.train()
    quiet = not accelerator.is_local_main_process or os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    bar = tqdm(range(total), desc=f"train {unwrapped.config.method}", disable=quiet)
    for step in bar:
        if cursor + args.batch_size > len(order):
            order, cursor = event_order(popularity, args.sampling, rng), 0
        batch = torch.from_numpy(order[cursor : cursor + args.batch_size]).to(accelerator.device)
        cursor += args.batch_size
        out = unwrapped.training_loss(x_device[batch], progress=step / total)
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"loss became {out['loss'].item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(out["loss"])
        if args.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        for k, v in out.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == total:
            n = (step % args.log_every) + 1
            row = {"step": step + 1, "epoch": round((step + 1) / steps_per_epoch, 3),
                   **{k: round(v / n, 5) for k, v in running.items()}}
            history.append(row)
            bar.set_postfix(recon=row.get("recon"), length=row.get("mean_length"))
            running = {}
    return total, history


class CodebookCollapseError(IdInputError):
    """Training ended with a collapsed codebook (few codes in use, or 1-code IDs); the message says what to change."""


def save_training_outputs(codebook: SemanticIdCodebook, output_dir: str | Path, plot: bool = True,
                          allow_collapse: bool = False) -> Path:
    """``OUT/codebook/``, ``OUT/metrics.json`` and ``OUT/length_vs_popularity.png``.

    A collapsed codebook (``metrics["collapse"]``) is not saved unless ``allow_collapse``: its metrics go to
    ``OUT/collapse_report.json`` for diagnosis, nothing already in ``OUT`` is touched, and
    :class:`CodebookCollapseError` says what to change."""
    import json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = codebook.metrics.get("collapse") or []
    if problems and not allow_collapse:
        report = out / "collapse_report.json"
        report.write_text(json.dumps(codebook.metrics, indent=2))
        raise CodebookCollapseError(
            "the codebook collapsed: " + "; ".join(problems) + ". Train longer (--min_steps / --epochs), use a "
            "smaller --batch_size or --vocab_size, or a lower --length_cost; --allow_collapse saves it anyway. "
            f"Nothing was saved; the metrics are in {report}")
    codebook.save_pretrained(out / "codebook")
    (out / "metrics.json").write_text(json.dumps(codebook.metrics, indent=2))
    if plot:
        cfg = codebook.config
        plot_length_vs_popularity(codebook.code_lengths, codebook.popularity, out / "length_vs_popularity.png",
                                  f"{cfg.method}{' (variable length)' if cfg.variable_length else ''}: "
                                  f"V={cfg.vocab_size}, L={cfg.max_length}")
    return out


def load_finished_run(output_dir: str | Path, method_config: IdMethodConfig, args: IdTrainingArguments,
                      popularity: np.ndarray) -> SemanticIdCodebook | None:
    """The codebook saved in ``output_dir`` by :func:`save_training_outputs` if it was trained with this
    method config for the steps ``args`` asks for, else None: a longer run re-run with the same command
    reuses its finished steps, and one with other settings trains again instead of reusing stale IDs."""
    import json

    out = Path(output_dir)
    saved, metrics = out / "codebook" / "codebook_config.json", out / "metrics.json"
    if not (saved.is_file() and metrics.is_file()):
        return None
    events = int(popularity.sum()) if args.sampling == "interactions" else len(popularity)
    steps = 0 if method_config.method in ("rqkmeans", "atomic") else args.total_steps(events)
    settings = args.collaborative_for(method_config)
    collaborative = settings.to_dict() if settings is not None else None
    saved_config = json.loads(saved.read_text())
    if saved_config.get("id_method") != method_config.to_dict() or saved_config.get("collaborative") != collaborative \
            or json.loads(metrics.read_text()).get("train_steps") != steps:
        return None
    return SemanticIdCodebook.from_pretrained(out / "codebook")
