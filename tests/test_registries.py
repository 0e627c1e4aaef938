"""The component registries (sweeper/registry.py): a toy sampler, pruner, executor and storage kind are
registered from this file alone, with no edit to spec, driver, cli or checks, and a real study runs through
all four (the stand-in trainer, trials in the driver's process). Also: every built-in entry resolves to a
kind whose ``type`` is its name, and an unknown kind is refused with the field and the accepted names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import optuna
import pytest

from sweeper.registry import EXECUTORS, PRUNERS, SAMPLERS, STORAGES
from sweeper.run.driver import run_study
from sweeper.run.executors.local import DebugExecutor, DebugExecutorSpec
from sweeper.run.storage import make_storage
from sweeper.study.pruning import PrunerSpecBase
from sweeper.study.samplers import SamplerSpecBase
from sweeper.study.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"
CALLS: dict[str, int] = {"sampler": 0, "pruner": 0, "submitted": 0}


class EveryOtherSampler(optuna.samplers.RandomSampler):
    """Random, counting the values it suggests."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        CALLS["sampler"] += 1
        return super().sample_independent(study, trial, param_name, param_distribution)


class ToySamplerSpec(SamplerSpecBase):
    type: Literal["toy_random"]

    def build(self, *, max_parallel: int = 1, seed_offset: int = 0, grid: dict[str, list[Any]] | None = None) -> Any:
        return EveryOtherSampler(seed=None if self.seed is None else self.seed + seed_offset)


class ThresholdPruner(optuna.pruners.BasePruner):
    """Prunes a trial whose latest value is below ``floor`` (and says why)."""

    def __init__(self, floor: float):
        self.floor = floor

    def prune(self, study, trial) -> bool:
        CALLS["pruner"] += 1
        value = trial.intermediate_values.get(trial.last_step) if trial.last_step is not None else None
        return value is not None and value < self.floor

    def explain(self) -> str:
        return f"below the floor {self.floor}"


class ToyPrunerSpec(PrunerSpecBase):
    type: Literal["toy_floor"]
    floor: float = 0.0

    def build(self, trial_steps: int | None, validation_steps: list[int] | None) -> Any:
        return ThresholdPruner(self.floor)


class CountingExecutor(DebugExecutor):
    def submit(self, trial_dir: Path, job_name: str):
        CALLS["submitted"] += 1
        return super().submit(trial_dir, job_name)


class ToyExecutorSpec(DebugExecutorSpec):
    type: Literal["toy_inline"]  # type: ignore[assignment]

    def build(self) -> CountingExecutor:
        return CountingExecutor(self)


class MemoryStorage:
    """``memory://<name>``: one in-memory Optuna storage per name, shared by everything in this process."""

    opened: dict[str, Any] = {}

    @classmethod
    def make(cls, url: str, *, worker: bool = False) -> Any:
        return cls.opened.setdefault(url, optuna.storages.InMemoryStorage())


@pytest.fixture
def toy_kinds():
    SAMPLERS.register("toy_random", ToySamplerSpec)
    PRUNERS.register("toy_floor", ToyPrunerSpec)
    EXECUTORS.register("toy_inline", ToyExecutorSpec)
    STORAGES.register("memory", MemoryStorage)
    CALLS.update(sampler=0, pruner=0, submitted=0)
    yield
    for registry, name in (
        (SAMPLERS, "toy_random"),
        (PRUNERS, "toy_floor"),
        (EXECUTORS, "toy_inline"),
        (STORAGES, "memory"),
    ):
        registry.unregister(name)


def study(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    spec = {
        "study": {"name": "toy", "storage": "memory://toy-study"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 4, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "toy_random", "seed": 3},
        "pruner": {"type": "toy_floor", "floor": 0.3},
        "budget": {"n_trials": 3},
        "executor": {"type": "toy_inline", "entrypoint": STANDIN},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    return spec


def test_a_toy_of_each_kind_runs_a_study_without_editing_spec_driver_cli_or_checks(tmp_path, toy_kinds):
    spec = load_spec(study(tmp_path), base_dir=tmp_path)
    assert isinstance(spec.sampler, ToySamplerSpec) and isinstance(spec.pruner, ToyPrunerSpec)
    assert isinstance(spec.executor, ToyExecutorSpec) and spec.pruner.floor == 0.3

    report = run_study(spec, progress=False, log=lambda _: None)

    trials = optuna.load_study(study_name="toy", storage=make_storage("memory://toy-study")).get_trials()
    assert len(trials) == 3 and report.launched == 3 and CALLS["submitted"] == 3
    assert CALLS["sampler"] == 3 and CALLS["pruner"] > 0
    # the stand-in's pass@8 at step 2 is q (1 - e^-0.2) + 0.05 <= 0.23 < the floor: every trial is pruned at step 2
    assert [t.state.name for t in trials] == ["PRUNED"] * 3
    assert all("below the floor 0.3" in t.user_attrs["prune_message"] for t in trials)


def test_an_unknown_kind_names_the_field_and_the_kinds_accepted(tmp_path, toy_kinds):
    with pytest.raises(SpecError) as error:
        load_spec(study(tmp_path, sampler={"type": "nope"}), base_dir=tmp_path)
    assert "sampler" in str(error.value) and "nope" in str(error.value) and "toy_random" in str(error.value)
    with pytest.raises(SpecError, match=r"study.storage.*memory"):
        load_spec(study(tmp_path, study={"name": "toy", "storage": "nosuch://x"}), base_dir=tmp_path)


def test_a_kind_unregistered_is_refused_again(tmp_path, toy_kinds):
    PRUNERS.unregister("toy_floor")
    with pytest.raises(SpecError, match="pruner"):
        load_spec(study(tmp_path), base_dir=tmp_path)


@pytest.mark.parametrize("registry", [SAMPLERS, PRUNERS, EXECUTORS], ids=lambda r: r.kind)
def test_every_built_in_entry_is_a_kind_named_by_its_type(registry):
    for name in registry:
        kind = registry.get(name)
        assert kind.model_fields["type"].annotation.__args__ == (name,), (name, kind)
        assert callable(getattr(kind, "build"))


def test_every_storage_scheme_opens(tmp_path):
    for name in STORAGES:
        assert callable(STORAGES.get(name).make), name
    assert make_storage(f"sqlite:///{tmp_path / 'a.db'}") is not None
    assert make_storage(f"journal://{tmp_path / 'a.log'}") is not None
