"""Optuna samplers from a spec's ``sampler`` section.

tpe (multivariate and grouped by default, so conditional knobs of different methods are modelled
separately; ``constant_liar`` on when more than one trial is in flight), random, grid (the grid of
:func:`sweeper.space.grid_search_space`; the driver caps n_trials at the grid's size), cmaes (needs the ``cmaes`` package; categorical knobs fall
back to independent sampling), gp (Optuna's GP sampler imports torch and scipy in the driver) and
nsga2 (multi-objective).
"""

from __future__ import annotations

import warnings
from typing import Any

from .spec import StudySpec


def grid_size(spec: StudySpec) -> int:
    """Points in the grid (the driver caps a grid study's n_trials at this)."""
    from .space import grid_search_space

    size = 1
    for values in grid_search_space(spec).values():
        size *= len(values)
    return size


def _grid_sampler_class():
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        """GridSampler whose after_trial does not call study.stop() when the grid is exhausted:
        that works only inside study.optimize(); here the driver's budget ends the study."""

        def after_trial(self, study, trial, state, values) -> None:  # noqa: D401
            return None

    return AskTellGridSampler


def _AskTellGridSampler(search_space, seed=None):
    return _grid_sampler_class()(search_space, seed=seed)


def build_sampler(spec: StudySpec, max_parallel: int | None = None, seed_offset: int = 0) -> Any:
    """``seed_offset``: added to the seed (the driver passes the number of trials already in storage,
    so a resumed study does not replay the first run's suggestions)."""
    import optuna

    s = spec.sampler.model_copy(update={"seed": spec.sampler.seed + seed_offset}) if spec.sampler.seed is not None else spec.sampler
    parallel = (max_parallel or spec.budget.max_parallel) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.type == "tpe":
            return optuna.samplers.TPESampler(
                seed=s.seed,
                n_startup_trials=s.n_startup_trials,
                n_ei_candidates=s.n_ei_candidates,
                multivariate=s.multivariate,
                group=s.group,
                constant_liar=parallel if s.constant_liar is None else s.constant_liar,
            )
        if s.type == "random":
            return optuna.samplers.RandomSampler(seed=s.seed)
        if s.type == "grid":
            from .space import grid_search_space

            return _AskTellGridSampler(grid_search_space(spec), seed=s.seed)
        if s.type == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=s.seed, n_startup_trials=s.n_startup_trials, sigma0=s.sigma0, popsize=s.popsize)
        if s.type == "gp":
            return optuna.samplers.GPSampler(
                seed=s.seed, n_startup_trials=s.n_startup_trials, deterministic_objective=s.deterministic_objective
            )
        if s.type == "nsga2":
            return optuna.samplers.NSGAIISampler(
                seed=s.seed,
                population_size=s.population_size,
                mutation_prob=s.mutation_prob,
                crossover_prob=s.crossover_prob,
                swapping_prob=s.swapping_prob,
            )
    raise ValueError(f"sampler.type {s.type!r} is not known")
