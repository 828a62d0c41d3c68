"""The import graph of ``src/ffsolve``, read with ``ast`` (nothing is imported to build it).

Layers, from the bottom: the solver engine (``ffsolve`` itself, ``solvers``, ``recurrence``,
``autotune`` with its machinery ``tuning``, ``speculative``, ``deadline``, ``timing``,
``runtime``), the shared kit (``ffsolve.kit``), the data (``ffsolve.data``), the experiments
(``ffsolve.experiments``) and what serves only the workflow (``ffsolve.workflow``). Checked here:

* no import cycle between modules at all: neither among the imports that run at import time
  (module level, also inside ``if``/``try``) nor with the deferred imports (inside functions)
  added, in any layer, the solver engine included. Where two modules need each other, the pieces
  both need live in a module below them (``solvers.result``, ``recurrence.programs``,
  ``recurrence.jacobians``, ``tuning``), or the lower one is handed what it needs by its caller
  (``solvers.core`` hands ``solve`` to ``tuning``; ``autotune``, above both, does the same);
* nothing imported upward: no module imports a layer above its own (the kit no experiment or
  workflow module, the engine nothing of the kit, the data, the experiments or the workflow),
  deferred imports included;
* the experiments use the shared layer through its one public face: from ``ffsolve.kit`` only
  names in ``ffsolve.kit.__all__`` (no ``ffsolve.kit.<submodule>``), from the rest of the library
  only the public faces ``ffsolve``, ``ffsolve.data`` and ``ffsolve.recurrence`` (with its public
  modules), never a private (``_``) name, never another experiment and never the workflow.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ffsolve"

LAYERS = ("engine", "kit", "data", "experiments", "workflow")  # bottom to top


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("kit", "data", "experiments", "workflow"):
        return parts[1]
    return "engine"


class Import:
    """One imported module (and the names taken from it) at a line of a module."""

    def __init__(self, target: str, names: tuple[str, ...], line: int, deferred: bool):
        self.target, self.names, self.line, self.deferred = target, names, line, deferred


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, deferred):
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "ffsolve":
                        found.append(Import(alias.name, (), child.lineno, deferred))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "ffsolve":
                    found.append(Import(target, tuple(a.name for a in child.names), child.lineno, deferred))
            visit(child, inner)

    visit(tree, False)
    return found


IMPORTS = {module: _imports(module) for module in MODULES}


def _targets(imp: Import) -> set[str]:
    """The modules one import statement imports (a name that is a submodule counts as that
    module)."""
    submodules = [f"{imp.target}.{name}" for name in imp.names if f"{imp.target}.{name}" in MODULES]
    out = set(submodules)
    if imp.target in MODULES and len(submodules) < len(imp.names) or not imp.names:
        out.add(imp.target)
    return {m for m in out if m in MODULES}


def _edges(module: str, deferred: bool) -> set[str]:
    """The modules ``module`` imports."""
    out = set()
    for imp in IMPORTS[module]:
        if imp.deferred and not deferred:
            continue
        out |= _targets(imp)
    out.discard(module)
    return out


def _cycles(deferred: bool) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph = {m: _edges(m, deferred) for m in MODULES}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            connect(v)
    return found


def test_the_graph_is_read():
    assert "ffsolve.kit" in MODULES and "ffsolve.workflow.config" in MODULES
    assert "ffsolve.kit.harness" in _edges("ffsolve.kit", deferred=False)


def _describe(cycles: list[list[str]], deferred: bool) -> str:
    """Each cycle's modules and the imports (file:line) that join them."""
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle: " + " ⇄ ".join(component))
        for module in component:
            for imp in IMPORTS[module]:
                if imp.deferred and not deferred:
                    continue
                for target in sorted(_targets(imp) & members - {module}):
                    kind = "deferred" if imp.deferred else "module level"
                    lines.append(f"  {MODULES[module].relative_to(SRC.parent)}:{imp.line}: "
                                 f"{module} imports {target} ({kind})")
    return "\n".join(lines)


def test_no_import_cycle_at_import_time():
    cycles = _cycles(deferred=False)
    assert cycles == [], "modules that import each other (module level):\n" + _describe(
        cycles, deferred=False)


def test_no_import_cycle_with_deferred_imports():
    cycles = _cycles(deferred=True)
    assert cycles == [], ("modules that import each other (deferred imports, inside functions, "
                          "included; move what both need into a module below them):\n"
                          + _describe(cycles, deferred=True))


def test_nothing_is_imported_upward():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module in MODULES:
        for target in _edges(module, deferred=True):
            if rank[layer(target)] > rank[layer(module)]:
                upward.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert upward == []


def _public_face(module: str) -> set[str]:
    """The names a module offers: its ``__all__`` (read by importing it: no torch or JAX) and its
    public submodules."""
    imported = importlib.import_module(module)
    names = set(getattr(imported, "__all__", ()))
    prefix = module + "."
    names |= {m[len(prefix):] for m in MODULES if m.startswith(prefix) and "." not in m[len(prefix):]
              and not m[len(prefix):].startswith("_")}
    return names


EXPERIMENT_MODULES = sorted(m for m in MODULES if m.count(".") >= 2 and layer(m) == "experiments")


def test_the_kit_face_is_public():
    import ffsolve.kit

    assert not [n for n in ffsolve.kit.__all__ if n.startswith("_")]
    missing = [n for n in ffsolve.kit.__all__ if not hasattr(ffsolve.kit, n)]
    assert missing == [], "names in ffsolve.kit.__all__ that it does not give"


@pytest.mark.parametrize("module", EXPERIMENT_MODULES)
def test_experiments_use_the_public_faces(module):
    own = ".".join(module.split(".")[:3])  # ffsolve.experiments.<exp>
    faces = {"ffsolve": None, "ffsolve.kit": None, "ffsolve.data": None, "ffsolve.recurrence": None}
    wrong = []
    for imp in IMPORTS[module]:
        where = f"{MODULES[module].relative_to(SRC.parent)}:{imp.line}"
        if imp.target == own or imp.target.startswith(own + "."):
            continue
        if imp.target == "ffsolve.experiments":
            if set(imp.names) - {"EXPERIMENTS", "layout_of"}:
                wrong.append(f"{where}: another experiment through ffsolve.experiments ({imp.names})")
            continue
        if imp.target.startswith("ffsolve.recurrence.") and not any(
                part.startswith("_") for part in imp.target.split(".")):
            continue  # a public module of the recurrence solvers (ffsolve.recurrence.cells)
        if imp.target not in faces:
            wrong.append(f"{where}: from {imp.target} (past the public faces {sorted(faces)})")
            continue
        if faces[imp.target] is None:
            faces[imp.target] = _public_face(imp.target)
        for name in imp.names:
            if name.startswith("_") or name not in faces[imp.target]:
                wrong.append(f"{where}: {name!r} is not in {imp.target}'s public face")
    assert wrong == []
