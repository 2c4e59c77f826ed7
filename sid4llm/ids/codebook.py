"""``SemanticIdCodebook``: the artefact that maps items to their semantic IDs and back.

An item's ID is its learned code sequence (values in ``[0, V)``), followed — only when another, more
popular item has the same codes — by one disambiguation token (ID-token index ``V + k − 1`` for the k-th
extra item of the group). IDs are therefore unique; the LM adds begin/end markers around them, which also
makes them prefix-free. The codebook keeps the trained encoder so new (cold-start) items get IDs later
without retraining, and the metrics of the run that made it.

Files written by :meth:`save_pretrained` (no pickle anywhere)::

    codebook_config.json   method config, sizes, format version
    codes.safetensors      ragged codes (flat + offsets), disambiguation, popularity
    items.json             item ids (and titles when known), in codebook order
    encoder.safetensors    the ID model's weights (encoder, stop head, decoder / centroids)
    collaborative_map.safetensors   text → co-occurrence map, when the IDs read a collaborative input
    metrics.json           quality metrics of the run
    README.md              model card
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..artifacts import ArtifactError, read_json, read_optional_json, read_safetensors
from .base import IdInputError, IdMethodConfig, IdModel, encode_in_batches, validate_embeddings
from .collaborative import CollaborativeInput
from .registry import build_model, config_from_dict

FORMAT_VERSION = 1
CONFIG_FILE = "codebook_config.json"


class SemanticIdCodebook:
    def __init__(
        self,
        item_ids: Sequence[str],
        codes: Sequence[Sequence[int]],
        disambiguation: Sequence[int],
        popularity: Sequence[int],
        config: IdMethodConfig,
        model: IdModel | None = None,
        metrics: dict | None = None,
        titles: Sequence[str] | None = None,
        embedding_dim: int | None = None,
        collaborative: CollaborativeInput | None = None,
    ):
        if not (len(item_ids) == len(codes) == len(disambiguation) == len(popularity)):
            raise IdInputError("item_ids, codes, disambiguation and popularity must have one entry per item")
        if titles is not None and len(titles) != len(item_ids):
            raise IdInputError(f"{len(titles)} titles for {len(item_ids)} items")
        self.item_ids = [str(i) for i in item_ids]
        self.codes = [tuple(int(c) for c in seq) for seq in codes]
        self.disambiguation = np.asarray(disambiguation, dtype=np.int64)
        self.popularity = np.asarray(popularity, dtype=np.int64)
        self.config = config
        self.model = model
        self.metrics = dict(metrics or {})
        self.titles = list(titles) if titles is not None else None
        self.embedding_dim = embedding_dim or getattr(model, "input_dim", None)  # of the text embeddings it is given
        self.collaborative = collaborative
        self._index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise IdInputError("item ids must be unique")
        self._sequences = [self._with_disambiguation(seq, d) for seq, d in zip(self.codes, self.disambiguation)]
        self._by_sequence = {seq: i for i, seq in enumerate(self._sequences)}
        if len(self._by_sequence) != len(self.item_ids):
            raise IdInputError("two items share one ID; build codebooks with SemanticIdCodebook.from_codes")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_codes(
        cls,
        item_ids: Sequence[str],
        codes: torch.Tensor | np.ndarray,
        lengths: torch.Tensor | np.ndarray,
        popularity: Sequence[int],
        config: IdMethodConfig,
        model: IdModel | None = None,
        titles: Sequence[str] | None = None,
        embedding_dim: int | None = None,
        collaborative: CollaborativeInput | None = None,
    ) -> SemanticIdCodebook:
        """Cut each item's codes to its length and make IDs unique (see :func:`disambiguate`)."""
        codes, lengths = np.asarray(codes), np.asarray(lengths)
        ragged = [tuple(row[:n].tolist()) for row, n in zip(codes, lengths)]
        disamb = disambiguate(ragged, popularity)
        return cls(item_ids, ragged, disamb, popularity, config, model, titles=titles, embedding_dim=embedding_dim,
                   collaborative=collaborative)

    # ------------------------------------------------------------------ lookups
    def _with_disambiguation(self, codes: tuple[int, ...], d: int) -> tuple[int, ...]:
        """An item's ID: its codes, then ID-token ``V + d - 1`` when it is the d-th extra item of a collision."""
        return codes + ((self.config.vocab_size + int(d) - 1,) if d else ())

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def num_disambiguation_tokens(self) -> int:
        return int(self.disambiguation.max(initial=0))

    @property
    def num_id_tokens(self) -> int:
        """Size of the ID-token space: V codes + the disambiguation tokens in use."""
        return self.vocab_size + self.num_disambiguation_tokens

    @property
    def sequences(self) -> list[tuple[int, ...]]:
        """Every item's ID as ID-token indices (codes, then a disambiguation token if it has one)."""
        return self._sequences

    @property
    def code_lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.codes], dtype=np.int64)

    @property
    def id_lengths(self) -> np.ndarray:
        return self.code_lengths + (self.disambiguation > 0)

    def __len__(self) -> int:
        return len(self.item_ids)

    def index_of(self, item_id: str) -> int:
        if item_id not in self._index:
            raise KeyError(f"item {item_id!r} is not in the codebook")
        return self._index[item_id]

    def id_of(self, item_id: str) -> tuple[int, ...]:
        return self.sequences[self.index_of(item_id)]

    def index_for(self, sequence: Sequence[int]) -> int | None:
        """Codebook index of the item whose ID is exactly ``sequence``, or None."""
        return self._by_sequence.get(tuple(int(s) for s in sequence))

    def item_for(self, sequence: Sequence[int]) -> str | None:
        """The item whose ID is exactly ``sequence``, or None."""
        i = self.index_for(sequence)
        return None if i is None else self.item_ids[i]

    # ------------------------------------------------------------------ cold start
    def encode(self, embeddings: np.ndarray | torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and lengths for (text) embeddings with the saved encoder (no disambiguation); a codebook whose
        IDs read a collaborative input predicts the co-occurrence part from the text."""
        if self.model is None:
            raise IdInputError("this codebook has no encoder weights; it cannot encode new items")
        x = validate_embeddings(embeddings, self.embedding_dim)
        if self.collaborative is not None:
            x = torch.from_numpy(self.collaborative.mix(x.numpy()))
        return encode_in_batches(self.model, x, batch_size)

    def add_items(self, item_ids: Sequence[str], embeddings: np.ndarray | torch.Tensor,
                  titles: Sequence[str] | None = None,
                  max_disambiguation_tokens: int | None = None) -> list[tuple[int, ...]]:
        """Append new items (popularity 0) without changing any existing ID; returns their IDs.

        All IDs are worked out before anything changes: an item already present, or more disambiguation tokens
        than ``max_disambiguation_tokens`` (what a tokenizer reserved), is an error that leaves the codebook as
        it was."""
        dup = [i for i in item_ids if i in self._index]
        if dup:
            raise IdInputError(f"items already in the codebook: {dup[:5]}")
        codes, lengths = self.encode(embeddings)
        taken = defaultdict(int)
        for seq, d in zip(self.codes, self.disambiguation):
            taken[seq] = max(taken[seq], int(d) + 1)
        planned = []
        for row, n in zip(codes.numpy(), lengths.numpy()):
            seq = tuple(row[:n].tolist())
            planned.append((seq, taken[seq]))
            taken[seq] += 1
        needed = max([self.num_disambiguation_tokens, *(d for _, d in planned)])
        if max_disambiguation_tokens is not None and needed > max_disambiguation_tokens:
            raise IdInputError(f"adding these items needs {needed} disambiguation tokens but the tokenizer reserves "
                               f"{max_disambiguation_tokens}; fine-tune with a larger --reserve_disambiguation_tokens")
        new_ids = []
        for item, (seq, d) in zip(item_ids, planned):
            self.codes.append(seq)
            self.disambiguation = np.append(self.disambiguation, d)
            self.popularity = np.append(self.popularity, 0)
            self.item_ids.append(str(item))
            self._index[str(item)] = len(self.item_ids) - 1
            new_ids.append(self._with_disambiguation(seq, d))
            self._sequences.append(new_ids[-1])
            self._by_sequence[new_ids[-1]] = len(self.item_ids) - 1
        if self.titles is not None:
            self.titles.extend(titles if titles is not None else [""] * len(item_ids))
        return new_ids

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path) -> Path:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        lengths = self.code_lengths
        flat = np.fromiter((c for seq in self.codes for c in seq), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        save_file({"codes": torch.from_numpy(flat), "offsets": torch.from_numpy(offsets),
                   "disambiguation": torch.from_numpy(self.disambiguation.copy()),
                   "popularity": torch.from_numpy(self.popularity.copy())}, str(out / "codes.safetensors"))
        config = {"format_version": FORMAT_VERSION, "n_items": len(self), "embedding_dim": self.embedding_dim,
                  "num_disambiguation_tokens": self.num_disambiguation_tokens, "id_method": self.config.to_dict()}
        if self.collaborative is not None:
            config["collaborative"] = self.collaborative.settings.to_dict()
            self.collaborative.save(out)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        items = {"item_ids": self.item_ids}
        if self.titles is not None:
            items["titles"] = self.titles
        (out / "items.json").write_text(json.dumps(items))
        if self.model is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(out / "encoder.safetensors"))
        (out / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
        (out / "README.md").write_text(self.model_card())
        return out

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, revision: str | None = None, token: str | None = None
                        ) -> SemanticIdCodebook:
        """Load from a local folder or a Hub repo id (downloaded through ``huggingface_hub``)."""
        path = Path(path_or_repo_id)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(path_or_repo_id), revision=revision, token=token))
        if not (path / CONFIG_FILE).is_file():
            raise IdInputError(f"{path}: not a saved SemanticIdCodebook ({CONFIG_FILE} missing)")
        config = read_json(path / CONFIG_FILE, required_keys=("id_method", "embedding_dim"))
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise IdInputError(f"{path}: codebook format {config['format_version']} is newer than this sid4llm")
        if not isinstance(config["id_method"], dict) or "method" not in config["id_method"]:
            raise ArtifactError(f"{path / CONFIG_FILE}: 'id_method' must hold the ID method's config, with its 'method'")
        try:
            method_config = config_from_dict(config["id_method"])
        except IdInputError as err:
            raise ArtifactError(f"{path / CONFIG_FILE}: 'id_method' {err}; it was saved by another sid4llm version. "
                                "Use that version, or train the IDs again") from None
        tensors = read_safetensors(path / "codes.safetensors")
        missing = {"codes", "offsets", "disambiguation", "popularity"} - set(tensors)
        if missing:
            raise ArtifactError(f"{path / 'codes.safetensors'}: missing tensor(s) {sorted(missing)}")
        flat, offsets = tensors["codes"].tolist(), tensors["offsets"].tolist()
        codes = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        items = read_json(path / "items.json", required_keys=("item_ids",))
        if not len(items["item_ids"]) == len(codes) == len(tensors["popularity"]):
            raise ArtifactError(f"{path}: items.json lists {len(items['item_ids'])} items but codes.safetensors holds "
                                f"{len(codes)} IDs; the files come from different codebooks")
        model = None
        collaborative = CollaborativeInput.load(path, config["collaborative"]) if config.get("collaborative") else None
        if (path / "encoder.safetensors").is_file():
            model = build_model(method_config, collaborative.input_dim if collaborative else config["embedding_dim"])
            try:
                model.load_state_dict(read_safetensors(path / "encoder.safetensors"))
            except RuntimeError as err:
                raise ArtifactError(f"{path / 'encoder.safetensors'}: does not fit the {method_config.method} config "
                                    f"in {CONFIG_FILE} ({str(err).splitlines()[0]})") from None
            model.eval()
        metrics = read_optional_json(path / "metrics.json")
        return cls(items["item_ids"], codes, tensors["disambiguation"].numpy(), tensors["popularity"].numpy(),
                   method_config, model, metrics, items.get("titles"), config["embedding_dim"], collaborative)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload SemanticIdCodebook", revision: str | None = None) -> str:
        """Save to a temporary folder and upload it as one commit; returns the commit URL."""
        from ..hub import push_folder

        return push_folder(self.save_pretrained, repo_id, private, token, commit_message, revision)

    def model_card(self) -> str:
        m, cfg = self.metrics, self.config
        lines = [
            "---", "library_name: sid4llm", "tags:", "- recommendation", "- semantic-ids", "---", "",
            f"# Semantic ID codebook ({cfg.method}{', variable length' if cfg.variable_length else ''})", "",
            f"{len(self):,} items, codebook of {cfg.vocab_size} codes, IDs of at most {cfg.max_length} codes "
            f"plus {self.num_disambiguation_tokens} disambiguation tokens. Made with "
            "[sid4llm](https://arxiv.org/abs/2602.16375) (variable-length semantic IDs).", "",
            "## Metrics", "",
        ]
        for key in ("recon_mse_uniform", "recon_mse_unigram", "mean_length_uniform", "mean_length_unigram",
                    "spearman_length_popularity", "collision_rate_before_dedup", "unique_ids", "train_seconds"):
            if key in m:
                lines.append(f"- `{key}`: {m[key]}")
        lines += ["", "## Usage", "", "```python", "from sid4llm.ids import SemanticIdCodebook",
                  'codebook = SemanticIdCodebook.from_pretrained("<this repo or folder>")',
                  'codebook.id_of("<item id>")   # tuple of ID-token indices', "```", "",
                  "## Method config", "", "```json", json.dumps(cfg.to_dict(), indent=2), "```", ""]
        if self.collaborative is not None:
            lines += ["## Input", "", "Text embeddings mixed with item co-occurrence embeddings of the train histories "
                      f"({json.dumps(self.collaborative.settings.to_dict())}); `encode` and `add_items` take text "
                      "embeddings and predict the co-occurrence part from them.", ""]
        return "\n".join(lines)


def disambiguate(codes: Sequence[tuple[int, ...]], popularity: Sequence[int]) -> np.ndarray:
    """Disambiguation index per item: 0 for the most popular item of each group sharing the same codes (ties:
    lower index first), then 1, 2, ... for the others, so IDs become unique and popular items stay short."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, seq in enumerate(codes):
        groups[seq].append(i)
    pop = np.asarray(popularity)
    out = np.zeros(len(codes), dtype=np.int64)
    for members in groups.values():
        if len(members) > 1:
            ranked = sorted(members, key=lambda i: (-pop[i], i))
            out[ranked] = np.arange(len(ranked))
    return out
