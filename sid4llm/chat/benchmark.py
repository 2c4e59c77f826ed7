"""The chat benchmark: does the chat understand what people ask, and answer in words?

Measured on a prepared dataset and a saved recommender (``scripts/bench_chat.py`` prints the table):

- **category precision@5** on requests in held-out phrasings (frames never used in training; "like <title>"
  anchors from the held-out tenth of the items): the share of the 5 recommended items that meet every
  constraint of the request (its categories, its decade), beside the same for the 5 most popular items and for
  the best possible list;
- **mention precision / recall** on a labelled set of messages with negatives (``chat_mentions_*.jsonl``);
- **share of answers with words**, **share stating a fact the catalogue and the request lack** (a number, a date,
  a name: :mod:`.grounding`), **share making a claim in plain words they do not support**, **share in the LM's own
  words** and **seconds per chat turn**, through
  :meth:`RecommendationPipeline.chat`;
- **recall@10 from the natural-language prompt**: each test user's most recent titles in a sentence, through the
  chat (mention detection, then the model), beside the ID-stream recall of the same model and the most-popular
  floor on the same users (seen items left out of every list).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.titles import spoken_title
from ..evaluation.leave_one_out import evaluate_recommender
from ..metrics import sample_users
from .conversation import LIST_HEADING
from .grounding import ungrounded_claims, ungrounded_facts

# Labelled messages: the first set was written with the mention rules, the second afterwards (as a check on them)
MENTION_FILES = (Path(__file__).with_name("chat_mentions_movielens.jsonl"),
                 Path(__file__).with_name("chat_mentions_movielens_holdout.jsonl"))


def meets(request, item: int, categories: list[list[str]], years: list[int | None]) -> bool:
    """Whether ``item`` satisfies every constraint of ``request`` (categories and decade)."""
    if not set(request.categories) <= set(categories[item]):
        return False
    return request.decade is None or (years[item] is not None and years[item] // 10 * 10 == request.decade)


def held_out_requests(data, count: int, seed: int = 1):
    """Requests that constrain what they ask for (descriptions and "like <title> but <wish>"), in held-out
    phrasings, with held-out anchors."""
    from ..lm.tasks import TaskArguments, request_writer

    writer = request_writer(data, TaskArguments(example_seed=seed))
    out = []
    for _ in range(50 * count):
        if len(out) == count:
            break
        request = writer.describe_request("held_out") if len(out) % 3 != 2 else writer.like_request("held_out", with_wish=True)
        if request is not None:
            out.append(request)
    if len(out) < count:
        raise ValueError(f"only {len(out)} of {count} requests with categories could be written: the benchmark needs "
                         "item categories")
    return writer, out


def category_precision(pipe, data, n_requests: int = 150, k: int = 5, seed: int = 1) -> dict:
    """Category precision@k of the model, of the most popular items and of the best possible list."""
    writer, requests = held_out_requests(data, n_requests, seed)
    popularity = np.asarray(data.item_popularity)
    by_popularity = np.argsort(-popularity, kind="stable")
    rows = []
    for request in requests:
        ranked = [r["index"] for r in pipe.recommend_request(request.text, list(request.named), k=k)]
        popular = [int(i) for i in by_popularity if int(i) not in request.named][:k]
        matching = len(writer.matching(request.categories, request.decade, request.named))
        rows.append({"kind": request.kind, "text": request.text,
                     "model": np.mean([meets(request, i, writer.categories, writer.years) for i in ranked]),
                     "popular": np.mean([meets(request, i, writer.categories, writer.years) for i in popular]),
                     "best": min(k, matching) / k,
                     "recommended": [data.items[i]["title"] for i in ranked[:3]]})
    summary = {name: float(np.mean([r[name] for r in rows])) for name in ("model", "popular", "best")}
    by_kind = {kind: float(np.mean([r["model"] for r in rows if r["kind"] == kind])) for kind in {r["kind"] for r in rows}}
    return {**summary, "by_kind": by_kind, "n_requests": len(rows), "k": k, "examples": rows[:12]}


def mention_scores(pipe, paths: Sequence[str | Path] = MENTION_FILES) -> dict:
    """Precision and recall of the items found in labelled messages (micro-averaged over mentions)."""
    true_pos = found = expected = 0
    errors = []
    lines = [(path, line) for path in paths for line in Path(path).read_text().splitlines()]
    for path, line in lines:
        if not line.strip():
            continue
        case = json.loads(line)
        want = {pipe.titles.lookup(t) for t in case["mentions"]}
        if None in want:
            raise ValueError(f"{path}: {case['mentions']} names a title this catalogue lacks")
        got = set(pipe.titles.find_mentions(case["message"]))
        true_pos += len(got & want)
        found += len(got)
        expected += len(want)
        if got != want:
            errors.append({"message": case["message"], "found": sorted(pipe.codebook.titles[i] for i in got),
                           "expected": case["mentions"]})
    return {"precision": true_pos / found if found else 1.0, "recall": true_pos / expected if expected else 1.0,
            "mentions": expected, "messages": sum(bool(line.strip()) for _, line in lines), "errors": errors}


def answer_words(content: str) -> str:
    """The words of a chat answer: its text before the list, without the lines that echo the request."""
    return "\n\n".join(s for s in content.split(LIST_HEADING)[0].split("\n\n")
                       if not s.startswith(("You mentioned", "I couldn't find", "(Your message"))).strip()


def unsupported_in_answer(words: str, request: str, titles: Sequence[str], categories: Sequence[Sequence[str]],
                          profile) -> tuple[list[str], list[str]]:
    """What an answer's ``words`` state that the listed items (``titles``, each with its ``categories``), the
    request and the profile do not hold: (facts — numbers, dates, names; claims in plain words — only for an answer
    that lists items)."""
    listed_categories = [c for cats in categories for c in cats]
    grounding = [request, profile.fill(profile.assistant_prompt), profile.fill(profile.greeting_prompt),
                 *titles, *listed_categories]
    facts = ungrounded_facts(words, grounding)
    claims = ungrounded_claims(words, [*grounding, profile.fill(profile.grounded_answer)],
                               profile.answer_vocabulary(listed_categories)) if titles else []
    return facts, claims


def chat_turns(pipe, requests: list[str], k: int = 5) -> dict:
    """Through the whole chat: the share of answers with words, the share of those that state a fact (a number, a
    date, a name) that neither the catalogue's listed items nor the request hold, the share of answers presenting
    items that make a claim in plain words they do not support (content words beyond the titles, the listed items'
    categories and their everyday words, the request and the words of recommending), the share written by the LM
    rather than the profile's ``grounded_answer``, and seconds per turn."""
    times, with_words, ungrounded, claiming, own, answers = [], 0, 0, 0, 0, []
    categories = pipe.recommender.item_categories
    profile = pipe.profile
    for text in requests:
        start = time.perf_counter()
        reply = pipe.chat([{"role": "user", "content": text}], k=k)
        times.append(time.perf_counter() - start)
        words = answer_words(reply["content"])
        has_words = len(words.split()) >= 4
        items = reply["items"]
        facts, claims = unsupported_in_answer(words, text, [item["title"] for item in items],
                                              [categories[item["index"]] if categories else [] for item in items],
                                              profile)
        templated = bool(items) and words == profile.grounded_sentence(
            spoken_title(items[0]["title"], with_year=True), categories[items[0]["index"]] if categories else None)
        with_words += has_words
        ungrounded += bool(facts)
        claiming += bool(claims)
        own += has_words and not templated
        answers.append({"request": text, "answer": reply["content"], "words": has_words, "ungrounded": facts,
                        "unsupported_claims": claims, "grounded_answer": templated})
    n = len(requests)
    return {"answers_with_words": with_words / n if n else None,
            "answers_with_ungrounded_facts": ungrounded / n if n else None,
            "answers_with_unsupported_claims": claiming / n if n else None,
            "answers_in_lm_words": own / n if n else None,
            "seconds_per_turn": float(np.mean(times)) if times else None,
            "seconds_per_turn_p90": float(np.percentile(times, 90)) if times else None, "transcript": answers}


def prompt_recall(pipe, data, n_users: int = 500, recent: int = 5, k: int = 10, seed: int = 0) -> dict:
    """recall@k from a sentence naming each user's ``recent`` latest titles, through the chat (seen items left
    out), beside the ID stream of the same ``recent`` items (what the words cost or add at equal context), the
    ID stream of the whole history and the most-popular floor of :func:`evaluate_recommender` on the same
    users."""
    split = data.sequences["test"]
    histories, targets = list(split["history"]), list(split["target"])
    users = sample_users(len(histories), n_users, seed)
    titles = list(data.items["title"])
    question = pipe.profile.fill(pipe.profile.next_question)
    hits = 0
    for u in users:
        named = [spoken_title(titles[i]) for i in histories[u][-recent:]]
        loved = f"{', '.join(named[:-1])} and {named[-1]}" if len(named) > 1 else named[0]
        message = f"I loved {loved}. {question}"
        reply = pipe.chat([{"role": "user", "content": message}], k=k, exclude=[data.items[i]["item_id"] for i in histories[u]],
                          prose=False)
        hits += targets[u] in [item["index"] for item in reply["items"]]
    same_items = pipe.recommender.recommend([histories[u][-recent:] for u in users], k=k,
                                            exclude=[histories[u] for u in users])
    same_hits = sum(targets[u] in [item["index"] for item in ranked] for u, ranked in zip(users, same_items))
    streams = evaluate_recommender(pipe.recommender, data, "test", [k], max_users=n_users, seed=seed)
    return {"recall_prompt": hits / len(users), "recall_id_stream_same_items": same_hits / len(users),
            "recall_id_stream": streams["model"][f"recall@{k}"],
            "recall_most_popular": streams["most_popular"][f"recall@{k}"], "n_users": len(users), "recent_titles": recent,
            "k": k}
