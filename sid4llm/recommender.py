"""``SidRecommender``: a causal LM that writes semantic IDs, with its tokenizer and codebook, saved and
loaded as one folder (flat, as on the Hub)::

    adapter_model.safetensors + adapter_config.json   (LoRA)   or   model.safetensors + config.json (full)
    tokenizer files + sid_vocabulary.json             the extended tokenizer, pinned to the codebook
    codebook/                                         the SemanticIdCodebook
    generation_config.json                            complete: greedy beams, do_sample=False
    sid4llm_config.json                               how to rebuild: base model, PEFT or not
    README.md                                         model card

Loading resizes the base model to the extended tokenizer *before* attaching the adapter.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

from .ids import SemanticIdCodebook
from .models import load_causal_lm
from .tokenization import VOCAB_FILE, IdVocabulary

logger = logging.getLogger(__name__)
CONFIG_FILE = "sid4llm_config.json"


def recommendation_generation_config(vocab: IdVocabulary, num_beams: int = 10) -> GenerationConfig:
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


class SidRecommender:
    def __init__(self, model: PreTrainedModel, vocab: IdVocabulary, generation_config: GenerationConfig,
                 config: dict | None = None):
        self.model = model
        self.vocab = vocab
        self.tokenizer = vocab.tokenizer
        self.codebook = vocab.codebook
        self.generation_config = generation_config
        self.config = dict(config or {})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path, model_card: str | None = None) -> Path:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.config.get("peft"):
            # The new ID rows live in the trainable-token delta; the resized base matrix need not be saved.
            self.model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
        else:
            self.model.save_pretrained(out, safe_serialization=True)
        self.vocab.save(out)
        self.codebook.save_pretrained(out / "codebook")
        self.generation_config.save_pretrained(out)
        (out / CONFIG_FILE).write_text(json.dumps(self.config, indent=2))
        if model_card is not None:
            (out / "README.md").write_text(model_card)
        return out

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device | None = None, revision: str | None = None) -> SidRecommender:
        path = Path(path_or_repo_id)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(path_or_repo_id), revision=revision))
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a saved SidRecommender ({CONFIG_FILE} missing)")
        config = json.loads((path / CONFIG_FILE).read_text())
        codebook = SemanticIdCodebook.from_pretrained(path / "codebook")
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        vocab = IdVocabulary.from_tokenizer(tokenizer, codebook)
        if (path / VOCAB_FILE).is_file():
            vocab.check_matches(path)
        if config.get("peft", False):
            from peft import PeftModel

            base = load_causal_lm(config["base_model"], dtype=dtype)
            base.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # before the adapter
            model = PeftModel.from_pretrained(base, path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
        model.eval()
        if device is not None:
            model.to(device)
        generation_config = GenerationConfig.from_pretrained(path)
        return cls(model, vocab, generation_config, config)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    model_card: str | None = None, commit_message: str = "Upload sid4llm recommender") -> str:
        """Save everything to a temporary folder and upload it as a single commit."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, model_card=model_card)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return str(getattr(info, "commit_url", info))
