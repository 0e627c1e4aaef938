"""The trial process of a Slurm job: :class:`CheckpointableTrial` (what the job runs) and the ranks > 0 of
a data-parallel trial (:func:`run_secondary_rank`)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from trainers.reporting import PREEMPTED

from sweeper.contract import CONFIG_FILE, TrialTicket
from sweeper.run.trial.process import load_entrypoint, read_replicates, replicate_configs, run_trial

DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def export_distributed_environment() -> tuple[int, int]:
    """In a Slurm job with several tasks: export RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR and a per-job MASTER_PORT (submitit's TorchDistributedEnvironment; values inherited
    from the submitting shell are dropped first, or two jobs on one node would share a port).
    Returns (rank, world size); (0, 1) for a single-task job, which exports nothing."""
    import submitit

    job_env = submitit.JobEnvironment()
    if job_env.num_tasks <= 1:
        return 0, 1
    for name in DISTRIBUTED_VARIABLES:
        os.environ.pop(name, None)
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return dist_env.rank, dist_env.world_size


def run_secondary_rank(trial_dir: str | Path) -> dict[str, Any]:
    """Rank > 0 of a data-parallel trial: the same trainer on the same config (each replicate seed the first
    rank has not finished yet), no reporters (the trainer reports from rank 0 only and broadcasts rank 0's
    stop reason, so every rank stops together, and goes on to the next seed together)."""
    from trainers.config import load_config

    trial_dir = Path(trial_dir)
    ticket = TrialTicket.read(trial_dir)
    config = load_config(trial_dir / CONFIG_FILE)
    train = load_entrypoint(ticket.entrypoint)
    done = len(read_replicates(trial_dir))
    runs = replicate_configs(config, ticket.seeds or [config.seed])
    rounds = ticket.race == "rounds" and not ticket.baseline   # rank 0 waits for its round after such a seed
    summary: dict[str, Any] = {}
    for index, (_seed, run_config) in enumerate(runs[done:], start=done + 1):
        summary = train(run_config, [])
        if summary.get("status") != "completed" or summary.get("stop_reason"):
            break
        if rounds and (ticket.seeds_min or len(runs)) <= index < len(runs):
            break
    return {"rank": int(os.environ.get("RANK", "0")), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "state": "PREEMPTED" if summary.get("stop_reason") == PREEMPTED else "DONE", "step": summary.get("step")}


class CheckpointableTrial:
    """The function a trial's Slurm job runs: ``CheckpointableTrial()(trial_dir)``.

    A submitit *checkpointable* callable (it has ``checkpoint``, which is what submitit looks for;
    see ``submitit.helpers.Checkpointable``). Rank 0 runs :func:`run_trial` in a worker thread, so that
    the main thread is free for signals. On the checkpoint signal (USR2: preemption, or
    ``signal_delay_s`` before the time limit) submitit calls :meth:`checkpoint` in the main thread: it
    sets the preemption flag, the trainer saves ``output_dir/checkpoint`` at the end of its current
    step and stops (all ranks together), and the method returns this callable for submitit to pickle
    and requeue. The requeued job calls it again on the same folder: the trainer resumes from the
    checkpoint, ``run_trial`` re-opens the same Optuna trial (still RUNNING: nobody told it) and the
    same MLflow run (its id is a user attr of the trial). If the trial ended meanwhile (completed,
    pruned, failed), ``checkpoint`` returns None and the job is not requeued.

    With several tasks (``nodes * tasks_per_node > 1``) every task exports the torch.distributed
    variables first; ranks > 0 run :func:`run_secondary_rank`.
    """

    def __init__(self, checkpoint_wait_s: float = 75.0):
        self.checkpoint_wait_s = float(checkpoint_wait_s)
        self.preemptions = 0
        self._runtime: dict[str, Any] | None = None  # this process only: worker thread, flag, result

    def __getstate__(self) -> dict[str, Any]:
        return {"checkpoint_wait_s": self.checkpoint_wait_s, "preemptions": self.preemptions}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime = None

    def __call__(self, trial_dir: str) -> dict[str, Any]:
        rank, world = export_distributed_environment()
        if rank != 0:
            return run_secondary_rank(trial_dir)
        runtime: dict[str, Any] = {"flag": threading.Event()}

        def work() -> None:
            try:
                runtime["result"] = run_trial(trial_dir, preemption=runtime["flag"])
            except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
                runtime["error"] = error

        runtime["thread"] = threading.Thread(target=work, name="trial", daemon=True)
        self._runtime = runtime
        runtime["thread"].start()
        while runtime["thread"].is_alive():
            runtime["thread"].join(0.5)  # the main thread wakes up for signals (submitit's checkpoint)
        if "error" in runtime:
            raise runtime["error"]
        return runtime["result"]

    def checkpoint(self, trial_dir: str) -> Any:
        """Called by submitit in the signal handler: stop the trainer with a checkpoint; then requeue
        (return a DelayedSubmission of this callable) unless the trial has ended by itself."""
        import submitit

        runtime = self._runtime
        if runtime is not None:
            runtime["flag"].set()
            print(f"[sweeper] checkpoint signal: saving a checkpoint of {trial_dir} (waiting up to {self.checkpoint_wait_s:.0f} s)", flush=True)
            runtime["thread"].join(self.checkpoint_wait_s)
            result = runtime.get("result")
            if not runtime["thread"].is_alive() and (result is None or result.state != "PREEMPTED"):
                return None  # it completed, was pruned or failed meanwhile: its outcome is written, no requeue
            if runtime["thread"].is_alive():
                print("[sweeper] the trainer did not stop in time: the requeued job resumes from its last checkpoint", flush=True)
        self.preemptions += 1
        return submitit.helpers.DelayedSubmission(self, trial_dir)  # pickled without its runtime
