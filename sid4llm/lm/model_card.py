"""The model card (README.md) of a saved recommender: what a Hub visitor reads first — base model, data,
ID statistics, test metrics and how to use it."""

from __future__ import annotations

import json

from ..ids import SemanticIdCodebook
from ..reporting import markdown_table
from .models import layer_cut_phrase
from .recommender_config import SidRecommenderConfig


def recommender_card(config: SidRecommenderConfig, results: dict, codebook: SemanticIdCodebook) -> str:
    """README.md for a saved ``SidRecommender`` folder / Hub repo: its settings and what its runs measured."""
    cfg, cb = config, codebook
    m, base = cb.metrics, cfg.base_model
    base_id = "HuggingFaceTB/SmolLM2-135M-Instruct" if base == "default" else base
    data = cfg.dataset_stats or {}
    prompt, trained = cfg.prompt, cfg.training.get("model", {})
    lines = ["---", "library_name: sid4llm", "tags:", "- recommendation", "- semantic-ids",
             "- peft" if cfg.peft else "- full-finetune"]
    if not cfg.from_scratch:
        lines.append(f"base_model: {base_id}")
    layers = cfg.pretrained_layers
    adapter = "an adapter training " + ("fully" if trained.get("peft_layers") == "full" else "with LoRA") + " "
    if cfg.from_scratch:
        model = "a small Llama trained from scratch"
    elif cfg.layer_cut_adapter:
        model = (f"{adapter}the {layer_cut_phrase(layers).replace('layer', 'decoder layer')} of {base_id}: the ID path "
                 "reads those layers with the adapter on, and the whole instruct LM, adapter off, writes the words of a "
                 "chat answer")
    else:
        model = f"{'LoRA on ' if cfg.peft else ''}{base_id}"
        if layers:
            model += f", cut to its {layer_cut_phrase(layers).replace('layer', 'decoder layer')}"
    lines += ["---", "", "# sid4llm recommender", "",
              f"A causal LM ({model}) that recommends items by writing their variable-length semantic IDs "
              "([arXiv 2602.16375](https://arxiv.org/abs/2602.16375)). Every recommendation is decoded through a "
              "prefix trie of the codebook, so it is always a real catalogue item.", "", "## Data", ""]
    if data:
        lines.append(f"- dataset: {cfg.dataset} — {data.get('n_users', 0):,} users, {data.get('n_items', 0):,} "
                     f"items, {data.get('n_interactions', 0):,} interactions (leave-one-out splits)")
    lines += [f"- catalogue: {cfg.profile.plural} (what people do with them: {cfg.profile.verb})",
              f"- tasks: {', '.join(prompt.tasks)}; history budget {prompt.history_token_budget} tokens", "",
              "## Semantic IDs", "",
              f"- method: {cb.config.method} ({'variable' if cb.config.variable_length else 'fixed'} length), "
              f"V={cb.vocab_size}, max length {cb.config.max_length}, {len(cb):,} items",
              f"- mean ID length: {m.get('mean_length_uniform', 'n/a')} (per item), "
              f"{m.get('mean_length_unigram', 'n/a')} (per interaction)",
              f"- reconstruction error: {m.get('recon_mse_uniform', 'n/a')}; Spearman(length, popularity): "
              f"{m.get('spearman_length_popularity', 'n/a')}", ""]
    evaluation = results.get("evaluation")
    if evaluation:
        metrics = ("recall@10", "ndcg@10", "coverage@10")
        rows = [[name, *(f"{r[k]:.4f}" if isinstance(r.get(k), float) else "n/a" for k in metrics)]
                for name, r in ((name, evaluation.get(name, {})) for name in ("model", "most_popular"))]
        lines += [f"## Evaluation ({evaluation.get('split', 'test')} split, full catalogue, constrained beam search)", "",
                  markdown_table(["", *metrics], rows), ""]
    prior = results.get("transition_prior")
    if prior:
        lines += ["## Transition prior", "",
                  f"Item transitions counted from the train histories re-rank the beam's {prior.get('candidates')} "
                  + (f"candidates and the prior's own {prior['prior_candidates']} best items (scored by the model) "
                     if prior.get("prior_candidates") else "candidates ")
                  + f"with weight {prior.get('weight'):g} (chosen on {prior.get('users'):,} valid users; "
                  "0 would be the model alone)"
                  + (f", items that go with the whole history (EASE co-occurrence) at {prior['cooccurrence_weight']:g} "
                     "of that weight" if prior.get("cooccurrence_weight") else "") + ": `transition_prior/`.", ""]
    stage = results.get("preference")
    if stage:
        pairs, best = stage.get("pairs", {}), (stage.get("validation") or {}).get("best") or {}
        kept = (f"the state of step {best['step']} was kept (valid recall@10 {best.get('valid_recall@10')}"
                + (", the model it started from" if best.get("step") == 0 else "") + ")") if best else "the last state was kept"
        lines += ["## Preference stage", "",
                  f"After supervised training, trl's DPO on {pairs.get('pairs', 0):,} pairs from the model's own "
                  f"{pairs.get('candidates')}-item lists on {pairs.get('examples', 0):,} train histories (the next item "
                  f"chosen, the model's {pairs.get('negatives')} top wrong items rejected); {kept}. Settings: "
                  "`training.preference` in `sid4llm_config.json`.", ""]
    train = {k: v for k, v in results.get("metrics", {}).items() if k in ("train_loss", "train_runtime", "eval_loss")}
    settings = cfg.training.get("training", {})
    if train or settings:
        lines += ["## Training", ""]
        if settings:
            lines += ["The settings it was trained with (the whole record is `training` in `sid4llm_config.json`):", "",
                      "```json", json.dumps(settings, indent=2, default=str), "```", ""]
        if train:
            lines += ["```json", json.dumps(train, indent=2), "```", ""]
    lines += ["## Usage", "", "```python", "from sid4llm import RecommendationPipeline", "",
              'pipe = RecommendationPipeline.from_pretrained("<this repo or folder>")',
              'pipe.recommend(["<a title you liked>", "<another>"], k=10)',
              'pipe.chat([{"role": "user", "content": "I loved <title>. What next?"}])', "```", ""]
    if cfg.peft:
        lines += ["With PEFT alone (the base resized to the shipped tokenizer first):", "", "```python",
                  "from peft import AutoPeftModelForCausalLM", "",
                  'model = AutoPeftModelForCausalLM.from_pretrained("<this repo or folder>")', "```", ""]
    return "\n".join(lines)

