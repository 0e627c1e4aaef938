"""One process of the data-parallel equivalence test (tests/test_data_parallel.py).

``python tests/_dp_run.py OUT`` trains every method on one process; under ``accelerate launch
--num_processes 2`` the same script trains them on two, and also trains each one again with a preemption
after step 2 and a resume. Each rank saves, per method and run: its weights, their gradients from the last
optimizer step, the method's state, and (rank 0) the per-step metrics.

The rollouts come from :class:`ReplayEngine`: the real HF sampler on a frozen copy of the initial policy,
seeded per prompt, so every prompt gets the same responses at any process count. That keeps the test
about the update (the step, the losses, the method statistics, the all-reduces), which is what has to be
the same: the samples a live policy draws depend on the process's random stream by design.
"""

from __future__ import annotations

import copy
import json
import sys
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainers.config import parse_config  # noqa: E402
from trainers.grpo import GRPOTrainer  # noqa: E402
from trainers.reporting import PREEMPTED, Reporter  # noqa: E402
from trainers.rollout import (HFRolloutEngine, Rollout, SamplingSettings, _finish_rollout, _tokenize_prompts,  # noqa: E402
                              response_mask_from_lengths)

STEPS = 4
PROMPT_WIDTH = 24
STOP_AFTER = 2

# method -> run-config overrides: each method's knobs set so that it acts on a 21-token model in 4 steps
METHODS = {
    "none": {"kl": {"beta": 0.05}, "clip": {"eps_low": 0.1, "eps_high": 0.1, "dual_c": 3.0}},
    "entropy_bonus": {"entropy": {"bonus": {"coef": 0.01}}},
    "siren": {"loss_agg": "seq_mean_token_sum_norm", "advantage": "dr_grpo",
              "entropy": {"siren": {"top_p": 0.95, "peak_scope": "batch", "peak_quantile": 0.5, "coef": 0.05},
                          "anchor": {"source": "previous"}}},
    "aer": {"loss_agg": "seq_mean_token_mean",
            "entropy": {"aer": {"rho": 1.0, "alpha_lr": 0.1, "alpha_max": 0.05}, "anchor": {"ratio": 1.5}}},
    "steer": {"clip": {"eps_low": 0.1, "eps_high": 0.1},
              "entropy": {"steer": {"omega_form": "paper", "normalize_over": "batch", "w_min": 0.5}}},
    "forking_tokens": {"entropy": {"forking": {"scope": "batch", "top_fraction": 0.5}}},
    "clip_cov": {"clip": {"eps_low": 0.1, "eps_high": 0.1},
                 "entropy": {"clip_cov": {"ratio": 0.2, "lower": -100.0, "upper": 100.0}}},
    "kl_cov": {"entropy": {"kl_cov": {"ratio": 0.1, "coef": 0.5}}},
    "entropy_advantage": {"entropy": {"entropy_advantage": {"alpha": 0.4, "kappa": 2.0}}},
}

# each method's state: the attributes that set its behaviour at the next step
STATE = {
    "siren": lambda i: {"anchor": i.anchor.state_dict()},
    "aer": lambda i: {"alpha": i.alpha, "anchor": i.anchor.state_dict()},
    "steer": lambda i: {"step_range": i._step_range},
    "forking_tokens": lambda i: {"selected": int(i._step_mask.sum())},
}


def run_config(method: str, output_dir: Path) -> dict:
    config = {
        "seed": 3,
        "model": {"path": "builtin:tiny-arith"},
        "data": {"synthetic": {"train_size": 200, "val_size": 8}},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
        # one mini-batch of all prompts, two epochs (the second off-policy); micro-batches of 2 prompts: one
        # process runs the two halves in turn, two processes run one half each
        "train": {"steps": STEPS, "ppo_epochs": 2, "mini_batches": 1, "micro_batch_size": 8, "eval_every": 100,
                  "eval_at_start": False, "checkpoint_every": 0, "output_dir": str(output_dir)},
        "eval": {"num_prompts": 2, "n_samples": 2, "k": [1, 2]},
        "optim": {"lr": 3e-4, "schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1},
        "entropy": {"method": method},
    }
    for key, value in METHODS[method].items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
            if key == "entropy":
                config[key]["method"] = method
        else:
            config[key] = value
    return config


class ReplayEngine:
    """G responses per prompt from the initial policy, seeded by the prompt's text: the same at any process
    count, batch composition or step."""

    def __init__(self, trainer: GRPOTrainer):
        self.tokenizer = trainer.tokenizer
        frozen = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).requires_grad_(False)
        self.sampler = HFRolloutEngine(frozen, trainer.tokenizer)

    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout:
        responses = []
        with torch.random.fork_rng():
            for prompt in prompts:
                seeded = SamplingSettings(sampling.temperature, sampling.top_p, sampling.top_k,
                                          sampling.max_new_tokens, seed=zlib.crc32(prompt.encode()))
                rollout = self.sampler.generate([prompt], n, seeded)
                responses += [ids[mask.bool()].tolist() for ids, mask in zip(rollout.response_ids, rollout.response_mask)]
        # fixed widths (prompts left-padded to PROMPT_WIDTH, responses right-padded to max_new_tokens): a process's
        # shard then has exactly the shape of the same rows in one process's batch, so the forward passes agree
        # bit for bit and the comparison can be tight
        pad = self.tokenizer.pad_token_id
        width = sampling.max_new_tokens
        response_ids = torch.tensor([r + [pad] * (width - len(r)) for r in responses], dtype=torch.long)
        prompt_ids, prompt_mask = _tokenize_prompts(self.tokenizer, prompts)
        extra = PROMPT_WIDTH - prompt_ids.shape[1]
        assert extra >= 0, "raise PROMPT_WIDTH"
        prompt_ids = torch.cat([torch.full((len(prompts), extra), pad), prompt_ids], dim=1)
        prompt_mask = torch.cat([torch.zeros(len(prompts), extra, dtype=prompt_mask.dtype), prompt_mask], dim=1)
        response_mask = response_mask_from_lengths(torch.tensor([len(r) for r in responses]), width)
        return _finish_rollout(self.tokenizer, prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0),
                               response_ids, response_mask)


class Record(Reporter):
    def __init__(self, stop_after: int | None = None):
        self.metrics: dict[int, dict[str, float]] = {}
        self.stop_after = stop_after

    def on_train_step(self, step, metrics):
        self.metrics[step] = dict(metrics)

    def stop_reason(self):
        return PREEMPTED if self.stop_after is not None and max(self.metrics, default=0) >= self.stop_after else None


def trained(method: str, output_dir: Path, stop_after: int | None = None) -> tuple[GRPOTrainer, Record]:
    record = Record(stop_after)
    trainer = GRPOTrainer(parse_config(run_config(method, output_dir)), [record])
    trainer.engine = ReplayEngine(trainer)
    trainer.train()
    return trainer, record


def save(trainer: GRPOTrainer, record: Record, path: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    intervention = trainer.intervention
    torch.save({
        "world": trainer.world,
        "step": trainer.step,
        "weights": {k: v.detach().clone() for k, v in model.named_parameters()},
        "grads": {k: v.grad.detach().clone() for k, v in model.named_parameters() if v.grad is not None},
        "state": STATE.get(intervention.name, lambda i: {})(intervention),
        "last_lr": trainer.scheduler.get_last_lr()[0],
        "metrics": record.metrics,
    }, path)


def main(out: Path) -> None:
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else list(METHODS)
    for method in methods:
        trainer, record = trained(method, out / f"{method}-straight")
        world, rank = trainer.world, trainer.rank
        save(trainer, record, out / f"w{world}-{method}-straight-rank{rank}.pt")
        if world > 1:   # preempted after step 2, then resumed in fresh trainers: the same state as straight
            stopped, _ = trained(method, out / f"{method}-resumed", stop_after=STOP_AFTER)
            assert stopped.step == STOP_AFTER, stopped.step
            trainer, record = trained(method, out / f"{method}-resumed")
            save(trainer, record, out / f"w{world}-{method}-resumed-rank{rank}.pt")
    (out / f"done-w{world}-rank{rank}.json").write_text(json.dumps(methods))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
