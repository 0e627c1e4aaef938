"""What every section of a study spec shares: the strict, frozen pydantic base, the error type, and
the YAML reader of spec files.

Each section owns its schema beside the code that uses it (the space's parameters in
:mod:`sweeper.space`, sampler specs in :mod:`sweeper.samplers`, pruner and health specs in
:mod:`sweeper.pruning`, executor specs in :mod:`sweeper.executors`); :mod:`sweeper.spec` puts them
together. Errors are rendered by ``trainers.config.format_validation_error``, the one formatter shared
with the run config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict


class SpecError(ValueError):
    """A study spec is invalid. ``str(error)`` is the user-facing message (one line per bad field)."""


class SpecModel(BaseModel):
    """Frozen; unknown keys are rejected (the error lists the accepted keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Scalar = Union[None, bool, int, float, str]


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``; users write ``1e-4``)."""


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
    """The YAML document at ``path``; a missing file or bad YAML is a :class:`SpecError` naming ``what``."""
    if not path.exists():
        raise SpecError(f"{what} {path} does not exist")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as error:
        raise SpecError(f"{what} {path} is not valid YAML: {error}") from None
