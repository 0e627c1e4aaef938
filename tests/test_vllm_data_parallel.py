"""vLLM on several processes (marker ``vllm``): 2 gloo processes under ``accelerate launch``, each with its own
colocated engine through vLLM's external launcher (as TRL's colocate mode), train 2 GRPO steps on their own
prompt shards; the ranks end with the same weights and each rank's sampler agrees with its trainer."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_two_processes_each_with_a_colocated_vllm_engine(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", "0", str(REPO / "tests" / "_vllm_dp_run.py"), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert {r["backend"] for r in ranks} == {"external_launcher"}
    assert ranks[0]["prompts"][0] != ranks[1]["prompts"][0]             # each rank samples its own shard
    for name, weight in ranks[0]["weights"].items():                     # one model after the all-reduced updates
        torch.testing.assert_close(ranks[1]["weights"][name], weight, rtol=0, atol=0, msg=name)
    for rank in ranks:
        for metrics in rank["metrics"]:
            assert metrics["train/rollout_logprob_diff"] < 1e-4          # each engine samples its rank's current policy
