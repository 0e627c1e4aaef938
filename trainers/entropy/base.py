"""The places an entropy intervention plugs into the GRPO step, and the registry that names them.

The step (``trainers/grpo.py``) reads top to bottom; an intervention changes it only at these
named points, each a method of :class:`EntropyIntervention` whose default leaves the step as
plain GRPO:

1. ``old_policy_features(logits, batch_mask)``  extra no-grad tensors from the old-policy pass
2. ``begin_step(step_batch)``                    per-step state: anchors, coefficient updates
3. ``token_advantages(micro)``                   reshape advantages (entropy advantage)
4. ``modify_token_loss(micro, token_loss)``      replace per-token losses (KL-Cov)
5. ``token_weights(micro)``                      constant per-token weights (STEER, Clip-Cov)
6. ``loss_mask(micro)``                          which tokens the PG loss averages over (80/20)
7. ``extra_loss(micro)``                         extra differentiable loss terms (bonus, SIREN, AER)
8. ``end_step()``                                state after the updates (``previous`` anchors)

Each hook returns metrics (name -> float) where noted; the trainer averages per-micro-batch
metrics over the step and logs them under the method's prefix.

What the step hands the hooks: :class:`StepBatch` (the rollout batch after the old-policy pass) to
``begin_step``; :class:`MicroBatch` to the per-micro-batch hooks. After the PPO loss the step puts that
loss's clip statistics in ``MicroBatch.clip_stats`` (``trainers.algorithms.ppo_clip_loss``), so the hooks
after it (4-7) read which tokens are clipped instead of recomputing it from the run's ``clip`` settings.

Data parallel: each process holds a shard of the step batch. A statistic that sets a method's state
(an anchor, a coefficient, a threshold) is reduced over the processes (``collectives``), so every rank
computes what one process over the whole batch would; a no-op on one process.

A method is its module here (found by name, ``load_methods``) and its config section in
``trainers/config.py`` (``MethodSection``); ``register_intervention`` refuses a name without a section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class StepBatch:
    """The whole rollout batch of one step, after the old-policy pass. Tensors are [B, T] unless noted
    (B = prompts x G responses, T = padded response length); nothing here requires grad."""

    step: int
    response_mask: torch.Tensor          # float 0/1, 1 on response tokens that enter the loss
    old_logp: torch.Tensor               # log pi_old(o_t | s_t)
    old_entropy: torch.Tensor            # full-vocabulary entropy of pi_old(. | s_t), rollout temperature
    advantages: torch.Tensor             # [B] group-relative advantage per response
    rewards: torch.Tensor                # [B]
    group_index: torch.Tensor            # [B] long, which prompt the response belongs to
    group_accuracy: torch.Tensor         # [B] mean correctness of the response's group
    old_features: dict[str, torch.Tensor] = field(default_factory=dict)  # from old_policy_features
    temperature: float = 1.0


@dataclass
class MicroBatch:
    """One forward pass with grad over a slice of the step batch. Tensors are [b, T] unless noted."""

    logits: torch.Tensor                 # [b, T, V] temperature-scaled logits of the current policy (grad)
    logp: torch.Tensor                   # log pi(o_t | s_t) of the current policy (grad)
    old_logp: torch.Tensor
    old_entropy: torch.Tensor
    response_mask: torch.Tensor          # float 0/1
    advantages: torch.Tensor             # [b, T] token advantages (A_i broadcast over t)
    group_accuracy: torch.Tensor         # [b]
    rows: torch.Tensor                   # [b] long, the rows of the StepBatch this slice holds
    old_features: dict[str, torch.Tensor] = field(default_factory=dict)  # sliced to the micro-batch
    num_micro_batches: int = 1           # micro-batches in this optimizer step (for per-step scaling)
    chunk_size: int = 1024
    seed: int = 0                        # for the hooks' random choices: a function of (run seed, step, epoch,
                                         # mini-batch, global micro-batch index), the same on any number of processes
    clip_stats: dict[str, torch.Tensor] | None = None  # set by the step after the PPO loss (ppo_clip_loss's stats)

    def require_clip_stats(self, method: str) -> dict[str, torch.Tensor]:
        if self.clip_stats is None:
            raise RuntimeError(f"{method}: MicroBatch.clip_stats is not set; the GRPO step sets it after the PPO loss "
                               "(trainers.algorithms.ppo_clip_loss), before the token-loss hooks")
        return self.clip_stats


Metrics = dict[str, float]


class EntropyIntervention:
    """Plain GRPO: every hook leaves the step unchanged. Methods subclass this."""

    name: str = "none"

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        self.config = config                   # the method's own section (e.g. SirenConfig)
        self.entropy_config = entropy_config   # the whole EntropyConfig (anchor, chunk_size)
        self.run_config = run_config           # the whole RunConfig (loss_agg, clip eps), None in unit tests

    # 1 -------------------------------------------------------------------------------------------
    def old_policy_features(self, logits: torch.Tensor, response_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra [b, T] tensors computed from the old policy's (temperature-scaled) logits, no grad."""
        return {}

    # 2 -------------------------------------------------------------------------------------------
    def begin_step(self, batch: StepBatch) -> Metrics:
        return {}

    # 3 -------------------------------------------------------------------------------------------
    def token_advantages(self, micro: MicroBatch) -> torch.Tensor:
        return micro.advantages

    # 4 -------------------------------------------------------------------------------------------
    def modify_token_loss(self, micro: MicroBatch, token_loss: torch.Tensor,
                          advantages: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return token_loss, {}

    # 5 -------------------------------------------------------------------------------------------
    def token_weights(self, micro: MicroBatch) -> tuple[torch.Tensor | None, Metrics]:
        return None, {}

    # 6 -------------------------------------------------------------------------------------------
    def loss_mask(self, micro: MicroBatch) -> tuple[torch.Tensor | None, Metrics]:
        return None, {}

    # 7 -------------------------------------------------------------------------------------------
    def extra_loss(self, micro: MicroBatch) -> tuple[torch.Tensor | None, Metrics]:
        return None, {}

    # 8 -------------------------------------------------------------------------------------------
    def end_step(self) -> Metrics:
        return {}

    # state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


_REGISTRY: dict[str, Callable[..., EntropyIntervention]] = {"none": EntropyIntervention}

def register_intervention(name: str):
    """Class decorator: ``@register_intervention("siren")`` makes ``entropy.method: siren`` pick it.

    ``name`` must be a method with a config section (``trainers.config.METHOD_SECTIONS``): a method is
    its module here plus its section in ``trainers/config.py``."""
    from ..config import METHOD_SECTIONS

    if name not in METHOD_SECTIONS:
        raise ValueError(f"entropy method {name!r} has no config section: add a MethodSection subclass with "
                         f"method = {name!r} and its field to EntropyConfig in trainers/config.py")

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"entropy method {name!r} is registered twice: by {_REGISTRY[name].__module__} "
                             f"and {cls.__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def package_modules() -> list[str]:
    """The modules of ``trainers.entropy``, found by name: each method's module registers itself on import;
    the shared ones (base, ops, anchor, ...) register nothing."""
    import pkgutil
    import sys

    package = sys.modules[__package__]  # imported before this module is (importing it here would be a loop)
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_"))


def load_methods() -> None:
    """Import every module of the package, so that every method module registers its method (idempotent)."""
    import importlib

    for module in package_modules():
        importlib.import_module(f"{__package__}.{module}")


def registered_interventions() -> list[str]:
    load_methods()
    return sorted(_REGISTRY)


def build_intervention(entropy_config: Any, run_config: Any = None) -> EntropyIntervention:
    """The intervention named by ``entropy_config.method``, given its own config section and the run config."""
    from ..config import METHOD_SECTIONS

    load_methods()
    name = entropy_config.method
    if name not in _REGISTRY:
        raise ValueError(f"entropy.method: unknown method {name!r}; registered: {registered_interventions()}")
    sections = METHOD_SECTIONS.get(name, ())
    section = getattr(entropy_config, sections[0], None) if sections else None
    return _REGISTRY[name](section, entropy_config, run_config=run_config)
