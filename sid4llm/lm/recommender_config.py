"""What a saved recommender *is* — ``sid4llm_config.json``, typed and strict — apart from what its runs measured
(``results.json``: training metrics, example statistics, test metrics).

The file holds what inference needs, once: the model (base, adapter or not, layer cut, item memory tokens, softmax
form), how it reads a history or a request (:class:`PromptConfig`), how it decodes (:class:`DecodingConfig`: beams,
the transition prior's weight, the share for cold items), and the catalogue's words
(:class:`~sid4llm.data.profile.CatalogueProfile`). ``recommend``, ``evaluate``, the chat and the server all read
these. How the model was trained is recorded beside them (``training``), free-form, for the model card and for
reproduction: a new training setting never changes the saved format. Older formats load unchanged (``from_saved``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from transformers import GenerationConfig

from ..artifacts import ArtifactError
from ..data.profile import CatalogueProfile, ProfileError
from ..vocabulary import IdVocabulary

CONFIG_FILE = "sid4llm_config.json"
RESULTS_FILE = "results.json"
FORMAT_VERSION = 6
DEFAULT_NUM_BEAMS = 50  # recall@10 saturates here on ML-1M (scripts/bench_beam_width.py)
# What configs written before format 1 held beside the settings; moved to results.json when such a folder loads.
_LEGACY_RESULT_KEYS = ("metrics", "example_stats", "evaluation")


@dataclass
class PromptConfig:
    """How the model reads a history or a request: the task arguments that shape its prompts (a subset of
    :class:`~sid4llm.lm.tasks.TaskArguments`, by the same names)."""

    tasks: list[str] = field(default_factory=lambda: ["sequential"])
    history_token_budget: int | None = 512
    max_history_items: int | None = None
    text_history_items: int | None = None
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    system_prompt: str = "You are a recommender. Answer with item IDs."
    request_max_tokens: int = 48


@dataclass
class DecodingConfig:
    """How every path decodes (``recommend``, ``evaluate``, the chat, the server), unless a call says otherwise."""

    num_beams: int = DEFAULT_NUM_BEAMS
    transition_prior_weight: float | None = None  # None: the saved prior's own weight (or no prior)
    cold_share: float = 0.0  # share of each list for items added after training (add-items)

    def __post_init__(self):
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if not 0.0 <= self.cold_share <= 1.0:
            raise ValueError(f"cold_share must be in [0, 1], got {self.cold_share}")


@dataclass
class SidRecommenderConfig:
    """The settings that rebuild a recommender and decode with it exactly, and a record of how it was trained."""

    base_model: str
    peft: bool = False
    from_scratch: bool = False
    pretrained_layers: int | None = None
    item_memory_tokens: bool = False
    trie_softmax: bool = False
    prompt: PromptConfig = field(default_factory=PromptConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    profile: CatalogueProfile = field(default_factory=CatalogueProfile)
    training: dict[str, Any] = field(default_factory=dict)  # free-form: model, tasks, training settings as run
    data_dir: str | None = None
    dataset: str | None = None
    dataset_stats: dict[str, Any] = field(default_factory=dict)
    trained_items: int | None = None  # codebook size at training: items after these were added (cold start)

    @property
    def layer_cut_adapter(self) -> bool:
        """A PEFT adapter trained on the first layers of a base: its ID path is those layers of the whole base."""
        return bool(self.pretrained_layers and self.peft)

    @property
    def text_tasks(self) -> bool:
        """Whether the model learned to read words (a task other than ID streams)."""
        return any(t != "sequential" for t in self.prompt.tasks)

    def inference_dict(self) -> dict[str, Any]:
        """Everything but the training record: what loading and decoding read."""
        return {k: v for k, v in self.to_dict().items() if k != "training"}

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path = CONFIG_FILE) -> SidRecommenderConfig:
        """Strict: an unknown or missing key (at the top, or in the prompt, decoding or profile) is an error naming
        it and the file — a renamed or dropped field would otherwise change the prompts or the model silently."""
        values = dict(values)
        version = values.pop("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(f"{where}: format_version {version!r} is newer than this sid4llm reads "
                                f"({FORMAT_VERSION}); upgrade sid4llm")
        if version < 6:
            values = _from_format_5(values, where)
        known = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(values) - known), sorted({"base_model"} - set(values))
        if unknown or missing:
            raise ArtifactError(f"{where}: {_key_problems(unknown, missing)}; it was saved by another sid4llm version")
        nested: dict[str, Any] = {}
        for key, kind in (("prompt", PromptConfig), ("decoding", DecodingConfig)):
            saved = values.get(key, {})
            if not isinstance(saved, dict):
                raise ArtifactError(f"{where}: '{key}' must be a mapping")
            names = {f.name for f in fields(kind)}
            # a prompt setting left out would build other prompts than the model was trained on: all must be there
            unknown, missing = sorted(set(saved) - names), sorted(names - set(saved)) if key == "prompt" else []
            if unknown or missing:
                raise ArtifactError(f"{where}: {key} has {_key_problems(unknown, missing)}; it was saved by another "
                                    "sid4llm version, whose prompts this one would not build the same way. Use that "
                                    "version, or retrain")
            try:
                nested[key] = kind(**saved)
            except (TypeError, ValueError) as err:
                raise ArtifactError(f"{where}: {key}: {err}") from None
        try:
            nested["profile"] = CatalogueProfile.from_dict(values.get("profile", {}), f"{where}: profile")
        except ProfileError as err:
            raise ArtifactError(str(err)) from None
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
            values["task_args"] = task_args
        return cls.from_dict(values, where), results


def recommendation_generation_config(vocab: IdVocabulary, num_beams: int = DEFAULT_NUM_BEAMS) -> GenerationConfig:
    """A complete config for ID generation, so a checkpoint's sampling defaults can never leak into beam
    search: greedy beams, no sampling, stop at the end-of-ID marker."""
    longest = max(len(s) for s in vocab.codebook.sequences) + 2
    tokenizer = vocab.tokenizer
    eos = [vocab.end_id] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    return GenerationConfig(
        do_sample=False, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=longest + 4,
        early_stopping=True, length_penalty=0.0, temperature=None, top_k=None, top_p=None,
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )


def _from_format_5(values: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """A format 0–5 file (model and task arguments saved whole) as format 6: the inference settings picked out,
    everything it held kept as the training record. Those versions spoke of movies only: their default item nouns
    mean MovieLens's profile."""
    for key in ("model_args", "task_args"):
        if key not in values:
            raise ArtifactError(f"{where}: missing key(s) ['{key}']; it was saved by another sid4llm version")
        if not isinstance(values[key], dict):
            raise ArtifactError(f"{where}: '{key}' must be a mapping (how the model was built)")
    model_args, task_args = values.pop("model_args"), values.pop("task_args")
    prompt_keys = {f.name for f in fields(PromptConfig)}
    nouns = task_args.get("request_item_nouns", ["movie", "film"])
    profile = CatalogueProfile.read("movielens") if list(nouns) == ["movie", "film"] else \
        CatalogueProfile(item_noun=str(nouns[0]) if nouns else "item", request_nouns=list(nouns))
    return {**{k: v for k, v in values.items() if k != "training_settings"},
            "pretrained_layers": model_args.get("pretrained_layers"),
            "item_memory_tokens": bool(model_args.get("item_memory_tokens", False)),
            "trie_softmax": bool(model_args.get("trie_softmax", False)),
            "prompt": {k: v for k, v in task_args.items() if k in prompt_keys},
            "profile": profile.to_dict(),
            "training": {"model": model_args, "tasks": task_args,
                         "training": values.get("training_settings", {})}}


def _key_problems(unknown: list[str], missing: list[str]) -> str:
    return " and ".join(([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else []))
