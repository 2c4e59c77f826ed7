"""Quality of a set of semantic IDs, reported uniform (each item once) and unigram (weighted by train
interactions), as in the paper. Reconstruction error is the squared L2 distance between the unit-norm item
embedding and the model's reconstruction from the item's code prefix (``2 − 2 cos`` when both are unit norm)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import torch

from .base import IdModel, module_device


@torch.no_grad()
def prefix_errors(model: IdModel, x: torch.Tensor, codes: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """[n, L] squared error of the reconstruction from every prefix length."""
    device = module_device(model)
    out = []
    for xs, cs in zip(x.split(batch_size), codes.split(batch_size)):
        x_hat = model.reconstruct(cs.to(device))
        out.append((x_hat - xs.to(device)[:, None, :]).pow(2).sum(-1).cpu())
    return torch.cat(out).numpy()


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    if weights.sum() <= 0:
        return float(values.mean())
    return float((values * weights).sum() / weights.sum())


def id_metrics(
    errors: np.ndarray,
    codes: np.ndarray,
    lengths: np.ndarray,
    popularity: np.ndarray,
    disambiguation: np.ndarray,
    vocab_size: int,
) -> dict:
    """All metrics of the ``train_ids`` report from per-prefix errors [n, L], codes [n, L], lengths [n]."""
    n, L = codes.shape
    pop = popularity.astype(np.float64)
    at_length = errors[np.arange(n), lengths - 1]
    usage, perplexity = [], []
    for t in range(L):
        active = lengths > t
        counts = np.bincount(codes[active, t], minlength=vocab_size) if active.any() else np.zeros(vocab_size)
        usage.append(float((counts > 0).sum() / vocab_size))
        p = counts[counts > 0] / max(counts.sum(), 1)
        perplexity.append(float(math.exp(-(p * np.log(p)).sum())) if len(p) else 0.0)
    groups = Counter(tuple(row[:k]) for row, k in zip(codes.tolist(), lengths.tolist()))
    in_collision = sum(c for c in groups.values() if c > 1)
    if len(set(lengths.tolist())) > 1:
        spearman = float(pd.Series(lengths).corr(pd.Series(pop), method="spearman"))
    else:
        spearman = None  # constant length: no correlation to speak of
    id_lengths = lengths + (disambiguation > 0)
    median_pop = {int(k): float(np.median(pop[lengths == k])) for k in sorted(set(lengths.tolist()))}
    metrics = {
        "n_items": int(n),
        "recon_mse_uniform": float(at_length.mean()),
        "recon_mse_unigram": _weighted_mean(at_length, pop),
        "recon_mse_at_length": [float(v) for v in errors.mean(0)],
        "mean_length_uniform": float(lengths.mean()),
        "mean_length_unigram": _weighted_mean(lengths.astype(np.float64), pop),
        "mean_id_length_uniform": float(id_lengths.mean()),
        "mean_id_length_unigram": _weighted_mean(id_lengths.astype(np.float64), pop),
        "length_histogram": {int(k): int((lengths == k).sum()) for k in range(1, L + 1)},
        "median_popularity_by_length": median_pop,
        "spearman_length_popularity": spearman,
        "codebook_usage": usage,
        "codebook_usage_overall": float(len(np.unique(np.concatenate([row[:k] for row, k in zip(codes, lengths)]))) / vocab_size),
        "codebook_perplexity": perplexity,
        "collision_rate_before_dedup": float(in_collision / n),
        "max_items_per_code": int(max(groups.values())),
        "unique_ids": float(len({(tuple(r[:k]), int(d)) for r, k, d in zip(codes.tolist(), lengths.tolist(), disambiguation)}) / n),
        "num_disambiguation_tokens": int(disambiguation.max(initial=0)),
    }
    return metrics


def collapse_problems(metrics: dict, min_usage: float, min_mean_length: float) -> list[str]:
    """What makes a trained codebook unusable, in words (empty when healthy): too few codes in use (a share
    ``min_usage`` of the codes the catalogue could use), or (variable length) nearly every item on a 1-code ID,
    which leaves the disambiguation suffixes to tell items apart."""
    problems = []
    if metrics.get("method") == "atomic":
        return problems
    vocab, usage = metrics["vocab_size"], metrics["codebook_usage_overall"]
    usable = min(vocab, metrics["n_items"] * metrics["max_length"])  # a small catalogue cannot use every code
    if usage * vocab < min_usage * usable:
        problems.append(f"codebook usage {usage:.3f}: only {round(usage * vocab)} of {vocab} codes in use "
                        f"(expected at least {min_usage:g} × {usable})")
    if metrics.get("variable_length") and metrics["mean_length_uniform"] < min_mean_length:
        problems.append(f"mean length {metrics['mean_length_uniform']:.2f} codes per item < {min_mean_length:g} "
                        f"({metrics['num_disambiguation_tokens']} disambiguation tokens needed)")
    return problems


def summary_table(metrics: dict) -> str:
    """The console summary of a training run: lengths with and without suffixes, usage, collisions, Spearman."""
    def f(v, fmt=".3f"):
        return "–" if v is None else format(v, fmt)

    usage_steps = "/".join(f"{u:.2f}" for u in metrics["codebook_usage"])
    perplexity = "/".join(f"{p:.0f}" for p in metrics["codebook_perplexity"])
    rows = [
        ("codes per item", f"{f(metrics['mean_length_uniform'], '.2f')} (per interaction "
                           f"{f(metrics['mean_length_unigram'], '.2f')})"),
        ("ID tokens per item", f"{f(metrics['mean_id_length_uniform'], '.2f')} with disambiguation suffixes (per "
                               f"interaction {f(metrics['mean_id_length_unigram'], '.2f')}); an LM stream adds one end token"),
        ("codebook usage", f"{f(metrics['codebook_usage_overall'])} of {metrics['vocab_size']} codes; per step "
                           f"{usage_steps}; perplexity per step {perplexity}"),
        ("collisions", f"{100 * metrics['collision_rate_before_dedup']:.1f} % of items before disambiguation; "
                       f"{metrics['num_disambiguation_tokens']} suffix tokens; at most {metrics['max_items_per_code']} "
                       "items on one code"),
        ("Spearman(length, popularity)", f(metrics["spearman_length_popularity"])),
        ("reconstruction", f"{f(metrics['recon_mse_uniform'])} per item, {f(metrics['recon_mse_unigram'])} per interaction"),
        ("training", f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s on {metrics.get('device', '?')}"),
    ]
    if metrics.get("collapse"):
        rows.append(("COLLAPSED", "; ".join(metrics["collapse"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def plot_length_vs_popularity(lengths: np.ndarray, popularity: np.ndarray, path, title: str = "") -> None:
    """Mean ID length per popularity decile, and the popularity spread of each length (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    order = np.argsort(popularity, kind="stable")
    deciles = np.array_split(order, 10)
    ax1.plot(range(1, 11), [lengths[d].mean() for d in deciles], marker="o")
    ax1.set_xlabel("item popularity decile (1 = rarest, 10 = most popular)")
    ax1.set_ylabel("mean code length")
    ax1.set_xticks(range(1, 11))
    ax1.grid(alpha=0.3)
    ks = sorted(set(lengths.tolist()))
    ax2.boxplot([np.maximum(popularity[lengths == k], 1) for k in ks], tick_labels=[str(k) for k in ks])
    ax2.set_yscale("log")
    ax2.set_xlabel("code length")
    ax2.set_ylabel("train interactions (log)")
    fig.suptitle(title or "ID length vs popularity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
