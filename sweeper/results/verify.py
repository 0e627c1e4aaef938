"""``sweeper verify study.yaml --seeds N``: before paying for a full run, rerun the chosen config and the
study's baseline with N fresh training seeds, through the study's own executor, and measure the gain.

The verification is a study of its own, ``<study>-verify-t<chosen>-vs-t<baseline>-s<N>``, in the same
storage and MLflow experiment (its trials in ``<study dir>/verify/``), with two trials: the chosen trial's
exact config and the baseline's, each run with the same N seeds (``budget.seeds`` N; seeds the study never
used), validated on the **held-out** prompts (``eval.split: heldout``: the ``eval.num_prompts`` validation
problems after the ones the study selected on, trainers/data.py ``validation_prompts``). N >= 3: 1 is
refused (no run-to-run spread), 2 warns (1 df for the paired differences: a very wide interval, or a lucky
narrow one).

Its answer is the paired gain over those seeds (:func:`sweeper.results.compare.paired_gain`, i.e.
:func:`sweeper.decisions.seed_gain`: SE from the sd of the N seeds' paired differences, N - 1 df; the
seed's shared effect cancels in it): an interval that includes the run-to-run randomness of training,
which a study's single-seed trials cannot show, on prompts and seeds the choice was not made on, so free of
the winner's curse. The selection *survives* when that interval excludes 0 on the side of a gain.
Re-running the command resumes the same verification (and prints it when it is done).
"""

from __future__ import annotations

import copy
import warnings
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
        out.append(f"  gain on the held-out prompts: {self.gain.text()}" if self.gain else
                   "  gain: not measured (an arm did not complete)")
        out.append(f"  {self.verdict}")
        return out

    @property
    def survives(self) -> bool:
        """True when the chosen config's gain over the baseline is significant and positive on the held-out
        prompts with fresh seeds."""
        return self.gain is not None and self.gain.difference.low > 0

    @property
    def verdict(self) -> str:
        if self.gain is None:
            return "the selection is not verified: an arm did not complete"
        if self.survives:
            return (f"the selection survives: trial {self.chosen} beats the baseline significantly on held-out prompts "
                    f"with fresh seeds")
        if self.gain.difference.high < 0:
            return (f"the selection does NOT survive: trial {self.chosen} is significantly worse than the baseline on "
                    f"held-out prompts with fresh seeds")
        return (f"the selection does NOT survive: on held-out prompts with fresh seeds, trial {self.chosen}'s gain over "
                f"the baseline is not significant (more seeds narrow the interval)")


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
        raise SpecError(f"--seeds: give 3 or more (2 is accepted with a warning): a run-to-run spread needs several "
                        f"fresh seeds, 1 gives none; got {seeds}")
    if seeds == 2:
        warnings.warn("--seeds 2: two fresh seeds per config give the sd of their paired difference on 1 degree of "
                      "freedom, a very wide (or a luckily narrow) interval; use 3 or more", stacklevel=2)
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
        set_path(config, "eval.split", "heldout")  # prompts disjoint from those the study selected on
        _make_room_for_heldout(config)
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


def _make_room_for_heldout(config: dict[str, Any]) -> None:
    """A synthetic validation set smaller than 2 x eval.num_prompts is drawn larger for the verification: its
    draw is sequential, so the first eval.num_prompts problems (the study's selection prompts) stay the same
    and the next ones are held out (a dataset's is checked by the trainer when it loads it)."""
    data, evaluation = config.get("data") or {}, config.get("eval") or {}
    if (data.get("source") or "synthetic") != "synthetic":
        return
    from trainers.config import EvalConfig, SyntheticTaskConfig

    count = evaluation.get("num_prompts", EvalConfig().num_prompts)
    size = (data.get("synthetic") or {}).get("val_size", SyntheticTaskConfig().val_size)
    if size < 2 * count:
        set_path(config, "data.synthetic.val_size", 2 * count)
