"""sweeper/results/gains.py and the common-seed pairing of sweeper/results/compare.py, against numbers
computed by hand (and by an obvious loop for the pooled sd)."""

from __future__ import annotations

import math
import pytest

from sweeper.results.compare import paired_gain, study_pool
from sweeper.decisions import DifferenceSD, difference_sd, pooled_sd
from sweeper.results.gains import ruled_out, seed_gain, upper_bound
from sweeper.study.futility import FutilityRule


def test_pooled_sd_by_hand():
    # config 1: 1, 3 (mean 2, squares 1 + 1); config 2: 2, 4, 6 (mean 4, squares 4 + 0 + 4); config 3: one seed
    pooled = pooled_sd([[1.0, 3.0], [2.0, 4.0, 6.0], [9.0]])
    assert pooled.df == 3 and pooled.sd == pytest.approx(math.sqrt(10 / 3))
    none = pooled_sd([[1.0], [2.0]])
    assert none.df == 0 and math.isnan(none.sd) and not none.known


def test_seed_gain_pairs_common_seeds_by_hand():
    a = {1: 0.5, 2: 0.7, 9: 0.0}          # seed 9: a only
    b = {1: 0.4, 2: 0.5, 3: 0.9}          # seed 3: b only
    gain = seed_gain(a, b, DifferenceSD(0.2, 4, 2, True))
    # common seeds 1, 2: differences 0.1, 0.2; SE 0.2 / sqrt(2) = 0.141421; t(0.975, 4) = 2.7764 (tables): half 0.392643
    assert gain.count == 2 and gain.mean == pytest.approx(0.15) and gain.se == pytest.approx(0.141421, abs=1e-6)
    assert gain.low == pytest.approx(0.15 - 0.392643, abs=1e-4) and gain.high == pytest.approx(0.15 + 0.392643, abs=1e-4)
    assert not gain.significant and gain.paired
    assert seed_gain({1: 1.0}, {2: 1.0}, DifferenceSD(0.1, 4, 2, True)) is None     # no common seed: nothing to pair
    unknown = seed_gain({1: 1.0}, {1: 0.5}, DifferenceSD(math.nan, 0, 0, False))
    assert unknown.mean == 0.5 and math.isnan(unknown.low)


def test_upper_bound_and_ruled_out_by_hand():
    # t(0.9, 10) = 1.3722 (tables): 0.05 + 1.3722 * 0.02 = 0.077444
    assert upper_bound(0.05, 0.02, 10, 0.1) == pytest.approx(0.077444, abs=1e-5)
    # normal quantile when df is 0 (an SE over many prompts): z(0.9) = 1.28155
    assert upper_bound(0.0, 1.0, 0, 0.1) == pytest.approx(1.28155, abs=1e-5)
    # gain -0.1, SE 0.02, df 10: upper bound -0.07256; ruled out at delta 0.05, not at delta 0.08
    assert ruled_out(-0.1, 0.02, 10, delta=0.05, alpha=0.1)
    assert not ruled_out(-0.1, 0.02, 10, delta=0.08, alpha=0.1)
    assert not ruled_out(-1.0, math.nan, 0, delta=0.0)                           # unknown SE: nothing ruled out
    with pytest.raises(ValueError, match="delta must be >= 0.*-0.1"):
        ruled_out(0.0, 1.0, 3, delta=-0.1)


def trial(number, seeds_values, per_prompt=None):
    """A real complete optuna FrozenTrial with the replicates attr the trial process writes."""
    import optuna

    replicates = [{"seed": s, "values": [v], "per_prompt": (per_prompt or {}).get(s)} for s, v in seeds_values.items()]
    frozen = optuna.trial.create_trial(value=sum(seeds_values.values()) / len(seeds_values),
                                       user_attrs={"replicates": replicates})
    frozen.number = number
    return frozen


def test_paired_gain_pairs_common_seeds_never_first_replicates():
    # the bug: with fewer than 2 common seeds, compare.py paired each trial's FIRST replicate (seed 5 with seed 7)
    a = trial(1, {5: 0.9}, {5: [1.0, 1.0, 0.0, 1.0]})
    b = trial(2, {7: 0.1, 5: 0.5}, {7: [0.0, 0.0, 0.0, 0.0], 5: [1.0, 0.0, 0.0, 1.0]})
    gain = paired_gain(a, b)                      # one common seed: the unpaired fallback, b's seeds (0.1, 0.5): sd 0.2828, df 1
    assert gain.unit == "seeds" and gain.difference.count == 1 and not gain.difference.paired
    assert gain.difference.mean == pytest.approx(0.9 - 0.5)                     # seed 5 minus seed 5
    assert gain.difference.se == pytest.approx(math.sqrt(0.08) * math.sqrt(2))  # sd * sqrt(2 / 1)
    assert "UNPAIRED fallback" in gain.text()
    # one seed each, no spread anywhere: over the prompts of the common seed 5, a - b = 0, 1, 0, 0
    c = trial(3, {5: 0.5}, {5: [1.0, 0.0, 0.0, 1.0]})
    by_prompts = paired_gain(a, c)
    assert by_prompts.unit == "prompts" and by_prompts.difference.count == 4
    assert by_prompts.difference.mean == pytest.approx(0.25)
    assert "training randomness not included" in by_prompts.text()
    assert paired_gain(a, trial(4, {6: 0.5}, {6: [1.0, 0.0, 0.0, 1.0]})) is None   # no common seed
    # minimized objective: the gain is b - a
    assert paired_gain(a, b, "minimize").difference.mean == pytest.approx(0.5 - 0.9)


def test_the_study_pool_pairs_against_the_reference_and_counts_replicated_configs_once():
    # reference: trial 0 (most seeds). trial 1 - trial 0 on seeds 1, 2: 1, 2 (mean 1.5, squares 0.25 + 0.25);
    # trial 4 - trial 0 on seeds 1-3: -1, 0, 4 (mean 1, squares 4 + 1 + 9); trial 2: one common seed (no df);
    # trial 3 duplicates trial 1 (not counted). sd = sqrt(14.5 / 3) = 2.198484, df 3, 2 configs
    trials = [trial(0, {1: 1.0, 2: 3.0, 3: 2.0}), trial(1, {1: 2.0, 2: 5.0}), trial(2, {1: 9.0}),
              trial(4, {1: 0.0, 2: 3.0, 3: 6.0})]
    duplicate = trial(3, {1: 2.0, 2: 5.0})
    duplicate.set_user_attr("same_config_as", 1)
    pool = study_pool(trials + [duplicate])
    assert (pool.df, pool.configs, pool.paired) == (3, 2, True) and pool.sd == pytest.approx(2.198484, abs=1e-6)


# Three configs x three seeds, by hand. Reference R (the baseline), A, B:
R, A, B = {0: 0.70, 1: 0.80, 2: 0.75}, {0: 0.74, 1: 0.86, 2: 0.78}, {0: 0.69, 1: 0.82, 2: 0.73}
# A - R: 0.04, 0.06, 0.03 (mean 0.043333; squares 1.1111e-5 + 2.7778e-4 + 1.7778e-4 = 4.6667e-4)
# B - R: -0.01, 0.02, -0.02 (mean -0.003333; squares 4.4444e-5 + 5.4444e-4 + 2.7778e-4 = 8.6667e-4)
# sd of a paired difference: sqrt(1.33333e-3 / 4) = 0.0182574, df 4; SE over 3 seeds 0.0105409
# (the old unpaired form: single-config sd pooled over R, A, B = sqrt(0.021333 / 6) = 0.059628, SE 0.048686)


def test_one_gain_statistic_by_hand_3_configs_3_seeds():
    spread = difference_sd({"A": A, "B": B}, R)
    assert (spread.df, spread.configs, spread.paired) == (4, 2, True) and spread.sd == pytest.approx(0.0182574, abs=1e-6)
    gain = seed_gain(A, R, spread)
    # t(0.975, 4) = 2.7764: half width 0.029266 -> [0.014067, 0.072600]: significant (the old form: +-0.119, not)
    assert gain.mean == pytest.approx(0.043333, abs=1e-6) and gain.se == pytest.approx(0.0105409, abs=1e-6)
    assert gain.low == pytest.approx(0.014067, abs=1e-5) and gain.high == pytest.approx(0.072600, abs=1e-5)
    assert gain.significant
    # export / status (compare.paired_gain over trials, pool against the baseline) give the same numbers
    trials = [trial(0, R), trial(1, A), trial(2, B)]
    trials[0].set_user_attr("baseline", True)
    pool = study_pool(trials)
    shown = paired_gain(trials[1], trials[0], pool=pool)
    assert shown.difference.se == pytest.approx(0.0105409, abs=1e-6) and shown.difference.low == pytest.approx(0.014067, abs=1e-5)
    # and the futility rule: B judged against the incumbent A (B - A: -0.05, -0.04, -0.05, mean -0.046667), the
    # same SE 0.0105409; no allowance, one look: UCB = -0.046667 + t(0.9, 4) 1.5332 * 0.0105409 = -0.030506
    look = FutilityRule(delta=0.03, alpha=0.1, allowance=0.0).judge(B, {0: R, 1: A}, reference=0)
    assert look.stop and look.incumbent == 1
    assert look.bound.se == pytest.approx(0.0105409, abs=1e-6) and look.bound.ucb == pytest.approx(-0.030506, abs=1e-5)
    assert paired_gain(trials[2], trials[1], pool=pool).difference.se == pytest.approx(look.bound.se)


def test_one_common_seed_falls_back_to_the_unpaired_form_and_says_so():
    # A shares only seed 0 with R: no paired df; R's own sd: 0.70, 0.80, 0.75 -> 0.05 (df 2); sqrt(2) x 0.05 = 0.070711
    spread = difference_sd({"A": {0: 0.74}}, R)
    assert not spread.paired and spread.df == 2 and spread.sd == pytest.approx(0.070711, abs=1e-6)
    assert "UNPAIRED fallback" in spread.basis
    gain = seed_gain({0: 0.74}, R, spread)
    assert gain.se == pytest.approx(0.05 * math.sqrt(2 / 1), abs=1e-6) and not gain.paired


def test_the_90_interval_covers_at_its_rate_when_seeds_share_an_effect():
    """2000 simulated studies (reference + 2 configs x 3 common seeds; a seed's effect shared by every config
    with correlation rho 0.9, run-to-run sd 0.02, true gain of A over R 0.03): the 90% interval of seed_gain
    covers 0.03 at a rate inside the binomial 99.9% interval around 0.9; the old unpaired form
    sd_single * sqrt(2/n) over-covers (its SE is ~3x too large at rho 0.9)."""
    import numpy as np
    from scipy.stats import binom

    rng = np.random.default_rng(23)
    draws, seeds, sd, rho, true_gain = 2000, 3, 0.02, 0.9, 0.03
    means = np.array([0.75, 0.75 + true_gain, 0.74])
    shared = rng.normal(0, sd * math.sqrt(rho), (draws, 1, seeds))
    values = means[None, :, None] + shared + rng.normal(0, sd * math.sqrt(1 - rho), (draws, 3, seeds))
    covered = old_covered = 0
    for draw in values:
        ref, a, b = ({s: float(v) for s, v in enumerate(row)} for row in draw)
        gain = seed_gain(a, ref, difference_sd({"a": a, "b": b}, ref), level=0.9)
        covered += gain.low <= true_gain <= gain.high
        single = pooled_sd([list(ref.values()), list(a.values()), list(b.values())])
        old_half = 1.9432 * single.sd * math.sqrt(2 / seeds)          # t(0.95, 6) = 1.9432 (tables)
        old_covered += abs(gain.mean - true_gain) <= old_half
    low, high = binom.ppf(0.0005, draws, 0.9) / draws, binom.ppf(0.9995, draws, 0.9) / draws
    assert low <= covered / draws <= high, (covered / draws, low, high)
    assert old_covered / draws > high, old_covered / draws


def test_a_selected_gain_says_it_is_selection_biased():
    a, b = trial(1, {1: 0.9, 2: 0.8}), trial(2, {1: 0.1, 2: 0.2})
    assert "significant" in paired_gain(a, b).text() and "selection-biased" not in paired_gain(a, b).text()
    text = paired_gain(a, b, selected=True).text()
    assert "selection-biased" in text and "; significant" not in text and "sweeper verify" in text


def test_verify_decides_over_new_prompts_and_seeds_and_falls_back_to_the_seeds_saying_so():
    """A gain steady over seeds (+0.05, +0.07, +0.06 on the seed means) made of large per-prompt swings (a prompt x
    config interaction): significant over seeds on these prompts, not over new prompts, and verify says which
    decides; without per-prompt results it decides on the seeds and says that it cannot speak of other prompts."""
    from sweeper.results.compare import prompt_differences
    from sweeper.decisions import prompt_seed_gain
    from sweeper.results.verify import Verification

    swings = {1: [0.50, -0.30, 0.40, -0.40], 2: [0.52, -0.28, 0.42, -0.38], 3: [0.51, -0.29, 0.41, -0.39]}
    base = {s: [0.45] * 4 for s in swings}
    chosen = {s: [0.45 + x for x in row] for s, row in swings.items()}
    a = trial(1, {s: sum(v) / 4 for s, v in chosen.items()}, chosen)
    b = trial(0, {s: sum(v) / 4 for s, v in base.items()}, base)
    differences = prompt_differences(a, b)
    assert differences == [pytest.approx(row) for row in swings.values()]
    assert prompt_differences(a, b, "minimize")[0] == pytest.approx([-x for x in swings[1]])
    gain = paired_gain(a, b)
    assert gain.difference.mean == pytest.approx(0.06) and gain.difference.low > 0         # seeds only: significant
    over_prompts = prompt_seed_gain(differences)
    assert over_prompts.mean == pytest.approx(0.06) and over_prompts.low < 0 < over_prompts.high
    verification = Verification("v", [1, 2, 3], 1, 0, {}, gain, over_prompts, 4)
    text = "\n".join(verification.lines("val/pass@8"))
    assert "gain on these 4 held-out prompts, over new seeds (seed-paired, the prompts held fixed): +0.06" in text
    assert "gain over new prompts and new seeds (decides): +0.06" in text and "sd prompt x config" in text
    assert not verification.survives and "more held-out prompts (--prompts) narrow it most" in verification.verdict
    fallback = Verification("v", [1, 2, 3], 1, 0, {}, gain, None, 4, "no per-prompt results on 2 or more common seeds")
    text = "\n".join(fallback.lines("val/pass@8"))
    assert fallback.survives and "gain over new prompts: not measured (no per-prompt results" in text
    assert "says nothing of prompts beyond these 4" in text and "on these 4 held-out prompts with fresh seeds" in text
    assert prompt_differences(trial(1, {1: 0.5, 2: 0.5}), b) is None                      # no per-prompt results


def test_a_best_chosen_over_configs_that_left_the_race_is_selection_biased():
    """The quickstart's case: GRPO (baseline) and SIREN complete, two methods stopped by the futility race after
    their first seed. SIREN was chosen over three candidates, so its gain is selection-biased; with one candidate
    besides the baseline (nothing to choose between) it is not."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from sweeper.results.export import _selected

    def trial(value, state=TrialState.COMPLETE):
        done = state == TrialState.COMPLETE
        return create_trial(state=state, value=value if done else None, params={"x": value},
                            distributions={"x": FloatDistribution(0, 1)}, intermediate_values={120: value})

    study = optuna.create_study(direction="maximize")
    for t in (trial(0.72), trial(0.76), trial(0.73, TrialState.PRUNED), trial(0.72, TrialState.PRUNED)):
        study.add_trial(t)
    baseline, best = study.trials[0], study.trials[1]
    assert _selected(study, None, best, baseline)
    alone = optuna.create_study(direction="maximize")
    for t in (trial(0.72), trial(0.76)):
        alone.add_trial(t)
    assert not _selected(alone, None, alone.trials[1], alone.trials[0])
