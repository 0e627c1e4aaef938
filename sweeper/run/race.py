"""Racing in rounds: ``budget.race: rounds`` (the order of F-Race, Birattari et al., GECCO 2002).

    budget: {n_trials: 4, seeds: "1-3", race: rounds}
    pruner: {type: futility, delta: 0.03}

With ``race: in_trial`` (the default) a config runs its seeds one after another inside its trial and the
futility rule looks after each one. With ``rounds``:

1. The baseline runs all its seeds straight: its seeds are the run-to-run sd's first estimate. So does the
   first other config launched, the *pairing* config (user attr ``race_pairing``), as under in_trial (a look
   after each of its seeds): its seeds paired with the baseline's give the sd of a paired difference, which
   the first round needs (without it the rule falls back on sqrt(2) x the baseline's sd, far larger when
   seed effects are shared: measured on the quickstart, pure rounds stopped nothing after seed 1). Every
   other config runs its first ``seeds_min`` seeds; then its trial process ends with the outcome
   AWAITING_ROUND (the trial stays RUNNING in Optuna, user attr ``race_waiting``) and frees its slot. No
   look is made yet.
2. New configs go first: the driver takes waiting trials up only once it starts no new trial (``n_trials``
   reached, ``budget.trial_steps`` spent, or past ``budget.timeout``).
3. A round: the waiting trials with the fewest finished seeds r, once no trial in flight has fewer than r
   finished (it would still add its seed r). Each gets its one seed look after r seeds, in trial order: the
   futility rule of :mod:`sweeper.study.futility`, the same rule and K as the in-trial look, with what every
   config has finished by then. Stopped: PRUNED (``prune_reason: futility``).
4. The race is decided when one config besides the baseline is left in it (every other one stopped: none
   waiting, in flight or complete; no new trial to come): it ends COMPLETE with the seeds it finished (user
   attr ``race_end``: "race decided after seed r ..."). More seeds would only tighten its gain over the
   baseline on the study's own seeds and prompts, the selection's, where it is biased upward; ``sweeper
   verify`` measures that gain without the bias, on fresh seeds and held-out prompts.
5. Otherwise each survivor's next seed runs: a new job for the same trial, which resumes after the seeds it
   finished (``replicates.json``) and waits again after the seed (unless it was its last). Once
   ``budget.trial_steps`` is spent, waiting trials end with the seeds they finished.

What it buys, measured by ``python benchmarks/pruning_quality.py simulate`` (docs/sweeper.md): the configs
that leave the race early cost their first seed only, and the winner does not run seeds that could no longer
change the decision. What it costs: the first round judges every config before any has a second seed, so
the rule had no paired sd yet (its fallback, sqrt(2) x the baseline's sd, is far larger when seed effects
are shared): on the quickstart it stopped nothing after seed 0 and used 9 of 12 runs, in_trial 8; hence the
pairing config. And
Optuna's samplers learn from finished trials, while a waiting config finishes only when its race is
resolved, after every new trial has started: rounds suits a race of enqueued configs far apart, or a known
run-to-run sd (``pruner.sd``); in_trial a long TPE search, and the quickstart.

The driver owns every decision here (it is the one place that tells Optuna): a stopped or ended trial is
told from its AWAITING_ROUND outcome (values over the finished seeds) without starting a process. A driver
restarted between a look and the seed it allowed looks again (a look more than K counts, in that rare case).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sweeper.contract import (
    ATTR_BASELINE,
    ATTR_RACE_END,
    ATTR_RACE_PAIRING,
    ATTR_RACE_WAITING,
    ATTR_SAME_CONFIG,
    Outcome,
    trial_seed_values,
)

__all__ = [
    "Waiting",
    "Verdict",
    "RoundRace",
    "close_waiting",
    "complete_contenders",
    "ended_outcome",
    "pairing_config",
    "seed_look",
]


@dataclass
class Waiting:
    """A trial waiting for its round: ``seeds`` finished, ``outcome`` its AWAITING_ROUND outcome."""

    number: int
    trial_id: int
    trial_dir: Path
    outcome: Outcome
    cleared: bool = False  # its look let it go on; it waits for a free slot only

    @property
    def seeds(self) -> int:
        return len(self.outcome.replicates or [])


@dataclass(frozen=True)
class Verdict:
    action: str  # "stop" (futility) | "end" (race decided, or the trial-steps budget spent) | "go" (next seed)
    message: str


def ended_outcome(waiting: Outcome, verdict: Verdict) -> Outcome:
    """The final outcome of a waiting trial that its round stops or ends (a pure function of its
    AWAITING_ROUND outcome): PRUNED futility valued at the mean over its finished seeds, or COMPLETE over them."""
    from sweeper.run.trial.outcome import futility_stop, with_uncertainty

    finished = list(waiting.replicates or [])
    if verdict.action == "stop":
        outcome = with_uncertainty(futility_stop(verdict.message, finished, waiting.step or 0), finished)
        return replace(outcome, seconds=waiting.seconds, summary=waiting.summary)
    if verdict.action == "end":
        return replace(waiting, state="COMPLETE", message=verdict.message)
    raise ValueError(f"a {verdict.action!r} verdict does not end a trial")


def close_waiting(storage: Any, waiting: Waiting, verdict: Verdict) -> Outcome:
    """A waiting trial that its round stops or ends: its final outcome (written to its folder, for the driver to
    tell) and its user attrs (``race_waiting`` cleared, ``race_end`` for an ended race)."""
    outcome = ended_outcome(waiting.outcome, verdict)
    outcome.write(waiting.trial_dir)
    storage.set_trial_user_attr(waiting.trial_id, ATTR_RACE_WAITING, "")
    if verdict.action == "end":
        storage.set_trial_user_attr(waiting.trial_id, ATTR_RACE_END, verdict.message)
    return outcome


def seed_look(study: Any, storage: Any, trial_id: int, seeds: int, build: Callable[[int, list[int]], Any]) -> Any:
    """The futility rule's look after ``seeds`` finished seeds of a waiting trial, with its pruner as its trial
    process builds it (``build(trial steps, validation steps)``: the spec's pruner section's ``build``; the
    steps and seeds from its ticket and config: the same K), over the study as it stands."""
    from sweeper.contract import ATTR_TRIAL_DIR, CONFIG_FILE, TrialTicket
    from sweeper.run.trial.outcome import validation_steps
    from trainers.config import load_config

    frozen = storage.get_trial(trial_id)
    trial_dir = Path(frozen.user_attrs[ATTR_TRIAL_DIR])
    ticket = TrialTicket.read(trial_dir)
    pruner = build(ticket.trial_steps, validation_steps(load_config(trial_dir / CONFIG_FILE)))
    pruner.set_race(ticket.seeds_min or len(ticket.seeds), len(ticket.seeds))
    return pruner.after_seed(study, frozen, seeds)


def complete_contenders(trials: Iterable[Any]) -> int:
    """Configs besides the baseline that ran all their seeds and were not stopped: a waiting survivor is not
    decided against them. A config reused for an identical one (``same_config_as``) counts once, as its source."""
    return sum(
        t.state.name == "COMPLETE"
        and not t.user_attrs.get(ATTR_BASELINE)
        and t.user_attrs.get(ATTR_SAME_CONFIG) is None
        for t in trials
    )


def pairing_config(race: str, trials: Iterable[Any], number: int, baseline: bool) -> bool:
    """Whether trial ``number`` is the race's pairing config: the first config launched besides the baseline
    (no other trial not FAIL carries ``race_pairing``)."""
    if race != "rounds" or baseline:
        return False
    return not any(
        t.user_attrs.get(ATTR_RACE_PAIRING) and t.number != number and t.state.name != "FAIL" for t in trials
    )


@dataclass
class RoundRace:
    """The waiting trials of a ``race: rounds`` study and the rounds that decide them (see the module docstring).

    ``look(number, trial_id, seeds)``: the futility rule's seed look for that trial (a
    :class:`~sweeper.study.futility.Look`), given by the driver."""

    look: Callable[[int, int, int], Any]
    waiting: dict[int, Waiting] = field(default_factory=dict)
    continued: dict[int, int] = field(default_factory=dict)  # trial -> the finished seeds its next-seed job ends at

    def in_flight(
        self, trials: Iterable[tuple[Mapping[str, Any], int]], seeds_min: int | None
    ) -> list[tuple[int, bool]]:
        """``(seeds, is the baseline)`` of each trial in flight (``(user attrs, number)``): the finished seeds at
        which a trial's job ends and it can be judged (a first job: ``seeds_min``; a next-seed job: one more than
        it had), or for the baseline and the pairing config, which run their seeds straight, the seed it is on."""
        out = []
        for attrs, number in trials:
            if attrs.get(ATTR_BASELINE) or attrs.get(ATTR_RACE_PAIRING):
                out.append((len(trial_seed_values(attrs)) + 1, True))
            else:
                out.append((self.continued.get(number, seeds_min or 1), False))
        return out

    def wait(self, number: int, trial_id: int, trial_dir: Path, outcome: Outcome) -> Waiting:
        entry = Waiting(number, trial_id, Path(trial_dir), outcome)
        self.waiting[number] = entry
        return entry

    def decide(
        self, in_flight: Iterable[tuple[int, bool]], new_trials: bool, spent: bool, complete: int = 0
    ) -> list[tuple[Waiting, Verdict]]:
        """The verdicts that can be given now, in trial order. ``in_flight``: :meth:`in_flight`'s (seeds, is the
        baseline) of each trial in flight: a round at r waits for those at r or below, which would join it or
        add their seed r; ``new_trials``: the driver may still start a new trial; ``spent``: the trial-steps
        budget is spent; ``complete``: configs other than the baseline that ran all their seeds (contenders
        still: a survivor is not decided against them). A "go" verdict is given once (the trial stays
        ``cleared`` until it gets a slot and :meth:`launched` takes it off)."""
        if not self.waiting or new_trials:
            return []
        in_flight = list(in_flight)
        cleared = sorted((w for w in self.waiting.values() if w.cleared), key=lambda w: w.number)
        if cleared:
            return [(w, Verdict("go", "")) for w in cleared]
        if spent:
            return [
                (w, Verdict("end", f"waited after seed {w.seeds}; budget.trial_steps is spent"))
                for w in sorted(self.waiting.values(), key=lambda w: w.number)
            ]
        r = min(w.seeds for w in self.waiting.values())
        if any(seeds <= r for seeds, _ in in_flight):
            return []  # a trial in flight still joins this round or adds its seed r
        members = sorted((w for w in self.waiting.values() if w.seeds == r), key=lambda w: w.number)
        verdicts: list[tuple[Waiting, Verdict]] = []
        survivors = []
        for member in members:
            result = self.look(member.number, member.trial_id, r)
            if result is not None and result.stop:
                verdicts.append((member, Verdict("stop", f"stopped after seed {r}: {result.message}")))
            else:
                survivors.append(member)
        others = len(self.waiting) - len(members) + sum(1 for _, baseline in in_flight if not baseline) + complete
        if len(survivors) == 1 and others == 0:
            verdicts.append(
                (
                    survivors[0],
                    Verdict(
                        "end",
                        f"race decided after seed {r}: every other config left the race (its gain over the baseline "
                        f"on fresh seeds and held-out prompts: sweeper verify)",
                    ),
                )
            )
        else:
            for member in survivors:
                member.cleared = True
                verdicts.append((member, Verdict("go", "")))
        return sorted(verdicts, key=lambda v: v[0].number)

    def launched(self, number: int, seeds: int) -> None:
        """Trial ``number`` got a job for its next seed, which ends after ``seeds`` finished seeds."""
        self.waiting.pop(number, None)
        self.continued[number] = seeds

    def done(self, number: int) -> None:
        self.waiting.pop(number, None)
