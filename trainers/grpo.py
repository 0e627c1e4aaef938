"""GRPO on accelerate: the training loop every sweep trial runs.

One rollout step reads as the algorithm does (``GRPOTrainer.train_step``):

1. rollout      sample ``prompts_per_step`` prompts, G responses each, with the rollout engine
2. reward       verifiable rewards, group-relative advantages (``advantage``: grpo | dr_grpo)
3. old policy   one no-grad pass: log pi_old, full-vocabulary entropy, the intervention's features
                (skipped where the step makes one update from one forward per process: ``fuses_old_policy_pass``)
4. begin_step   the entropy intervention updates its state (anchors, coefficients)
5. updates      ``ppo_epochs`` x ``mini_batches`` optimizer steps; per micro-batch: forward,
                token advantages -> PPO clip loss -> token loss hook -> token weights -> loss mask
                -> aggregate (``loss_agg``) -> + extra loss terms -> + KL -> backward
6. end_step     the intervention's post-update state; metrics to the reporters

The entropy interventions (``trainers/entropy``) plug in only at the named hooks in steps 3-6.
Validation (pass@k, maj@k, mean@k, entropy) runs every ``eval_every`` steps on a fixed,
seeded set. Checkpoints hold model, optimizer, scheduler, step, RNG and intervention state;
a run resumes from ``output_dir/checkpoint`` and continues the same metrics stream.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch

from .algorithms import BatchTotals, compute_advantages, importance_weight_metrics, rollout_mismatch_metrics, truncated_importance_weights
from .collectives import global_ratio, global_sum
from .config import RunConfig, dump_config
from .entropy import MicroBatch, StepBatch, build_intervention
from .entropy.ops import token_entropy, token_logprobs, token_logprobs_and_entropy
from .forward import response_logits
from .reporting import METRICS_FILE, PREEMPTED, JsonlReporter, MultiReporter, Reporter, truncate_after
from .rollout import HFRolloutEngine, Rollout, SamplingSettings, VLLMRolloutEngine, vllm_engine_args
from .setup import (COMPUTE_DTYPES, check_batch_shape, enable_gradient_checkpointing, load_policy, make_accelerator,
                    make_lr_lambda, step_seed)
from .step_loss import micro_batch_loss
from .validation import EVAL_PROMPTS_PER_CALL, prompt_digest, token_entropies, validate_policy, validation_or_step0  # noqa: F401

CHECKPOINT_DIR = "checkpoint"


class _MetricSums:
    """Averages per-micro-batch metrics over a step."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float], prefix: str = "") -> None:
        for key, value in metrics.items():
            self.sums[prefix + key] += float(value)
            self.counts[prefix + key] += 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


# --------------------------------------------------------------------------- the trainer


class GRPOTrainer:
    def __init__(self, config: RunConfig, reporters: Sequence[Reporter] = ()):
        from .data import load_problems, validation_prompts
        from .rewards import get_reward

        self.config = config
        self.accelerator = make_accelerator(config)
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.output_dir = Path(config.train.output_dir)
        self._check_batch_shape()
        torch.manual_seed(config.seed)
        random.seed(config.seed)

        self.tokenizer, model, self.model_path = load_policy(config)
        self.ref_model = None
        if config.kl.beta > 0:
            if config.kl.ref_path:
                ref_config = config.model_copy(update={"model": config.model.model_copy(update={"path": config.kl.ref_path})})
                _, self.ref_model, _ = load_policy(ref_config)
            else:
                self.ref_model = copy.deepcopy(model)
            self.ref_model.requires_grad_(False).eval()
            # kl.ref_offload: the reference stays in CPU memory and visits the device for its pass (_reference_logprobs)
            self.ref_model.to("cpu" if config.kl.ref_offload else self.accelerator.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, betas=config.optim.betas,
                                      weight_decay=config.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_lr_lambda(config))
        model.eval()  # no dropout anywhere: the old-policy pass and the update must see the same function (TRL's disable_dropout)
        if config.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.compute_dtype = COMPUTE_DTYPES[config.model.dtype]
        # float16 needs loss scaling (its gradients underflow); a disabled scaler passes everything through
        self.grad_scaler = torch.amp.GradScaler(self.accelerator.device.type, enabled=self.compute_dtype == torch.float16)
        if self.grad_scaler.is_enabled():
            self.accelerator.register_for_checkpointing(self.grad_scaler)
        self.engine = self._make_engine()

        self.train_problems, self.val_problems = load_problems(config.data)
        self.eval_problems = validation_prompts(self.val_problems, config.eval)  # eval.split: selection | heldout
        self.reward_fn = get_reward(config.data.reward)
        self.intervention = build_intervention(config.entropy, run_config=config)
        self.step = 0
        # one update from one forward per process: the old policy IS the current one (skip its no-grad pass);
        # False forces the pass (tests compare the two)
        self.fuse_old_policy_pass = True
        reporters = list(reporters)
        if self.is_main:
            reporters.insert(0, JsonlReporter(self.output_dir / METRICS_FILE))
        self.reporter = MultiReporter(reporters if self.is_main else [])

    # ------------------------------------------------------------------ plumbing

    def autocast(self):
        """The forward passes' compute dtype (``model.dtype``) over the float32 master weights."""
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.accelerator.device.type, dtype=self.compute_dtype)

    def _check_batch_shape(self) -> None:
        check_batch_shape(self.config, self.world)

    def _make_engine(self):
        policy = self.accelerator.unwrap_model(self.model)
        if self.config.rollout.engine == "vllm":
            return VLLMRolloutEngine(policy, self.tokenizer, self.model_path, self.config.model.chat_template,
                                     vllm_engine_args(self.config))
        return HFRolloutEngine(policy, self.tokenizer, self.config.model.chat_template, self.config.rollout.generation_batch_size)

    def _response_logits(self, model, rollout: Rollout, temperature: float | None = None) -> torch.Tensor:
        """Logits that predict each response token, divided by ``temperature`` (default: the rollout's): [B, T, V],
        contiguous, in the compute dtype; each distinct prompt runs once (``trainers.forward.response_logits``)."""
        temperature = self.config.rollout.temperature if temperature is None else temperature
        with self.autocast():
            return response_logits(model, rollout, self.accelerator.device, temperature)

    def _all_mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average each metric over processes (keys may differ between ranks)."""
        if self.world == 1:
            return metrics
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, metrics)
        keys = sorted({k for m in gathered for k in m})
        return {k: sum(m[k] for m in gathered if k in m) / sum(1 for m in gathered if k in m) for k in keys}

    def _broadcast_stop(self) -> str | None:
        reason = [self.reporter.stop_reason() if self.is_main else None]
        if self.world > 1:
            torch.distributed.broadcast_object_list(reason, src=0)
        return reason[0]

    # ------------------------------------------------------------------ one rollout step

    def _sample_problems(self, step: int):
        rng = random.Random(step_seed(self.config.seed, step, 0, salt=1))
        count = self.config.rollout.prompts_per_step
        chosen = rng.sample(range(len(self.train_problems)), count) if count <= len(self.train_problems) \
            else [rng.randrange(len(self.train_problems)) for _ in range(count)]
        local = count // self.world
        return [self.train_problems[i] for i in chosen[self.rank * local:(self.rank + 1) * local]]

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        G = cfg.rollout.group_size
        device = self.accelerator.device
        t_start = time.perf_counter()
        torch.manual_seed(step_seed(cfg.seed, step, self.rank))

        # 1. rollout ------------------------------------------------------------------------
        problems = self._sample_problems(step)
        sampling = SamplingSettings(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_new_tokens)
        with self.autocast():
            rollout = self.engine.generate([p.prompt for p in problems], G, sampling)

        # 2. reward and advantages ---------------------------------------------------------------
        answers = [p.answer for p in problems for _ in range(G)]
        rewards = torch.tensor([self.reward_fn(c, a) for c, a in zip(rollout.completions, answers)], dtype=torch.float32)
        advantages = compute_advantages(cfg.advantage, rewards, G)
        group_accuracy = (rewards > 0).float().reshape(-1, G).mean(-1).repeat_interleave(G)
        group_index = torch.arange(len(problems)).repeat_interleave(G)
        t_rollout = time.perf_counter()

        # 3. old-policy pass (no grad) -----------------------------------------------------------
        response_mask = rollout.response_mask.float().to(device)
        response_ids = rollout.response_ids.to(device)
        micro = cfg.train.micro_batch_size or rollout.response_ids.shape[0]
        fused = self.fuses_old_policy_pass(rollout.response_ids.shape[0])
        if fused:   # the update's own forward: pi_old = pi, log pi_old = log pi detached (the ratio is 1)
            on_policy = self._forward(rollout)
            old_logp, old_entropy, old_features = self._old_policy_values(on_policy[0].detach(), on_policy[1].detach(), response_mask)
        else:
            on_policy = None
            old_logp, old_entropy, old_features = self._old_policy_pass(rollout, response_ids, response_mask, micro)
        step_batch = StepBatch(
            step=step, response_mask=response_mask, old_logp=old_logp, old_entropy=old_entropy,
            advantages=advantages.to(device), rewards=rewards.to(device), group_index=group_index.to(device),
            group_accuracy=group_accuracy.to(device), old_features=old_features, temperature=cfg.rollout.temperature)
        ref_logp = self._reference_logprobs(rollout, response_ids, micro) if self.ref_model is not None else None
        sampler_metrics, is_weights = {}, None
        if rollout.sampled_logprobs is not None:   # vLLM: how far its sampler is from the trainer's pi_old
            sampled_logp = rollout.sampled_logprobs.to(device)
            sampler_metrics = rollout_mismatch_metrics(old_logp, sampled_logp, response_mask)
            if cfg.rollout.importance_sampling_cap is not None:
                is_weights = truncated_importance_weights(old_logp, sampled_logp, cfg.rollout.importance_sampling_cap)
                sampler_metrics.update(importance_weight_metrics(old_logp, sampled_logp, response_mask,
                                                                 cfg.rollout.importance_sampling_cap))

        # 4. intervention state for this step ----------------------------------------------------
        sums = _MetricSums()
        prefix = f"{self.intervention.name}/"
        sums.add(self.intervention.begin_step(step_batch), prefix)

        # 5. updates ----------------------------------------------------------------------------
        grad_norms = []
        local_prompts = len(problems)
        prompts_per_mini = local_prompts // cfg.train.mini_batches
        for epoch in range(cfg.train.ppo_epochs):
            order = torch.randperm(local_prompts, generator=torch.Generator().manual_seed(step_seed(cfg.seed, step, self.rank, 2 + epoch)))
            for mini in range(cfg.train.mini_batches):
                # the shuffle picks each mini-batch's prompts; inside it the rows keep their order, so micro-batch j
                # of one process holds what process j of several would (the data-parallel split of the same batch)
                prompt_ids = order[mini * prompts_per_mini:(mini + 1) * prompts_per_mini].sort().values
                mini_rows = (prompt_ids[:, None] * G + torch.arange(G)[None, :]).reshape(-1)
                micro_slices = [mini_rows[i:i + micro] for i in range(0, len(mini_rows), micro)]
                totals = self._mini_batch_totals(response_mask[mini_rows.to(device)])
                self.optimizer.zero_grad(set_to_none=True)
                for index, rows in enumerate(micro_slices):
                    is_last = index == len(micro_slices) - 1
                    context = self.accelerator.no_sync(self.model) if not is_last else contextlib.nullcontext()
                    # one seed per (step, update, global micro-batch): rank r's j-th slice is global slice r*n + j
                    seed = step_seed(cfg.seed, step, self.rank * len(micro_slices) + index,
                                     salt=1000 + epoch * cfg.train.mini_batches + mini)
                    with context:
                        loss, micro_metrics = self._micro_batch_loss(rollout, rows, step_batch, ref_logp,
                                                                     len(micro_slices), seed, on_policy, totals, is_weights)
                        self.accelerator.backward(self.grad_scaler.scale(loss))
                    sums.add(micro_metrics)
                self.grad_scaler.unscale_(self.optimizer)
                max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
                grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
                grad_norms.append(float(grad_norm))
                self.grad_scaler.step(self.optimizer)   # float16: skipped when the gradients overflowed
                self.grad_scaler.update()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        sums.add(self.intervention.end_step(), prefix)
        t_train = time.perf_counter()

        # 6. metrics ------------------------------------------------------------------------------
        lengths = rollout.response_mask.sum(-1).float()
        grouped = rewards.reshape(-1, G)
        metrics = {
            "train/reward_mean": float(rewards.mean()),
            "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "train/accuracy": float((rewards > 0).float().mean()),
            "train/entropy": global_ratio((step_batch.old_entropy * response_mask).sum(), response_mask.sum()),
            "train/response_length": float(lengths.mean()),
            "train/zero_variance_groups": float((grouped.std(-1) == 0).float().mean()) if G > 1 else 1.0,
            "train/advantage_abs_mean": float(advantages.abs().mean()),
            "train/grad_norm": sum(grad_norms) / len(grad_norms),
            "train/lr": lr,
        }
        metrics.update(sums.means())
        metrics.update(sampler_metrics)
        metrics.update({"time/rollout": t_rollout - t_start, "time/train": t_train - t_rollout})
        metrics = self._all_mean(metrics)
        metrics["time/other"] = time.perf_counter() - t_train
        metrics["time/step"] = time.perf_counter() - t_start
        return metrics

    def fuses_old_policy_pass(self, rows: int) -> bool:
        """Whether this step's only update comes from one forward of all ``rows`` of this process's batch
        (``ppo_epochs`` 1, ``mini_batches`` 1, no smaller micro-batches): then the old policy is the current
        one, and its log-probs, entropies and features come from that forward, detached (TRL skips the pass
        alike). Else they need the no-grad pass, before the first update and over the whole batch, which
        ``begin_step`` reads."""
        cfg = self.config.train
        return (self.fuse_old_policy_pass and cfg.ppo_epochs == 1 and cfg.mini_batches == 1
                and (cfg.micro_batch_size or rows) >= rows)

    def _forward(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, log pi(token))`` of the current policy over ``rollout``, with grad.

        With ``train.gradient_checkpointing`` the model is in training mode for this forward only: HF checkpoints
        its layers only then (``layer.training``); its dropout is off (``enable_gradient_checkpointing``), so
        the function is the one the no-grad passes (eval mode) compute."""
        policy = self.accelerator.unwrap_model(self.model)
        checkpointing = self.config.train.gradient_checkpointing
        if checkpointing:
            policy.train()
        try:
            logits = self._response_logits(self.model, rollout)
        finally:
            if checkpointing:
                policy.eval()
        return logits, token_logprobs(logits, rollout.response_ids.to(logits.device), self.config.entropy.chunk_size)

    @torch.no_grad()
    def _old_policy_values(self, logits: torch.Tensor, logp: torch.Tensor, response_mask: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """What the old-policy pass gives, from the logits and log-probs of the update's own forward (detached)."""
        return logp, token_entropy(logits, self.config.entropy.chunk_size), \
            self.intervention.old_policy_features(logits, response_mask)

    @torch.no_grad()
    def _old_policy_pass(self, rollout: Rollout, response_ids: torch.Tensor, response_mask: torch.Tensor,
                         rows_per_forward: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """log pi_old of the sampled tokens, the full-vocabulary entropy and the intervention's features, from
        one forward per ``rows_per_forward`` sequences (one log-softmax per chunk of positions)."""
        old_logp, old_entropy, old_features = [], [], defaultdict(list)
        for start in range(0, response_ids.shape[0], rows_per_forward):
            rows = torch.arange(start, min(start + rows_per_forward, response_ids.shape[0]))
            logits = self._response_logits(self.model, rollout.select(rows))
            logp, entropy = token_logprobs_and_entropy(logits, response_ids[rows], self.config.entropy.chunk_size)
            old_logp.append(logp)
            old_entropy.append(entropy)
            for name, value in self.intervention.old_policy_features(logits, response_mask[rows]).items():
                old_features[name].append(value)
            del logits
        return torch.cat(old_logp), torch.cat(old_entropy), {k: torch.cat(v) for k, v in old_features.items()}

    def _token_entropies(self, model, rollout: Rollout, temperature: float, rows_per_forward: int) -> torch.Tensor:
        """Full-vocabulary entropy at each response position [B, T], ``rows_per_forward`` sequences per forward."""
        return token_entropies(model, rollout, temperature, rows_per_forward, self.config.entropy.chunk_size,
                               self.accelerator.device, self.autocast)

    @torch.no_grad()
    def _reference_logprobs(self, rollout: Rollout, response_ids: torch.Tensor, rows_per_forward: int) -> torch.Tensor:
        """log pi_ref of the sampled tokens, ``rows_per_forward`` sequences per forward (as the old-policy pass)."""
        pieces = []
        offload = self.config.kl.ref_offload
        if offload:
            self.ref_model.to(self.accelerator.device)
        try:
            for start in range(0, response_ids.shape[0], rows_per_forward):
                rows = torch.arange(start, min(start + rows_per_forward, response_ids.shape[0]))
                logits = self._response_logits(self.ref_model, rollout.select(rows))
                pieces.append(token_logprobs(logits, response_ids[rows], self.config.entropy.chunk_size))
                del logits
        finally:
            if offload:
                self.ref_model.to("cpu")
        return torch.cat(pieces)

    def _mini_batch_totals(self, mini_batch_mask: torch.Tensor) -> BatchTotals:
        """The mini-batch's response tokens and responses summed over the processes (one all-reduce per
        mini-batch): the denominators of ``loss_agg`` (verl's ``batch_num_tokens`` and ``global_batch_size``)."""
        local = torch.stack([mini_batch_mask.sum(), torch.tensor(float(mini_batch_mask.shape[0]), device=mini_batch_mask.device)])
        tokens, sequences = global_sum(local).tolist()
        return BatchTotals(tokens=tokens, sequences=sequences)

    def _micro_batch_loss(self, rollout: Rollout, rows: torch.Tensor, batch: StepBatch, ref_logp: torch.Tensor | None,
                          num_micro: int, seed: int = 0, forward: tuple[torch.Tensor, torch.Tensor] | None = None,
                          totals: BatchTotals | None = None, is_weights: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to back-propagate for the micro-batch ``rows`` (one of ``num_micro`` of this process's mini-batch)
        and its metrics; ``forward``: its ``(logits, logp)`` when the step already ran it; ``totals``: the
        mini-batch's token and response counts over all processes (None: ``rows`` are the whole mini-batch, one
        process).

        The PG and KL terms are this micro-batch's share of the mini-batch's aggregate (``aggregate(...,
        totals)``), times the process count (data parallel averages the gradients over processes): summed over
        micro-batches and averaged over processes, the gradient is the mini-batch's, whatever the split. The
        methods' extra terms are their own aggregates of this micro-batch, averaged over the micro-batches
        (``/ num_micro``) and processes. The logged losses are in mini-batch units (each micro-batch's share
        scaled by ``num_micro x world``, so the step's mean over micro-batches and processes is the mini-batch's)."""
        cfg = self.config
        world = self.world
        if totals is None:
            totals = BatchTotals.of(batch.response_mask[rows.to(batch.response_mask.device)])
            world = 1
        device = self.accelerator.device
        rows_device = rows.to(device)
        logits, logp = forward if forward is not None else self._forward(rollout.select(rows))
        mask = batch.response_mask[rows_device]
        micro = MicroBatch(
            logits=logits, logp=logp, old_logp=batch.old_logp[rows_device], old_entropy=batch.old_entropy[rows_device],
            response_mask=mask, advantages=batch.advantages[rows_device][:, None].expand_as(logp),
            group_accuracy=batch.group_accuracy[rows_device], rows=rows_device,
            old_features={k: v[rows_device] for k, v in batch.old_features.items()},
            num_micro_batches=num_micro, chunk_size=cfg.entropy.chunk_size, seed=seed)
        ref = ref_logp[rows_device] if ref_logp is not None else None
        weights = is_weights[rows_device] if is_weights is not None else None
        return micro_batch_loss(cfg, self.intervention, micro, ref, totals=totals, world=world, num_micro=num_micro,
                                is_weights=weights)

    # ------------------------------------------------------------------ validation

    def evaluate(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Validate on ``eval.num_prompts`` validation prompts (the first ones, or the held-out ones after them:
        ``eval.split``, trainers/data.py ``validation_prompts``): ``(metrics, per_prompt)``, by
        ``trainers.validation.validate_policy`` (its docstring: the seeds), which every engine runs."""
        return validate_policy(self.config, self.accelerator.unwrap_model(self.model), self.engine, self.eval_problems,
                               self.reward_fn, self.step, device=self.accelerator.device, autocast=self.autocast,
                               rank=self.rank, world=self.world)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        final = self.output_dir / CHECKPOINT_DIR
        staging = self.output_dir / (CHECKPOINT_DIR + ".tmp")
        if self.is_main and staging.exists():
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(staging))
        if self.is_main:
            torch.save(self.intervention.state_dict(), staging / "intervention.pt")
            (staging / "trainer_state.json").write_text(json.dumps({"step": self.step, "world_size": self.world}))
            previous = self.output_dir / (CHECKPOINT_DIR + ".old")
            if final.exists():
                final.rename(previous)
            staging.rename(final)
            if previous.exists():
                shutil.rmtree(previous)
        self.accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self) -> bool:
        folder = self.output_dir / CHECKPOINT_DIR
        if not (folder / "trainer_state.json").exists():
            return False
        self.accelerator.load_state(str(folder))
        state = json.loads((folder / "trainer_state.json").read_text())
        self.step = int(state["step"])
        self.intervention.load_state_dict(torch.load(folder / "intervention.pt", weights_only=False))
        if self.is_main:
            truncate_after(self.output_dir, self.step)
        self.accelerator.wait_for_everyone()
        return True

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict[str, Any]:
        cfg = self.config
        resumed = cfg.train.resume and self.load_checkpoint()
        if self.is_main:
            dump_config(cfg, self.output_dir / "config.yaml")
        self.reporter.on_start({"config": cfg.model_dump(mode="json"), "output_dir": str(self.output_dir),
                                "resumed_from_step": self.step if resumed else 0, "num_processes": self.world})
        last_validation: dict[str, float] = {}
        stop_reason = None
        if cfg.train.eval_at_start and not resumed:  # a run resumed at step 0 already has its step-0 validation
            last_validation = self._validate()
            stop_reason = self._broadcast_stop()
        while stop_reason is None and self.step < cfg.train.steps:
            metrics = self.train_step(self.step + 1)
            self.step += 1
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                self.reporter.on_train_step(self.step, metrics)
            if self.step % cfg.train.eval_every == 0 or self.step == cfg.train.steps:
                last_validation = self._validate()
            if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0 and self.step < cfg.train.steps:
                self.save_checkpoint()
            stop_reason = self._broadcast_stop()
        if stop_reason is None or stop_reason == PREEMPTED:
            self.save_checkpoint()
        summary = {"status": "completed" if stop_reason is None else "stopped", "step": self.step,
                   "stop_reason": stop_reason, "last_validation": last_validation, "output_dir": str(self.output_dir)}
        self.reporter.on_end(summary)
        return summary

    def _validate(self) -> dict[str, float]:
        started = time.perf_counter()
        metrics, per_prompt = validation_or_step0(self.config, self.step, self.model_path, self.eval_problems, self.evaluate,
                                                  is_main=self.is_main, share=self._from_rank0)
        metrics["time/eval"] = time.perf_counter() - started
        self.reporter.on_validation(self.step, metrics, per_prompt)
        return metrics

    def _from_rank0(self, value: Any) -> Any:
        shared = [value]
        if self.world > 1:
            torch.distributed.broadcast_object_list(shared, src=0)
        return shared[0]


def train(config: RunConfig, reporters: Sequence[Reporter] = ()) -> dict[str, Any]:
    """Run (or resume) one GRPO training run on ``config.engine``; returns its summary. The sweeper's trial entry
    point. ``engine: trl`` runs ``trainers.engines.trl.train`` (TRL's trainer, this project's loss and validation)."""
    if config.engine == "trl":
        from .engines.trl import train as train_on_trl

        return train_on_trl(config, reporters)
    return GRPOTrainer(config, reporters).train()
