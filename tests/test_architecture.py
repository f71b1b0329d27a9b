"""The house rules of bench/ (docs/architecture.md), checked on the source:

- stage sub-packages are layered: a module imports only modules of its own stage or of stages
  below it (``LAYERS``, lowest first), never one above, whether the import is at the top of the
  module or inside a function;
- no import cycle among bench modules;
- an import inside a function says why on its line or the line above (the usual reason: it keeps
  torch, transformers or Dask out of ``bench plan``, or out of a process that never needs them).
"""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
LAYERS = (
    "core",
    "models",
    "tasks",
    "training",
    "methods",
    "spec",
    "plan",
    "engines",
    "driver",
    "analysis",
    "study",
    "cli",
)


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(BENCH.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in BENCH.rglob("*.py")
    }


def _imports(path: Path) -> list[tuple[str, int, bool, int]]:
    """(bench module imported, line, inside a function?, last line) for every import of a bench module."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
            names = [node.module] if node.module != "bench" else [f"bench.{a.name}" for a in node.names]
            if node.module != "bench":  # `from bench.engines import runners` imports a module
                names += [f"{node.module}.{a.name}" for a in node.names]
            out += [(n, node.lineno, id(node) not in top, node.end_lineno) for n in names]
        elif isinstance(node, ast.Import):
            out += [
                (a.name, node.lineno, id(node) not in top, node.end_lineno)
                for a in node.names
                if a.name.startswith("bench.")
            ]
    return out


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {n for n, *_ in _imports(p) if n in mods and n != m} for m, p in mods.items() if m != "bench"}


def test_stages_import_only_their_own_or_lower_stages():
    bad = []
    for m, p in _modules().items():
        if m == "bench":
            continue
        for n, line, *_ in _imports(p):
            if n in _modules() and n != "bench" and _layer(n) > _layer(m):
                bad.append(
                    f"{p.relative_to(BENCH.parent)}:{line}: {m} ({LAYERS[_layer(m)]}) imports {n} "
                    f"({LAYERS[_layer(n)]}, a higher stage)"
                )
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n) :] + [m, n]) if n in stack else f"{m} -> {n}")
            elif n not in state:
                visit(n, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def test_every_import_inside_a_function_says_why():
    bad = []
    for p in _modules().values():
        lines = p.read_text().splitlines()
        for n, line, inner, last in _imports(p):
            said = any("#" in text for text in lines[line - 1 : last]) or lines[line - 2].strip().startswith("#")
            if inner and not said:
                bad.append(f"{p.relative_to(BENCH.parent)}:{line}: import of {n} inside a function, no reason given")
    assert not bad, f"{len(bad)} imports:\n" + "\n".join(sorted(set(bad)))
