"""Cleaning and splitting: k-core, chronological order with deterministic ties, leave-one-out, popularity."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import make_events

from sid4llm.data import DataFormatError, RawData, k_core, process_interactions


def raw_from(events, items=None) -> RawData:
    df = pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"])
    return RawData(df, items, "test", ["memory"])


def test_k_core_is_iterative():
    # u3 has 2 events; dropping u3 leaves item "c" with 1 event, which must then go too,
    # which in turn leaves u2 with 1 event.
    events = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3),
              ("u3", "c", 1), ("u4", "a", 5), ("u4", "b", 6)]
    df = pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"])
    out = k_core(df, user_core=2, item_core=2)
    assert "c" not in set(out["item_id"])
    assert (out["user_id"].value_counts() >= 2).all() and (out["item_id"].value_counts() >= 2).all()
    assert set(out["user_id"]) == {"u1", "u2", "u4"}


def test_leave_one_out_split_is_chronological_and_does_not_leak():
    data = process_interactions(raw_from(make_events()), user_core=5, item_core=1)
    train, valid, test = (data.sequences[s] for s in ("train", "valid", "test"))
    assert len(train) == len(valid) == len(test) == 12
    for tr, va, te in zip(train, valid, test):
        assert tr["user_id"] == va["user_id"] == te["user_id"]
        train_items = tr["history"] + [tr["target"]]
        assert va["history"] == train_items and te["history"] == train_items + [va["target"]]
        assert va["target"] not in train_items and te["target"] not in train_items
        times = te["history_timestamps"] + [te["target_timestamp"]]
        assert times == sorted(times)


def test_ties_are_broken_by_file_order():
    events = [("u", "a", 5), ("u", "b", 5), ("u", "c", 5), ("u", "d", 1), ("u", "e", 9)]
    data = process_interactions(raw_from(events), user_core=1, item_core=1)
    ids = data.items["item_id"]
    order = [ids[i] for i in data.sequences["test"][0]["history"]] + [ids[data.sequences["test"][0]["target"]]]
    assert order == ["d", "a", "b", "c", "e"]


def test_processing_is_deterministic():
    a = process_interactions(raw_from(make_events(seed=3)), item_core=1)
    b = process_interactions(raw_from(make_events(seed=3)), item_core=1)
    for split in ("train", "valid", "test"):
        assert a.sequences[split].to_dict() == b.sequences[split].to_dict()
    assert a.items.to_dict() == b.items.to_dict()


def test_popularity_counts_train_events_only():
    events = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4),
              ("u2", "a", 1), ("u2", "c", 2), ("u2", "d", 3)]
    data = process_interactions(raw_from(events), user_core=1, item_core=1)
    pop = dict(zip(data.items["item_id"], data.items["train_count"]))
    # u1 trains on a, b; u2 trains on a. c, d are valid/test targets.
    assert pop == {"a": 2, "b": 1, "c": 0, "d": 0}
    assert dict(zip(data.items["item_id"], data.items["n_interactions"])) == {"a": 2, "b": 1, "c": 2, "d": 2}


def test_item_indices_are_contiguous_and_keep_original_ids():
    data = process_interactions(raw_from(make_events()), item_core=1)
    assert data.items["item_idx"] == list(range(len(data.items)))
    assert data.items["item_id"][:3] == ["i0", "i1", "i2"]


def test_numeric_ids_sort_numerically():
    events = [("1", "10", 1), ("1", "2", 2), ("1", "1", 3)]
    data = process_interactions(raw_from(events), user_core=1, item_core=1)
    assert data.items["item_id"] == ["1", "2", "10"]


def test_duplicates_dropped_and_repeats_optional():
    events = [("u", "a", 1), ("u", "a", 1), ("u", "b", 2), ("u", "a", 3), ("u", "c", 4), ("u", "d", 5)]
    kept = process_interactions(raw_from(events), user_core=1, item_core=1)
    assert kept.stats["n_duplicate_events_dropped"] == 1 and kept.stats["n_interactions"] == 5
    first_only = process_interactions(raw_from(events), user_core=1, item_core=1, drop_repeat_consumption=True)
    assert first_only.stats["n_repeat_consumption_dropped"] == 1 and first_only.stats["n_interactions"] == 4


def test_stats_describe_the_result():
    stats = process_interactions(raw_from(make_events()), item_core=1).stats
    assert stats["n_users"] == 12 and stats["n_items"] == 10 and stats["n_interactions"] == 84
    assert stats["density"] == pytest.approx(84 / 120)
    assert stats["median_seq_len"] == 7
    assert stats["fraction_events_with_tied_timestamp"] == pytest.approx(24 / 84)


def test_empty_result_after_filtering_is_a_clear_error():
    with pytest.raises(DataFormatError, match=r"no interactions left after filtering .*--user_core"):
        process_interactions(raw_from(make_events()), user_core=50)


def test_max_users_subsamples_deterministically():
    a = process_interactions(raw_from(make_events(n_users=30)), item_core=1, max_users=10, seed=1)
    b = process_interactions(raw_from(make_events(n_users=30)), item_core=1, max_users=10, seed=1)
    assert a.stats["n_users"] == 10 and a.sequences["test"]["user_id"] == b.sequences["test"]["user_id"]
