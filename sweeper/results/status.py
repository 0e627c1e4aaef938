"""``sweeper status``: a table of a study's trials read from its storage.

One row per trial: number, state, the objective of a complete trial with its standard error, the last
value a pruned trial reported (its own column: a value at an early step is not an objective), the step,
the reason (prune reason, failure, ``lost``) and the sampled parameters. Rows are ranked: complete trials
by their objective (best first), then pruned trials by their last value, then the others by number.
Every value carries its standard error and what it rests on (prompts, seeds). Trials rejected before
launch (a constraint or the run config refused the sampled values) are counted but listed only with
``show_rejected``.
"""

from __future__ import annotations

import math
from typing import Any

from sweeper.contract import (ATTR_FAIL_REASON, ATTR_LAST_STEP, ATTR_PRUNE_REASON, ATTR_PRUNED_AT_STEP, ATTR_REJECTED,
                       ATTR_REQUEUED_FROM, objective_estimate, trial_state)
from sweeper.redaction import redact_url
from sweeper.study.spec import StudySpec


def trial_rows(spec: StudySpec, study: Any, *, show_rejected: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    counts: dict[str, int] = {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        state = trial_state(t)
        if state == "REJECTED":
            reason = attrs[ATTR_REJECTED]
        elif state == "LOST":
            reason = attrs.get(ATTR_FAIL_REASON, "lost")
        else:
            reason = attrs.get(ATTR_PRUNE_REASON) or attrs.get(ATTR_FAIL_REASON) or ""
            if attrs.get(ATTR_REQUEUED_FROM) is not None:
                reason = (reason + " " if reason else "") + f"(re-queued from {attrs[ATTR_REQUEUED_FROM]})"
        counts[state] = counts.get(state, 0) + 1
        if state == "REJECTED" and not show_rejected:
            continue
        estimates = [objective_estimate(t, i) for i in range(len(t.values))] if t.values else []
        rows.append({
            "number": t.number,
            "state": state,
            "objective": estimates if state == "COMPLETE" else None,
            "last_value": estimates if state == "PRUNED" else None,
            "step": attrs.get(ATTR_PRUNED_AT_STEP) if state == "PRUNED" else attrs.get(ATTR_LAST_STEP, t.last_step),
            "reason": reason,
            "params": dict(t.params),
        })
    sign = -1.0 if spec.directions[0] == "maximize" else 1.0
    rank = {"COMPLETE": 0, "PRUNED": 1}

    def key(row: dict[str, Any]) -> tuple:
        shown = row["objective"] or row["last_value"]
        value = shown[0].value if shown and shown[0] is not None else math.inf
        return (rank.get(row["state"], 2), sign * value if row["state"] in rank else 0.0, row["number"])

    return sorted(rows, key=key), counts


def _estimates_text(estimates: list[Any] | None) -> str:
    if not estimates:
        return "-"
    return " / ".join(_estimate_text(e) for e in estimates)


def _estimate_text(estimate: Any) -> str:
    if estimate is None:
        return "-"
    se = f" ± {estimate.se:.2g}" if math.isfinite(estimate.se) else ""
    return f"{estimate.value:.4g}{se}"


def format_table(spec: StudySpec, rows: list[dict[str, Any]], counts: dict[str, int], best: Any | None) -> str:
    metrics = [o.metric for o in spec.objective]
    head = [f"study {spec.study.name}  ({redact_url(spec.study.storage)})"]
    head.append("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) if counts else "trials: none yet")
    if best is not None:
        head.append(f"best: trial {best[0]}  " + ", ".join(f"{m} = {e.text()}" for m, e in zip(metrics, best[1])))
    if not rows:
        return "\n".join(head)
    shown = " / ".join(m.split("/", 1)[-1] for m in metrics)
    table = [["#", "state", f"{shown} ± SE", "pruned at (± SE)", "step", "reason", "params"]]
    for row in rows:
        params = "  ".join(f"{_short_name(k)}={_num(v)}" for k, v in row["params"].items())
        reason = row["reason"] if len(row["reason"]) <= 48 else row["reason"][:45] + "..."
        table.append([str(row["number"]), row["state"], _estimates_text(row["objective"]), _estimates_text(row["last_value"]),
                      "" if row["step"] is None else str(row["step"]), reason, params])
    widths = [max(len(r[i]) for r in table) for i in range(6)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 6 else cell for i, cell in enumerate(r)).rstrip() for r in table]
    prompts, seeds = _units(rows)
    footer = []
    if prompts:
        over_seeds = f", combined with the spread over the {seeds} seeds a complete trial ran" if seeds else ""
        footer.append(f"± one standard error over the {prompts}{over_seeds}.")
    return "\n".join(head + [""] + lines + footer)


def _units(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """('128 validation prompts', '3') : what the shown standard errors are over ('' where unknown or one seed)."""
    prompts = {e.prompts for row in rows for e in (row["objective"] or row["last_value"] or []) if e is not None and e.prompts}
    seeds = {e.seeds for row in rows for e in (row["objective"] or []) if e is not None} - {1}
    return (f"{'/'.join(map(str, sorted(prompts)))} validation prompts" if prompts else "",
            "/".join(map(str, sorted(seeds))))


def _short_name(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else path


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def study_status(spec: StudySpec, *, show_rejected: bool = False) -> str:
    from sweeper.run.storage import open_study

    study, _ = open_study(spec, create=False)
    rows, counts = trial_rows(spec, study, show_rejected=show_rejected)
    best = None
    if not spec.is_multi_objective:
        try:
            best = (study.best_trial.number, [objective_estimate(study.best_trial)])
        except ValueError:
            best = None
    return format_table(spec, rows, counts, best)
