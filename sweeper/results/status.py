"""``sweeper status``: a table of a study's trials read from its storage.

One row per trial: number, state, the objective of a complete trial with its standard error, the last
value a pruned trial reported (its own column: a value at an early step is not an objective), the step,
the reason (prune reason, failure, ``lost``) and the sampled parameters. Rows are ranked: complete trials
by their objective (best first), then pruned trials by their last value, then the others by number.
Every value carries its standard error and what it rests on (prompts, seeds). Trials rejected before
launch (a constraint or the run config refused the sampled values) are counted but listed only with
``show_rejected``.

A single-objective study also shows, per complete trial (:mod:`sweeper.results.standing`), its paired gain
over the best and over the baseline with the SE of that gain (paired over common seeds, run-to-run sd
pooled over replicated configs: prompt difficulty cancels, unlike in the objective's own ± SE), whether it
is still in the race (running, best, within ``delta`` of the best, or ruled out) and why a trial stopped
(the pruner's ``stop_reason`` when it records one, else the prune reason and step; "same config as #N"
for a config that reused an earlier result).
"""

from __future__ import annotations

import math
from typing import Any

from sweeper.contract import (ATTR_FAIL_REASON, ATTR_LAST_STEP, ATTR_PRUNE_REASON, ATTR_PRUNED_AT_STEP, ATTR_REJECTED,
                       ATTR_REQUEUED_FROM, objective_estimate, trial_state)
from sweeper.redaction import redact_url
from sweeper.study.spec import StudySpec


def trial_rows(spec: StudySpec, study: Any, *, show_rejected: bool = False,
               standings: dict[int, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    standings = standings or {}
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
            if t.number in standings and standings[t.number].why:
                reason = standings[t.number].why
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
            "over_best": standings[t.number].over_best if t.number in standings else None,
            "over_baseline": standings[t.number].over_baseline if t.number in standings else None,
            "race": standings[t.number].race if t.number in standings else "",
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
    return f"{estimate.value:.4g}{se}" + (f" ({estimate.seeds} seeds)" if estimate.seeds > 1 else "")


def _gain_text(gain: Any | None) -> str:
    if gain is None:
        return "-"
    d = gain.difference
    return f"{d.mean:+.3g}" + (f" ± {d.se:.2g}" if math.isfinite(d.se) else "")


def format_table(spec: StudySpec, rows: list[dict[str, Any]], counts: dict[str, int], best: Any | None,
                 race: list[str] | None = None) -> str:
    metrics = [o.metric for o in spec.objective]
    head = [f"study {spec.study.name}  ({redact_url(spec.study.storage)})"]
    head.append("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) if counts else "trials: none yet")
    if best is not None:
        head.append(f"best: trial {best[0]}  " + ", ".join(f"{m} = {e.text()}" for m, e in zip(metrics, best[1])))
    if not rows:
        return "\n".join(head)
    shown = " / ".join(m.split("/", 1)[-1] for m in metrics)
    gains = any(row.get("race") for row in rows)
    table = [["#", "state", f"{shown} ± SE", "pruned at (± SE)", "step"]
             + (["vs best ± SE", "vs baseline ± SE", "race"] if gains else []) + ["reason", "params"]]
    for row in rows:
        params = "  ".join(f"{_short_name(k)}={_num(v)}" for k, v in row["params"].items())
        reason = row["reason"] if len(row["reason"]) <= 72 else row["reason"][:69] + "..."
        extra = [_gain_text(row.get("over_best")), _gain_text(row.get("over_baseline")), row.get("race") or ""] if gains else []
        table.append([str(row["number"]), row["state"], _estimates_text(row["objective"]), _estimates_text(row["last_value"]),
                      "" if row["step"] is None else str(row["step"])] + extra + [reason, params])
    last = len(table[0]) - 1
    widths = [max(len(r[i]) for r in table) for i in range(last)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < last else cell for i, cell in enumerate(r)).rstrip() for r in table]
    prompts, seeds = _units(rows)
    shown = " / ".join(m.split("/", 1)[-1] for m in metrics)
    footer = []
    if prompts:
        over_seeds = (f"; over the training seeds for a value of {seeds} seeds (on these same prompts: their difficulty, "
                      f"common to every config, is left out)" if seeds else "")
        footer.append(f"{shown} ± SE: one standard error over the {prompts} for a value of one seed{over_seeds}. "
                      f"The gain columns' paired SE is what a comparison of two configs needs.")
    footer += race or []
    return "\n".join(head + [""] + lines + footer)


def _units(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """('128 validation prompts', '3') : what the shown standard errors are over ('' where unknown or one seed)."""
    prompts = {e.prompts for row in rows for e in (row["objective"] or row["last_value"] or []) if e is not None and e.prompts}
    seeds = {e.seeds for row in rows for e in (row["objective"] or row["last_value"] or []) if e is not None} - {1}
    return (f"{'/'.join(map(str, sorted(prompts)))} validation prompts" if prompts else "",
            "/".join(map(str, sorted(seeds))))


def _short_name(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else path


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def race_footer(pool: Any, delta: float | None, alpha: float) -> list[str]:
    """What the gain columns rest on, and the rule of the race column."""
    if pool.df:
        basis = (f"vs best / vs baseline: paired gain over their common training seeds ± its SE ({pool.basis}; "
                 f"prompt difficulty cancels in it).")
    else:
        basis = ("vs best / vs baseline: paired gain over the prompts of their common seed ± its SE (one seed each: "
                 "training randomness not included).")
    if delta is None:
        rule = "race: no delta (the pruner's delta or --delta), so no complete config is ruled out on its score."
    else:
        rule = (f"race: a complete config is ruled out when the {100 * (1 - alpha):.0f}% upper bound of its gain over the "
                f"best is below -delta {delta:g}; the others are in the race (within delta of the best).")
    return [basis, rule]


def study_status(spec: StudySpec, *, show_rejected: bool = False, delta: float | None = None) -> str:
    from sweeper.run.storage import open_study

    study, _ = open_study(spec, create=False)
    best = standings = None
    race: list[str] = []
    if not spec.is_multi_objective:
        from sweeper.results.standing import race_settings, study_standings

        try:
            best = (study.best_trial.number, [objective_estimate(study.best_trial)])
        except ValueError:
            best = None
        delta, alpha = race_settings(spec, delta)
        standings, _, _, pool = study_standings(spec, study, delta=delta, alpha=alpha)
        race = race_footer(pool, delta, alpha) if best is not None else []
    rows, counts = trial_rows(spec, study, show_rejected=show_rejected, standings=standings)
    return format_table(spec, rows, counts, best, race)
