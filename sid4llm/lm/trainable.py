"""A saved recommender loaded to train further: the preference stage (``sid4llm align``) and ``finetune
--init_from`` start from one.

:meth:`SidRecommender.from_pretrained` loads for inference: an adapter frozen, its trained token rows cached, a
layer-cut adapter on the whole base. Training needs the model as it was trained: a full model with its weights
trainable, an adapter trainable on the base it was trained on (its first ``pretrained_layers`` layers for a
layer-cut adapter), with peft's trainable-token layers live.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .models import load_causal_lm, peft_without_its_deprecation
from .recommender import SidRecommender


def load_trainable_recommender(path_or_repo_id: str | Path, dtype: torch.dtype = torch.float32) -> SidRecommender:
    """The recommender saved at ``path_or_repo_id`` with a trainable model, in train mode. Its ``config`` still
    says how it is used (a layer-cut adapter keeps ``pretrained_layers``); its model is what training reads."""
    recommender = SidRecommender.from_pretrained(path_or_repo_id, dtype=dtype)
    config = recommender.config
    if config.peft:
        from peft import PeftModel

        folder = Path(path_or_repo_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(path_or_repo_id)))
        base = load_causal_lm(config.base_model, dtype=dtype, num_layers=config.pretrained_layers)
        base.resize_token_embeddings(len(recommender.tokenizer), mean_resizing=False)
        with peft_without_its_deprecation():
            recommender.model = PeftModel.from_pretrained(base, folder, is_trainable=True)
        recommender.__dict__.pop("id_model", None)  # the cached first-layers view of the inference model
    else:
        recommender.model.requires_grad_(True)
    recommender.model.train()
    return recommender
