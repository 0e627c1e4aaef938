"""TRL engine: ``trl.GRPOTrainer`` (1.16.x) running this project's loss, so a tuned method runs at TRL's scale.

:class:`EntropyGRPOTrainer` subclasses TRL's trainer and replaces its loss with the native step's
(:func:`trainers.step_loss.micro_batch_loss`: the same PPO clip loss, the method's hooks from its module in
``trainers/entropy``, the same aggregation and k3 KL), at the same named points as ``trainers.grpo``:

1. rollout, rewards       TRL's generation (transformers or vLLM, accelerate/DeepSpeed/FSDP) and reward call;
                          the advantages are recomputed with ``trainers.algorithms.compute_advantages``
                          (``advantage``: TRL's 1e-4 in the std denominator is this trainer's 1e-6)
2. old-policy pass        log pi_old, full-vocabulary entropy, the method's features, over the whole generation
                          batch (no grad), with this project's forward (position ids from the attention mask,
                          ``trainers.forward.response_logits``); skipped exactly where the native step skips it
                          (one micro-batch per generation, one iteration: the update's own forward, detached)
                          and where nothing needs it (on-policy, a method without step-batch state: the current
                          forward detached is the old policy's)
3. begin_step             the method's per-step state over the whole generation batch (collectives over
                          processes, as in the native data-parallel step)
4. per micro-batch        forward with grad -> ``micro_batch_loss`` -> / gradient_accumulation_steps
5. end_step               after the generation's last micro-batch

TRL's own loss options are not used; ones that would change the loss of the trial are refused at construction
(``check_args``), never silently ignored. The method's metrics are logged by TRL's logger under
``<method>/<name>``, the step's under ``train/<name>`` (e.g. ``train/pg_loss``). The method's state is saved in
each checkpoint (``intervention.pt``) and loaded on resume.

Trials (``engine: trl`` in the run config): :func:`train`, the native trainer's contract (``train(config, reporters)
-> summary``, called by ``trainers.grpo.train``), builds the trainer from the run config (``trainers.engines.trl_args``)
and reports each rollout step's metrics, this project's validation (``trainers.validation``) and the reporters' stop
verdict through a ``TrainerCallback``. The adapter passes each optimizer step's token and response totals to
``micro_batch_loss``, so micro-batches of unequal token counts aggregate as the native step's.

Entry point (the TRL export's launcher runs it)::

    accelerate launch -m trainers.engines.trl RUN_CONFIG.yaml TRL_CONFIG.yaml

``RUN_CONFIG.yaml``: the trial's run config (method, data, reward); ``TRL_CONFIG.yaml``: ``GRPOConfig`` arguments
(``sweeper export --format trl``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from trl import GRPOConfig, GRPOTrainer

from ..algorithms import BatchTotals, compute_advantages
from ..collectives import global_ratio, global_sum
from ..config import RunConfig, engine_refusal, load_config
from ..entropy import MicroBatch, StepBatch, build_intervention
from ..entropy.base import EntropyIntervention
from ..entropy.ops import token_entropy, token_logprobs
from ..forward import response_logits
from ..reporting import PREEMPTED
from ..setup import make_lr_lambda, step_seed
from ..step_loss import micro_batch_loss
from .trl_args import LOSS_TYPE

INTERVENTION_FILE = "intervention.pt"


def check_args(args: GRPOConfig, config: RunConfig) -> None:
    """Refuse a GRPOConfig whose TRL-side options would make the run differ from the trial's loss: each error names
    the GRPOConfig field, its value and the value to set."""
    refusal = engine_refusal(config.entropy.method, "trl")
    if refusal:
        raise ValueError(refusal)
    expected = {
        "beta": config.kl.beta, "epsilon": config.clip.eps_low, "epsilon_high": config.clip.eps_high,
        "delta": config.clip.dual_c, "temperature": config.rollout.temperature,
        "max_completion_length": config.rollout.max_new_tokens, "num_generations": config.rollout.group_size,
        "loss_type": LOSS_TYPE[config.loss_agg], "top_entropy_quantile": 1.0, "entropy_coef": 0.0,
        "importance_sampling_level": "token", "off_policy_mask_threshold": None,
    }
    if config.kl.beta > 0:
        expected["use_bias_correction_kl"] = False
    if args.use_vllm:
        expected["vllm_importance_sampling_correction"] = False
    for name, value in expected.items():
        got = getattr(args, name, value)
        if got != value and not (isinstance(value, float) and isinstance(got, (int, float)) and abs(got - value) < 1e-12):
            raise ValueError(f"GRPOConfig.{name} = {got!r}, but the run config's trial ran with {value!r}: set {name}: {value!r} "
                             f"(entropy.method {config.entropy.method!r} runs through trainers.step_loss, not TRL's loss options)")
    if getattr(args, "use_adaptive_entropy", False):
        raise ValueError("GRPOConfig.use_adaptive_entropy = True: TRL's adaptive entropy bonus is not the trial's method; "
                         "set it to false (entropy.method carries the method)")


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(EntropyIntervention, name)


class EntropyGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose loss is the native step's with ``run_config``'s entropy method (see the module doc)."""

    def __init__(self, *args: Any, run_config: RunConfig, native_schedule: bool = False, **kwargs: Any):
        training_args = kwargs.get("args")
        if training_args is None:
            raise ValueError("EntropyGRPOTrainer needs args=GRPOConfig(...) (the TRL export's file)")
        check_args(training_args, run_config)
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self.native_schedule = native_schedule
        self.intervention = build_intervention(run_config.entropy, run_config=run_config)
        self._last_rewards: torch.Tensor | None = None
        self._generation = 0
        self._entropy_sums = [0.0, 0.0]   # the rollout step's old-policy entropy over its response tokens: sum, tokens
        self.add_callback(_InterventionCheckpoint(self))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """``native_schedule`` (TRL trials): the run config's LR schedule as the native trainer steps it, once per
        rollout step (``trainers.setup.make_lr_lambda`` of optimizer step i // (ppo_epochs x mini_batches)), where
        TRL's own steps per optimizer step and starts its warmup at 0 (the export keeps TRL's, noting the difference)."""
        if self.lr_scheduler is not None or not self.native_schedule:
            return super().create_scheduler(num_training_steps, optimizer)
        per_rollout = self.run_config.train.ppo_epochs * self.run_config.train.mini_batches
        multiplier = make_lr_lambda(self.run_config)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer,
                                                              lambda step: multiplier(step // per_rollout))
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------ which passes a generation needs

    @property
    def on_policy(self) -> bool:
        """Every micro-batch of a generation is trained before any update: pi_old = pi (TRL's own test)."""
        return self.num_iterations == 1 and self.args.steps_per_generation <= self.args.gradient_accumulation_steps

    @property
    def fused(self) -> bool:
        """One micro-batch per generation and one iteration: the update's own forward is the old policy's."""
        return self.num_iterations == 1 and self.args.steps_per_generation == 1

    def needs_old_policy_pass(self) -> bool:
        kind = type(self.intervention)
        has_step_state = _overrides(kind, "begin_step") or _overrides(kind, "old_policy_features")
        return not self.fused and (not self.on_policy or has_step_state)

    # ------------------------------------------------------------------ generation: rewards, advantages, step state

    def _prepare_inputs(self, generation_batch):
        """TRL's buffering of a generation batch into micro-batches, without its row shuffle: each micro-batch holds
        whole groups in order, as the native step's (TRL's shuffle mixes groups across micro-batches)."""
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        from trl.trainer import grpo_trainer as upstream

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = upstream.split_pixel_values_by_grid(self._generate_and_score_completions(generation_batch))
            pieces = upstream.split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [upstream.unsplit_pixel_values_by_grid(piece) for piece in pieces]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards_per_func
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        """TRL's own no-grad log-prob pass of the policy during generation (its old log-probs) is skipped when this
        trainer's old-policy pass replaces it (``_old_policy_pass``): one pass, not two. Every other call is TRL's."""
        if getattr(self, "_replacing_old_pass", False) and model is self.model and not torch.is_grad_enabled():
            input_ids, logits_to_keep = args[0], args[2]
            return input_ids.new_zeros((input_ids.shape[0], logits_to_keep), dtype=torch.float32), None, None
        return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        # the reference pass (beta > 0) without a separate reference model runs the policy with its adapter off:
        # never replaced
        self._replacing_old_pass = (self.model.training and self.needs_old_policy_pass()
                                    and (self.beta == 0.0 or self.ref_model is not None))
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._replacing_old_pass = False
        if not self.model.training:
            return output
        cfg, G = self.run_config, self.num_generations
        weights = self.reward_weights.to(self._last_rewards.device)
        rewards_all = torch.nan_to_num((self._last_rewards * weights.unsqueeze(0)).nansum(dim=1), nan=0.0).float()
        local = output["completion_ids"].shape[0]
        start = self.accelerator.process_index * local
        rewards = rewards_all[start:start + local]
        device = output["completion_ids"].device
        advantages = compute_advantages(cfg.advantage, rewards_all.cpu(), G)[start:start + local]
        group_accuracy = (rewards_all > 0).float().reshape(-1, G).mean(-1).repeat_interleave(G)[start:start + local]
        self._generation += 1
        self._log_step_metrics(rewards_all, advantages, output["completion_mask"])
        output["advantages"] = advantages.to(device)
        output["rewards"] = rewards.to(device)
        output["group_accuracy"] = group_accuracy.to(device)
        output["rows"] = torch.arange(local, device=device)
        output["generation"] = torch.full((local,), self._generation, device=device)
        if self.needs_old_policy_pass():
            old_logp, old_entropy, features = self._old_policy_pass(output)
            output["old_per_token_logps"] = old_logp
            output["old_entropy"] = old_entropy
            for name, value in features.items():
                output[f"old_feature:{name}"] = value
            self._begin_step(output, old_logp, old_entropy, features)
            self._entropy_sums = [float((old_entropy * output["completion_mask"]).sum()), float(output["completion_mask"].sum())]
        else:
            self._entropy_sums = [0.0, 0.0]  # summed over the micro-batches' own forwards (_compute_loss)
        return output

    def _log_step_metrics(self, rewards: torch.Tensor, advantages: torch.Tensor, completion_mask: torch.Tensor) -> None:
        """The rollout step's metrics under the native trainer's names (``trainers.grpo.GRPOTrainer.train_step``)."""
        G = self.num_generations
        grouped = rewards.reshape(-1, G)
        self._log_method({
            "train/reward_mean": float(rewards.mean()), "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "train/accuracy": float((rewards > 0).float().mean()), "train/response_length": float(completion_mask.sum(-1).float().mean()),
            "train/zero_variance_groups": float((grouped.std(-1) == 0).float().mean()),
            "train/advantage_abs_mean": float(advantages.abs().mean())})

    @torch.no_grad()
    def _old_policy_pass(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        rows = self.args.per_device_train_batch_size
        logps, entropies, features = [], [], {}
        for start in range(0, batch["completion_ids"].shape[0], rows):
            piece = {k: batch[k][start:start + rows] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
            logits = self._logits(self.model, piece)
            logps.append(token_logprobs(logits, piece["completion_ids"], self.run_config.entropy.chunk_size))
            entropies.append(token_entropy(logits, self.run_config.entropy.chunk_size))
            for name, value in self.intervention.old_policy_features(logits, piece["completion_mask"].float()).items():
                features.setdefault(name, []).append(value)
            del logits
        return torch.cat(logps), torch.cat(entropies), {k: torch.cat(v) for k, v in features.items()}

    def _begin_step(self, batch: dict[str, Any], old_logp, old_entropy, features) -> None:
        G = self.num_generations
        local = batch["completion_ids"].shape[0]
        step_batch = StepBatch(
            step=int(batch["generation"][0]), response_mask=batch["completion_mask"].float(), old_logp=old_logp,
            old_entropy=old_entropy, advantages=batch["advantages"], rewards=batch["rewards"],
            group_index=torch.arange(local // G, device=old_logp.device).repeat_interleave(G),
            group_accuracy=batch["group_accuracy"], old_features=features, temperature=self.temperature)
        self._log_method(self.intervention.begin_step(step_batch))

    # ------------------------------------------------------------------ the loss

    def _logits(self, model, batch: dict[str, Any]) -> torch.Tensor:
        """Temperature-scaled logits predicting each completion token [b, T, V], as the native step's forward
        (``response_logits``, full forward: no shared-prompt pass, which FSDP would not see)."""
        rollout = SimpleNamespace(prompt_ids=batch["prompt_ids"], prompt_mask=batch["prompt_mask"],
                                  response_ids=batch["completion_ids"], response_mask=batch["completion_mask"])
        with self.accelerator.autocast():
            return response_logits(model, rollout, self.accelerator.device, self.temperature, share_prompt=False)

    def _compute_loss(self, model, inputs):
        if not self.model.training:   # evaluation: TRL's own loss, only reported
            return super()._compute_loss(model, inputs)
        cfg = self.run_config
        logits = self._logits(model, inputs)
        logp = token_logprobs(logits, inputs["completion_ids"], cfg.entropy.chunk_size)
        mask = inputs["completion_mask"].float()
        if "old_entropy" in inputs:
            old_logp, old_entropy = inputs["old_per_token_logps"], inputs["old_entropy"]
            features = {k.split(":", 1)[1]: v for k, v in inputs.items() if k.startswith("old_feature:")}
        else:   # on-policy: the old policy is the current one
            with torch.no_grad():
                old_logp = logp.detach()
                old_entropy = token_entropy(logits.detach(), cfg.entropy.chunk_size)
                features = self.intervention.old_policy_features(logits.detach(), mask)
                if self.num_iterations == 1:
                    self._entropy_sums[0] += float((old_entropy * mask).sum())
                    self._entropy_sums[1] += float(mask.sum())
            if self.fused:
                self._begin_step(inputs, old_logp, old_entropy, features)
        accumulation = self.current_gradient_accumulation_steps
        index = self._step % (self.args.steps_per_generation * self.num_iterations)
        iteration, within = divmod(index, self.args.steps_per_generation)
        mini, micro_index = divmod(within, accumulation)
        micro = MicroBatch(
            logits=logits, logp=logp, old_logp=old_logp, old_entropy=old_entropy, response_mask=mask,
            advantages=inputs["advantages"][:, None].expand_as(logp), group_accuracy=inputs["group_accuracy"],
            rows=inputs["rows"], old_features=features, num_micro_batches=accumulation, chunk_size=cfg.entropy.chunk_size,
            seed=step_seed(cfg.seed, int(inputs["generation"][0]), self.accelerator.process_index * accumulation + micro_index,
                           salt=1000 + iteration * (self.args.steps_per_generation // accumulation) + mini))
        ref = inputs.get("ref_per_token_logps") if cfg.kl.beta > 0 else None
        pieces = self._buffered_inputs[mini * accumulation:(mini + 1) * accumulation]
        loss, metrics = micro_batch_loss(cfg, self.intervention, micro, ref, totals=self._step_totals(pieces),
                                         world=self.accelerator.num_processes, num_micro=accumulation)
        self._log_method(metrics)
        return loss   # already this micro-batch's share of the optimizer step's loss

    def _step_totals(self, pieces: list[dict[str, Any]]) -> BatchTotals:
        """The optimizer step's response tokens and responses over its micro-batches (``pieces``) and processes: the
        denominators of ``loss_agg``, as the native step's ``_mini_batch_totals``, so micro-batches of unequal token
        counts weigh their tokens as one batch would."""
        masks = [piece["completion_mask"] for piece in pieces]
        local = torch.stack([sum(m.sum() for m in masks).float(),
                             torch.tensor(float(sum(m.shape[0] for m in masks)), device=masks[0].device)])
        tokens, sequences = global_sum(local).tolist()
        return BatchTotals(tokens=tokens, sequences=sequences)

    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        if self._step % (self.args.steps_per_generation * self.num_iterations) == 0:   # the generation's last micro-batch
            self._log_method(self.intervention.end_step())
            entropy_sum, tokens = self._entropy_sums
            device = self.accelerator.device
            self._log_method({"train/entropy": global_ratio(torch.tensor(entropy_sum, device=device), torch.tensor(tokens, device=device))})
        return output

    def _log_method(self, metrics: dict[str, float]) -> None:
        prefix = f"{self.intervention.name}/"
        for name, value in metrics.items():
            key = name if "/" in name else prefix + name
            self._metrics["train"][key].append(float(value))


class _InterventionCheckpoint:
    """Saves the method's state in each checkpoint folder and loads it on resume (a ``TrainerCallback``)."""

    def __new__(cls, trainer: EntropyGRPOTrainer):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if trainer.accelerator.is_main_process:
                    folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                    folder.mkdir(parents=True, exist_ok=True)
                    torch.save(trainer.intervention.state_dict(), folder / INTERVENTION_FILE)

            def on_train_begin(self, args, state, control, **kwargs):
                resume = getattr(trainer, "_resume_from", None)
                if resume and (Path(resume) / INTERVENTION_FILE).exists():
                    trainer.intervention.load_state_dict(torch.load(Path(resume) / INTERVENTION_FILE, weights_only=False))

        return Callback()


# --------------------------------------------------------------------------- the launcher's entry point


def dataset_and_reward(config: RunConfig):
    """The run config's training problems as a ``datasets.Dataset`` (``prompt``, ``answer``; chat-formatted when
    ``model.chat_template``) and its reward as a TRL reward function."""
    from datasets import Dataset

    from ..data import load_problems
    from ..rewards import get_reward

    train, val = load_problems(config.data)
    reward_fn = get_reward(config.data.reward)

    def rows(problems):
        prompts = [[{"role": "user", "content": p.prompt}] if config.model.chat_template else p.prompt for p in problems]
        return Dataset.from_dict({"prompt": prompts, "answer": [p.answer for p in problems]})

    def reward(completions, answer, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(reward_fn(text, a)) for text, a in zip(texts, answer)]

    reward.__name__ = config.data.reward
    return rows(train), rows(val[:config.eval.num_prompts]), reward


def train(config: RunConfig, reporters: Sequence[Any] = ()) -> dict[str, Any]:
    """Run (or resume) ``config`` on TRL (``engine: trl``): the native trainer's contract (``trainers.grpo.train``).

    :class:`EntropyGRPOTrainer` built from the run config (GRPOConfig from ``trainers.engines.trl_args``, the one
    mapping the TRL export writes), with this project's validation (``trainers.validation``: the same prompts, seeds
    and per-prompt record as the native trainer) at step 0 (``train.eval_at_start``), every ``train.eval_every``
    rollout steps and at the last. Steps are rollout steps (TRL's ``global_step`` counts optimizer steps:
    ``ppo_epochs x mini_batches`` per rollout step). The reporters get each rollout step's metrics under the
    native names, each validation, and are asked after each whether to stop (pruning; ``preempted`` saves a
    checkpoint first). Checkpoints are TRL's (``output_dir/checkpoint-N``, the method's state inside); with
    ``train.resume`` the run resumes from the last one. One process: a run under several is refused."""
    import os

    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    from ..config import dump_config, resolve_model_path
    from ..data import load_problems, validation_prompts
    from ..reporting import METRICS_FILE, JsonlReporter, MultiReporter, truncate_after
    from .trl_args import grpo_config_kwargs, optimizer_steps_per_rollout_step

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("engine: trl runs a trial on one process; several processes (WORLD_SIZE "
                         f"{os.environ['WORLD_SIZE']}) are not supported for trials: use engine: native, or export "
                         "the config with `sweeper export --format trl` and launch it with accelerate")
    data = config.model_dump(mode="json")
    kwargs, _ = grpo_config_kwargs(data)
    per_rollout = optimizer_steps_per_rollout_step(data)
    kwargs.update(report_to=[], eval_strategy="no", eval_on_start=False, logging_steps=per_rollout, disable_tqdm=True,
                  log_completions=False)
    output_dir = Path(config.train.output_dir)
    train_rows, _, reward = dataset_and_reward(config)
    _, val_problems = load_problems(config.data)
    trial = _TrialLoop(config, MultiReporter([JsonlReporter(output_dir / METRICS_FILE), *reporters]), per_rollout,
                       validation_prompts(val_problems, config.eval))
    trainer = EntropyGRPOTrainer(model=resolve_model_path(config.model.path), reward_funcs=reward,
                                 args=GRPOConfig(**kwargs), train_dataset=train_rows, run_config=config,
                                 native_schedule=True, callbacks=[trial.callback()])
    trainer.remove_callback(PrinterCallback)   # the reporters print (ConsoleReporter), not TRL's log dicts
    trial.attach(trainer)
    resume = get_last_checkpoint(str(output_dir)) if config.train.resume and output_dir.is_dir() else None
    if resume:
        trial.step = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"] // per_rollout
    if config.train.resume and output_dir.is_dir():   # a requeued run: its streams go on from the checkpoint's step
        truncate_after(output_dir, trial.step if resume else -1)
    dump_config(config, output_dir / "config.yaml")
    trial.reporter.on_start({"config": data, "output_dir": str(output_dir), "resumed_from_step": trial.step,
                             "num_processes": 1, "engine": "trl"})
    if config.train.eval_at_start and not resume:
        trial.validate()
        trial.stop_reason = trial.reporter.stop_reason()
    if trial.stop_reason is None:
        trainer._resume_from = resume
        trainer.train(resume_from_checkpoint=resume)
    summary = {"status": "completed" if trial.stop_reason is None else "stopped", "step": trial.step,
               "stop_reason": trial.stop_reason, "last_validation": trial.last_validation, "output_dir": str(output_dir)}
    trial.reporter.on_end(summary)
    return summary


class _TrialLoop:
    """What a TRL trial adds to TRL's loop (a ``TrainerCallback``, :meth:`callback`): at the end of each rollout step
    the reporters' step metrics, the validation when due, and the reporters' stop verdict."""

    TRL_KEYS = {"grad_norm": "train/grad_norm", "learning_rate": "train/lr"}

    def __init__(self, config: RunConfig, reporter: Any, per_rollout: int, problems: list[Any]):
        self.config, self.reporter, self.per_rollout, self.problems = config, reporter, per_rollout, problems
        self.step = 0
        self.stop_reason: str | None = None
        self.last_validation: dict[str, float] = {}
        self.trainer: EntropyGRPOTrainer | None = None
        self.started = time.perf_counter()

    def attach(self, trainer: EntropyGRPOTrainer) -> None:
        from ..rewards import get_reward
        from ..rollout import HFRolloutEngine

        self.trainer = trainer
        self.policy = trainer.accelerator.unwrap_model(trainer.model)
        self.engine = HFRolloutEngine(self.policy, trainer.processing_class, self.config.model.chat_template,
                                      self.config.rollout.generation_batch_size)
        self.reward_fn = get_reward(self.config.data.reward)

    def validate(self) -> None:
        from ..config import resolve_model_path
        from ..validation import validate_policy, validation_or_step0

        started, accelerator, training = time.perf_counter(), self.trainer.accelerator, self.policy.training

        def evaluate():
            return validate_policy(self.config, self.policy, self.engine, self.problems, self.reward_fn, self.step,
                                   device=accelerator.device, autocast=accelerator.autocast)

        self.policy.eval()
        try:
            metrics, per_prompt = validation_or_step0(self.config, self.step, resolve_model_path(self.config.model.path),
                                                      self.problems, evaluate)
        finally:
            self.policy.train(training)
        metrics["time/eval"] = time.perf_counter() - started
        self.reporter.on_validation(self.step, metrics, per_prompt)
        self.last_validation = metrics

    def on_log(self, state: Any, control: Any, logs: dict[str, Any]) -> None:
        if state.global_step % self.per_rollout or state.global_step // self.per_rollout <= self.step:
            return   # not a rollout step's end (or its summary at the end of training)
        cfg = self.config.train
        self.step = state.global_step // self.per_rollout
        method = f"{self.trainer.intervention.name}/"
        metrics = {self.TRL_KEYS.get(key, key if key.startswith(("train/", "time/", method)) else f"trl/{key}"): float(value)
                   for key, value in logs.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
        now = time.perf_counter()
        metrics["time/step"], self.started = now - self.started, now
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            self.reporter.on_train_step(self.step, metrics)
        if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
            self.validate()
        self.stop_reason = self.reporter.stop_reason()
        if self.stop_reason is not None:
            control.should_training_stop = True
            control.should_save = self.stop_reason == PREEMPTED   # a preempted run resumes from it
        self.started = time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        loop = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                loop.started = time.perf_counter()   # time/step: the steps' own time, not loading or step 0's validation

            def on_log(self, args, state, control, logs=None, **kwargs):
                loop.on_log(state, control, logs or {})
                return control

        return Callback()


def main(argv: list[str] | None = None) -> None:
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit("usage: accelerate launch -m trainers.engines.trl RUN_CONFIG.yaml TRL_CONFIG.yaml [--resume CHECKPOINT]")
    config = load_config(argv[0])
    with open(argv[1]) as handle:
        args = GRPOConfig(**yaml.safe_load(handle))
    train, val, reward = dataset_and_reward(config)
    from ..config import resolve_model_path

    trainer = EntropyGRPOTrainer(model=resolve_model_path(config.model.path), reward_funcs=reward, args=args,
                                 train_dataset=train, eval_dataset=val, run_config=config)
    resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
    trainer._resume_from = resume
    trainer.train(resume_from_checkpoint=resume)


if __name__ == "__main__":
    main()
