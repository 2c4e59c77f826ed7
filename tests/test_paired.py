"""Paired bootstrap over users: the interval that decides whether one recommender beats another."""

from __future__ import annotations

import numpy as np
import pytest

from sid4llm.research.paired import interval_verdict, paired_bootstrap


def lists_hitting(targets, hit_mask, n_items, k=10, offset=0):
    """One list per user: the target first where ``hit_mask`` says so, else k items that are not the target."""
    out = []
    for t, hit in zip(targets, hit_mask):
        misses = [(t + 1 + j + offset) % n_items for j in range(k)]
        out.append([t] + misses[: k - 1] if hit else misses)
    return out


def test_a_method_compared_with_itself_is_level_with_a_zero_interval():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 50, size=200).tolist()
    lists = lists_hitting(targets, rng.random(200) < 0.3, 50)
    result = paired_bootstrap([lists], [lists], targets, n_items=50, resamples=200)
    assert result["recall@10"]["difference"] == 0 and result["recall@10"]["low"] == result["recall@10"]["high"] == 0
    assert interval_verdict(result["recall@10"]) == "level" and result["recall@10"]["p_value"] == 1.0


def test_a_clear_gain_on_many_users_is_ahead_and_the_reverse_is_behind():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 100, size=2000).tolist()
    strong = lists_hitting(targets, rng.random(2000) < 0.30, 100)
    weak = lists_hitting(targets, rng.random(2000) < 0.20, 100)
    result = paired_bootstrap([strong], [weak], targets, n_items=100, resamples=500)
    assert 0.07 < result["recall@10"]["difference"] < 0.13
    assert result["recall@10"]["low"] < result["recall@10"]["difference"] < result["recall@10"]["high"]
    assert interval_verdict(result["recall@10"]) == "ahead" and result["recall@10"]["p_value"] < 0.01
    assert interval_verdict(paired_bootstrap([weak], [strong], targets, 100, resamples=500)["recall@10"]) == "behind"


def test_a_one_user_difference_on_few_users_cannot_be_told_apart():
    targets = list(range(30))
    base = [i % 3 == 0 for i in range(30)]
    better = list(base)
    better[1] = True  # one more hit out of 30 users
    result = paired_bootstrap([lists_hitting(targets, better, 60)], [lists_hitting(targets, base, 60)], targets,
                              n_items=60, resamples=1000)
    assert result["recall@10"]["difference"] == pytest.approx(1 / 30)
    assert interval_verdict(result["recall@10"]) == "level"


def test_coverage_counts_the_distinct_items_of_the_resampled_users_lists():
    targets = [300] * 100  # an item no list holds
    same_list = [[1, 2, 3]] * 100  # every user gets the same three items
    varied = [[(3 * u + j) % 300 for j in range(3)] for u in range(100)]  # 300 distinct items
    result = paired_bootstrap([varied], [same_list], targets, n_items=301, k=3, resamples=300)
    assert result["coverage@3"]["difference"] == pytest.approx((300 - 3) / 301)
    assert interval_verdict(result["coverage@3"]) == "ahead"
    assert result["recall@3"]["difference"] == 0


def test_seeds_are_averaged_per_user():
    targets = [0, 1, 2, 3]
    hits = lists_hitting(targets, [True] * 4, 10, k=2)
    misses = lists_hitting(targets, [False] * 4, 10, k=2)
    result = paired_bootstrap([hits, misses], [misses], targets, n_items=10, k=2, resamples=50)
    assert result["recall@2_a"] == 0.5 and result["recall@2"]["difference"] == 0.5 and result["runs_a"] == 2


def test_methods_scored_on_different_users_are_refused():
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap([[[1]] * 3], [[[1]] * 4], [1, 2, 3], n_items=5)


def test_the_coverage_interval_is_centred_on_the_observed_difference_though_resamples_repeat_users():
    rng = np.random.default_rng(2)
    targets = [999] * 300
    wide = [rng.choice(400, size=10, replace=False).tolist() for _ in range(300)]  # lists drawn from 400 items
    narrow = [rng.choice(150, size=10, replace=False).tolist() for _ in range(300)]  # from 150: saturates
    result = paired_bootstrap([wide], [narrow], targets, n_items=1000, resamples=500)["coverage@10"]
    assert result["bootstrap_bias"] < 0  # a resample covers less of the wide method's catalogue
    assert result["low"] < result["difference"] < result["high"]
