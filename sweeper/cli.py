"""The ``sweeper`` command: validate | run | status | export | verify | ui | report | train.

    sweeper validate study.yaml                      check the spec, print the resolved space
    sweeper run study.yaml [--dry-run] [--n-trials N] [--max-parallel P]
    sweeper status study.yaml                        table of trials
    sweeper export study.yaml -o best.yaml [--steps N] [--format native|trl|verl]
    sweeper verify study.yaml [--seeds N] [--trial T] [--prompts P]   best vs baseline, fresh seeds, held-out prompts
    sweeper ui study.yaml [--port P]                 MLflow UI of the study on 127.0.0.1
    sweeper report study.yaml -o DIR                 plots and a markdown summary
    sweeper train run.yaml                           one training run (the trainer's own CLI)

Bad input (spec, run config, flags) exits with code 2 and one clear paragraph on stderr, no
traceback. Ctrl-C during ``run`` exits 130, SIGTERM 143 and SIGHUP 129 (all three stop the study the same
way: see ``--detach`` for what happens to running trials).
Each subcommand is one ``(name, add_arguments, handler)`` entry of :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad flags or input: printed as one paragraph, exit 2."""


# --------------------------------------------------------------------------- validate


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")


def _validate(args: argparse.Namespace) -> int:
    from sweeper.study.spec import describe_space, load_spec

    from sweeper.run.checks import check_launch

    spec = load_spec(args.study)
    check_launch(spec)
    print(f"study {spec.study.name}: spec is valid")
    for line in describe_spec(spec):
        print(f"  {line}")
    sampled = len(spec.space.sampled())
    print(f"space ({sampled} sampled, {len(spec.space.params) - sampled} fixed):")
    for line in describe_space(spec) or ["(empty: every trial runs the base config)"]:
        print(f"  {line}")
    return 0


def describe_spec(spec: Any) -> list[str]:
    o = spec.objective
    objective = "; ".join(f"{x.metric} ({x.direction}, {x.aggregation}{f' {x.last_n}' if x.aggregation == 'mean_last_n' else ''})" for x in o)
    sampler = spec.sampler.describe(max_parallel=spec.budget.max_parallel)
    p = spec.pruner
    pruner = p.describe()
    health = []
    if p.health.nan:
        health.append("nan")
    if p.health.collapse:
        c = p.health.collapse
        health.append(f"collapse < {c.fraction:g} x first for {c.patience} reports of {', '.join(c.metrics)}")
    if p.health.explosion:
        e = p.health.explosion
        health.append(f"explosion > {e.multiple:g} x first for {e.patience} reports of {', '.join(e.metrics)}")
    b = spec.budget
    budget = f"{b.n_trials or 'unbounded'} trials, {b.max_parallel} in parallel, timeout {f'{b.timeout:g} s' if b.timeout else 'none'}"
    steps = spec.trial_steps()
    budget += f", {steps} steps per trial" + (" (budget.steps)" if b.steps else " (base train.steps)")
    if b.seeds > 1:
        budget += f", {b.seeds} seeds per config (a trial's value is their mean ± SE over seeds and prompts)"
    executor = spec.executor.describe()
    t = spec.tracking
    from sweeper.redaction import redact_url  # a password in a database URL is not printed

    tracking = f"MLflow {redact_url(t.uri)}, experiment {t.experiment}" if t.enabled else "off"
    if t.enabled and t.artifact_location:
        tracking += f", artifacts {t.artifact_location}"
    return [
        f"folder    {spec.study_dir}",
        f"storage   {redact_url(spec.study.storage)}",
        f"objective {objective}",
        f"base      {spec.base_source or 'inline'} (valid run config)",
        f"sampler   {sampler}",
        f"pruner    {pruner}",
        f"health    {'; '.join(health) or 'off'}",
        f"budget    {budget}",
        f"executor  {executor}",
        f"tracking  {tracking}",
        f"enqueue   {len(spec.enqueue)} config(s) first" if spec.enqueue else "enqueue   none",
    ]


# --------------------------------------------------------------------------- run


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")
    p.add_argument("--dry-run", action="store_true", help="print a few sampled trial configs and the resources; run nothing")
    p.add_argument("--samples", type=int, default=3, help="configs shown by --dry-run (default 3)")
    p.add_argument("--n-trials", type=int, help="override budget.n_trials (counts trials already in storage)")
    p.add_argument("--max-parallel", type=int, help="override budget.max_parallel")
    p.add_argument("--timeout", help="override budget.timeout (seconds, or 30m, 2h)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per finished trial)")
    p.add_argument("--detach", action="store_true", help="on Ctrl-C, SIGTERM or SIGHUP leave running trials running (a re-run re-attaches); default: executor.on_interrupt (cancel and re-queue them)")


def _run(args: argparse.Namespace) -> int:
    from sweeper.study.spec import load_spec, parse_duration

    spec = load_spec(args.study)
    for flag, value in (("--n-trials", args.n_trials), ("--max-parallel", args.max_parallel), ("--samples", args.samples)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    try:
        timeout = parse_duration(args.timeout) if args.timeout else None
    except ValueError as error:
        raise UsageError(f"--timeout: {error}") from None
    if args.dry_run:
        from sweeper.run.checks import check_launch

        check_launch(spec)
        return _dry_run(spec, args.samples)

    from sweeper.run.driver import run_study

    try:
        report = run_study(
            spec, n_trials=args.n_trials, max_parallel=args.max_parallel, timeout=timeout,
            progress=False if args.no_progress else None, on_interrupt="detach" if args.detach else None,
        )
    except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM / SIGHUP (sweeper.run.interrupts.Interrupted)
        return _interrupted(interruption)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(report.counts.items()))
    print(f"study {report.study_name}: {counts}")
    if report.best_trial is not None:
        print(f"best: trial {report.best_trial}, {spec.objective[0].metric} = {report.best_value:.4g}, params {report.best_params}")
    print(f"folder: {report.study_dir}")
    print(f"next: sweeper status {args.study}   |   sweeper export {args.study} -o best.yaml")
    return 0


def _interrupted(interruption: KeyboardInterrupt) -> int:
    """Exit 130 for Ctrl-C, 128 + the signal for SIGTERM (143) and SIGHUP (129), as a shell reports them."""
    signum = getattr(interruption, "signum", None)
    print(f"interrupted{f' by {interruption}' if signum else ''}", file=sys.stderr)
    return 128 + signum if signum else EXIT_INTERRUPTED


def _dry_run(spec: Any, samples: int) -> int:
    print(f"study {spec.study.name}: dry run, {samples} sampled config(s); nothing is launched, storage untouched")
    for line in describe_spec(spec):
        print(f"  {line}")
    for entry in dry_run(spec, samples):
        print(f"\ntrial {entry['number']}: sampled {entry['sampled'] or '{}'}")
        if entry["skipped"]:
            print(f"  not sampled (condition false): {', '.join(entry['skipped'])}")
        if entry["rejected"]:
            print(f"  REJECTED before launch: {entry['rejected']} (the driver would ask for another)")
            continue
        print("  config differs from base at:")
        for path, value in entry["changed"].items():
            print(f"    {path}: {value!r}")
    return 0


def dry_run(spec: Any, n: int = 3) -> list[dict[str, Any]]:
    """Sample ``n`` trial configs with the spec's sampler on an in-memory study (storage untouched).
    Returns [{"number", "sampled", "changed" (path -> value vs base), "rejected"}]."""
    import optuna

    from sweeper.contract import RUN_DIR, trial_folder
    from sweeper.study.space import Rejected, leaves
    from sweeper.study.spec import build_sampler_of, resolve, sample

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=spec.directions, sampler=build_sampler_of(spec))
    for params in spec.enqueue:
        study.enqueue_trial(dict(params))
    base = leaves(spec.base)
    out = []
    for _ in range(n):
        trial = study.ask()
        sampled = sample(spec, trial)
        entry: dict[str, Any] = {"number": trial.number, "sampled": sampled.sampled, "skipped": sampled.skipped}
        try:
            config = resolve(spec, sampled, output_dir=str(trial_folder(spec.study_dir, trial.number) / RUN_DIR))
            entry["changed"] = {path: value for path, value in leaves(config).items() if base.get(path) != value}
            entry["rejected"] = None
        except Rejected as rejection:
            entry["changed"] = {}
            entry["rejected"] = str(rejection)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out.append(entry)
    return out


# --------------------------------------------------------------------------- status / export / train


def _add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")
    p.add_argument("--all", action="store_true", help="also list trials rejected before launch")
    p.add_argument("--delta", type=float, help="rule out configs shown more than DELTA worse than the best (the smallest "
                   "gain worth finding, in the objective's units; default: the pruner's delta)")


def _status(args: argparse.Namespace) -> int:
    from sweeper.study.spec import load_spec
    from sweeper.results.status import study_status

    print(study_status(load_spec(args.study), show_rejected=args.all, delta=args.delta))
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")
    p.add_argument("-o", "--output", required=True, help="where to write the config (YAML)")
    p.add_argument("--steps", type=int, help="override train.steps (e.g. a long run of the best config)")
    p.add_argument("--format", default="native", choices=["native", "trl", "verl"],
                   help="native: a run config for `sweeper train`; trl / verl: the same knobs under their names")
    p.add_argument("--trial", type=int, help="export this trial instead of the best one")
    p.add_argument("--pareto-index", type=int, help="multi-objective: the I-th trial of the Pareto front (sorted by the first objective)")
    p.add_argument("--prefer", help="multi-objective: the Pareto-front trial best on this objective metric")
    p.add_argument("--output-dir", help="train.output_dir of the exported config (default runs/<study>-trial<N>)")
    p.add_argument("--target-version", help="trl / verl: the library version the file is for (default: the one installed "
                   "here, else the tested one); outside the supported range the export warns")
    p.add_argument("--delta", type=float, help="list the configs not ruled out within DELTA of the best (the smallest gain "
                   "worth finding, in the objective's units; default: the pruner's delta)")


def _export(args: argparse.Namespace) -> int:
    import warnings

    from sweeper.results.export import export_trial

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = export_trial(args.study, args.output, steps=args.steps, fmt=args.format, trial=args.trial,
                                pareto_index=args.pareto_index, prefer=args.prefer, output_dir=args.output_dir,
                                target_version=args.target_version, delta=args.delta)
    path = exported.path
    print(f"wrote {path} (trial {exported.trial})" + (f"; run it with: sweeper train {path}" if args.format == "native" else ""))
    if args.format != "native":   # every difference from the trial, as written in the file's comments
        differences = [line[2:] for line in path.read_text().splitlines() if line.startswith("# differs:")]
        print("\n".join(differences) if differences else "no semantic difference from the trial noted")
    if args.format == "trl":
        from sweeper.results.launchers import trl_companions

        run_config, script = trl_companions(path)
        print(f"wrote {run_config} and {script}; run it with: bash {script}")
    if exported.gain is not None:
        print(f"gain over the baseline (trial {exported.baseline}): {exported.gain.text()}")
        if exported.gain.selected:
            print(f"note: selection-biased; confirm on held-out prompts with fresh seeds: sweeper verify {args.study} --seeds 5 --prompts 512",
                  file=sys.stderr)
        elif not exported.gain.difference.significant:
            print(f"warning: the gain is not significant; before a full run: sweeper verify {args.study} --seeds 5 --prompts 512",
                  file=sys.stderr)
    for line in exported.contenders:
        print(line)
    for warning in caught:
        if "not significant" not in str(warning.message):
            print(f"warning: {warning.message}", file=sys.stderr)
    return 0


def _train(argv: list[str]) -> int:
    """``sweeper train`` is the trainer's own CLI: this process becomes ``python -m trainers ARGS`` (the
    sweeper itself never imports the trainer, only the trial process does)."""
    import os

    os.execv(sys.executable, [sys.executable, "-m", "trainers", *argv])
    return EXIT_USAGE  # not reached


# --------------------------------------------------------------------------- ui / report (MLflow, issue 5)


def _add_ui(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")
    p.add_argument("--port", type=int, default=5000, help="port of the MLflow UI on 127.0.0.1 (default 5000)")
    p.add_argument("--basic-auth", action="store_true",
                   help="MLflow's basic auth (users and passwords; needs pip install 'mlflow[auth]'): on a shared "
                        "node every local user can reach 127.0.0.1 (docs/threats.md)")


def _ui(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sweeper.study.spec import load_spec
    from sweeper.results.ui import cmd_ui

    spec = load_spec(args.study)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if not spec.tracking.enabled:
        raise UsageError(f"{args.study}: tracking.enabled is false, so this study has no MLflow store to show")
    return cmd_ui(spec.tracking.uri, spec.tracking.experiment, port=args.port,
                  log_path=Path(spec.study.dir) / "mlflow-ui.log", app_name="basic-auth" if args.basic_auth else None)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")
    p.add_argument("-o", "--output", required=True, help="folder for summary.md, best_params.json and plots/")


def _report(args: argparse.Namespace) -> int:
    from sweeper.study.spec import load_spec
    from sweeper.run.storage import open_study
    from sweeper.tracking.study import write_study_report

    spec = load_spec(args.study)
    study, _ = open_study(spec, create=False)
    uri = spec.tracking.uri if spec.tracking.enabled else None
    summary = write_study_report(study, args.output, uri, spec.tracking.experiment, objective_metric=spec.objective[0].metric)
    print(f"wrote {summary} (plots in {summary.parent / 'plots'})")
    return 0


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML")
    p.add_argument("--seeds", type=int, default=3, help="fresh training seeds per config (default 3)")
    p.add_argument("--trial", type=int, help="verify this trial instead of the best one")
    p.add_argument("--prompts", type=int, help="held-out validation prompts, after the study's own (default: the "
                   "study's eval.num_prompts); the gain over new prompts narrows with more")
    p.add_argument("--max-parallel", type=int, help="trials in flight (default: budget.max_parallel, at most 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _verify(args: argparse.Namespace) -> int:
    from sweeper.study.spec import load_spec
    from sweeper.results.verify import verify

    spec = load_spec(args.study)
    if args.max_parallel is not None and args.max_parallel <= 0:
        raise UsageError(f"--max-parallel must be a positive integer, got {args.max_parallel}")
    try:
        result = verify(spec, args.seeds, trial=args.trial, prompts=args.prompts, max_parallel=args.max_parallel,
                        progress=False if args.no_progress else None)
    except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM / SIGHUP (sweeper.run.interrupts.Interrupted)
        return _interrupted(interruption)
    print("\n".join(result.lines(spec.objective[0].metric)))
    return 0


Handler = Callable[[argparse.Namespace], int]
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = [
    ("validate", "check a study spec and print the resolved space", _add_validate, _validate),
    ("run", "run or resume a study (--dry-run: show sampled configs)", _add_run, _run),
    ("status", "table of a study's trials", _add_status, _status),
    ("export", "write the best trial's training config", _add_export, _export),
    ("verify", "rerun the best config and the baseline with fresh seeds: their paired gain", _add_verify, _verify),
    ("ui", "serve the study's MLflow runs on 127.0.0.1 and print their URL", _add_ui, _ui),
    ("report", "write the study's plots and a markdown summary to a folder", _add_report, _report),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description="Declarative sweeps of entropy hyperparameters for GRPO training.")
    sub = parser.add_subparsers(dest="command", metavar="{validate,run,status,export,verify,ui,report,train}")
    for name, help_text, add_arguments, handler in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    sub.add_parser("train", help="run one training config (same as python -m trainers)", add_help=False)
    return parser




def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _train(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad flags
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from trainers.config import ConfigError

    from sweeper.study.spec import SpecError

    try:
        return args.handler(args)
    except (SpecError, ConfigError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `sweeper status study.yaml | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
