"""Runs inside .venv-verl (verl 0.9.x): what verl makes of an exported config. Not a test module: the
``exports`` tests (tests/test_export_libraries.py) run it as ``.venv-verl/bin/python tests/exports/verl_check.py``
with a JSON request on stdin and read a JSON answer on stdout.

Request: ``{name: {"config": "/path/best.verl.yaml", "batch": {tensor name: nested list} | null}, ...}``;
answer: ``{name: {...what verl resolved...}}`` (one process for all, as importing verl takes seconds).

What it does, as a launch of ``python -m verl.trainer.main_ppo --config-path DIR --config-name NAME`` would:
1. composes the file with Hydra (its ``defaults: [ppo_trainer, _self_]`` over verl's config package: every
   key must exist in verl's config, struct mode);
2. runs ``verl.utils.config.validate_config`` with the reference-policy and critic flags that
   ``main_ppo.main`` computes (the asserts of a real launch, before Ray starts);
3. builds the config dataclasses the workers build (actor with its optimizer, rollout, model, reference,
   algorithm), checks the rollout name is registered, and loads the model's HF config and tokenizer
   through ``HFModelConfig`` (the path must be a model folder);
4. builds the optimizer and LR scheduler through verl's own builders (``build_optimizer``,
   ``FSDPEngine._build_lr_scheduler``) with the step count the trainer injects, and records the lr of every step;
5. with ``batch``: the actor loss of one mini-batch taken as one micro-batch, through verl's registered
   policy loss, ``agg_loss`` and ``kl_penalty``, composed as ``verl.workers.utils.losses.ppo_loss`` composes them
   (``pg - entropy_coeff * agg(H) + kl_loss_coef * agg(kl)``, global batch info = this micro-batch).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace


def compose(path: Path):
    from hydra import compose as hydra_compose, initialize_config_dir

    name = path.name[:-len(".yaml")] if path.name.endswith(".yaml") else path.name
    with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
        return hydra_compose(config_name=name)


def reference_config(arr):
    """The reference policy's ActorConfig as ``ActorRolloutRefWorker.init_model`` (engine_workers.py) builds it."""
    from omegaconf import open_dict

    from verl.utils.config import omega_conf_to_dataclass

    ref = arr.ref.copy()
    with open_dict(ref):
        ref.ppo_mini_batch_size = arr.actor.ppo_mini_batch_size
        ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
        ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
        ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
        ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
    return omega_conf_to_dataclass(ref)


def lr_sequence(actor_cfg, total_steps: int) -> list[float]:
    import torch

    from verl.workers.config.optimizer import build_optimizer
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    optim_cfg = actor_cfg.optim
    optim_cfg.total_training_steps = total_steps          # what the trainer injects (trainer_base.py)
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer([parameter], optim_cfg)
    scheduler = FSDPEngine._build_lr_scheduler(SimpleNamespace(optimizer_config=optim_cfg, rank=1), optimizer)
    group = optimizer.param_groups[0]
    lrs = []
    for _ in range(total_steps):
        lrs.append(group["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, {"betas": list(group["betas"]), "weight_decay": group["weight_decay"], "eps": group["eps"],
                 "optimizer": type(optimizer).__name__}


def actor_loss(actor_cfg, batch: dict) -> dict:
    import torch

    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty

    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in batch.items()}
    mask = t["mask"].bool()
    actor_cfg.global_batch_info.update(dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=mask.shape[0],
                                       loss_scale_factor=actor_cfg.loss_scale_factor)
    loss_fn = get_policy_loss_fn(actor_cfg.policy_loss.get("loss_mode", "vanilla"))
    pg_loss, _ = loss_fn(old_log_prob=t["old_logp"], log_prob=t["logp"], advantages=t["advantages"],
                         response_mask=mask, loss_agg_mode=actor_cfg.loss_agg_mode, config=actor_cfg)
    entropy = agg_loss(loss_mat=t["entropy"], loss_mask=mask, loss_agg_mode=actor_cfg.loss_agg_mode,
                       **actor_cfg.global_batch_info)
    loss = pg_loss - actor_cfg.entropy_coeff * entropy
    kl = None
    if actor_cfg.use_kl_loss:
        kld = kl_penalty(logprob=t["logp"], ref_logprob=t["ref_logp"], kl_penalty=actor_cfg.kl_loss_type)
        kl = agg_loss(loss_mat=kld, loss_mask=mask, loss_agg_mode=actor_cfg.loss_agg_mode, **actor_cfg.global_batch_info)
        loss = loss + kl * actor_cfg.kl_loss_coef
    return {"pg_loss": float(pg_loss), "entropy_agg": float(entropy), "kl_agg": None if kl is None else float(kl),
            "loss": float(loss)}


def main() -> None:
    requests = json.load(sys.stdin)
    warnings.simplefilter("ignore")
    answers = {name: check(request) for name, request in requests.items()}
    print(json.dumps(answers, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))


def check(request: dict) -> dict:
    from omegaconf import OmegaConf

    import verl
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.utils.device import auto_set_device
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    config = compose(Path(request["config"]))
    auto_set_device(config)
    use_ref, use_critic = need_reference_policy(config), need_critic(config)
    validate_config(config=config, use_reference_policy=use_ref, use_critic=use_critic)

    arr = config.actor_rollout_ref
    actor = omega_conf_to_dataclass(arr.actor)
    rollout = omega_conf_to_dataclass(arr.rollout)
    model = omega_conf_to_dataclass(arr.model)
    algorithm = omega_conf_to_dataclass(config.algorithm)
    ref = reference_config(arr) if use_ref else None
    lrs, optimizer = lr_sequence(actor, int(config.trainer.total_training_steps))
    return {
        "verl_version": verl.__version__,
        "use_reference_policy": use_ref, "use_critic": use_critic,
        "actor_class": type(actor).__name__, "optim_class": type(actor.optim).__name__,
        "rollout_registered": (rollout.name, rollout.mode) in _ROLLOUT_REGISTRY,
        "model_type": model.hf_config.model_type, "tokenizer_vocab": len(model.tokenizer),
        "lrs": lrs, "optimizer": optimizer,
        "resolved": OmegaConf.to_container(config, resolve=True),
        "actor": {k: getattr(actor, k) for k in (
            "ppo_mini_batch_size", "ppo_micro_batch_size_per_gpu", "ppo_epochs", "rollout_n", "clip_ratio_low",
            "clip_ratio_high", "clip_ratio_c", "loss_agg_mode", "loss_scale_factor", "entropy_coeff", "use_kl_loss",
            "kl_loss_coef", "kl_loss_type", "shuffle")},
        "optim": {k: getattr(actor.optim, k) for k in (
            "lr", "weight_decay", "clip_grad", "lr_scheduler_type", "lr_warmup_steps", "min_lr_ratio", "zero_indexed_step")},
        "policy_loss": {k: getattr(actor.policy_loss, k) for k in (
            "loss_mode", "clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio", "ppo_kl_coef")},
        "rollout": {"name": rollout.name, "mode": rollout.mode, "n": rollout.n, "temperature": rollout.temperature,
                    "top_p": rollout.top_p, "top_k": rollout.top_k, "dtype": rollout.dtype,
                    "log_prob_micro_batch_size_per_gpu": rollout.log_prob_micro_batch_size_per_gpu,
                    "val_kwargs": {k: getattr(rollout.val_kwargs, k) for k in ("n", "temperature", "top_p", "top_k", "do_sample")}},
        "ref": None if ref is None else {"ppo_micro_batch_size_per_gpu": ref.ppo_micro_batch_size_per_gpu,
                                         "model_dtype": ref.fsdp_config.model_dtype},
        "algorithm": {"adv_estimator": str(algorithm.adv_estimator), "norm_adv_by_std_in_grpo": algorithm.norm_adv_by_std_in_grpo},
        "loss": actor_loss(actor, request["batch"]) if request.get("batch") else None,
    }


if __name__ == "__main__":
    main()
