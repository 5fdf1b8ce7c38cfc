"""The shape of the library: no import cycles between cxrlib's modules (imports inside functions
included, since those are how cycles hide), and no oversized modules."""

from __future__ import annotations

import ast
from pathlib import Path

import cxrlib

PACKAGE = Path(cxrlib.__file__).parent
MAX_LINES = 510  # "about 500": a module a newcomer reads in one sitting


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the cxrlib modules it imports anywhere in its body. ``from pkg import name`` is an
    edge to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle_hidden_in_a_function():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_cxrlib():
    graph = import_graph()
    assert "cxrlib.generators.ddpm" in graph and graph["cxrlib.generators.latent"]  # the graph was read
    assert cycles(graph) == []


def test_every_import_inside_cxrlib_resolves():
    """Imports inside functions run only when the function does: a moved module can leave one pointing
    nowhere (``from .utils import tqdm`` in a subpackage). Each must name an existing module or name."""
    import importlib

    modules = _modules()
    broken = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cxrlib")):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module
                if src not in modules:
                    broken.append(f"{name}:{node.lineno} imports from {src} (no such module)")
                    continue
                mod = importlib.import_module(src)
                for alias in node.names:
                    if f"{src}.{alias.name}" not in modules and not hasattr(mod, alias.name):
                        broken.append(f"{name}:{node.lineno} imports {alias.name} from {src} (not defined there)")
            elif isinstance(node, ast.Import):
                broken += [f"{name}:{node.lineno} imports {a.name} (no such module)" for a in node.names
                           if a.name.startswith("cxrlib") and a.name not in modules]
    assert broken == []


def test_no_module_is_a_monolith():
    big = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"modules over {MAX_LINES} lines: {big}"
