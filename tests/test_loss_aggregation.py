"""Every ``loss_agg`` gives the same gradient for every micro-batch size and process count (verl 0.9.1's
``agg_loss`` with the mini-batch's global token and sequence counts).

One step of the same 16 replayed responses (tests/_agg_run.py) on 1 process and on 2 gloo processes, with
micro-batches of the whole per-process batch, 4 and 2 responses: the gradients agree with one process's
whole-batch gradient to float tolerance. The responses have different lengths, so the micro-batches hold
different token counts: the old ``token_mean`` (the mean of per-micro-batch token means) fails this test.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _agg_run import LOSS_AGGS, MICRO_SIZES

REPO = Path(__file__).resolve().parents[1]


def launch(command, out: Path, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env_extra or {})}
    done = subprocess.run([*command, str(REPO / "tests" / "_agg_run.py"), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("loss_aggregation")
    launch([sys.executable], out)
    launch([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"],
           out, {"ACCELERATE_USE_CPU": "true"})
    return out


def load(out: Path, world: int, loss_agg: str, micro, rank: int = 0) -> dict:
    return torch.load(out / f"w{world}-{loss_agg}-{micro}-rank{rank}.pt", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
def test_gradient_is_the_same_for_every_micro_batch_size_and_process_count(runs, loss_agg):
    reference = load(runs, 1, loss_agg, None)
    assert len(reference["micro_tokens"]) == 1
    scale = max(float(g.abs().max()) for g in reference["grads"].values())
    assert scale > 0
    for world in (1, 2):
        for micro in MICRO_SIZES:
            pieces = [count for rank in range(world) for count in load(runs, world, loss_agg, micro, rank)["micro_tokens"]]
            if len(pieces) > 1:   # the split is real: pieces (micro-batches, processes) of unequal token counts
                assert len(set(pieces)) > 1, (world, micro, pieces)
            for rank in range(world):
                run = load(runs, world, loss_agg, micro, rank)
                assert run["world"] == world
                for name, grad in reference["grads"].items():
                    torch.testing.assert_close(run["grads"][name], grad, rtol=1e-4, atol=1e-5 * scale,
                                               msg=f"{loss_agg} world {world} micro {micro} rank {rank}: {name}")
                if rank == 0:   # the logged losses are the mini-batch's
                    assert run["loss"] == pytest.approx(reference["loss"], rel=1e-5, abs=1e-7)
                    assert run["pg_loss"] == pytest.approx(reference["pg_loss"], rel=1e-5, abs=1e-7)
