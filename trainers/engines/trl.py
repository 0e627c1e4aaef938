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

Entry point (the TRL export's launcher runs it)::

    accelerate launch -m trainers.engines.trl RUN_CONFIG.yaml TRL_CONFIG.yaml

``RUN_CONFIG.yaml``: the trial's run config (method, data, reward); ``TRL_CONFIG.yaml``: ``GRPOConfig`` arguments
(``sweeper export --format trl``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from ..algorithms import compute_advantages
from ..config import RunConfig, engine_refusal, load_config
from ..entropy import MicroBatch, StepBatch, build_intervention
from ..entropy.base import EntropyIntervention
from ..entropy.ops import token_entropy, token_logprobs
from ..forward import response_logits
from ..setup import step_seed
from ..step_loss import micro_batch_loss

INTERVENTION_FILE = "intervention.pt"
LOSS_TYPE = {"token_mean": "bnpo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}


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

    def __init__(self, *args: Any, run_config: RunConfig, **kwargs: Any):
        training_args = kwargs.get("args")
        if training_args is None:
            raise ValueError("EntropyGRPOTrainer needs args=GRPOConfig(...) (the TRL export's file)")
        check_args(training_args, run_config)
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self.intervention = build_intervention(run_config.entropy, run_config=run_config)
        self._last_rewards: torch.Tensor | None = None
        self._generation = 0
        self.add_callback(_InterventionCheckpoint(self))

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
        return output

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
        loss, metrics = micro_batch_loss(cfg, self.intervention, micro, ref)
        self._log_method(metrics)
        return loss / accumulation

    def training_step(self, model, inputs, num_items_in_batch):
        output = super().training_step(model, inputs, num_items_in_batch)
        if self._step % (self.args.steps_per_generation * self.num_iterations) == 0:   # the generation's last micro-batch
            self._log_method(self.intervention.end_step())
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
