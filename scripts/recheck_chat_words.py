"""Re-score the answers of a saved chat benchmark (``scripts/bench_chat.py --json``) with today's checks of words
against the catalogue: what an older transcript would have counted as ungrounded facts and unsupported claims.

    python scripts/recheck_chat_words.py --bench_json docs/experiments/chat/prior_on_requests.json \
        --model outputs/qs_d/model --json outputs/recheck.json

The listed items are read back from each answer's "Recommended for you" list (titles as the model's codebook spells
them); their categories and the catalogue's profile come from ``--model``. Prints a table and writes JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sid4llm.chat.benchmark import answer_words, unsupported_in_answer
from sid4llm.chat.conversation import LIST_HEADING
from sid4llm.cli import parse_config_and_args
from sid4llm.pipeline import RecommendationPipeline
from sid4llm.reporting import markdown_table, write_json


@dataclass
class RecheckArguments:
    bench_json: str = field(metadata={"help": "A bench_chat.py JSON whose chat transcript is re-scored."})
    model: str = field(metadata={"help": "The recommender folder the transcript came from (profile, titles, categories)."})
    json: str | None = field(default=None, metadata={"help": "Write the re-scored transcript here."})


def listed_titles(content: str) -> list[str]:
    """The titles of an answer's numbered list, in order."""
    listing = content.split(LIST_HEADING, 1)[1] if LIST_HEADING in content else ""
    return [re.sub(r"^\d+\.\s*", "", line).strip() for line in listing.strip().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_config_and_args([RecheckArguments], argv)
    pipe = RecommendationPipeline.from_pretrained(args.model)
    index = {title: i for i, title in enumerate(pipe.codebook.titles)}
    categories = pipe.recommender.item_categories
    transcript = json.loads(open(args.bench_json).read())["chat"]["transcript"]
    rows, answers = [], []
    for turn in transcript:
        titles = listed_titles(turn["answer"])
        unknown = [t for t in titles if t not in index]
        if unknown:
            raise SystemExit(f"{args.bench_json}: answer to {turn['request']!r} lists {unknown}, not titles of {args.model}")
        cats = [categories[index[t]] if categories else [] for t in titles]
        facts, claims = unsupported_in_answer(answer_words(turn["answer"]), turn["request"], titles, cats, pipe.profile)
        answers.append({**turn, "ungrounded": facts, "unsupported_claims": claims})
        rows.append([turn["request"], ", ".join(facts) or "-", ", ".join(claims) or "-"])
    n = len(answers)
    result = {"bench_json": args.bench_json, "model": args.model,
              "answers_with_ungrounded_facts": sum(bool(a["ungrounded"]) for a in answers) / n if n else None,
              "answers_with_unsupported_claims": sum(bool(a["unsupported_claims"]) for a in answers) / n if n else None,
              "transcript": answers}
    print(markdown_table(["request", "ungrounded facts", "unsupported claims"], rows))
    print(f"\nanswers with ungrounded facts {result['answers_with_ungrounded_facts']:.3f}, "
          f"with unsupported claims {result['answers_with_unsupported_claims']:.3f} ({n} answers)")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
