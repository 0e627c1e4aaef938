"""The study report: plots (PNG) and a short markdown summary of an Optuna study.

One renderer for two places: :meth:`sweeper.tracking.StudyTracker.refresh` logs its output on the
study's parent run in MLflow, and ``sweeper report study.yaml -o DIR`` writes it to a folder
(:func:`sweeper.tracking.write_study_report` adds the metric histories read from MLflow).

Files written by :func:`write_report`::

    summary.md                      best value and params, counts by state, a table of trials
    best_params.json                {"trial": n, "value": v, "params": {...}} (single objective)
    plots/optimization_history.png  objective per trial and the best so far
    plots/param_importances.png     fANOVA importances (needs >= 2 complete trials and a varying param)
    plots/parallel_coordinates.png  params vs objective
    plots/intermediate_values.png   the values each trial reported for pruning
    plots/pareto_front.png          multi-objective studies only
    plots/entropy_overlay.png       train/entropy per step, one line per trial, coloured by state
    plots/pass_at_k_overlay.png     val/pass@k per step, one line per trial, coloured by state

A plot that cannot be drawn (too few trials, nothing reported yet) is skipped and listed in the
summary with the reason. Pure rendering: no MLflow, no torch; matplotlib runs on the Agg backend.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # a login node has no display; the report only writes files

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sweeper.contract import ATTR_PRUNE_REASON, STATES, count_states, objective_estimate, trial_state  # noqa: E402

STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "REJECTED": "#9467bd", "LOST": "#8c564b",
                "RUNNING": "#7f7f7f", "WAITING": "#bcbd22"}
ENTROPY_METRIC = "train/entropy"
MAX_LABELLED_LINES = 12

# history of one trial: {metric name: [(step, value), ...]}
Histories = Mapping[int, Mapping[str, Sequence[tuple[int, float]]]]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial of a single-objective study, or None (no complete trial / multi-objective)."""
    if len(study.directions) != 1:
        return None
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    return study.best_trial


def varying_params(study: optuna.Study) -> list[str]:
    """Params present in every complete trial that take more than one value (what importances can rank)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return []
    common = set(complete[0].params).intersection(*(t.params for t in complete[1:]))
    return sorted(name for name in common if len({repr(t.params[name]) for t in complete}) > 1)


def _save(axes, path: Path) -> None:
    figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def _pass_metric(histories: Histories, objective_metric: str | None) -> str | None:
    names = {name for series in histories.values() for name in series if name.startswith("val/pass@")}
    if objective_metric in names:
        return objective_metric
    ks = [(int(m.group(1)), name) for name in names if (m := re.fullmatch(r"val/pass@(\d+)", name))]
    return max(ks)[1] if ks else None


def plot_overlay(study: optuna.Study, histories: Histories, metric: str, path: Path,
                 run_names: Mapping[int, str] | None = None) -> bool:
    """One line per trial of ``metric`` against the step, coloured by the trial's state; the best is thick."""
    states = {t.number: trial_state(t) for t in study.get_trials(deepcopy=False)}
    best = best_trial(study)
    figure, ax = plt.subplots(figsize=(8.5, 4.8))
    drawn, ends = 0, []
    for number, series in sorted(histories.items()):
        points = series.get(metric) or []
        if not points:
            continue
        steps, values = zip(*points)
        state = states.get(number, "RUNNING")
        is_best = best is not None and number == best.number
        ax.plot(steps, values, color=STATE_COLORS.get(state, "#333333"), lw=2.8 if is_best else 1.2,
                alpha=1.0 if is_best else 0.75, marker="o" if len(points) <= 25 else None, markersize=3,
                zorder=3 if is_best else 2)
        ends.append(((run_names or {}).get(number, f"#{number}"), steps[-1], values[-1], STATE_COLORS.get(state, "#333333")))
        drawn += 1
    if not drawn:
        plt.close(figure)
        return False
    if drawn <= MAX_LABELLED_LINES:  # beyond that, names at the line ends are clutter
        for name, x, y, color in ends:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 0), textcoords="offset points", color=color)
    present = sorted({states.get(n, "RUNNING") for n, s in histories.items() if s.get(metric)}, key=STATES.index)
    handles = [Line2D([], [], color=STATE_COLORS[s], lw=1.5, label=s) for s in present]
    if best is not None and histories.get(best.number, {}).get(metric):
        handles.append(Line2D([], [], color=STATE_COLORS["COMPLETE"], lw=2.8, label=f"best (#{best.number})"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial — study {study.study_name}")
    ax.grid(alpha=0.3)
    _save(ax, path)
    return True


def write_plots(study: optuna.Study, plot_dir: str | Path, histories: Histories | None = None,
                objective_metric: str | None = None, run_names: Mapping[int, str] | None = None
                ) -> tuple[dict[str, Path], dict[str, str]]:
    """Write every plot that can be drawn; returns ({title: path}, {title: why skipped})."""
    # optuna's plots call plt.style.use("ggplot"); the context keeps that from leaking into the caller
    with plt.style.context("ggplot"):
        return _write_plots(study, plot_dir, histories, objective_metric, run_names)


def _write_plots(study, plot_dir, histories, objective_metric, run_names):
    from optuna.visualization import matplotlib as optuna_plots

    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    single = len(study.directions) == 1
    target_name = objective_metric or "objective"
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}

    def attempt(title: str, filename: str, draw: Callable[[], Any], why_not: str | None) -> None:
        if why_not:
            skipped[title] = why_not
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's matplotlib plots are "experimental"
                axes = draw()
            _save(axes, plot_dir / filename)
            written[title] = plot_dir / filename
        except Exception as error:  # noqa: BLE001 - one bad plot must not cost the others
            plt.close("all")
            skipped[title] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"

    no_complete = None if complete else "no complete trial yet"
    if single:
        attempt("optimization history", "optimization_history.png",
                lambda: optuna_plots.plot_optimization_history(study, target_name=target_name), no_complete)
        params = varying_params(study)
        attempt("parameter importances", "param_importances.png",
                lambda: optuna_plots.plot_param_importances(study, params=params, target_name=target_name),
                None if params else "needs >= 2 complete trials and a param they all have with different values")
        attempt("parallel coordinates", "parallel_coordinates.png",
                lambda: optuna_plots.plot_parallel_coordinate(study, target_name=target_name),
                no_complete if no_complete else (None if any(t.params for t in complete) else "no sampled params"))
    else:
        attempt("Pareto front", "pareto_front.png", lambda: optuna_plots.plot_pareto_front(study), no_complete)
    has_intermediate = any(t.intermediate_values for t in trials)
    attempt("intermediate values", "intermediate_values.png",
            lambda: optuna_plots.plot_intermediate_values(study),
            None if has_intermediate else "no trial has reported an intermediate value yet")

    histories = histories or {}
    for title, metric, filename in (
        ("entropy per trial", ENTROPY_METRIC, "entropy_overlay.png"),
        ("pass@k per trial", _pass_metric(histories, objective_metric), "pass_at_k_overlay.png"),
    ):
        if not histories:
            skipped[title] = "no metric histories (MLflow not read)"
        elif metric is None:
            skipped[title] = "no trial logged val/pass@k yet"
        else:
            try:
                if plot_overlay(study, histories, metric, plot_dir / filename, run_names):
                    written[f"{title} ({metric})"] = plot_dir / filename
                else:
                    skipped[title] = f"no trial logged {metric} yet"
            except Exception as error:  # noqa: BLE001
                plt.close("all")
                skipped[title] = f"{type(error).__name__}: {error}"
    return written, skipped


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _trial_value(trial: optuna.trial.FrozenTrial) -> str:
    """The objective(s) ± SE; for a pruned trial the value it last reported (Optuna's value of a pruned trial)."""
    if trial.values is None:
        return ""
    estimates = [objective_estimate(trial, i) for i in range(len(trial.values))]
    text = ", ".join(_format_value(e.value) + (f" ± {e.se:.2g}" if math.isfinite(e.se) else "") for e in estimates)
    return f"{text} (last reported)" if trial.state == optuna.trial.TrialState.PRUNED else text


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(study: optuna.Study, written: Mapping[str, Path], skipped: Mapping[str, str],
                     out_dir: Path, objective_metric: str | None = None,
                     run_names: Mapping[int, str] | None = None) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    directions = ", ".join(d.name.lower() for d in study.directions)
    lines = [f"# Study `{study.study_name}`", ""]
    lines.append(f"- Objective: {objective_metric or 'value'} ({directions})")
    by_state = ", ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s))
    lines.append(f"- Trials: {len(trials)}" + (f" — {by_state}" if by_state else ""))
    best = best_trial(study)
    lines.append("")
    if best is not None:
        name = (run_names or {}).get(best.number, f"trial-{best.number:04d}")
        lines += [f"## Best: trial {best.number} (`{name}`), value {objective_estimate(best).text()}", "",
                  "| param | value |", "|---|---|"]
        lines += [f"| `{_cell(k)}` | {_cell(_format_value(v))} |" for k, v in sorted(best.params.items())]
    elif len(study.directions) > 1 and any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        front = ", ".join(str(t.number) for t in study.best_trials)
        lines.append(f"## Pareto front: trials {front}")
    else:
        lines.append("## Best: no complete trial yet")
    lines += ["", "## Trials", "", "| # | run | state | value | prune reason | duration | params |", "|---|---|---|---|---|---|---|"]
    for trial in trials:
        duration = f"{trial.duration.total_seconds():.0f} s" if trial.duration is not None else ""
        params = ", ".join(f"{k}={_format_value(v)}" for k, v in sorted(trial.params.items()))
        reason = trial.user_attrs.get(ATTR_PRUNE_REASON, "")
        name = (run_names or {}).get(trial.number, f"trial-{trial.number:04d}")
        lines.append(f"| {trial.number} | {_cell(name)} | {trial_state(trial)} | {_trial_value(trial)} | {_cell(reason)} "
                     f"| {duration} | {_cell(params)} |")
    lines += ["", "## Plots", ""]
    for title, path in written.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(out_dir).as_posix()})", ""]
    if skipped:
        lines += ["Not drawn:", ""] + [f"- {title}: {why}" for title, why in skipped.items()] + [""]
    return "\n".join(lines)


def write_report(study: optuna.Study, out_dir: str | Path, histories: Histories | None = None,
                 objective_metric: str | None = None, run_names: Mapping[int, str] | None = None) -> Path:
    """Write ``summary.md``, ``best_params.json`` and ``plots/*.png`` to ``out_dir``; returns summary.md's path.

    ``histories``: {trial number: {metric: [(step, value), ...]}} for the entropy and pass@k overlays
    (metric names as the trainer reports them, e.g. ``val/pass@8``); None = no overlays.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = write_plots(study, out_dir / "plots", histories, objective_metric, run_names)
    best = best_trial(study)
    if best is not None:
        estimate = objective_estimate(best)
        (out_dir / "best_params.json").write_text(json.dumps(
            {"study": study.study_name, "trial": best.number, "value": best.value, "se": _finite_or_none(estimate.se),
             "prompts": estimate.prompts, "seeds": estimate.seeds, "params": best.params},
            indent=2, default=str) + "\n")
    summary = out_dir / "summary.md"
    summary.write_text(summary_markdown(study, written, skipped, out_dir, objective_metric, run_names))
    return summary
