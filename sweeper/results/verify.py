"""``sweeper verify study.yaml --seeds N [--prompts P]``: before paying for a full run, rerun the chosen config
and the study's baseline with N fresh training seeds on held-out prompts, through the study's own executor, and
measure the gain.

The verification is a study of its own, ``<study>-verify-t<chosen>-vs-t<baseline>-s<N>`` (``-p<P>`` with
``--prompts``), in the same storage and MLflow experiment (its trials in ``<study dir>/verify/``), with two
trials: the chosen trial's exact config and the baseline's, each run with the same N seeds (``budget.seeds`` N;
seeds the study never used), validated on **held-out** prompts: ``eval.split: heldout`` with
``eval.heldout_offset`` = the study's ``eval.num_prompts`` n and ``eval.num_prompts`` = P (default n), i.e.
validation problems ``[n, n + P)``, disjoint from the ``[0, n)`` the study selected on (trainers/data.py
``validation_prompts``; a synthetic validation set is drawn larger to hold them, a dataset's ``val_size`` too
small is refused here). With the objective's ``aggregation: last`` the arms validate at their last step only
(``train.eval_every`` = ``train.steps``, no step-0 validation): one validation of P prompts, not one per
``eval_every``. N >= 3: 1 is refused (no run-to-run spread), 2 warns.

Two gains, both on these prompts and seeds the choice was not made on (free of the winner's curse):

* **over new seeds, on these P prompts** (:func:`sweeper.results.compare.paired_gain`, i.e.
  :func:`sweeper.decisions.seed_gain`): paired by seed, SE from the sd of the N seeds' paired differences
  (N - 1 df). The prompts are held fixed: it says whether the gain on *these* P prompts is more than
  training randomness.
* **over new seeds and new prompts** (:func:`sweeper.decisions.prompt_seed_gain` on the per-prompt
  differences ``d[s][i]``, :func:`sweeper.results.compare.prompt_differences`): the SE adds the prompt x config
  interaction (a config helps on some prompts and hurts on others; prompt difficulty cancels in the pairing,
  the interaction does not), ``Var = s2_seed / N + s2_prompt / P + s2_e / (N P)``, Satterthwaite df. This is
  the question "does the selection hold on prompts it was not chosen on", and it **decides**: the selection
  *survives* when its interval excludes 0 on the side of a gain. When the per-prompt results are missing it
  falls back to the seed-paired gain and says so.

Re-running the command resumes the same verification (and prints it when it is done).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sweeper.decisions import PromptSeedGain, prompt_seed_gain
from sweeper.results.compare import Gain, baseline_trial, paired_gain, prompt_differences
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
    gain: Gain | None                # chosen over baseline, paired over the seeds, on these held-out prompts
    prompt_gain: PromptSeedGain | None = None   # chosen over baseline, over new seeds and new prompts
    prompts: int | None = None       # held-out prompts each arm validated on
    missing: str = ""                # why prompt_gain is None

    def lines(self, metric: str) -> list[str]:
        out = [f"verification {self.study_name}: trial {self.chosen} vs the baseline (trial {self.baseline}), "
               f"fresh seeds {self.seeds}, {self.prompts} held-out prompts"]
        for arm, number in (("chosen", self.chosen), ("baseline", self.baseline)):
            estimate = self.estimates.get(arm)
            out.append(f"  trial {number} ({arm}): {metric} = {estimate.text() if estimate else 'no complete result'}")
        if self.gain is None:
            out.append("  gain: not measured (an arm did not complete)")
        else:
            out.append(f"  gain on these {self.prompts} held-out prompts, over new seeds (seed-paired, the prompts "
                       f"held fixed): {self.gain.text()}")
            out.append(f"  gain over new prompts and new seeds (decides): {prompt_gain_text(self.prompt_gain)}"
                       if self.prompt_gain else
                       f"  gain over new prompts: not measured ({self.missing}); the verdict rests on the seed-paired "
                       f"gain, which says nothing of prompts beyond these {self.prompts}")
        out.append(f"  {self.verdict}")
        return out

    @property
    def deciding(self) -> Any:
        """The interval the verdict rests on: over new prompts and seeds, else (no per-prompt results) the seeds'."""
        return self.prompt_gain if self.prompt_gain is not None else (self.gain.difference if self.gain else None)

    @property
    def survives(self) -> bool:
        """True when the chosen config's gain over the baseline is significant and positive over new prompts and new
        seeds (without per-prompt results: over the fresh seeds on these held-out prompts)."""
        return self.deciding is not None and self.deciding.low > 0

    @property
    def verdict(self) -> str:
        if self.deciding is None:
            return "the selection is not verified: an arm did not complete"
        where = ("over new prompts and new seeds" if self.prompt_gain is not None else
                 f"on these {self.prompts} held-out prompts with fresh seeds")
        if self.survives:
            return f"the selection survives: trial {self.chosen} beats the baseline significantly {where}"
        if self.deciding.high < 0:
            return (f"the selection does NOT survive: trial {self.chosen} is significantly worse than the baseline "
                    f"{where}")
        return (f"the selection does NOT survive: {where}, trial {self.chosen}'s gain over the baseline is not "
                f"significant ({self._narrower})")

    @property
    def _narrower(self) -> str:
        g = self.prompt_gain
        if g is None:
            return "more seeds narrow the interval"
        if g.prompt_variance / g.prompts > g.seed_variance / g.seeds:
            return "the prompt x config interaction dominates its SE: more held-out prompts (--prompts) narrow it most"
        return "the seeds dominate its SE: more seeds (--seeds) narrow it most"


def prompt_gain_text(g: PromptSeedGain) -> str:
    """``+0.0001 [-0.040, +0.040] (95% interval; SE 0.020 over 3 seeds x 128 prompts: ...)``."""
    verdict = "significant" if g.significant else "NOT significant: the interval includes 0"
    return (f"{g.mean:+.4g} [{g.low:+.3g}, {g.high:+.3g}] ({100 * g.level:.3g}% interval; SE {g.se:.3g} over {g.seeds} "
            f"seeds x {g.prompts} prompts, two-way random effects: sd seed {g.seed_variance ** 0.5:.3g}, sd prompt x "
            f"config {g.prompt_variance ** 0.5:.3g}, residual sd {g.residual_variance ** 0.5:.3g}, Satterthwaite df "
            f"{g.df:.3g}; the seed-only SE is {g.seed_se:.3g}; {verdict})")


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


def verify(spec: StudySpec | str | Path, seeds: int, *, trial: int | None = None, prompts: int | None = None,
           max_parallel: int | None = None, progress: bool | None = None,
           log: Callable[[str], None] | None = None) -> Verification:
    """Run (or resume) the verification of the chosen trial (default: the best) against the baseline, on ``prompts``
    held-out prompts (default: the study's ``eval.num_prompts``) after the study's selection prompts."""
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if seeds < 2:
        raise SpecError(f"--seeds: give 3 or more (2 is accepted with a warning): a run-to-run spread needs several "
                        f"fresh seeds, 1 gives none; got {seeds}")
    if seeds == 2:
        warnings.warn("--seeds 2: two fresh seeds per config give the sd of their paired difference on 1 degree of "
                      "freedom, a very wide (or a luckily narrow) interval; use 3 or more", stacklevel=2)
    if prompts is not None and prompts < 2:
        raise SpecError(f"--prompts: give 2 or more held-out prompts (the gain over new prompts needs their spread); "
                        f"got {prompts}")
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
    selection = max(_eval_field(config, "num_prompts") for config in configs.values())   # the study's val[:n]
    for config in configs.values():
        config["seed"] = first
        _heldout(config, selection, prompts or selection, last_only=spec.objective[0].aggregation == "last")
    name = f"{spec.study.name}-verify-t{chosen.number}-vs-t{baseline.number}-s{seeds}"
    name += f"-p{prompts}" if prompts else ""
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
    differences = prompt_differences(trials["chosen"], trials["baseline"], spec.directions[0]) if gain else None
    if not _same_prompts(*configs.values()):
        prompt_gain, missing = None, "the arms' data sections differ, so their held-out prompts need not be the same"
    elif differences is not None and len(differences) >= 2 and len(differences[0]) >= 2:
        prompt_gain, missing = prompt_seed_gain(differences), ""
    else:
        prompt_gain, missing = None, "no per-prompt results on 2 or more common seeds to pair prompt by prompt"
    return Verification(name, list(range(first, first + seeds)), chosen.number, baseline.number, estimates, gain,
                        prompt_gain, prompts or selection, missing)


def _same_prompts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two arm configs validate the same prompts in the same order: the same data (but the reward) and the
    same held-out window (the eval sections are set alike by :func:`_heldout`)."""
    def prompts(config: dict[str, Any]) -> Any:
        data = {k: v for k, v in (config.get("data") or {}).items() if k != "reward"}
        return data, [_eval_field(config, name) for name in ("split", "heldout_offset", "num_prompts")]

    return prompts(a) == prompts(b)


def _eval_field(config: dict[str, Any], name: str) -> Any:
    from trainers.config import EvalConfig

    return (config.get("eval") or {}).get(name) or getattr(EvalConfig(), name)


def _heldout(config: dict[str, Any], selection: int, count: int, last_only: bool) -> None:
    """Validate on the ``count`` validation problems after the study's first ``selection`` (its selection prompts),
    and, when the objective is the last validation (``last_only``), only at the last step."""
    set_path(config, "eval.split", "heldout")
    set_path(config, "eval.heldout_offset", selection)
    set_path(config, "eval.num_prompts", count)
    _make_room_for_heldout(config)
    if last_only:
        from trainers.config import TrainConfig

        set_path(config, "train.eval_every", (config.get("train") or {}).get("steps") or TrainConfig().steps)
        set_path(config, "train.eval_at_start", False)


def _make_room_for_heldout(config: dict[str, Any]) -> None:
    """The validation set must hold eval.heldout_offset + eval.num_prompts problems (offset default: num_prompts).
    A synthetic one is drawn larger: its draw is sequential, so the first problems (the study's selection prompts)
    stay the same and the next ones are held out. A dataset's ``val_size`` (held out of the train split) too small
    is refused, naming the fields; rows of a ``val_split`` are checked by the trainer when it loads them."""
    data = config.get("data") or {}
    count = _eval_field(config, "num_prompts")
    needed = (_eval_field(config, "heldout_offset") or count) + count
    from trainers.config import DatasetConfig, SyntheticTaskConfig

    if (data.get("source") or "synthetic") == "synthetic":
        if (data.get("synthetic") or {}).get("val_size", SyntheticTaskConfig().val_size) < needed:
            set_path(config, "data.synthetic.val_size", needed)
        return
    dataset = data.get("dataset") or {}
    size = dataset.get("val_size") or DatasetConfig.model_fields["val_size"].default
    if dataset.get("val_split") is None and size < needed:
        raise SpecError(f"data.dataset.val_size is {size}: the held-out prompts are validation rows "
                        f"[{needed - count}, {needed}) (after the study's {needed - count} selection prompts), so it "
                        f"needs at least {needed}; lower --prompts to {size - (needed - count)} or less, or raise "
                        f"data.dataset.val_size in the study's base (which changes the training rows)")
