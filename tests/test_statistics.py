"""The statistics of trial results against hand-computed values: standard errors, the per-prompt objective,
replicates, paired differences and the one-sided Wilcoxon signed-rank test (exact null distribution)."""

from __future__ import annotations

import math

import pytest

from sweeper.statistics import (Estimate, mean_and_se, objective_per_prompt, paired_difference, replicate_summary,
                                wilcoxon_worse_p)


def test_mean_and_standard_error():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3 / 4))   # s^2 = 5/3, SE = sqrt(5/12)
    assert math.isnan(mean_and_se([0.4])[1])
    with pytest.raises(ValueError):
        mean_and_se([])


def test_objective_per_prompt_aggregates_like_the_objective():
    vectors = [[0.0, 1.0, 0.5], [0.5, 1.0, 0.0], [1.0, 0.5, 0.5]]   # three validations of three prompts
    assert objective_per_prompt(vectors, "last") == [1.0, 0.5, 0.5]
    assert objective_per_prompt(vectors, "mean_last_n", last_n=2) == [0.75, 0.75, 0.25]
    assert objective_per_prompt(vectors, "best", direction="maximize") == [1.0, 0.5, 0.5]   # means 0.5, 0.5, 0.667
    assert objective_per_prompt(vectors, "best", direction="minimize") == [0.0, 1.0, 0.5]   # the first of the ties
    with pytest.raises(ValueError):
        objective_per_prompt([[0.0], [1.0, 0.0]])


def test_replicates_take_the_standard_error_over_prompts_for_one_seed_over_seeds_for_more():
    one = replicate_summary([0.5], [[0.0, 1.0, 0.5, 0.5]])
    assert (one.value, one.prompts, one.seeds) == (0.5, 4, 1)
    assert one.se == pytest.approx(math.sqrt(0.5 / 3 / 4))                   # over prompts: s^2 = (0.25+0.25)/3
    three = replicate_summary([0.4, 0.5, 0.9], [[0.0, 1.0]] * 3)
    assert three.value == pytest.approx(0.6) and three.seeds == 3 and three.prompts == 2
    # over seeds: deviations -0.2, -0.1, 0.3: s^2 = 0.14 / 2 = 0.07, / 3 seeds: SE = sqrt(0.023333) = 0.152753
    assert three.se == pytest.approx(0.152753, abs=1e-6)                     # the prompts' spread (0 vs 1) is not added
    assert three.text() == "0.6 ± 0.15 (over 3 seeds, 2 prompts)"
    # seeds that tie exactly: no spread over seeds, but their prompts disagree: the seed-by-prompt part
    # stands, prompt variances over the seeds 0, 0, 0.5, 0.5: sqrt(0.25 / (2 seeds x 4 prompts)) = 0.176777
    tied = replicate_summary([0.75, 0.75], [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    assert tied.se == pytest.approx(0.176777, abs=1e-6)
    # a spread over seeds larger than that part is the SE (as for `three`, whose prompts agree across seeds)
    assert replicate_summary([0.4, 0.5, 0.9], [[0.0, 1.0]] * 3).se == pytest.approx(0.152753, abs=1e-6)
    no_vectors = replicate_summary([0.4, 0.5, 0.9], [None, None, None])
    assert no_vectors.se == pytest.approx(0.152753, abs=1e-6)
    assert Estimate(0.61234, math.nan, 64).text() == "0.6123"                 # SE unknown: the value alone


def test_paired_difference_with_a_student_t_interval():
    diff = paired_difference([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])                # differences 2, 3, 4
    assert diff.mean == 3.0 and diff.count == 3
    assert diff.se == pytest.approx(math.sqrt(1.0 / 3))
    half = 4.302652729911275 * math.sqrt(1.0 / 3)                            # t(0.975, 2 df)
    assert (diff.low, diff.high) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert diff.significant
    assert not paired_difference([0.1, 0.3], [0.2, 0.2]).significant
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_wilcoxon_one_sided_exact_values():
    # all five differences negative: W+ = 0, P(W+ <= 0) = 1 / 2^5
    assert wilcoxon_worse_p([0, 0, 0, 0, 0], [1, 2, 3, 4, 5]) == pytest.approx(1 / 32)
    # differences -1, +2, -3, -4, -5: W+ = 2; subsets of ranks {1..5} with sum <= 2: {}, {1}, {2} -> 3 / 32
    assert wilcoxon_worse_p([0, 2, 0, 0, 0], [1, 0, 3, 4, 5]) == pytest.approx(3 / 32)
    # zero differences are dropped: two negative differences left -> 1 / 4
    assert wilcoxon_worse_p([1, 1, 0, 0], [1, 1, 1, 2]) == pytest.approx(1 / 4)
    assert wilcoxon_worse_p([0.5, 0.5], [0.5, 0.5]) == 1.0                   # no difference: no evidence
    assert wilcoxon_worse_p([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == pytest.approx(1.0)   # better, not worse


def test_wilcoxon_with_a_margin_tests_worse_by_more_than_it():
    a, b = [0.5, 0.4, 0.3, 0.2, 0.1], [0.6, 0.5, 0.4, 0.3, 0.2]                 # a - b = -0.1 on every unit
    assert wilcoxon_worse_p(a, b) == pytest.approx(1 / 32)
    assert wilcoxon_worse_p(a, b, margin=0.05) == pytest.approx(1 / 32)       # -0.05 each: still all below
    assert wilcoxon_worse_p(a, b, margin=0.2) == pytest.approx(1.0)           # +0.1 each: not worse by 0.2


def test_the_objective_rule_scores_validations_one_way():
    """The one aggregation rule (the reporter's value and per-prompt values; status and export read its result)."""
    from sweeper.statistics import ObjectiveRule

    values = [0.2, float("nan"), 0.6, 0.5]
    assert ObjectiveRule("val/pass@8", "maximize", "last", 3).value(values) == 0.5
    assert ObjectiveRule("val/pass@8", "maximize", "best", 3).value(values) == 0.6      # NaN skipped
    assert ObjectiveRule("val/pass@8", "minimize", "best", 3).value(values) == 0.2
    assert ObjectiveRule("val/pass@8", "maximize", "mean_last_n", 2).value(values) == pytest.approx(0.55)
    assert ObjectiveRule("val/pass@8", "maximize", "last", 3).value([]) is None
    vectors = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    assert ObjectiveRule("val/pass@8", "maximize", "mean_last_n", 2).per_prompt(vectors) == [1.0, 0.5]
    assert ObjectiveRule("val/pass@8", "minimize", "best", 3).per_prompt(vectors) == [0.0, 1.0]
    section = {"metric": "val/pass@8", "direction": "maximize", "aggregation": "last", "last_n": 3, "baseline": None}
    assert ObjectiveRule.from_section(section) == ObjectiveRule("val/pass@8", "maximize", "last", 3)
    with pytest.raises(ValueError, match="last_n"):
        ObjectiveRule.from_section({"metric": "val/pass@8", "direction": "maximize", "aggregation": "last"})


def test_the_spec_objective_gives_the_rule():
    from sweeper.statistics import ObjectiveRule
    from sweeper.study.spec import load_spec

    spec = load_spec({"study": {"name": "s"}, "objective": {"metric": "val/pass@8", "aggregation": "mean_last_n", "last_n": 2},
                      "budget": {"n_trials": 1}, "tracking": {"enabled": False}})
    assert spec.objective[0].rule() == ObjectiveRule("val/pass@8", "maximize", "mean_last_n", 2)
    assert ObjectiveRule.from_section(spec.objective[0].model_dump()) == spec.objective[0].rule()
