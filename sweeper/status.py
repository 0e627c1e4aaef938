"""``sweeper status``: a table of a study's trials read from its storage.

One row per trial: number, state, objective value(s), last step, reason (prune reason, failure,
``lost``), and the sampled parameters. Trials rejected before launch (a constraint or the run
config refused the sampled values) are counted but listed only with ``show_rejected``.
"""

from __future__ import annotations

import math
from typing import Any

from .contract import (ATTR_FAIL_REASON, ATTR_LAST_STEP, ATTR_PRUNE_REASON, ATTR_PRUNED_AT_STEP, ATTR_REJECTED,
                       ATTR_REQUEUED_FROM, trial_state)
from .spec import StudySpec


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
        rows.append({
            "number": t.number,
            "state": state,
            "values": list(t.values) if t.values else None,
            "step": attrs.get(ATTR_PRUNED_AT_STEP) if state == "PRUNED" else attrs.get(ATTR_LAST_STEP, t.last_step),
            "reason": reason,
            "params": dict(t.params),
        })
    return rows, counts


def format_table(spec: StudySpec, rows: list[dict[str, Any]], counts: dict[str, int], best: tuple[int, list[float]] | None) -> str:
    metrics = [o.metric for o in spec.objective]
    head = [f"study {spec.study.name}  ({spec.study.storage})"]
    head.append("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) if counts else "trials: none yet")
    if best is not None:
        head.append(f"best: trial {best[0]}  " + ", ".join(f"{m} = {v:.4g}" for m, v in zip(metrics, best[1])))
    if not rows:
        return "\n".join(head)
    value_header = " / ".join(m.split("/", 1)[-1] for m in metrics)
    table = [["#", "state", value_header, "step", "reason", "params"]]
    for row in rows:
        values = " / ".join(_num(v) for v in row["values"]) if row["values"] else "-"
        params = "  ".join(f"{_short_name(k)}={_num(v)}" for k, v in row["params"].items())
        reason = row["reason"] if len(row["reason"]) <= 48 else row["reason"][:45] + "..."
        table.append([str(row["number"]), row["state"], values, "" if row["step"] is None else str(row["step"]), reason, params])
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(r)).rstrip() for r in table]
    return "\n".join(head + [""] + lines)


def _short_name(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else path


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def study_status(spec: StudySpec, *, show_rejected: bool = False) -> str:
    from .storage import open_study

    study, _ = open_study(spec, create=False)
    rows, counts = trial_rows(spec, study, show_rejected=show_rejected)
    best = None
    if not spec.is_multi_objective:
        try:
            best = (study.best_trial.number, [study.best_trial.value])
        except ValueError:
            best = None
    return format_table(spec, rows, counts, best)
