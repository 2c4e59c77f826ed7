"""Prepare a dataset folder: splits, items table, stats and item embeddings, the input of every later step.

Layout of ``output_dir``::

    sequences/                      DatasetDict (train / valid / test), one row per user
    items/                          Dataset, one row per item (item_idx order)
    stats.json                      dataset statistics
    catalogue_profile.json          the catalogue's words (what items are called, request frames, category words)
    item_embeddings.safetensors     [n_items, dim] float32, unit norm, row i = item_idx i
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from datasets import Dataset, DatasetDict, load_from_disk

from .item_embeddings import (
    EMBEDDINGS_FILE,
    encode_texts,
    item_text,
    load_item_embeddings,
    read_user_embeddings,
    resolve_encoder,
    save_item_embeddings,
)
from .processing import ProcessedData, process_interactions
from .profile import PROFILE_FILE, CatalogueProfile
from .readers import DataFormatError, RawData
from .sources import BUNDLED, load_raw

logger = logging.getLogger(__name__)


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """``datasets`` without progress bars inside the block (as they were after it)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


@dataclass
class PrepareDataArguments:
    """What to read, how to clean it, and how to embed its items."""

    output_dir: str = field(metadata={"help": "Folder to write the prepared dataset to."})
    dataset: str = field(
        default="default",
        metadata={"help": "Bundled name (default = ml-1m, ml-100k) or a path to a file / folder in a supported format."},
    )
    format: Literal["auto", "movielens", "recbole", "amazon", "amazon2023", "generic"] = field(
        default="auto", metadata={"help": "The file format: amazon is 2014/2018, generic is CSV/Parquet/JSONL; auto detects it."},
    )
    item_file: str | None = field(default=None, metadata={"help": "Item metadata file (Amazon meta_*.json, or a generic item table)."})
    user_column: str | None = field(default=None, metadata={"help": "Generic format: user column (detected if unset)."})
    item_column: str | None = field(default=None, metadata={"help": "Generic format: item column of the interactions file (detected if unset)."})
    item_id_column: str | None = field(default=None, metadata={"help": "Generic format: item id column of --item_file (detected if unset)."})
    timestamp_column: str | None = field(default=None, metadata={
        "help": "Generic and RecBole formats: timestamp column (detected if unset); 'none': the events have no time, "
                "each user's events are in the file's order."})
    timestamp_unit: Literal["auto", "s", "ms"] = field(default="auto", metadata={"help": "Generic numeric timestamps' unit."})
    timestamp_format: str | None = field(default=None, metadata={"help": "Generic date strings: strptime format, e.g. '%%d/%%m/%%Y %%H:%%M' (needed when dates read both day- and month-first)."})
    user_core: int = field(default=5, metadata={"help": "Keep users with at least this many events (iterative k-core)."})
    item_core: int = field(default=5, metadata={"help": "Keep items with at least this many events (iterative k-core)."})
    min_rating: float | None = field(default=None, metadata={"help": "Drop events rated below this (None keeps all)."})
    drop_repeat_consumption: bool = field(
        default=False, metadata={"help": "Keep only each user's first event per item."}
    )
    max_users: int | None = field(default=None, metadata={"help": "Randomly keep this many users (seeded), for quick runs."})
    seed: int = field(default=0, metadata={"help": "Seed for user subsampling."})
    encoder: str = field(
        default="default",
        metadata={"help": "Sentence encoder folder for item text ('default' = bundled all-MiniLM-L6-v2)."},
    )
    text_template: str | None = field(
        default=None, metadata={"help": "str.format template over item fields, e.g. '{title} ({categories})'."}
    )
    embeddings: str | None = field(
        default=None, metadata={"help": "Your own item embeddings (.safetensors/.npz/.parquet keyed by item id) instead of encoding text."}
    )
    embedding_batch_size: int = field(default=128, metadata={"help": "Texts per encoder batch."})
    embedding_max_seq_length: int = field(default=256, metadata={"help": "Encoder truncation length in tokens."})
    skip_embeddings: bool = field(default=False, metadata={"help": "Write splits and items only."})
    profile: str | None = field(default=None, metadata={
        "help": "The catalogue's words: a YAML file of CatalogueProfile fields or a shipped profile (movielens); "
                "default: the format's own (MovieLens) or neutral words ('item')."})
    item_noun: str | None = field(default=None, metadata={"help": "What one item is called (book, song, product); "
                                                                  "overrides the profile's."})
    item_noun_plural: str | None = field(default=None, metadata={"help": "Its plural (default: item_noun + 's')."})
    item_verb: str | None = field(default=None, metadata={"help": "What people do with an item (read, buy, listen to)."})
    item_verb_past: str | None = field(default=None, metadata={"help": "That verb's past (read, bought, listened to)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing prepared dataset in output_dir."})

    def __post_init__(self):
        if self.user_core < 1 or self.item_core < 1:
            raise ValueError("user_core and item_core must be >= 1")


@dataclass
class PreparedData:
    """A prepared dataset folder, loaded."""

    path: Path
    sequences: DatasetDict
    items: Dataset
    stats: dict

    @classmethod
    def load(cls, path: str | Path) -> PreparedData:
        path = Path(path)
        for part in ("sequences", "items", "stats.json"):
            if not (path / part).exists():
                raise DataFormatError(
                    f"{path}: not a prepared dataset ({part} missing); run `sid4llm prepare-data --output_dir {path}`"
                )
        return cls(path, load_from_disk(str(path / "sequences")), load_from_disk(str(path / "items")),
                   json.loads((path / "stats.json").read_text()))

    def item_embeddings(self) -> np.ndarray:
        """``[n_items, dim]`` float32 unit-norm vectors, row ``i`` for ``item_idx == i``."""
        vectors, ids, _ = load_item_embeddings(self.path / EMBEDDINGS_FILE)
        if ids is not None and ids != list(self.items["item_id"]):
            raise DataFormatError(f"{self.path / EMBEDDINGS_FILE}: item ids do not match {self.path / 'items'}")
        return vectors

    def train_histories(self) -> list[list[int]]:
        """Every user's train events in order (the train split's history and target), as item indices."""
        return self.split_sequences("train")

    def split_sequences(self, split: str) -> list[list[int]]:
        """Every user's events up to and including the ``split``'s target, in order, as item indices."""
        rows = self.sequences[split]
        return [list(h) + [int(t)] for h, t in zip(rows["history"], rows["target"])]

    @cached_property
    def profile(self) -> CatalogueProfile:
        """The catalogue's words (``catalogue_profile.json``; a folder prepared before profiles existed gets the one
        its source implies: MovieLens's for the bundled MovieLens, else neutral words)."""
        saved = CatalogueProfile.load(self.path)
        if saved is not None:
            return saved
        source = str(self.stats.get("source") or "")
        return CatalogueProfile.read("movielens") if source in BUNDLED or source.startswith("movielens") \
            else CatalogueProfile()

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Train interactions per item (``item_idx`` order); read once (a column read costs ~0.1 s)."""
        return np.asarray(self.items["train_count"], dtype=np.int64)


def embed_items(items: Dataset, args: PrepareDataArguments) -> tuple[np.ndarray, dict]:
    """Embeddings for every item of the table, from the user's file or by encoding item text."""
    item_ids = list(items["item_id"])
    if args.embeddings:
        return read_user_embeddings(args.embeddings, item_ids), {"source": "user", "file": str(args.embeddings)}
    if not any(items["title"]) and not any(items["description"]):
        raise DataFormatError(
            "the dataset has no item text (no titles or descriptions) to embed: pass --item_file with item text, "
            "--embeddings with your own vectors, or --skip_embeddings"
        )
    texts = [item_text(row, args.text_template) for row in items.select_columns(["title", "categories", "brand", "description"])]
    vectors = encode_texts(texts, args.encoder, batch_size=args.embedding_batch_size,
                           max_seq_length=args.embedding_max_seq_length)
    return vectors, {"source": "text", "encoder": resolve_encoder(args.encoder), "template": args.text_template or "default",
                     "example_text": texts[0]}


def write_prepared_folder(out: Path, processed: ProcessedData, stats: dict,
                          embeddings: tuple[np.ndarray, dict] | None, extra_files: dict[str, str] | None = None) -> None:
    """A prepared dataset folder at ``out``: splits, items, stats.json, the embeddings (vectors and their
    description) and ``extra_files`` (name → text). Built in a temporary sibling and moved into place at the end,
    so a failure (bad data, a killed run) never leaves a half-written dataset or destroys an existing one."""
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with quiet_progress_bars():  # a save of a few MB takes milliseconds: no bar in the logs
        processed.sequences.save_to_disk(str(tmp / "sequences"))
        processed.items.save_to_disk(str(tmp / "items"))
    if embeddings is not None:
        save_item_embeddings(tmp / EMBEDDINGS_FILE, embeddings[0], processed.items["item_id"], embeddings[1])
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def prepare_dataset(args: PrepareDataArguments) -> Path:
    """Read, clean, split and embed; write everything to ``args.output_dir`` and return that path.

    The folder is built in a temporary sibling and moved into place at the end, so a failure (bad data, a
    killed run) never leaves a half-written dataset or destroys an existing one.
    """
    out = Path(args.output_dir)
    if (out / "stats.json").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds a prepared dataset; pass --overwrite to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / "stats.json").exists():
        raise FileExistsError(f"{out} exists and is not a prepared dataset; refusing to write over its files")
    raw = load_raw(args.dataset, args.format, args.item_file, args.user_column, args.item_column,
                   args.timestamp_column, args.timestamp_unit, args.item_id_column, args.timestamp_format)
    profile = catalogue_profile(args, raw)  # a bad profile fails before any long step
    processed: ProcessedData = process_interactions(
        raw, args.user_core, args.item_core, args.min_rating, args.drop_repeat_consumption, args.max_users, args.seed
    )
    stats = processed.stats
    stats["dataset_argument"] = args.dataset
    embed_info = None
    if not args.skip_embeddings:
        vectors, embed_info = embed_items(processed.items, args)
        stats["embedding_dim"] = int(vectors.shape[1])
        stats["embeddings"] = embed_info

    stats["profile"] = {"item_noun": profile.item_noun, "verb": profile.verb}
    vectors_and_info = (vectors, {k: v for k, v in embed_info.items() if k != "example_text"}) if embed_info else None
    write_prepared_folder(out, processed, stats, vectors_and_info, {"prepare_args.json": json.dumps(asdict(args), indent=2),
                                                                    PROFILE_FILE: json.dumps(profile.to_dict(), indent=2)})
    return out


def catalogue_profile(args: PrepareDataArguments, raw: RawData) -> CatalogueProfile:
    """The profile ``--profile`` names (else the one the format implies, else neutral words), with the
    ``--item_noun``/``--item_verb`` flags on top."""
    name = args.profile or raw.profile
    profile = CatalogueProfile.read(name) if name else CatalogueProfile()
    changes = {}
    if args.item_noun:
        changes.update(item_noun=args.item_noun, item_noun_plural=args.item_noun_plural, request_nouns=[])
    elif args.item_noun_plural:
        changes["item_noun_plural"] = args.item_noun_plural
    if args.item_verb:
        changes.update(verb=args.item_verb, verb_past=args.item_verb_past or args.item_verb)
    elif args.item_verb_past:
        changes["verb_past"] = args.item_verb_past
    return replace(profile, **changes) if changes else profile
