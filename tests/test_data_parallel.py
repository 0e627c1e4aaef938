"""Data parallel = one process: the same global batch trained on 2 gloo processes and on 1 process gives
the same losses, gradients, updated weights and entropy-method state (anchors, coefficients, thresholds,
Clip-Cov's random choices) for plain GRPO and every method; a run preempted and resumed on 2 processes
ends where an uninterrupted one does; the learning-rate schedule advances once per step on 2 processes.

Both launches run every method in turn (tests/_dp_run.py: 4 steps, 2 epochs of one mini-batch of 4
prompts x 4 responses, micro-batches of 2 prompts, cosine schedule with 2 warmup steps). The rollouts are
replayed from the initial policy with fixed padding (see _dp_run.py), so most methods agree bit for bit;
the float64 all-reduced sums leave differences of ~1e-7 (SIREN, AER), which the tolerances allow.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _dp_run import METHODS, STEPS, STOP_AFTER, run_config

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# metrics that are statistics of the whole step batch (the same on any process count); the other train/*
# diagnostics (reward_std, per-bucket entropies, ...) are averages of per-process values
GLOBAL_METRICS = {
    "train/loss", "train/pg_loss", "train/grad_norm", "train/lr", "train/entropy", "train/kl_ref",
    "siren/anchor", "siren/target", "siren/old_selected_entropy", "siren/old_selected_fraction", "siren/old_nucleus_entropy",
    "aer/alpha", "aer/entropy", "aer/target", "aer/anchor",
    "steer/omega_abs_max_step",
    "forking_tokens/threshold", "forking_tokens/selected_fraction",
    "clip_cov/detached_fraction", "clip_cov/candidate_fraction", "kl_cov/penalized_fraction",
}


def launch(command, out: Path, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env_extra or {})}
    done = subprocess.run([*command, str(REPO / "tests" / "_dp_run.py"), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("data_parallel")
    (out / "w1").mkdir()
    (out / "w2").mkdir()
    launch([PYTHON], out / "w1")
    launch([PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"],
           out / "w2", {"ACCELERATE_USE_CPU": "true"})
    return out


def load(out: Path, world: int, method: str, variant: str, rank: int) -> dict:
    return torch.load(out / f"w{world}" / f"w{world}-{method}-{variant}-rank{rank}.pt", weights_only=False)


def assert_close_tree(got, expected, rtol, atol, where=""):
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in expected:
            assert_close_tree(got[key], expected[key], rtol, atol, f"{where}.{key}")
    elif isinstance(expected, (tuple, list)):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_close_tree(g, e, rtol, atol, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=where)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=rtol, abs=atol), where
    else:
        assert got == expected, where


def assert_same_run(got: dict, expected: dict, steps) -> None:
    """Weights, last gradients, method state and the global per-step metrics (logged by rank 0 only)
    agree to float tolerance."""
    assert got["step"] == expected["step"] == STEPS
    # atol 1e-5, about 1% of how far 4 Adam steps at lr 3e-4 move a weight: the methods with an entropy anchor
    # (SIREN, AER) sum entropies per shard in float32 before the float64 all-reduce, so their anchor and
    # coefficient differ from one process's in the 7th digit, and Adam's normalization lets that move weights
    # whose gradient is near 0 by up to ~3e-6 (measured on the shipped model); a wrong shard or reduction moves
    # them by ~1e-4 or more
    assert_close_tree(got["weights"], expected["weights"], rtol=1e-5, atol=1e-5, where="weights")
    scale = max(float(g.abs().max()) for g in expected["grads"].values())
    assert_close_tree(got["grads"], expected["grads"], rtol=1e-4, atol=1e-4 * scale, where="grads")
    assert_close_tree(got["state"], expected["state"], rtol=1e-5, atol=1e-7, where="state")
    for step in steps if got["metrics"] else ():
        keys = GLOBAL_METRICS & set(expected["metrics"][step])
        assert keys >= {"train/loss", "train/lr"}
        for key in keys:
            assert got["metrics"][step][key] == pytest.approx(expected["metrics"][step][key], rel=1e-4, abs=1e-7), \
                (step, key)


@pytest.mark.extended  # test_loss_aggregation (every process count) and test_trainer's two-process run cover it
@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_train_as_one_process_on_the_same_global_batch(runs, method):
    one = load(runs, 1, method, "straight", 0)
    ranks = [load(runs, 2, method, "straight", rank) for rank in (0, 1)]
    assert one["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    if method == "forking_tokens":   # each rank holds the mask of its shard; together they hold one process's
        assert sum(r["state"].pop("selected") for r in ranks) == one["state"].pop("selected")
    assert_same_run(ranks[0], one, steps=range(1, STEPS + 1))
    # every rank holds the same weights and the same method state (what a checkpoint saves from rank 0)
    assert_close_tree(ranks[1]["weights"], ranks[0]["weights"], rtol=0, atol=0, where="rank 1 weights")
    assert_close_tree(ranks[1]["state"], ranks[0]["state"], rtol=0, atol=0, where="rank 1 state")


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_preempted_and_resumed_end_where_an_uninterrupted_run_does(runs, method):
    straight = load(runs, 2, method, "straight", 0)
    for rank in (0, 1):
        resumed = load(runs, 2, method, "resumed", rank)
        assert bool(resumed["metrics"]) == (rank == 0)
        if method == "forking_tokens":
            assert resumed["state"].pop("selected") == load(runs, 2, method, "straight", rank)["state"]["selected"]
            straight["state"].pop("selected", None)
        assert_same_run(resumed, straight, steps=range(STOP_AFTER + 1, STEPS + 1))


@pytest.mark.slow
def test_learning_rate_schedule_advances_once_per_step_on_two_processes(runs):
    """Warmup reaches the peak at the configured step and cosine ends at its floor, as on one process
    (accelerate's prepared scheduler used to step once per process per call: twice as fast on 2)."""
    optim = run_config("none", Path("unused"))["optim"]
    lr, warmup, floor = optim["lr"], optim["warmup_steps"], optim["min_lr_ratio"]
    progress = [(step - 1 - warmup) / (STEPS - warmup) for step in range(warmup + 1, STEPS + 1)]
    expected = [lr * (step / warmup) for step in range(1, warmup + 1)] + \
               [lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))) for p in progress]
    assert expected[warmup - 1] == lr                    # the peak at step warmup_steps
    for method in ("none", "siren"):
        for world in (1, 2):
            run = load(runs, world, method, "straight", 0)
            assert [run["metrics"][step]["train/lr"] for step in range(1, STEPS + 1)] == pytest.approx(expected)
            assert run["last_lr"] == pytest.approx(lr * floor)   # after the last step: the cosine's floor
