"""benchmarks/pruning_quality.py's simulation of the ``rounds`` race schedule (``budget.race: rounds``, F-Race
style): the order of runs and looks traced by hand on tiny studies, the decided-race rule, and the
false-futility rate of rounds 1-3 over simulated studies."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from pruning_quality import SHAPES, final_best, race_rounds, simulate_racing, wilson  # noqa: E402

from sweeper.study.futility import FutilityRule  # noqa: E402


def numbered(configs: int, seeds: int):
    """values[c, s] = 10 c + s: a look's ``mine`` tells which config is judged."""
    return np.array([[10.0 * c + s for s in range(seeds)] for c in range(configs)])


class Scripted:
    """A rule that stops the configs in ``stops`` ({(config, seeds finished)}), and records every look as
    (config, seeds finished, the others it was given with their seed counts)."""

    def __init__(self, stops=()):
        self.stops, self.calls = set(stops), []

    def judge(self, mine, others, reference=None):
        config = int(next(iter(mine.values())) // 10)
        assert reference == 0
        self.calls.append((config, len(mine), {c: len(v) for c, v in others.items()}))
        return SimpleNamespace(stop=(config, len(mine)) in self.stops)


def test_a_tiny_study_runs_in_the_order_traced_by_hand():
    """4 configs (launch order 0-3, 0 the baseline), seeds 1-3, 2 slots; config 3 stops at its look.
    By hand: t0 runs 0/s0, 1/s0; t1: 1 waits, 0 goes on (s1), 2 starts; t2: 2 waits, 0 s2, 3 starts;
    t3: 0 complete, 3 waits, queue empty, nothing running: 1, 2, 3 looked at after 1 seed (in that order),
    3 stops, 1 and 2 run s1; t4: both looked at after 2 seeds, run s2; t5: complete. 3 + 3 + 3 + 1 = 10 runs."""
    rule = Scripted({(3, 1)})
    out = race_rounds(numbered(4, 3), [0, 1, 2, 3], rule, 1, 3)
    assert out["launched"] == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 2, 0), (2, 0, 2), (2, 3, 0),
                               (3, 1, 1), (3, 2, 1), (4, 1, 2), (4, 2, 2)]
    assert out["looks"] == [(3, 1, 1, False), (3, 2, 1, False), (3, 3, 1, True), (4, 1, 2, False), (4, 2, 2, False)]
    # every look sees every other config's finished seeds at that time, the stopped config's included
    assert rule.calls[3] == (1, 2, {0: 3, 2: 2, 3: 1}) and rule.calls[4] == (2, 2, {0: 3, 1: 2, 3: 1})
    assert (out["runs"], out["wall"], out["stopped"], out["decided"]) == (10, 5, {3}, None)
    assert {c: len(v) for c, v in out["finished"].items()} == {0: 3, 1: 3, 2: 3, 3: 1}


def test_a_look_waits_for_a_running_config_with_fewer_seeds():
    """7 configs, seeds 1-3, nothing stops. By hand: the baseline fills one slot for t0-t3; 1, 2, 3 run
    their first seed one after another in the other; at t3 4 and 5 start, at t4 6 (the queue is then empty)
    but 1-5 wait for it (0 seeds < 1) and the free slot stays idle; the looks after seed 1 are at t5.
    Then the six survivors run their next seed two at a time in config order (t5-t8 seed 2, looks after seed 2
    at t8 once the last pair is done; t8-t11 seed 3): 7 x 3 = 21 runs, 11 time units."""
    out = race_rounds(numbered(7, 3), list(range(7)), Scripted(), 1, 3)
    assert out["launched"][:9] == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 2, 0), (2, 0, 2), (2, 3, 0),
                                   (3, 4, 0), (3, 5, 0), (4, 6, 0)]
    looks = [(t, c, r) for t, c, r, _ in out["looks"]]
    assert looks == [(5, c, 1) for c in range(1, 7)] + [(8, c, 2) for c in range(1, 7)]
    assert [(t, c) for t, c, s in out["launched"][9:]] == [(5, 1), (5, 2), (6, 3), (6, 4), (7, 5), (7, 6),
                                                           (8, 1), (8, 2), (9, 3), (9, 4), (10, 5), (10, 6)]
    assert (out["runs"], out["wall"]) == (21, 11)


def test_the_launch_order_not_the_config_number_orders_the_looks():
    """A look group is resolved in launch order (the planted configs are launched in a random order)."""
    rule = Scripted()
    race_rounds(numbered(4, 2), [0, 3, 1, 2], rule, 1, 2)
    assert [c for c, _, _ in rule.calls] == [3, 1, 2]


def test_a_decided_race_runs_no_more_seeds():
    """With one non-baseline config left in the race it ends with the seeds it has: 3 stops after seed 1,
    2 after seed 2, so 1 (2 seeds of 3) is decided at t4 and never runs seed 3; with the baseline and one
    other config, the race is decided at that config's first look (1 seed of 4)."""
    out = race_rounds(numbered(4, 3), [0, 1, 2, 3], Scripted({(3, 1), (2, 2)}), 1, 3)
    assert (out["decided"], out["decided_at"], out["stopped"]) == (1, 4, {2, 3})
    assert {c: len(v) for c, v in out["finished"].items()} == {0: 3, 1: 2, 2: 2, 3: 1}
    assert (out["runs"], out["wall"]) == (8, 4)
    assert final_best(out["finished"], out["stopped"]) == 1     # ranked over its 2 seeds paired with the baseline's
    two = race_rounds(numbered(2, 4), [0, 1], Scripted(), 1, 4)
    assert (two["decided"], two["decided_at"], {c: len(v) for c, v in two["finished"].items()}) == (1, 1, {0: 4, 1: 1})
    assert two["launched"] == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (2, 0, 2), (3, 0, 3)]


def test_decided_races_with_the_real_rule_run_nothing_after_the_decision():
    """Over simulated studies with the real rule (7 configs, rounds 1-4, rho 0.5): once a race is decided no
    non-baseline config starts a seed, the decided config has fewer than 4 seeds, and it was the only
    non-baseline config neither stopped nor complete; most races are decided."""
    rng = np.random.default_rng(1)
    rule = FutilityRule(0.03, 0.1, looks=3)
    decided = 0
    for _ in range(60):
        order = [0] + list(1 + rng.permutation(6))
        means = np.array(SHAPES["7"], dtype=float) * 0.03
        half = 0.019 * 0.5**0.5                       # rho 0.5: half the variance shared by the seed
        values = means[:, None] + rng.normal(0, half, 4)[None, :] + rng.normal(0, half, (7, 4))
        out = race_rounds(values, [int(c) for c in order], rule, 1, 4)
        if out["decided"] is None:
            continue
        decided += 1
        assert not [(t, c) for t, c, _ in out["launched"] if c != 0 and t >= out["decided_at"]]
        assert len(out["finished"][out["decided"]]) < 4
        others = [c for c in range(1, 7) if c != out["decided"]]
        assert all(c in out["stopped"] or len(out["finished"][c]) == 4 for c in others)
    assert decided > 30


@pytest.mark.parametrize("shape", ["7", "4"])
def test_rounds_1_3_keeps_the_false_futility_rate_at_alpha(shape):
    """200 studies, rounds 1-3, rho 0 (the rule's own case: no seed correlation): the +delta config is
    stopped at a rate consistent with alpha 0.1 (the Wilson interval reaches down to 0.1 or below)."""
    rule = FutilityRule(0.03, 0.1, looks=2)
    rng = np.random.default_rng(0)
    results = [simulate_racing(rng, rule, 0.03, 0.019, 0.0, 1, 3, schedule="rounds", planted=SHAPES[shape])
               for _ in range(200)]
    stops = sum(r["false_futility"] for r in results)
    assert wilson(stops, 200)[0] <= 0.1
    assert all(r["runs"] <= r["full"] for r in results)


def test_rounds_needs_seed_looks_only_and_a_known_schedule():
    rule = FutilityRule(0.03, 0.1, looks=2)
    with pytest.raises(ValueError, match="seed looks only"):
        simulate_racing(np.random.default_rng(0), rule, 0.03, 0.019, 0.0, 1, 3, looks=3, schedule="rounds")
    with pytest.raises(ValueError, match="schedule must be one of"):
        simulate_racing(np.random.default_rng(0), rule, 0.03, 0.019, 0.0, 1, 3, schedule="seeds")


def test_a_tiny_study_with_the_real_rule_ends_as_expected_by_hand():
    """The 4-config shape with almost no noise (sd 0.001, delta 0.03), launch order 0, 2 (equal), 1 (+delta),
    3 (-delta), seeds 1-3: at t3 (the baseline's 3 seeds done, each other config's first seed) the looks in
    launch order stop 2 and 3 (their gain over the incumbent 1 is about -delta and -2 delta, far below
    +delta), keep 1, and the race is decided: 1 ends with 1 seed. 3 + 1 + 1 + 1 = 6 runs of 12, wall 3."""
    rng = np.random.default_rng(3)
    values = np.array(SHAPES["4"], dtype=float)[:, None] * 0.03 + rng.normal(0, 0.001, (4, 3))
    out = race_rounds(values, [0, 2, 1, 3], FutilityRule(0.03, 0.1, looks=2), 1, 3)
    assert out["launched"] == [(0, 0, 0), (0, 2, 0), (1, 0, 1), (1, 1, 0), (2, 0, 2), (2, 3, 0)]
    assert out["looks"] == [(3, 2, 1, True), (3, 1, 1, False), (3, 3, 1, True)]
    assert (out["stopped"], out["decided"], out["decided_at"], out["runs"], out["wall"]) == ({2, 3}, 1, 3, 6, 3)
    assert final_best(out["finished"], out["stopped"]) == 1
