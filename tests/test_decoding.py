"""Constrained decoding: the trie, the LogitsProcessor in generate, and the fast top-K path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sid4llm.decoding import TrieLogitsProcessor, id_head_rows, recommend_top_k
from sid4llm.decoding.trie import IdTrie
from sid4llm.ids import DVAEConfig, SemanticIdCodebook
from sid4llm.lm.embedding_init import init_id_embeddings
from sid4llm.lm.recommender import SidRecommender
from sid4llm.lm.recommender_config import (
    DecodingConfig,
    PromptConfig,
    SidRecommenderConfig,
    recommendation_generation_config,
)
from sid4llm.vocabulary import IdVocabulary


def random_codebook(n_items: int, vocab_size: int, max_length: int, seed: int) -> SemanticIdCodebook:
    """Variable-length codes of mixed lengths, with collisions resolved by disambiguation tokens."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length + 1, size=n_items)
    codes = rng.integers(0, vocab_size, size=(n_items, max_length))
    return SemanticIdCodebook.from_codes([f"item{i}" for i in range(n_items)], codes, lengths,
                                         rng.integers(0, 50, size=n_items), DVAEConfig(vocab_size=vocab_size, max_length=max_length),
                                         titles=[f"movie {i}" for i in range(n_items)])


def recommender_for(tiny_lm_dir, codebook, seed=0, trie_softmax: bool = False) -> SidRecommender:
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    vocab = IdVocabulary.extend(tokenizer, codebook)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    init_id_embeddings(model, vocab, "random", seed=seed)  # random rows: an untrained model, varied scores
    model.eval()
    prompt = PromptConfig(history_token_budget=40, max_history_items=10, system_prompt="", prompt_format="chat")
    config = SidRecommenderConfig(base_model=tiny_lm_dir, trie_softmax=trie_softmax, prompt=prompt,
                                  decoding=DecodingConfig(num_beams=4))
    return SidRecommender(model, vocab, recommendation_generation_config(vocab, 4), config)


def test_trie_accepts_exactly_the_ids():
    seqs = [(5, 6), (5, 7, 9), (8,), (5, 6, 10)]
    trie = IdTrie.from_sequences(seqs, end_token=99)
    end = 99
    for item, seq in enumerate(seqs):
        node = trie.walk(torch.tensor([[*seq, end]]))
        assert trie.items_of(node).tolist() == [item]
    assert trie.walk(torch.tensor([[5, 99]])).tolist() == [-1]  # "5" alone is not an ID
    root_allowed = trie.allowed_mask(torch.tensor([0]), 100).nonzero()[:, 1].tolist()
    assert root_allowed == [5, 8]
    with pytest.raises(ValueError, match="share one ID"):
        IdTrie.from_sequences([(1, 2), (1, 2)], end_token=9)


@pytest.mark.parametrize("seed", range(4))
def test_every_decoded_id_is_valid_for_an_untrained_model(tiny_lm_dir, seed):
    codebook = random_codebook(n_items=30, vocab_size=5, max_length=3, seed=seed)
    rec = recommender_for(tiny_lm_dir, codebook, seed)
    histories = [[0, 1, 2], [3], [4, 5, 6, 7, 8]]
    for beams in rec.generate_ids(histories, num_beams=4, constrained=True):
        assert all(b is not None for b in beams)
    for ranked in rec.recommend(histories, k=6):
        assert len(ranked) == 6 and len({r["index"] for r in ranked}) == 6
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_unconstrained_beams_can_be_invalid_and_are_reported_as_none(tiny_lm_dir):
    rec = recommender_for(tiny_lm_dir, random_codebook(30, 5, 3, seed=1))
    with torch.no_grad():  # a model with no preference: every logit 0, so beams start with the lowest token ids
        rec.model.get_output_embeddings().weight.zero_()
    assert min(rec.vocab.new_token_ids) > 4  # ... which are text tokens, never an ID
    assert rec.generate_ids([[0, 1]], num_beams=4, constrained=False)[0] == [None] * 4
    constrained = rec.generate_ids([[0, 1]], num_beams=4, constrained=True)[0]
    assert all(b is not None and 0 <= b < 30 for b in constrained)  # the trie allows real IDs only


def brute_force_scores(rec: SidRecommender, history) -> list[tuple[int, float]]:
    """Score every item not in ``history`` by teacher forcing, normalising over the ID tokens as the fast
    path does."""
    decoder = rec.decoder
    with torch.no_grad():
        head = id_head_rows(rec.model, decoder.column_token_ids)
    prompt = rec.history_prompt_ids(history)
    scores = []
    for item in (i for i in range(len(rec.codebook)) if i not in history):
        id_tokens = rec.vocab.stream_item_token_ids(item)  # the ID starts right after the prompt
        ids = torch.tensor([prompt + id_tokens[:-1]])
        with torch.no_grad():
            hidden = rec.model.model(ids).last_hidden_state[0, len(prompt) - 1:]
        logp = torch.log_softmax(hidden @ head.T, -1)
        columns = decoder.token_to_column(torch.tensor(id_tokens))
        scores.append((item, float(logp[torch.arange(len(id_tokens)), columns].sum())))
    return sorted(scores, key=lambda s: -s[1])


def test_wide_beams_give_the_exact_top_k_of_the_unseen_items(tiny_lm_dir):
    codebook = random_codebook(n_items=20, vocab_size=4, max_length=3, seed=7)
    rec = recommender_for(tiny_lm_dir, codebook, seed=3)
    history = [2, 5, 9]
    exact = brute_force_scores(rec, history)[:5]
    fast = rec.recommend([history], k=5, num_beams=len(codebook) + 10)[0]
    assert [r["index"] for r in fast] == [i for i, _ in exact]
    np.testing.assert_allclose([r["score"] for r in fast], [s for _, s in exact], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trie_softmax", [False, True])
def test_any_item_is_scored_as_the_beam_would_score_it(tiny_lm_dir, trie_softmax):
    """Items the beam did not finish (a prior's guesses) get the model's exact log-probability, whatever the
    prompt's length (left padding) and the order they are asked in."""
    codebook = random_codebook(n_items=20, vocab_size=4, max_length=3, seed=7)
    rec = recommender_for(tiny_lm_dir, codebook, seed=3, trie_softmax=trie_softmax)
    histories = [[2, 5, 9, 11, 0], [1]]
    exact = [{r["index"]: r["score"] for r in ranked}
             for ranked in rec.recommend(histories, k=len(codebook) - 5, num_beams=len(codebook) + 10)]
    asked = [sorted(e, key=lambda i: (i * 7) % 20) for e in exact]
    for scores, items, want in zip(rec.item_log_probs(histories, asked), asked, exact):
        np.testing.assert_allclose(scores, [want[i] for i in items], rtol=1e-4, atol=1e-4)


def test_candidates_join_a_narrow_beam_with_their_exact_scores_and_excluded_ones_stay_out(tiny_lm_dir):
    codebook = random_codebook(n_items=20, vocab_size=4, max_length=3, seed=7)
    rec = recommender_for(tiny_lm_dir, codebook, seed=3)
    history = [2, 5, 9]
    exact = {r["index"]: r["score"] for r in rec.recommend([history], k=17, num_beams=30)[0]}
    worst = sorted(exact, key=exact.get)[:3]  # three items a beam of 2 never finishes
    narrow = dict(k=2, num_beams=2, pad_token_id=rec.tokenizer.pad_token_id, exclude=[set(history)])
    prompt = rec.history_prompt_ids(history)
    beam = recommend_top_k(rec.id_model, rec.decoder, [prompt], **narrow)[0]
    found = recommend_top_k(rec.id_model, rec.decoder, [prompt], **narrow, candidates=[[*worst, history[0]]])[0]
    assert found[:2] == beam  # the beam's own two first
    assert {i for i, _ in found[2:]} == set(worst)  # the candidates after them, the seen item left out
    for item, score in found:
        assert score == pytest.approx(exact[item], abs=1e-4)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_a_priors_own_candidates_reach_the_list_where_a_narrow_beam_never_goes(tiny_lm_dir):
    from sid4llm.decoding.transition_prior import ItemTransitionPrior

    rec = recommender_for(tiny_lm_dir, random_codebook(n_items=20, vocab_size=4, max_length=3, seed=7), seed=3)
    history = [2, 5]
    follower = [r["index"] for r in rec.recommend([history], k=18, num_beams=30, prior_weight=0.0)[0]][-1]
    rec.transition_prior = ItemTransitionPrior.count([[5, follower]] * 3, n_items=20, span=1)  # always after item 5
    rec.transition_prior.config.weight = 50.0
    assert rec.recommend([history], k=1, num_beams=2)[0][0]["index"] != follower  # the beam never finishes it
    rec.transition_prior.config.candidates = 1
    top = rec.recommend([history], k=1, num_beams=2)[0][0]
    assert top["index"] == follower
    assert top["score"] == pytest.approx(rec.item_log_probs([history], [[follower]])[0][0]
                                         + 50.0 * math.log(1.0 + 1 / 20), abs=1e-3)


@pytest.mark.parametrize("trie_softmax", [False, True])
def test_a_trie_softmax_model_scores_a_distribution_over_the_items(tiny_lm_dir, trie_softmax):
    """Normalised over each node's continuations, the items' scores are log-probabilities that sum to one over the
    catalogue; normalised over all ID tokens, the mass on strings that are no ID is lost."""
    codebook = random_codebook(n_items=20, vocab_size=4, max_length=3, seed=7)
    rec = recommender_for(tiny_lm_dir, codebook, seed=3, trie_softmax=trie_softmax)
    ranked = rec.recommend([[2, 5]], k=20, num_beams=40, exclude_seen=False)[0]
    total = float(np.exp([r["score"] for r in ranked]).sum())
    if trie_softmax:
        assert total == pytest.approx(1.0, abs=1e-4)
    else:
        assert total < 0.99
    generated = rec.generate_ids([[2, 5]], num_beams=20)[0]  # generate's beams find the fast path's best items
    assert generated[0] == ranked[0]["index"] and set(generated[:4]) == {r["index"] for r in ranked[:4]}


def test_seen_items_are_left_out_unless_asked_for(tiny_lm_dir):
    rec = recommender_for(tiny_lm_dir, random_codebook(n_items=12, vocab_size=4, max_length=3, seed=5), seed=2)
    history = list(range(0, 12, 2))
    kept = [r["index"] for r in rec.recommend([history], k=12, num_beams=40, exclude_seen=False)[0]]
    assert set(kept) & set(history)  # an untrained model ranks some of them: the test below is not vacuous
    unseen = [r["index"] for r in rec.recommend([history], k=6, num_beams=40)[0]]
    assert sorted(unseen) == list(range(1, 12, 2))  # all six unseen items, none of the history
    assert unseen == [i for i in kept if i not in history]  # in the order the full ranking gives them
    extra = rec.recommend([history], k=5, num_beams=40, exclude=[{unseen[0]}])[0]
    assert [r["index"] for r in extra] == unseen[1:]


def test_batches_with_different_history_lengths_match_one_at_a_time(tiny_lm_dir):
    rec = recommender_for(tiny_lm_dir, random_codebook(25, 5, 3, seed=2), seed=1)
    histories = [[1], [2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    batched = rec.recommend(histories, k=5, batch_size=4)
    single = [rec.recommend([h], k=5, batch_size=1)[0] for h in histories]
    for b, s in zip(batched, single):
        assert [r["index"] for r in b] == [r["index"] for r in s]
        np.testing.assert_allclose([r["score"] for r in b], [r["score"] for r in s], rtol=1e-4, atol=1e-4)


def test_mixed_mode_writes_free_text_and_constrains_inside_ids(tiny_lm_dir):
    rec = recommender_for(tiny_lm_dir, random_codebook(10, 4, 2, seed=0))
    decoder = rec.decoder
    vocab = rec.vocab
    word = rec.tokenizer("movie", add_special_tokens=False)["input_ids"][0]
    processor = TrieLogitsProcessor(decoder, prompt_length=1, mode="mixed")
    scores = torch.zeros(3, len(rec.tokenizer))
    prefix = torch.tensor([[word, word, word],            # free text: ID tokens other than begin are masked
                           [word, vocab.begin_id, word],  # inside an ID after a non-ID token: nothing valid
                           [word, word, vocab.begin_id]])  # just opened: the trie's first tokens only
    out = processor(prefix, scores)
    allowed = [set(torch.isfinite(row).nonzero().squeeze(1).tolist()) for row in out]
    assert vocab.begin_id in allowed[0] and word in allowed[0] and vocab.end_id not in allowed[0]
    assert not (set(vocab.id_token_ids) & allowed[0])
    first_tokens = {vocab.id_token_ids[seq[0]] for seq in rec.codebook.sequences}
    assert allowed[2] == first_tokens


def test_rendering_replaces_id_spans_with_titles(tiny_lm_dir):
    rec = recommender_for(tiny_lm_dir, random_codebook(10, 4, 2, seed=0))
    vocab = rec.vocab
    word = rec.tokenizer("movie", add_special_tokens=False)["input_ids"]
    tokens = word + vocab.item_token_ids(3) + word + [vocab.begin_id, vocab.id_token_ids[0], vocab.end_id]
    text, items = vocab.render(tokens)
    valid_zero = rec.codebook.item_for((0,))
    assert items[0] == 3 and "movie 3" in text
    assert (items[1] is None) == (valid_zero is None)
    assert text.startswith("movie") and vocab.format_item(3) not in text


def test_mixed_mode_generation_only_ever_names_real_items(tiny_lm_dir):
    rec = recommender_for(tiny_lm_dir, random_codebook(10, 4, 2, seed=0))
    begin = rec.vocab.begin_id

    def open_ids_often(input_ids, scores):  # an untrained model rarely opens an ID by itself
        if input_ids.shape[1] % 5 == 0:
            scores[:, begin] += 100.0
        return scores

    out = rec.generate_text([{"role": "user", "content": "movie"}], max_new_tokens=40,
                            logits_processors=[open_ids_often])
    complete = out["items"][:-1] if out["raw"].rstrip().endswith(tuple(rec.tokenizer.convert_ids_to_tokens(
        rec.vocab.id_token_ids + [begin]))) else out["items"]
    assert len(out["items"]) >= 3
    assert all(i is not None for i in complete)  # every closed ID is a real item
    assert "<|sid_" not in out["text"]
