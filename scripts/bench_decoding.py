"""Constrained decoding, side by side: same model, same prompts, same number of beams.

    python scripts/bench_decoding.py                                  # small random model, default-size catalogue
    python scripts/bench_decoding.py --model outputs/quickstart/recommender --json outputs/bench_decoding.json

Every method gets the same prompts, beams and length-sorted batches. Rows: our fast ``recommend`` (KV cache,
tree attention, ID-token rows of the head only), our ``TrieLogitsProcessor`` inside
``model.generate``, HF ``generate(prefix_allowed_tokens_fn=...)`` over a Python dict trie (the usual recipe),
and unconstrained beam search. Prints queries/s and per-query latency; ``--json`` also records
``speedup_vs_prefix_allowed_tokens_fn`` (their time / ours), ``overhead_vs_unconstrained`` (ours /
unconstrained) and the invalid-ID rates.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from sid4llm.cli import parse_config_and_args
from sid4llm.decoding import TrieLogitsProcessor, left_pad
from sid4llm.ids import DVAEConfig, SemanticIdCodebook
from sid4llm.lm.embedding_init import init_id_embeddings
from sid4llm.lm.models import ModelArguments, load_tokenizer
from sid4llm.lm.recommender import SidRecommender
from sid4llm.lm.recommender_config import SidRecommenderConfig, recommendation_generation_config
from sid4llm.lm.tasks import TaskArguments
from sid4llm.reporting import markdown_table, write_json
from sid4llm.vocabulary import IdVocabulary


@dataclass
class DecodingBenchArguments:
    model: str | None = field(default=None, metadata={"help": "A trained recommender folder; default: a small random Llama."})
    n_items: int = field(default=3416, metadata={"help": "Random catalogue size (MovieLens-1M after 5-core)."})
    vocab_size: int = field(default=256, metadata={"help": "Codes in the random codebook."})
    max_length: int = field(default=4, metadata={"help": "Longest random code."})
    hidden_size: int = field(default=256, metadata={"help": "Random model width."})
    layers: int = field(default=4, metadata={"help": "Random model layers."})
    queries: int = field(default=32, metadata={"help": "Users decoded per method."})
    num_beams: int = field(default=10, metadata={"help": "Beams (and K) for every method."})
    batch_size: int = field(default=8, metadata={"help": "Users per batch for every method."})
    repeats: int = field(default=1, metadata={"help": "Timed repetitions (best is reported)."})
    json: str | None = field(default=None, metadata={"help": "Write results as JSON here."})
    seed: int = field(default=0, metadata={"help": "Seed."})


def random_recommender(args: DecodingBenchArguments) -> SidRecommender:
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(1, args.max_length + 1, size=args.n_items)
    codes = rng.integers(0, args.vocab_size, size=(args.n_items, args.max_length))
    codebook = SemanticIdCodebook.from_codes([str(i) for i in range(args.n_items)], codes, lengths,
                                             rng.integers(0, 100, size=args.n_items),
                                             DVAEConfig(vocab_size=args.vocab_size, max_length=args.max_length))
    tokenizer = load_tokenizer("default")
    vocab = IdVocabulary.extend(tokenizer, codebook)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer) - len(vocab.new_token_ids), hidden_size=args.hidden_size,
                                         intermediate_size=4 * args.hidden_size, num_hidden_layers=args.layers,
                                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    init_id_embeddings(model, vocab, "random")
    model.eval()
    task_args = TaskArguments(history_token_budget=160, max_history_items=30, prompt_format="plain", system_prompt="")
    config = SidRecommenderConfig(base_model="random", model_args=ModelArguments(from_scratch=True), task_args=task_args)
    return SidRecommender(model, vocab, recommendation_generation_config(vocab, args.num_beams), config)


def python_trie(rec: SidRecommender) -> dict:
    root: dict = {}
    for item in range(len(rec.codebook)):
        node = root
        for token in rec.vocab.stream_item_token_ids(item):
            node = node.setdefault(token, {})
    return root


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def generate_batches(rec: SidRecommender, histories, args, processor_factory=None, prefix_fn_factory=None):
    """Beam search with ``model.generate`` over batches; returns the parsed top beam per user. Users are
    batched by prompt length, as ``recommend`` does, so every method pads the same way."""
    all_prompts = [rec.history_prompt_ids(h) for h in histories]
    order = sorted(range(len(all_prompts)), key=lambda i: len(all_prompts[i]))
    results = [None] * len(histories)
    for start in range(0, len(order), args.batch_size):
        batch = order[start : start + args.batch_size]
        prompts = [all_prompts[i] for i in batch]
        ids, mask = left_pad(prompts, rec.tokenizer.pad_token_id)
        width = ids.shape[1]
        kwargs = {}
        if processor_factory:
            kwargs["logits_processor"] = LogitsProcessorList([processor_factory(width)])
        if prefix_fn_factory:
            kwargs["prefix_allowed_tokens_fn"] = prefix_fn_factory(width)
        config = recommendation_generation_config(rec.vocab, args.num_beams)
        config.eos_token_id = [rec.vocab.end_id]  # one ID, starting right after the prompt
        with torch.no_grad():
            out = rec.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
        out = out.reshape(len(prompts), args.num_beams, -1)
        for user, rows in zip(batch, out):
            results[user] = rec.vocab.parse_stream_item(rows[0, width:].tolist())
    return results


def main(args: DecodingBenchArguments) -> dict:
    torch.manual_seed(args.seed)
    rec = SidRecommender.from_pretrained(args.model) if args.model else random_recommender(args)
    rng = np.random.default_rng(args.seed)
    n = len(rec.codebook)
    histories = [rng.integers(0, n, size=rng.integers(3, 30)).tolist() for _ in range(args.queries)]
    trie = python_trie(rec)
    end_id, eos = rec.vocab.end_id, rec.tokenizer.eos_token_id

    def prefix_fn_factory(width):
        def allowed(batch_id, input_ids):
            node = trie
            for token in input_ids[width:].tolist():
                if token == end_id or node is None:
                    return [eos]
                node = node.get(token)
            return list(node) if node else [eos]
        return allowed

    methods = {
        "recommend (ours, KV cache + ID rows)": lambda: [r[0]["index"] for r in rec.recommend(
            histories, k=args.num_beams, num_beams=args.num_beams, batch_size=args.batch_size, exclude_seen=False)],
        "generate + TrieLogitsProcessor (ours)": lambda: generate_batches(
            rec, histories, args, processor_factory=lambda w: TrieLogitsProcessor(rec.decoder, w, "id")),
        "generate + prefix_allowed_tokens_fn": lambda: generate_batches(rec, histories, args, prefix_fn_factory=prefix_fn_factory),
        "generate, unconstrained": lambda: generate_batches(rec, histories, args),
    }
    rows = {}
    for name, fn in methods.items():
        seconds, top = timed(fn, args.repeats)
        invalid = float(np.mean([t is None for t in top]))
        rows[name] = {"seconds": round(seconds, 3), "queries_per_second": round(args.queries / seconds, 2),
                      "ms_per_query": round(1000 * seconds / args.queries, 1), "invalid_rate_top1": invalid}
        print(f"{name}: {rows[name]}", flush=True)
    ours = rows["recommend (ours, KV cache + ID rows)"]["seconds"]
    result = {
        "methods": rows,
        "speedup_vs_prefix_allowed_tokens_fn": round(rows["generate + prefix_allowed_tokens_fn"]["seconds"] / ours, 2),
        "speedup_logits_processor_vs_prefix_allowed_tokens_fn": round(
            rows["generate + prefix_allowed_tokens_fn"]["seconds"] / rows["generate + TrieLogitsProcessor (ours)"]["seconds"], 2),
        "overhead_vs_unconstrained": round(ours / rows["generate, unconstrained"]["seconds"], 3),
        "overhead_logits_processor_vs_unconstrained": round(
            rows["generate + TrieLogitsProcessor (ours)"]["seconds"] / rows["generate, unconstrained"]["seconds"], 3),
        "invalid_rate_constrained": max(rows["recommend (ours, KV cache + ID rows)"]["invalid_rate_top1"],
                                        rows["generate + TrieLogitsProcessor (ours)"]["invalid_rate_top1"]),
        "invalid_rate_unconstrained": rows["generate, unconstrained"]["invalid_rate_top1"],
        "setup": {"model": args.model or f"random Llama {args.layers}x{args.hidden_size}, vocab {len(rec.tokenizer)}",
                  "n_items": n, "queries": args.queries, "num_beams": args.num_beams, "batch_size": args.batch_size,
                  "device": str(rec.device), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
    }
    print("\n" + markdown_table(["method", "queries/s", "ms/query", "invalid top-1"],
                                [[name, r["queries_per_second"], r["ms_per_query"], f"{r['invalid_rate_top1']:.2f}"]
                                 for name, r in rows.items()]))
    print(f"\nspeedup vs prefix_allowed_tokens_fn: {result['speedup_vs_prefix_allowed_tokens_fn']}x; "
          f"overhead vs unconstrained: {result['overhead_vs_unconstrained']}x")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    (bench_args,) = parse_config_and_args([DecodingBenchArguments])
    main(bench_args)
