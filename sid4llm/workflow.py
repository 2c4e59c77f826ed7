"""Pipeline steps driven by the recipes' YAML configs, for scripts that chain them (quickstart, paper
reproduction). Each step skips itself when its output is already complete, so a killed run re-run with the
same command continues where it stopped, and under ``accelerate launch`` the main process does the
single-process steps first while the others wait and then load its results."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .data import PreparedData
from .ids import (
    IdTrainingArguments,
    SemanticIdCodebook,
    config_class,
    save_training_outputs,
    train_semantic_ids,
)
from .tasks import TaskArguments

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


def config_path(path: str | Path) -> Path:
    """A config path as given, else relative to the repository (so scripts run from any directory)."""
    p = Path(path)
    if p.is_file():
        return p
    if (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    raise FileNotFoundError(f"config file not found: {path}")


def parse_yaml(dataclass_types: list[type], path: str | Path | None, overrides: dict[str, Any]) -> tuple:
    """Dataclasses from a recipe YAML plus ``overrides`` (None values ignored); unknown keys are errors."""
    values = yaml.safe_load(config_path(path).read_text()) if path else {}
    values = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return HfArgumentParser(dataclass_types).parse_dict(values)


def id_method(ids_config: str | Path) -> str:
    """The ``method`` an ID config trains (``dvae`` when it does not say)."""
    return (yaml.safe_load(config_path(ids_config).read_text()) or {}).get("method", "dvae")


def train_ids_step(data: PreparedData, ids_config: str | Path, output_dir: str | Path, **overrides) -> SemanticIdCodebook:
    """``recipes/train_ids.py`` with a config: OUT/codebook, OUT/metrics.json, OUT/length_vs_popularity.png."""
    out = Path(output_dir)
    if (out / "metrics.json").is_file() and (out / "codebook" / "codebook_config.json").is_file():
        logger.info("IDs found in %s", out)
        return SemanticIdCodebook.from_pretrained(out / "codebook")
    method = overrides.get("method") or id_method(ids_config)
    args, method_config = parse_yaml([IdTrainingArguments, config_class(method)], ids_config,
                                     {**overrides, "data_dir": str(data.path), "output_dir": str(out)})
    codebook = train_semantic_ids(data.item_embeddings(), data.item_popularity, method_config, args,
                                  item_ids=list(data.items["item_id"]), titles=list(data.items["title"]))
    save_training_outputs(codebook, out, plot=args.plot, allow_collapse=args.allow_collapse)
    return codebook


def finetune_step(finetune_config: str | Path, data_dir: str | Path, codebook_dir: str | Path, output_dir: str | Path,
                  **overrides):
    """``recipes/finetune.py`` with a config; returns the trained (or already saved) SidRecommender."""
    from .finetuning import ModelArguments, SidDataArguments, run_finetune
    from .recommender import CONFIG_FILE, SidRecommender

    out = Path(output_dir)
    if (out / CONFIG_FILE).is_file():
        logger.info("trained recommender found in %s", out)
        return SidRecommender.from_pretrained(out)
    model_args, data_args, task_args, training_args = parse_yaml(
        [ModelArguments, SidDataArguments, TaskArguments, TrainingArguments], finetune_config,
        {**overrides, "data_dir": str(data_dir), "codebook": str(codebook_dir), "output_dir": str(out)})
    return run_finetune(model_args, data_args, task_args, training_args)


def machine_description() -> str:
    """What a reported time ran on: architecture, CPU threads torch uses, the GPU if any."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads, {gpu}"


def write_json(path: str | Path, value: Any) -> None:
    """JSON written atomically (numpy scalars as numbers), so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    tmp.replace(path)
