"""The decision statistics (sweeper.decisions), the futility rule and the fixed harm test of the paired
pruner: boundaries against numbers computed by hand here, calibration by simulation (a known rate inside
its binomial interval), pairing by seed number, and the defects of issue 23 (1-3) that the old paired
pruner had, each through the real PairedPruner on a real (in-memory) Optuna study."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from sweeper.contract import per_prompt_attr
from sweeper.decisions import (gain_bound, harm_p_value, harm_se, is_futile, paired_by_seed, paired_gain, pooled_pair_sd,
                               pooled_sd, prompt_seed_gain, t_upper, unpaired_gain)
from sweeper.study.futility import FutilityRule, race_looks, steps_used, trial_values_at
from sweeper.study.paired_pruner import PairedPruner, harm_test


def inside_binomial(hits: int, n: int, rate: float, z: float = 3.29) -> bool:
    """hits / n within rate +- z binomial SEs (z 3.29: a 99.9% interval)."""
    return abs(hits / n - rate) <= z * math.sqrt(rate * (1 - rate) / n)


# --------------------------------------------------------------------------- hand-computed boundaries


def test_pooled_sd_over_configs_with_the_degrees_of_freedom_summed():
    # [1, 2, 3]: mean 2, squares 1 + 0 + 1 = 2, df 2; [4, 6]: mean 5, squares 2, df 1; [7]: no df
    pooled = pooled_sd([[1, 2, 3], [4, 6], [7]])
    assert pooled.df == 3 and pooled.sd == pytest.approx(math.sqrt(4 / 3))
    # a prior sd 2 with 1 df adds 1 x 4 to the squares: sqrt(8 / 4)
    pooled = pooled_sd([[1, 2, 3], [4, 6]], prior_sd=2.0, prior_df=1)
    assert pooled.df == 4 and pooled.sd == pytest.approx(math.sqrt(2))
    assert not pooled_sd([[1.0], [2.0]]).known


def test_pairing_is_by_seed_number_never_by_replicate_position():
    mine = {2: 0.80, 0: 0.90}                  # ran seeds 0 and 2, listed out of order
    theirs = {0: 0.85, 1: 0.10, 2: 0.70}
    assert paired_by_seed(mine, theirs) == [(0, 0.90, 0.85), (2, 0.80, 0.70)]
    # differences 0.05 and 0.10: mean 0.075; pair sd 0.2 over 2 seeds: 0.2 / sqrt(2); allowance 0.2 / sqrt(2 x 3)
    difference, se, allowance, common = paired_gain(mine, theirs, 0.2, allowance=1.0)
    assert (difference, common) == (pytest.approx(0.075), 2)
    assert se == pytest.approx(0.141421356) and allowance == pytest.approx(0.081649658)
    assert paired_gain({5: 1.0}, theirs, 0.2) is None            # no common seed: no comparison


def test_pooled_sd_of_a_seed_difference_pairs_each_config_with_the_reference():
    reference = {0: 0.0, 1: 0.0, 2: 1.0}
    configs = {1: {0: 1.0, 1: 3.0}, 2: {0: 2.0, 1: 2.0, 2: 5.0}}
    # config 1: differences 1, 3 (mean 2, squares 2, df 1); config 2: 2, 2, 4 (mean 8/3, squares 8/3, df 2)
    pooled = pooled_pair_sd(configs, reference)
    assert pooled.df == 3 and pooled.sd == pytest.approx(math.sqrt((2 + 8 / 3) / 3))



def test_prompt_seed_gain_by_hand_3_seeds_x_4_prompts():
    # d = [[1,2,3,2],[3,4,5,4],[2,6,1,3]]: seed means 2, 4, 3; prompt means 2, 4, 3, 3; grand mean 3
    # MS_seed = 4 (1 + 1 + 0) / 2 = 4; MS_prompt = 3 (1 + 1 + 0 + 0) / 3 = 2
    # residuals d - seed mean - prompt mean + 3: [0,-1,1,0], [0,-1,1,0], [0,2,-2,0]: 12 / 6 df = MS_e 2
    # s2_prompt = (2 - 2) / 3 = 0 (its term drops), s2_seed = (4 - 2) / 4 = 0.5: Var = 0.5/3 + 2/12 = 1/3 = MS_seed / 12
    # Satterthwaite with the MS_seed term alone: 2 df (the seed-only form's)
    g = prompt_seed_gain([[1, 2, 3, 2], [3, 4, 5, 4], [2, 6, 1, 3]])
    assert (g.mean, g.seeds, g.prompts) == (pytest.approx(3.0), 3, 4)
    assert (g.seed_variance, g.prompt_variance, g.residual_variance) == (pytest.approx(0.5), 0.0, pytest.approx(2.0))
    assert g.se == pytest.approx(math.sqrt(1 / 3)) and g.seed_se == pytest.approx(math.sqrt(1 / 3))
    assert g.df == pytest.approx(2.0)
    assert g.high - g.mean == pytest.approx(4.302653 * math.sqrt(1 / 3), rel=1e-6)        # t(0.975, 2)
    # + 3 on prompt 2 for every seed (a prompt x config interaction): seed means 2.75, 4.75, 3.75; prompt means
    # 2, 7, 3, 3; grand 3.75; MS_seed 4, MS_e 2 unchanged; MS_prompt = 3 (1.75^2 + 3.25^2 + 2 x 0.75^2) / 3 = 14.75
    # Var = (4 + 14.75 - 2) / 12 = 16.75 / 12 (= 0.5/3 + 4.25/4 + 2/12); df = 16.75^2 / (4^2/2 + 14.75^2/3 + 2^2/6)
    g = prompt_seed_gain([[1, 5, 3, 2], [3, 7, 5, 4], [2, 9, 1, 3]], level=0.9)
    assert g.mean == pytest.approx(3.75) and g.seed_variance == pytest.approx(0.5)
    assert g.prompt_variance == pytest.approx(4.25)
    assert g.se == pytest.approx(math.sqrt(16.75 / 12)) and g.seed_se == pytest.approx(math.sqrt(4 / 12))
    assert g.df == pytest.approx(16.75 ** 2 / (8 + 14.75 ** 2 / 3 + 4 / 6))
    assert g.low == pytest.approx(3.75 - t_upper(0.95, g.df) * g.se)


def test_prompt_seed_gain_needs_two_seeds_and_two_prompts_on_every_seed():
    for bad in ([[1.0, 2.0]], [[1.0], [2.0]], [[1.0, 2.0], [1.0]]):
        with pytest.raises(ValueError, match="R >= 2 seeds x P >= 2 prompts"):
            prompt_seed_gain(bad)
    same = prompt_seed_gain([[0.1, 0.1], [0.1, 0.1]])                # no spread at all: a zero-width interval
    assert same.se == 0 and same.low == same.high == pytest.approx(0.1)


def test_the_90_interval_over_prompts_and_seeds_covers_at_its_rate_where_the_seed_only_one_does_not():
    """New seeds and new prompts each study (d = gain + seed + prompt x config + residual): the interval of
    prompt_seed_gain covers the true gain at its 90% rate; the seed-only SE (prompts held fixed) under-covers."""
    rng = np.random.default_rng(3)
    gain, runs, seeds, prompts = 0.05, 1000, 3, 32
    covered = seed_only = 0
    for _ in range(runs):
        d = (gain + rng.normal(0, 0.01, (seeds, 1)) + rng.normal(0, 0.1, (1, prompts))
             + rng.normal(0, 0.1, (seeds, prompts)))
        g = prompt_seed_gain(d.tolist(), level=0.9)
        covered += g.low <= gain <= g.high
        seed_only += abs(g.mean - gain) <= t_upper(0.95, seeds - 1) * g.seed_se
        assert g.se >= g.seed_se - 1e-12
    assert inside_binomial(covered, runs, 0.9), covered / runs
    assert seed_only / runs < 0.9 - 3.29 * math.sqrt(0.09 / runs), seed_only / runs   # about 0.74

def test_gain_bound_against_hand_computed_quantiles():
    # gain -0.05 + allowance 0.01 = -0.04; alpha 0.1 over 2 looks: 95% one-sided; z(0.95) = 1.6448536
    bound = gain_bound(-0.05, 0.02, 0.01, math.inf, 0.1, looks=2)
    assert bound.gain == pytest.approx(-0.04) and bound.level == pytest.approx(0.95)
    assert bound.ucb == pytest.approx(-0.04 + 1.6448536 * 0.02)
    assert is_futile(bound, 0.03) and not is_futile(bound, -0.01)
    # Student's t with 3 df: t(0.95, 3) = 2.3533634 (tables)
    assert gain_bound(-0.05, 0.02, 0.01, 3, 0.1, looks=2).ucb == pytest.approx(-0.04 + 2.3533634 * 0.02)
    assert bound.text(0.03) == "gain <= -0.0071 (95% UCB) < delta 0.03"
    # the sketch's unpaired form: 0.80 (1 seed) vs 0.85 (4 seeds), sd 0.02: SE 0.02 sqrt(1 + 1/4), allowance 0.02 / 2
    difference, se, allowance = unpaired_gain(0.80, 1, 0.85, 4, 0.02)
    assert (difference, se, allowance) == (pytest.approx(-0.05), pytest.approx(0.0223606798), pytest.approx(0.01))


def test_harm_tests_the_mean_against_the_margin_and_never_a_better_mean():
    assert harm_p_value(0.0, 0.01) == 1.0 and harm_p_value(0.001, 0.5, 0.02) == 1.0
    # (-0.05 + 0.01) / 0.02 = -2: Phi(-2) = 0.0227501; t with 4 df: 0.0580583 (tables)
    assert harm_p_value(-0.05, 0.02, 0.01) == pytest.approx(0.0227501, abs=1e-6)
    assert harm_p_value(-0.05, 0.02, 0.01, df=4) == pytest.approx(0.0580583, abs=1e-6)
    assert harm_se(0.03, 0.02) == pytest.approx(math.sqrt(0.0017))


def test_race_looks_count_seed_and_validation_looks():
    assert race_looks(1, 3, None, None) == 2                      # after seeds 1 and 2
    assert race_looks(3, 3, None, None) == 1                      # no race: one (never used) look
    assert race_looks(1, 3, [20, 40, 60], 20) == 2 + 3 * 2        # + validations 20 and 40 of each of 3 seeds


def test_seed_curves_give_values_at_a_step_and_the_steps_spent():
    attrs = {"seed_curve/0": {"20": 0.5, "40": 0.6}, "seed_curve/1": {"20": 0.4}, "other": 1}
    assert trial_values_at(attrs, 20) == {0: 0.5, 1: 0.4} and trial_values_at(attrs, 40) == {0: 0.6}
    assert steps_used(attrs) == 40 + 20


# --------------------------------------------------------------------------- the futility rule


def test_futility_rule_stops_a_config_that_cannot_be_delta_better_and_says_why():
    rule = FutilityRule(delta=0.03, alpha=0.1, sd=0.01, sd_df=100, min_df=2, looks=2)
    baseline = {0: 0.80, 1: 0.81, 2: 0.79}
    # one seed, common with the baseline: difference -0.10; unpaired sd (prior 0.01 pooled with the baseline's
    # seeds: sqrt((100 x 0.0001 + 0.0002) / 102)) x sqrt(2): nowhere near +0.03
    look = rule.judge({0: 0.70}, {7: baseline}, reference=7)
    assert look.stop and look.incumbent == 7
    assert look.message.startswith("gain <= ") and "< delta 0.03 vs trial 7 over 1 common seed" in look.message
    assert not rule.judge({0: 0.70}, {7: baseline}, baseline=True, reference=7).stop      # the baseline never stops
    assert not rule.judge({0: 0.805}, {7: baseline}, reference=7).stop                    # at least the incumbent's
    # minimize: the same numbers mirrored
    mirrored = {s: -v for s, v in baseline.items()}
    assert rule.judge({0: -0.70}, {7: mirrored}, maximize=False, reference=7).stop


def test_futility_rule_waits_for_a_run_to_run_sd():
    rule = FutilityRule(delta=0.03, min_df=2)
    look = rule.judge({0: 0.5}, {0: {0: 0.9}})            # one seed each, no prior: no sd at all
    assert not look.stop and "run-to-run sd not known yet" in look.message


def test_futility_rule_pairs_by_seed_number():
    # the judged config ran seed 2 only: compared on seed 2 (0.80 - 0.79 = +0.01 over the baseline, which is the
    # incumbent), not on the incumbent's first replicate (0.80 - 0.90 = -0.10)
    rule = FutilityRule(delta=0.03, alpha=0.1, sd=0.001, sd_df=1000, allowance=0.0)
    look = rule.judge({2: 0.80}, {0: {0: 0.90, 1: 0.70, 2: 0.79}}, reference=0)
    assert look.bound is None and "at least as good as the incumbent" in look.message
    look = rule.judge({2: 0.78}, {0: {0: 0.90, 1: 0.70, 2: 0.79}}, reference=0)
    assert look.bound.gain == pytest.approx(-0.01)


def test_futility_is_calibrated_at_the_boundary_by_simulation():
    """A config exactly delta better than the baseline (the incumbent), one look, a known sd (prior with a huge
    weight), no allowance: stopped at rate alpha (the guarantee's bound is attained at the boundary)."""
    delta, sd, alpha, n = 0.03, 0.02, 0.1, 3000
    rule = FutilityRule(delta, alpha, allowance=0.0, sd=sd, sd_df=10**9, min_df=10**9, looks=1)
    rng = np.random.default_rng(1)
    stops = 0
    for _ in range(n):
        baseline = {s: float(v) for s, v in enumerate(rng.normal(0.8, sd, 3))}
        mine = {0: float(0.8 + delta + rng.normal(0, sd))}
        stops += rule.judge(mine, {0: baseline}, reference=0).stop
    assert inside_binomial(stops, n, alpha), stops / n


def test_futility_with_racing_keeps_its_guarantee_over_simulated_studies():
    """Planted studies (the quickstart's shape, benchmarks/pruning_quality.py simulate): the +delta config is
    stopped in at most alpha of 200 studies (a one-sided binomial bound at 99.9%)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pruning_quality import simulate_racing

    rule = FutilityRule(0.03, 0.1, looks=race_looks(1, 3, None, None))
    rng = np.random.default_rng(2)
    results = [simulate_racing(rng, rule, 0.03, 0.019, 0.0, 1, 3) for _ in range(200)]
    stops = sum(r["false_futility"] for r in results)
    assert stops / 200 <= 0.1 + 3.09 * math.sqrt(0.1 * 0.9 / 200), stops
    assert sum(r["runs"] for r in results) < sum(r["full"] for r in results)          # the race saved some seeds


def test_within_seed_looks_keep_the_guarantee_only_while_the_gap_does_not_grow():
    """Within-seed looks (benchmarks/pruning_quality.py, validations at 40/80/120, K = 8 for seeds 1-3), 150
    planted studies at rho 0.9: with the gap at steps 40 and 80 already final (the guarantee's assumption) the
    +delta config is stopped at most at alpha (one-sided binomial bound at 99.9%); with the quickstart's
    measured curve (the gap at 40/80 is 0.45 of the final one) the rule as the pruner applies it stops it far
    more often than alpha, and with delta x 0.45 at validation looks it keeps alpha again."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pruning_quality import VALIDATIONS, draw_curves, simulate_racing

    # the model's draws by hand: one config at mu 0.03, one seed, ratio 0.5, no noise: 0.015, 0.015, 0.03
    curve = draw_curves(np.random.default_rng(0), np.array([0.03]), 0.0, 0.5, 1, 3, 0.5, 0.0)
    assert curve.shape == (1, 1, 3) and list(curve[0, 0]) == pytest.approx([0.015, 0.015, 0.03])

    looks = race_looks(1, 3, list(VALIDATIONS), VALIDATIONS[0])
    assert looks == 8
    bound = 0.1 + 3.09 * math.sqrt(0.1 * 0.9 / 150)

    def rate(ratio, validation_rule=None):
        rng = np.random.default_rng(5)
        rule = FutilityRule(0.03, 0.1, looks=looks)
        results = [simulate_racing(rng, rule, 0.03, 0.019, 0.9, 1, 3, looks=3, ratio=ratio, extra_sd=0.008,
                                   validation_rule=validation_rule) for _ in range(150)]
        return sum(r["false_futility"] for r in results) / 150

    assert rate(1.0) <= bound
    assert rate(0.45) > bound                                        # the gap grows after the look: alpha is broken
    assert rate(0.45, FutilityRule(0.03 * 0.45, 0.1, looks=looks)) <= bound


# --------------------------------------------------------------------------- the harm test (paired pruner)


def harm_study(mine: list[float], theirs: list[float], incumbent_seeds: dict[str, float] | None = None):
    """A real in-memory study: a complete incumbent with per-prompt values at step 10 (and its seeds' values),
    and a running trial that reported ``mine`` at step 10. Returns (study, the running trial, frozen)."""
    study = optuna.create_study(direction="maximize")
    incumbent = study.ask()
    incumbent.set_user_attr(per_prompt_attr(10), theirs)
    if incumbent_seeds:
        incumbent.set_user_attr("seed_values", incumbent_seeds)
    incumbent.report(sum(theirs) / len(theirs), 10)
    study.tell(incumbent, sum(theirs) / len(theirs))
    trial = study.ask()
    trial.set_user_attr(per_prompt_attr(10), mine)
    trial.report(sum(mine) / len(mine), 10)
    return study, study.trials[-1]


def test_defect_1_the_margin_moves_the_mean_not_a_pseudo_median():
    # 128 prompts of pass@16 with n = 16 (0 or 1): worse on 30, better on 10: mean difference -20/128 = -0.15625,
    # sd of the differences sqrt((40 - 128 x 0.15625^2) / 127) = 0.538848, SE 0.0476270; margin 0.02, run sd 0:
    # z = (-0.15625 + 0.02) / 0.0476270 = -2.86077, p = 0.002113. The old pruner (Wilcoxon shifted by the
    # margin) gave p = 0.99: it tested the pseudo-median, which the 88 equal prompts pin near 0.
    theirs = [1.0] * 30 + [0.0] * 10 + [1.0] * 88
    mine = [0.0] * 30 + [1.0] * 10 + [1.0] * 88
    test = harm_test(mine, theirs, 0.02, 0.0, math.inf)
    assert test["difference"] == pytest.approx(-0.15625) and test["se"] == pytest.approx(0.0476270, abs=1e-6)
    assert test["p"] == pytest.approx(0.002113, abs=2e-5)
    pruner = PairedPruner(p_threshold=0.05, min_difference=0.02, run_sd=0.0)
    study, frozen = harm_study(mine, theirs)
    assert pruner.prune(study, frozen), pruner.last_test


def test_defect_2_a_better_mean_is_never_pruned():
    # -0.05 on 40 prompts, +0.6 on 6: mean (-2 + 3.6) / 46 = +0.0348 (better). The old Wilcoxon test said p = 0.0004.
    theirs = [0.5] * 46
    mine = [0.45] * 40 + [1.1] * 6
    pruner = PairedPruner(p_threshold=0.05, run_sd=0.0)
    study, frozen = harm_study(mine, theirs)
    assert not pruner.prune(study, frozen)
    assert harm_test(mine, theirs, 0.0, 0.0, math.inf)["p"] == 1.0


def test_defect_3_identical_configs_with_seed_noise_are_pruned_at_the_stated_rate():
    """Two runs of one config: every prompt moved by the run's own shift (training randomness, sd 0.03) plus
    per-prompt noise. The pruner knows the run-to-run sd (run_sd, as sweeper verify measures it): an identical
    config is pruned at rate p_threshold (0.05 at one look, allowance 0); the old pruner pruned 0.41-0.62."""
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0.2, 0.8, 64)
    pruner = PairedPruner(p_threshold=0.05, run_sd=0.03, allowance=0.0)
    pruned, n = 0, 600
    for _ in range(n):
        theirs = list(difficulty + rng.normal(0, 0.03) + rng.normal(0, 0.1, 64))
        mine = list(difficulty + rng.normal(0, 0.03) + rng.normal(0, 0.1, 64))
        study, frozen = harm_study(mine, theirs)
        pruned += pruner.prune(study, frozen)
    assert inside_binomial(pruned, n, 0.05), pruned / n


def test_the_paired_pruner_pools_the_run_sd_from_replicated_trials_or_does_not_prune():
    theirs = [0.5] * 64
    mine = [0.3] * 64                                              # much worse on every prompt
    pruner = PairedPruner(p_threshold=0.05)
    study, frozen = harm_study(mine, theirs)
    assert not pruner.prune(study, frozen) and "no run-to-run sd" in pruner.explain()
    # the incumbent ran 3 seeds: 0.50, 0.52, 0.48 -> sd 0.02, df 2; allowance 0.02 / sqrt(3)
    study, frozen = harm_study(mine, theirs, {"0": 0.50, "1": 0.52, "2": 0.48})
    assert pruner.prune(study, frozen)
    assert pruner.last_test["run_sd"] == pytest.approx(0.02) and "worse at p = " in pruner.explain()


def test_validation_looks_compare_every_config_at_the_same_step():
    """pruner.warmup_step: at a validation from that step on (not the last), the rule runs on every config's
    values at that step (their seed curves); before the warm-up step, and at the last step, no look."""
    from sweeper.study.futility import FutilityPruner

    study = optuna.create_study(direction="maximize")
    for number, curves in enumerate(({"0": {"10": 0.60, "20": 0.70, "30": 0.72}, "1": {"10": 0.62, "20": 0.71, "30": 0.73},
                                      "2": {"10": 0.61, "20": 0.69, "30": 0.71}},
                                     {"0": {"10": 0.61, "20": 0.705, "30": 0.70}, "1": {"10": 0.63, "20": 0.715, "30": 0.72}})):
        trial = study.ask()
        if number == 0:
            trial.set_user_attr("baseline", True)
        for seed, curve in curves.items():
            trial.set_user_attr(f"seed_curve/{seed}", curve)
        study.tell(trial, 0.7)
    judged = study.ask()
    judged.set_user_attr("seed_curve/0", {"10": 0.50, "20": 0.55})
    frozen = study.trials[-1]
    pruner = FutilityPruner(delta=0.03, alpha=0.1, warmup_step=20, validation_steps=[10, 20, 30], seeds_min=1, seeds_max=3)
    assert pruner.at_validation(study, frozen, 10) is None and pruner.at_validation(study, frozen, 30) is None
    look = pruner.at_validation(study, frozen, 20)
    # at step 20: pair sd from trial 1 vs the baseline on seeds 0, 1 (differences +0.005, +0.005: sd 0, df 1) < min_df 2,
    # so sqrt(2) x the single-config sd pooled over both (df 2 + 1 = 3); judged 0.55 vs the incumbent (trial 1) 0.705
    assert look.incumbent == 1 and look.stop and "over 1 common seed" in look.message and "unpaired, 3 df" in look.message
    # by hand: single sd^2 = (0.0002 [0.70, 0.71, 0.69] + 0.00005 [0.705, 0.715]) / 3; pair sd = sqrt(2) x its root
    # = 0.0129099; allowance 0.0129099 / sqrt(2 x 2) = 0.0064550; gain -0.155 + 0.0064550 = -0.1485450;
    # K = 2 seed looks + 3 seeds x 1 validation = 5: level 0.98, t(0.98, 3) = 3.4819 (tables)
    assert look.bound.gain == pytest.approx(-0.1485450, abs=1e-6) and look.bound.se == pytest.approx(0.0129099, abs=1e-6)
    assert look.bound.level == pytest.approx(0.98) and look.bound.ucb == pytest.approx(-0.1485450 + 3.4819 * 0.0129099, abs=1e-4)
