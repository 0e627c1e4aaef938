"""`python -m trainers run.yaml` / `accelerate launch -m trainers run.yaml`: one GRPO run from its YAML."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sweeper train", description="Run (or resume) one GRPO training run from its YAML config.")
    parser.add_argument("config", help="run config YAML (see README 'Run config')")
    parser.add_argument("--output-dir", help="override train.output_dir")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--quiet", action="store_true", help="no per-step console lines")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        updates = {}
        if args.output_dir:
            updates["output_dir"] = args.output_dir
        if args.steps:
            updates["steps"] = args.steps
        if updates:
            from .config import parse_config

            data = config.model_dump(mode="json")
            data["train"].update(updates)
            config = parse_config(data, args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from .config import launch_problems
    from .rewards import registered_rewards

    problems = launch_problems(config, registered_rewards())
    if problems:
        lines = "\n".join(f"  {field}: {problem}" for field, problem in problems)
        print(f"error: run config {args.config} cannot run:\n{lines}", file=sys.stderr)
        return 2

    from .grpo import train
    from .reporting import ConsoleReporter

    try:
        summary = train(config, [] if args.quiet else [ConsoleReporter()])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if summary["status"] == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
