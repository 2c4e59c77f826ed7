"""Cold-start items: held out of every history, added back from their text, and recommended (or not) — the
protocol of ``sid4llm cold-start`` on the tiny dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sid4llm.data import PreparedData
from sid4llm.research.cold_start_items import ColdItems, choose_cold_items, write_without_items
from sid4llm.research.cold_start_metrics import cold_start_users, content_rankings


def test_cold_items_are_spread_over_popularity_and_seeded():
    popularity = np.arange(100)[::-1]  # item 0 the most popular
    cold = choose_cold_items(popularity, 0.1, seed=3)
    assert len(cold) == 10
    assert sorted(i // 10 for i in cold) == list(range(10))  # one from each tenth of the popularity ranking
    assert choose_cold_items(popularity, 0.1, seed=3).tolist() == cold.tolist()
    assert choose_cold_items(popularity, 0.1, seed=4).tolist() != cold.tolist()
    with pytest.raises(ValueError, match="between 0 and 1"):
        choose_cold_items(popularity, 1.5)


def test_the_warm_dataset_holds_no_cold_item_anywhere_and_every_other_event(tiny_prepared, tmp_path):
    full = PreparedData.load(tiny_prepared["data_dir"])
    cold_rows = choose_cold_items(full.item_popularity, 0.25, seed=0)
    warm = write_without_items(full, cold_rows, tmp_path / "warm", 0.25, 0)
    cold = ColdItems.load(tmp_path / "warm")
    cold_ids = {full.items[int(i)]["item_id"] for i in cold_rows}
    assert set(cold.item_ids) == cold_ids and len(cold_ids) == 3
    assert not cold_ids & set(warm.items["item_id"]) and len(warm.items) == len(full.items) - 3
    warm_ids = list(warm.items["item_id"])
    for split in ("train", "valid", "test"):
        for history, target in zip(warm.sequences[split]["history"], warm.sequences[split]["target"]):
            assert not {warm_ids[i] for i in [*history, target]} & cold_ids
    full_ids = list(full.items["item_id"])
    n_cold_events = sum(full_ids[i] in cold_ids for h, t in zip(full.sequences["test"]["history"], full.sequences["test"]["target"])
                        for i in [*h, t])
    assert warm.stats["n_interactions"] == full.stats["n_interactions"] - n_cold_events
    assert warm.item_embeddings().shape == (len(warm.items), full.item_embeddings().shape[1])
    assert np.allclose(warm.item_embeddings()[0], full.item_embeddings()[full_ids.index(warm_ids[0])])

    users = cold_start_users(full, warm, cold)  # the full test split, in the warm + cold catalogue
    assert len(users.targets) + users.dropped_users == len(full.sequences["test"])
    assert users.cold_target.sum() == sum(full_ids[t] in cold_ids for t in full.sequences["test"]["target"])
    assert all(i < users.n_warm for h in users.histories for i in h)  # a cold item has no interaction yet
    assert all((t >= users.n_warm) == c for t, c in zip(users.targets, users.cold_target))


def test_the_content_baseline_ranks_by_similarity_to_the_recent_history_and_leaves_seen_items_out():
    embeddings = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=np.float32)
    assert content_rankings(embeddings, [[0]], k=2) == [[1, 4]]
    assert content_rankings(embeddings, [[0, 1, 2]], k=2, recent_items=1) == [[3, 4]]  # only the last item counts


def test_most_popular_never_ranks_a_cold_item_and_content_can():
    from sid4llm.research.cold_start_metrics import ColdStartUsers, baseline_metrics

    rng = np.random.default_rng(0)
    n_warm, n_cold = 40, 5
    embeddings = rng.normal(size=(n_warm + n_cold, 8)).astype(np.float32)
    embeddings[n_warm] = embeddings[0]  # cold item 0 reads like warm item 0
    histories = [[1, 0], [2, 3], [0]]  # users 0 and 2 last read warm item 0
    users = ColdStartUsers(histories, [n_warm, 5, n_warm], np.array([True, False, True]), n_warm, n_cold, 0)
    metrics = baseline_metrics(users, embeddings, np.arange(n_warm)[::-1] + 1, ks=(10, 20), recent_items=1)
    assert metrics["most_popular"]["cold"]["recall@20"] == 0 and metrics["most_popular"]["cold_share_of_lists@10"] == 0
    assert metrics["content"]["cold"]["recall@10"] == 1.0 and metrics["content"]["cold"]["n_users"] == 2


def test_prefix_placement_puts_a_cold_item_after_the_warm_item_whose_codes_it_shares():
    from sid4llm.decoding.cold_items import ColdItemPlacer

    codes = [(1, 2), (1, 3), (4, 5), (6,), (1, 2, 7), (4, 9), (8, 8)]  # items 4, 5 and 6 are cold
    placer = ColdItemPlacer(codes, cold=[4, 5, 6])
    ranked = [(2, -1.0), (0, -2.0), (3, -3.0), (1, -4.0)]
    assert placer.place(ranked, k=4, max_share=0.5) == [(2, -1.0), (5, -1.0), (0, -2.0), (4, -2.0)]
    assert placer.place(ranked, k=4, max_share=0.25) == [(2, -1.0), (5, -1.0), (0, -2.0), (3, -3.0)]  # one slot
    assert placer.place(ranked, k=4, max_share=0.0) == ranked  # the model's list unchanged
    assert placer.place(ranked, k=4, max_share=0.5, banned={5}) == [(2, -1.0), (0, -2.0), (4, -2.0), (3, -3.0)]
    # with two leading codes to share, item 0 (1, 2) still finds (1, 2, 7); (4, 5) no longer finds (4, 9)
    assert ColdItemPlacer(codes, [4, 5, 6], shared_codes=2).place(ranked, 3, 1.0) == [(2, -1.0), (0, -2.0), (4, -2.0)]


@pytest.mark.slow  # trains IDs and a recommender
def test_cold_start_protocol_scores_cold_items_that_enter_the_trie_and_can_rank_first(tiny_prepared, tmp_path):
    from sid4llm.lm.recommender import SidRecommender
    from sid4llm.research import cold_start

    args = cold_start.ColdStartArguments(data_dir=tiny_prepared["data_dir"], output_dir=str(tmp_path / "cs"),
                                         fraction=0.25, id_sets=["varlen"], id_steps=3, id_vocab_size=4, num_beams=4)
    result = cold_start.main(args)
    saved = json.loads((tmp_path / "cs" / "cold_start.json").read_text())
    assert saved["cold_items"] == 3 and saved["users"] + saved["dropped_users"] == 30
    (run,) = saved["recommenders"]
    for variant in ("model", "prefix_placement"):
        for group in ("cold", "warm"):
            assert 0 <= run[variant][group]["recall@10"] <= 1 and run[variant][group]["n_users"] > 0
    assert "0 (by construction)" in (tmp_path / "cs" / "cold_start.md").read_text()
    assert result["recommenders"] == saved["recommenders"]

    # The trie admits the added IDs without retraining: with the warm items left out, a cold item is first.
    full = PreparedData.load(tiny_prepared["data_dir"])
    rec = SidRecommender.from_pretrained(str(tmp_path / "cs" / "rec_varlen"))
    warm_items = len(rec.codebook)
    cold = ColdItems.load(tmp_path / "cs" / "data")
    rec.add_items(cold.item_ids, full.item_embeddings()[cold.item_idx])
    new_ids = [rec.codebook.sequences[warm_items + j] for j in range(len(cold.item_ids))]
    assert len(set(new_ids)) == 3 and not set(new_ids) & set(rec.codebook.sequences[:warm_items])
    (top,) = rec.recommend([[0]], k=1, num_beams=4, exclude=[set(range(1, warm_items))], exclude_seen=True)
    assert top[0]["item_id"] in cold.item_ids
    ranked = rec.recommend([[0]], k=len(rec.codebook) - 1, num_beams=16)[0]
    assert set(cold.item_ids) <= {r["item_id"] for r in ranked}  # every cold item is reachable in the search
    assert list(rec.cold_items) == list(range(warm_items, len(rec.codebook)))
    plain = rec.recommend([[0]], k=4, num_beams=4)[0]
    placed = rec.recommend([[0]], k=4, num_beams=4, cold_share=0.25)[0]  # one more slot of four for a cold item
    cold_in = [sum(r["item_id"] in cold.item_ids for r in lst) for lst in (plain, placed)]
    assert cold_in[1] <= cold_in[0] + 1 and len(placed) == 4
