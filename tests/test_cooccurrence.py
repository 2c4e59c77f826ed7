"""The prior's whole-history term: EASE item-item weights (items the same users have, whatever the order), kept
sparse, saved with the prior, and weighted on valid users beside the transitions (0 when they do not help)."""

from types import SimpleNamespace

import pytest
import torch

from sid4llm.decoding.cooccurrence import cooccurrence_scores, ease_neighbours
from sid4llm.decoding.transition_prior import PRIOR_DIR, ItemTransitionPrior
from sid4llm.training.selection import fit_transition_prior_weight

# Two tastes: users of items 0-2 and users of items 3-5, each history in a different order; item 6 is everyone's.
HISTORIES = [[0, 1, 2, 6], [2, 0, 1], [1, 2, 0, 6], [0, 2], [3, 4, 5, 6], [5, 3, 4], [4, 5, 3, 6], [3, 5]]


def test_items_the_same_users_have_speak_for_each_other_and_against_the_rest():
    neighbours, weights = ease_neighbours(HISTORIES, n_items=7, l2=1.0, keep=7)
    as_dict = {int(j): float(w) for j, w in zip(neighbours[0], weights[0]) if j >= 0}
    assert 0 not in as_dict  # never its own neighbour
    assert min(as_dict[1], as_dict[2]) > 0 > max(as_dict[3], as_dict[4], as_dict[5])
    scores = cooccurrence_scores(neighbours, weights, [[1], [4, 3]], n_items=7)
    assert scores[0, [0, 2]].min() > scores[0, [3, 4, 5]].max()
    assert scores[1, 5] > scores[1, [0, 1, 2]].max()


def test_keeps_each_items_strongest_neighbours_by_magnitude():
    full, full_w = ease_neighbours(HISTORIES, n_items=7, l2=1.0, keep=7)
    some, some_w = ease_neighbours(HISTORIES, n_items=7, l2=1.0, keep=3)
    assert some.shape == (7, 3)
    strongest = full_w[0].abs().argsort(descending=True)[:3]
    assert set(some[0].tolist()) == set(full[0, strongest].tolist())
    assert torch.equal(some_w[0].abs(), some_w[0].abs().sort(descending=True).values)


def test_a_catalogue_too_large_for_the_dense_inverse_is_refused_by_name():
    with pytest.raises(ValueError, match="co-occurrence prior: 20,001 items"):
        ease_neighbours([[0, 1]], n_items=20_001)


def test_the_prior_with_co_occurrence_ranks_what_goes_with_the_whole_history_and_round_trips(tmp_path):
    # transitions alone see only what followed the last item (3 -> 5 once, 3 -> 4 once): a tie between 4 and 5
    prior = ItemTransitionPrior.count(HISTORIES, n_items=7, span=1)
    prior.add_cooccurrence(HISTORIES, l2=1.0, keep=7)
    assert prior.log_prior([[4, 3]]).tolist() == prior.transition_log_prior([[4, 3]]).tolist()  # weight 0: off
    prior.config.weight, prior.config.cooccurrence_weight = 1.0, 1.0
    beam = [(0, -1.0), (5, -1.05), (1, -1.1)]  # the model's order: an item of the other taste first
    assert [i for i, _ in prior.rerank(beam, [4, 3], k=1)] == [5]
    prior.save_pretrained(tmp_path / PRIOR_DIR)
    loaded = ItemTransitionPrior.from_pretrained(tmp_path / PRIOR_DIR)
    assert loaded.config == prior.config and loaded.config.cooccurrence_l2 == 1.0
    torch.testing.assert_close(loaded.log_prior([[4, 3], [0]]), prior.log_prior([[4, 3], [0]]))
    assert [i for i, _ in loaded.rerank(beam, [4, 3], k=1)] == [5]


def test_a_prior_saved_without_co_occurrence_loads_as_transitions_only(tmp_path):
    prior = ItemTransitionPrior.count(HISTORIES, n_items=7)
    prior.save_pretrained(tmp_path / PRIOR_DIR)
    loaded = ItemTransitionPrior.from_pretrained(tmp_path / PRIOR_DIR)
    assert not loaded.has_cooccurrence and loaded.config.cooccurrence_weight == 0.0
    with pytest.raises(ValueError, match="needs the co-occurrence neighbours"):
        ItemTransitionPrior(prior.successors, prior.probabilities,
                            type(prior.config)(n_items=7, cooccurrence_weight=0.5))


class _FixedBeam:
    def __init__(self, beams):
        self.beams, self.generation_config = beams, SimpleNamespace(num_beams=3)

    def recommend(self, histories, k, num_beams, batch_size, prior_weight):
        return [[{"index": i, "score": -0.1 * r} for r, i in enumerate(self.beams[n][:k])] for n in range(len(histories))]


def test_the_co_occurrence_weight_is_chosen_on_valid_users_and_is_zero_when_it_does_not_help():
    prior = ItemTransitionPrior.count(HISTORIES, n_items=7, span=1)
    prior.add_cooccurrence(HISTORIES, l2=1.0, keep=7)
    # after item 2 came 0 and 6 in training, never 1: the transitions push 6 (the model's first guess) further up,
    # while the whole history {0, 2} is the taste of item 1
    histories, beams = [[0, 2]], [[6, 1, 4]]
    summary = fit_transition_prior_weight(_FixedBeam(beams), prior, histories, [1], [1.0], k=1,
                                          cooccurrence_weights=[1.0, 3.0])
    assert summary["valid_recall@1_by_cooccurrence_weight"] == {"0": 0.0, "1": 1.0, "3": 1.0}
    assert prior.config.cooccurrence_weight == summary["cooccurrence_weight"] == 1.0 and prior.weight == 1.0
    # the model's first guess is right: neither term is used
    summary = fit_transition_prior_weight(_FixedBeam(beams), prior, histories, [6], [1.0], k=1,
                                          cooccurrence_weights=[1.0, 3.0])
    assert prior.weight == 0.0 and prior.config.cooccurrence_weight == 0.0
