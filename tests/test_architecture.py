"""The library's layering, read from its source: no import cycle, and data read without the training module.

Every ``import`` in ``cff_lib`` counts, the lazy ones inside functions too (a lazy import hides a cycle from
Python but not from a reader); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "cff_lib"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """The cff_lib modules a module's source imports (``from cff_lib import x`` counts when x is a module)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cff_lib."):
                    out.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cff_lib":
                out.update(a.name for a in node.names if a.name in modules)
            elif node.module.startswith("cff_lib."):
                out.add(node.module.split(".")[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph(lib: Path = LIB) -> dict[str, set[str]]:
    """module name -> the cff_lib modules it imports (``__init__`` left out: it only re-exports)."""
    files = {p.stem: p for p in lib.glob("*.py") if p.stem != "__init__"}
    names = set(files)
    return {name: _imported_modules(ast.parse(path.read_text(encoding="utf-8")), names) - {name}
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := dfs(start)):
            return found
    return None


def test_find_cycle_finds_a_planted_cycle_and_passes_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_counts_lazy_imports_and_skips_type_checking(tmp_path):
    (tmp_path / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cff_lib.z import Z\n"
        "def f():\n    from cff_lib.y import g\n    from cff_lib import z\n")
    (tmp_path / "y.py").write_text("import cff_lib.x\n")
    (tmp_path / "z.py").write_text("")
    assert import_graph(tmp_path) == {"x": {"y", "z"}, "y": {"x"}, "z": set()}


def test_cff_lib_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in cff_lib: " + " -> ".join(cycle)


@pytest.mark.parametrize("reader", ["control", "evaluation", "baselines", "editing", "referees"])
def test_data_is_read_without_the_training_module(reader):
    """The data layer (cff_lib.dataset) serves every reader; importing training to read data is a layering error."""
    tree = ast.parse((LIB / f"{reader}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "cff_lib.training":
            names = {a.name for a in node.names}
            assert not names & {"CompositeDataset", "collate", "dataset_for", "load_composite"}, (
                f"{reader}.py imports {sorted(names)} from cff_lib.training; read data through cff_lib.dataset")


def test_architecture_doc_places_every_module_and_its_equation_homes_exist():
    """docs/architecture.md names each cff_lib module, and each `module.Class.method` it cites exists."""
    import importlib
    import re

    doc = (LIB.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_0-9]+)`", doc))
    missing = sorted(p.stem for p in LIB.glob("*.py") if p.stem != "__init__" and p.stem not in named)
    assert not missing, f"docs/architecture.md does not place {missing}"
    for ref in sorted(set(re.findall(r"`([a-z_0-9]+(?:\.[A-Za-z_0-9]+)+)`", doc))):
        module, *attrs = ref.split(".")
        obj = importlib.import_module(f"cff_lib.{module}")
        for attr in attrs:
            assert hasattr(obj, attr), f"docs/architecture.md cites {ref}, which does not exist"
            obj = getattr(obj, attr)
