"""A stand-in trial process for the tracking tests: drives a real TrialTracker the way the trainer does.

Usage: python tests/tracking_trial_stub.py '<json>' with keys uri, experiment, parent_run_id,
trial_number, config, sampled, job_id, log_paths, steps, eval_every, end ("completed" | "stopped" |
"failed"), stop_reason, entropy_start, pass_slope. The metrics are simple functions of the step so the
test can check every value it reads back from MLflow:

    train/entropy = entropy_start - 0.01 * step      train/reward_mean = 0.1 * step
    val/pass@8 = pass_slope * step                    val/pass@1 = pass_slope * step / 2

Prints ``RUN_ID <id>`` as soon as the run exists (the real trial process hands it to the driver the
same way, through Optuna user attrs) and ``VAL <json list of [step, pass@8]>`` at the end. With
end="failed" it crashes like a trainer would: a traceback on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.tracking import TrialTracker  # noqa: E402
from trainers.reporting import JsonlReporter, MultiReporter  # noqa: E402


def main(args: dict) -> int:
    tracker = TrialTracker(
        args["uri"], args["experiment"], args["parent_run_id"], args["trial_number"], args["config"],
        args["sampled"], args.get("job_id"), args.get("log_paths", {}),
    )
    print(f"RUN_ID {tracker.run_id}", flush=True)
    reporter = MultiReporter([tracker, JsonlReporter(Path(args["output_dir"]) / "metrics.jsonl")])
    reporter.on_start({"config": args["config"], "output_dir": args["output_dir"], "resumed_from_step": 0, "num_processes": 1})
    validations = []
    for step in range(1, args["steps"] + 1):
        reporter.on_train_step(step, {"train/entropy": args["entropy_start"] - 0.01 * step, "train/reward_mean": 0.1 * step})
        assert reporter.stop_reason() is None
        if step % args["eval_every"] == 0:
            value = args["pass_slope"] * step
            reporter.on_validation(step, {"val/pass@8": value, "val/pass@1": value / 2})
            validations.append([step, value])
        if args["end"] == "failed" and step == args["steps"] - 1:
            reporter.on_end({"status": "failed", "step": step, "stop_reason": None})
            print(f"VAL {json.dumps(validations)}", flush=True)
            raise RuntimeError("CUDA error: an illegal memory access was encountered (stand-in crash)")
    reporter.on_end({"status": args["end"], "step": args["steps"], "stop_reason": args.get("stop_reason")})
    print(f"VAL {json.dumps(validations)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
