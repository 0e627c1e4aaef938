"""Other trainers' names for a run config: TRL ``GRPOConfig`` arguments and verl Hydra keys.

:func:`to_trl` and :func:`to_verl` map a validated RunConfig (plain data) to ``(mapped, unmapped, notes)``:
the same knobs under the other trainer's names where an equivalent exists, the knobs that have none
(``[(path, value)]``; e.g. SIREN, AER and STEER knobs are not in upstream TRL or verl), and notes on
semantics that differ. :func:`sweeper.export.export_best` writes them with provenance.
"""

from __future__ import annotations

from typing import Any

from .space import leaves, set_path

_SCHEDULE_TRL = {"constant": "constant", "warmup_constant": "constant_with_warmup", "cosine": "cosine"}
_LOSS_AGG_TRL = {"token_mean": "bnpo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}
_LOSS_AGG_VERL = {"token_mean": "token-mean", "seq_mean_token_mean": "seq-mean-token-mean", "seq_mean_token_sum_norm": "seq-mean-token-sum-norm"}
# knobs that only matter for a given entropy.method
_METHOD_SECTIONS = {
    "entropy_bonus": ["bonus"], "siren": ["siren", "anchor"], "aer": ["aer", "anchor"], "steer": ["steer"],
    "forking_tokens": ["forking"], "clip_cov": ["clip_cov"], "kl_cov": ["kl_cov"], "entropy_advantage": ["entropy_advantage"],
}
_ENTROPY_SECTIONS = {"bonus", "siren", "aer", "steer", "forking", "clip_cov", "kl_cov", "entropy_advantage", "anchor"}


def _relevant(path: str, config: dict[str, Any]) -> bool:
    """Leave out knobs of entropy methods that are not in use, and engine details that do not transfer."""
    parts = path.split(".")
    if parts[0] == "entropy" and len(parts) > 2 and parts[1] in _ENTROPY_SECTIONS:
        return parts[1] in _METHOD_SECTIONS.get(config["entropy"]["method"], [])
    if path == "rollout.vllm_gpu_memory_utilization":
        return config["rollout"]["engine"] == "vllm"
    if path == "data.dataset" or path.startswith("data.dataset."):
        return config["data"]["source"] == "dataset"
    if path.startswith("data.synthetic."):
        return config["data"]["source"] == "synthetic"
    return path not in ("entropy.chunk_size", "train.resume", "model.path")


def _unmapped(config: dict[str, Any], used: set[str]) -> list[tuple[str, Any]]:
    return [(p, v) for p, v in leaves(config).items() if p not in used and _relevant(p, config)]


def to_trl(config: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]], list[str]]:
    """RunConfig -> (TRL GRPOConfig kwargs, knobs without equivalent, notes)."""
    c = config
    out: dict[str, Any] = {}
    used: set[str] = set()
    notes: list[str] = []

    def put(name: str, value: Any, *paths: str) -> None:
        out[name] = value
        used.update(paths)

    put("output_dir", c["train"]["output_dir"], "train.output_dir")
    put("seed", c["seed"], "seed")
    put("max_steps", c["train"]["steps"], "train.steps")
    put("learning_rate", c["optim"]["lr"], "optim.lr")
    put("weight_decay", c["optim"]["weight_decay"], "optim.weight_decay")
    put("adam_beta1", c["optim"]["betas"][0], "optim.betas")
    put("adam_beta2", c["optim"]["betas"][1], "optim.betas")
    put("warmup_steps", c["optim"]["warmup_steps"], "optim.warmup_steps")
    if c["optim"]["schedule"] == "cosine" and c["optim"]["min_lr_ratio"] > 0:
        put("lr_scheduler_type", "cosine_with_min_lr", "optim.schedule")
        put("lr_scheduler_kwargs", {"min_lr_rate": c["optim"]["min_lr_ratio"]}, "optim.min_lr_ratio")
    else:
        put("lr_scheduler_type", _SCHEDULE_TRL[c["optim"]["schedule"]], "optim.schedule")
        used.add("optim.min_lr_ratio")
    if c["optim"]["max_grad_norm"] is not None:
        put("max_grad_norm", c["optim"]["max_grad_norm"], "optim.max_grad_norm")
    put("num_generations", c["rollout"]["group_size"], "rollout.group_size")
    completions = c["rollout"]["prompts_per_step"] * c["rollout"]["group_size"]
    per_optimizer_step = completions // c["train"]["mini_batches"]
    micro = c["train"]["micro_batch_size"] or per_optimizer_step
    put("per_device_train_batch_size", micro, "train.micro_batch_size")
    put("gradient_accumulation_steps", max(1, per_optimizer_step // micro), "train.mini_batches")
    put("steps_per_generation", c["train"]["mini_batches"], "rollout.prompts_per_step")
    notes.append("batch sizes assume one device: per_device_train_batch_size x gradient_accumulation_steps = completions "
                 "per optimizer step; divide by the number of GPUs")
    put("num_iterations", c["train"]["ppo_epochs"], "train.ppo_epochs")
    put("max_completion_length", c["rollout"]["max_new_tokens"], "rollout.max_new_tokens")
    put("temperature", c["rollout"]["temperature"], "rollout.temperature")
    put("top_p", c["rollout"]["top_p"], "rollout.top_p")
    put("top_k", c["rollout"]["top_k"] or None, "rollout.top_k")
    put("use_vllm", c["rollout"]["engine"] == "vllm", "rollout.engine")
    if c["rollout"]["engine"] == "vllm":
        put("vllm_gpu_memory_utilization", c["rollout"]["vllm_gpu_memory_utilization"], "rollout.vllm_gpu_memory_utilization")
    put("epsilon", c["clip"]["eps_low"], "clip.eps_low")
    put("epsilon_high", c["clip"]["eps_high"], "clip.eps_high")
    if c["clip"]["dual_c"] is not None:
        put("delta", c["clip"]["dual_c"], "clip.dual_c")
        notes.append("clip.dual_c -> delta: TRL's two-sided clipping caps the ratio at delta (INTELLECT-2), the same bound "
                     "dual-clip puts on negative-advantage tokens")
    else:
        used.add("clip.dual_c")
    put("beta", c["kl"]["beta"], "kl.beta")
    put("loss_type", _LOSS_AGG_TRL[c["loss_agg"]], "loss_agg")
    if c["loss_agg"] == "seq_mean_token_sum_norm":
        notes.append("loss_type dr_grpo divides by max_completion_length; here it divides by the padded length of the micro-batch")
    put("scale_rewards", "group" if c["advantage"] == "grpo" else "none", "advantage")
    if c["entropy"]["method"] == "forking_tokens":
        put("top_entropy_quantile", c["entropy"]["forking"]["top_fraction"], "entropy.forking.top_fraction", "entropy.method")
        if c["entropy"]["forking"]["scope"] != "batch":
            notes.append("TRL's top_entropy_quantile thresholds over the batch; entropy.forking.scope 'response' has no equivalent")
    elif c["entropy"]["method"] == "none":
        used.add("entropy.method")
    put("eval_strategy", "steps", "train.eval_every")
    put("eval_steps", c["train"]["eval_every"], "train.eval_every")
    put("save_steps", c["train"]["checkpoint_every"] or c["train"]["steps"], "train.checkpoint_every")
    put("logging_steps", c["train"]["log_every"], "train.log_every")
    put("bf16", c["model"]["dtype"] == "bfloat16", "model.dtype")
    put("fp16", c["model"]["dtype"] == "float16", "model.dtype")
    return out, _unmapped(config, used), notes


def to_verl(config: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]], list[str]]:
    """RunConfig -> (verl Hydra overrides as a nested mapping, knobs without equivalent, notes)."""
    c = config
    flat: dict[str, Any] = {}
    used: set[str] = set()
    notes: list[str] = []

    def put(key: str, value: Any, *paths: str) -> None:
        flat[key] = value
        used.update(paths)

    actor, rollout = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    put("actor_rollout_ref.model.path", c["model"]["path"], "model.path")
    put("algorithm.adv_estimator", "grpo")
    put("algorithm.norm_adv_by_std_in_grpo", c["advantage"] == "grpo", "advantage")
    put("data.train_batch_size", c["rollout"]["prompts_per_step"], "rollout.prompts_per_step")
    put("data.max_response_length", c["rollout"]["max_new_tokens"], "rollout.max_new_tokens")
    put(f"{rollout}.n", c["rollout"]["group_size"], "rollout.group_size")
    put(f"{rollout}.temperature", c["rollout"]["temperature"], "rollout.temperature")
    put(f"{rollout}.top_p", c["rollout"]["top_p"], "rollout.top_p")
    put(f"{rollout}.top_k", c["rollout"]["top_k"] or -1, "rollout.top_k")
    put(f"{rollout}.name", "vllm" if c["rollout"]["engine"] == "vllm" else "hf", "rollout.engine")
    if c["rollout"]["engine"] == "vllm":
        put(f"{rollout}.gpu_memory_utilization", c["rollout"]["vllm_gpu_memory_utilization"], "rollout.vllm_gpu_memory_utilization")
    put(f"{rollout}.val_kwargs.n", c["eval"]["n_samples"], "eval.n_samples")
    put(f"{rollout}.val_kwargs.temperature", c["eval"]["temperature"], "eval.temperature")
    put(f"{rollout}.val_kwargs.top_p", c["eval"]["top_p"], "eval.top_p")
    put(f"{rollout}.val_kwargs.do_sample", True)
    put(f"{actor}.optim.lr", c["optim"]["lr"], "optim.lr")
    put(f"{actor}.optim.weight_decay", c["optim"]["weight_decay"], "optim.weight_decay")
    put(f"{actor}.optim.lr_warmup_steps", c["optim"]["warmup_steps"], "optim.warmup_steps")
    if c["optim"]["schedule"] == "cosine":
        put(f"{actor}.optim.warmup_style", "cosine", "optim.schedule")
        put(f"{actor}.optim.min_lr_ratio", c["optim"]["min_lr_ratio"], "optim.min_lr_ratio")
    else:
        put(f"{actor}.optim.warmup_style", "constant", "optim.schedule", "optim.min_lr_ratio")
    if c["optim"]["max_grad_norm"] is not None:
        put(f"{actor}.grad_clip", c["optim"]["max_grad_norm"], "optim.max_grad_norm")
    put(f"{actor}.ppo_epochs", c["train"]["ppo_epochs"], "train.ppo_epochs")
    put(f"{actor}.ppo_mini_batch_size", c["rollout"]["prompts_per_step"] // c["train"]["mini_batches"], "train.mini_batches")
    if c["train"]["micro_batch_size"]:
        put(f"{actor}.ppo_micro_batch_size_per_gpu", c["train"]["micro_batch_size"], "train.micro_batch_size")
    put(f"{actor}.clip_ratio_low", c["clip"]["eps_low"], "clip.eps_low")
    put(f"{actor}.clip_ratio_high", c["clip"]["eps_high"], "clip.eps_high")
    if c["clip"]["dual_c"] is not None:
        put(f"{actor}.clip_ratio_c", c["clip"]["dual_c"], "clip.dual_c")
    else:
        used.add("clip.dual_c")
        notes.append("verl always applies dual-clip (clip_ratio_c, default 3.0); this config has it off (clip.dual_c: null)")
    put(f"{actor}.loss_agg_mode", _LOSS_AGG_VERL[c["loss_agg"]], "loss_agg")
    put(f"{actor}.use_kl_loss", c["kl"]["beta"] > 0, "kl.beta")
    if c["kl"]["beta"] > 0:
        put(f"{actor}.kl_loss_coef", c["kl"]["beta"])
        put(f"{actor}.kl_loss_type", "low_var_kl")
    method = c["entropy"]["method"]
    put(f"{actor}.entropy_coeff", c["entropy"]["bonus"]["coef"] if method == "entropy_bonus" else 0.0,
        *(["entropy.bonus.coef"] if method == "entropy_bonus" else []))
    if method in ("none", "entropy_bonus"):
        used.add("entropy.method")
    if method == "clip_cov":
        put(f"{actor}.policy_loss.loss_mode", "clip_cov", "entropy.method")
        put(f"{actor}.policy_loss.clip_cov_ratio", c["entropy"]["clip_cov"]["ratio"], "entropy.clip_cov.ratio")
        put(f"{actor}.policy_loss.clip_cov_lb", c["entropy"]["clip_cov"]["lower"], "entropy.clip_cov.lower")
        put(f"{actor}.policy_loss.clip_cov_ub", c["entropy"]["clip_cov"]["upper"], "entropy.clip_cov.upper")
    elif method == "kl_cov":
        put(f"{actor}.policy_loss.loss_mode", "kl_cov", "entropy.method")
        put(f"{actor}.policy_loss.kl_cov_ratio", c["entropy"]["kl_cov"]["ratio"], "entropy.kl_cov.ratio")
        put(f"{actor}.policy_loss.ppo_kl_coef", c["entropy"]["kl_cov"]["coef"], "entropy.kl_cov.coef")
    put("trainer.total_training_steps", c["train"]["steps"], "train.steps")
    put("trainer.test_freq", c["train"]["eval_every"], "train.eval_every")
    put("trainer.val_before_train", c["train"]["eval_at_start"], "train.eval_at_start")
    put("trainer.save_freq", c["train"]["checkpoint_every"] or -1, "train.checkpoint_every")
    put("trainer.default_local_dir", c["train"]["output_dir"], "train.output_dir")
    put("trainer.resume_mode", "auto" if c["train"]["resume"] else "disable", "train.resume")
    if c["model"]["dtype"] != "float32":
        notes.append(f"model.dtype {c['model']['dtype']}: verl sets precision through FSDP mixed-precision options")
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        set_path(nested, key, value)
    notes.append("pass as Hydra overrides: " + " ".join(f"{k}={_hydra(v)}" for k, v in list(flat.items())[:3]) + " ...")
    return nested, _unmapped(config, used), notes


def _hydra(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)

