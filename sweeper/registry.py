"""The kinds of each pluggable component, by the name a study file gives in its ``type`` (or URL scheme).

One registry per kind: :data:`SAMPLERS` (``sampler.type``), :data:`PRUNERS` (``pruner.type``),
:data:`EXECUTORS` (``executor.type``) and :data:`STORAGES` (the scheme of ``study.storage``). A built-in
entry names where its class lives (``"module:attribute"``), imported when first asked for, so this module
imports no phase of the sweeper and the spec (:mod:`sweeper.study.spec`) reaches the components through
it alone. Adding a kind touches its own module and one entry here (or one ``register`` call from outside
the package): spec, driver, cli and checks read the registries.

A sampler, pruner or executor kind is a :class:`~sweeper.study.schema.SpecModel` subclass with a
``type: Literal["name"]`` field (its section's schema) and a ``build(...)`` method taking the section plus
the few facts it needs (see each kind's base class); a storage kind has ``make(url, worker=False)``::

    from sweeper.registry import PRUNERS

    @PRUNERS.register("patient")
    class PatientPrunerSpec(PrunerSpecBase):       # sweeper.study.pruning.PrunerSpecBase
        type: Literal["patient"]
        patience: int = 3

        def build(self, trial_steps, validation_steps):
            return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(), patience=self.patience)

The registries are the one place that lists the kinds; :func:`sweeper.study.spec.load_spec` validates a
section against the union of a registry's kinds, so the error for ``type: nope`` names them all.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Callable, Iterator, Union

from pydantic import Field, TypeAdapter

__all__ = ["Registry", "SAMPLERS", "PRUNERS", "EXECUTORS", "STORAGES", "revision"]

_REVISION = [0]  # bumped on every register: the spec's schema rebuilds its unions when it changes


def revision() -> int:
    """A number that changes whenever a kind is registered in any registry."""
    return _REVISION[0]


class Registry:
    """Kinds of one component by name. ``entries``: built-in kinds as ``{name: "module:attribute"}``."""

    def __init__(self, kind: str, field: str, entries: dict[str, str]) -> None:
        self.kind, self.field = kind, field
        self._targets: dict[str, Any] = dict(entries)  # a "module:attribute" string until first use

    def register(self, name: str, target: Any = None) -> Any:
        """Add (or replace) the kind ``name``: ``REGISTRY.register("x", XSpec)`` or as a class decorator."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} registry: a kind needs a non-empty name, got {name!r}")

        def add(obj: Any) -> Any:
            self._targets[name] = obj
            _REVISION[0] += 1
            return obj

        return add if target is None else add(target)

    def unregister(self, name: str) -> None:
        """Remove a kind (tests that registered a toy kind clean up with this)."""
        if self._targets.pop(name, None) is not None:
            _REVISION[0] += 1

    def names(self) -> list[str]:
        return list(self._targets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._targets  # a hostile spec may give a list or a mapping

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def get(self, name: str) -> Any:
        """The kind registered as ``name`` (a built-in's module is imported now). Unknown names raise
        ``KeyError`` naming the field and the kinds accepted."""
        try:
            target = self._targets[name] if isinstance(name, str) else self._targets[repr(name)]
        except KeyError:
            raise KeyError(
                f"{self.field}: {name!r} is not a known {self.kind}; accepted: {', '.join(self._targets)}"
            ) from None
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module), attribute)
            self._targets[name] = target
        return target

    def kinds(self) -> list[Any]:
        return [self.get(name) for name in self._targets]

    def union(self) -> Any:
        """The pydantic type of a section of this component: the registered spec classes, told apart by ``type``."""
        kinds = self.kinds()
        return Annotated[Union[tuple(kinds)], Field(discriminator="type")] if len(kinds) > 1 else kinds[0]

    def adapter(self) -> TypeAdapter:
        return TypeAdapter(self.union())

    def validate(self, section: Any) -> Any:
        """A section (mapping) validated into its kind's spec (``pydantic.ValidationError`` when it is bad)."""
        return self.adapter().validate_python(section)

    def find(self, predicate: Callable[[str, Any], bool]) -> str | None:
        """The first name whose kind satisfies ``predicate(name, kind)`` (None: none does)."""
        return next((name for name in self._targets if predicate(name, self.get(name))), None)


SAMPLERS = Registry(
    "sampler",
    "sampler.type",
    {
        "tpe": "sweeper.study.samplers:TPESamplerSpec",
        "random": "sweeper.study.samplers:RandomSamplerSpec",
        "grid": "sweeper.study.samplers:GridSamplerSpec",
        "cmaes": "sweeper.study.samplers:CmaEsSamplerSpec",
        "gp": "sweeper.study.samplers:GPSamplerSpec",
        "nsga2": "sweeper.study.samplers:NSGA2SamplerSpec",
    },
)

PRUNERS = Registry(
    "pruner",
    "pruner.type",
    {
        "none": "sweeper.study.pruning:NoPrunerSpec",
        "median": "sweeper.study.pruning:MedianPrunerSpec",
        "successive_halving": "sweeper.study.pruning:SuccessiveHalvingPrunerSpec",
        "hyperband": "sweeper.study.pruning:HyperbandPrunerSpec",
        "wilcoxon": "sweeper.study.pruning:WilcoxonPrunerSpec",
        "paired": "sweeper.study.pruning:PairedPrunerSpec",
        "futility": "sweeper.study.pruning:FutilityPrunerSpec",
    },
)

EXECUTORS = Registry(
    "executor",
    "executor.type",
    {
        "local": "sweeper.run.executors.local:LocalExecutorSpec",
        "debug": "sweeper.run.executors.local:DebugExecutorSpec",
        "slurm": "sweeper.run.executors.slurm:SlurmExecutorSpec",
    },
)

# by URL scheme (before any "+driver"): the one list of the storages a study.storage URL may name
STORAGES = Registry(
    "storage",
    "study.storage",
    {
        "sqlite": "sweeper.run.storage_kinds:SQLiteStorage",
        "journal": "sweeper.run.storage_kinds:JournalStorage",
        "postgresql": "sweeper.run.storage_kinds:DatabaseStorage",
        "mysql": "sweeper.run.storage_kinds:DatabaseStorage",
        "oracle": "sweeper.run.storage_kinds:DatabaseStorage",
        "mssql": "sweeper.run.storage_kinds:DatabaseStorage",
    },
)
