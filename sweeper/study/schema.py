"""What every section of a study spec shares: the strict, frozen pydantic base, the error type, and
the YAML reader of spec files.

Each section owns its schema beside the code that uses it (the space's parameters in
:mod:`sweeper.study.space`, sampler specs in :mod:`sweeper.study.samplers`, pruner and health specs in
:mod:`sweeper.study.pruning`, executor specs in :mod:`sweeper.run.executors`); :mod:`sweeper.study.spec` puts them
together. Errors are rendered by ``trainers.config.format_validation_error``, the one formatter shared
with the run config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, model_validator

from trainers.config import FastSafeLoader, YamlFileError, read_yaml_file, refuse_bool_as_number


class SpecError(ValueError):
    """A study spec is invalid. ``str(error)`` is the user-facing message (one line per bad field)."""


class SpecModel(BaseModel):
    """Frozen; unknown keys are rejected (the error lists the accepted keys); numbers are finite (no
    inf, nan) and never booleans (``n_trials: true`` is refused, not read as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # a model validator, not a field one: pydantic allows no before-validator on a union's `type` field
        if isinstance(data, dict):
            problems = []
            for name, value in data.items():
                if isinstance(name, str) and name in cls.model_fields:
                    try:
                        refuse_bool_as_number(cls, value, name)
                    except ValueError as error:
                        problems.append(f"{name}: {error}")
            if problems:
                raise ValueError("\n".join(problems))
        return data


Scalar = Union[None, bool, int, float, str]


class _Loader(FastSafeLoader):
    """SafeLoader (libyaml's parser when available) that reads ``1e-4`` as a float (YAML 1.1 wants
    ``1.0e-4``; users write ``1e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document at ``path``; a missing file, bad YAML or a file beyond the limits of
    :mod:`trainers.safe_yaml` (size, regular file, UTF-8, depth, expanded size) is a :class:`SpecError`
    naming ``what``."""
    try:
        return read_yaml_file(path, what, loader=_Loader)
    except YamlFileError as error:
        raise SpecError(str(error)) from None
