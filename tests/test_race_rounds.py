"""Racing in rounds (``budget.race: rounds``, sweeper/run/race.py): the rounds' verdicts over plain data, and
studies through the real driver and trial processes (tests/noisy_trainer.py, whose truth is known): every
config runs its first seed before any runs its second, a clearly worse config leaves after its first seed,
and the race ends when one config is left, with the seeds it finished."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweeper.contract import Outcome, objective_estimate
from sweeper.results.status import study_status
from sweeper.run.driver import run_study
from sweeper.run.race import RoundRace, Verdict, complete_contenders, ended_outcome
from sweeper.run.storage import make_storage
from sweeper.study.futility import Look, steps_used
from sweeper.study.spec import SpecError, load_spec
from tests.test_futility_racing import study


def waiting(values: list[float], se: float = 0.01) -> Outcome:
    finished = [{"seed": 10 + i, "values": [v], "per_prompt": None} for i, v in enumerate(values)]
    return Outcome(
        "AWAITING_ROUND",
        step=20,
        values=[sum(values) / len(values)],
        values_se=[se],
        replicates=finished,
        message=f"waits after seed {len(values)} for its race round",
    )


def race(stops: set[int]) -> tuple[RoundRace, list[tuple[int, int]]]:
    looks: list[tuple[int, int]] = []

    def look(number, _trial_id, seeds):
        looks.append((number, seeds))
        return Look(number in stops, "gain <= -0.05 (90% UCB) < delta 0.03 vs trial 0")

    return RoundRace(look), looks


def test_a_round_waits_for_new_trials_and_for_trials_still_on_its_seed():
    rounds, looks = race(stops=set())
    rounds.wait(1, 11, Path("t1"), waiting([0.6]))
    rounds.wait(2, 12, Path("t2"), waiting([0.5]))
    assert rounds.decide([], new_trials=True, spent=False) == []  # new configs run their first seed first
    assert rounds.decide([(1, False)], new_trials=False, spent=False) == []  # one in flight still on its first seed
    assert rounds.decide([(1, True)], new_trials=False, spent=False) == []  # the baseline on its seed 1
    assert looks == []
    verdicts = rounds.decide([(2, True)], new_trials=False, spent=False)  # the baseline on its seed 2
    assert [(w.number, v.action) for w, v in verdicts] == [(1, "go"), (2, "go")] and looks == [(1, 1), (2, 1)]
    # a trial let go but given no slot yet is not judged again
    rounds.launched(1, 2)
    flights = [
        ({}, 1),
        ({}, 5),
        ({"baseline": True, "seed_values": {"10": 0.5}}, 0),
        ({"race_pairing": True, "seed_values": {}}, 6),
    ]
    # a next-seed job ends at 2 seeds, a first job at seeds_min; the baseline and the pairing config run their
    # seeds straight: the seed they are on
    assert rounds.in_flight(flights, 1) == [(2, False), (1, False), (2, True), (1, True)]
    assert [(w.number, v.action) for w, v in rounds.decide([], False, False)] == [(2, "go")] and len(looks) == 2


def test_the_race_is_decided_when_one_config_is_left():
    rounds, looks = race(stops={2, 3})
    for number in (1, 2, 3):
        rounds.wait(number, 10 + number, Path(f"t{number}"), waiting([0.6]))
    verdicts = {w.number: v for w, v in rounds.decide([(3, True)], False, False)}
    assert {n: v.action for n, v in verdicts.items()} == {1: "end", 2: "stop", 3: "stop"}
    assert verdicts[1].message.startswith("race decided after seed 1: every other config left the race")
    assert verdicts[2].message == "stopped after seed 1: gain <= -0.05 (90% UCB) < delta 0.03 vs trial 0"


def test_not_decided_while_another_config_is_complete():
    rounds, _ = race(stops=set())
    rounds.wait(2, 12, Path("t2"), waiting([0.6]))
    # the pairing config ran all its seeds and was not stopped: still a contender, the survivor goes on
    assert [v.action for _, v in rounds.decide([], False, False, complete=1)] == ["go"]


def test_complete_contenders_leave_out_the_baseline_stopped_configs_and_reused_copies():
    def trial(state, **attrs):
        return optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state),
            user_attrs=attrs,
            **({"value": 0.5} if state != "FAIL" else {}),
        )

    trials = [
        trial("COMPLETE", baseline=True),
        trial("COMPLETE"),
        trial("PRUNED"),
        trial("COMPLETE", same_config_as=0),
        trial("FAIL"),
    ]
    assert complete_contenders(trials) == 1


def test_not_decided_while_another_config_is_in_flight_or_waits_on_a_later_seed():
    rounds, _ = race(stops=set())
    rounds.wait(1, 11, Path("t1"), waiting([0.6]))
    assert [v.action for _, v in rounds.decide([(3, False)], False, False)] == ["go"]  # trial in flight, seed 3
    rounds, _ = race(stops=set())
    rounds.wait(1, 11, Path("t1"), waiting([0.6]))
    rounds.wait(2, 12, Path("t2"), waiting([0.6, 0.7]))
    assert [(w.number, v.action) for w, v in rounds.decide([], False, False)] == [(1, "go")]


def test_a_spent_budget_ends_the_waiting_trials_with_their_seeds():
    rounds, looks = race(stops=set())
    rounds.wait(1, 11, Path("t1"), waiting([0.6, 0.7]))
    [(entry, verdict)] = rounds.decide([], False, spent=True)
    assert verdict.action == "end" and looks == []
    outcome = ended_outcome(entry.outcome, verdict)
    assert outcome.state == "COMPLETE" and outcome.values == [pytest.approx(0.65)]
    # a stop is valued at the mean over the finished seeds, as an in-trial futility stop is
    stopped = ended_outcome(entry.outcome, Verdict("stop", "stopped after seed 2: ..."))
    assert (
        stopped.state == "PRUNED"
        and stopped.prune_reason == "futility"
        and stopped.seed_mean() == [pytest.approx(0.65)]
    )
    assert stopped.message.endswith("(value: the mean over the 2 seeds it finished)")


def test_rounds_need_a_seed_range(tmp_path):
    path = study(
        tmp_path,
        "bad",
        pruner={"type": "futility", "delta": 0.03, "warmup_step": 10},
        budget={"n_trials": 2, "seeds": 3, "race": "rounds"},
    )
    with pytest.raises(SpecError, match="budget.race: rounds races configs over seeds; give budget.seeds as a range"):
        load_spec(path)


def test_a_race_in_rounds_stops_the_worse_config_and_ends_when_one_is_left(tmp_path):
    messages: list[str] = []
    path = study(tmp_path, "rounds", budget={"n_trials": 3, "max_parallel": 1, "seeds": "1-3", "race": "rounds"})
    run_study(path, progress=False, log=messages.append)
    spec = load_spec(path)
    baseline, worse, same = optuna.load_study(
        study_name="rounds", storage=make_storage(spec.study.storage)
    ).get_trials()
    assert baseline.state.name == "COMPLETE" and baseline.user_attrs["seeds"] == [10, 11, 12]
    # the first config after the baseline is the pairing config: judged after its seed, as in_trial, never waits
    assert worse.user_attrs["race_pairing"] is True and "race_pairing" not in same.user_attrs
    assert worse.state.name == "PRUNED" and worse.user_attrs["prune_reason"] == "futility"
    assert worse.user_attrs["prune_message"].startswith("stopped after seed 1: gain <= ")
    assert worse.value == pytest.approx(worse.user_attrs["seed_values"]["10"])
    # the config as good as the baseline is the one left: the race ends with its one seed
    assert same.state.name == "COMPLETE" and same.user_attrs["seeds"] == [10]
    assert same.user_attrs["race_end"].startswith("race decided after seed 1: every other config left the race")
    assert same.user_attrs["race_waiting"] == "" and objective_estimate(same).seeds == 1
    assert same.value == pytest.approx(same.user_attrs["seed_values"]["10"])
    # it waited after its first seed; nothing ran a second seed but the baseline
    assert [m.split(" (")[0] for m in messages if "waits after" in m or "goes on" in m] == [
        "trial 2: waits after seed 1 for its race round"
    ]
    assert "race decided after seed 1" in study_status(spec)  # status says why it has one seed
    spent = sum(steps_used(t.user_attrs) for t in (baseline, worse, same))
    assert spent == 20 * (3 + 1 + 1)  # in_trial: 20 x (3 + 1 + 3) (tests/test_futility_racing.py)


def test_survivors_run_their_seeds_round_by_round_into_the_same_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    messages: list[str] = []
    lrs = [1.0e-5, 2.0e-5, 3.0e-5, 4.0e-5]  # optim.lr: ignored by the stand-in, so all four configs train alike
    path = study(
        tmp_path,
        "alike",
        space={"params": {"clip.eps_high": [0.28], "optim.lr": lrs}},
        enqueue=[{"clip.eps_high": 0.28, "optim.lr": lr} for lr in lrs],
        budget={"n_trials": 4, "max_parallel": 2, "seeds": "1-3", "race": "rounds"},
        tracking={"enabled": True},
    )
    run_study(path, progress=False, log=messages.append)
    spec = load_spec(path)
    trials = optuna.load_study(study_name="alike", storage=make_storage(spec.study.storage)).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(t.user_attrs["seeds"] == [10, 11, 12] for t in trials)  # equal configs stay in the race to the end
    events = [m.split(" (")[0] for m in messages if "waits after" in m or "goes on with" in m]
    assert not [e for e in events if e.startswith("trial 1")]  # the pairing config runs straight
    # round by round: every config's seed r is judged, with every config's seed r, before any runs seed r + 1
    assert sorted(events[:2]) == [
        "trial 2: waits after seed 1 for its race round",
        "trial 3: waits after seed 1 for its race round",
    ]
    assert sorted(events[2:4]) == ["trial 2: its race goes on with seed 2", "trial 3: its race goes on with seed 2"]
    assert sorted(events[4:6]) == [
        "trial 2: waits after seed 2 for its race round",
        "trial 3: waits after seed 2 for its race round",
    ]
    assert sorted(events[6:]) == ["trial 2: its race goes on with seed 3", "trial 3: its race goes on with seed 3"]
    # each trial's three jobs log into its one MLflow run, which ends once, FINISHED and COMPLETE
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    for trial in trials[2:]:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["sweeper.state"] == "COMPLETE"
        assert {"val/pass_at_8", "seed11/val/pass_at_8", "seed12/val/pass_at_8"} <= set(run.data.metrics)
    assert "waits for its round" not in study_status(spec)
