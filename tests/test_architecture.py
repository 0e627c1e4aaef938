"""The layout's house rules, read from the source (ast): what each package may import, and module size.

- ``trainers.config`` is the one contract the sweeper shares with the trainer: no module of ``sweeper/``
  imports another trainer module, except the trial process (``sweeper/run/trial/``), which runs the trainer.
- The sweeper never imports torch (a login node drives studies); the trainer never imports optuna or
  mlflow (it reports through ``trainers.reporting``).
- Modules stay one concept: none is much over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEPER, TRAINERS = REPO / "sweeper", REPO / "trainers"
TRIAL_PROCESS = SWEEPER / "run" / "trial"
MAX_MODULE_LINES = 620


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
        for path in sources(SWEEPER) if TRIAL_PROCESS not in path.parents
        for module, line in imported_modules(path)
        if module.split(".")[0] == "trainers" and module != "trainers.config"
    ]
    assert not offending, offending


def test_the_trial_process_is_where_the_sweeper_meets_the_trainer():
    assert any(module.startswith("trainers.") and module != "trainers.config"
               for path in sources(TRIAL_PROCESS) for module, _ in imported_modules(path))


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
    too_long = {str(path.relative_to(REPO)): n for path in sources(SWEEPER) + sources(TRAINERS)
                if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"split these modules by concept: {too_long}"
