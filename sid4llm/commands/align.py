"""The preference stage: a trained recommender learns from its own ranked lists with trl's DPO.

    sid4llm align --config align/dpo --model outputs/rec/from_scratch --output_dir outputs/rec/aligned
    accelerate launch recipes/align.py --config align/dpo --model ... --output_dir ...

Pairs come from the model's trie-constrained beam on train histories (the next item chosen, its own top wrong
items rejected); every ``DPOConfig`` flag works (``--beta``, ``--loss_type``, ``--learning_rate``, ...) beside
sid4llm's validation and time budget. Writes the same artefact as ``finetune``; valid users decide which state
is kept, so a stage that does not help saves the model it started from.
"""

from __future__ import annotations

from ..cli import run_command
from ..lm.recommender import SidRecommender
from ..training.preference import PreferenceArguments, SidPreferenceConfig, run_align

ARGUMENTS = (PreferenceArguments, SidPreferenceConfig)


def main(pref_args: PreferenceArguments, training_args: SidPreferenceConfig) -> SidRecommender:
    recommender = run_align(pref_args, training_args)
    stage = recommender.results["preference"]
    validation = stage.get("validation", {})
    print({"pairs": stage["pairs"]["pairs"], "train_loss": stage["train"].get("train_loss"),
           "kept_step": (validation.get("best") or {}).get("step")})
    print(f"saved to {training_args.output_dir}")
    return recommender


def run(argv: list[str] | None = None) -> SidRecommender:
    return run_command(main, ARGUMENTS, argv)
