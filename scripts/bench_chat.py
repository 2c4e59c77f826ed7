"""The chat benchmark on a trained recommender: category precision@5 on held-out request phrasings (beside the
most popular items and the best possible list), mention precision/recall on labelled messages, share of answers
with words (and of answers stating a number, date or name the catalogue lacks), seconds per chat turn, and
recall@10 from a natural-language prompt beside the ID stream of the same named items, of the whole history, and the
most-popular floor
(:mod:`sid4llm.chat.benchmark`).

    python scripts/bench_chat.py --model outputs/quickstart/model --data_dir outputs/quickstart/data \
        --json docs/bench_chat.json

Prints a table and writes JSON (with example answers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sid4llm.chat.benchmark import category_precision, chat_turns, mention_scores, prompt_recall
from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.pipeline import RecommendationPipeline
from sid4llm.reporting import machine_description, markdown_table, write_json

# Everyday requests for the words benchmark (and the README's transcript): none names a title but the last two.
CHAT_REQUESTS = ["I want a funny animated movie for my kids", "Recommend a scary horror film", "A good war movie please",
                 "I'm in the mood for a western", "a romantic comedy for date night", "any good mystery films?",
                 "something funny from the 80s", "hi", "Something like the matrix but scarier",
                 "I loved Toy Story and Aladdin. Something darker?"]


@dataclass
class ChatBenchArguments:
    model: str = field(metadata={"help": "A trained recommender folder or Hub id."})
    data_dir: str = field(metadata={"help": "The prepared dataset it was trained on."})
    requests: int = field(default=150, metadata={"help": "Held-out requests for category precision@5."})
    users: int = field(default=500, metadata={"help": "Test users for recall@10 from the natural-language prompt."})
    seed: int = field(default=0, metadata={"help": "Seed of the user sample (and, + 1, of the requests)."})
    transition_prior_weight: float | None = field(default=None, metadata={
        "help": "The transition prior's weight on every path (None: the saved one; 0: the model alone)."})
    json: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})


def main(args: ChatBenchArguments) -> dict:
    pipe = RecommendationPipeline.from_pretrained(args.model)
    if args.transition_prior_weight is not None:
        pipe.recommender.config.decoding.transition_prior_weight = args.transition_prior_weight
    data = PreparedData.load(args.data_dir)
    start = time.time()
    precision = category_precision(pipe, data, args.requests, seed=args.seed + 1)
    mentions = mention_scores(pipe)
    turns = chat_turns(pipe, CHAT_REQUESTS)
    recall = prompt_recall(pipe, data, args.users, seed=args.seed)
    rows = [
        ("category precision@5, held-out phrasings (model)", precision["model"]),
        ("category precision@5, 5 most popular", precision["popular"]),
        ("category precision@5, best possible", precision["best"]),
        ("mention precision", mentions["precision"]),
        ("mention recall", mentions["recall"]),
        ("answers with words", turns["answers_with_words"]),
        ("answers stating a fact the catalogue lacks", turns["answers_with_ungrounded_facts"]),
        ("answers making a plain-word claim the catalogue does not support", turns["answers_with_unsupported_claims"]),
        ("answers in the LM's own words", turns["answers_in_lm_words"]),
        ("seconds per chat turn (mean)", turns["seconds_per_turn"]),
        ("recall@10, natural-language prompt", recall["recall_prompt"]),
        ("recall@10, ID stream of the same named items", recall["recall_id_stream_same_items"]),
        ("recall@10, ID stream of the whole history", recall["recall_id_stream"]),
        ("recall@10, most popular", recall["recall_most_popular"]),
    ]
    print(markdown_table(["measure", "value"], [[name, f"{value:.3f}"] for name, value in rows]))
    print(f"\n{precision['n_requests']} requests, {mentions['mentions']} labelled mentions, {len(turns['transcript'])} "
          f"chat turns, {recall['n_users']} test users; {time.time() - start:.0f} s")
    result = {"model": args.model, "transition_prior_weight": pipe.recommender.transition_prior_weight(),
              "machine": machine_description(), "category_precision": precision,
              "mentions": mentions, "chat": turns, "prompt_recall": recall, "table": dict(rows)}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    (arguments,) = parse_config_and_args([ChatBenchArguments])
    main(arguments)
