"""Evaluate a trained recommender on the leave-one-out valid or test split (constrained beam search).

    sid4llm evaluate --model outputs/rec/smollm2 --data_dir data/ml-1m --split test --output metrics.json
    accelerate launch recipes/evaluate.py --model ... --data_dir ...      # users split across processes

Prints a table (model vs the most-popular floor) and writes all metrics as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from ..cli import run_command
from ..data import PreparedData
from ..evaluation import evaluate_recommender, format_table
from ..lm.recommender import SidRecommender


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Output folder of sid4llm finetune, or a Hub id."})
    data_dir: str = field(metadata={"help": "The prepared dataset the model was trained on."})
    split: Literal["valid", "test"] = field(default="test", metadata={"help": "The held-out split to score."})
    output: str | None = field(default=None, metadata={"help": "Write metrics here as JSON."})
    k: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam width (default: the saved generation config's, "
                                                                   "at least the largest K)."})
    batch_size: int = field(default=16, metadata={"help": "Users per batch."})
    max_users: int | None = field(default=None, metadata={"help": "Evaluate a seeded random sample of N users (quick runs)."})
    seed: int = field(default=0, metadata={"help": "Seed of the user sample."})
    exclude_seen: bool = field(default=True, metadata={"help": "Leave each user's history items out of its list "
                                                                "(model and most-popular alike), as the field does."})
    report_with_seen: bool = field(default=True, metadata={"help": "Also decode with history items allowed and report "
                                                                    "model_with_seen / most_popular_with_seen."})
    style: Literal["ids", "titles"] = field(default="ids", metadata={"help": "Prompt: ids (the history as an ID stream) or titles (the "
                                                        "natural-language prompt chat uses; needs the natural_language task)."})
    invalid_rate_users: int = field(default=64, metadata={"help": "Users for the unconstrained invalid-ID rate (0 = skip)."})
    transition_prior_weight: float | None = field(default=None, metadata={
        "help": "Weight of the saved transition prior in re-ranking (default: the one chosen at training; 0: the "
                "model alone)."})
    transition_prior_candidates: int | None = field(default=None, metadata={
        "help": "The prior's own best items scored beside the beam's before re-ranking (default: the number chosen "
                "at training; 0: the beam's only)."})


def main(args: EvaluateArguments) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator()
    recommender = SidRecommender.from_pretrained(args.model, device=accelerator.device)
    if args.transition_prior_candidates is not None and recommender.transition_prior is not None:
        recommender.transition_prior.config.candidates = args.transition_prior_candidates
    data = PreparedData.load(args.data_dir)
    ks = list(args.k)
    result = evaluate_recommender(recommender, data, args.split, ks, args.num_beams, args.batch_size,
                                  args.max_users, args.invalid_rate_users, accelerator,
                                  exclude_seen=args.exclude_seen, report_with_seen=args.report_with_seen, seed=args.seed,
                                  style=args.style, prior_weight=args.transition_prior_weight)
    if accelerator.is_main_process:
        print(format_table(result, ks))
        if args.output:
            with open(args.output, "w") as f:
                json.dump(result, f, indent=2)
            print(f"metrics written to {args.output}")


ARGUMENTS = (EvaluateArguments,)


def run(argv: list[str] | None = None) -> None:
    run_command(main, ARGUMENTS, argv, log_level=20)
