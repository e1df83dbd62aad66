"""Committed notebooks: named NN_snake_case, markdown first, one plain `parameters` cell, no outputs,
logic in cff_lib (no long functions in notebooks), the project's kernel."""
import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_hygiene(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and "regenerates" in cells[0].source.lower(), \
        "cell 1 must be markdown saying what the notebook regenerates"
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], f"exactly cell 2 must be tagged 'parameters', got cells {tagged}"
    for node in ast.parse(cells[1].source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), "parameters cell: assignments only"
        value = node.value
        assert isinstance(value, ast.Constant) and isinstance(value.value, (int, float, str, bool)), \
            f"parameters cell: plain scalars only, got {ast.unparse(node)}"
    names = {t.id for n in ast.parse(cells[1].source).body for t in getattr(n, "targets", [getattr(n, "target", None)])}
    assert {"profile", "figures_dir"} <= names
    for c in cells:
        if c.cell_type == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, "committed with outputs"
            for node in ast.walk(ast.parse(c.source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    assert node.end_lineno - node.lineno < 10, f"function {node.name} belongs in cff_lib"
    assert nb.metadata.get("kernelspec", {}).get("name") == "cff"
