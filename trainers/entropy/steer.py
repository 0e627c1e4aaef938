"""STEER: stabilizing token-level entropy change via reweighting (Hao et al., arXiv 2510.10150;
code zz-haooo/STEER @ b31df71, ``verl/trainer/ppo/core_algos.py`` ``compute_token_weights``).

For every sampled token, estimate the first-order change Omega of its state's entropy caused by the
update, and down-weight the PPO loss of tokens with large |Omega| so the per-step entropy change stays
moderate (no token is zeroed; most weights stay near 1). All under no_grad; the weights are constants::

    x     = clamp(pi_theta(a|s), 1e-8, 1 - 1e-8)   current policy, sampled token (detached)
    p_old = clamp(pi_old(a|s), 1e-8, 1)
    H     = full-vocabulary entropy of pi_old(.|s)  (old-policy pass, rollout temperature)
    omega_form code  (default; released code):  Omega = (A / p_old) * x (1 - x) * (log x + H)
    omega_form paper (Theorem 1 / Eq. 9):       Omega = -I_clip * A * x (1 - x)^2 * (log x + H) / p_old
    non-finite Omega -> 0
    mapping exp:     k = -ln(w_min) / max(max|Omega|, omega_floor);  w = clamp(exp(-k |Omega|), w_min, 1)
                     (the largest-|Omega| token gets exactly w_min when max|Omega| >= omega_floor)
    mapping linear:  w = clamp(w_max - (|Omega| - m_min)(w_max - w_min)/(m_max - m_min), w_min, w_max);
                     all-equal |Omega| -> (w_min + w_max)/2
    loss:            l'_{i,t} = w_{i,t} * l_{i,t} (the trainer's clipped PPO loss), normal aggregation

The code form drops the paper's sign and one factor (1 - x); only |Omega| / max|Omega| enters the
weights, so the sign is irrelevant there. I_clip (paper form only) is 0 for tokens whose PPO loss is on
a clipped branch (zero gradient): the ``clipped`` statistic of the step's own PPO loss
(``trainers.algorithms.ppo_clip_loss`` with the run's ``clip`` settings, handed over in
``MicroBatch.clip_stats``): A > 0 and r > 1 + eps_high, A < 0 and r < 1 - eps_low, or the dual-clip
bound active (A < 0, r beyond ``clip.dual_c``). The code form has no I_clip: clipped tokens already get
no gradient but still enter the max-normalization.

Hyperparameters (``entropy.steer.*``; release defaults from run/run_exp.sh, run_linear.sh):

- ``w_min`` (lambda_min, ``token_weight_min``) 0.8 (code fallback 0.95; paper sweeps 0.5-0.8).
- ``mapping`` ``exp`` (STEER proper, ``linear=False``) | ``linear`` (run_linear.sh).
- ``w_max`` 1.2 for the linear mapping (code fallback 1.05); the exp mapping clamps to 1 regardless.
- ``omega_floor`` 0.02 (hard-coded in the code): floor on max|Omega| so tiny updates are not over-damped.
- ``omega_form`` ``code`` | ``paper`` (see ``docs/steer_estimator.md`` for which tracks a softmax policy's
  realized entropy change better).
- ``normalize_over``: ``micro_batch`` (code: max/min over the valid tokens of the current micro-batch)
  | ``batch``: max/min of |Omega| over the valid tokens of the whole step batch, computed once in
  ``begin_step`` with x = pi_old (the current policy equals the old one at the start of the step; with
  several processes, over every process's shard, all-reduced). The
  current-policy x drifts over later mini-batches, so a token's |Omega| can then exceed that step-level
  max; the clamp keeps its weight in [w_min, 1] (exp) or [w_min, w_max] (linear).
- The backbone the release uses: GRPO, token-mean, ``clip.eps_low`` 0.2, ``clip.eps_high`` 0.28,
  ``clip.dual_c`` 10.

Hooks: ``begin_step`` (only for ``normalize_over: batch``), ``token_weights``. No state across steps.
"""

from __future__ import annotations

from typing import Any

import torch

from ..collectives import global_max
from ..config import steer_bounds_problem
from .base import EntropyIntervention, MicroBatch, StepBatch, register_intervention

OMEGA_FORMS = ("code", "paper")


def steer_omega(x: torch.Tensor, p_old: torch.Tensor, entropy_old: torch.Tensor, advantages: torch.Tensor,
                form: str = "code", clip_active: torch.Tensor | None = None) -> torch.Tensor:
    """Omega per token (no grad). ``x``, ``p_old``: probabilities of the sampled token under the current
    and the old policy; ``entropy_old``: H of pi_old(.|s); ``clip_active`` (paper form): bool, True where
    the PPO loss is clipped (I_clip = 0). Non-finite values become 0."""
    with torch.no_grad():
        x = x.detach().float().clamp(1e-8, 1.0 - 1e-8)
        p_old = p_old.detach().float().clamp(1e-8, 1.0)
        log_x_plus_h = torch.log(x) + entropy_old.detach().float()
        advantages = advantages.detach().float()
        if form == "code":
            omega = advantages / p_old * x * (1.0 - x) * log_x_plus_h
        elif form == "paper":
            omega = -advantages * x * (1.0 - x) ** 2 * log_x_plus_h / p_old
            if clip_active is not None:
                omega = omega * (~clip_active.bool()).float()
        else:
            raise ValueError(f"entropy.steer.omega_form must be one of {list(OMEGA_FORMS)}, got {form!r}")
        return torch.where(torch.isfinite(omega), omega, torch.zeros_like(omega))


def omega_range(omega: torch.Tensor, mask: torch.Tensor) -> tuple[float, float] | None:
    """(max |Omega|, min |Omega|) over valid tokens, or None if there are none."""
    valid = mask.bool()
    if not valid.any():
        return None
    magnitude = omega.abs()[valid]
    return float(magnitude.max()), float(magnitude.min())


def steer_weights(omega: torch.Tensor, mask: torch.Tensor, w_min: float, mapping: str = "exp",
                  w_max: float = 1.0, omega_floor: float = 0.02,
                  omega_max: float | None = None, omega_min: float | None = None) -> torch.Tensor:
    """Token weights from |Omega| (float [B, T], 0 outside ``mask``, no grad).

    max/min |Omega| are taken over the valid tokens of ``omega`` unless ``omega_max`` / ``omega_min``
    are given (step-level normalization). See the module docstring for the two mappings.
    """
    if not 0.0 < w_min <= 1.0:
        raise ValueError(f"entropy.steer.w_min must be in (0, 1], got {w_min}")
    with torch.no_grad():
        valid = mask.bool()
        weights = torch.zeros_like(omega, dtype=torch.float32)
        if not valid.any():
            return weights
        magnitude = omega.detach().abs().float()[valid]
        m_max = torch.as_tensor(omega_max if omega_max is not None else magnitude.max(), dtype=torch.float32,
                                device=omega.device)
        m_min = torch.as_tensor(omega_min if omega_min is not None else magnitude.min(), dtype=torch.float32,
                                device=omega.device)
        if mapping == "exp":
            k = -torch.log(torch.tensor(w_min, dtype=torch.float32, device=omega.device)) / torch.clamp(m_max, min=omega_floor)
            valid_weights = torch.exp(-k * magnitude).clamp(w_min, 1.0)
        elif mapping == "linear":
            problem = steer_bounds_problem(w_min, w_max, mapping)
            if problem is not None:
                raise ValueError(problem)
            if bool(m_max > m_min):
                valid_weights = w_max - (magnitude - m_min) * (w_max - w_min) / (m_max - m_min)
            else:
                valid_weights = torch.full_like(magnitude, (w_min + w_max) / 2.0)
            valid_weights = valid_weights.clamp(w_min, w_max)
        else:
            raise ValueError(f"entropy.steer.mapping must be 'exp' or 'linear', got {mapping!r}")
        weights[valid] = valid_weights
        return weights


@register_intervention("steer")
class Steer(EntropyIntervention):
    """STEER at the hooks: token_weights (and begin_step for step-level normalization)."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        from ..config import SteerConfig

        config = config if config is not None else SteerConfig()
        super().__init__(config, entropy_config, run_config)
        self._step_range: tuple[float, float] | None = None

    def begin_step(self, batch: StepBatch) -> dict[str, float]:
        if self.config.normalize_over != "batch":
            return {}
        p_old = batch.old_logp.exp()
        advantages = batch.advantages[:, None].expand_as(batch.old_logp)
        omega = steer_omega(p_old, p_old, batch.old_entropy, advantages, self.config.omega_form)
        local = omega_range(omega, batch.response_mask) or (float("-inf"), float("inf"))
        # the range over the whole step batch: every process's shard (max of maxima, min of minima)
        extremes = torch.tensor([local[0], -local[1]], dtype=torch.float64, device=omega.device)
        largest, smallest = global_max(extremes).tolist()
        self._step_range = None if largest == float("-inf") else (largest, -smallest)
        return {} if self._step_range is None else {"omega_abs_max_step": self._step_range[0]}

    def token_weights(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        cfg = self.config
        clip_active = micro.require_clip_stats("steer")["clipped"] if cfg.omega_form == "paper" else None
        omega = steer_omega(micro.logp.detach().exp(), micro.old_logp.exp(), micro.old_entropy, micro.advantages,
                            cfg.omega_form, clip_active)
        omega_max = omega_min = None
        if cfg.normalize_over == "batch" and self._step_range is not None:
            omega_max, omega_min = self._step_range
        w_max = cfg.w_max if cfg.mapping == "linear" else 1.0
        weights = steer_weights(omega, micro.response_mask, cfg.w_min, cfg.mapping, w_max, cfg.omega_floor,
                                omega_max, omega_min)
        valid = micro.response_mask.bool()
        if not valid.any():
            return weights, {}
        valid_weights = weights[valid]
        magnitude = omega.abs()[valid]
        return weights, {
            "weight_mean": float(valid_weights.mean()),
            "weight_min": float(valid_weights.min()),
            "weight_max": float(valid_weights.max()),
            "downweighted_fraction": float((valid_weights < 1.0 - 1e-6).float().mean()),
            "omega_abs_mean": float(magnitude.mean()),
            "omega_abs_max": float(magnitude.max()),
        }
