"""Seconds per GRPO step on the shipped tiny model: against a bare loop, TRL's GRPOTrainer, and per entropy method.

Every contestant runs in turn, one step each, round after round (GRPO, TRL, bare loop, method 1, ...), so
machine noise hits all alike. Equal work: before each round the bare loop's and every method's trainer load
the GRPO trainer's weights, so they sample exactly its rollout (same weights, same per-step seed) and train on
it. Reported: each contestant's median over the measured steps, and each ratio with its spread: the measured
steps cut into ``--blocks`` blocks (repeats), median / median in each, the median over the blocks [lowest,
highest].

- bare loop: only what any GRPO step must do, with the trainer's own primitives: ``generate`` the step's
  prompts x G samples, with more than one update per batch one no-grad forward for log pi_old (the PPO ratio
  of the later updates needs it; TRL's ``num_iterations`` > 1 does the same), then per optimizer step one
  forward/backward of a plain policy-gradient loss and ``optimizer.step()``: no entropies, no metrics, no
  interventions, no gradient clipping.
- ``--methods``: one row per entropy method, its median over vanilla GRPO's (target: <= +5%).
- ``--trl [PYTHON]``: TRL's GRPOTrainer (``benchmarks/trl_side.py``, run by TRL's own environment, default
  ``.venv-trl/bin/python``: ``bash scripts/setup_exports.sh trl``) at equal work: the same model folder, the
  same prompts in the same order, prompts x G samples, max_new_tokens, temperature, one optimizer step per
  batch (TRL then skips its old-policy pass), AdamW with the same lr and clipping, float32, no gradient
  checkpointing, the same reward, the same number of torch threads. Implies ``--on-policy``. TRL's time
  is its whole loop iteration (generation, reward, loss, backward, optimizer, logging, data loading).
- ``--on-policy``: one update per batch (``ppo_epochs`` 1, ``mini_batches`` 1): the methods' papers' setting.
- ``--trl-engine METHOD``: a method's overhead on TRL (``engine: trl``): TRL's GRPOTrainer against
  ``trainers.engines.trl.EntropyGRPOTrainer`` (plain GRPO and METHOD), built from the same run config through the
  one GRPOConfig mapping (``trainers.engines.trl_args``), in this environment (``pip install -e '.[trl]'``). Each
  runs ``Trainer.train()`` unmodified in its own thread, held at the start of every optimizer step by a callback
  until its turn (one thread computes at a time), one optimizer step each, round after round. A step is the whole
  loop iteration (generation, reward, old-policy pass, loss, backward, optimizer, logging); TRL generates once per
  ``steps_per_generation`` steps, so the figure is the CPU time of whole generations divided by their steps (CPU
  seconds of this process: only the thread whose turn it is runs). Printed: mean seconds per optimizer step, its
  ratio to plain TRL and that ratio's range over the ``--generations`` timed generations (after one warm-up).

    python benchmarks/step_time.py                        # default run (2 epochs x 4 mini-batches), vs bare loop
    python benchmarks/step_time.py --methods all          # plus a row per entropy method
    OMP_NUM_THREADS=1 python benchmarks/step_time.py --trl --methods all   # on-policy, vs TRL too
    OMP_NUM_THREADS=1 python benchmarks/step_time.py --trl-engine siren    # SIREN on TRL vs plain TRL
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainers.config import parse_config, resolve_model_path  # noqa: E402
from trainers.entropy.base import registered_interventions  # noqa: E402
from trainers.grpo import GRPOTrainer  # noqa: E402
from trainers.rollout import SamplingSettings  # noqa: E402
from trainers.setup import step_seed  # noqa: E402

WARMUP = 3


def bare_step(trainer: GRPOTrainer, step: int) -> float:
    """generate + (more than one update: a no-grad log pi_old forward) + (mini_batches x ppo_epochs) x
    (forward/backward + optimizer step), nothing else."""
    cfg = trainer.config
    started = time.perf_counter()
    torch.manual_seed(step_seed(cfg.seed, step, 0))   # as train_step: the same samples from the same weights
    problems = trainer._sample_problems(step)
    sampling = SamplingSettings(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_new_tokens)
    rollout = trainer.engine.generate([p.prompt for p in problems], cfg.rollout.group_size, sampling)
    G, minis = cfg.rollout.group_size, cfg.train.mini_batches
    rows_per_mini = len(problems) * G // minis
    rewards = torch.randn(rollout.response_ids.shape[0])
    if cfg.train.ppo_epochs * minis > 1:
        with torch.no_grad():
            logits = trainer._response_logits(trainer.model, rollout)
            torch.log_softmax(logits.float(), -1).gather(-1, rollout.response_ids[..., None])
    for _ in range(cfg.train.ppo_epochs):
        for mini in range(minis):
            rows = torch.arange(mini * rows_per_mini, (mini + 1) * rows_per_mini)
            part = rollout.select(rows)
            logits = trainer._response_logits(trainer.model, part)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, part.response_ids[..., None]).squeeze(-1)
            loss = -(logp * part.response_mask * rewards[rows, None]).sum() / part.response_mask.sum()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
    return time.perf_counter() - started


class TRLSide:
    """TRL's GRPOTrainer in its own environment (benchmarks/trl_side.py), one step per ``step()``."""

    def __init__(self, python: str, trainer: GRPOTrainer, steps: int):
        cfg = trainer.config
        problems = [(p.prompt, p.answer) for step in range(1, steps + 2) for p in trainer._sample_problems(step)]
        spec = {
            "repo": str(REPO), "model": resolve_model_path(cfg.model.path), "problems": problems, "steps": steps,
            "seed": cfg.seed, "threads": torch.get_num_threads(), "reward": cfg.data.reward,
            "settings": {"prompts": cfg.rollout.prompts_per_step, "group_size": cfg.rollout.group_size,
                         "max_new_tokens": cfg.rollout.max_new_tokens, "temperature": cfg.rollout.temperature,
                         "top_p": cfg.rollout.top_p, "top_k": cfg.rollout.top_k, "eps_low": cfg.clip.eps_low,
                         "eps_high": cfg.clip.eps_high, "lr": cfg.optim.lr, "betas": list(cfg.optim.betas),
                         "weight_decay": cfg.optim.weight_decay, "max_grad_norm": cfg.optim.max_grad_norm},
        }
        self.spec_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(spec, self.spec_file)
        self.spec_file.close()
        command_read, self._command = os.pipe()
        self._result, result_write = os.pipe()
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [python, str(REPO / "benchmarks" / "trl_side.py"), self.spec_file.name, str(command_read), str(result_write)],
            pass_fds=(command_read, result_write), stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
        os.close(command_read)
        os.close(result_write)
        self.commands = os.fdopen(self._command, "w", buffering=1)
        self.results = os.fdopen(self._result, "r")
        self._read()   # {"ready": true}: the model is loaded, TRL's loop waits at step 1

    def _read(self) -> dict:
        line = self.results.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"TRL's side ended early; its output:\n{self.log.read()[-4000:]}")
        return json.loads(line)

    def step(self) -> tuple[float, float, float | None]:
        """(CPU seconds, wall-clock seconds, mean completion length) of one TRL step."""
        self.commands.write("go\n")
        record = self._read()
        return record["cpu_seconds"], record["seconds"], record["completion_length"]

    def close(self) -> None:
        self.commands.close()
        self.process.wait(timeout=60)
        os.unlink(self.spec_file.name)
        os.unlink(self.log.name)


def ratio_with_spread(ours: list[float], theirs: list[float], blocks: int) -> tuple[float, float, float]:
    """The measured steps cut into ``blocks`` consecutive blocks (repeats), median(ours) / median(theirs) in each:
    the median of these ratios, the lowest and the highest."""
    size = max(1, len(ours) // blocks)
    per_block = [statistics.median(ours[i:i + size]) / statistics.median(theirs[i:i + size])
                 for i in range(0, size * blocks, size) if ours[i:i + size]]
    return statistics.median(per_block), min(per_block), max(per_block)


# --------------------------------------------------------------------------- --trl-engine: a method's overhead on TRL


class Turns:
    """A ``TrainerCallback`` factory: holds a trainer at each step's start until ``step()``; records step seconds."""

    def __init__(self):
        import threading

        from transformers import TrainerCallback

        self.go_event, self.done_event = threading.Event(), threading.Event()
        self.seconds: list[float] = []
        self.started: float | None = None
        turns = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                turns.record()
                turns.done_event.set()
                turns.go_event.wait()
                turns.go_event.clear()
                turns.started = time.process_time()

            def on_train_end(self, args, state, control, **kwargs):
                turns.record()
                turns.done_event.set()

        self.callback = Callback()

    def record(self) -> None:
        if self.started is not None:
            self.seconds.append(time.process_time() - self.started)
            self.started = None

    def step(self) -> None:
        self.done_event.clear()
        self.go_event.set()
        self.done_event.wait()


def trl_engine_overhead(method: str, generations: int) -> None:
    """CPU seconds per optimizer step: TRL's GRPOTrainer, EntropyGRPOTrainer with no method, and with ``method``."""
    import threading

    from trl import GRPOConfig, GRPOTrainer

    from trainers.config import trl_grpo_config_kwargs
    from trainers.engines.trl import EntropyGRPOTrainer, dataset_and_reward

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    contestants = {"TRL GRPOTrainer": None, "EntropyGRPOTrainer none": "none", f"EntropyGRPOTrainer {method}": method}
    turns, threads = {}, []
    for label, name in contestants.items():
        config = parse_config({
            "seed": 0, "engine": "trl", "model": {"path": "builtin:tiny-arith"}, "entropy": {"method": name or "none"},
            "rollout": {"prompts_per_step": 8, "group_size": 8, "max_new_tokens": 8},
            "train": {"steps": generations + 1, "eval_every": 10_000, "eval_at_start": False, "checkpoint_every": 0,
                      "output_dir": tempfile.mkdtemp(prefix="trl-overhead-")},
        }, label)
        kwargs, _ = trl_grpo_config_kwargs(config.model_dump(mode="json"))
        kwargs.update(report_to=[], use_cpu=True, save_strategy="no", eval_strategy="no", disable_tqdm=True,
                      logging_steps=1, shuffle_dataset=False, log_completions=False)
        train, _, reward = dataset_and_reward(config)
        turns[label] = Turns()
        common = dict(model=resolve_model_path(config.model.path), reward_funcs=reward, args=GRPOConfig(**kwargs),
                      train_dataset=train, callbacks=[turns[label].callback])
        trainer = GRPOTrainer(**common) if name is None else EntropyGRPOTrainer(**common, run_config=config)
        thread = threading.Thread(target=trainer.train, daemon=True)
        thread.start()
        turns[label].done_event.wait()   # held at step 1
        threads.append(thread)
    per_generation = kwargs["steps_per_generation"] * kwargs["num_iterations"] // kwargs["gradient_accumulation_steps"]
    for _ in range((generations + 1) * per_generation):
        for label in contestants:
            turns[label].step()
    for label in contestants:
        turns[label].go_event.set()
    for thread in threads:
        thread.join(timeout=60)

    def per_generation_means(values: list[float]) -> list[float]:
        timed = values[per_generation:(generations + 1) * per_generation]
        return [statistics.fmean(timed[i:i + per_generation]) for i in range(0, len(timed), per_generation)]

    base = per_generation_means(turns["TRL GRPOTrainer"].seconds)
    print(f"tiny-arith, 8 prompts x 8, 8 new tokens, the default run config's batch shape ({per_generation} optimizer "
          f"steps per generation), float32, {torch.get_num_threads()} thread(s); {generations} generations each after "
          f"1 warm-up, in turn; CPU seconds per optimizer step")
    for label in contestants:
        ours = per_generation_means(turns[label].seconds)
        ratios = [a / b for a, b in zip(ours, base)]
        print(f"{label:32s} mean {statistics.fmean(ours):.3f} s/step   x TRL {statistics.fmean(ours) / statistics.fmean(base):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]   (target <= 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="run config YAML (default: examples/tiny_grpo.yaml)")
    parser.add_argument("--steps", type=int, default=40, help=f"measured steps per contestant (after {WARMUP} warm-up steps)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of steps for the spread of each ratio")
    parser.add_argument("--methods", default="", help="comma list of entropy methods, or 'all'")
    parser.add_argument("--on-policy", action="store_true", help="one update per batch (ppo_epochs 1, mini_batches 1)")
    parser.add_argument("--trl", nargs="?", const=str(REPO / ".venv-trl" / "bin" / "python"), default=None,
                        metavar="PYTHON", help="also TRL's GRPOTrainer, run by PYTHON (default .venv-trl/bin/python)")
    parser.add_argument("--trl-engine", metavar="METHOD", help="only a method's overhead on TRL (engine: trl) vs plain TRL")
    parser.add_argument("--generations", type=int, default=3, help="--trl-engine: timed generations (after one warm-up)")
    args = parser.parse_args()
    if args.trl_engine:
        return trl_engine_overhead(args.trl_engine, args.generations)

    import yaml

    path = Path(args.config) if args.config else REPO / "examples" / "tiny_grpo.yaml"
    base = yaml.safe_load(path.read_text())
    base.setdefault("train", {})["output_dir"] = tempfile.mkdtemp(prefix="entropy-sweeper-bench-")
    if args.on_policy or args.trl:
        base["train"].update(ppo_epochs=1, mini_batches=1, micro_batch_size=None)
    if args.trl and not Path(args.trl).exists():
        parser.error(f"--trl: {args.trl} does not exist; `bash scripts/setup_exports.sh trl` makes .venv-trl")
    methods = [m for m in registered_interventions() if m != "none"] if args.methods == "all" else \
        [m for m in args.methods.split(",") if m]

    def trainer_for(method: str) -> GRPOTrainer:
        data = {**base, "entropy": {**base.get("entropy", {}), "method": method}}
        return GRPOTrainer(parse_config(data))

    load_before = os.getloadavg()
    variants = {"grpo": trainer_for("none")}
    for method in methods:
        variants[method] = trainer_for(method)
    bare_trainer = trainer_for("none")
    trl = TRLSide(args.trl, variants["grpo"], WARMUP + args.steps) if args.trl else None
    names = [*variants, "bare"] + (["trl"] if trl else [])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    splits: dict[str, list[float]] = {"time/rollout": [], "time/train": [], "time/other": []}
    lengths: dict[str, list[float]] = {"grpo": [], "trl": []}
    unequal_rollouts = 0   # a method's rollout differing from GRPO's (same weights, same seed: none)
    order = random.Random(0)
    try:
        for step in range(1, WARMUP + args.steps + 1):
            weights = {k: v.detach().clone() for k, v in variants["grpo"].model.state_dict().items()}
            rollouts: dict[str, tuple[float, float]] = {}
            for name in order.sample(names, len(names)):   # a new order each round: no contestant always first
                started, cpu_started = time.perf_counter(), time.process_time()
                if name == "trl":
                    _, cpu_seconds, seconds, length = (None, *trl.step())
                    lengths["trl"].append(length if length is not None else float("nan"))
                else:
                    trainer = bare_trainer if name == "bare" else variants[name]
                    if name != "grpo":
                        trainer.model.load_state_dict(weights)
                        started, cpu_started = time.perf_counter(), time.process_time()
                    if name == "bare":
                        bare_step(trainer, step)
                    else:
                        metrics = trainer.train_step(step)
                        rollouts[name] = (metrics["train/response_length"], metrics["train/reward_mean"])
                    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
                    if name == "grpo":
                        lengths["grpo"].append(metrics["train/response_length"])
                        if step > WARMUP:
                            for key in splits:
                                splits[key].append(metrics[key])
                if step > WARMUP:
                    wall[name].append(seconds)
                    cpu[name].append(cpu_seconds)
            unequal_rollouts += sum(rollouts[name] != rollouts["grpo"] for name in methods)
    finally:
        if trl is not None:
            trl.close()
    load_after = os.getloadavg()

    cfg = variants["grpo"].config
    med = statistics.median

    def row(label: str, name: str, numerator: str, denominator: str, target: str) -> str:
        ratio, low, high = ratio_with_spread(wall[numerator], wall[denominator], args.blocks)
        cpu_ratio, cpu_low, cpu_high = ratio_with_spread(cpu[numerator], cpu[denominator], args.blocks)
        return (f"{label:<16} {med(wall[name]):.4f} s  cpu {med(cpu[name]):.4f} s   {target}: wall {ratio:.3f} "
                f"[{low:.3f}, {high:.3f}], cpu {cpu_ratio:.3f} [{cpu_low:.3f}, {cpu_high:.3f}]")

    print(f"config: {path.name}{' (on-policy)' if args.on_policy or args.trl else ''}: {cfg.rollout.prompts_per_step} "
          f"prompts x {cfg.rollout.group_size} samples, {cfg.rollout.max_new_tokens} new tokens, {cfg.train.ppo_epochs} "
          f"epoch(s) x {cfg.train.mini_batches} mini-batch(es); {args.steps} measured steps each, {torch.get_num_threads()} "
          f"torch thread(s); load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores")
    print(f"medians of wall-clock and CPU seconds per step; ratios: the steps cut into {args.blocks} blocks of "
          f"{args.steps // args.blocks}, median / median in each, the median over the blocks [lowest, highest]")
    print(f"GRPO step        {med(wall['grpo']):.4f} s  (rollout {med(splits['time/rollout']):.4f}, train "
          f"{med(splits['time/train']):.4f}, other {med(splits['time/other']):.4f})   cpu {med(cpu['grpo']):.4f} s; "
          f"mean response {statistics.fmean(lengths['grpo']):.2f} tokens")
    print(row("bare loop", "bare", "grpo", "bare", "GRPO / bare (target <= 1.05)"))
    if trl is not None:
        print(row("TRL GRPOTrainer", "trl", "grpo", "trl", "GRPO / TRL (target <= 0.8)")
              + f"; TRL's mean response {statistics.fmean(lengths['trl']):.2f} tokens")
    if methods:
        print(f"methods' rollouts equal to GRPO's: {'yes' if not unequal_rollouts else f'NO, {unequal_rollouts} differ'}")
    for method in methods:
        print(row(method, method, method, "grpo", "/ GRPO (target <= 1.05)"))

if __name__ == "__main__":
    main()
