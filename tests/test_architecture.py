"""The layout's house rules, read from the source (ast): what each package may import, and module size.

- ``trainers.config`` is the one contract the sweeper shares with the trainer: no module of ``sweeper/``
  imports another trainer module, except the trial process (``sweeper/run/trial/``), which runs the trainer.
- The sweeper never imports torch (a login node drives studies); the trainer never imports optuna or
  mlflow (it reports through ``trainers.reporting``).
- Modules stay one concept: none is much over 600 lines.
- No import loop in ``sweeper/`` or ``trainers/`` (every import: absolute and relative, inside functions and
  ``if TYPE_CHECKING:`` blocks too), and at most :data:`MAX_FLOORS` floors of imports inside ``sweeper/``.
- The sweeper's phases import one way (:data:`PHASES`): the shared modules (contract, statistics, decisions,
  paths, urls, redaction, registry) import no phase; ``study`` (define a study) imports only shared modules;
  ``tracking`` (MLflow, the report) reads ``study``; ``run`` reads ``tracking`` and ``study``; ``results`` reads
  all of them; the CLI and the package's API sit on top.
- The registry (:mod:`sweeper.registry`) names the components' modules by string (``"module:attribute"``),
  which is how the spec validates an executor section without importing the run phase, and how the run phase
  finds a storage kind: a plugin lookup, both ways by design. Its entries are read here too (never hidden):
  each names a module of the kind's phase (samplers and pruners in ``study``, executors and storages in
  ``run``) that exists, and no entry's module imports the spec.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEPER, TRAINERS = REPO / "sweeper", REPO / "trainers"
TRIAL_PROCESS = SWEEPER / "run" / "trial"
MAX_MODULE_LINES = 620
MAX_FLOORS = 8
# phase of each sweeper module, by module-name prefix (longest prefix wins); a module may import its own phase and below
PHASES = {
    "sweeper.contract": 0,
    "sweeper.statistics": 0,
    "sweeper.paths": 0,
    "sweeper.urls": 0,
    "sweeper.registry": 0,
    "sweeper.redaction": 0,
    "sweeper.decisions": 0,
    "sweeper.study": 1,
    "sweeper.tracking": 2,
    "sweeper.run": 3,
    "sweeper.results": 4,
    "sweeper": 5,
    "sweeper.cli": 5,
    "sweeper.__main__": 5,
}
PHASE_NAMES = ["shared", "study", "tracking", "run", "results", "cli/api"]


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a file, inside functions too; relative imports skipped."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def sources(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def test_sweeper_imports_no_trainer_module_but_the_shared_config():
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources(SWEEPER)
        if TRIAL_PROCESS not in path.parents
        for module, line in imported_modules(path)
        if module.split(".")[0] == "trainers" and module != "trainers.config"
    ]
    assert not offending, offending


def test_the_trial_process_is_where_the_sweeper_meets_the_trainer():
    assert any(
        module.startswith("trainers.") and module != "trainers.config"
        for path in sources(TRIAL_PROCESS)
        for module, _ in imported_modules(path)
    )


@pytest.mark.parametrize("package, forbidden", [(SWEEPER, ("torch",)), (TRAINERS, ("optuna", "mlflow", "sweeper"))])
def test_forbidden_imports(package, forbidden):
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources(package)
        for module, line in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]
    assert not offending, offending


def test_modules_stay_one_concept_in_size():
    too_long = {
        str(path.relative_to(REPO)): n
        for path in sources(SWEEPER) + sources(TRAINERS)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"split these modules by concept: {too_long}"


# --------------------------------------------------------------------------- the import graph


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """{module: {imported module of the same tree: line}} for every ``.py`` under ``package``. ``from a import b``
    points at ``a.b`` when that is a module, else at ``a``; relative imports are resolved; imports inside
    functions and ``if TYPE_CHECKING:`` count."""
    paths = {module_name(p): p for p in sources(package)}
    graph: dict[str, dict[str, int]] = {name: {} for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in paths else module for a in node.names]
            for target in targets:
                while target not in paths and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in paths and target != name:
                    graph[name].setdefault(target, getattr(node, "lineno", 0))
    return graph


def loops(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def floors(graph: dict[str, dict[str, int]]) -> dict[str, int]:
    """A module's floor: 1 + the highest floor it imports (1: imports no module of the tree). Needs no loop."""
    floor: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in floor:
            floor[node] = 1 + max((of(t) for t in graph[node]), default=0)
        return floor[node]

    for node in graph:
        of(node)
    return floor


def phase(module: str) -> int:
    prefix = max((p for p in PHASES if module == p or module.startswith(p + ".")), key=len)
    return PHASES[prefix]


@pytest.mark.parametrize("package", [SWEEPER, TRAINERS], ids=["sweeper", "trainers"])
def test_no_import_loop(package):
    graph = import_graph(package)
    found = loops(graph)
    described = [
        " <-> ".join(component)
        + ": "
        + "; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in component for b in graph[a] if b in component)
        for component in found
    ]
    assert not found, "import loops (a loop means two modules are one concept, or one is missing):\n" + "\n".join(
        described
    )


def test_the_graph_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The checker itself, on a small tree: relative, absolute, in-function and TYPE_CHECKING imports all count."""
    tree = tmp_path / "pkg"
    (tree / "sub").mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    (tree / "sub" / "__init__.py").write_text("")
    (tree / "a.py").write_text("from .sub import b\n")
    (tree / "sub" / "b.py").write_text("def f():\n    import pkg.c\n")
    (tree / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..pkg import a\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    graph = import_graph(tree)
    assert graph["pkg.a"] == {"pkg.sub.b": 1} and graph["pkg.sub.b"] == {"pkg.c": 2}
    assert loops(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_at_most_eight_floors_of_imports_in_the_sweeper():
    graph = import_graph(SWEEPER)
    floor = floors(graph)
    top = max(floor, key=floor.get)
    chain = [top]
    while graph[chain[-1]]:
        chain.append(max(graph[chain[-1]], key=floor.get))
    assert floor[top] <= MAX_FLOORS, f"{floor[top]} floors: " + " -> ".join(chain)


def test_the_phases_import_one_way():
    graph = import_graph(SWEEPER)
    back = [
        f"{a} ({PHASE_NAMES[phase(a)]}) imports {b} ({PHASE_NAMES[phase(b)]}), line {line}"
        for a, targets in graph.items()
        for b, line in targets.items()
        if phase(b) > phase(a)
    ]
    assert not back, "imports against the phases (study <- tracking <- run <- results):\n" + "\n".join(back)


def test_every_sweeper_module_has_a_phase():
    for module in import_graph(SWEEPER):
        assert phase(module) in range(len(PHASE_NAMES)), module


REGISTRY_PHASES = {
    "sampler": "sweeper.study",
    "pruner": "sweeper.study",
    "executor": "sweeper.run",
    "storage": "sweeper.run",
}


def test_registry_entries_name_modules_of_their_phase_that_do_not_reach_back_to_the_spec():
    """The registry's by-name entries, read from the source like imports."""
    tree = ast.parse((SWEEPER / "registry.py").read_text())
    graph = import_graph(SWEEPER)
    entries = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "Registry"
            and isinstance(node.args[2], ast.Dict)
        ):
            kind = node.args[0].value
            entries += [(kind, value.value.partition(":")[0]) for value in node.args[2].values]
    assert {kind for kind, _ in entries} == set(REGISTRY_PHASES)
    reach: dict[str, set[str]] = {}

    def reachable(module: str) -> set[str]:
        if module not in reach:
            reach[module] = set()
            for target in graph[module]:
                reach[module] |= {target} | reachable(target)
        return reach[module]

    for kind, module in entries:
        assert module in graph, f"{kind} entry names {module}, which is not a module of sweeper/"
        assert module.startswith(REGISTRY_PHASES[kind] + "."), (
            f"{kind} entry {module} is outside {REGISTRY_PHASES[kind]}"
        )
        assert "sweeper.study.spec" not in reachable(module), f"{kind} entry {module} imports the spec (a loop by name)"
