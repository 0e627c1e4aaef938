"""The files beside a TRL export that start the trial's method: the run config and an ``accelerate launch`` script.

``sweeper export --format trl -o best.trl.yaml`` writes ``best.trl.yaml`` (``GRPOConfig`` arguments) and, here,
``best.trl.run.yaml`` (the trial's run config: its entropy method, data and reward) and ``best.trl.launch.sh``,
which runs ``accelerate launch -m trainers.engines.trl best.trl.run.yaml best.trl.yaml``: TRL's ``GRPOTrainer``
with this project's loss and method (``trainers.engines.trl.EntropyGRPOTrainer``). ``ACCELERATE_ARGS`` passes
accelerate's own options (``--config_file`` for DeepSpeed ZeRO-3 or FSDP, ``--num_processes``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

TRL_ENTRY_POINT = "trainers.engines.trl"


def trl_companions(output: Path) -> tuple[Path, Path]:
    """(run config, launch script) paths beside the TRL file ``output``."""
    stem = output.name[:-len(".yaml")] if output.name.endswith(".yaml") else output.name
    return output.with_name(f"{stem}.run.yaml"), output.with_name(f"{stem}.launch.sh")


def launch_command(output: Path) -> str:
    run_config, _ = trl_companions(output)
    return (f"accelerate launch ${{ACCELERATE_ARGS:-}} -m {TRL_ENTRY_POINT} {shlex.quote(run_config.name)} "
            f"{shlex.quote(output.name)}")


def write_trl_launcher(output: Path, validated: dict[str, Any], header: list[str]) -> list[Path]:
    """Write the run config and the launch script beside ``output``; returns their paths."""
    run_config, script = trl_companions(output)
    comments = "".join(f"# {line}\n" for line in header)
    run_config.write_text(comments + f"# the run config of the TRL launch {script.name} (entropy method, data, reward)\n"
                          + yaml.safe_dump(validated, sort_keys=False))
    script.write_text(
        "#!/usr/bin/env bash\n" + comments
        + f"# TRL GRPOTrainer with the trial's loss and entropy method ({TRL_ENTRY_POINT}.EntropyGRPOTrainer): needs this\n"
        "# package importable (pip install it, or PYTHONPATH=<checkout>) beside trl 1.16.x and accelerate.\n"
        "# ACCELERATE_ARGS: accelerate's options, e.g. \"--config_file zero3.yaml --num_processes 8\" (then divide\n"
        f"# per_device_train_batch_size in {output.name} by the number of processes).\n"
        "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n'
        f"exec {launch_command(output)} \"$@\"\n")
    script.chmod(0o755)
    return [run_config, script]
