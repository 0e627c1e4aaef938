"""benchmarks/pruning_quality.py's simulation of the ``rounds`` race schedule (``budget.race: rounds``, F-Race
style, with the pairing config: the first non-baseline config runs its seeds straight, and a race is decided
only when every other config left): the order of runs and looks traced by hand on tiny studies, the paired sd
a round gets from the pairing config, the decided-race rule (and the earlier rounds, ``pairing=False``), and
the false-futility rate of rounds 1-3 over simulated studies."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from pruning_quality import SHAPES, final_best, race_rounds, simulate_racing, wilson  # noqa: E402

from sweeper.study.futility import FutilityRule  # noqa: E402

# (time, config, seed) launches: the baseline 0 and the pairing config 1 run seeds 0-2 straight, side by side
STRAIGHT_SEEDS_0_2 = [(t, c, t) for t in range(3) for c in (0, 1)]


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


class Recording:
    """A real rule whose looks' messages are kept in order (``messages``)."""

    def __init__(self, rule):
        self.rule, self.messages = rule, []

    def judge(self, mine, others, reference=None):
        look = self.rule.judge(mine, others, reference=reference)
        self.messages.append(look.message)
        return look


def test_the_pairing_config_runs_its_seeds_straight_and_a_complete_config_blocks_a_decision():
    """4 configs (launch order 0-3, 0 the baseline, 1 the pairing config), seeds 1-3, 2 slots; config 3 stops
    at its look. By hand: t0 runs 0/s0, 1/s0; t1: 1's seed look after 1 seed (it goes on in its slot, as in
    in_trial), both run s1; t2: 1's look after 2 seeds, both run s2; t3: 0 and 1 complete, 2 and 3 start;
    t4: both wait, the queue is empty and nothing runs: round 1 (2 then 3), 3 stops; 2 is the only config
    left that could still be judged, but 1 is complete (a contender): not decided, 2 runs s1; t5: round 2
    (2 alone), s2; t6: complete. 3 + 3 + 3 + 1 = 10 runs, wall 6."""
    rule = Scripted({(3, 1)})
    out = race_rounds(numbered(4, 3), [0, 1, 2, 3], rule, 1, 3)
    assert out["launched"] == [
        *STRAIGHT_SEEDS_0_2,
        (3, 2, 0),
        (3, 3, 0),
        (4, 2, 1),
        (5, 2, 2),
    ]
    assert out["looks"] == [(1, 1, 1, False), (2, 1, 2, False), (4, 2, 1, False), (4, 3, 1, True), (5, 2, 2, False)]
    # every look sees every other config's finished seeds at that time (seeds ending then included), the
    # stopped config's too; round 1 already has the pairing config's 3 seeds paired with the baseline's
    assert rule.calls == [
        (1, 1, {0: 1, 2: 0, 3: 0}),
        (1, 2, {0: 2, 2: 0, 3: 0}),
        (2, 1, {0: 3, 1: 3, 3: 1}),
        (3, 1, {0: 3, 1: 3, 2: 1}),
        (2, 2, {0: 3, 1: 3, 3: 1}),
    ]
    assert (out["runs"], out["wall"], out["stopped"], out["decided"]) == (10, 6, {3}, None)
    assert {c: len(v) for c, v in out["finished"].items()} == {0: 3, 1: 3, 2: 3, 3: 1}


def test_a_survivor_is_decided_only_when_every_other_config_left():
    """As above, but the pairing config 1 stops at its look after seed 1 (t1; its slot goes to 2). By hand:
    t1: 0 s1, 2 s0; t2: 2 waits, 3 starts, 0 s2; round 1 waits for 3 (running with 0 seeds); t3: 0
    complete, 3 waits: round 1 (2 kept, 3 stopped); 1 and 3 stopped, none complete: decided, 2 ends with
    1 seed. 3 + 1 + 1 + 1 = 6 runs, wall 3. Without the pairing config (the earlier rounds) a complete
    config does not count: 1 and 2 survive round 1 and round 2, never decided (10 runs)."""
    out = race_rounds(numbered(4, 3), [0, 1, 2, 3], Scripted({(1, 1), (3, 1)}), 1, 3)
    assert out["launched"] == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 2, 0), (2, 0, 2), (2, 3, 0)]
    assert out["looks"] == [(1, 1, 1, True), (3, 2, 1, False), (3, 3, 1, True)]
    assert (out["decided"], out["decided_at"], out["stopped"], out["runs"], out["wall"]) == (2, 3, {1, 3}, 6, 3)
    assert final_best(out["finished"], out["stopped"]) == 2
    # two configs only: the pairing config runs its 4 seeds straight (looks after 1, 2, 3), never decided
    two = race_rounds(numbered(2, 4), [0, 1], Scripted(), 1, 4)
    assert (two["decided"], {c: len(v) for c, v in two["finished"].items()}) == (None, {0: 4, 1: 4})
    assert [(t, c, r) for t, c, r, _ in two["looks"]] == [(1, 1, 1), (2, 1, 2), (3, 1, 3)]
    assert (two["runs"], two["wall"]) == (8, 4)


def test_a_round_judges_with_the_paired_sd_the_pairing_config_gives():
    """The real rule, seed effects shared by every config (+-0.05, own noise 0.001): 4 configs (0, 0, +delta,
    -delta, delta 0.03), seeds 1-3, launch order 0-3. With the pairing config 1 (its 3 seeds paired with the
    baseline's: df 2), round 1 (t4) stops -delta config 3 on one seed with a paired sd (0.0017); the +delta
    config 2 is kept, not decided while 1 is complete, and runs its 3 seeds: 10 runs. The earlier rounds
    judge round 1 (t3) with no config paired twice: the unpaired fallback (sqrt 2 x the baseline's sd,
    0.072) stops nothing; only round 2 (paired, df 3) stops 1 and 3, and 2 is decided with 2 seeds."""
    shared = np.array([0.0, 0.05, -0.05])
    own = np.array([[0, 0.001, -0.001], [0.001, -0.001, 0], [0, 0, 0.001], [-0.001, 0.001, 0]])
    values = np.array([0, 0, 1, -1])[:, None] * 0.03 + shared[None, :] + own
    rule = Recording(FutilityRule(0.03, 0.1, looks=2))
    out = race_rounds(values, [0, 1, 2, 3], rule, 1, 3)
    assert out["looks"] == [(1, 1, 1, False), (2, 1, 2, False), (4, 2, 1, False), (4, 3, 1, True), (5, 2, 2, False)]
    assert "unpaired, 2 df" in rule.messages[1]  # the pairing config's own look after 2 seeds
    assert "paired, 2 df" in rule.messages[3] and "unpaired" not in rule.messages[3]
    assert (out["stopped"], out["decided"], out["runs"], out["wall"]) == ({3}, None, 10, 6)
    pure_rule = Recording(FutilityRule(0.03, 0.1, looks=2))
    pure = race_rounds(values, [0, 1, 2, 3], pure_rule, 1, 3, pairing=False)
    assert pure["looks"] == [
        (3, 1, 1, False),
        (3, 2, 1, False),
        (3, 3, 1, False),
        (5, 1, 2, True),
        (5, 2, 2, False),
        (5, 3, 2, True),
    ]
    assert "unpaired" in pure_rule.messages[0] and "unpaired" in pure_rule.messages[2]
    assert "paired, 3 df" in pure_rule.messages[3]
    assert (pure["stopped"], pure["decided"], pure["decided_at"], pure["runs"]) == ({1, 3}, 2, 5, 9)


def test_a_look_waits_for_a_running_config_with_fewer_seeds():
    """7 configs, seeds 1-3, nothing stops. By hand: the baseline and the pairing config 1 fill both slots for
    t0-t3 (1 never waits); at t3 2 and 3 start, at t4 4 and 5, at t5 6 (the queue is then empty) but 2-5 wait
    for it (0 seeds < 1) and the free slot stays idle; round 1 is at t6. Then the five survivors run their next
    seed two at a time in launch order (t6-t9 seed 2, round 2 at t9 once the last is done; t9-t12 seed 3):
    7 x 3 = 21 runs, 12 time units (the earlier rounds, no pairing config: 11)."""
    out = race_rounds(numbered(7, 3), list(range(7)), Scripted(), 1, 3)
    assert out["launched"][:11] == [
        *STRAIGHT_SEEDS_0_2,
        (3, 2, 0),
        (3, 3, 0),
        (4, 4, 0),
        (4, 5, 0),
        (5, 6, 0),
    ]
    looks = [(t, c, r) for t, c, r, _ in out["looks"]]
    assert looks == [(1, 1, 1), (2, 1, 2)] + [(6, c, 1) for c in range(2, 7)] + [(9, c, 2) for c in range(2, 7)]
    assert [(t, c) for t, c, s in out["launched"][11:]] == [
        (6, 2),
        (6, 3),
        (7, 4),
        (7, 5),
        (8, 6),
        (9, 2),
        (9, 3),
        (10, 4),
        (10, 5),
        (11, 6),
    ]
    assert (out["runs"], out["wall"]) == (21, 12)
    assert race_rounds(numbered(7, 3), list(range(7)), Scripted(), 1, 3, pairing=False)["wall"] == 11


def test_the_launch_order_not_the_config_number_orders_the_looks():
    """A look group is resolved in launch order (the planted configs are launched in a random order): launch
    order 0, 1, 3, 2, seeds 1-2: 1 (the pairing config) looks after its first seed at t1, then round 1 at t3
    judges 3 before 2."""
    rule = Scripted()
    race_rounds(numbered(4, 2), [0, 1, 3, 2], rule, 1, 2)
    assert [c for c, _, _ in rule.calls] == [1, 3, 2]


def test_the_earlier_rounds_decide_a_race_and_run_no_more_seeds():
    """Without the pairing config (``pairing=False``, the earlier rounds): with one non-baseline config left
    in the race it ends with the seeds it has: 3 stops after seed 1, 2 after seed 2, so 1 (2 seeds of 3) is
    decided at t4 and never runs seed 3; with the baseline and one other config, the race is decided at that
    config's first look (1 seed of 4)."""
    out = race_rounds(numbered(4, 3), [0, 1, 2, 3], Scripted({(3, 1), (2, 2)}), 1, 3, pairing=False)
    assert (out["decided"], out["decided_at"], out["stopped"]) == (1, 4, {2, 3})
    assert {c: len(v) for c, v in out["finished"].items()} == {0: 3, 1: 2, 2: 2, 3: 1}
    assert (out["runs"], out["wall"]) == (8, 4)
    assert final_best(out["finished"], out["stopped"]) == 1  # ranked over its 2 seeds paired with the baseline's
    two = race_rounds(numbered(2, 4), [0, 1], Scripted(), 1, 4, pairing=False)
    assert (two["decided"], two["decided_at"], {c: len(v) for c, v in two["finished"].items()}) == (1, 1, {0: 4, 1: 1})
    assert two["launched"] == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (2, 0, 2), (3, 0, 3)]


@pytest.mark.parametrize("pairing", [True, False])
def test_decided_races_with_the_real_rule_run_nothing_after_the_decision(pairing):
    """Over simulated studies with the real rule (7 configs, rounds 1-4, rho 0.5): once a race is decided no
    non-baseline config starts a seed, the decided config has fewer than 4 seeds, and every other non-baseline
    config was stopped (with the pairing config; the earlier rounds: stopped or complete); many races are
    decided (33 and 56 of these 60)."""
    rng = np.random.default_rng(1)
    rule = FutilityRule(0.03, 0.1, looks=3)
    decided = 0
    for _ in range(60):
        order = [0] + list(1 + rng.permutation(6))
        means = np.array(SHAPES["7"], dtype=float) * 0.03
        half = 0.019 * 0.5**0.5  # rho 0.5: half the variance shared by the seed
        values = means[:, None] + rng.normal(0, half, 4)[None, :] + rng.normal(0, half, (7, 4))
        out = race_rounds(values, [int(c) for c in order], rule, 1, 4, pairing=pairing)
        if out["decided"] is None:
            continue
        decided += 1
        assert not [(t, c) for t, c, _ in out["launched"] if c != 0 and t >= out["decided_at"]]
        assert len(out["finished"][out["decided"]]) < 4
        others = [c for c in range(1, 7) if c != out["decided"]]
        assert all(c in out["stopped"] or (not pairing and len(out["finished"][c]) == 4) for c in others)
    assert decided > 20


@pytest.mark.parametrize("shape", ["7", "4"])
def test_rounds_1_3_keeps_the_false_futility_rate_at_alpha(shape):
    """200 studies, rounds 1-3, rho 0 (the rule's own case: no seed correlation): the +delta config is
    stopped at a rate consistent with alpha 0.1 (the Wilson interval reaches down to 0.1 or below)."""
    rule = FutilityRule(0.03, 0.1, looks=2)
    rng = np.random.default_rng(0)
    results = [
        simulate_racing(rng, rule, 0.03, 0.019, 0.0, 1, 3, schedule="rounds", planted=SHAPES[shape]) for _ in range(200)
    ]
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
    """The 4-config shape with almost no noise (sd 0.001, delta 0.03), launch order 0, 2 (equal: the pairing
    config), 1 (+delta), 3 (-delta), seeds 1-3. By hand: t1: 2's look after 1 seed has no sd yet (df 0); t2:
    after 2 seeds its mean difference from the baseline is -0.0009 (below the incumbent, the baseline), its
    bound +0.008 (unpaired sd, 2 df) < delta: stopped, its slot goes to 1; t3: the baseline is complete, 1
    waits, 3 starts; t4: round 1 keeps 1 (the best) and stops 3 (about -2 delta below 1); 2 and 3 stopped,
    none complete: decided, 1 ends with 1 seed. 3 + 2 + 1 + 1 = 7 runs of 12, wall 4."""
    rng = np.random.default_rng(3)
    values = np.array(SHAPES["4"], dtype=float)[:, None] * 0.03 + rng.normal(0, 0.001, (4, 3))
    out = race_rounds(values, [0, 2, 1, 3], FutilityRule(0.03, 0.1, looks=2), 1, 3)
    assert out["launched"] == [(0, 0, 0), (0, 2, 0), (1, 0, 1), (1, 2, 1), (2, 0, 2), (2, 1, 0), (3, 3, 0)]
    assert out["looks"] == [(1, 2, 1, False), (2, 2, 2, True), (4, 1, 1, False), (4, 3, 1, True)]
    assert (out["stopped"], out["decided"], out["decided_at"], out["runs"], out["wall"]) == ({2, 3}, 1, 4, 7, 4)
    assert final_best(out["finished"], out["stopped"]) == 1
