"""A recall-against-minutes curve whose points are whole runs, each scored as it was saved.

``recall_vs_time.py`` evaluates one run's training weights at set minutes (quick, but it understates what a run
under that budget saves: no weight average, no transition prior, its own beam width). This script instead takes
runs trained under different budgets (``--max_train_minutes``), each with the test metrics of its saved model
(``sid4llm evaluate --output``), and writes them as one curve that ``recall_vs_time.py --merge`` plots beside the
others:

    python scripts/budget_points.py --label "shipped recipe, saved model" --dataset ml-1m \\
        --runs outputs/rec/ml-1m-10min/results.json outputs/rec/ml-1m/results.json \\
        --tests ml-1m_test_10min.json ml-1m_test.json --json outputs/curves/ml-1m-budgets.json

A point's minutes are the run's training time (``results.json`` → ``metrics.train_runtime``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def budget_point(run_file: Path, test_file: Path) -> dict:
    """One point: the run's training minutes and its saved model's test metrics."""
    run, test = json.loads(run_file.read_text()), json.loads(test_file.read_text())
    try:
        seconds, model, floor = run["metrics"]["train_runtime"], test["model"], test["most_popular"]
    except KeyError as err:
        raise SystemExit(f"{run_file} / {test_file}: field {err} missing (a finetune results.json and a "
                         "sid4llm evaluate --output file are expected)") from None
    return {"minutes": round(seconds / 60, 2), "step": run.get("validation", {}).get("best", {}).get("step"),
            "recall@10": model["recall@10"], "ndcg@10": model["ndcg@10"], "coverage@10": model["coverage@10"],
            "most_popular_recall@10": floor["recall@10"], "users": model["n_users"],
            "transition_prior_weight": test.get("transition_prior_weight")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finetune results.json files")
    parser.add_argument("--tests", nargs="+", type=Path, required=True, help="their sid4llm evaluate --output files")
    parser.add_argument("--label", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--json", type=Path, required=True, help="where the curve goes")
    args = parser.parse_args(argv)
    if len(args.runs) != len(args.tests):
        parser.error(f"--runs has {len(args.runs)} files and --tests {len(args.tests)}: one test file per run")
    points = sorted((budget_point(r, t) for r, t in zip(args.runs, args.tests)), key=lambda p: p["minutes"])
    curve = {"label": args.label, "dataset": args.dataset, "points": points,
             "most_popular_recall@10": points[0]["most_popular_recall@10"], "users": points[0]["users"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(curve, indent=2))
    print("| minutes | step kept | recall@10 | coverage@10 | prior weight |\n|---|---|---|---|---|")
    for p in points:
        print(f"| {p['minutes']} | {p['step']} | {p['recall@10']:.4f} | {p['coverage@10']:.3f} | "
              f"{p['transition_prior_weight']} |")
    return curve


if __name__ == "__main__":
    main()
