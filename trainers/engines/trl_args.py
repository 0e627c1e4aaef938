"""A run config's TRL ``GRPOConfig`` arguments: the one mapping, read by the TRL export
(``sweeper.results.formats.to_trl``, through ``trainers.config``) and by TRL trials (``trainers.engines.trl.train``).

Plain data in, plain data out; imports neither torch nor trl (the sweeper calls it on a login node).

Steps: TRL counts optimizer steps, ``K = ppo_epochs x mini_batches`` per rollout step here, so
``max_steps = K x train.steps`` (likewise warmup, evaluation, checkpoint and logging intervals). Batches:
``per_device_train_batch_size`` = micro-batch (responses), ``gradient_accumulation_steps`` = micro-batches per
optimizer step, ``steps_per_generation`` = micro-batches per rollout step, so one generation holds
``prompts_per_step x group_size`` completions.
"""

from __future__ import annotations

from typing import Any

# loss_agg -> GRPOConfig.loss_type (the same aggregation; EntropyGRPOTrainer checks it)
LOSS_TYPE = {"token_mean": "bnpo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}


def batch_shape(config: dict[str, Any]) -> dict[str, int]:
    """Responses per rollout step, per optimizer step (mini-batch) and per micro-batch, and micro-batches per
    optimizer step, as the native trainer runs them on one process. TRL and verl cut a mini-batch into equal
    micro-batches: when ``train.micro_batch_size`` does not divide the mini-batch, the micro-batch exported is
    the largest divisor below it (``micro_requested`` keeps the trial's value)."""
    rollout, train = config["rollout"], config["train"]
    responses = rollout["prompts_per_step"] * rollout["group_size"]
    per_mini = responses // train["mini_batches"]
    requested = min(train["micro_batch_size"] or per_mini, per_mini)
    micro = max(d for d in range(1, requested + 1) if per_mini % d == 0)
    return {
        "responses": responses,
        "per_mini": per_mini,
        "micro": micro,
        "micro_requested": requested,
        "accumulation": per_mini // micro,
    }


def optimizer_steps_per_rollout_step(config: dict[str, Any]) -> int:
    return config["train"]["ppo_epochs"] * config["train"]["mini_batches"]


def grpo_config_kwargs(config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """(``GRPOConfig`` keyword arguments of the run config ``config`` (``RunConfig.model_dump(mode="json")``), the
    run config's dotted paths they carry). The loss, advantages and entropy method are not TRL's: TRL's own loss
    options are set to what ``trainers.engines.trl.check_args`` accepts."""
    c = config
    out: dict[str, Any] = {}
    used: set[str] = set()
    shape = batch_shape(c)
    per_rollout = optimizer_steps_per_rollout_step(c)

    def put(name: str, value: Any, *paths: str) -> None:
        out[name] = value
        used.update(paths)

    put("output_dir", c["train"]["output_dir"], "train.output_dir")
    put("seed", c["seed"], "seed")
    put("max_steps", c["train"]["steps"] * per_rollout, "train.steps")
    # float32 master weights (TRL's default dtype) with the compute dtype through autocast (bf16 / fp16 flags), as
    # the trial keeps them: bf16 weights would round away updates at small learning rates
    put("model_init_kwargs", {"dtype": "float32"}, "model.dtype")
    put("trust_remote_code", c["model"]["trust_remote_code"], "model.trust_remote_code")
    put("bf16", c["model"]["dtype"] == "bfloat16", "model.dtype")
    put("fp16", c["model"]["dtype"] == "float16", "model.dtype")
    put("disable_dropout", True)  # the trainer runs the policy in eval mode (no dropout)
    put(
        "gradient_checkpointing", c["train"]["gradient_checkpointing"], "train.gradient_checkpointing"
    )  # TRL's default: on

    # optimizer and schedule
    optim = c["optim"]
    put("learning_rate", optim["lr"], "optim.lr")
    put("weight_decay", optim["weight_decay"], "optim.weight_decay")
    put("adam_beta1", optim["betas"][0], "optim.betas")
    put("adam_beta2", optim["betas"][1], "optim.betas")
    put("max_grad_norm", optim["max_grad_norm"] if optim["max_grad_norm"] is not None else 0.0, "optim.max_grad_norm")
    put("warmup_steps", optim["warmup_steps"] * per_rollout, "optim.warmup_steps")
    if optim["schedule"] == "cosine":
        put("lr_scheduler_type", "cosine_with_min_lr", "optim.schedule")
        put("lr_scheduler_kwargs", {"min_lr_rate": optim["min_lr_ratio"]}, "optim.min_lr_ratio")
    else:
        put("lr_scheduler_type", "constant_with_warmup", "optim.schedule", "optim.min_lr_ratio")

    # batch units
    put("num_generations", c["rollout"]["group_size"], "rollout.group_size")
    put("per_device_train_batch_size", shape["micro"], "train.micro_batch_size")
    put("gradient_accumulation_steps", shape["accumulation"], "train.mini_batches")
    put("steps_per_generation", c["train"]["mini_batches"] * shape["accumulation"], "rollout.prompts_per_step")
    put("num_iterations", c["train"]["ppo_epochs"], "train.ppo_epochs")

    # rollout
    put("max_completion_length", c["rollout"]["max_new_tokens"], "rollout.max_new_tokens")
    put("temperature", c["rollout"]["temperature"], "rollout.temperature")
    put("top_p", c["rollout"]["top_p"], "rollout.top_p")
    put("top_k", c["rollout"]["top_k"], "rollout.top_k")
    put("use_vllm", c["rollout"]["engine"] == "vllm", "rollout.engine")
    if c["rollout"]["engine"] == "vllm":
        put("vllm_mode", "colocate")
        put(
            "vllm_gpu_memory_utilization",
            c["rollout"]["vllm_gpu_memory_utilization"],
            "rollout.vllm_gpu_memory_utilization",
        )
        put("vllm_importance_sampling_correction", False)  # on by default in TRL; the trial has no such correction

    # clip
    put("epsilon", c["clip"]["eps_low"], "clip.eps_low")
    put("epsilon_high", c["clip"]["eps_high"], "clip.eps_high")
    put("delta", c["clip"]["dual_c"], "clip.dual_c")

    # KL, loss aggregation, advantages
    put("beta", c["kl"]["beta"], "kl.beta")
    if c["kl"]["beta"] > 0:
        put("use_bias_correction_kl", False)  # TRL's default multiplies the KL term by the ratio; the trial does not
    put("loss_type", LOSS_TYPE[c["loss_agg"]], "loss_agg")
    put("scale_rewards", "group" if c["advantage"] == "grpo" else "none", "advantage")

    # the method: trainers.engines.trl runs the trial's loss (trainers.step_loss: PPO clip, the method's module,
    # aggregation, KL) and its advantages; TRL's own entropy options stay off
    put("top_entropy_quantile", 1.0)
    put("entropy_coef", 0.0)

    # evaluation and checkpoints
    put("eval_strategy", "steps", "train.eval_every")
    put("eval_steps", c["train"]["eval_every"] * per_rollout, "train.eval_every")
    put("eval_on_start", c["train"]["eval_at_start"], "train.eval_at_start")
    put("num_generations_eval", c["eval"]["n_samples"], "eval.n_samples")
    put("per_device_eval_batch_size", c["eval"]["n_samples"])  # one prompt's samples per eval batch (TRL checks it)
    put("save_strategy", "steps", "train.checkpoint_every")
    put("save_steps", (c["train"]["checkpoint_every"] or c["train"]["steps"]) * per_rollout, "train.checkpoint_every")
    put("save_total_limit", 1)  # the trainer keeps only its latest checkpoint
    put("logging_steps", c["train"]["log_every"] * per_rollout, "train.log_every")
    return out, used
