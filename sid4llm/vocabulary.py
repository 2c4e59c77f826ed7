"""Semantic IDs as tokens of any Hugging Face tokenizer.

An item's ID is one token per code of the shared codebook (``<|sid_17|>``), one per disambiguation index
(``<|sid_d2|>``), and the end-of-ID marker ``<|sid_end|>``, which makes IDs prefix-free even when one item's
codes are a prefix of another's. Two ways of writing items:

- **ID streams** (a user's history, the paper's format): ``<|sid_user|>`` then every item as its codes + end
  marker, so an item costs its codes + one token; the next ID starts right after the last end marker.
- **Inside text** (natural-language prompts, chat): ``<|sid_begin|>`` opens the ID, where the model must switch
  from words to codes.

Optionally (``item_memory``), every catalogue item also gets one **memory token** (``<|sid_item_41|>``) that a
stream *reads* in place of the end marker of each history item: the model still writes an ID as its codes + end
marker, but reads each past item with a learned vector of its own, as SASRec's item table gives it (shared codes
alone must rebuild 3,416 items from a few hundred vectors). It costs no stream tokens. Items added to the codebook
later have no memory token and are read with the end marker, as training also shows some items
(``item_memory_dropout``).

The tokens are ordinary (not "special") added tokens, so decoded text shows them and they survive
``skip_special_tokens``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerBase

from .artifacts import ArtifactError, read_json
from .ids import SemanticIdCodebook

BEGIN_TOKEN = "<|sid_begin|>"
END_TOKEN = "<|sid_end|>"
USER_TOKEN = "<|sid_user|>"
VOCAB_FILE = "sid_vocabulary.json"


def code_token(k: int) -> str:
    return f"<|sid_{k}|>"


def disambiguation_token(k: int) -> str:
    return f"<|sid_d{k}|>"


def memory_token(item: int) -> str:
    return f"<|sid_item_{item}|>"


def _token_strings(codebook: SemanticIdCodebook, n_disambiguation: int) -> list[str]:
    """begin, end, user-start, every code, then the disambiguation tokens: the order ``IdVocabulary`` expects."""
    return [BEGIN_TOKEN, END_TOKEN, USER_TOKEN] + [code_token(k) for k in range(codebook.vocab_size)] + \
        [disambiguation_token(k) for k in range(1, n_disambiguation + 1)]


def codebook_fingerprint(codebook: SemanticIdCodebook) -> str:
    """Changes whenever any item's ID changes: ties a tokenizer/model to the codebook it was trained with."""
    h = hashlib.sha256()
    for item, seq in zip(codebook.item_ids, codebook.sequences):
        h.update(f"{item}\x00{','.join(map(str, seq))}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class IdVocabulary:
    """The mapping between a codebook's ID-token indices and a tokenizer's token ids."""

    tokenizer: PreTrainedTokenizerBase
    codebook: SemanticIdCodebook
    begin_id: int
    end_id: int
    user_id: int
    id_token_ids: list[int]  # ID-token index (codes, then disambiguation) → tokenizer id
    memory_token_ids: list[int] = field(default_factory=list)  # codebook index → its memory token (first items only)

    def __post_init__(self):
        self._index_of_token = {tid: i for i, tid in enumerate(self.id_token_ids)}

    # ------------------------------------------------------------------ building
    @classmethod
    def extend(cls, tokenizer: PreTrainedTokenizerBase, codebook: SemanticIdCodebook,
               extra_disambiguation: int = 0, item_memory: bool = False) -> IdVocabulary:
        """Add the ID tokens to ``tokenizer`` (in place; tokens already present are reused).

        ``extra_disambiguation`` reserves more disambiguation tokens than the codebook uses now, so items added
        later (cold start) can be written without growing the vocabulary. ``item_memory`` adds one memory token
        per item of the codebook (see the module docstring)."""
        strings = _token_strings(codebook, codebook.num_disambiguation_tokens + extra_disambiguation)
        memory = [memory_token(i) for i in range(len(codebook))] if item_memory else []
        tokenizer.add_tokens([AddedToken(s, special=False, normalized=False, single_word=False)
                              for s in strings + memory])
        ids = tokenizer.convert_tokens_to_ids(strings + memory)
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError("the tokenizer did not accept the semantic-ID tokens")
        n = len(strings)
        return cls(tokenizer, codebook, ids[0], ids[1], ids[2], ids[3:n], ids[n:])

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, codebook: SemanticIdCodebook) -> IdVocabulary:
        """Rebuild the mapping for a tokenizer that was extended and saved before."""
        vocab = tokenizer.get_vocab()
        n_dis = codebook.num_disambiguation_tokens
        while disambiguation_token(n_dis + 1) in vocab:
            n_dis += 1
        strings = _token_strings(codebook, n_dis)
        missing = [s for s in strings if s not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks {len(missing)} semantic-ID tokens (e.g. {missing[:3]}); "
                             "was it extended with this codebook?")
        ids = [vocab[s] for s in strings]
        memory = []
        while memory_token(len(memory)) in vocab:
            memory.append(vocab[memory_token(len(memory))])
        return cls(tokenizer, codebook, ids[0], ids[1], ids[2], ids[3:], memory)

    # ------------------------------------------------------------------ properties
    @property
    def new_token_ids(self) -> list[int]:
        """All token ids this vocabulary added (markers, codes, disambiguation, item memory)."""
        return [self.begin_id, self.end_id, self.user_id, *self.id_token_ids, *self.memory_token_ids]

    @property
    def code_token_ids(self) -> list[int]:
        return self.id_token_ids[: self.codebook.vocab_size]

    # ------------------------------------------------------------------ format / parse
    def item_token_ids(self, item: int | str) -> list[int]:
        """Token ids of one item's ID as written inside text: begin marker, codes, end marker. ``item`` is a
        codebook index or an item id."""
        return [self.begin_id, *self.stream_item_token_ids(item)]

    def stream_item_token_ids(self, item: int | str) -> list[int]:
        """Token ids of one item in an ID stream: its codes and the end marker."""
        index = item if isinstance(item, int) else self.codebook.index_of(item)
        return [*(self.id_token_ids[t] for t in self.codebook.sequences[index]), self.end_id]

    def stream_item_input_ids(self, item: int) -> list[int]:
        """Token ids of one item as a stream *reads* it: its codes, then its memory token where it has one (the
        end marker otherwise). Same length as :meth:`stream_item_token_ids`, which is what the model writes."""
        tokens = self.stream_item_token_ids(item)
        if item < len(self.memory_token_ids):
            tokens[-1] = self.memory_token_ids[item]
        return tokens

    def stream_token_ids(self, items: list[int]) -> list[int]:
        """A history as the model reads it: the user-start token, then each item's codes + end marker (or memory
        token)."""
        return [self.user_id, *(t for i in items for t in self.stream_item_input_ids(i))]

    def id_token_count(self, item: int) -> int:
        """Tokens an item takes in an ID stream (codes + end marker): what a history token budget counts."""
        return len(self.codebook.sequences[item]) + 1

    @property
    def id_token_counts(self) -> np.ndarray:
        """``id_token_count`` of every item, in codebook order."""
        return self.codebook.id_lengths + 1

    def format_item(self, item: int | str) -> str:
        return "".join(self.tokenizer.convert_ids_to_tokens(self.item_token_ids(item)))

    def parse_token_ids(self, token_ids) -> list[int | None]:
        """Every complete ``begin … end`` span in ``token_ids`` → the codebook index of its item (None when
        the span is not a valid ID)."""
        out, span = [], None
        for tid in (int(t) for t in token_ids):
            if tid == self.begin_id:
                span = []
            elif tid == self.end_id and span is not None:
                out.append(self.codebook.index_for(span))
                span = None
            elif span is not None:
                if tid in self._index_of_token:
                    span.append(self._index_of_token[tid])
                else:
                    span = None  # a non-ID token inside a span: not an ID
                    out.append(None)
        return out

    def parse_stream_item(self, token_ids) -> int | None:
        """The item written by ``token_ids`` (codes, then the end marker) in an ID stream; None when the tokens
        before the first end marker are not a valid ID or there is no end marker."""
        span = []
        for tid in (int(t) for t in token_ids):
            if tid == self.end_id:
                return self.codebook.index_for(span)
            if tid not in self._index_of_token:
                return None
            span.append(self._index_of_token[tid])
        return None

    def parse(self, text: str) -> list[int | None]:
        return self.parse_token_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, token_ids, template: str = "{title}") -> tuple[str, list[int | None]]:
        """Decode ``token_ids`` with every ID span replaced by its item (``template`` over ``title``,
        ``item_id``); an invalid span reads ``[unknown item]``. Returns the text and the items in order."""
        titles = self.codebook.titles or self.codebook.item_ids
        pieces: list[str] = []
        items: list[int | None] = []
        text_run: list[int] = []
        span: list[int] | None = None
        for tid in (int(t) for t in token_ids):
            if tid == self.begin_id:
                pieces.append(self.tokenizer.decode(text_run, skip_special_tokens=True))
                text_run, span = [], []
            elif span is not None and tid == self.end_id:
                item = self.codebook.index_for(self._index_of_token.get(t, -1) for t in span)
                items.append(item)
                pieces.append("[unknown item]" if item is None else
                              template.format(title=titles[item], item_id=self.codebook.item_ids[item]))
                span = None
            elif span is not None:
                span.append(tid)
            else:
                text_run.append(tid)
        pieces.append(self.tokenizer.decode(text_run, skip_special_tokens=True))
        if span is not None:  # an ID left open at the end
            items.append(None)
            pieces.append("[unknown item]")
        return "".join(pieces), items

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """Save the tokenizer and a small record that pins it to its codebook."""
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / VOCAB_FILE).write_text(json.dumps({
            "begin_token": BEGIN_TOKEN, "end_token": END_TOKEN, "user_token": USER_TOKEN, "begin_id": self.begin_id,
            "end_id": self.end_id, "user_id": self.user_id,
            "id_token_ids": self.id_token_ids, "memory_token_ids": self.memory_token_ids,
            "codebook_fingerprint": codebook_fingerprint(self.codebook),
        }, indent=1))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload sid4llm extended tokenizer") -> str:
        """The extended tokenizer and its codebook pin, as one commit (the codebook is pushed on its own)."""
        from .hub import push_folder

        return push_folder(self.save, repo_id, private, token, commit_message)

    def check_matches(self, directory: str | Path) -> None:
        """The saved pin (``sid_vocabulary.json``) agrees with this mapping: same codebook, same token ids."""
        path = Path(directory) / VOCAB_FILE
        record = read_json(path, required_keys=("codebook_fingerprint", "id_token_ids"))
        if record["codebook_fingerprint"] != codebook_fingerprint(self.codebook):
            raise ArtifactError(f"{path}: the tokenizer was saved with a different codebook than the one loaded")
        saved = [record.get("begin_id"), record.get("end_id"), record.get("user_id"), *record["id_token_ids"],
                 *record.get("memory_token_ids", [])]
        if saved != self.new_token_ids:
            raise ArtifactError(f"{path}: the tokenizer's ID tokens have other token ids than when the model was "
                                "saved; the tokenizer files were replaced or edited")
