"""Recall@10 against training time: one fine-tuning run, evaluated on the test split at set marks of training
time (the evaluations themselves are not counted), beside the most-popular floor on the same users.

    python scripts/recall_vs_time.py --config sid4llm/configs/finetune/from_scratch.yaml \
        --data_dir data/ml-1m --codebook outputs/ids/varlen --output_dir outputs/curves/from_scratch \
        --at_minutes 1 2 4 8 --max_steps 1000 --curve_users 500 --label "from scratch"
    python scripts/recall_vs_time.py --json docs/recall_vs_time.json --plot docs/recall_vs_time.png \
        --merge outputs/curves/from_scratch/curve.json outputs/curves/smollm2/curve.json     # one plot of runs

Takes every flag of recipes/finetune.py but ``max_train_minutes`` (off here: the marks are the minutes). The run
keeps its own schedule (``max_steps`` or epochs), so a point
at minute 4 of a 10-minute cosine run is what that run had learned by then, not what a 4-minute run would
reach (which ends at a lower learning rate and is usually a little better). Writes OUT/curve.json (points:
minutes of training, steps, recall@10, coverage@10, and the floor) and prints the table.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from sid4llm.cli import parse_config_and_args, user_errors
from sid4llm.data import PreparedData
from sid4llm.evaluation import evaluate_recommender
from sid4llm.lm.models import ModelArguments
from sid4llm.lm.recommender import SidRecommender
from sid4llm.lm.recommender_config import recommendation_generation_config
from sid4llm.lm.tasks import TaskArguments
from sid4llm.reporting import machine_description, markdown_table, write_json
from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune
from sid4llm.training.finetuning import build_vocab, load_codebook, recommender_config, training_record


@dataclass
class CurveArguments:
    at_minutes: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0], metadata={"help": "Training minutes at which to evaluate (the run's "
                                                                  "end is always a point too)."})
    curve_users: int = field(default=500, metadata={"help": "Test users per point (a seeded random sample)."})
    curve_beams: int = field(default=20, metadata={"help": "Beam width of the evaluations."})
    label: str | None = field(default=None, metadata={"help": "Name of this run in the table and plot."})
    stop_after_last_mark: bool = field(default=True, metadata={"help": "End the run at the last mark."})
    merge: list[str] | None = field(default=None, metadata={"help": "curve.json files (or merged files): plot "
                                                             "them together (no training)."})
    json: str | None = field(default=None, metadata={"help": "With --merge: write the merged curves here."})
    plot: str | None = field(default=None, metadata={"help": "With --merge: the plot (PNG)."})


class RecallClock(TrainerCallback):
    """Evaluates the model being trained whenever its training time passes the next mark; the time spent
    evaluating is taken off the clock."""

    def __init__(self, marks_minutes: list[float], evaluate, stop_after_last: bool):
        self.marks, self.evaluate, self.stop_after_last = sorted(marks_minutes), evaluate, stop_after_last
        self.points: list[dict] = []
        self._start = self._paused = 0.0

    def training_minutes(self) -> float:
        return (time.perf_counter() - self._start - self._paused) / 60

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._paused = time.perf_counter(), 0.0

    def _point(self, state, model) -> None:
        minutes = self.training_minutes()
        paused_at = time.perf_counter()
        was_training = model.training
        result = self.evaluate(model)
        model.train(was_training)
        self._paused += time.perf_counter() - paused_at
        self.points.append({"minutes": round(minutes, 2), "step": state.global_step, **result})
        print(f"[curve] {minutes:6.2f} min  step {state.global_step:5d}  recall@10 {result['recall@10']:.4f}  "
              f"coverage@10 {result['coverage@10']:.3f}  (floor {result['most_popular_recall@10']:.4f})", flush=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.marks and self.training_minutes() >= self.marks[0]:
            while self.marks and self.training_minutes() >= self.marks[0]:
                self.marks.pop(0)
            self._point(state, model)
            if not self.marks and self.stop_after_last:
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.points or self.points[-1]["step"] != state.global_step:
            self._point(state, model)


def run_curve(model_args, data_args, task_args, training_args, curve: CurveArguments) -> dict:
    data = PreparedData.load(data_args.data_dir)
    vocab = build_vocab(model_args, load_codebook(data_args.codebook), task_args.text_tasks)  # the run's token ids
    config = recommender_config(model_args, task_args, training_args, data,
                                training_record(model_args, task_args, training_args), len(vocab.codebook))

    def evaluate(model) -> dict:
        recommender = SidRecommender(model, vocab, recommendation_generation_config(vocab, curve.curve_beams), config)
        ev = evaluate_recommender(recommender, data, "test", (10,), num_beams=curve.curve_beams,
                                  max_users=curve.curve_users, invalid_rate_users=0, show_progress=False)
        return {"recall@10": ev["model"]["recall@10"], "ndcg@10": ev["model"]["ndcg@10"],
                "coverage@10": ev["model"]["coverage@10"], "most_popular_recall@10": ev["most_popular"]["recall@10"]}

    clock = RecallClock(list(curve.at_minutes), evaluate,
                        curve.stop_after_last_mark)
    if training_args.max_train_minutes > 0:  # its clock would count the curve's own evaluations as training time
        logging.getLogger(__name__).warning("max_train_minutes=%g is off for a curve: the marks set the minutes",
                                            training_args.max_train_minutes)
        training_args.max_train_minutes = 0.0
    start = time.time()
    run_finetune(model_args, data_args, task_args, training_args, callbacks=[clock])
    label = curve.label or Path(training_args.output_dir).name
    floor = clock.points[-1]["most_popular_recall@10"] if clock.points else None
    dataset = data.stats.get("source") or Path(data_args.data_dir).name
    users = min(curve.curve_users, data.stats.get("n_users", curve.curve_users))  # a small dataset has fewer
    result = {"label": label, "dataset": dataset, "points": clock.points, "most_popular_recall@10": floor,
              "minutes_to_floor": first_minutes(clock.points, floor), "minutes_to_2x_floor": first_minutes(
                  clock.points, 2 * floor if floor else None),
              "users": users, "beams": curve.curve_beams, "wall_minutes": round((time.time() - start) / 60, 2),
              "model_args": asdict(model_args), "task_args": asdict(task_args),
              "learning_rate": training_args.learning_rate, "batch_size": training_args.per_device_train_batch_size,
              "max_steps": training_args.max_steps, "machine": machine_description()}
    write_json(Path(training_args.output_dir) / "curve.json", result)
    print_table([result])
    return result


def first_minutes(points: list[dict], level: float | None) -> float | None:
    """Training minutes of the first point above ``level`` (None: never, within the run)."""
    return next((p["minutes"] for p in points if level is not None and p["recall@10"] > level), None)


def print_table(curves: list[dict]) -> None:
    print(markdown_table(["run", "minutes", "step", "recall@10", "coverage@10", "most popular"],
                         [[c["label"], f"{p['minutes']:.1f}", p["step"], f"{p['recall@10']:.4f}", f"{p['coverage@10']:.3f}",
                           f"{p['most_popular_recall@10']:.4f}"] for c in curves for p in c["points"]]))


def read_curves(path: str) -> list[dict]:
    """The curves in one file: a run's ``curve.json``, or a merged file (``{"curves": [...]}``) to add runs to."""
    data = json.loads(Path(path).read_text())
    curves = data["curves"] if isinstance(data, dict) and "curves" in data else [data]
    for c in curves:
        if not isinstance(c, dict) or not {"label", "points", "most_popular_recall@10"} <= set(c):
            raise ValueError(f"{path}: not a curve written by scripts/recall_vs_time.py (needs label, points, "
                             "most_popular_recall@10)")
    return curves


def merge_curves(curve: CurveArguments) -> list[dict]:
    curves = [c for f in curve.merge for c in read_curves(f)]
    print_table(curves)
    if curve.json:
        write_json(curve.json, {"curves": curves})
    if curve.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for c in curves:
            ax.plot([p["minutes"] for p in c["points"]], [p["recall@10"] for p in c["points"]], marker="o", label=c["label"])
        floor = curves[0]["most_popular_recall@10"]
        ax.axhline(floor, color="grey", linestyle="--", label=f"most popular ({floor:.3f})")
        ax.axhline(2 * floor, color="grey", linestyle=":", label="2 × most popular")
        ax.set_xlabel("training minutes (2 CPU cores)")
        ax.set_ylabel(f"recall@10, seen items left out ({curves[0]['users']} test users)")
        datasets = sorted({str(c.get("dataset", "ml-1m")) for c in curves})  # older curves: the default dataset
        ax.set_title(f"{', '.join(datasets)}: recall@10 against training time")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(curve.plot, dpi=120)
    return curves


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    with user_errors():
        if "--merge" in sys.argv:  # plotting saved curves needs no data, codebook or training flags
            (curve_args,) = parse_config_and_args([CurveArguments])
            merge_curves(curve_args)
        else:
            model_args, data_args, task_args, training_args, curve_args = parse_config_and_args(
                [ModelArguments, SidDataArguments, TaskArguments, SidTrainingConfig, CurveArguments])
            run_curve(model_args, data_args, task_args, training_args, curve_args)
