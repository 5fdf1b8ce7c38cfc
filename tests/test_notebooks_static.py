"""Static checks of the chapter notebooks, without running them (the smoke book runs them): every
name a cell reads was bound by an earlier cell (or is a builtin), and every code cell is short (the
notebooks are prose, one cxrlib call per step and plots)."""

import ast
import builtins
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CELL_LINES = 15


def _code_cells(path):
    return [(i, "".join(c["source"])) for i, c in enumerate(json.loads(path.read_text())["cells"]) if c["cell_type"] == "code"]


def unbound_names(cells) -> list[tuple[int, str]]:
    bound = set(dir(builtins)) | {"display", "get_ipython"}
    missing = []
    for i, source in cells:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                bound.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
        missing += [(i, n.id) for n in ast.walk(tree)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound]
    return missing


def test_checker_finds_a_name_no_cell_binds():
    assert unbound_names([(0, "x = 1"), (1, "print(x + y)")]) == [(1, "y")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_name_is_bound_by_an_earlier_cell(path):
    assert unbound_names(_code_cells(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_short(path):
    long = {i: n for i, s in _code_cells(path) if (n := len(s.splitlines())) > MAX_CELL_LINES}
    assert long == {}, f"cells over {MAX_CELL_LINES} lines: {long}"
