"""Prefix-trie build time and memory as the catalogue grows (random variable-length IDs).

    python scripts/bench_trie.py                       # 1k, 10k, 100k, 1M items
    python scripts/bench_trie.py --sizes 1000 10000 --json outputs/bench_trie.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sid4llm.cli import parse_config_and_args
from sid4llm.decoding.trie import IdTrie
from sid4llm.ids import DVAEConfig, SemanticIdCodebook
from sid4llm.reporting import markdown_table, write_json


@dataclass
class TrieBenchArguments:
    sizes: list[int] = field(default_factory=lambda: [1000, 10000, 100000, 1000000], metadata={"help": "Catalogue sizes."})
    vocab_size: int = field(default=256, metadata={"help": "Codes per position."})
    max_length: int = field(default=5, metadata={"help": "Longest code sequence."})
    json: str | None = field(default=None, metadata={"help": "Write results as JSON here."})


def main(args: TrieBenchArguments) -> list[dict]:
    rows = []
    for n in args.sizes:
        rng = np.random.default_rng(0)
        lengths = rng.integers(1, args.max_length + 1, size=n)
        codes = rng.integers(0, args.vocab_size, size=(n, args.max_length))
        start = time.perf_counter()
        codebook = SemanticIdCodebook.from_codes([str(i) for i in range(n)], codes, lengths, rng.integers(0, 100, n),
                                                 DVAEConfig(vocab_size=args.vocab_size, max_length=args.max_length))
        dedup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        trie = IdTrie.from_sequences(codebook.sequences, end_token=args.vocab_size + codebook.num_disambiguation_tokens)
        build_seconds = time.perf_counter() - start
        nodes = torch.zeros(4096, dtype=torch.long)
        start = time.perf_counter()
        mask = trie.allowed_mask(nodes, args.vocab_size + codebook.num_disambiguation_tokens + 1)
        step_ms = 1000 * (time.perf_counter() - start)
        row = {"n_items": n, "trie_build_seconds": round(build_seconds, 3), "trie_mib": round(trie.nbytes / 2**20, 2),
               "nodes": trie.num_nodes, "codebook_dedup_seconds": round(dedup_seconds, 2),
               "mask_4096_rows_ms": round(step_ms, 2), "allowed_at_root": int(mask[0].sum())}
        print(row, flush=True)
        rows.append(row)
    print("\n" + markdown_table(["items", "build s", "trie MiB", "nodes", "mask for 4,096 beams (ms)"],
                                [[f"{r['n_items']:,}", r["trie_build_seconds"], r["trie_mib"], f"{r['nodes']:,}",
                                  r["mask_4096_rows_ms"]] for r in rows]))
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    (bench_args,) = parse_config_and_args([TrieBenchArguments])
    main(bench_args)
