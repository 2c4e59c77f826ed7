"""Shared fixtures: tiny models and small data written in the real formats; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest


class _LibraryNotices:
    """transformers says some deprecations and ignored settings through its logger, not as warnings: collect them,
    so a test that meets one fails like a FutureWarning does (``filterwarnings`` in pyproject.toml)."""

    WORDS = ("deprecated", "not valid and may be ignored")

    def __init__(self):
        import logging

        self.seen: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: self.seen.append(record.getMessage()) if any(
            w in record.getMessage() for w in self.WORDS) else None
        logging.getLogger("transformers").addHandler(handler)


_NOTICES = _LibraryNotices()


@pytest.fixture(autouse=True)
def no_library_deprecation_notices():
    before = len(_NOTICES.seen)
    yield
    new = _NOTICES.seen[before:]
    assert not new, f"transformers logged a deprecation or an ignored setting: {new}"


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


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> str:
    """A 2-layer Llama and a byte-level BPE tokenizer with a ChatML template, saved as an HF folder."""
    corpus = [f"movie {i} drama comedy what is the id of the item which item has i liked these in order "
              "what should i watch next answer with an item id you are a recommender" for i in range(40)]
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_lm"), corpus)


def save_tiny_llama(path, corpus: list[str]) -> str:
    """A 2-layer Llama (tied head) with a byte-level BPE tokenizer trained on ``corpus`` and a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id,
                         bos_token_id=fast.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


def prepare_with_codebook(root, events, items, encoder_dir: str, **prepare_args) -> dict:
    """``events`` (user, item, seconds) and an ``items`` frame written as CSV, prepared with the encoder at
    ``encoder_dir`` (and ``prepare_args``, e.g. a profile), and a small variable-length codebook trained on them:
    ``{"data_dir", "codebook_dir"}``."""
    import pandas as pd

    from sid4llm.data import PrepareDataArguments, PreparedData, prepare_dataset
    from sid4llm.ids import DVAEConfig, IdTrainingArguments, save_training_outputs, train_semantic_ids

    pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]).to_csv(root / "events.csv", index=False)
    items.to_csv(root / "items.csv", index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SID4LLM_CACHE", str(root / "cache"))
        data_dir = prepare_dataset(PrepareDataArguments(output_dir=str(root / "data"), dataset=str(root / "events.csv"),
                                                        item_file=str(root / "items.csv"), encoder=encoder_dir,
                                                        **prepare_args))
    data = PreparedData.load(data_dir)
    codebook = train_semantic_ids(data.item_embeddings(), data.item_popularity,
                                  DVAEConfig(vocab_size=4, max_length=3, hidden_dim=16, heads=2),
                                  IdTrainingArguments(max_steps=20, batch_size=32), list(data.items["item_id"]),
                                  list(data.items["title"]))
    save_training_outputs(codebook, root / "ids", plot=False, allow_collapse=True)  # plumbing, not quality
    return {"data_dir": str(data_dir), "codebook_dir": str(root / "ids" / "codebook")}


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, tiny_encoder_dir):
    """A prepared dataset (30 users, 12 items with titles) and a variable-length codebook trained on it."""
    import pandas as pd

    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(12)], "title": [f"movie {i} drama" for i in range(12)]})
    return prepare_with_codebook(tmp_path_factory.mktemp("tiny_prepared"), make_events(n_users=30, n_items=12, per_user=8),
                                 items, tiny_encoder_dir)


class FakeHub:
    """Stands in for the Hub inside ``huggingface_hub``: records repos and commits (the operations exactly as
    sent) and serves committed files back through ``snapshot_download``, so push → load round-trips offline."""

    def __init__(self, root):
        self.root, self.repos, self.commits, self.files = root, [], [], {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        self.repos.append((repo_id, private))

    def create_commit(self, repo_id, operations, commit_message, revision=None, **kwargs):
        from huggingface_hub import CommitOperationAdd

        assert all(isinstance(op, CommitOperationAdd) for op in operations), operations
        files = {}
        for op in operations:
            with open(op.path_or_fileobj, "rb") as f:
                files[op.path_in_repo] = f.read()
        self.commits.append({"repo_id": repo_id, "message": commit_message, "revision": revision, "files": files})
        self.files.setdefault(repo_id, {}).update(files)
        return f"https://huggingface.co/{repo_id}/commit/{len(self.commits)}"

    def snapshot_download(self, repo_id, revision=None, token=None, **kwargs):
        if repo_id not in self.files:
            raise FileNotFoundError(f"no such repo on the fake Hub: {repo_id}")
        folder = self.root / repo_id.replace("/", "--")
        for name, content in self.files[repo_id].items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        return str(folder)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    import huggingface_hub

    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", hub.create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", hub.create_commit)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    return hub


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, tiny_lm_dir, tiny_prepared) -> str:
    """A LoRA recommender fine-tuned for a few steps on the tiny dataset, saved as on the Hub."""
    from sid4llm.lm.models import ModelArguments
    from sid4llm.lm.tasks import TaskArguments
    from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune

    out = tmp_path_factory.mktemp("pipeline") / "model"
    run_finetune(ModelArguments(model_name_or_path=tiny_lm_dir, lora_r=4, lora_alpha=8),
                 SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"]),
                 TaskArguments(tasks=["sequential", "natural_language", "alignment"], windows_per_user=2,
                               history_token_budget=40, max_seq_length=128),
                 SidTrainingConfig(output_dir=str(out), max_steps=6, per_device_train_batch_size=8, learning_rate=5e-3,
                                   save_steps=1000, report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                                   eval_examples=0))
    return str(out)


@pytest.fixture
def vocab(tiny_lm_dir, tiny_prepared):
    """The tiny tokenizer extended with the tiny codebook's ID tokens."""
    from transformers import AutoTokenizer

    from sid4llm.ids import SemanticIdCodebook
    from sid4llm.vocabulary import IdVocabulary

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    return IdVocabulary.extend(tokenizer, SemanticIdCodebook.from_pretrained(tiny_prepared["codebook_dir"]))


CHAT_CATALOGUE = [  # (item id, title, genres): names and words the chat tests ask about
    ("m1", "Matrix, The (1999)", "Action|Sci-Fi|Thriller"), ("m2", "Alien (1979)", "Action|Horror|Sci-Fi"),
    ("m3", "Funny Farm (1988)", "Comedy"), ("m4", "Toy Story (1995)", "Animation|Children's|Comedy"),
    ("m5", "Aladdin (1992)", "Animation|Children's|Comedy|Musical"), ("m6", "Heat (1995)", "Action|Crime|Thriller"),
    ("m7", "Good Will Hunting (1997)", "Drama"), ("m8", "Scary Movie (2000)", "Comedy|Horror"),
    ("m9", "Unforgiven (1992)", "Western"), ("m10", "Terminator 2: Judgment Day (1991)", "Action|Sci-Fi|Thriller"),
    ("m11", "Terminator, The (1984)", "Action|Sci-Fi|Thriller"), ("m12", "Halloween (1978)", "Horror"),
]


@pytest.fixture(scope="session")
def chat_prepared(tmp_path_factory, tiny_encoder_dir):
    """A prepared dataset of 40 users over :data:`CHAT_CATALOGUE` (titles and genres) and a codebook for it."""
    import pandas as pd

    events = [(u, f"m{int(i[1:]) + 1}", t) for u, i, t in make_events(n_users=40, n_items=12, per_user=8, seed=1)]
    return prepare_with_codebook(tmp_path_factory.mktemp("chat_prepared"), events,
                                 pd.DataFrame(CHAT_CATALOGUE, columns=["item_id", "title", "genres"]), tiny_encoder_dir,
                                 profile="movielens")


@pytest.fixture(scope="session")
def chat_dir(tmp_path_factory, tiny_lm_dir, chat_prepared) -> str:
    """The quickstart's kind of artefact, tiny: an adapter trained fully on the first layer of a 2-layer base, on ID
    streams and requests; the whole base writes the words."""
    from sid4llm.lm.models import ModelArguments
    from sid4llm.lm.tasks import TaskArguments
    from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune

    out = tmp_path_factory.mktemp("chat") / "model"
    run_finetune(ModelArguments(model_name_or_path=tiny_lm_dir, pretrained_layers=1, peft_layers="full"),
                 SidDataArguments(data_dir=chat_prepared["data_dir"], codebook=chat_prepared["codebook_dir"]),
                 TaskArguments(tasks=["sequential", "requests"], request_examples=200, history_token_budget=40, max_seq_length=128),
                 SidTrainingConfig(output_dir=str(out), max_steps=6, per_device_train_batch_size=8, learning_rate=5e-3,
                                   save_steps=1000, report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                                   eval_examples=0))
    return str(out)
