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
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"data": 0, "config": 1, "run": 1, "context": 1, "runlog": 1, "lease": 1, "console": 1, "deploy": 2, "sampling": 2,
          "models": 3, "graph": 4, "evaluate": 5, "train": 5, "infer": 6, "influence": 6, "pipeline": 7, "cli": 8}


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


def third_party_imports() -> dict[str, set[str]]:
    """Top-level name of every non-stdlib, non-ripple module ripple/ imports (anywhere) -> the files importing it."""
    out: dict[str, set[str]] = {}
    for m, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "ripple" and top not in sys.stdlib_module_names and top != "__future__":
                    out.setdefault(top, set()).add(m)
    return out


def _dist_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_import_is_a_declared_dependency_or_a_named_extra():
    """A module ripple imports comes from a core dependency of pyproject.toml, or from an extra, and then the
    importing module names that extra (``pip install 'ripple[<extra>]'``) in its error."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_dist_name(r) for r in project["dependencies"]}
    extras = {name: {_dist_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()
              if name != "test"}
    dists = importlib.metadata.packages_distributions()
    problems = []
    for top, importers in sorted(third_party_imports().items()):
        names = {d.lower().replace("_", "-") for d in dists.get(top, [])}
        if not names:
            problems.append(f"{top} (imported by {sorted(importers)}) is not installed from any distribution")
        elif names & core:
            continue
        else:
            extra = next((e for e, members in extras.items() if names & members), None)
            unnamed = [m for m in importers if extra is None or f"ripple[{extra}]" not in
                       _modules()[m].read_text()]
            if unnamed:
                problems.append(f"{top} ({sorted(names)}) is not a core dependency, and {unnamed} do not name "
                                f"an extra that installs it" + (f" (ripple[{extra}])" if extra else ""))
    assert problems == []


def test_a_shard_actor_s_module_imports_neither_torch_nor_pyg():
    """A ``GraphShard`` actor's process imports its class's module. torch's import is about 145 MB of heap and
    PyG's 130 MB more, paid once per shard actor on every node: the actor loads and publishes its part without
    them, and imports torch only when it serves a request (``ShardData``, built on the first one)."""
    import subprocess

    code = ("import sys, ripple.graph.shard_actor; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torch_geometric'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
