"""sweeper/results/gains.py and the common-seed pairing of sweeper/results/compare.py, against numbers
computed by hand (and by an obvious loop for the pooled sd)."""

from __future__ import annotations

import math
import pytest

from sweeper.results.compare import paired_gain, study_pool
from sweeper.decisions import pooled_sd
from sweeper.results.gains import ruled_out, seed_gain, upper_bound


def test_pooled_sd_by_hand():
    # config 1: 1, 3 (mean 2, squares 1 + 1); config 2: 2, 4, 6 (mean 4, squares 4 + 0 + 4); config 3: one seed
    pooled = pooled_sd([[1.0, 3.0], [2.0, 4.0, 6.0], [9.0]])
    assert pooled.df == 3 and pooled.sd == pytest.approx(math.sqrt(10 / 3))
    none = pooled_sd([[1.0], [2.0]])
    assert none.df == 0 and math.isnan(none.sd) and not none.known


def test_seed_gain_pairs_common_seeds_by_hand():
    a = {1: 0.5, 2: 0.7, 9: 0.0}          # seed 9: a only
    b = {1: 0.4, 2: 0.5, 3: 0.9}          # seed 3: b only
    gain = seed_gain(a, b, sd=0.1, df=4)
    # common seeds 1, 2: differences 0.1, 0.2; SE 0.1 * sqrt(2 / 2) = 0.1; t(0.975, 4) = 2.7764 (tables)
    assert gain.count == 2 and gain.mean == pytest.approx(0.15) and gain.se == pytest.approx(0.1)
    assert gain.low == pytest.approx(0.15 - 0.27764, abs=1e-4) and gain.high == pytest.approx(0.15 + 0.27764, abs=1e-4)
    assert not gain.significant
    assert seed_gain({1: 1.0}, {2: 1.0}, 0.1, 4) is None                        # no common seed: nothing to pair
    unknown = seed_gain({1: 1.0}, {1: 0.5}, math.nan, 0)
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
    gain = paired_gain(a, b)                      # pool: b's two seeds (0.1, 0.5): sd 0.2828, df 1
    assert gain.unit == "seeds" and gain.difference.count == 1
    assert gain.difference.mean == pytest.approx(0.9 - 0.5)                     # seed 5 minus seed 5
    assert gain.difference.se == pytest.approx(math.sqrt(0.08) * math.sqrt(2))  # sd * sqrt(2 / 1)
    # one seed each, no spread anywhere: over the prompts of the common seed 5, a - b = 0, 1, 0, 0
    c = trial(3, {5: 0.5}, {5: [1.0, 0.0, 0.0, 1.0]})
    by_prompts = paired_gain(a, c)
    assert by_prompts.unit == "prompts" and by_prompts.difference.count == 4
    assert by_prompts.difference.mean == pytest.approx(0.25)
    assert "training randomness not included" in by_prompts.text()
    assert paired_gain(a, trial(4, {6: 0.5}, {6: [1.0, 0.0, 0.0, 1.0]})) is None   # no common seed
    # minimized objective: the gain is b - a
    assert paired_gain(a, b, "minimize").difference.mean == pytest.approx(0.5 - 0.9)


def test_the_study_pool_counts_replicated_configs_once():
    trials = [trial(0, {1: 1.0, 2: 3.0}), trial(1, {1: 2.0, 2: 4.0, 3: 6.0}), trial(2, {1: 9.0})]
    duplicate = trial(3, {1: 1.0, 2: 3.0})
    duplicate.set_user_attr("same_config_as", 0)
    pool = study_pool(trials + [duplicate])
    assert (pool.df, pool.configs) == (3, 2) and pool.sd == pytest.approx(math.sqrt(10 / 3))


def test_a_selected_gain_says_it_is_selection_biased():
    a, b = trial(1, {1: 0.9, 2: 0.8}), trial(2, {1: 0.1, 2: 0.2})
    assert "significant" in paired_gain(a, b).text() and "selection-biased" not in paired_gain(a, b).text()
    text = paired_gain(a, b, selected=True).text()
    assert "selection-biased" in text and "; significant" not in text and "sweeper verify" in text
