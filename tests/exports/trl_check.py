"""Runs inside .venv-trl (TRL 1.16.x): what TRL makes of an exported config. Not a test module: the
``exports`` tests (tests/test_export_libraries.py) run it as ``.venv-trl/bin/python tests/exports/trl_check.py``
with a JSON request on stdin and read a JSON answer on stdout.

Request: ``{name: {"config": "/path/best.trl.yaml", "model": "/path/to/model/folder"}, ...}``;
answer: ``{name: {...what TRL resolved...}}`` (one process for all).

1. ``GRPOConfig(**yaml.safe_load(file))``: every key must be a GRPOConfig argument, and its ``__post_init__``
   checks (generation batch of whole groups, eval batch divisible by num_generations_eval, ...) must pass;
2. ``GRPOTrainer(model=<the exported model folder>, args=config, ...)`` on the CPU with a dummy reward and a
   few prompts: the trainer's own checks, the model and tokenizer loaded from the path;
3. the trainer's optimizer and LR scheduler built by ``Trainer.create_optimizer_and_scheduler`` for
   ``max_steps``, with the lr of every optimizer step;
4. the values the trainer resolved (loss type, clip bounds, beta, entropy terms, batch shape, ...).
"""

from __future__ import annotations

import json
import os
import sys
import warnings


def main() -> None:
    requests = json.load(sys.stdin)
    warnings.simplefilter("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    answers = {name: check(request) for name, request in requests.items()}
    print(json.dumps(answers, default=str))


def check(request: dict) -> dict:
    import tempfile

    import yaml
    from datasets import Dataset

    import trl
    from trl import GRPOConfig, GRPOTrainer

    with open(request["config"]) as handle:
        kwargs = yaml.safe_load(handle)
    kwargs["output_dir"] = tempfile.mkdtemp(prefix="trl-check-")   # the trainer creates it
    args = GRPOConfig(**kwargs, report_to=[], use_cpu=True)

    prompts = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(8)]})

    def reward(completions, **_):
        return [0.0 for _ in completions]

    trainer = GRPOTrainer(model=request["model"], reward_funcs=reward, args=args, train_dataset=prompts,
                          eval_dataset=prompts)
    trainer.create_optimizer_and_scheduler(num_training_steps=args.max_steps)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    group = optimizer.param_groups[0]
    lrs = []
    for _ in range(args.max_steps):
        lrs.append(group["lr"])
        optimizer.step()
        scheduler.step()
    names = ("max_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "warmup_steps",
             "lr_scheduler_type", "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
             "generation_batch_size", "num_generations", "num_generations_eval", "per_device_eval_batch_size",
             "num_iterations", "max_completion_length", "temperature", "top_p", "top_k", "epsilon", "epsilon_high",
             "delta", "beta", "loss_type", "scale_rewards", "top_entropy_quantile", "entropy_coef", "eval_strategy",
             "eval_steps", "eval_on_start", "save_strategy", "save_steps", "save_total_limit", "logging_steps", "seed",
             "bf16", "fp16", "disable_dropout", "trust_remote_code", "use_vllm")
    return {
        "trl_version": trl.__version__,
        "model_path": trainer.model.config.name_or_path,
        "args": {name: getattr(args, name) for name in names},
        "trainer": {"loss_type": trainer.loss_type, "epsilon_low": trainer.epsilon_low, "epsilon_high": trainer.epsilon_high,
                    "beta": trainer.beta, "num_iterations": trainer.num_iterations, "num_generations": trainer.num_generations,
                    "top_entropy_quantile": trainer.top_entropy_quantile, "entropy_coef": trainer.entropy_coef,
                    "scale_rewards": trainer.scale_rewards, "max_completion_length": trainer.max_completion_length,
                    "temperature": trainer.temperature, "model_dtype": str(trainer.model.dtype).removeprefix("torch."),
                    "model_type": trainer.model.config.model_type,
                    "lr_scheduler_kwargs": args.lr_scheduler_kwargs},
        "optimizer": {"class": type(optimizer).__name__, "betas": list(group["betas"]), "weight_decay": group["weight_decay"]},
        "lrs": lrs,
    }


if __name__ == "__main__":
    main()
