"""The new ID tokens' embedding rows in a causal LM: how they start before fine-tuning."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ..vocabulary import IdVocabulary

EMBEDDING_INIT_STRATEGIES = ("mean", "titles", "random")


@torch.no_grad()
def init_id_embeddings(model: PreTrainedModel, vocab: IdVocabulary, strategy: str = "titles",
                       noise_std: float = 0.01, seed: int = 0) -> None:
    """Resize ``model`` to the extended tokenizer and initialise the new rows.

    - ``mean``: the mean of the pretrained rows plus small noise (a neutral start that keeps logits sane);
    - ``titles``: each code token starts at the mean embedding of the title tokens of the items that use the
      code (so a code begins life near what it stands for), each item memory token at its own item's title;
      markers and disambiguation tokens get ``mean``;
    - ``random``: N(0, initializer_range), what a plain resize would do.
    """
    if strategy not in EMBEDDING_INIT_STRATEGIES:
        raise ValueError(f"embedding init strategy must be one of {EMBEDDING_INIT_STRATEGIES}, got {strategy!r}")
    old_size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(vocab.tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(seed)
    new_ids = torch.tensor(vocab.new_token_ids)
    existing = emb[: min(old_size, int(new_ids.min()))]
    mean, std = existing.mean(0), existing.std(0).mean()
    noise = torch.randn(len(new_ids), emb.shape[1], generator=generator) * noise_std * std
    if strategy == "random":
        init_std = getattr(model.config, "initializer_range", 0.02)
        emb[new_ids] = (torch.randn(len(new_ids), emb.shape[1], generator=generator) * init_std).to(emb.dtype)
    else:
        emb[new_ids] = (mean + noise).to(emb.dtype)
    if strategy == "titles" and vocab.codebook.titles:
        sums = torch.zeros(vocab.codebook.vocab_size, emb.shape[1])
        counts = torch.zeros(vocab.codebook.vocab_size)
        memory = vocab.memory_token_ids
        for item, (title, codes) in enumerate(zip(vocab.codebook.titles, vocab.codebook.codes)):
            ids = vocab.tokenizer(title, add_special_tokens=False)["input_ids"] if title else []
            if not ids:
                continue
            title_vec = emb[torch.tensor(ids)].float().mean(0)
            for c in set(codes):
                sums[c] += title_vec
                counts[c] += 1
            if item < len(memory):  # an item's own memory token starts at its own title
                emb[memory[item]] = title_vec.to(emb.dtype)
        used = counts > 0
        code_ids = torch.tensor(vocab.code_token_ids)
        emb[code_ids[used]] = (sums[used] / counts[used, None] + noise[3 : 3 + len(code_ids)][used]).to(emb.dtype)
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != emb.data_ptr():  # untied head: new rows start at the mean
        out_existing = output.weight[: existing.shape[0]]
        output.weight[new_ids] = out_existing.mean(0).to(output.weight.dtype)
