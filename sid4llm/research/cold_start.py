"""How well new items are recommended from their text alone: the cold-start protocol on any prepared dataset.

    sid4llm cold-start --data_dir data/ml-1m --output_dir outputs/cold_start          # varlen, fixed, RQ-KMeans

1. A seeded ``--fraction`` of the items, spread over popularity, is taken out of every history
   (:mod:`sid4llm.data.cold_start`); the rest is the warm dataset (OUT/data).
2. For each ID method: IDs trained on the warm catalogue, the shipped from-scratch recommender trained on the
   warm histories (``--rec_epochs`` epochs of its streams), then the cold items added with ``add_items`` —
   IDs from their text embedding through the saved ID encoder, no retraining; the trie admits them.
3. Scored on the full dataset's test users (:mod:`sid4llm.evaluation.cold_start`): recall/NDCG@10 on those
   whose target is a cold item and on the rest, beside a content baseline (embedding similarity to the recent
   history) and most popular; atomic IDs are 0 on cold targets by construction (no token for an unseen item).

Writes OUT/cold_start.json and OUT/cold_start.md; finished runs under OUT are reused when re-run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cli import run_command
from ..commands import finetune, train_ids
from ..commands.train_ids import SHIPPED_ID_CONFIGS
from ..data import PreparedData
from ..reporting import machine_description, markdown_table, write_json
from .cold_start_items import ColdItems, choose_cold_items, write_without_items
from .cold_start_metrics import baseline_metrics, cold_start_users, split_metrics
from .comparison import SharedMethodSettings

KS = (10, 20)


@dataclass
class ColdStartArguments(SharedMethodSettings):
    data_dir: str = field(metadata={"help": "A prepared dataset (sid4llm prepare-data)."})
    output_dir: str = field(metadata={"help": "Where the warm dataset, the runs and the report go."})
    fraction: float = field(default=0.1, metadata={"help": "Share of the items held out as cold-start items."})
    seed: int = field(default=0, metadata={"help": "Seed of the held-out items, the IDs and the recommenders."})
    id_sets: list[str] = field(default_factory=lambda: ["varlen", "fixed", "rqkmeans"], metadata={
        "help": "ID methods (shipped configs) whose recommenders are scored."})
    id_steps: int = field(default=2000, metadata={"help": "Training steps of every learned ID method."})
    length_cost: float | None = field(default=None, metadata={"help": "The varlen dVAE's length cost c (unset: its config's)."})
    id_vocab_size: int | None = field(default=None, metadata={"help": "Override every ID config's codebook size V (small catalogues)."})
    rec_config: str = field(default="finetune/from_scratch.yaml", metadata={"help": "From-scratch recommender config."})
    rec_epochs: float = field(default=1.0, metadata={"help": "Epochs of its warm ID streams for every recommender."})
    budget: int | None = field(default=None, metadata={"help": "History token budget (unset: the config's)."})
    num_beams: int = field(default=20, metadata={"help": "Beam width of the constrained evaluation."})
    cold_share: float = field(default=0.1, metadata={"help": "Prefix placement: the most of each list that goes to cold items (TIGER's ε)."})
    shared_codes: int = field(default=1, metadata={"help": "Prefix placement: leading codes a cold item shares with a recommended one."})
    recent_items: int = field(default=10, metadata={"help": "Content baseline: history items in the user profile."})
    reserve_disambiguation_tokens: int = field(default=32, metadata={
        "help": "Disambiguation tokens the recommenders reserve for the added items' collisions."})


def warm_dataset(args: ColdStartArguments, data: PreparedData) -> tuple[PreparedData, ColdItems]:
    """The warm dataset under OUT/data, written once per (fraction, seed)."""
    folder = Path(args.output_dir) / "data"
    if (folder / "stats.json").is_file():
        cold = ColdItems.load(folder)
        if (cold.fraction, cold.seed) == (args.fraction, args.seed):
            return PreparedData.load(folder), cold
    cold_rows = choose_cold_items(data.item_popularity, args.fraction, args.seed)
    warm = write_without_items(data, cold_rows, folder, args.fraction, args.seed)
    return warm, ColdItems.load(folder)


def run_id_set(args: ColdStartArguments, name: str, data: PreparedData, warm: PreparedData, cold: ColdItems,
               users, embeddings) -> dict:
    """IDs and a recommender on the warm dataset, the cold items added (``embeddings``: every catalogue item's
    text embedding, warm then cold), both variants scored."""
    out = Path(args.output_dir)
    result_file = out / f"rec_{name}" / "cold_start_scores.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    codebook_dir = out / f"ids_{name}"
    cost = {"length_cost": args.length_cost} if name == "varlen" and args.length_cost is not None else {}
    codebook = train_ids.trained_or_train(SHIPPED_ID_CONFIGS[name], data_dir=str(warm.path), output_dir=str(codebook_dir),
                               seed=args.seed, max_steps=args.id_steps, allow_collapse=True,
                               vocab_size=args.id_vocab_size, collaborative_weight=args.collaborative_weight, **cost)
    budget = {"history_token_budget": args.budget} if args.budget else {}
    rec = finetune.trained_or_train(
        args.rec_config, data_dir=str(warm.path), codebook=str(codebook_dir / "codebook"),
        output_dir=str(out / f"rec_{name}"), seed=args.seed, example_seed=args.seed, max_steps=-1,
        num_train_epochs=args.rec_epochs, min_steps=0, valid_users=0, save_steps=10**6, eval_examples=0,
        transition_prior=False,  # new items have no transitions: the study measures the model's own reach
        reserve_disambiguation_tokens=args.reserve_disambiguation_tokens, **args.recommender_settings(), **budget)
    # from the runs' own records, so that reused runs count the time they took
    id_seconds = (getattr(codebook, "metrics", None) or {}).get("train_seconds") or 0.0
    rec_seconds = rec.results.get("metrics", {}).get("train_runtime") or 0.0
    held_out = data.items.select(cold.item_idx)
    rec.add_items(cold.item_ids, embeddings[users.n_warm:], held_out["title"], held_out["categories"])
    t = time.time()
    ranked = rec.recommend(users.histories, k=max(KS), num_beams=args.num_beams, exclude_seen=True,
                           show_progress=True)
    lists = [[(r["index"], r["score"]) for r in user] for user in ranked]
    placer = rec.cold_item_placer(args.shared_codes)  # the same search, cold items placed by ID prefix
    placed = {k: [[i for i, _ in placer.place(user, k, args.cold_share, set(h))]
                  for user, h in zip(lists, users.histories)] for k in KS}
    cold_lengths = [len(rec.codebook.codes[i]) for i in rec.cold_items]
    result = {"name": name, "model": split_metrics([[i for i, _ in user] for user in lists], users, KS),
              "prefix_placement": merged_metrics({k: split_metrics(placed[k], users, (k,)) for k in KS}),
              "id_train_seconds": round(id_seconds, 1), "rec_train_seconds": round(rec_seconds, 1),
              "train_seconds": round(id_seconds + rec_seconds, 1), "eval_seconds": round(time.time() - t, 1),
              "epochs": (rec.results.get("training_plan") or {}).get("epochs"),
              "mean_cold_id_codes": sum(cold_lengths) / max(len(cold_lengths), 1),
              "cold_disambiguated": int(sum(rec.codebook.disambiguation[list(rec.cold_items)] > 0))}
    write_json(result_file, result)
    return result


def merged_metrics(per_k: dict[int, dict]) -> dict:
    """One metrics dict from :func:`split_metrics` results computed on lists of different lengths."""
    out: dict = {}
    for metrics in per_k.values():
        for key, value in metrics.items():
            if isinstance(value, dict):
                out.setdefault(key, {}).update(value)
            else:
                out.setdefault(key, value)
    return out


def main(args: ColdStartArguments) -> dict:
    unknown = sorted(set(args.id_sets) - set(SHIPPED_ID_CONFIGS) - {"atomic"})
    if unknown:
        raise SystemExit(f"error: --id_sets: unknown method(s) {unknown}; choose from {', '.join(SHIPPED_ID_CONFIGS)}")
    start = time.time()
    data = PreparedData.load(args.data_dir)
    warm, cold = warm_dataset(args, data)
    users = cold_start_users(data, warm, cold)
    embeddings = data.item_embeddings()[users.full_rows]  # read once, in catalogue order
    baselines = baseline_metrics(users, embeddings, warm.item_popularity, KS, args.recent_items)
    runs = [run_id_set(args, name, data, warm, cold, users, embeddings) for name in args.id_sets if name != "atomic"]
    result = {"arguments": asdict(args), "machine": machine_description(),
              "dataset": {k: data.stats.get(k) for k in ("source", "n_users", "n_items", "n_interactions")},
              "cold_items": len(cold.item_ids), "warm_items": users.n_warm, "users": len(users.targets),
              "cold_target_users": int(users.cold_target.sum()), "dropped_users": users.dropped_users,
              "recommenders": runs, "baselines": baselines, "seconds": round(time.time() - start, 1)}
    out = Path(args.output_dir)
    write_json(out / "cold_start.json", result)
    (out / "cold_start.md").write_text(report(result))
    print((out / "cold_start.md").read_text())
    return result


def report(r: dict) -> str:
    """The cold-start table: every method on cold-target users and on the rest."""
    def row(label: str, m: dict) -> list[str]:
        return [label, f"{m['cold']['recall@10']:.4f}", f"{m['cold']['ndcg@10']:.4f}", f"{m['cold']['recall@20']:.4f}",
                f"{m['warm']['recall@10']:.4f}", f"{m['warm']['ndcg@10']:.4f}", f"{m['cold_share_of_lists@10']:.4f}",
                f"{m['cold_items_recommended@10']:,}"]

    rows = []
    for x in r["recommenders"]:
        rows.append(row(f"{x['name']} IDs, the model alone", x["model"]))
        rows.append(row(f"{x['name']} IDs + prefix placement", x["prefix_placement"]))
    rows.append(["atomic IDs + the same recommender", "0 (by construction)", "0", "0", "–", "–", "0", "0"])
    rows.append(row("content baseline (text embeddings)", r["baselines"]["content"]))
    rows.append(row("most popular", r["baselines"]["most_popular"]))
    table = markdown_table(["method", "cold recall@10", "cold NDCG@10", "cold recall@20", "warm recall@10",
                            "warm NDCG@10", "cold share of top-10 slots", "cold items recommended"], rows)
    a = r["arguments"]
    runs_minutes = sum(x.get("train_seconds", 0) + x.get("eval_seconds", 0) for x in r["recommenders"]) / 60
    return "\n".join([
        "# Cold-start items", "",
        f"Dataset: {r['dataset']['source']}. {r['cold_items']:,} of {r['dataset']['n_items']:,} items "
        f"({a['fraction']:.0%}, seed {a['seed']}, spread over popularity) taken out of every history before IDs and "
        f"recommenders were trained, then added with `add_items` from their text alone. Test users: {r['users']:,} "
        f"({r['cold_target_users']:,} with a cold target; {r['dropped_users']} left out with no warm history item). "
        f"History items are left out of every list. Recommenders: `{a['rec_config']}`, {a['rec_epochs']:g} epoch(s) "
        f"of the warm streams, {a['num_beams']} beams; IDs {a['id_steps']} steps. *Prefix placement*: the same "
        f"search, then a cold item sharing its first {a['shared_codes']} code(s) with a recommended item is placed "
        f"right after it, at most {a['cold_share']:.0%} of each list (TIGER's cold-start rule). Machine: "
        f"{r['machine']}. Time in the runs (from their records): {runs_minutes:.1f} min; this invocation "
        f"{r['seconds'] / 60:.1f} min (finished runs are reused).", "", table, "",
        "Atomic IDs give an item a token only by training on it, so an unseen item cannot be generated; the most-"
        "popular floor never ranks an item without train events.", ""])


ARGUMENTS = (ColdStartArguments,)


def run(argv: list[str] | None = None) -> dict:
    return run_command(main, ARGUMENTS, argv, log_level=30)
