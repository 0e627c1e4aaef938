"""How good is the pruning? A simulation of the decision rules over many studies, and measurements of
studies run for real (local executor, SQLite).

    python benchmarks/pruning_quality.py simulate [--studies 400]  # ~1 min: futility + racing, harm: rates
        [--shape 7|4|both] [--schedule in_trial|rounds|rounds_pure|both|all] [--rhos 0,0.5,0.9,0.97]
        [--no-harm] [--no-within]
    python benchmarks/pruning_quality.py standin [--trials 24]    # ~3 min: false prunes and power, known truth
    python benchmarks/pruning_quality.py quickstart [--parallel 2] # ~30 min: the quickstart with and without pruning
    python benchmarks/pruning_quality.py replay examples/quickstart.yaml  # seconds: other pruners on a finished study
    python benchmarks/pruning_quality.py race [--race-trials 7 --race-seeds 1-4 --delta 0.03]  # ~40 min: both race orders

``simulate``: stand-in studies whose truth is planted, decided by the same pure functions the pruners
use (:class:`sweeper.study.futility.FutilityRule`, :func:`sweeper.decisions.harm_p_value`), numpy for the
draws. A study has one of two shapes (``--shape``, default both): ``7``, the quickstart's earlier shape: 7
configs, the baseline first (true mean 0), then in random order one config +delta, two equal to the
baseline and three -delta; ``4``, the quickstart's current shape: the baseline (GRPO), then in random order
one +delta, one equal, one -delta. Two slots (trials in flight); a time unit = one seed's run. A race
runs under one of three schedules (``--schedule``, default all; both: in_trial and rounds):

* ``in_trial`` (the product's default): each config's trial runs its seeds one after another in its slot,
  with a seed look after each finished seed r, seeds_min <= r < seeds_max, against whatever the other
  configs have finished by then.
* ``rounds`` (``budget.race: rounds``, F-Race style, with a pairing config; :func:`race_rounds`, seed looks
  only):

  1. the baseline (config 0) runs all its seeds straight, one after another, never waits, is never judged;
     the *pairing config* (the first non-baseline config launched) runs its seeds straight too, exactly as
     under in_trial: a seed look after each finished seed r (seeds_min <= r < seeds_max) at that moment,
     stopped -> it leaves; it never waits. Its seeds, paired with the baseline's, give the rounds' looks a
     paired sd (without it, round 1 has none: the rule falls back on sqrt(2) x the baseline's sd);
  2. every other config runs its first seeds_min seeds; then, if it has seeds left, it waits: it frees its
     slot, and no look is made yet;
  3. new configs (the queue) are always launched first while slots are free;
  4. when the queue is empty, the waiting configs with the lowest finished-seed count r are resolved, but
     only once no running config (baseline and pairing config included; a survivor of an earlier look that
     waits for a slot to run its next seed counts as running) has fewer than r finished seeds. Resolution,
     in launch order: each gets its one seed look after r seeds, ``rule.judge(mine, others, reference=0)``,
     others = every other config's finished seed values (stopped ones included). Stopped ones leave the race;
  5. then, if exactly one non-baseline config is still in the race (no other non-baseline config running,
     waiting, about to run or queued, and none *complete*: a config that ran all its seeds and was not
     stopped is still a contender), and it is waiting or about to run, the race is *decided*: that config
     ends with the seeds it finished (no more seeds); stopped configs do not count;
  6. otherwise the survivors run their next seed in launch order as slots allow (the baseline's slot too
     once it is done), and after it wait again (unless it was their last seed: then they are complete).

  Runs end together when they started together (every run takes one time unit): the looks at a time come
  after every run ending then has recorded its seed (the pairing config's look too, before any round
  then). K (the looks a config can get) is the same as in_trial's: seeds_max - seeds_min.
* ``rounds_pure``: the earlier rounds, for comparison (``pairing=False``): no pairing config (order[1] waits
  like the others), and a complete config does not count against a decision.

A seed's objective is
``mu_c + b_s + e_cs``: ``b_s`` the seed's effect shared by every config (common seeds), ``e_cs`` the
config's own, with the total sd (``--sd``, default 0.019: the quickstart's objective spread 0.805-0.859
over 8 seeds of one config is 2.85 sd, the expected range of 8 normal draws) split by the seed
correlation ``rho`` (0, 0.5, 0.9, 0.97: unknown for pass@16; pass@8's paired SE of 0.001 over 3 seeds at
200 steps in issue 23 says it can be high; 0.97 is the quickstart of this round's: SIREN - GRPO over seeds
0-2 has an sd of 0.0036 against a single config's 0.016, 1 - rho = 0.0036^2 / (2 x 0.016^2), from 2 df:
very uncertain). Reported, with Wilson 95% intervals over studies:

* futility with racing (``budget.seeds`` 1-R), per shape and schedule (in_trial: races 1-3, 1-4, 1-6;
  rounds: 1-3, 1-4): false-futility rate (the +delta config stopped: the guarantee says <= alpha),
  trial-steps used / the full budget (configs x R seed runs), P(final best within delta of the true best),
  P(final best = the +delta config), the mean wall time (seed-run units, 2 slots; the full budget under
  in_trial takes ceil(configs / 2) x R) and, for rounds, the share of races decided. The final best: among
  the configs not stopped (a config a decided race ended included, the baseline with gain 0), the one with
  the largest mean paired difference from the baseline over their common seeds (under in_trial every
  config not stopped ran all R seeds: the best mean among them, the same choice).
* the same with **within-seed looks** (``warmup_step`` = the first validation: the rule also looks at
  every validation but a seed's last, K = (R - 1) + R x 2 for the quickstart's validations at steps 40,
  80, 120), for races 1-3 and 1-4, in_trial and the 7-config shape only (``--no-within`` skips them). A
  seed runs in 3 equal segments; a config stopped at step 40 of its r-th seed costs r - 1 + 1/3 runs. The
  model of a validation curve (assumptions, each measured on the
  quickstart study of this round, ``studies/quickstart/optuna.db``: the ``seed_curve/<seed>`` attrs of
  its 8 recorded seeds, 5 paired with the baseline's same seed):

  - a config's value at an intermediate validation k is ``ratio * mu_c + b_s + e_cs + x_csk``: its gap
    over the baseline at steps 40 and 80 is ``ratio`` (``--curve-ratio``, 0.45) times its gap at the end
    (regression through the origin of the paired differences at step 40 / 80 on those at 120: 0.51 /
    0.39; SIREN - GRPO: +0.019 at both 40 and 80, +0.034 at 120: entropy methods pull ahead late);
  - ``x_csk`` ~ N(0, ``--curve-sd``, 0.008), own to each config, seed and validation, independent of
    each other and of the final value (the residual sd of those regressions / sqrt 2: 0.005 at 40, 0.010
    at 80), on top of the seed's own final noise ``e_cs``; the seed's shared effect ``b_s`` is the same
    at every validation (it cancels in paired differences anyway);
  - the baseline's own drift over steps (pass@8 falls as GRPO sharpens) is common to every config and
    left out: the rule only sees differences.

  Three variants: the rule as the pruner applies it (delta at every look; its guarantee assumes the gap
  at a step does not grow later, which this model breaks); the rule with delta x ratio at validation
  looks (a variant the pruner does not have: it needs the ratio, measured here on 5 pairs); and the
  curve with ratio 1 (the gap already final at step 40: the guarantee's assumption).
* harm (the paired pruner's test) in a study with a fixed number of seeds: at each config's first seed,
  its value minus the incumbent's (the best complete config so far) on the same seed, with the prompts'
  SE (``--prompt-se``) and the run-to-run sd pooled over the complete configs: the study-wide false-harm
  rate (an equal or +delta config pruned in the study) and the per-trial rate for equal configs.

``standin``: studies of tests/noisy_trainer.py (validations like the real ones: per-prompt results, sampling
noise with common random numbers, a training-seed effect; the truth is known):

* *identical configs*: one config, a different training seed per trial. Every prune is a false prune. Once
  with seed noise per prompt only (the paired test's null holds), once with an extra shift of every prompt
  by the seed (training randomness the prompt-paired test cannot see). For the paired pruner and, as a
  contrast, Optuna's successive halving (which prunes by rank, significant or not).
* *power*: good (clip.eps_high 0.28) and worse (0.36: pass@8 about 0.08 lower) configs alternate; the
  fraction of worse trials pruned, and of good trials pruned (false).

The seed shift (``NOISY_SEED_SHIFT``, logits) moves every prompt of a run the same way; 0.3 moves pass@8 by
about 0.04 (one SD), the size of run-to-run differences seen on the shipped model.

``quickstart``: examples/quickstart.yaml with the real trainer, once with no pruner (the full budget) and
once with its own pruner: the trial-steps each used, and whether the pruned study's best is within noise
of the full study's best (the paired difference of the two bests over the validation prompts, with a 95%
interval). Goal (issue 11): the same best with at most a third of the trial-steps.

``replay``: a finished study run without pruning (every trial complete, e.g. the quickstart, which prunes
nothing) replayed under other pruners: the trials in their order, each reporting its recorded validations
(value and per-prompt results of its first seed) to the pruner as it did live; a trial the pruner stops at
step s costs s trial-steps, a trial it lets finish costs every seed's steps and keeps its recorded value.
Exact for the pruning decisions because a pruned run's validations up to step s are those of the full run
(same seeds; CPU runs are deterministic); two approximations: trials are replayed one at a time (live, two
ran at once, so the incumbent could differ), and the sampler's later choices are the recorded ones (a TPE
study that pruned would have sampled differently). For each pruner: trial-steps against the full budget,
its best, and the full study's best minus it, paired (over seeds when both ran several), with a 95% interval.
The futility pruner is replayed as a race over the study's seeds (``budget.seeds`` R >= 2): every trial's
seeds in order from their recorded values (``replicates``: every seed's, not only the first), a look after
seeds 1 .. R-1 against the trials before it; a trial stopped after r seeds costs r runs.

Prints a table; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeper.results.compare import paired_gain  # noqa: E402
from sweeper.contract import ATTR_LAST_STEP, ATTR_PRUNED_AT_STEP  # noqa: E402
from sweeper.run.driver import run_study  # noqa: E402
from sweeper.study.spec import load_spec  # noqa: E402
from sweeper.run.storage import make_storage  # noqa: E402

NOISY = f"{REPO / 'tests' / 'noisy_trainer.py'}:train"


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of a binomial proportion."""
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def run(spec: dict, folder: Path, env: dict[str, str] | None = None) -> list:
    path = folder / f"{spec['study']['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        run_study(path, progress=False, log=lambda _m: None)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    loaded = load_spec(path)
    return optuna.load_study(study_name=loaded.study.name, storage=make_storage(loaded.study.storage)).get_trials()


def standin_spec(name: str, pruner: dict, trials: int, space: dict, enqueue: list | None = None) -> dict:
    return {
        "study": {"name": name},
        "objective": {"metric": "val/pass@8", "aggregation": "last"},
        "base": {"train": {"steps": 40, "eval_every": 10}, "eval": {"num_prompts": 64, "n_samples": 16, "k": [1, 8]}},
        "space": {"params": space},
        "enqueue": enqueue or [],
        "sampler": {"type": "random", "seed": 0},
        "pruner": pruner,
        "budget": {"n_trials": trials, "max_parallel": 2},
        "executor": {"type": "local", "entrypoint": NOISY},
        "tracking": {"enabled": False},
    }


def standin(trials: int, folder: Path) -> list[dict]:
    rows = []
    paired = {"type": "paired", "p_threshold": 0.05, "run_sd": 0.02}
    pruners = {"paired (p 0.05, Bonferroni, 4 looks, run sd 0.02)": paired,
               "paired, min_difference 0.05": {**paired, "min_difference": 0.05},
               "successive halving (rungs 10, 20; x2)": {"type": "successive_halving", "min_resource": 10, "reduction_factor": 2}}
    seeds = {"clip.eps_high": 0.28, "seed": {"type": "int", "low": 0, "high": 10**6}}
    for index, (label, pruner) in enumerate(pruners.items()):
        for shift in ("0", "0.3"):
            done = run(standin_spec(f"same-{index}-{shift.replace('.', '')}", pruner, trials, seeds), folder,
                       {"NOISY_SEED_SHIFT": shift})
            pruned = sum(t.state.name == "PRUNED" for t in done)
            rows.append({"study": "identical configs (false prunes)", "pruner": label, "seed shift": shift,
                         "trials": len(done), "pruned": pruned, "rate": pruned / len(done), "interval": wilson(pruned, len(done))})
    for index, (label, pruner) in enumerate(pruners.items()):
        for shift in ("0", "0.3"):
            enqueue = [{"clip.eps_high": eps, "seed": 1000 + i} for i in range(trials // 2) for eps in (0.28, 0.36)]
            space = {"clip.eps_high": [0.28, 0.36], "seed": {"type": "int", "low": 0, "high": 10**6}}
            done = run(standin_spec(f"power-{index}-{shift.replace('.', '')}", pruner, len(enqueue), space, enqueue), folder,
                       {"NOISY_SEED_SHIFT": shift})
            for eps, what in ((0.36, "worse config pruned (power)"), (0.28, "good config pruned (false)")):
                group = [t for t in done if t.params["clip.eps_high"] == eps]
                pruned = sum(t.state.name == "PRUNED" for t in group)
                rows.append({"study": what, "pruner": label, "seed shift": shift, "trials": len(group),
                             "pruned": pruned, "rate": pruned / len(group), "interval": wilson(pruned, len(group))})
    return rows


PLANTED = (0, +1, 0, 0, -1, -1, -1)   # multiples of delta; index 0 is the baseline


VALIDATIONS = (40, 80, 120)   # the quickstart's validation steps (120 steps, eval_every 40)
CURVE_RATIO = 0.45            # a config's gap over the baseline at steps 40 and 80, as a share of its gap at 120
CURVE_SD = 0.008              # extra noise of a config's value at an intermediate validation (own, per look)


def draw_curves(rng, means, sd: float, rho: float, seeds: int, looks: int, ratio: float, extra_sd: float):
    """values[config, seed, k]: a config's objective at its k-th validation of a seed (k = looks - 1: the
    final value, the seed's objective ``mu_c + b_s + e_cs``). Intermediate validations (the within-seed
    model, see :func:`simulate`): ``ratio * mu_c + b_s + e_cs + x_csk``, x ~ N(0, extra_sd) own to each
    config, seed and validation."""
    import numpy as np

    shared = rng.normal(0, sd * math.sqrt(rho), seeds)
    own = rng.normal(0, sd * math.sqrt(1 - rho), (len(means), seeds))
    final = means[:, None] + shared[None, :] + own
    values = np.repeat(final[:, :, None], looks, axis=2)
    if looks > 1:
        values[:, :, :-1] = ((ratio * means[:, None] + shared[None, :] + own)[:, :, None]
                             + rng.normal(0, extra_sd, (len(means), seeds, looks - 1)))
    return values


SHAPES = {"7": PLANTED,             # the quickstart's earlier shape: one +delta, two equal, three -delta
          "4": (0, +1, 0, -1)}       # the quickstart's current shape: GRPO, one +delta method, one equal, one -delta
SCHEDULES = ("in_trial", "rounds", "rounds_pure")


def race_rounds(values, order, rule, seeds_min: int, seeds_max: int, parallel: int = 2, pairing: bool = True) -> dict:
    """The ``rounds`` schedule (F-Race style, see the module docstring) on given seed values:
    ``values[config, seed]`` (the seed's objective), ``order`` the launch order, ``order[0]`` the baseline
    (the reference of every look). A seed run takes one time unit; ``parallel`` slots. ``pairing`` (the
    product's ``budget.race: rounds``): ``order[1]`` is the pairing config, which runs its seeds straight with
    a seed look after each (as under in_trial), and a race is decided only when no other non-baseline config
    is in the race, complete ones included; False: the earlier, pure rounds (no pairing config; complete
    configs do not count against a decision).

    Returns ``finished`` ({config: {seed: value}}), ``stopped`` (set), ``decided`` (the config a decided race
    ended, or None) and ``decided_at`` (its time), ``runs`` (seed runs), ``wall`` (time units until the last
    run ended), ``launched`` ([(time, config, seed)] in launch order) and ``looks`` ([(time, config, r, stop)],
    the pairing config's looks included)."""
    baseline = order[0]
    pair = order[1] if pairing and len(order) > 1 else None
    rank = {c: i for i, c in enumerate(order)}
    finished: dict[int, dict[int, float]] = {c: {} for c in order}
    queue = list(order)
    running: dict[int, int] = {}       # config -> the seed it runs now
    pending: list[int] = []            # survivors of a look, to run their next seed as slots allow
    waiting: list[int] = []            # configs that freed their slot and wait for their look
    stopped: set[int] = set()
    decided, decided_at = None, None
    launched: list[tuple[int, int, int]] = []
    looks: list[tuple[int, int, int, bool]] = []

    def judge(config: int, r: int) -> bool:
        others = {c: v for c, v in finished.items() if c != config}
        stop = bool(rule.judge(finished[config], others, reference=baseline).stop)
        looks.append((t, config, r, stop))
        if stop:
            stopped.add(config)
        return stop

    def in_race(config: int) -> bool:
        """A non-baseline config still in the race (for a decision): not stopped, and running, waiting, about
        to run, or (with pairing) complete."""
        if config == baseline or config in stopped:
            return False
        if config in running or config in pending or config in waiting or config in queue:
            return True
        return pairing and len(finished[config]) == seeds_max

    t = 0
    while True:
        while True:                    # decisions at time t, until nothing changes
            while len(running) < parallel and (queue or pending):   # new configs first, then survivors
                config = queue.pop(0) if queue else pending.pop(0)
                running[config] = len(finished[config])
                launched.append((t, config, running[config]))
            if queue or not waiting:
                break
            r = min(len(finished[c]) for c in waiting)
            if any(len(finished[c]) < r for c in list(running) + pending):   # it still adds information at r
                break
            for config in sorted((c for c in waiting if len(finished[c]) == r), key=rank.get):
                waiting.remove(config)
                if not judge(config, r):
                    pending.append(config)
            pending.sort(key=rank.get)
            contenders = [c for c in order if in_race(c)]
            if len(contenders) == 1 and decided is None and (contenders[0] in pending or contenders[0] in waiting):
                # the race is decided: it ends with the seeds it has (the lone contender running, the pairing
                # config that runs its seeds straight, or complete: nothing to decide)
                decided, decided_at = contenders[0], t
                (pending if decided in pending else waiting).remove(decided)
        if not running:
            assert not (queue or pending or waiting), (queue, pending, waiting)
            break
        t += 1                          # every running seed ends (each takes one time unit)
        ended = list(running.items())
        for config, seed in ended:      # every run ending now records its seed before any look
            finished[config][seed] = float(values[config, seed])
        for config, _ in ended:
            count = len(finished[config])
            if count == seeds_max:
                del running[config]     # complete
            elif config == pair and count >= seeds_min and judge(config, count):
                del running[config]     # the pairing config's seed look (as in_trial): stopped, it leaves
            elif config in (baseline, pair) or count < seeds_min:
                running[config] = count  # its next seed, straight on in its slot
                launched.append((t, config, count))
            else:
                del running[config]
                waiting.append(config)
    return {"finished": finished, "stopped": stopped, "decided": decided, "decided_at": decided_at,
            "runs": sum(len(v) for v in finished.values()), "wall": t, "launched": launched, "looks": looks}


def final_best(finished: dict[int, dict[int, float]], stopped: set[int], baseline: int = 0) -> int:
    """The config not stopped with the largest mean paired difference from the baseline over their common
    seeds (the baseline: 0); ties go to the lower config number."""
    def gain(config: int) -> float:
        common = [s for s in finished[config] if s in finished[baseline]]
        if config == baseline:
            return 0.0
        return sum(finished[config][s] - finished[baseline][s] for s in common) / len(common)
    return max(sorted(c for c in finished if c not in stopped and finished[c]), key=gain)


def simulate_racing(rng, rule, delta: float, sd: float, rho: float, seeds_min: int, seeds_max: int,
                    parallel: int = 2, looks: int = 1, ratio: float = CURVE_RATIO, extra_sd: float = CURVE_SD,
                    validation_rule=None, schedule: str = "in_trial", planted=PLANTED) -> dict:
    """One stand-in study under futility racing (see the module docstring): what it stopped, spent, chose,
    and its wall time (seed-run units, ``parallel`` slots). ``schedule``: "in_trial" (each trial runs its seeds
    one after another in its slot, a look after each) or "rounds" (seed looks only: ``looks`` must be 1).
    ``planted``: the configs' true means in multiples of delta, index 0 the baseline.
    ``looks`` > 1: each seed runs in ``looks`` equal segments (validations), and the rule also looks at every
    validation but the last (``warmup_step`` = the first validation), comparing every config's values at that
    validation, as :meth:`sweeper.study.futility.FutilityPruner.at_validation` does (with ``validation_rule``
    when given: e.g. the rule with delta scaled by the gap ratio, a variant the pruner does not have)."""
    import numpy as np

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    order = [0] + list(1 + rng.permutation(len(planted) - 1))
    means = np.array(planted, dtype=float) * delta
    values = draw_curves(rng, means, sd, rho, seeds_max, looks, ratio, extra_sd)
    best_mean = means.max()
    if schedule.startswith("rounds"):
        if looks != 1:
            raise ValueError("the rounds schedule is simulated with seed looks only (looks=1)")
        raced = race_rounds(values[:, :, -1], [int(c) for c in order], rule, seeds_min, seeds_max, parallel,
                            pairing=schedule == "rounds")
        chosen = final_best(raced["finished"], raced["stopped"], 0)
        return {"false_futility": 1 in raced["stopped"], "runs": raced["runs"], "full": len(planted) * seeds_max,
                "within_delta": means[chosen] >= best_mean - delta - 1e-12, "found": chosen == 1,
                "wall": raced["wall"], "decided": raced["decided"]}
    finished: dict[int, dict[int, float]] = {}
    reached: dict[int, tuple[int, int]] = {}          # config -> (seeds started, validations done in the last)
    stopped: set[int] = set()
    queue, slots, segments, ticks = list(order), [], 0, 0
    while queue or slots:
        while queue and len(slots) < parallel:
            slots.append(queue.pop(0))
        ticks += 1                                    # one segment's time: every slot runs one segment
        for config in list(rng.permutation(slots)):  # segments ending in the same time unit, in random order
            config = int(config)
            seed, done_k = reached.get(config, (0, looks))
            if done_k == looks:                       # start the next seed
                seed, done_k = seed + 1, 0
            done_k += 1
            reached[config] = (seed, done_k)
            segments += 1
            stop = False
            if done_k < looks:                        # a validation look within seed `seed`
                if config != 0:
                    k = done_k - 1
                    mine = {s: float(values[config, s, k]) for s in range(seed)}
                    others = {c: {s: float(values[c, s, k]) for s in range(reached[c][0] if reached[c][1] > k else
                                                                              reached[c][0] - 1)}
                              for c in reached if c != config}
                    stop = (validation_rule or rule).judge(mine, {c: v for c, v in others.items() if v}, reference=0).stop
            else:
                mine = finished.setdefault(config, {})
                mine[seed - 1] = float(values[config, seed - 1, -1])
                if len(mine) < seeds_max and config != 0 and len(mine) >= seeds_min:
                    others = {c: v for c, v in finished.items() if c != config}
                    stop = rule.judge(mine, others, reference=0).stop
            if stop:
                stopped.add(config)
            if stop or len(finished.get(config, {})) == seeds_max:
                slots.remove(config)
    complete = [c for c, v in finished.items() if len(v) == seeds_max]
    chosen = max(complete, key=lambda c: sum(finished[c].values()))
    return {"false_futility": 1 in stopped, "runs": segments / looks, "full": len(planted) * seeds_max,
            "within_delta": means[chosen] >= best_mean - delta - 1e-12, "found": chosen == 1,
            "wall": ticks / looks, "decided": None}


def simulate_harm(rng, delta: float, sd: float, rho: float, seeds: int, prompt_se: float, p_threshold: float,
                  margin: float, allowance: float = 1.0) -> dict:
    """One stand-in study under harm pruning with a fixed number of seeds: which configs it pruned."""
    import numpy as np

    from sweeper.decisions import harm_p_value, harm_se, pooled_sd

    order = [0] + list(1 + rng.permutation(len(PLANTED) - 1))
    means = np.array(PLANTED, dtype=float) * delta
    shared = rng.normal(0, sd * math.sqrt(rho), seeds)
    values = means[:, None] + shared[None, :] + rng.normal(0, sd * math.sqrt(1 - rho), (len(PLANTED), seeds))
    complete: list[int] = []
    false_harm, equal_pruned, equal_judged = False, 0, 0
    for config in order:
        if complete and config != 0:
            pooled = pooled_sd([list(values[c]) for c in complete])
            incumbent = max(complete, key=lambda c: values[c].mean())
            difference = values[config, 0] - values[incumbent, 0] + rng.normal(0, prompt_se)
            if pooled.df > 0:
                shift = allowance * pooled.sd / math.sqrt(seeds)   # the pruner's allowance for the incumbent's selection
                p = harm_p_value(difference + shift, harm_se(prompt_se, pooled.sd), margin, pooled.df)
                pruned = p < p_threshold
                if PLANTED[config] >= 0 and pruned:
                    false_harm = True
                if PLANTED[config] == 0:
                    equal_judged += 1
                    equal_pruned += pruned
                if pruned:
                    continue
        complete.append(config)
    return {"false_harm": false_harm, "equal_pruned": equal_pruned, "equal_judged": equal_judged}


def simulate(studies: int = 400, delta: float = 0.03, sd: float = 0.019, alpha: float = 0.1, seed: int = 0,
             rhos=(0.0, 0.5, 0.9, 0.97), races=((1, 3), (1, 4), (1, 6)), prompt_se: float = 0.02,
             within_races=((1, 3), (1, 4)), curve_ratio: float = CURVE_RATIO, curve_sd: float = CURVE_SD,
             harm: bool = True, shapes=("7", "4"), schedules=SCHEDULES, rounds_races=((1, 3), (1, 4)),
             within: bool = True) -> list[dict]:
    """The simulated rates (see the module docstring); one row per (rho, shape, schedule, race), per (rho, race,
    curve ratio) with within-seed looks (the 7-config shape, in_trial), and per rho for harm. ``shapes``: keys
    of :data:`SHAPES`; ``schedules``: of :data:`SCHEDULES`."""
    import numpy as np

    from sweeper.study.futility import FutilityRule, race_looks

    rows = []
    for rho in rhos:
        # (schedule, shape, seeds_min, seeds_max, the gap ratio of the curve model or None: seed looks only,
        # scale the delta of a validation look by the ratio)
        cases = []
        for shape in shapes:
            if "in_trial" in schedules:
                cases += [("in_trial", shape, lo, hi, None, False) for lo, hi in races]
                if within and shape == "7":
                    cases += [("in_trial", shape, lo, hi, ratio, scaled) for lo, hi in within_races
                              for ratio, scaled in ((curve_ratio, False), (curve_ratio, True), (1.0, False))]
            cases += [(name, shape, lo, hi, None, False) for name in ("rounds", "rounds_pure") if name in schedules
                      for lo, hi in rounds_races]
        for schedule, shape, seeds_min, seeds_max, ratio, scaled in cases:
            validations = list(VALIDATIONS) if ratio is not None else None
            looks = race_looks(seeds_min, seeds_max, validations, VALIDATIONS[0] if validations else None)
            rule = FutilityRule(delta, alpha, looks=looks)
            at_validation = FutilityRule(delta * ratio, alpha, looks=looks) if scaled else None
            rng = np.random.default_rng(seed)
            results = [simulate_racing(rng, rule, delta, sd, rho, seeds_min, seeds_max,
                                       looks=len(VALIDATIONS) if validations else 1, ratio=ratio or 1.0,
                                       extra_sd=curve_sd, validation_rule=at_validation, schedule=schedule,
                                       planted=SHAPES[shape])
                       for _ in range(studies)]
            stops = sum(r["false_futility"] for r in results)
            within_delta = sum(r["within_delta"] for r in results)
            how = (f" + validation looks, K {looks}; gap at 40/80 = {ratio:g} x final"
                   + ("; delta x ratio at validations" if scaled else "") if validations else f", K {looks}")
            rows.append({"rule": f"futility, seeds {seeds_min}-{seeds_max}{how}", "rho": rho, "studies": studies,
                         "schedule": schedule, "shape": shape, "planted": SHAPES[shape],
                         "race": f"{seeds_min}-{seeds_max}",
                         "within_seed": bool(validations), "scaled": scaled,
                         "false_futility": stops / studies, "false_futility_interval": wilson(stops, studies),
                         "steps_ratio": sum(r["runs"] for r in results) / sum(r["full"] for r in results),
                         "within_delta": within_delta / studies, "within_delta_interval": wilson(within_delta, studies),
                         "found": sum(r["found"] for r in results) / studies,
                         "wall": sum(r["wall"] for r in results) / studies,
                         "decided": sum(r["decided"] is not None for r in results) / studies})
        for allowance in (1.0, 0.0) if harm else ():
            rng = np.random.default_rng(seed)
            results = [simulate_harm(rng, delta, sd, rho, 3, prompt_se, 0.05, 0.0, allowance) for _ in range(studies)]
            harmed = sum(r["false_harm"] for r in results)
            judged = sum(r["equal_judged"] for r in results)
            equal = sum(r["equal_pruned"] for r in results)
            rows.append({"rule": f"harm (paired, p 0.05, margin 0, allowance {allowance:g}), 3 seeds", "rho": rho,
                         "studies": studies, "false_harm": harmed / studies, "false_harm_interval": wilson(harmed, studies),
                         "equal_pruned": equal / max(1, judged), "equal_pruned_interval": wilson(equal, judged)})
    return rows


def trial_steps(trials: list, seeds: int = 1) -> int:
    """Training steps the trials ran: a pruned trial stops on its first seed; a complete one ran all ``seeds``."""
    return sum(int(t.user_attrs.get(ATTR_PRUNED_AT_STEP) or 0) if t.state.name == "PRUNED"
               else int(t.user_attrs.get(ATTR_LAST_STEP) or 0) * (seeds if t.state.name == "COMPLETE" else 1)
               for t in trials)


def quickstart(parallel: int, folder: Path) -> dict:
    spec = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec["base"] = spec["base"] if isinstance(spec["base"], dict) else str((REPO / "examples" / spec["base"]).resolve())
    spec["space"]["include"] = [i if i.startswith("builtin:") else str((REPO / "examples" / i).resolve())
                                for i in spec["space"].get("include", [])]
    spec["budget"]["max_parallel"] = parallel
    spec["tracking"] = {"enabled": False}
    results = {}
    for label, pruner in (("full budget (no pruner)", {"type": "none", "health": spec["pruner"].get("health", {})}),
                          (f"quickstart pruner ({spec['pruner']['type']})", spec["pruner"])):
        study = {**spec, "study": {"name": f"qs-{pruner['type']}"}, "pruner": pruner}
        started = time.time()
        done = run(study, folder)
        complete = [t for t in done if t.state.name == "COMPLETE"]
        best = max(complete, key=lambda t: t.value) if complete else None
        results[label] = {"trials": done, "best": best, "steps": trial_steps(done, int(spec["budget"].get("seeds", 1))),
                          "minutes": (time.time() - started) / 60,
                          "states": {s: sum(t.state.name == s for t in done) for s in ("COMPLETE", "PRUNED", "FAIL")}}
    (full, pruned) = results.values()
    gain = paired_gain(full["best"], pruned["best"]) if full["best"] and pruned["best"] else None
    return {"results": results, "gain": gain}


def race(orders: list[str], trials: int, seeds: str, delta: float, parallel: int, folder: Path) -> list[dict]:
    """The quickstart's study (examples/quickstart.yaml: its base, space, enqueued configs, sampler and futility
    pruner) raced at another scale: ``trials`` trials (the 4 enqueued configs, then TPE's start-up draws),
    ``budget.seeds`` ``seeds`` and ``delta``, once per race order (``budget.race``). Per order: trial-steps
    used (each seed's curve up to its last validation) over the full budget (trials x seeds x steps), how each
    trial ended and the best."""
    from sweeper.study.futility import steps_used

    spec = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec["space"]["include"] = [i if i.startswith("builtin:") else str((REPO / "examples" / i).resolve())
                                for i in spec["space"].get("include", [])]
    spec["pruner"]["delta"] = delta
    spec["tracking"] = {"enabled": False}
    rows = []
    for order in orders:
        study = {**spec, "study": {"name": f"race-{order}"},
                 "budget": {"n_trials": trials, "seeds": seeds, "max_parallel": parallel, "race": order}}
        started = time.time()
        done = [t for t in run(study, folder) if t.state.name != "WAITING"]   # enqueued configs past n_trials never ran
        maximum = int(seeds.split("-")[-1])
        full = trials * maximum * int(spec["base"]["train"]["steps"])
        used = sum(steps_used(t.user_attrs) for t in done)
        complete = [t for t in done if t.state.name == "COMPLETE"]
        best = max(complete, key=lambda t: t.value) if complete else None
        rows.append({"order": order, "trial_steps": used, "full": full, "ratio": used / full,
                     "minutes": (time.time() - started) / 60, "best": best.number if best else None,
                     "best_params": best.params if best else None,
                     "trials": [(t.number, t.state.name, len(t.user_attrs.get("seed_values") or {}),
                                 t.params.get("entropy.method")) for t in done]})
    return rows


REPLAY_PRUNERS = {
    "the study's own pruner": None,
    "futility racing, seeds 1-R, delta 0.03": {"type": "futility", "delta": 0.03},
    "futility racing, seeds 1-R, delta 0.02": {"type": "futility", "delta": 0.02},
    "futility racing, seeds 1-R, delta 0.03, looks at validations from step 40": {"type": "futility", "delta": 0.03,
                                                                                  "warmup_step": 40},
    "paired, run sd 0.02, no min_difference": {"type": "paired", "p_threshold": 0.05, "run_sd": 0.02},
    "median (Optuna's MedianPruner)": {"type": "median", "n_startup_trials": 2},
    "successive halving (x3, first rung = first validation)": {"type": "successive_halving", "reduction_factor": 3},
}


def _recorded_mean(trial, maximize: bool = True) -> float:
    """A trial's value for the replay: the mean over the seeds it recorded (a raced study's stopped trial has
    fewer than the others)."""
    from sweeper.contract import trial_seed_values

    values = trial_seed_values(trial.user_attrs)
    return sum(values.values()) / len(values) if values else float(trial.value)


def replay_race(recorded: list, pruner_spec, seeds_min: int, seeds: int, steps: int, maximize: bool, full_best,
                full_steps: int, label: str) -> dict:
    """Futility racing replayed on a finished study from every seed's recorded value (``seed_values`` /
    ``replicates``): the trials one at a time in trial order, each seed in order, a look after seeds
    seeds_min .. R-1 against the trials replayed before it (live, trials overlap: fewer others are known at a
    look). A trial the live study stopped has only the seeds it ran: when the replayed rule would go on past
    them, the replay cannot (``data_ends``): it counts the recorded seeds only and treats the trial as stopped."""
    from sweeper.study.futility import FutilityRule, race_looks, trial_seed_values, trial_values_at

    warmup = pruner_spec.warmup_step
    validations = sorted({int(s) for t in recorded for k, c in t.user_attrs.items() if k.startswith("seed_curve/") for s in c})
    early = [v for v in validations if warmup is not None and warmup <= v < steps]   # validation looks within a seed
    rule = FutilityRule(pruner_spec.delta, pruner_spec.alpha, pruner_spec.allowance, pruner_spec.sd, pruner_spec.sd_df,
                        pruner_spec.min_df, race_looks(seeds_min, seeds, validations or None, warmup))
    reference = next((t.number for t in recorded if t.user_attrs.get("baseline")), None)
    known: dict[int, dict[int, float]] = {}
    stopped, data_ends, used = {}, [], 0
    for trial in recorded:
        values = trial_seed_values(trial.user_attrs)
        baseline = bool(trial.user_attrs.get("baseline"))
        mine: dict[int, float] = {}
        for count, seed in enumerate(sorted(values), start=1):
            for step in early:                        # the seed's validations, against what is known at that step
                at_step = {s: v for s, v in trial_values_at(trial.user_attrs, step).items() if s in mine or s == seed}
                others = {n: {s: v for s, v in trial_values_at(t.user_attrs, step).items() if s in known[n]}
                          for t in recorded if (n := t.number) in known}
                if rule.judge(at_step, others, baseline, maximize, reference).stop:
                    stopped[trial.number] = f"at step {step} of seed {count}"
                    used += step
                    break
            if trial.number in stopped:
                break
            mine[seed] = values[seed]
            if seeds_min <= count < seeds:
                look = rule.judge(mine, known, baseline, maximize, reference)
                if look.stop:
                    stopped[trial.number] = f"after seed {count}"
                    break
        if trial.number not in stopped and len(mine) < seeds:
            data_ends.append(trial.number)
        known[trial.number] = mine
        used += len(mine) * steps
    kept = [t for t in recorded if t.number not in stopped and t.number not in data_ends]
    best = (max if maximize else min)(kept, key=lambda t: _recorded_mean(t))
    gain = paired_gain(full_best, best, "maximize" if maximize else "minimize") if best.number != full_best.number else None
    return {"label": label, "ratio": used / full_steps, "trial_steps": used, "full_trial_steps": full_steps,
            "complete": len(kept), "best": best.number, "best_value": _recorded_mean(best), "best_params": best.params,
            "difference": gain.text() if gain else "same trial", "within_noise": gain is None or not gain.difference.significant,
            "pruned_at": stopped, "data_ends": data_ends}


def replay(study_file: Path, pruners: dict[str, dict | None] = REPLAY_PRUNERS, seeds_min: int | None = None) -> list[dict]:
    """Each of ``pruners`` (label -> pruner section; None: the study's own) on the finished study ``study_file``
    (see the module docstring); per pruner, also ``pruned_at``: trial number -> the step it was stopped at.

    A raced study (``budget.seeds`` a range, the futility pruner) is replayed too: its stopped trials hold the
    seeds they ran (their first seed's validations complete), so a pruner that would stop them earlier is
    replayed exactly; one that would keep them needs seeds that were never run: such a trial (``data_ends``)
    costs what it recorded and counts as not complete. The full budget is every trial x R seeds x its steps;
    the reference best is the best trial that ran all R seeds."""
    from pydantic import TypeAdapter

    from sweeper.contract import per_prompt_attr
    from sweeper.study.pruning import PrunerSpec, build_pruner
    from sweeper.run.trial.process import validation_steps
    from trainers.config import parse_config

    spec = load_spec(study_file)
    recorded = [t for t in optuna.load_study(study_name=spec.study.name, storage=make_storage(spec.study.storage)).get_trials()
                if t.state.name in ("COMPLETE", "PRUNED")]
    seeds = int(spec.budget.seeds)
    unknown = [t.number for t in recorded if t.state.name == "PRUNED" and t.user_attrs.get("prune_reason") != "futility"]
    if not recorded or unknown:
        raise SystemExit(f"{study_file}: replay needs a study whose trials completed or were stopped by the futility pruner "
                         f"after whole seeds (run it with pruner type none or futility); pruned otherwise: {unknown}")
    config = parse_config(recorded[0].user_attrs["config"], "the first trial's config")
    steps = config.train.steps
    full_steps = len(recorded) * seeds * steps
    maximize = spec.directions[0] == "maximize"
    pick = max if maximize else min
    full = [t for t in recorded if len(t.user_attrs.get("seeds") or [0]) >= seeds and t.state.name == "COMPLETE"]
    full_best = pick(full, key=lambda t: _recorded_mean(t))
    rows = []
    for label, pruner_dict in pruners.items():
        pruner_spec = spec.pruner if pruner_dict is None else TypeAdapter(PrunerSpec).validate_python(pruner_dict)
        if pruner_spec.type == "futility":
            rows.append(replay_race(recorded, pruner_spec, seeds_min or spec.budget.seeds_min or 1, seeds, steps, maximize,
                                    full_best, full_steps, f"the study's own (futility)" if pruner_dict is None else label))
            continue
        pruner = build_pruner(pruner_spec, config.train.steps, validation_steps(config))
        study = optuna.create_study(direction=spec.directions[0], pruner=pruner)
        used, kept, stopped, data_ends = 0, [], {}, []
        for trial in recorded:
            live = study.ask()
            pruned_at = None
            for step, value in sorted(trial.intermediate_values.items()):
                live.set_user_attr(per_prompt_attr(step), trial.user_attrs.get(per_prompt_attr(step)))
                live.report(value, step)
                if live.should_prune():
                    pruned_at = step
                    break
            ran = len(trial.user_attrs.get("seeds") or [0])
            if pruned_at is None and ran < seeds:      # kept, but the live race stopped it: its later seeds never ran
                used += ran * steps
                data_ends.append(trial.number)
                study.tell(live, _recorded_mean(trial))
            elif pruned_at is None:
                used += seeds * steps
                study.tell(live, _recorded_mean(trial))
                kept.append(trial)
            else:
                used += pruned_at
                stopped[trial.number] = pruned_at
                study.tell(live, state=optuna.trial.TrialState.PRUNED)
        best = pick(kept, key=lambda t: _recorded_mean(t))
        gain = paired_gain(full_best, best, spec.directions[0]) if best.number != full_best.number else None
        rows.append({"label": f"the study's own ({pruner_spec.type})" if pruner_dict is None else label,
                     "ratio": used / full_steps, "trial_steps": used, "full_trial_steps": full_steps,
                     "complete": len(kept), "best": best.number, "best_value": _recorded_mean(best),
                     "best_params": best.params, "difference": gain.text() if gain else "same trial",
                     "within_noise": gain is None or not gain.difference.significant, "pruned_at": stopped,
                     "data_ends": data_ends})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["simulate", "standin", "quickstart", "replay", "race"])
    parser.add_argument("study", nargs="?", help="replay: the study YAML of a finished, unpruned study")
    parser.add_argument("--trials", type=int, default=24, help="standin: trials per identical-config study")
    parser.add_argument("--parallel", type=int, default=2, help="quickstart: trials in flight")
    parser.add_argument("--studies", type=int, default=400, help="simulate: stand-in studies per row")
    parser.add_argument("--curve-ratio", type=float, default=CURVE_RATIO,
                        help="simulate: a config's gap at an intermediate validation / its final gap")
    parser.add_argument("--curve-sd", type=float, default=CURVE_SD, help="simulate: extra noise at an intermediate validation")
    parser.add_argument("--delta", type=float, default=0.03, help="simulate: the futility pruner's delta")
    parser.add_argument("--sd", type=float, default=0.019, help="simulate: a config's run-to-run sd")
    parser.add_argument("--shape", choices=["7", "4", "both"], default="both",
                        help="simulate: the planted configs: 7 (0,+1,0,0,-1,-1,-1) or 4 (0,+1,0,-1) (x delta), or both")
    parser.add_argument("--schedule", choices=[*SCHEDULES, "both", "all"], default="all",
                        help="simulate: in_trial (a trial runs its seeds in its slot), rounds (budget.race: rounds: "
                             "with the pairing config), rounds_pure (the earlier rounds, no pairing config), both "
                             "(in_trial and rounds) or all")
    parser.add_argument("--rhos", default="0,0.5,0.9,0.97", help="simulate: the seed correlations, comma-separated")
    parser.add_argument("--no-harm", action="store_true", help="simulate: skip the harm rows")
    parser.add_argument("--no-within", action="store_true", help="simulate: skip the within-seed look rows")
    parser.add_argument("--race-trials", type=int, default=7, help="race: trials (the 4 enqueued configs, then TPE's)")
    parser.add_argument("--race-seeds", default="1-4", help="race: budget.seeds")
    parser.add_argument("--orders", default="in_trial,rounds", help="race: the budget.race orders, comma-separated")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pruning-quality-") as tmp:
        folder = Path(tmp)
        if args.what == "simulate":
            shapes = ("7", "4") if args.shape == "both" else (args.shape,)
            schedules = {"all": SCHEDULES, "both": ("in_trial", "rounds")}.get(args.schedule, (args.schedule,))
            output = simulate(args.studies, args.delta, args.sd, rhos=tuple(float(r) for r in args.rhos.split(",")),
                              curve_ratio=args.curve_ratio, curve_sd=args.curve_sd, harm=not args.no_harm,
                              shapes=shapes, schedules=schedules, within=not args.no_within)
            print(f"{args.studies} stand-in studies per row; delta {args.delta}, sd {args.sd}, alpha 0.1; 2 slots; "
                  f"within-seed looks: validations at {list(VALIDATIONS)}, curve ratio {args.curve_ratio}, "
                  f"curve sd {args.curve_sd}; shapes " + ", ".join(f"{k}: {SHAPES[k]}" for k in shapes)
                  + "; wall: mean time in seed runs (full budget in_trial: ceil(configs / 2) x R)\n"
                  "| schedule | shape | rule | rho | false-futility [95%] | trial-steps / full "
                  "| P(best within delta) [95%] | P(best = +delta) | wall (seed runs) | decided |"
                  "\n|---|---|---|---|---|---|---|---|---|---|")
            for r in output:
                if "false_futility" in r:
                    (a, b), (c, d) = r["false_futility_interval"], r["within_delta_interval"]
                    decided = f"{r['decided']:.2f}" if r["schedule"].startswith("rounds") else "-"
                    print(f"| {r['schedule']} | {r['shape']} | {r['rule']} | {r['rho']} "
                          f"| {r['false_futility']:.3f} [{a:.3f}, {b:.3f}] | {r['steps_ratio']:.2f} | {r['within_delta']:.3f} [{c:.3f}, {d:.3f}] | {r['found']:.2f} | "
                          f"{r['wall']:.2f} | {decided} |")
            print("\n| rule | rho | study-wide false harm [95%] | equal config pruned, per trial [95%] |\n|---|---|---|---|")
            for r in output:
                if "false_harm" in r:
                    (a, b), (c, d) = r["false_harm_interval"], r["equal_pruned_interval"]
                    print(f"| {r['rule']} | {r['rho']} | {r['false_harm']:.3f} [{a:.3f}, {b:.3f}] | "
                          f"{r['equal_pruned']:.3f} [{c:.3f}, {d:.3f}] |")
        elif args.what == "replay":
            if not args.study:
                parser.error("replay needs the study YAML: pruning_quality.py replay examples/quickstart.yaml")
            output = replay(Path(args.study))
            print(f"{args.study}: {output[0]['full_trial_steps']} trial-steps with no pruner (every trial, every seed)\n"
                  "| pruner | trial-steps (of the full budget) | complete | best | full best - this best (95% interval) | within noise "
                  "| stopped | data ends (kept, but its later seeds never ran) |\n|---|---|---|---|---|---|---|---|")
            for r in output:
                stops = ", ".join(f"#{n} {at if isinstance(at, str) else f'at step {at}'}" for n, at in r["pruned_at"].items())
                print(f"| {r['label']} | {r['trial_steps']} ({r['ratio']:.2f}) | {r['complete']} | trial {r['best']} "
                      f"({r['best_value']:.3f}) | {r['difference']} | {'yes' if r['within_noise'] else 'NO'} | {stops or '-'} | "
                      f"{', '.join(f'#{n}' for n in r['data_ends']) or '-'} |")
        elif args.what == "race":
            output = race(args.orders.split(","), args.race_trials, args.race_seeds, args.delta, args.parallel, folder)
            print(f"examples/quickstart.yaml at {args.race_trials} trials, seeds {args.race_seeds}, delta {args.delta}, "
                  f"{args.parallel} in flight\n| order | trial-steps / full | minutes | best | trials (state, seeds run) |"
                  "\n|---|---|---|---|---|")
            for r in output:
                ended = "; ".join(f"#{n} {m} {state} {k}" for n, state, k, m in r["trials"])
                print(f"| {r['order']} | {r['trial_steps']} / {r['full']} ({r['ratio']:.2f}) | {r['minutes']:.1f} | "
                      f"trial {r['best']} | {ended} |")
        elif args.what == "standin":
            rows = standin(args.trials, folder)
            print("| study | pruner | seed shift | pruned | rate [95% interval] |\n|---|---|---|---|---|")
            for r in rows:
                low, high = r["interval"]
                print(f"| {r['study']} | {r['pruner']} | {r['seed shift']} | {r['pruned']} / {r['trials']} | "
                      f"{r['rate']:.2f} [{low:.2f}, {high:.2f}] |")
            output = rows
        else:
            outcome = quickstart(args.parallel, folder)
            output = {}
            for label, r in outcome["results"].items():
                best = r["best"]
                line = (f"{label:40s} trial-steps {r['steps']:5d}  {r['minutes']:5.1f} min  {r['states']}  best: "
                        + (f"trial {best.number} value {best.value:.4f} params {best.params}" if best else "none"))
                print(line)
                output[label] = {"trial_steps": r["steps"], "minutes": r["minutes"],
                                 "best": best.params if best else None, "best_value": best.value if best else None}
            (full, pruned) = outcome["results"].values()
            if full["steps"]:
                print(f"trial-steps used with pruning: {pruned['steps'] / full['steps']:.2f} of the full budget (goal <= 0.33)")
            gain = outcome["gain"]
            if gain is not None:
                print(f"full best - pruned best: {gain.text()}")
                print("the pruned study's best is " + ("NOT " if gain.difference.significant else "")
                      + "within noise of the full study's best")
            output["difference"] = gain.text() if gain else None
        if args.json:
            Path(args.json).write_text(json.dumps(output, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
