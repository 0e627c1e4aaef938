"""``sweeper verify study.yaml --seeds N``: before paying for a full run, rerun the chosen config and the
study's baseline with N fresh training seeds, through the study's own executor, and measure the gain.

The verification is a study of its own, ``<study>-verify-t<chosen>-vs-t<baseline>-s<N>``, in the same
storage and MLflow experiment (its trials in ``<study dir>/verify/``), with two trials: the chosen trial's
exact config and the baseline's, each run with the same N seeds (``budget.seeds`` N; seeds the study never
used). Its answer is the paired gain over those seeds (:func:`sweeper.results.compare.paired_gain`): an interval
that includes the run-to-run randomness of training, which a study's single-seed trials cannot show.
Re-running the command resumes the same verification (and prints it when it is done).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sweeper.results.compare import Gain, baseline_trial, paired_gain
from sweeper.contract import ATTR_SEEDS, RUN_DIR, objective_estimate
from sweeper.run.driver import Driver
from sweeper.results.export import choose_trial, trial_config
from sweeper.run.interrupts import stop_signals_interrupt
from sweeper.study.pruning import NoPrunerSpec
from sweeper.study.samplers import RandomSamplerSpec
from sweeper.study.schema import SpecError
from sweeper.study.space import SampledConfig, SpaceSpec, set_path
from sweeper.study.spec import StudySpec, load_spec
from sweeper.statistics import Estimate
from sweeper.run.storage import open_study

ARMS = ("chosen", "baseline")


@dataclass(frozen=True)
class Verification:
    study_name: str
    seeds: list[int]
    chosen: int                      # the trial numbers in the original study
    baseline: int
    estimates: dict[str, Estimate]   # arm -> its value over the fresh seeds
    gain: Gain | None                # chosen over baseline, paired over the seeds

    def lines(self, metric: str) -> list[str]:
        out = [f"verification {self.study_name}: trial {self.chosen} vs the baseline (trial {self.baseline}), "
               f"fresh seeds {self.seeds}"]
        for arm, number in (("chosen", self.chosen), ("baseline", self.baseline)):
            estimate = self.estimates.get(arm)
            out.append(f"  trial {number} ({arm}): {metric} = {estimate.text() if estimate else 'no complete result'}")
        out.append(f"  gain: {self.gain.text()}" if self.gain else "  gain: not measured (an arm did not complete)")
        return out


class _VerifyDriver(Driver):
    """The driver, with each trial's config taken from its arm instead of sampled from a space."""

    def __init__(self, spec: StudySpec, configs: dict[str, dict[str, Any]], **options: Any):
        super().__init__(spec, **options)
        self.configs = configs

    def _trial_config(self, trial: Any, trial_dir: Path) -> tuple[SampledConfig, dict[str, Any]]:
        arm = trial.suggest_categorical("arm", list(ARMS))
        config = copy.deepcopy(self.configs[arm])
        set_path(config, "train.output_dir", str(trial_dir / RUN_DIR))
        return SampledConfig(config=config, sampled={"arm": arm}), config


def verify(spec: StudySpec | str | Path, seeds: int, *, trial: int | None = None, max_parallel: int | None = None,
           progress: bool | None = None, log: Callable[[str], None] | None = None) -> Verification:
    """Run (or resume) the verification of the chosen trial (default: the best) against the baseline."""
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if seeds < 2:
        raise SpecError(f"--seeds must be at least 2 (a spread over seeds needs two), got {seeds}")
    if spec.is_multi_objective:
        raise SpecError("verify compares one objective; this study has several")
    study, _ = open_study(spec, create=False)
    chosen = choose_trial(study, spec, trial=trial)
    baseline = baseline_trial(study)
    if baseline is None:
        raise SpecError(f"study {spec.study.name!r} has no complete baseline trial: name one with objective.baseline "
                        f"(or a first enqueue entry) and run the study")
    if chosen.number == baseline.number:
        raise SpecError(f"trial {chosen.number} is the baseline itself: choose another with --trial")
    configs = {"chosen": trial_config(spec, chosen), "baseline": trial_config(spec, baseline)}
    used = [s for t in study.get_trials(deepcopy=False) for s in (t.user_attrs.get(ATTR_SEEDS) or [])]
    used += [c["seed"] for c in configs.values()]
    first = max(used) + 1
    for config in configs.values():
        config["seed"] = first
    name = f"{spec.study.name}-verify-t{chosen.number}-vs-t{baseline.number}-s{seeds}"
    verification_spec = spec.model_copy(update={
        "study": spec.study.model_copy(update={"name": name, "dir": str(spec.study_dir / "verify" / name)}),
        "objective": [o.model_copy(update={"baseline": None}) for o in spec.objective],
        "space": SpaceSpec(),
        "enqueue": [{"arm": "baseline"}, {"arm": "chosen"}],   # the first entry is the verification's baseline
        "sampler": RandomSamplerSpec(type="random", seed=0),
        "pruner": NoPrunerSpec(type="none", health=spec.pruner.health),
        "budget": spec.budget.model_copy(update={"n_trials": 2, "timeout": None, "steps": None, "seeds": seeds,
                                                 "max_parallel": min(2, max_parallel or spec.budget.max_parallel)}),
    })
    verification_spec._source_file = spec.source_file
    driver = _VerifyDriver(verification_spec, configs, progress=progress, log=log)
    with stop_signals_interrupt():  # SIGTERM and SIGHUP stop it like Ctrl-C (sweeper.run.interrupts)
        driver.run()
    trials = {t.params.get("arm"): t for t in driver.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
    estimates = {arm: objective_estimate(t) for arm, t in trials.items()}
    gain = paired_gain(trials["chosen"], trials["baseline"], spec.directions[0]) if len(trials) == 2 else None
    return Verification(name, list(range(first, first + seeds)), chosen.number, baseline.number, estimates, gain)
