"""Samplers: the ``sampler`` section's schema and the Optuna sampler built from it.

Each kind is a spec whose fields are the Optuna sampler's own arguments (same names, same
defaults), so :func:`build_sampler` passes them through: ``tpe`` (multivariate and grouped by
default, so conditional knobs of different methods are modelled separately; ``constant_liar`` on when
more than one trial is in flight), ``random``, ``grid`` (the grid of
:func:`sweeper.study.space.grid_search_space`; the driver caps n_trials at the grid's size), ``cmaes``
(needs the ``cmaes`` package; categorical knobs fall back to independent sampling), ``gp`` (Optuna's GP
sampler imports torch and scipy in the driver) and ``nsga2`` (multi-objective).

Imports optuna only inside :func:`build_sampler`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, model_validator

from sweeper.study.schema import SpecModel

if TYPE_CHECKING:
    from sweeper.study.spec import StudySpec


class _SamplerSpec(SpecModel):
    optuna_class: ClassVar[str]
    seed: int | None = Field(None, description="Sampler seed (reproducible suggestions).")


class TPESamplerSpec(_SamplerSpec):
    optuna_class = "TPESampler"
    type: Literal["tpe"]
    n_startup_trials: int = Field(10, ge=0)
    n_ei_candidates: int = Field(24, gt=0)
    multivariate: bool = True
    group: bool = Field(True, description="Decompose conditional spaces into groups (needs multivariate).")
    constant_liar: bool | None = Field(None, description="None = on when budget.max_parallel > 1.")

    @model_validator(mode="after")
    def _group_needs_multivariate(self) -> "TPESamplerSpec":
        if self.group and not self.multivariate:
            raise ValueError("group: true needs multivariate: true (set group: false to use the independent TPE)")
        return self


class RandomSamplerSpec(_SamplerSpec):
    optuna_class = "RandomSampler"
    type: Literal["random"]


class GridSamplerSpec(_SamplerSpec):
    optuna_class = "GridSampler"
    type: Literal["grid"]


class CmaEsSamplerSpec(_SamplerSpec):
    optuna_class = "CmaEsSampler"
    type: Literal["cmaes"]
    n_startup_trials: int = Field(1, ge=0)
    sigma0: float | None = Field(None, gt=0)
    popsize: int | None = Field(None, gt=0)


class GPSamplerSpec(_SamplerSpec):
    optuna_class = "GPSampler"
    type: Literal["gp"]
    n_startup_trials: int = Field(10, ge=0)
    deterministic_objective: bool = False


class NSGA2SamplerSpec(_SamplerSpec):
    optuna_class = "NSGAIISampler"
    type: Literal["nsga2"]
    population_size: int = Field(50, gt=1)
    mutation_prob: float | None = Field(None, ge=0, le=1)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)


SamplerSpec = Annotated[
    Union[TPESamplerSpec, RandomSamplerSpec, GridSamplerSpec, CmaEsSamplerSpec, GPSamplerSpec, NSGA2SamplerSpec],
    Field(discriminator="type"),
]
SINGLE_OBJECTIVE_ONLY = ("cmaes",)


def grid_size(spec: "StudySpec") -> int:
    """Points in the grid (the driver caps a grid study's n_trials at this)."""
    from sweeper.study.space import grid_search_space

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


def build_sampler(spec: "StudySpec", max_parallel: int | None = None, seed_offset: int = 0) -> Any:
    """The Optuna sampler of ``spec.sampler``, its fields passed as Optuna's arguments.

    ``seed_offset`` is added to the seed (the driver passes the number of trials already in storage, so
    a resumed study does not replay the first run's suggestions); ``max_parallel`` (default
    ``budget.max_parallel``) > 1 turns TPE's constant liar on unless the spec says otherwise."""
    import optuna

    sampler = spec.sampler
    arguments = sampler.model_dump(exclude={"type"})
    if sampler.seed is not None:
        arguments["seed"] = sampler.seed + seed_offset
    if sampler.type == "tpe" and sampler.constant_liar is None:
        arguments["constant_liar"] = (max_parallel or spec.budget.max_parallel) > 1
    if sampler.type == "grid":
        from sweeper.study.space import grid_search_space

        return _grid_sampler_class()(grid_search_space(spec), **arguments)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return getattr(optuna.samplers, sampler.optuna_class)(**arguments)
