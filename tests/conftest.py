"""Shared fixtures: tiny models and small data written in the real formats; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest


def make_events(n_users: int = 12, n_items: int = 10, per_user: int = 7, seed: int = 0) -> list[tuple[str, str, int]]:
    """A small event log (user, item, unix seconds) in which every user has ``per_user`` distinct items,
    so 5-core filtering keeps everyone, with some timestamps tied inside a user on purpose."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        t = 1_000_000_000 + 1000 * u
        for k, i in enumerate(items):
            t += 0 if k == 2 else int(rng.integers(1, 100))  # events 1 and 2 share a timestamp
            events.append((f"u{u}", f"i{i}", t))
    return events


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> str:
    """A 2-layer BERT with a WordPiece vocabulary trained here: a real HF encoder folder, in a second."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    corpus = ["toy story animation comedy", "the matrix action sci-fi", "heat crime thriller drama",
              "jumanji adventure fantasy children", "casablanca romance drama war"] * 20
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    import torch

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("tiny_encoder")
    BertModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point sid4llm's cache at a fresh folder for the duration of a test."""
    monkeypatch.setenv("SID4LLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
