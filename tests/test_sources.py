"""The bundled datasets and encoder, read from their installed packages (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from sid4llm.data import load_raw, process_interactions
from sid4llm.data.item_embeddings import encode_texts, item_text


def test_default_dataset_is_movielens_1m_with_its_published_size():
    raw = load_raw("default")
    assert raw.source == "ml-1m"
    assert len(raw.interactions) == 1_000_209
    assert raw.interactions["user_id"].nunique() == 6_040
    assert raw.interactions["item_id"].nunique() == 3_706
    titles = dict(zip(raw.items["item_id"], raw.items["title"]))
    assert titles["American President, The (1995)"] == "The American President (1995)"


def test_ml_100k_processes_into_leave_one_out_splits():
    data = process_interactions(load_raw("ml-100k"))
    assert data.stats["n_interactions_raw"] == 100_000
    assert data.stats["n_users"] == 943
    assert all(len(h) >= 2 for h in data.sequences["train"]["history"])
    assert data.items[0]["title"] == "Toy Story (1995)"


def test_bundled_encoder_embeds_titles_by_meaning(isolated_cache):
    items = [{"title": "Toy Story (1995)", "categories": ["Animation", "Children's", "Comedy"]},
             {"title": "Toy Story 2 (1999)", "categories": ["Animation", "Children's", "Comedy"]},
             {"title": "Schindler's List (1993)", "categories": ["Drama", "War"]}]
    vectors = encode_texts([item_text(i) for i in items], show_progress=False)
    assert vectors.shape == (3, 384)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2


@pytest.mark.slow
def test_full_default_prepare_matches_stats(tmp_path, isolated_cache):
    from sid4llm.data import PrepareDataArguments, PreparedData, prepare_dataset

    out = prepare_dataset(PrepareDataArguments(output_dir=str(tmp_path / "ml1m")))
    data = PreparedData.load(out)
    assert data.stats["n_users"] == 6040 and data.stats["n_items"] == 3416
    assert np.allclose(np.linalg.norm(data.item_embeddings(), axis=1), 1.0, atol=1e-5)
