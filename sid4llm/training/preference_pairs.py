"""Preference pairs from a recommender's own ranked lists: what the preference stage learns from.

For a train history cut at some item, the item that came next is the *chosen* answer and the model's own
highest-ranked wrong items (its trie-constrained beam, the transition prior off) are the *rejected* ones — several
per example, one pair each, as S-DPO uses several negatives. Items the user met later in their train history are
never rejected: they are not wrong, only not next. Rows are token ids in trl's preference form
(``prompt_ids``/``chosen_ids``/``rejected_ids``), the prompt exactly as the recommender reads it and each answer an
item's codes and end marker, as the model writes it.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from ..metrics import sample_users


def train_cut_points(histories: list[list[int]], users: int | None, examples_per_user: int,
                     seed: int = 0) -> list[tuple[int, int]]:
    """``(user, position)`` pairs: the item at ``position`` of the user's train events is the answer to the ones
    before it. Each sampled user gives their last train event (the step before valid, as evaluation asks it) and
    ``examples_per_user - 1`` earlier ones drawn at random; users with a single event give none."""
    rng = np.random.default_rng(seed)
    cuts: list[tuple[int, int]] = []
    for user in sample_users(len(histories), users, seed):
        length = len(histories[user])
        if length < 2:
            continue
        earlier = rng.choice(np.arange(1, length - 1), size=min(examples_per_user - 1, length - 2), replace=False) \
            if length > 2 and examples_per_user > 1 else []
        cuts += [(user, length - 1), *((user, int(p)) for p in sorted(earlier))]
    return cuts


def preference_pairs(recommender, histories: list[list[int]], cuts: list[tuple[int, int]], negatives: int,
                     candidates: int, batch_size: int = 32, show_progress: bool = False) -> tuple[Dataset, dict]:
    """One row per (example, rejected item), and what the lists held: how often the answer was in the model's
    ``candidates``-item list (and at which rank), and how many rejected items each example got."""
    if negatives < 1 or candidates <= negatives:
        raise ValueError(f"need 1 <= negatives < candidates, got negatives={negatives}, candidates={candidates}")
    prefixes = [histories[u][:p] for u, p in cuts]
    answers = [histories[u][p] for u, p in cuts]
    ranked = recommender.recommend(prefixes, k=candidates, num_beams=candidates, batch_size=batch_size,
                                   prior_weight=0.0, show_progress=show_progress)
    vocab = recommender.vocab
    rows: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "example": [], "answer_rank": []}
    ranks, per_example = [], []
    for n, ((user, position), prefix, answer, found) in enumerate(zip(cuts, prefixes, answers, ranked)):
        listed = [r["index"] for r in found]
        rank = listed.index(answer) + 1 if answer in listed else 0
        ranks.append(rank)
        later = set(histories[user][position:])  # the answer and what came after it: never rejected
        wrong = [i for i in listed if i not in later][:negatives]
        per_example.append(len(wrong))
        prompt, chosen = recommender.history_prompt_ids(prefix), vocab.stream_item_token_ids(answer)
        for item in wrong:
            rows["prompt_ids"].append(prompt)
            rows["chosen_ids"].append(chosen)
            rows["rejected_ids"].append(vocab.stream_item_token_ids(item))
            rows["example"].append(n)
            rows["answer_rank"].append(rank)
    ranks_arr = np.asarray(ranks)
    stats = {"examples": len(cuts), "pairs": len(rows["prompt_ids"]), "candidates": candidates,
             "negatives": negatives, "answer_in_list": float((ranks_arr > 0).mean()) if len(ranks) else 0.0,
             "answer_first": float((ranks_arr == 1).mean()) if len(ranks) else 0.0,
             "mean_rejected_per_example": float(np.mean(per_example)) if per_example else 0.0}
    return Dataset.from_dict(rows), stats


def request_preference_pairs(recommender, writer, count: int, negatives: int, candidates: int, seed: int = 0,
                             batch_size: int = 32) -> tuple[Dataset, dict]:
    """Pairs for requests in words (the requests task's own generator, train phrasings): of the model's
    ``candidates`` items for a request that asks for categories (or a decade), the best-ranked one that meets every
    constraint is chosen (a written answer when none does) and its best-ranked ones that miss a constraint are
    rejected: the reward is meeting what was asked."""
    if negatives < 1 or candidates <= negatives:
        raise ValueError(f"need 1 <= negatives < candidates, got negatives={negatives}, candidates={candidates}")
    writer.rng.seed(seed)
    asked = [r for r in writer.requests(count * 3, "train") if r.categories or r.decade is not None][:count]
    ranked = recommender.recommend([list(r.named) for r in asked], k=candidates, num_beams=candidates,
                                   batch_size=batch_size, style="request", texts=[r.text for r in asked],
                                   prior_weight=0.0)
    vocab = recommender.vocab
    rows: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "example": [], "answer_rank": []}
    meeting = []
    for n, (request, found) in enumerate(zip(asked, ranked)):
        good = set(writer.matching(request.categories, request.decade))
        listed = [r["index"] for r in found]
        meeting.append(sum(i in good for i in listed[:10]) / max(1, min(10, len(listed))))
        hits = [i for i in listed if i in good]
        chosen = hits[0] if hits else request.answers[0]
        wrong = [i for i in listed if i not in good][:negatives]
        prompt = recommender.history_prompt_ids(list(request.named), "request", request.text)
        for item in wrong:
            rows["prompt_ids"].append(prompt)
            rows["chosen_ids"].append(vocab.stream_item_token_ids(chosen))
            rows["rejected_ids"].append(vocab.stream_item_token_ids(item))
            rows["example"].append(n)
            rows["answer_rank"].append(listed.index(chosen) + 1 if chosen in listed else 0)
    stats = {"requests": len(asked), "pairs": len(rows["prompt_ids"]),
             "top10_meeting_the_request": float(np.mean(meeting)) if meeting else 0.0}
    return Dataset.from_dict(rows), stats
