"""Other trainers' names for a run config: TRL ``GRPOConfig`` arguments and a verl Hydra config.

:func:`to_trl` and :func:`to_verl` map a validated RunConfig (plain data) to ``(mapped, unmapped, notes)``:
the same knobs under the other trainer's names where an equivalent exists, the knobs that have none
(``[(path, value)]``), and notes. The entropy methods run in the other engines through this project's adapters
(``trainers/engines``): TRL takes every method from the run config written beside its file; verl takes Clip-Cov
and KL-Cov from its plugin, and :func:`to_verl` refuses the methods verl cannot run (:class:`EngineRefused`).
A note that starts with ``differs:`` names a semantic difference that no key of the target can remove:
the key, the value written, and the value (or formula) the trial ran with. :func:`sweeper.results.export.export_best`
writes them all as comments in the exported file, so nothing silently changes the training.

Target versions (:data:`SUPPORTED`): verl 0.9.x and TRL 1.16.x, the releases the ``exports`` tests run
(tests/test_export_libraries.py: the verl file composed over verl's own ``ppo_trainer`` config with Hydra
and checked by verl's config dataclasses and ``validate_config``; the TRL file loaded into ``GRPOConfig``;
the values each library ends up with compared with this trainer's).

The units differ between the three trainers:

- this trainer: a rollout step samples ``prompts_per_step`` prompts x ``group_size`` responses, then runs
  ``ppo_epochs`` x ``mini_batches`` optimizer steps, each over whole groups, accumulating micro-batches of
  ``micro_batch_size`` responses; the LR schedule steps once per rollout step;
- verl: ``data.train_batch_size`` and ``ppo_mini_batch_size`` count prompts (before ``rollout.n``),
  ``ppo_micro_batch_size_per_gpu`` counts responses; a trainer step is a rollout step, as here;
- TRL: ``max_steps``, ``warmup_steps``, ``eval_steps``, ``save_steps`` count optimizer steps
  (``ppo_epochs x mini_batches`` per rollout step here); batch sizes count completions per device.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from trainers.config import (METHOD_SECTIONS, RunConfig, engine_refusal, resolve_model_path,
                             trl_batch_shape as batch_shape, trl_grpo_config_kwargs)

from sweeper.study.space import leaves, set_path

# [lowest, first unsupported) release of each target; what the `exports` tests run lies inside.
SUPPORTED = {"trl": ("1.16", "1.17"), "verl": ("0.9.1", "0.10")}
TESTED = {"trl": "1.16.0", "verl": "0.9.1"}
PACKAGE = {"trl": "trl", "verl": "verl"}

_LOSS_AGG_VERL = {"token_mean": "token-mean", "seq_mean_token_mean": "seq-mean-token-mean",
                  "seq_mean_token_sum_norm": "seq-mean-token-sum-norm"}
_VERL_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# knobs that only matter for a given entropy.method (trainers.config.METHOD_SECTIONS)
_ENTROPY_SECTIONS = {section for sections in METHOD_SECTIONS.values() for section in sections}  # knobs of some method


# --------------------------------------------------------------------------- target versions


def _release(version: str) -> tuple[int, ...]:
    """'0.9.1' -> (0, 9, 1); stops at the first part that is not a number ('1.16.0.dev0' -> (1, 16, 0))."""
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
        if not part.isdigit():
            break
    return tuple(parts)


def supported_range(fmt: str) -> str:
    low, high = SUPPORTED[fmt]
    return f"{PACKAGE[fmt]} >={low},<{high}"


def is_supported(fmt: str, version: str) -> bool:
    low, high = SUPPORTED[fmt]
    return _release(low) <= _release(version) < _release(high)


def installed_version(fmt: str) -> str | None:
    """The version of the target library installed in this Python environment, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE[fmt])
    except PackageNotFoundError:
        return None


def target_version(fmt: str, given: str | None = None) -> tuple[str, str | None]:
    """(a header line naming the target version and where it came from, a warning or None).

    The version is ``given`` (``sweeper export --target-version``), else the library installed in this
    environment, else assumed to be the tested one (verl and TRL pin other versions of transformers than
    this project, so they usually live in another environment)."""
    if given:
        version, source = given, "--target-version"
    elif (found := installed_version(fmt)) is not None:
        version, source = found, "installed here"
    else:
        version, source = TESTED[fmt], f"assumed: {PACKAGE[fmt]} is not installed here; pass --target-version to check yours"
    line = f"target: {PACKAGE[fmt]} {version} ({source}); supported: {supported_range(fmt)}"
    if is_supported(fmt, version):
        return line, None
    return line, (f"{PACKAGE[fmt]} {version} is outside the supported range {supported_range(fmt)}: the exported keys "
                  f"and their semantics were checked against {PACKAGE[fmt]} {TESTED[fmt]} and may not start or may "
                  f"train differently with {version}")


# --------------------------------------------------------------------------- what is left out


def _relevant(path: str, config: dict[str, Any]) -> bool:
    """Leave out knobs of entropy methods that are not in use, and engine details that do not transfer."""
    parts = path.split(".")
    if parts[0] == "entropy" and len(parts) > 2 and parts[1] in _ENTROPY_SECTIONS:
        return parts[1] in METHOD_SECTIONS.get(config["entropy"]["method"], ())
    if path == "rollout.vllm_gpu_memory_utilization":
        return config["rollout"]["engine"] == "vllm"
    if path == "data.dataset" or path.startswith("data.dataset."):
        return config["data"]["source"] == "dataset"
    if path.startswith("data.synthetic."):
        return config["data"]["source"] == "synthetic"
    return path not in ("entropy.chunk_size", "train.resume", "model.path", "engine")


def _unmapped(config: dict[str, Any], used: set[str]) -> list[tuple[str, Any]]:
    return [(p, v) for p, v in leaves(config).items() if p not in used and _relevant(p, config)]


# --------------------------------------------------------------------------- methods an engine cannot run


class EngineRefused(ValueError):
    """The trial's entropy method needs what the target engine does not give it (``MethodSection.refused_on``)."""


def refuse_unsupported(config: dict[str, Any], engine: str) -> None:
    """Raise :class:`EngineRefused` naming what differs when ``engine`` cannot run the trial's method: an export
    never starts a plain GRPO in place of the tuned method."""
    reason = engine_refusal(config["entropy"]["method"], engine)
    if reason:
        raise EngineRefused(f"--format {engine}: {reason}. Export --format native (sweeper train) or --format trl instead.")


# --------------------------------------------------------------------------- batch units and shared notes


def model_path(config: dict[str, Any]) -> str:
    """The model folder or hub id the other trainer loads: 'builtin:NAME' becomes the shipped folder's path."""
    return resolve_model_path(config["model"]["path"])


def _common_differences(config: dict[str, Any], target: str) -> list[str]:
    """Semantic differences that hold for TRL and verl alike."""
    c, shape = config, batch_shape(config)
    notes = []
    if shape["micro"] != shape["micro_requested"]:
        notes.append(f"differs: train.micro_batch_size {shape['micro_requested']} does not divide the {shape['per_mini']} "
                     f"responses of an optimizer step; {target} needs equal micro-batches, so {shape['micro']} is written "
                     f"(this trainer weights its {math.ceil(shape['per_mini'] / shape['micro_requested'])} unequal "
                     f"micro-batches equally)")
    if c["loss_agg"] == "token_mean" and shape["accumulation"] > 1 and target == "verl":
        notes.append(f"differs: actor.loss_agg_mode token-mean divides by the tokens of the whole mini-batch "
                     f"({shape['per_mini']} responses); this trainer takes the token mean of each micro-batch of "
                     f"{shape['micro']} and averages the {shape['accumulation']} means (the same when micro-batches hold "
                     f"equally many tokens; train.micro_batch_size: null makes them equal)")
    if c["loss_agg"] == "seq_mean_token_sum_norm":
        notes.append(f"seq_mean_token_sum_norm (Dr.GRPO) is normalised by max_new_tokens = {c['rollout']['max_new_tokens']} "
                     f"in {target}, as in this trainer (trainers.algorithms.aggregate's norm_length)")
    if c["kl"]["ref_path"]:
        notes.append(f"differs: kl.ref_path = {c['kl']['ref_path']!r}: {target}'s reference model is the initial policy")
    if c["train"]["ppo_epochs"] > 1 and c["train"]["mini_batches"] > 1:
        notes.append(f"differs: this trainer splits the groups into mini-batches in a new random order for each of the "
                     f"{c['train']['ppo_epochs']} PPO epochs; {target} keeps one split for all epochs")
    if c["eval"]["max_new_tokens"] not in (None, c["rollout"]["max_new_tokens"]):
        notes.append(f"differs: validation samples up to eval.max_new_tokens = {c['eval']['max_new_tokens']} tokens here; "
                     f"{target} validates with the training limit {c['rollout']['max_new_tokens']}")
    return notes


# --------------------------------------------------------------------------- TRL


def _method_section(config: dict[str, Any]) -> tuple[str | None, Any]:
    """(the name of the run's entropy-method section, the section as its model), or (None, None) for plain GRPO:
    each method declares on its section how it maps to TRL and verl."""
    sections = METHOD_SECTIONS.get(config["entropy"]["method"], ())
    if not sections:
        return None, None
    return sections[0], getattr(RunConfig.model_validate(config).entropy, sections[0])


def to_trl(config: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]], list[str]]:
    """RunConfig -> (TRL ``GRPOConfig`` kwargs, knobs without equivalent, notes). The kwargs are the TRL engine's own
    (``trainers.engines.trl_args.grpo_config_kwargs``: one mapping for the export and TRL trials; its docstring
    gives the units); this adds what a file for another machine needs said."""
    c = config
    refuse_unsupported(c, "trl")
    out, used = trl_grpo_config_kwargs(c)
    notes: list[str] = []
    shape = batch_shape(c)
    per_rollout = c["train"]["ppo_epochs"] * c["train"]["mini_batches"]   # optimizer steps per rollout step
    used.update(p for p in leaves(c) if p.startswith("entropy.") and _relevant(p, c))
    optim = c["optim"]
    if optim["warmup_steps"] or optim["schedule"] == "cosine":
        notes.append(f"differs: TRL steps the LR schedule at every optimizer step ({per_rollout} per rollout step) and "
                     f"its warmup starts at 0; this trainer steps it once per rollout step, so rollout step s (from 0) "
                     f"runs at lr x (s+1)/{optim['warmup_steps']} during warmup"
                     + (f" and lr x ({optim['min_lr_ratio']} + (1 - {optim['min_lr_ratio']}) (1 + cos(pi (s - W)/(S - W)))/2) "
                        f"after (W = {optim['warmup_steps']}, S = {c['train']['steps']} rollout steps)"
                        if optim["schedule"] == "cosine" else ", then lr"))
    if c["rollout"]["group_size"] < 2:
        notes.append("differs: TRL refuses num_generations < 2 (GRPOConfig raises); this trial sampled one response per prompt")
    notes.append("batch sizes are for one device: per_device_train_batch_size x gradient_accumulation_steps = "
                 f"{shape['per_mini']} completions per optimizer step; with N devices divide "
                 "per_device_train_batch_size (or steps_per_generation) by N")
    if c["clip"]["dual_c"] is not None:
        notes.append("clip.dual_c -> delta: TRL caps the ratio at delta (INTELLECT-2's two-sided clipping); for "
                     "negative advantages this is dual-clip's bound -A c, for positive ones the PPO clip already binds")
    notes.append("the loss, the advantages and the entropy method are the trial's: trainers.engines.trl.EntropyGRPOTrainer "
                 "(the launcher written beside this file) reads the run config written beside it; a plain "
                 "GRPOTrainer(args=GRPOConfig(**this file)) would train TRL's own GRPO loss without the method")
    notes.append("micro-batches hold whole groups in order (EntropyGRPOTrainer does not shuffle the generation batch; "
                 "TRL's GRPOTrainer does)")
    if (c["eval"]["temperature"], c["eval"]["top_p"]) != (c["rollout"]["temperature"], c["rollout"]["top_p"]):
        notes.append(f"differs: TRL evaluates with the training sampling (temperature {c['rollout']['temperature']}, top_p "
                     f"{c['rollout']['top_p']}); the trial validated with temperature {c['eval']['temperature']}, top_p "
                     f"{c['eval']['top_p']}")
    notes.append(f"evaluation: pass eval_dataset with the first eval.num_prompts = {c['eval']['num_prompts']} validation "
                 "prompts; TRL reports rewards, not pass@k")
    notes.extend(_common_differences(c, "TRL"))
    return out, _unmapped(c, used), notes


# --------------------------------------------------------------------------- verl


VERL_PLUGIN = "trainers.engines.verl_plugin"
VERL_LOSS_PREFIX = "entropy_sweeper."   # trainers.engines.verl_plugin.PREFIX
VERL_HYDRA = {"hydra": {"searchpath": ["pkg://verl.trainer.config"]}, "defaults": ["ppo_trainer", "_self_"]}


def to_verl(config: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]], list[str]]:
    """RunConfig -> (a verl Hydra config over verl's ``ppo_trainer`` defaults, knobs without equivalent, notes).

    The file is a primary Hydra config: ``defaults: [ppo_trainer, _self_]`` with verl's config package on the
    search path, so ``python -m verl.trainer.main_ppo --config-path DIR --config-name NAME`` composes it over
    verl's defaults. Batch units: prompts for ``data.train_batch_size`` and ``ppo_mini_batch_size``,
    responses per GPU for the micro-batch keys (written for one GPU)."""
    c = config
    refuse_unsupported(c, "verl")
    flat: dict[str, Any] = {}
    used: set[str] = set()
    notes: list[str] = []
    shape = batch_shape(c)

    def put(key: str, value: Any, *paths: str) -> None:
        flat[key] = value
        used.update(paths)

    arr, actor, rollout = "actor_rollout_ref", "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    # model and precision
    put(f"{arr}.model.path", model_path(c), "model.path")
    put(f"{arr}.model.trust_remote_code", c["model"]["trust_remote_code"], "model.trust_remote_code")
    put("data.trust_remote_code", c["model"]["trust_remote_code"], "model.trust_remote_code")
    # float32 master weights (verl's default model_dtype) with the compute dtype as FSDP's param_dtype, as the trial
    # keeps them: bf16 weights would round away updates at small learning rates
    precision = _VERL_PRECISION[c["model"]["dtype"]]
    for role in ("actor", "ref"):
        put(f"{arr}.{role}.fsdp_config.model_dtype", "fp32", "model.dtype")
        put(f"{arr}.{role}.fsdp_config.mixed_precision",
            {"param_dtype": precision, "reduce_dtype": "fp32", "buffer_dtype": "fp32"}, "model.dtype")
    put(f"{rollout}.dtype", c["model"]["dtype"], "model.dtype")
    put("trainer.n_gpus_per_node", 1)
    put("trainer.nnodes", 1)
    put(f"{rollout}.tensor_model_parallel_size", 1)
    notes.append("written for one GPU (trainer.n_gpus_per_node: 1); with more, raise it: the batch keys below are "
                 "global in prompts (data.train_batch_size, ppo_mini_batch_size) or per GPU (the micro-batch keys)")
    put("data.seed", c["seed"], "seed")
    put(f"{actor}.data_loader_seed", c["seed"], "seed")
    put(f"{rollout}.seed", c["seed"], "seed")

    # advantages
    put("algorithm.adv_estimator", "grpo")
    put("algorithm.norm_adv_by_std_in_grpo", c["advantage"] == "grpo", "advantage")

    # batch units
    put("data.train_batch_size", c["rollout"]["prompts_per_step"], "rollout.prompts_per_step")
    put(f"{rollout}.n", c["rollout"]["group_size"], "rollout.group_size")
    put(f"{actor}.ppo_mini_batch_size", c["rollout"]["prompts_per_step"] // c["train"]["mini_batches"], "train.mini_batches")
    put(f"{actor}.ppo_micro_batch_size_per_gpu", shape["micro"], "train.micro_batch_size")
    put(f"{rollout}.log_prob_micro_batch_size_per_gpu", shape["micro"])
    if c["kl"]["beta"] > 0:
        put(f"{arr}.ref.log_prob_micro_batch_size_per_gpu", shape["micro"])
    put(f"{actor}.ppo_epochs", c["train"]["ppo_epochs"], "train.ppo_epochs")

    # rollout
    put("data.max_response_length", c["rollout"]["max_new_tokens"], "rollout.max_new_tokens")
    notes.append("differs: verl's rollout left-truncates (with a warning) every prompt longer than data.max_prompt_length "
                 "(512 tokens by default); this trainer never truncates a prompt: set data.max_prompt_length to your "
                 "longest prompt in tokens, or data.filter_overlong_prompts: true to drop longer ones")
    put(f"{rollout}.name", "vllm", "rollout.engine")
    if c["rollout"]["engine"] == "vllm":
        put(f"{rollout}.gpu_memory_utilization", c["rollout"]["vllm_gpu_memory_utilization"], "rollout.vllm_gpu_memory_utilization")
    else:
        notes.append("rollout.engine 'hf' -> rollout.name vllm: verl has no transformers-generate rollout (registered: "
                     "vllm, sglang, trtllm); the sampling settings are the same")
    put(f"{rollout}.temperature", c["rollout"]["temperature"], "rollout.temperature")
    put(f"{rollout}.top_p", c["rollout"]["top_p"], "rollout.top_p")
    put(f"{rollout}.top_k", c["rollout"]["top_k"] or -1, "rollout.top_k")

    # optimizer and schedule (verl's LambdaLR steps once per trainer step, as this trainer's)
    optim, warmup = c["optim"], c["optim"]["warmup_steps"]
    put(f"{actor}.optim.lr", optim["lr"], "optim.lr")
    put(f"{actor}.optim.weight_decay", optim["weight_decay"], "optim.weight_decay")
    put(f"{actor}.optim.betas", list(optim["betas"]), "optim.betas")
    put(f"{actor}.optim.clip_grad", optim["max_grad_norm"] if optim["max_grad_norm"] is not None else math.inf,
        "optim.max_grad_norm")
    put(f"{actor}.optim.lr_warmup_steps", warmup, "optim.warmup_steps")
    if optim["schedule"] != "cosine" and warmup == 0:
        put(f"{actor}.optim.lr_scheduler_type", "constant", "optim.schedule", "optim.min_lr_ratio")
    elif optim["schedule"] != "cosine":
        # verl's constant schedule warms up as s/W; its cosine one with a floor of 1 and 1-indexed steps gives
        # this trainer's (s+1)/W and then 1 exactly
        put(f"{actor}.optim.lr_scheduler_type", "cosine", "optim.schedule", "optim.min_lr_ratio")
        put(f"{actor}.optim.min_lr_ratio", 1.0)
        put(f"{actor}.optim.zero_indexed_step", False)
        notes.append("optim.schedule with warmup -> lr_scheduler_type cosine with min_lr_ratio 1.0 and zero_indexed_step "
                     "false: verl's linear warmup then a constant lr, from lr/W at the first step as here (its constant "
                     "schedule would start at 0)")
    else:
        put(f"{actor}.optim.lr_scheduler_type", "cosine", "optim.schedule")
        put(f"{actor}.optim.min_lr_ratio", optim["min_lr_ratio"], "optim.min_lr_ratio")
        put(f"{actor}.optim.zero_indexed_step", warmup == 0)
        if warmup:
            floor, steps = optim["min_lr_ratio"], c["train"]["steps"]
            notes.append(f"differs: actor_rollout_ref.actor.optim: after the warmup verl's cosine runs one step ahead "
                         f"(zero_indexed_step: false, which makes its warmup (s+1)/{warmup} as here): at step s (from 0) "
                         f"verl's lr is lr x ({floor} + (1 - {floor}) (1 + cos(pi (s + 1 - {warmup})/({steps} - {warmup})))/2); "
                         f"the trial's was lr x ({floor} + (1 - {floor}) (1 + cos(pi (s - {warmup})/({steps} - {warmup})))/2)")

    # clip (verl's vanilla loss always applies dual-clip: an infinite bound turns it off)
    put(f"{actor}.clip_ratio_low", c["clip"]["eps_low"], "clip.eps_low")
    put(f"{actor}.clip_ratio_high", c["clip"]["eps_high"], "clip.eps_high")
    dual_c = c["clip"]["dual_c"]
    put(f"{actor}.clip_ratio_c", dual_c if dual_c is not None else math.inf, "clip.dual_c")

    # loss aggregation, KL, entropy terms
    put(f"{actor}.loss_agg_mode", _LOSS_AGG_VERL[c["loss_agg"]], "loss_agg")
    if c["loss_agg"] == "seq_mean_token_sum_norm":
        put(f"{actor}.loss_scale_factor", c["rollout"]["max_new_tokens"])
    put(f"{actor}.use_kl_loss", c["kl"]["beta"] > 0, "kl.beta")
    if c["kl"]["beta"] > 0:
        put(f"{actor}.kl_loss_coef", c["kl"]["beta"])
        put(f"{actor}.kl_loss_type", "k3")
        notes.append("differs: verl clamps the per-token k3 KL at 10; this trainer does not clamp it")
    # entropy terms: what the method's config section declares (trainers.config.MethodSection.verl, verl_loss_mode)
    method = c["entropy"]["method"]
    name, section = _method_section(c)
    declared = dict(section.verl) if section is not None else {}
    coef_field = declared.pop("entropy_coeff", None)
    put(f"{actor}.entropy_coeff", getattr(section, coef_field) if coef_field else 0.0,
        *([f"entropy.{name}.{coef_field}", "entropy.method"] if coef_field else []))
    if method == "none":
        used.add("entropy.method")

    # a method that runs as a verl policy loss (Clip-Cov, KL-Cov): this project's module, registered in verl's
    # policy-loss registry by the plugin; the section declares the loss and its verl keys
    if section is not None and section.verl_loss_mode:
        loss_mode = f"{VERL_LOSS_PREFIX}{section.verl_loss_mode}"
        put(f"{actor}.policy_loss.loss_mode", loss_mode, "entropy.method")
        for key, field in declared.items():
            put(f"{actor}.{key}", getattr(section, field), f"entropy.{name}.{field}")
        notes.append(f"policy_loss.loss_mode {loss_mode} is this project's {name} "
                     f"(trainers/entropy/{name}.py through trainers.step_loss), registered by the plugin "
                     f"{VERL_PLUGIN}: install this package where verl runs (its verl.plugins entry point loads it) or "
                     f"set VERL_USE_EXTERNAL_MODULES={VERL_PLUGIN}")
        notes.extend(section.verl_notes(c))

    # evaluation
    put(f"{rollout}.val_kwargs.n", c["eval"]["n_samples"], "eval.n_samples")
    put(f"{rollout}.val_kwargs.temperature", c["eval"]["temperature"], "eval.temperature")
    put(f"{rollout}.val_kwargs.top_p", c["eval"]["top_p"], "eval.top_p")
    put(f"{rollout}.val_kwargs.top_k", -1)
    put(f"{rollout}.val_kwargs.do_sample", True)
    put("data.val_max_samples", c["eval"]["num_prompts"], "eval.num_prompts")
    put("trainer.test_freq", c["train"]["eval_every"], "train.eval_every")
    put("trainer.val_before_train", c["train"]["eval_at_start"], "train.eval_at_start")
    notes.append(f"differs: data.val_max_samples draws {c['eval']['num_prompts']} validation prompts at random while "
                 "data.shuffle is true (verl's default); this trainer validates the first eval.num_prompts prompts")

    # checkpoints and the run
    put("trainer.total_training_steps", c["train"]["steps"], "train.steps")
    put("trainer.save_freq", c["train"]["checkpoint_every"] or c["train"]["steps"], "train.checkpoint_every")
    put("trainer.max_actor_ckpt_to_keep", 1)
    put("trainer.default_local_dir", c["train"]["output_dir"], "train.output_dir")
    put("trainer.resume_mode", "auto" if c["train"]["resume"] else "disable", "train.resume")
    notes.append("data.train_files / data.val_files and the reward function: give them (this trainer's data.* and "
                 "reward knobs have no verl equivalent)")
    notes.extend(_common_differences(c, "verl"))

    nested: dict[str, Any] = copy.deepcopy(VERL_HYDRA)
    for key, value in flat.items():
        set_path(nested, key, value)
    return nested, _unmapped(c, used), notes
