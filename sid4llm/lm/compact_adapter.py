"""A full-layer adapter saved small: the token-embedding rows training changed, not the whole matrix twice.

The first-layer adapter (``peft_layers=full``) trains the token embeddings as a PEFT ``modules_to_save`` copy: fast
to train (a plain embedding), but peft would save the whole matrix, and once more for a tied head — 242 MB for
SmolLM2-135M, of which only the new ID rows and the rows the training examples read ever changed. At save time that
copy becomes peft's own ``trainable_token_indices`` form (the changed rows and their indices), so the folder holds
the layer, the norm and those rows, and still loads with ``AutoPeftModelForCausalLM.from_pretrained`` and
``PeftModel.from_pretrained``.

peft's trainable-token layer rebuilds the whole matrix at every forward; :func:`cache_token_rows` builds it once for
a model that is only used for inference (decoding would otherwise pay that copy at every step).
"""

from __future__ import annotations

import copy
import types
from pathlib import Path

import torch

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _embedding_copy(model):
    """(name of the input embedding module, its trained ``modules_to_save`` copy, the base module), or None when
    the embeddings are not trained as a whole copy."""
    from peft.utils import ModulesToSaveWrapper

    embeddings = model.get_input_embeddings()
    for name, module in model.get_base_model().named_modules():
        if isinstance(module, ModulesToSaveWrapper) and embeddings in (module, *module.modules_to_save.values(),
                                                                        module.original_module):
            adapter = model.active_adapter
            return name, module.modules_to_save[adapter], module.original_module
    return None


def changed_rows(trained: torch.Tensor, original: torch.Tensor, always: list[int] = ()) -> list[int]:
    """Rows of ``trained`` that differ from ``original`` (a resized matrix's new rows count as changed), plus
    ``always``."""
    n = min(len(original), len(trained))
    differs = (trained[:n] != original[:n]).any(dim=1).nonzero().flatten().tolist()
    return sorted(set(differs) | set(range(n, len(trained))) | {int(i) for i in always})


def save_compact_adapter(model, save_directory: str | Path, always_rows: list[int] = ()) -> dict | None:
    """Save ``model`` (a ``PeftModel`` whose token embeddings are a ``modules_to_save`` copy) as a peft adapter in
    which the embedding is only its changed rows (``trainable_token_indices``) and a tied head is not stored
    again. Returns what was saved (``rows``, ``of``), or None when the model has no such copy (the caller saves it
    as usual)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    found = _embedding_copy(model)
    if found is None:
        return None
    name, trained, original = found
    adapter = model.active_adapter
    config = copy.deepcopy(model.peft_config[adapter])
    rows = changed_rows(trained.weight.detach(), original.weight.detach(), always_rows)
    state = get_peft_model_state_dict(model, adapter_name=adapter, save_embedding_layers=False)
    head = model.get_base_model().get_output_embeddings()
    head_name = next((n for n, m in model.get_base_model().named_modules() if m is head), None)
    tied = bool(getattr(model.get_base_model().config.get_text_config(), "tie_word_embeddings", False))
    dropped = {name, name.split(".")[-1]} | ({head_name, (head_name or "").split(".")[-1]} if tied else set())
    state = {k: v for k, v in state.items()
             if not any(k == f"base_model.model.{d}.weight" for d in dropped if d)}
    state[f"base_model.model.{name}.token_adapter.trainable_tokens_delta"] = trained.weight.detach()[rows].contiguous()
    config.modules_to_save = [m for m in (config.modules_to_save or []) if m not in dropped] or None
    kept = config.trainable_token_indices if isinstance(config.trainable_token_indices, dict) else {}
    config.trainable_token_indices = {**kept, name.split(".")[-1]: rows}  # an untied head keeps its own rows
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, out / ADAPTER_WEIGHTS,
              metadata={"format": "pt"})
    return {"rows": len(rows), "of": int(trained.weight.shape[0])}


def cache_token_rows(model) -> int:
    """Build the trained embedding matrix of every peft trainable-token layer once, for inference: peft's layer
    rebuilds it at each forward (a full copy of the matrix). The cache is valid while the weights do not change;
    with the adapter disabled (the words path) the base rows are read as before. Returns the layers cached."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    built: dict[tuple[int, tuple[str, ...]], torch.Tensor] = {}
    count = 0
    for module in model.modules():
        if not isinstance(module, TrainableTokensLayer):
            continue
        uncached = module.get_merged_weights

        def merged(self, active_adapters, _uncached=uncached):
            key = (self.base_layer.weight.data_ptr(), tuple(active_adapters))
            if key not in built:
                with torch.no_grad():
                    built[key] = _uncached(active_adapters).detach()
            return built[key]

        module.get_merged_weights = types.MethodType(merged, module)
        count += 1
    return count

