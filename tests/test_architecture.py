"""The package's shape (docs/design.rst): no import cycles, small modules, short functions, and
one registry per kind of thing.

The import graph is read from the source (``ast``), so it sees every ``import`` statement:
module level, inside functions and under ``if TYPE_CHECKING:``; a cycle through any of them
fails. ``from package import name`` counts as an edge to ``package.name`` when that is a module
and to ``package`` (its ``__init__``) otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_flows"
MAX_MODULE_LINES = 600
MAX_FUNCTION_CODE_LINES = 120


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = package[: len(package) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    out = []
    for alias in node.names:
        child = f"{name}.{alias.name}"
        target = child if child in modules else name
        if target in modules:
            out.append(target)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the pyro_flows modules it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(
                    t for t in _imported(module, path, node, modules) if t != module
                )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_import_graph_sees_local_and_type_checking_imports():
    graph = import_graph()
    # VariationalDequantization imports the builders inside __init__ (its default flow), and
    # compare.report imports Comparison under TYPE_CHECKING only
    assert "pyro_flows.flows" in graph["pyro_flows.data.dequantization"]
    assert "pyro_flows.compare.comparison" in graph["pyro_flows.compare.report"]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_modules_are_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def _code_lines(source: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    docstring = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and (isinstance(first.value.value, str))
    )
    start = first.end_lineno + 1 if docstring and len(body) > 1 else first.lineno
    lines = source[start - 1 : node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_functions_are_short():
    long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(lines, node)
                if n > MAX_FUNCTION_CODE_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({n} code lines)")
    assert not long, long


def test_one_registry_per_kind():
    """Builders, targets and compare methods each have one table that the others read."""
    from pyro_flows import flows
    from pyro_flows.compare import ALL_METHODS, METHODS
    from pyro_flows.compare.method_registry import METHOD_SPECS
    from pyro_flows.compare.settings import FlowSettings
    from pyro_flows.infer.autoflow import FLOW_BUILDERS
    from pyro_flows.targets import TARGETS

    assert set(FLOW_BUILDERS) == {n for n, s in flows.BUILDERS.items() if s.guide}
    assert tuple(METHOD_SPECS) == ALL_METHODS
    assert METHODS == tuple(n for n, s in METHOD_SPECS.items() if s.default)
    with pytest.raises(ValueError, match="builder"):
        FlowSettings("no-such-builder", (8,))
    assert {"funnel", "gmm40", "many_well", "ring", "mixture"} <= set(TARGETS)
