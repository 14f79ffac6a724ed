"""The package's import graph: no cycles, and no module importing from a layer above its own.

Layers, bottom up, along the data flow of DESIGN.md: ``data`` (tables, storage, generator, labels) < ``config``,
``run`` and ``context`` (the typed config tree, a run's layout, a worker's rank and device) < ``sampling`` (kernels,
PyG loader glue) and ``deploy`` (Ray Jobs, Kubernetes) < ``models`` (nn.Modules) < ``graph`` (where a worker's graph
lives: whole, or sharded over Ray actors) < ``train`` and ``evaluate`` < ``infer`` and ``influence`` < ``pipeline``
(the verbs) < ``cli``. Imports inside functions count: hiding an import in a function does not take it out of the
graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"data": 0, "config": 1, "run": 1, "context": 1, "deploy": 2, "sampling": 2, "models": 3, "graph": 4,
          "evaluate": 5, "train": 5, "infer": 6, "influence": 6, "pipeline": 7, "cli": 8}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (ROOT / "ripple").rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the ripple modules it imports (anywhere in its body)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ripple"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("ripple")]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t not in (m, "ripple") and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_imports_from_a_layer_above():
    graph = import_graph()
    upward = {(m, t) for m, ts in graph.items() if m != "ripple" for t in ts if _layer(t) > _layer(m)}
    assert upward == set(), "imports from a layer above"


def test_config_and_run_sit_on_storage_alone():
    graph = import_graph()
    assert graph["ripple.config"] == {"ripple.data.storage"}
    assert graph["ripple.run"] == {"ripple.data.storage"}


def test_the_checker_sees_cycles_and_hidden_imports():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert "ripple.pipeline" in import_graph()["ripple.cli"]  # imported inside its verbs
