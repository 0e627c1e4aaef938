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
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, model_validator

from sweeper.study.schema import SpecModel


class SamplerSpecBase(SpecModel):
    """What every ``sampler`` section has. A kind adds ``type: Literal[name]`` and its fields (the Optuna
    sampler's own arguments) and is listed in :data:`sweeper.registry.SAMPLERS`; :meth:`build` makes the
    sampler from the section plus the facts it needs (override it when the arguments are not the fields)."""

    optuna_class: ClassVar[str]
    single_objective_only: ClassVar[bool] = False
    needs_grid: ClassVar[bool] = False  # True: build() takes the space's grid (every parameter needs a finite grid)
    seed: int | None = Field(None, description="Sampler seed (reproducible suggestions).")

    def describe(self, *, max_parallel: int = 1) -> str:
        """One line for ``sweeper validate``."""
        return self.type + (f" seed {self.seed}" if self.seed is not None else "")

    def optuna_arguments(self, *, max_parallel: int, seed_offset: int) -> dict[str, Any]:
        arguments = self.model_dump(exclude={"type"})
        if self.seed is not None:
            arguments["seed"] = self.seed + seed_offset
        return arguments

    def build(self, *, max_parallel: int = 1, seed_offset: int = 0, grid: dict[str, list[Any]] | None = None) -> Any:
        """The Optuna sampler. ``max_parallel``: trials in flight at once; ``seed_offset``: added to the seed;
        ``grid``: the space's grid (:func:`sweeper.study.space.grid_search_space`), for samplers that need it."""
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(optuna.samplers, self.optuna_class)(
                **self.optuna_arguments(max_parallel=max_parallel, seed_offset=seed_offset)
            )


_SamplerSpec = SamplerSpecBase


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

    def describe(self, *, max_parallel: int = 1) -> str:
        liar = self.constant_liar if self.constant_liar is not None else max_parallel > 1
        return (
            super().describe(max_parallel=max_parallel) + f", {'multivariate' if self.multivariate else 'independent'}"
            f"{', group' if self.group else ''}, constant_liar {'on' if liar else 'off'}"
        )

    def optuna_arguments(self, *, max_parallel: int, seed_offset: int) -> dict[str, Any]:
        arguments = super().optuna_arguments(max_parallel=max_parallel, seed_offset=seed_offset)
        if self.constant_liar is None:
            arguments["constant_liar"] = max_parallel > 1
        return arguments


class RandomSamplerSpec(_SamplerSpec):
    optuna_class = "RandomSampler"
    type: Literal["random"]


class GridSamplerSpec(_SamplerSpec):
    optuna_class = "GridSampler"
    needs_grid = True
    type: Literal["grid"]

    def build(self, *, max_parallel: int = 1, seed_offset: int = 0, grid: dict[str, list[Any]] | None = None) -> Any:
        if grid is None:
            raise ValueError("sampler.type grid: build() needs the space's grid (grid_search_space(spec.space))")
        return _grid_sampler_class()(grid, **self.optuna_arguments(max_parallel=max_parallel, seed_offset=seed_offset))


class CmaEsSamplerSpec(_SamplerSpec):
    optuna_class = "CmaEsSampler"
    single_objective_only = True
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


SamplerSpec = Annotated[  # the built-in kinds (the spec reads sweeper.registry.SAMPLERS, which may hold more)
    Union[TPESamplerSpec, RandomSamplerSpec, GridSamplerSpec, CmaEsSamplerSpec, GPSamplerSpec, NSGA2SamplerSpec],
    Field(discriminator="type"),
]
SINGLE_OBJECTIVE_ONLY = tuple(
    kind.model_fields["type"].annotation.__args__[0]
    for kind in SamplerSpec.__args__[0].__args__
    if kind.single_objective_only
)


def grid_size(grid: dict[str, list[Any]]) -> int:
    """Points in a grid (:func:`sweeper.study.space.grid_search_space`); the driver caps a grid study's n_trials
    at this."""
    size = 1
    for values in grid.values():
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


def build_sampler(
    sampler: SamplerSpecBase, max_parallel: int = 1, seed_offset: int = 0, grid: dict[str, list[Any]] | None = None
) -> Any:
    """The Optuna sampler of a ``sampler`` section, its fields passed as Optuna's arguments.

    ``seed_offset`` is added to the seed (the driver passes the number of trials already in storage, so
    a resumed study does not replay the first run's suggestions); ``max_parallel`` > 1 turns TPE's
    constant liar on unless the section says otherwise; ``grid`` is the space's grid (sampler grid)."""
    return sampler.build(max_parallel=max_parallel, seed_offset=seed_offset, grid=grid)
