"""Check the three claims of "Variable-Length Semantic IDs for Recommender Systems" (arXiv 2602.16375) with
this code, on any prepared dataset, and measure what the paper did not: cold-start items.

    sid4llm reproduce-paper --data_dir data/ml-1m --output_dir outputs/paper --seeds 0 \
        --id_methods varlen fixed rqkmeans --rec_sets varlen fixed        # the 2-core CPU run in docs/
    sid4llm reproduce-paper --data_dir data/ml-1m --output_dir outputs/paper    # the whole protocol, 3 seeds

Protocol (every method gets the same effort: its shipped config from sid4llm/configs/ids/, untuned here; seeds
fixed; every method scored on the same test users — all of them by default):
1. IDs by each method of ``--id_methods`` — varlen dVAE at each length cost, fixed-length dVAE, RQ-KMeans,
   REINFORCE — on each seed (REINFORCE on the first only, unless ``--later_seed_methods`` names it):
   reconstruction, length, codebook usage/perplexity, Spearman(length, popularity).
2. For each ID set, the same small decoder-only transformer trained from scratch (sid4llm/configs/finetune/
   from_scratch.yaml) with the same history **token** budget and seed for ``--rec_epochs`` epochs of its own
   streams, then the same constrained evaluation on the test split; varlen vs fixed repeated at every budget of
   ``--budgets`` (first seed). Claim 2 is decided by a paired bootstrap over the users
   (:mod:`sid4llm.evaluation.paired`): varlen − fixed recall@10 and coverage@10 with 95 % intervals.
3. REINFORCE vs dVAE: reconstruction and usage (from step 1) and their training curves.
4. The setting the paper did not try: SmolLM2-135M-Instruct (``--llm_config``) on varlen vs fixed IDs, same
   budget (``--llm_steps``; off by default).
5. Cold-start items (``--cold_start_fraction``; :mod:`sid4llm.commands.cold_start`): held out of training,
   added back from their text, scored on the users whose target they are.

Writes OUT/results.json, OUT/results.md, OUT/length_vs_popularity.png, OUT/recall_vs_budget.png,
OUT/training_curves.png, OUT/cold_start/, and every run under OUT/runs/ (a finished run is skipped when the
command is re-run).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..cli import run_command
from ..commands import finetune, train_ids
from ..data import PreparedData
from ..evaluation import evaluate_recommender
from ..lm.tasks import budget_history
from ..metrics import sample_users
from ..reporting import machine_description, markdown_table, write_json
from . import cold_start
from .comparison import SharedMethodSettings
from .paired import interval_verdict, paired_bootstrap

IDS_CONFIGS = train_ids.SHIPPED_ID_CONFIGS
# The paper's Yambda numbers for claim 2 (its Table 2): recall@10, coverage@10 (distinct items), mean ID length.
PAPER_CLAIM2 = {"varlen": {"recall@10": 0.0466, "distinct_items@10": 20322, "mean_recommended_id_length@10": 2.86},
                "fixed": {"recall@10": 0.0418, "distinct_items@10": 14286, "mean_recommended_id_length@10": 6},
                "rqkmeans": {"recall@10": 0.0413}}
PAPER_CLAIM1 = "Amazon Toys: mean length 4.64 per interaction vs 4.98 per item; codebook usage ≈ 1.0"


@dataclass
class ReproduceArguments(SharedMethodSettings):
    data_dir: str = field(metadata={"help": "A prepared dataset (sid4llm prepare-data)."})
    output_dir: str = field(metadata={"help": "Where runs, results and plots go."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds; every ID method and main-budget recommender runs on each (--seeds 0 for a 2-core CPU run of about 1.5 h)."})
    id_methods: list[str] = field(default_factory=lambda: ["varlen", "fixed", "rqkmeans", "reinforce"], metadata={"help": "ID methods trained on the first seed (reinforce only feeds claim 3)."})
    later_seed_methods: list[str] = field(default_factory=lambda: ["varlen", "fixed", "rqkmeans"], metadata={"help": "ID methods trained again on the seeds after the first (the first seed trains all of them)."})
    rec_seeds: list[int] | None = field(default=None, metadata={"help": "Seeds of the main-budget recommenders if not --seeds; a seed without IDs of its own uses the first seed's IDs (recommender noise only)."})
    length_costs: list[float] = field(default_factory=lambda: [4.0], metadata={"help": "Length costs c for the varlen dVAE (one ID set each)."})
    main_length_cost: float = field(default=4.0, metadata={"help": "The varlen setting used for the recommenders and the LLM."})
    id_steps: int = field(default=2000, metadata={"help": "Training steps (a batch of its config's events each) for every learned ID method."})
    rec_config: str = field(default="finetune/from_scratch.yaml", metadata={"help": "From-scratch recommender config."})
    rec_epochs: float = field(default=1.0, metadata={"help": "Epochs of its own ID streams for every from-scratch recommender (each training target seen as often, whatever its IDs' length); the config's min_steps floor is off so that the runs compare."})
    rec_steps: int | None = field(default=None, metadata={"help": "Instead of --rec_epochs: this many steps at the main budget, scaled at the other budgets so that every run reads the same tokens."})
    budget: int = field(default=128, metadata={"help": "History token budget of the main comparison."})
    budgets: list[int] = field(default_factory=lambda: [32, 64, 128], metadata={"help": "Budgets for the varlen-vs-fixed sweep (first seed; the main budget on every recommender seed)."})
    eval_users: int = field(default=0, metadata={"help": "Test users evaluated (0 = all, the default: the paired intervals need them; else a seeded random sample, the same users for every method)."})
    num_beams: int = field(default=20, metadata={"help": "Beam width of the constrained evaluation."})
    bootstrap_resamples: int = field(default=2000, metadata={"help": "Bootstrap draws of the users for the paired varlen-vs-fixed intervals."})
    id_vocab_size: int | None = field(default=None, metadata={"help": "Override every ID config's codebook size V (small catalogues)."})
    fixed_max_length: int | None = field(default=None, metadata={"help": "Codes per fixed-length ID (unset: its config's 4; the paper's Yambda IDs have 5 + a dedup token)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Override the LM (its tokenizer for the from-scratch runs)."})
    rec_sets: list[str] = field(default_factory=lambda: ["varlen", "fixed", "rqkmeans"], metadata={"help": "ID sets that get a recommender at the main budget (varlen = the main varlen setting; the other length costs always do)."})
    llm_config: str = field(default="finetune/quickstart.yaml", metadata={"help": "SmolLM2 config for part 4 (the quickstart's: its first layer, fully fine-tuned)."})
    llm_steps: int = field(default=0, metadata={"help": "Fine-tuning steps per ID set for the SmolLM2 comparison (0 = skip it, the default on 2 CPU cores)."})
    llm_eval_users: int = field(default=500, metadata={"help": "Test users for the SmolLM2 comparison."})
    cold_start_fraction: float = field(default=0.1, metadata={"help": "Part 5, cold start (sid4llm cold-start): share of the items held out of training and added back from their text, for the varlen/fixed/RQ-KMeans recommenders at the main budget (0 = skip)."})


KS = (1, 5, 10, 20)
RANKINGS_FILE = "rankings.json"  # a run's per-user lists (users, targets, top-20), for the paired intervals


def id_runs(args: ReproduceArguments) -> list[tuple[str, str, dict]]:
    """(name, config, overrides) for every ID method; the varlen dVAE once per length cost. The dVAE's τ/β
    schedules span the first half of the steps (its config's anneal_fraction), whatever their number. A
    collapsed codebook is a result here (REINFORCE's), so it is kept."""
    common = {"vocab_size": args.id_vocab_size, "allow_collapse": True, "collaborative_weight": args.collaborative_weight}
    methods = set(args.id_methods)
    unknown = sorted(methods - set(IDS_CONFIGS))
    if unknown:
        raise SystemExit(f"error: --id_methods: unknown method(s) {unknown}; choose from {', '.join(IDS_CONFIGS)}")
    runs = [(f"varlen_c{c:g}", IDS_CONFIGS["varlen"], {"length_cost": c, **common}) for c in args.length_costs
            if "varlen" in methods]
    fixed = {"max_length": args.fixed_max_length} if args.fixed_max_length else {}
    return runs + [(m, IDS_CONFIGS[m], {**common, **(fixed if m == "fixed" else {})})
                   for m in ("fixed", "rqkmeans", "reinforce") if m in methods]


def config_name(value: str) -> str:
    """A config by its shipped name, however it was given: ``finetune/from_scratch`` for
    ``sid4llm/configs/finetune/from_scratch.yaml`` (and for the path it had before it moved into the package)."""
    return str(value).replace("\\", "/").split("configs/", 1)[-1].removesuffix(".yaml")


def same_protocol(saved: dict, current: dict) -> bool:
    """Settings agree except for the seed lists (every run's folder names its seed, so adding seeds to a
    finished reproduction reuses its runs); configs compare by name and folders by where they are, not by how
    the path was spelled."""
    ignore = ("seeds", "rec_seeds", "later_seed_methods")

    def setting(key: str, value):
        if key.endswith("_config") and value:
            return config_name(value)
        return str(Path(value).resolve()) if key.endswith("_dir") and value else value

    def settings(args: dict) -> dict:
        return {k: setting(k, v) for k, v in args.items() if k not in ignore}

    return settings(saved) == settings(current)


def history_usage(data: PreparedData, recommender, budget: int, users: int | None) -> dict:
    """What the token budget actually buys on the evaluated test histories: tokens and items used."""
    vocab, args = recommender.vocab, recommender.prompt_builder.args
    all_histories = list(data.sequences["test"]["history"])
    histories = [all_histories[u] for u in sample_users(len(all_histories), users)]  # the users evaluated
    kept = [budget_history(h, vocab, budget, args.max_history_items) for h in histories]
    tokens = [len(vocab.stream_token_ids(k)) for k in kept]
    return {"history_tokens_used": float(np.mean(tokens)), "history_items_used": float(np.mean([len(k) for k in kept]))}


def run_recommender(args, data, name: str, codebook_dir: Path, out: Path, config: str, steps: int | None,
                    budget: int, seed: int, eval_users: int | None, **overrides) -> dict:
    """One recommender trained and evaluated (reused when ``out`` holds its result): ``steps`` optimizer steps,
    or ``--rec_epochs`` epochs of its own streams when None. Its per-user lists go to ``rankings.json`` for the
    paired comparisons."""
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    start = time.time()
    length = {"max_steps": steps} if steps else {"max_steps": -1, "num_train_epochs": args.rec_epochs, "min_steps": 0,
                                                  "valid_users": 0}
    # The budget alone limits the history (the configs set no max_history_items), as in the paper. The ID forms are
    # compared by what the model does with them: no transition count re-ranks its beam.
    rec = finetune.trained_or_train(
        config, data_dir=args.data_dir, codebook=codebook_dir, output_dir=out, seed=seed,
        example_seed=seed, history_token_budget=budget, save_steps=10**6, eval_examples=0, transition_prior=False,
        model_name_or_path=args.model_name_or_path, **args.recommender_settings(), **length, **overrides)
    train_seconds = time.time() - start
    ev = evaluate_recommender(rec, data, "test", KS, num_beams=args.num_beams, max_users=eval_users,
                              invalid_rate_users=32, return_rankings=True)
    plan = rec.results.get("training_plan") or {}
    result = {"name": name, "seed": seed, "budget": budget, "steps": plan.get("steps", steps),
              "epochs": plan.get("epochs"), **ev["model"], **history_usage(data, rec, budget, eval_users),
              "train_loss": rec.results.get("metrics", {}).get("train_loss"), "train_seconds": round(train_seconds, 1),
              "most_popular_recall@10": ev["most_popular"]["recall@10"], "n_items": len(rec.codebook)}
    write_json(out / RANKINGS_FILE, ev["rankings"])
    write_json(result_file, result)
    for leftover in out.glob("checkpoint-*"):  # keep the final model, drop resumable checkpoints
        shutil.rmtree(leftover, ignore_errors=True)
    return result


def rec_dir(out: Path, name: str, budget: int, seed: int) -> Path:
    return out / "runs" / f"rec_{name}_b{budget}_s{seed}"


def paired_claim2(out: Path, runs: list[dict], first: str, second: str, budget: int, n_items: int,
                  resamples: int) -> dict | None:
    """``first`` − ``second`` at one budget, paired over the same test users and averaged over the recommender
    seeds both have (None when either has no run there)."""
    seeds = sorted({r["seed"] for r in runs if r["name"] == first and r["budget"] == budget}
                   & {r["seed"] for r in runs if r["name"] == second and r["budget"] == budget})
    if not seeds:
        return None
    loaded = {n: [json.loads((rec_dir(out, n, budget, s) / RANKINGS_FILE).read_text()) for s in seeds]
              for n in (first, second)}
    targets = loaded[first][0]["targets"]
    if any(x["users"] != loaded[first][0]["users"] for runs_ in loaded.values() for x in runs_):
        raise SystemExit(f"error: the {first} and {second} runs at budget {budget} were scored on different users")
    result = paired_bootstrap([x["model"] for x in loaded[first]], [x["model"] for x in loaded[second]], targets,
                              n_items, k=10, resamples=resamples)
    return {"a": first, "b": second, "budget": budget, "seeds": seeds, **result,
            "verdict_recall": interval_verdict(result["recall@10"]),
            "verdict_coverage": interval_verdict(result["coverage@10"])}


def main(args: ReproduceArguments) -> None:
    out = Path(args.output_dir)
    seeds = list(args.seeds)
    eval_users = args.eval_users or None
    main_varlen = f"varlen_c{args.main_length_cost:g}"
    if args.main_length_cost not in args.length_costs:
        raise SystemExit(f"error: --main_length_cost {args.main_length_cost:g} is not in --length_costs {args.length_costs}")
    protocol = out / "protocol.json"  # finished runs are reused only under the same settings
    # a setting added since the runs were made reads as its default
    defaults = {f.name: f.default for f in fields(ReproduceArguments) if f.default is not MISSING}
    if protocol.is_file() and not same_protocol({**defaults, **json.loads(protocol.read_text())}, asdict(args)):
        raise SystemExit(f"error: {out} holds runs made with other settings ({protocol}); use a new --output_dir")
    data = PreparedData.load(args.data_dir)
    write_json(protocol, asdict(args))
    start = time.time()
    timings: dict[str, float] = {}

    # 1 + 3: IDs by every method on every seed
    ids: dict[str, dict] = {}
    t = time.time()
    later_methods = set(args.later_seed_methods)
    for seed in seeds:
        for name, config, overrides in id_runs(args):
            if seed != seeds[0] and name.split("_c")[0] not in later_methods:
                continue
            print(f"== IDs: {name}, seed {seed}", flush=True)
            codebook = train_ids.trained_or_train(
                config, data_dir=args.data_dir, output_dir=out / "runs" / f"ids_{name}_s{seed}", seed=seed,
                max_steps=args.id_steps, **overrides)
            ids[f"{name}_s{seed}"] = {"method": name, "seed": seed, **_id_summary(codebook.metrics)}
    timings["ids"] = time.time() - t

    # 2: the same from-scratch recommender on each ID set, same budget/steps/seed
    recs: list[dict] = []
    t = time.time()
    chosen = list(args.rec_sets)
    unknown = sorted(set(chosen) - {"varlen", "fixed", "rqkmeans", "reinforce"})
    if unknown:
        raise SystemExit(f"error: --rec_sets: unknown ID set(s) {unknown}; choose from varlen, fixed, rqkmeans, reinforce")
    rec_sets = [main_varlen if n == "varlen" else n for n in chosen] + [
        n for n, _, _ in id_runs(args) if n.startswith("varlen") and n != main_varlen]
    rec_sets = [n for n in rec_sets if f"{n}_s{seeds[0]}" in ids]  # only the ID methods trained here
    rec_seeds = list(args.rec_seeds) if args.rec_seeds else seeds
    for seed in rec_seeds:
        for name in rec_sets:
            id_seed = seed if f"{name}_s{seed}" in ids else seeds[0]  # a seed without IDs of its own uses the first's
            print(f"== recommender on {name} IDs (seed {id_seed}), budget {args.budget}, seed {seed}", flush=True)
            recs.append(run_recommender(args, data, name, out / "runs" / f"ids_{name}_s{id_seed}" / "codebook",
                                        rec_dir(out, name, args.budget, seed), args.rec_config,
                                        args.rec_steps, args.budget, seed, eval_users) | {"id_seed": id_seed})
    sweep: list[dict] = [r for r in recs if r["seed"] == seeds[0] and r["name"] in (main_varlen, "fixed")]
    for budget in [b for b in args.budgets if b != args.budget]:
        # fixed steps: the same tokens as at the main budget; epochs: each run's own streams
        steps = max(1, round(args.rec_steps * args.budget / budget)) if args.rec_steps else None
        for name in (main_varlen, "fixed"):
            if f"{name}_s{seeds[0]}" not in ids:
                continue
            print(f"== budget sweep: {name}, budget {budget}", flush=True)
            sweep.append(run_recommender(args, data, name, out / "runs" / f"ids_{name}_s{seeds[0]}" / "codebook",
                                         rec_dir(out, name, budget, seeds[0]), args.rec_config,
                                         steps, budget, seeds[0], eval_users))
    every_run = recs + [x for x in sweep if x not in recs]
    n_items = len(data.items)
    paired = [p for b in sorted(set(args.budgets) | {args.budget})
              if (p := paired_claim2(out, every_run, main_varlen, "fixed", b, n_items, args.bootstrap_resamples))]
    if "rqkmeans" in rec_sets:
        against_rq = paired_claim2(out, every_run, main_varlen, "rqkmeans", args.budget, n_items, args.bootstrap_resamples)
        paired += [against_rq] if against_rq else []
    timings["recommenders"] = time.time() - t

    # 4: SmolLM2, varlen vs fixed, same budget
    llm: list[dict] = []
    t = time.time()
    if args.llm_steps > 0:
        for name in (main_varlen, "fixed"):
            print(f"== SmolLM2 on {name} IDs", flush=True)
            llm.append(run_recommender(args, data, name, out / "runs" / f"ids_{name}_s{seeds[0]}" / "codebook",
                                       out / "runs" / f"llm_{name}_b{args.budget}_s{seeds[0]}", args.llm_config,
                                       args.llm_steps, args.budget, seeds[0], args.llm_eval_users or None,
                                       tasks=["sequential"]) | {"llm": True})
    timings["llm"] = time.time() - t
    # 5: cold-start items, on the ID methods trained here
    cold: dict | None = None
    t = time.time()
    if args.cold_start_fraction > 0:
        print("== cold start", flush=True)
        cold = cold_start.main(cold_start.ColdStartArguments(
            data_dir=args.data_dir, output_dir=str(out / "cold_start"), fraction=args.cold_start_fraction,
            seed=seeds[0], id_sets=[m for m in ("varlen", "fixed", "rqkmeans") if m in args.id_methods],
            id_steps=args.id_steps, id_vocab_size=args.id_vocab_size, length_cost=args.main_length_cost,
            rec_config=args.rec_config, **args.shared_settings(),
            rec_epochs=args.rec_epochs, budget=args.budget, num_beams=args.num_beams))
    timings["cold_start"] = time.time() - t
    timings["total"] = time.time() - start

    results = {
        "command": "sid4llm reproduce-paper " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in asdict(args).items() if v is not None),
        "machine": machine_description(),
        "dataset": {k: data.stats.get(k) for k in ("source", "n_users", "n_items", "n_interactions", "density")},
        "arguments": asdict(args), "main_varlen": main_varlen, "ids": ids, "recommenders": recs,
        "budget_sweep": sweep, "claim2_paired": paired, "llm": llm, "cold_start": cold, "paper": {"claim1": PAPER_CLAIM1, "claim2_yambda": PAPER_CLAIM2},
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "run_seconds": run_seconds(ids, every_run + llm, cold),
    }
    write_json(out / "results.json", results)
    plots(out, results, seeds[0])
    (out / "results.md").write_text(report(results))
    print((out / "results.md").read_text())


# --------------------------------------------------------------------------------------------- reporting
def run_seconds(ids: dict, runs: list[dict], cold: dict | None = None) -> dict:
    """Time spent inside the runs (training + evaluation), counted from each run's own record, so runs reused
    from an earlier invocation of the command are counted too."""
    id_s = sum(v["train_seconds"] or 0 for v in ids.values())

    def cost(x):
        return x["train_seconds"] + (x["n_users"] / x["users_per_second"] if x.get("users_per_second") else 0)
    scratch = sum(cost(x) for x in runs if not x.get("llm"))
    llm = sum(cost(x) for x in runs if x.get("llm"))
    cold_s = sum(x["train_seconds"] + x["eval_seconds"] for x in (cold or {}).get("recommenders", []))
    return {"ids": round(id_s, 1), "recommenders": round(scratch, 1), "llm": round(llm, 1),
            "cold_start": round(cold_s, 1), "total": round(id_s + scratch + llm + cold_s, 1)}


def _id_summary(m: dict) -> dict:
    keys = ("recon_mse_uniform", "recon_mse_unigram", "mean_length_uniform", "mean_length_unigram", "mean_id_length_uniform",
            "mean_id_length_unigram", "codebook_usage_overall", "codebook_perplexity", "spearman_length_popularity",
            "collision_rate_before_dedup", "median_popularity_by_length", "train_seconds", "history")
    out = {k: m.get(k) for k in keys}
    out["codebook_usage_per_step"] = m.get("codebook_usage")
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "/".join(_fmt(v, 2) for v in value)
    if isinstance(value, float) and np.isnan(value):
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _table(rows: list[list], header: list[str]) -> list[str]:
    return markdown_table(header, [[_fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]).split("\n")


def _mean(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def report(r: dict) -> str:
    seeds = sorted({v["seed"] for v in r["ids"].values()})
    main_varlen = r["main_varlen"]
    lines = ["# Reproducing arXiv 2602.16375 with sid4llm", "",
             f"Dataset: {r['dataset']['source']} — {r['dataset']['n_users']:,} users, {r['dataset']['n_items']:,} items, "
             f"{r['dataset']['n_interactions']:,} interactions. Machine: {r['machine']}. "
             f"Time in the runs (training + evaluation, from each run's record): {r['run_seconds']['total'] / 60:.1f} min "
             f"({', '.join(f'{k} {v / 60:.1f} min' for k, v in r['run_seconds'].items() if k != 'total')}); "
             f"this invocation: {r['timings_seconds']['total'] / 60:.1f} min (finished runs are reused).", "",
             "Command:", "", "```", r["command"], "```", "",
             f"ID seeds {seeds}, recommender seeds {sorted({x['seed'] for x in r['recommenders']})} (a recommender seed "
             "without IDs of its own uses the first seed's IDs); every learned ID method trained "
             f"{r['arguments']['id_steps']} steps (batches of interaction "
             "events) with its shipped config (no per-method tuning); every recommender trained "
             + (f"{r['arguments']['rec_steps']} steps" if r['arguments'].get('rec_steps') else
                f"{r['arguments']['rec_epochs']:g} epoch(s) of its own ID streams")
             + " from scratch with the same config, history budget and seed.", ""]

    lines += ["## Claim 1 — variable-length IDs reconstruct about as well with fewer tokens; popular items get shorter codes", "",
              f"Paper: {r['paper']['claim1']}.", ""]
    header = ["IDs", "seed", "recon (per item)", "recon (per interaction)", "mean length (per item)",
              "mean length (per interaction)", "codebook usage", "perplexity", "Spearman(length, popularity)", "collisions"]
    rows = [[v["method"], v["seed"], v["recon_mse_uniform"], v["recon_mse_unigram"], v["mean_length_uniform"],
             v["mean_length_unigram"], v["codebook_usage_overall"], v["codebook_perplexity"],
             v["spearman_length_popularity"], v["collision_rate_before_dedup"]] for v in r["ids"].values()]
    lines += _table(rows, header) + [""]

    lines += ["## Claim 2 — under a fixed history token budget, variable-length IDs give better recall and coverage", "",
              f"Budget {r['arguments']['budget']} tokens of history (whole most-recent items; in the ID stream an "
              "item costs its ID length + 1 end token). Test split, full catalogue, trie-constrained beam search "
              f"({r['arguments']['num_beams']} beams), {r['recommenders'][0]['n_users']:,} users. Paper (Yambda): "
              "recall@10 0.0466 varlen / 0.0418 fixed / 0.0413 RQ-KMeans; coverage@10 20,322 vs 14,286 items; "
              "mean recommended ID length 2.86 vs 6.", ""]
    header = ["IDs", "IDs seed", "seed", "recall@10", "NDCG@10", "coverage@10", "distinct@10", "head recall@10",
              "tail recall@10", "mean rec. ID length", "history tokens used", "history items used", "train loss"]
    rows = [[x["name"], x.get("id_seed", x["seed"]), x["seed"], x["recall@10"], x["ndcg@10"], x["coverage@10"], x["distinct_items@10"],
             x["head_recall@10"], x["tail_recall@10"], x["mean_recommended_id_length@10"], x["history_tokens_used"],
             x["history_items_used"], x["train_loss"]] for x in r["recommenders"]]
    lines += _table(rows, header)
    mp = r["recommenders"][0]["most_popular_recall@10"]
    lines += ["", f"Most-popular floor: recall@10 {mp:.4f}.", "", "Mean over seeds:", ""]
    names = list(dict.fromkeys(x["name"] for x in r["recommenders"]))
    by_name = {n: [x for x in r["recommenders"] if x["name"] == n] for n in names}
    rows = [[n, "/".join(f"{x['recall@10']:.3f}" for x in by_name[n])] +
            [_mean(by_name[n], k) for k in ("recall@10", "ndcg@10", "coverage@10", "history_items_used",
                                            "mean_recommended_id_length@10")] for n in names]
    lines += _table(rows, ["IDs", "recall@10 per seed", "recall@10", "NDCG@10", "coverage@10", "history items used",
                           "mean rec. ID length"])
    lines += ["", "Budget sweep (first seed): recall@10 (history items used)", ""]
    budgets = sorted({x["budget"] for x in r["budget_sweep"]})
    rows = []
    for n in (main_varlen, "fixed"):
        cells = []
        for b in budgets:
            hit = [x for x in r["budget_sweep"] if x["name"] == n and x["budget"] == b]
            cells.append(f"{hit[0]['recall@10']:.4f} ({hit[0]['history_items_used']:.1f})" if hit else "–")
        rows.append([n] + cells)
    lines += _table(rows, ["IDs"] + [f"budget {b}" for b in budgets]) + ["", "![recall vs budget](recall_vs_budget.png)", ""]
    lines += claim2_section(r) + [""]
    if any(v["method"] == "reinforce" for v in r["ids"].values()):
        lines += ["## Claim 3 — dVAE training is stabler than REINFORCE", "", "Paper: lower reconstruction error "
                  "and higher codebook usage for the dVAE.", ""]
        rows = [[v["method"], v["seed"], v["recon_mse_uniform"], v["codebook_usage_overall"], v["codebook_perplexity"],
                 v["mean_length_uniform"]] for v in r["ids"].values() if v["method"] in (main_varlen, "fixed", "reinforce")]
        lines += _table(rows, ["IDs", "seed", "recon (per item)", "codebook usage", "perplexity", "mean length"])
        lines += ["", "![training curves](training_curves.png)", ""]

    if r["llm"]:
        lines += ["## Beyond the paper — SmolLM2-135M-Instruct + LoRA on varlen vs fixed IDs", "",
                  f"Same history budget ({r['arguments']['budget']} tokens), {r['arguments']['llm_steps']} LoRA steps "
                  f"each (sequential task only), {r['llm'][0]['n_users']:,} test users.", ""]
        rows = [[x["name"], x["recall@10"], x["ndcg@10"], x["coverage@10"], x["mean_recommended_id_length@10"],
                 x["history_items_used"], x["train_loss"], x["train_seconds"]] for x in r["llm"]]
        lines += _table(rows, ["IDs", "recall@10", "NDCG@10", "coverage@10", "mean rec. ID length",
                               "history items used", "train loss", "train s"]) + [""]
    if r.get("cold_start"):
        lines += ["## Beyond the paper — cold-start items", ""] + cold_start.report(r["cold_start"]).split("\n")[2:]
    lines += ["![length vs popularity](length_vs_popularity.png)", ""]
    return "\n".join(lines)


def claim2_section(r: dict) -> list[str]:
    """The paired table (varlen − fixed at every budget, varlen − RQ-KMeans at the main one) and the verdict it
    computes: the claim holds where the recall@10 interval lies above 0, is against the paper where it lies
    below, and is undecided where it holds 0."""
    paired = r.get("claim2_paired") or []
    if not paired:
        return ["Claim 2 verdict: needs the varlen and the fixed-length recommenders at the same budget."]
    runs = r["recommenders"] + [x for x in r["budget_sweep"] if x not in r["recommenders"]]

    def runs_of(name: str, budget: int, seeds: list[int]) -> list[dict]:
        return [x for x in runs if x["name"] == name and x["budget"] == budget and x["seed"] in seeds]

    def interval(x: dict) -> str:
        return f"{x['difference']:+.4f} [{x['low']:+.4f}, {x['high']:+.4f}]"

    first = paired[0]
    lines = [f"Paired comparison on the same {first['users']:,} test users, {first['resamples']:,} bootstrap draws "
             "of the users, 95 % percentile intervals shifted by the bootstrap's bias (recall@10 averaged per user, "
             "and every column, over the recommender seeds both methods have). Tokens per item = ID length + 1 end "
             "token, averaged over the history interactions; items in budget = the whole most-recent items that fit.", ""]
    header = ["budget", "A − B", "seeds", "recall@10 A / B", "Δ recall@10 [95 % CI]", "p", "coverage@10 A / B",
              "Δ coverage@10 [95 % CI]", "tokens/item A / B", "items in budget A / B", "mean rec. ID length A / B",
              "epochs A / B", "verdict (recall)"]
    rows = []
    for p in paired:
        a, b = runs_of(p["a"], p["budget"], p["seeds"]), runs_of(p["b"], p["budget"], p["seeds"])

        def pair(key: str, digits: int = 3, a=a, b=b) -> str:
            return "/".join(_fmt(_mean(x, key), digits) for x in (a, b))

        tokens = "/".join(_fmt(_mean(x, "history_tokens_used") / _mean(x, "history_items_used"), 2) for x in (a, b))
        rows.append([p["budget"], f"{p['a']} − {p['b']}", ",".join(map(str, p["seeds"])), pair("recall@10", 4),
                     interval(p["recall@10"]), f"{p['recall@10']['p_value']:.3f}", pair("coverage@10", 4),
                     interval(p["coverage@10"]), tokens, pair("history_items_used", 1),
                     pair("mean_recommended_id_length@10", 2), pair("epochs", 2), p["verdict_recall"]])
    lines += _table(rows, header) + ["", claim2_verdict(paired)]
    return lines


def claim2_verdict(paired: list[dict]) -> str:
    """Claim 2 in one sentence, read from the paired recall@10 intervals of varlen − fixed at every budget:
    held where they lie above 0, against the paper where below, undecided where they hold 0."""
    fixed = [p for p in paired if p["b"] == "fixed"]
    if not fixed:
        return "Claim 2 verdict: needs the varlen and the fixed-length recommenders at the same budget."
    words = {"ahead": "held", "behind": "against the paper", "level": "undecided"}
    at = [f"budget {p['budget']}: {words[p['verdict_recall']]} (recall@10 {p['recall@10']['difference']:+.4f}, "
          f"coverage@10 {p['coverage@10']['difference']:+.4f} {p['verdict_coverage']})" for p in fixed]
    verdicts = {p["verdict_recall"] for p in fixed}
    overall = ("held" if verdicts == {"ahead"} else "against the paper" if verdicts == {"behind"}
               else "not reproduced" if "behind" in verdicts else "undecided" if verdicts == {"level"}
               else "held at some budgets only")
    return f"Claim 2 verdict (varlen − fixed, paired 95 % intervals): {overall} — " + "; ".join(at) + "."


def plots(out: Path, r: dict, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src = out / "runs" / f"ids_{r['main_varlen']}_s{seed}" / "length_vs_popularity.png"
    if src.exists():
        shutil.copy(src, out / "length_vs_popularity.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, marker in ((r["main_varlen"], "o"), ("fixed", "s")):
        pts = sorted((x["budget"], x["recall@10"]) for x in r["budget_sweep"] if x["name"] == name)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=name)
    ax.set_xlabel("history token budget")
    ax.set_ylabel("recall@10")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "recall_vs_budget.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for v in r["ids"].values():
        if v["seed"] != seed or not v.get("history"):
            continue
        steps = [h["step"] for h in v["history"]]
        axes[0].plot(steps, [h.get("recon") for h in v["history"]], label=v["method"])
        axes[1].plot(steps, [h.get("mean_length") for h in v["history"]], label=v["method"])
    axes[0].set_title("reconstruction loss")
    axes[1].set_title("mean code length")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=120)
    plt.close(fig)


ARGUMENTS = (ReproduceArguments,)


def run(argv: list[str] | None = None) -> None:
    run_command(main, ARGUMENTS, argv, log_level=30)
