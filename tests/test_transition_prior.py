"""The item-transition prior: what followed each item in the train histories, re-ranking the model's beam with a
weight chosen on valid users (0 when it does not help)."""

import math
from types import SimpleNamespace

import pytest
import torch

from sid4llm.artifacts import ArtifactError
from sid4llm.decoding.transition_prior import PRIOR_DIR, ItemTransitionPrior
from sid4llm.training.selection import fit_transition_prior_weight

# 0 -> 1 twice, 0 -> 2 once; 1 -> 3 always; item 4 is never followed.
SEQUENCES = [[0, 1, 3], [0, 1, 3], [0, 2], [4]]


def test_counts_what_followed_each_item_within_the_span():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1)
    successors, probabilities = prior.successors.tolist(), prior.probabilities.tolist()
    assert successors[0][:2] == [1, 2] and probabilities[0][:2] == pytest.approx([2 / 3, 1 / 3])
    assert successors[1][0] == 3 and probabilities[1][0] == pytest.approx(1.0)
    assert successors[4] == [-1] * 5 and sum(probabilities[4]) == 0  # nothing followed it
    # span 2: the item two places later counts half (0 -> 3 twice, at 1/2), equal weights in index order
    two = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=2)
    assert two.successors[0].tolist()[:3] == [1, 2, 3]
    assert two.probabilities[0].tolist()[:3] == pytest.approx([2 / 4, 1 / 4, 1 / 4])


def test_keeps_only_the_strongest_successors():
    prior = ItemTransitionPrior.count([[0, 1], [0, 1], [0, 2], [0, 3]], n_items=4, span=1, keep=1)
    assert prior.successors.shape == (4, 1) and prior.successors[0, 0] == 1
    assert prior.probabilities[0, 0] == pytest.approx(0.5)  # its share of everything that followed item 0


def test_log_prior_votes_with_the_last_items_and_floors_the_rest():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1, recent=2, recency_decay=0.5)
    log_p = prior.log_prior([[2, 0], [], [4]], n_items=6)  # item 5 was added after counting
    assert log_p.shape == (3, 6)
    p = log_p.exp() - 1 / 6
    # the last item (0) votes 1, the one before (2, followed by nothing) 0.5 of nothing
    assert p[0, 1] == pytest.approx(2 / 3, abs=1e-6) and p[0, 2] == pytest.approx(1 / 3, abs=1e-6)
    assert torch.allclose(log_p[1], torch.full((6,), math.log(1 / 6)))  # no history: no opinion
    assert torch.allclose(log_p[2], torch.full((6,), math.log(1 / 6)))  # nothing ever followed item 4
    assert log_p[0, 5] == pytest.approx(math.log(1 / 6))


def test_rerank_moves_what_followed_the_history_up_by_the_weight():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1)
    beam = [(2, -1.0), (4, -1.1), (3, -1.2), (1, -1.5)]  # the model's order
    assert [i for i, _ in prior.rerank(beam, [0], k=2, weight=0.0)] == [2, 4]
    assert [i for i, _ in prior.rerank(beam, [0], k=2, weight=2.0)] == [1, 2]
    assert [i for i, _ in prior.rerank(beam, [1], k=1, weight=1.0)] == [3]
    fused = dict(prior.rerank(beam, [0], k=4, weight=1.0))
    assert fused[1] == pytest.approx(-1.5 + math.log(2 / 3 + 1 / 5))


def test_saves_and_loads_as_safetensors(tmp_path):
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, keep=3)
    prior.config.weight = 0.3
    prior.save_pretrained(tmp_path / PRIOR_DIR)
    assert sorted(p.name for p in (tmp_path / PRIOR_DIR).iterdir()) == ["transition_prior.safetensors",
                                                                        "transition_prior_config.json"]
    loaded = ItemTransitionPrior.from_pretrained(tmp_path / PRIOR_DIR)
    assert loaded.config == prior.config and loaded.weight == 0.3
    assert torch.equal(loaded.successors, prior.successors) and torch.equal(loaded.probabilities, prior.probabilities)
    (tmp_path / PRIOR_DIR / "transition_prior.safetensors").unlink()
    with pytest.raises(ArtifactError, match="transition_prior.safetensors"):
        ItemTransitionPrior.from_pretrained(tmp_path / PRIOR_DIR)


def test_the_priors_own_best_items_leave_out_the_seen_and_need_a_history():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1)
    assert prior.top_items([[0], [0], [1], []], 2, exclude=[[], [1], [1, 3], []]) == [[1, 2], [2, 0], [0, 2], []]


class _FixedBeam:
    """A recommender whose beam is given: each history's candidates in the model's order (scores -0.1 a rank), and
    ``scores`` for the items it would score when asked (any other: -5)."""

    def __init__(self, beams: list[list[int]], scores: dict[int, float] | None = None):
        self.beams, self.generation_config = beams, SimpleNamespace(num_beams=4)
        self.scores, self.asked = scores or {}, []

    def item_log_probs(self, histories, items):
        self.asked.append([list(x) for x in items])
        return [[self.scores.get(i, -5.0) for i in row] for row in items]

    def recommend(self, histories, k, num_beams, batch_size, prior_weight):
        assert prior_weight == 0.0  # the candidates are the model's own
        return [[{"index": i, "score": -0.1 * rank} for rank, i in enumerate(self.beams[n][:k])]
                for n in range(len(histories))]


def test_the_weight_is_chosen_on_valid_users_and_is_zero_when_the_count_does_not_help():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1)
    histories, beams = [[0], [1], [0]], [[2, 4, 1, 3], [2, 4, 3, 1], [2, 4, 1, 3]]
    # the targets are what followed the last item in training: the count helps, and the least weight that
    # gets all three is kept
    summary = fit_transition_prior_weight(_FixedBeam(beams), prior, histories, [1, 3, 1], [0.1, 1.0, 5.0], k=1)
    assert summary["valid_recall@1_by_weight"] == {"0": 0.0, "0.1": 0.0, "1": 1.0, "5": 1.0}
    assert prior.weight == summary["weight"] == 1.0
    # the model's first guesses are right: any weight that moves them loses, so the prior is off
    summary = fit_transition_prior_weight(_FixedBeam(beams), prior, histories, [2, 2, 2], [0.1, 1.0, 5.0], k=1)
    assert prior.weight == summary["weight"] == 0.0 and summary["valid_recall@1_by_weight"]["0"] == 1.0


def test_equal_recalls_go_to_the_weight_that_ranks_the_target_higher():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1)
    beam = _FixedBeam([[2, 4, 1, 3]])
    # both weights put item 1 in the top 2; weight 1 puts it first, 0.3 second, and 5 does what 1 does
    summary = fit_transition_prior_weight(beam, prior, [[0]], [1], [0.3, 1.0, 5.0], k=2)
    assert set(summary["valid_recall@2_by_weight"].values()) == {0.0, 1.0}
    assert summary["valid_ndcg@2_by_weight"]["0.3"] < summary["valid_ndcg@2_by_weight"]["1"] == 1.0
    assert prior.weight == 1.0


def test_the_priors_own_candidates_reach_a_target_the_beam_missed_and_are_kept_with_the_weight():
    prior = ItemTransitionPrior.count(SEQUENCES, n_items=5, span=1)
    beam = _FixedBeam([[2, 4]], scores={1: -1.0})  # the target, 1, is not in the beam; the model rates it -1.0
    summary = fit_transition_prior_weight(beam, prior, [[0]], [1], [1.0, 5.0], k=1)
    assert prior.weight == 0.0 and prior.config.candidates == 0 and beam.asked == []  # re-ranking the beam cannot help
    summary = fit_transition_prior_weight(beam, prior, [[0]], [1], [1.0, 5.0], k=1, candidates=1)
    assert beam.asked == [[[1]]]  # the prior's best unseen item after [0], not already in the beam
    # weight 1: -1.0 + log(2/3 + 1/5) < 0 + log(1/3 + 1/5) for item 2; weight 5 puts the target first
    assert summary["valid_recall@1_by_weight"] == {"0": 0.0, "1": 0.0, "5": 1.0}
    assert prior.weight == 5.0 and prior.config.candidates == summary["prior_candidates"] == 1
