"""Item embeddings: text templates, shape/norm, the cache, user-supplied vectors, the prepared folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_events

from sid4llm.data import DataFormatError, PrepareDataArguments, PreparedData, prepare_dataset
from sid4llm.data.item_embeddings import (
    EmbeddingError,
    encode_texts,
    item_text,
    read_user_embeddings,
    save_item_embeddings,
)


def test_item_text_skips_empty_fields_and_supports_templates():
    item = {"title": "Heat (1995)", "categories": ["Crime", "Thriller"], "brand": "", "description": ""}
    assert item_text(item) == "Heat (1995). Categories: Crime, Thriller"
    assert item_text(item, "{title} [{categories}] {missing}") == "Heat (1995) [Crime, Thriller]"


def test_encode_texts_gives_unit_norm_float32_rows(tiny_encoder_dir, isolated_cache):
    vectors = encode_texts(["toy story", "the matrix", "heat"], tiny_encoder_dir, batch_size=2, show_progress=False)
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_second_encode_is_read_from_the_cache(tiny_encoder_dir, isolated_cache, monkeypatch):
    first = encode_texts(["toy story", "heat"], tiny_encoder_dir, show_progress=False)
    assert len(list(isolated_cache.rglob("*.safetensors"))) == 1

    import sentence_transformers

    def _no_model(*args, **kwargs):
        raise AssertionError("the encoder was loaded although the cache holds these texts")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", _no_model)
    np.testing.assert_array_equal(encode_texts(["toy story", "heat"], tiny_encoder_dir, show_progress=False), first)
    with pytest.raises(AssertionError, match="encoder was loaded"):
        encode_texts(["other texts"], tiny_encoder_dir, show_progress=False)


def test_user_embeddings_are_reordered_by_item_id_and_normalised(tmp_path):
    ids = ["a", "b", "c"]
    vecs = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    np.savez(tmp_path / "e.npz", item_ids=np.array(ids), embeddings=vecs)
    pd.DataFrame({"item_id": ids, "embedding": list(vecs)}).to_parquet(tmp_path / "e.parquet")
    save_item_embeddings(tmp_path / "e.safetensors", vecs, ids)
    for name in ("e.npz", "e.parquet", "e.safetensors"):
        out = read_user_embeddings(tmp_path / name, ["c", "a"])
        np.testing.assert_allclose(out, [[0.0, 1.0], [0.6, 0.8]], atol=1e-6)


def test_user_embeddings_missing_item_or_nan_are_errors(tmp_path):
    np.savez(tmp_path / "e.npz", item_ids=np.array(["a", "b"]), embeddings=np.array([[1.0, 0.0], [np.nan, 1.0]]))
    with pytest.raises(EmbeddingError, match=r"no embedding for 1 item\(s\).*'zz'"):
        read_user_embeddings(tmp_path / "e.npz", ["a", "zz"])
    with pytest.raises(EmbeddingError, match=r"item 'b' has a NaN"):
        read_user_embeddings(tmp_path / "e.npz", ["a", "b"])


def _write_events(tmp_path):
    events = pd.DataFrame(make_events(n_users=20), columns=["user_id", "item_id", "timestamp"])
    events.to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(10)],
                  "title": ["toy story", "the matrix", "heat", "jumanji", "casablanca"] * 2}).to_csv(
        tmp_path / "items.csv", index=False)
    return tmp_path / "events.csv", tmp_path / "items.csv"


def test_prepare_dataset_writes_splits_items_stats_and_embeddings(tmp_path, tiny_encoder_dir, isolated_cache):
    events, items = _write_events(tmp_path)
    out = prepare_dataset(PrepareDataArguments(output_dir=str(tmp_path / "out"), dataset=str(events),
                                               item_file=str(items), encoder=tiny_encoder_dir, item_core=1))
    data = PreparedData.load(out)
    assert set(data.sequences) == {"train", "valid", "test"}
    stats = json.loads((out / "stats.json").read_text())
    for key in ("n_users", "n_items", "n_interactions", "density", "median_seq_len", "has_text", "source"):
        assert key in stats
    assert stats["has_text"] is True and stats["n_items"] == len(data.items)
    vectors = data.item_embeddings()
    assert vectors.shape == (len(data.items), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert data.item_popularity.sum() == stats["n_train_events"]


def test_prepare_refuses_to_overwrite_and_keeps_existing_data_on_failure(tmp_path, tiny_encoder_dir, isolated_cache):
    events, items = _write_events(tmp_path)
    args = PrepareDataArguments(output_dir=str(tmp_path / "out"), dataset=str(events), item_file=str(items),
                                encoder=tiny_encoder_dir, item_core=1)
    prepare_dataset(args)
    before = (tmp_path / "out" / "stats.json").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_dataset(args)
    args.overwrite, args.user_core = True, 500  # this run fails while filtering
    with pytest.raises(DataFormatError):
        prepare_dataset(args)
    assert (tmp_path / "out" / "stats.json").read_text() == before


def test_prepare_without_item_text_asks_for_embeddings(tmp_path):
    events, _ = _write_events(tmp_path)
    with pytest.raises(DataFormatError, match="no item text"):
        prepare_dataset(PrepareDataArguments(output_dir=str(tmp_path / "o"), dataset=str(events), item_core=1))
