"""Imports every method module so that each registers itself. Add new methods here."""

import importlib

for _module in ("bonus", "siren", "aer", "steer", "forking", "clip_cov", "kl_cov", "entropy_advantage"):
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as error:  # a method module not written yet
        if error.name != f"{__package__}.{_module}":
            raise
