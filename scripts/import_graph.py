"""The import graph of the sid4llm package: every ``import`` between its modules, including the ones inside
functions, with the layer each module sits in. Prints the arrows between parts, checks that there is no cycle
and no import from a higher layer to a lower one, and writes JSON.

    python scripts/import_graph.py                       # table + checks
    python scripts/import_graph.py --json docs/import_graph.json --package /path/to/other/checkout/sid4llm

The test suite runs the same checks (tests/test_layout.py).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

# Lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("sid4llm", "sid4llm.allocator", "sid4llm.artifacts", "sid4llm.cache", "sid4llm.hub", "sid4llm.metrics", "sid4llm.reporting"),
    ("sid4llm.data",),
    ("sid4llm.ids",),
    ("sid4llm.vocabulary",),
    ("sid4llm.decoding",),
    ("sid4llm.lm",),
    ("sid4llm.training",),
    ("sid4llm.chat",),
    ("sid4llm.pipeline",),
    ("sid4llm.evaluation", "sid4llm.chat.benchmark"),  # the chat benchmark scores a pipeline, as evaluation does
    ("sid4llm.serving",),
    ("sid4llm.cli",),
    ("sid4llm.commands", "sid4llm.__main__"),
    ("sid4llm.research",),
]

# The product path: what a user's recommender runs on. None of it may import the research harness.
PRODUCT_PATH = ("sid4llm.data", "sid4llm.ids", "sid4llm.vocabulary", "sid4llm.decoding", "sid4llm.lm",
                "sid4llm.training", "sid4llm.pipeline", "sid4llm.serving", "sid4llm.evaluation", "sid4llm.chat")


def layer(module: str) -> int:
    """The layer of a module: that of the longest prefix listed in LAYERS."""
    best, rank = -1, 0
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    return rank


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: str | Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (absolute or relative, at top level or inside a function)."""
    root = Path(package_dir).resolve()
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            edges[mod].update(c for c in candidates if c in files and c != mod)
        edges.setdefault(mod, set())
    return dict(edges)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first search (each as the modules around it)."""
    found, state = [], {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m, [])
    return found


def upward_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    return sorted((a, b) for a, targets in edges.items() for b in targets if layer(b) > layer(a))


def part(module: str) -> str:
    """The part a module belongs to: its subpackage (``sid4llm.lm``), or itself for a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cross_part_arrows(edges: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    """How many module-to-module imports go from one part of the package to another."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for a, targets in edges.items():
        for b in targets:
            if part(a) != part(b):
                counts[(part(a), part(b))] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default=str(Path(__file__).resolve().parents[1] / "sid4llm"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    edges = import_graph(args.package)
    arrows = cross_part_arrows(edges)
    from sid4llm.reporting import markdown_table

    print(markdown_table(["from", "to", "imports"], [[a, b, n] for (a, b), n in sorted(arrows.items())]))
    result = {"modules": len(edges), "imports": sum(map(len, edges.values())),
              "cross_part_imports": sum(arrows.values()), "cross_part_pairs": len(arrows),
              "cycles": cycles(edges), "upward_imports": upward_imports(edges)}
    print({k: v for k, v in result.items()})
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "edges": {k: sorted(v) for k, v in sorted(edges.items())}},
                                              indent=2))


if __name__ == "__main__":
    main()
