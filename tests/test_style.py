"""Style: ruff's lint and formatter (settings in pyproject.toml: line length 120) over the modules in
:data:`CHECKED`, an allow-list that grows as modules are touched. The rest of the tree is not reformatted in
one sweep (branches in flight would conflict on every line); a module joins the list when it is next edited.

The same check by hand: ``.venv/bin/ruff check FILES && .venv/bin/ruff format --check FILES``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = [
    "benchmarks/trial_startup.py",
    "sweeper/paths.py",
    "sweeper/registry.py",
    "sweeper/run/executors/__init__.py",
    "sweeper/run/executors/base.py",
    "sweeper/run/executors/local.py",
    "sweeper/run/mounts.py",
    "sweeper/run/race.py",
    "sweeper/run/report.py",
    "sweeper/run/storage_kinds.py",
    "sweeper/run/trial/outcome.py",
    "sweeper/study/budget.py",
    "sweeper/study/drivers.py",
    "sweeper/study/samplers.py",
    "sweeper/urls.py",
    "tests/test_architecture.py",
    "tests/test_race_rounds.py",
    "tests/test_race_rounds_sim.py",
    "tests/test_registries.py",
    "tests/test_style.py",
    "tests/test_trl_trials.py",
    "trainers/assets.py",
    "trainers/engines/trl_args.py",
    "trainers/validation.py",
]


def ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return found


def test_the_allow_list_names_files_that_exist():
    assert [path for path in CHECKED if not (REPO / path).is_file()] == []


@pytest.mark.parametrize("command", [["check"], ["format", "--check", "--diff"]], ids=["lint", "format"])
def test_ruff_passes_on_the_checked_modules(command):
    result = subprocess.run([ruff(), *command, *CHECKED], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
