"""Count a saved recommender's prior again and choose its weights on valid users, as ``sid4llm finetune
--transition_prior`` does after training, into a copy of the model: a decoding change measured on a trained model
without training it again (before: the model as saved; after: the copy, both through ``sid4llm evaluate``).

    python scripts/refit_prior.py --model outputs/qs_d/model --data_dir outputs/qs_d/data \
        --output_dir outputs/qs_d_cooc --transition_prior_cooccurrence 0.1 0.2 0.35 0.5 0.75 1.0 1.5 2.0
    sid4llm evaluate --model outputs/qs_d_cooc --data_dir outputs/qs_d/data --k 10

The weights tried are the ones the model's own were chosen from (``--transition_prior_weights`` to change them).
Prints what was chosen and writes it to the copy's ``results.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.decoding.transition_prior import PRIOR_DIR
from sid4llm.lm.recommender import SidRecommender
from sid4llm.training.config import SidTrainingConfig
from sid4llm.training.finetuning import transition_prior_for


@dataclass
class RefitPriorArguments:
    model: str = field(metadata={"help": "A saved recommender folder (left as it is)."})
    data_dir: str = field(metadata={"help": "Its prepared data folder."})
    output_dir: str = field(metadata={"help": "Where the copy with the new prior is written (replaced if present)."})
    transition_prior_cooccurrence: list[float] = field(default_factory=lambda: [0.0], metadata={
        "help": "Co-occurrence weights tried ([0]: transitions only)."})
    transition_prior_weights: list[float] | None = field(default=None, metadata={
        "help": "Prior weights tried (default: those the model's own weight was chosen from)."})
    transition_prior_candidates: int = field(default=20, metadata={
        "help": "The prior's own best items scored beside the beam's (0: the beam's only)."})
    transition_prior_users: int = field(default=1000, metadata={"help": "Seeded valid users the weights are chosen on."})
    cooccurrence_l2: float = field(default=200.0)
    cooccurrence_keep: int = field(default=500)
    seed: int = field(default=0)


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_config_and_args([RefitPriorArguments], argv)
    source, out = Path(args.model), Path(args.output_dir)
    if out.resolve() == source.resolve():
        raise SystemExit(f"--output_dir {out} is the model itself: the copy must go elsewhere")
    weights = args.transition_prior_weights
    if weights is None:
        fitted = json.loads((source / "results.json").read_text()).get("transition_prior", {})
        weights = [float(w) for w in fitted.get("valid_recall@10_by_weight", {}) if float(w)] or [0.1, 0.3, 0.5, 1.0]
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    recommender = SidRecommender.from_pretrained(out)
    training = SidTrainingConfig(output_dir=str(out), report_to="none", seed=args.seed, transition_prior=True,
                                 transition_prior_users=args.transition_prior_users,
                                 transition_prior_weights=weights,
                                 transition_prior_cooccurrence=args.transition_prior_cooccurrence,
                                 transition_prior_candidates=args.transition_prior_candidates,
                                 cooccurrence_l2=args.cooccurrence_l2, cooccurrence_keep=args.cooccurrence_keep)
    prior, summary = transition_prior_for(recommender, PreparedData.load(args.data_dir), training)
    recommender.transition_prior, recommender.results["transition_prior"] = prior, summary
    recommender.config.decoding.transition_prior_weight = prior.weight
    recommender.save_description(out)
    prior.save_pretrained(out / PRIOR_DIR)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
