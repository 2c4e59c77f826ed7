"""The package's shape: no import cycles and no import from a lower layer to a higher one (data → ids →
ID tokens → decoding → LM → training → pipeline → evaluation → serving → commands → research), checked on every
import, including those inside functions (scripts/import_graph.py prints the graph); the product path never
imports the research harness, and none of its modules is over 400 lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycle_and_no_upward_import():
    graph = load_import_graph()
    edges = graph.import_graph(REPO / "sid4llm")
    assert "sid4llm.training.finetuning" in edges and "sid4llm.decoding.trie" in edges["sid4llm.decoding.columns"]
    assert graph.cycles(edges) == []
    assert graph.upward_imports(edges) == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    graph = load_import_graph()
    pkg = tmp_path / "sid4llm"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from ..commands import run\n")  # inside a function
    (pkg / "data" / "b.py").write_text("from . import c\n")
    (pkg / "data" / "c.py").write_text("from .b import x\n")
    (pkg / "commands.py").write_text("from .data import a\n")
    edges = graph.import_graph(pkg)
    assert graph.upward_imports(edges) == [("sid4llm.data.a", "sid4llm.commands")]
    assert ["sid4llm.data.b", "sid4llm.data.c", "sid4llm.data.b"] in graph.cycles(edges)


def test_every_module_is_in_a_listed_layer_or_a_part_of_one():
    graph = load_import_graph()
    listed = {p for layer in graph.LAYERS for p in layer}
    for module in graph.import_graph(REPO / "sid4llm"):
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        assert parents & listed - {"sid4llm"} or module == "sid4llm" or module in listed, module


def test_nothing_on_the_product_path_imports_the_research_harness():
    """Paper reproduction, the cold-start study and paired bootstrap live in sid4llm.research, beside the product:
    a user's recommender (data, IDs, training, decoding, LM, pipeline, serving, evaluation) never loads them."""
    graph = load_import_graph()
    edges = graph.import_graph(REPO / "sid4llm")
    assert any(m.startswith("sid4llm.research.") for m in edges)
    on_path = {m: deps for m, deps in edges.items() if m.startswith(graph.PRODUCT_PATH)}
    assert on_path and not {m: [d for d in deps if d.startswith("sid4llm.research")]
                            for m, deps in on_path.items() if any(d.startswith("sid4llm.research") for d in deps)}


def test_no_module_of_the_product_path_is_over_400_lines():
    graph = load_import_graph()
    long = {str(p.relative_to(REPO)): n for p in (REPO / "sid4llm").rglob("*.py")
            if graph.module_name(p, REPO / "sid4llm").startswith(graph.PRODUCT_PATH)
            and (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
