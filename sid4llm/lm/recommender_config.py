"""What a saved recommender *is* — ``sid4llm_config.json``, typed and strict — apart from what its runs measured
(``results.json``: training metrics, example statistics, test metrics)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactError
from .models import ModelArguments
from .tasks import TaskArguments

CONFIG_FILE = "sid4llm_config.json"
RESULTS_FILE = "results.json"
FORMAT_VERSION = 5
# What configs written before format 1 held beside the settings; moved to results.json when such a folder loads.
_LEGACY_RESULT_KEYS = ("metrics", "example_stats", "evaluation")
# Settings each format added, with the value that builds what an older file's model was (so it loads unchanged).
_ADDED_IN_FORMAT = {2: {"model_args": {"item_memory_tokens": False, "item_memory_dropout": 0.0}},
                    3: {"model_args": {"trie_softmax": False}},
                    4: {"task_args": {"stream_item_dropout": 0.0}},
                    5: {"task_args": {"stream_tie_shuffle": False}}}


@dataclass
class SidRecommenderConfig:
    """The settings that rebuild a recommender exactly: its base, how it was adapted, the prompts it reads (task
    arguments), how it was trained, and on which dataset."""

    base_model: str
    model_args: ModelArguments
    task_args: TaskArguments
    peft: bool = False
    from_scratch: bool = False
    training_settings: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    dataset: str | None = None
    dataset_stats: dict[str, Any] = field(default_factory=dict)
    trained_items: int | None = None  # codebook size at training: items after these were added (cold start)

    @property
    def pretrained_layers(self) -> int | None:
        return self.model_args.pretrained_layers

    @property
    def layer_cut_adapter(self) -> bool:
        """A PEFT adapter trained on the first layers of a base: its ID path is those layers of the whole base."""
        return bool(self.pretrained_layers and self.peft)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path = CONFIG_FILE) -> SidRecommenderConfig:
        """Strict: an unknown or missing key (at the top, or in the model or task arguments) is an error naming it and
        the file — a renamed or dropped field would otherwise change the prompts or the model silently."""
        values = dict(values)
        version = values.pop("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(f"{where}: format_version {version!r} is newer than this sid4llm reads "
                                f"({FORMAT_VERSION}); upgrade sid4llm")
        for added_in, added in _ADDED_IN_FORMAT.items():
            if version < added_in:
                for key, defaults in added.items():
                    if isinstance(values.get(key), dict):
                        values[key] = {**defaults, **values[key]}
        known = {f.name for f in fields(cls)}
        required = {"base_model", "model_args", "task_args"}
        unknown, missing = sorted(set(values) - known), sorted(required - set(values))
        if unknown or missing:
            raise ArtifactError(f"{where}: {_key_problems(unknown, missing)}; it was saved by another sid4llm version")
        nested = {}
        for key, kind, what in (("model_args", ModelArguments, "model"), ("task_args", TaskArguments, "prompts")):
            saved = values[key]
            if not isinstance(saved, dict):
                raise ArtifactError(f"{where}: '{key}' must be a mapping (how the model's {what} are built)")
            names = {f.name for f in fields(kind)}
            unknown, missing = sorted(set(saved) - names), sorted(names - set(saved))
            if unknown or missing:
                raise ArtifactError(f"{where}: {key} has {_key_problems(unknown, missing)}; it was saved by another "
                                    f"sid4llm version, whose {what} this one would not build the same way. Use that "
                                    "version, or retrain")
            try:
                nested[key] = kind(**saved)
            except (TypeError, ValueError) as err:
                raise ArtifactError(f"{where}: {key}: {err}") from None
        return cls(**{**values, **nested})

    @classmethod
    def from_saved(cls, values: dict[str, Any], where: str | Path = CONFIG_FILE) -> tuple[SidRecommenderConfig, dict]:
        """The config and the results of a saved ``sid4llm_config.json``; one written before format 1 (results mixed
        in, tasks as one comma-separated string) is read as it meant."""
        values, results = dict(values), {}
        if "format_version" not in values:
            results = {k: values.pop(k) for k in _LEGACY_RESULT_KEYS if k in values}
            task_args = dict(values.get("task_args") or {})
            if isinstance(task_args.get("tasks"), str):
                task_args["tasks"] = [t for t in re.split(r"[\s,]+", task_args["tasks"]) if t]
            targets = (values.get("model_args") or {}).get("lora_target_modules")
            if isinstance(targets, str):
                values["model_args"] = {**values["model_args"],
                                        "lora_target_modules": [t for t in re.split(r"[\s,]+", targets) if t]}
            values["task_args"] = task_args
        return cls.from_dict(values, where), results


def _key_problems(unknown: list[str], missing: list[str]) -> str:
    return " and ".join(([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else []))
