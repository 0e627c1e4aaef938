"""Entropy interventions: one module per method, registered by name (see base.py for the hooks)."""

from .base import (EntropyIntervention, MicroBatch, StepBatch, build_intervention, register_intervention,
                   registered_interventions)

__all__ = ["EntropyIntervention", "MicroBatch", "StepBatch", "build_intervention", "register_intervention",
           "registered_interventions"]
