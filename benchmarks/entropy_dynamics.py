"""Entropy, pass@1 and wide pass@k over training: plain GRPO and every entropy method, several seeds.

Every run is the default run (``examples/tiny_grpo.yaml``: the shipped tiny model on levels 1-2 of the
synthetic arithmetic task, 32 prompts x 8 samples per step, on-policy, validation on 256 prompts x 32
samples) with one change: the method and its knobs from ``RUNS`` below. Each run is repeated for every
training seed of ``--seeds``; the seed decides the training prompts and samples, so runs of the same seed
see the same first batch. Validation samples with ``eval.seed``, independent of the training seed, so
every validation of every run draws from the same random numbers on the same prompts: methods and seeds
are compared prompt by prompt (``per_prompt.jsonl``), and step 0 is the same for all runs.

Each run is a separate ``python -m trainers run.yaml`` process with ``OMP_NUM_THREADS=1``, at most
``--jobs`` at a time, writing ``--out/<run>/seed<s>/``. The script then reads the metrics back and writes

- ``docs/entropy_dynamics.png``: (a) train entropy (moving average), (b) validation entropy,
  (c) validation pass@1, (d) validation pass@k at the largest k: the mean over seeds with a band of one
  standard error over seeds; (e) pass@k against k at the last validation; (f) the trade-off: final
  pass@1 against final pass@k_max, one point per method with error bars (SE over seeds);
- ``docs/entropy_dynamics.md``: the table of final values (mean +- SE over seeds), each method against
  GRPO on the same prompts (paired differences with their standard errors), the issue's properties
  checked one by one, the command line and every run's hyperparameters.

Two standard errors are reported for a difference "method - GRPO" of a validation metric at the last step:

- over prompts: per prompt, the method's value averaged over seeds minus GRPO's averaged over seeds;
  the mean and its standard error over the P prompts (paired: same prompts, same sampling numbers);
- over seeds: per seed s, the method's metric minus GRPO's with the same seed; the mean and its
  standard error over the S seeds (captures training randomness, which the prompt SE does not).

A run directory whose saved config and model fingerprint (sha256 of the weights) match is reused
(complete) or resumed (interrupted); a mismatching one is deleted and rerun.

    python benchmarks/entropy_dynamics.py                                  # every run, 3 seeds, 2 at a time
    python benchmarks/entropy_dynamics.py --methods grpo,entropy_bonus --seeds 0 --steps 50 --out /tmp/ed
    python benchmarks/entropy_dynamics.py --from-existing                  # only re-plot and re-tabulate
    python benchmarks/entropy_dynamics.py --initial-stats                  # the numbers behind RUNS' choices
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainers.config import parse_config  # noqa: E402
from trainers.evaluation import pass_at_k, standard_error  # noqa: E402
from trainers.reporting import METRICS_FILE, PER_PROMPT_FILE, read_metrics, read_per_prompt  # noqa: E402

BASE_CONFIG = REPO / "examples" / "tiny_grpo.yaml"

# --------------------------------------------------------------------------- the runs
# run name -> (dotted-path overrides of the base run, why these values). RUNS_NOTE says how they were chosen.
RUNS: dict[str, tuple[dict[str, Any], str]] = {
    "grpo": ({"entropy.method": "none"}, "the default run unchanged (eps_low = eps_high = 0.2)"),
    "entropy_bonus": ({"entropy.method": "entropy_bonus", "entropy.bonus.coef": 0.15},
                      "coef 0.15: on a seed-9 screen (not a benchmark seed) 0.03 left validation entropy within 0.02 "
                      "of GRPO's at step 50, 0.15 kept it ~0.11 higher"),
    "aer": ({"entropy.method": "aer", "entropy.anchor.ratio": 0.8, "entropy.aer.alpha_init": 0.01,
             "entropy.aer.alpha_lr": 0.1, "entropy.aer.alpha_max": 0.1},
            "target 0.8 x the initial entropy (GRPO falls to ~0.5 x in 200 steps, so the target binds after ~50 steps); "
            "alpha_init 0.01, alpha_lr 0.1, alpha_max 0.1 (the bonus' scale on this model: see entropy_bonus); "
            "rho 0.5, threshold allocation"),
    "siren": ({"entropy.method": "siren", "entropy.siren.top_p": 0.95, "entropy.siren.coef": 0.3},
              "top_p 0.95 (a 0.8 nucleus is a single token at most positions of a 21-token model), coef 0.3 "
              "(the masked entropy is a fraction of the full one: twice the bonus' coefficient)"),
    "clip_higher": ({"entropy.method": "none", "clip.eps_high": 0.28},
                    "DAPO clip-higher 0.2/0.28; on-policy (one update per batch) the ratio is 1, so clipping never "
                    "acts and this row equals GRPO up to float noise"),
    "steer": ({"entropy.method": "steer"}, "release defaults (w_min 0.8, exp mapping)"),
    "forking_tokens": ({"entropy.method": "forking_tokens"}, "paper: PG on the top 20% entropy tokens of the step batch"),
    "clip_cov": ({"entropy.method": "clip_cov"}, "verl defaults (ratio 2e-4, cov in (1, 5))"),
    "kl_cov": ({"entropy.method": "kl_cov"}, "SIREN code defaults (ratio 2e-4, coef 1.0)"),
    "entropy_advantage": ({"entropy.method": "entropy_advantage"}, "paper: alpha 0.4, kappa 2"),
}
RUNS_NOTE = ("Knobs were picked before the benchmark seeds ran: the coefficients on an entropy from a one-seed screen "
             "(training seed 9) of plain GRPO and the entropy bonus at 0.03 and 0.15 to 50 steps; the other methods "
             "keep their papers' or releases' defaults. Nothing was tuned on seeds 0-2.")

LABELS = {
    "grpo": "GRPO (vanilla)", "clip_higher": "clip-higher (0.28)", "entropy_bonus": "entropy bonus",
    "siren": "SIREN", "aer": "AER (reconstr.)", "steer": "STEER", "forking_tokens": "forking tokens 80/20",
    "clip_cov": "Clip-Cov", "kl_cov": "KL-Cov", "entropy_advantage": "entropy advantage",
}

# Per-method diagnostics for the table: metric key -> short name (mean of the last FINAL_WINDOW steps).
DIAGNOSTICS = {
    "grpo": {"train/zero_variance_groups": "zero-var groups"},
    "clip_higher": {"train/clip_frac_high": "clip_frac_high"},
    "entropy_bonus": {"entropy_bonus/bonus": "bonus"},
    "siren": {"siren/target": "target", "siren/old_selected_entropy": "H_sel", "siren/old_selected_fraction": "selected"},
    "aer": {"aer/alpha": "alpha", "aer/target": "target", "aer/fraction_regularized": "regularized"},
    "steer": {"steer/weight_mean": "w_mean", "steer/weight_min": "w_min"},
    "forking_tokens": {"forking_tokens/selected_fraction": "selected"},
    "clip_cov": {"clip_cov/detached_fraction": "detached"},
    "kl_cov": {"kl_cov/penalized_fraction": "penalized"},
    "entropy_advantage": {"entropy_advantage/bonus_mean": "bonus", "entropy_advantage/cap_active_fraction": "capped"},
}

SMOOTH_WINDOW = 10   # steps in the trailing moving average of train entropy
FINAL_WINDOW = 10    # first / final train entropy = mean over the first / last this many steps


# --------------------------------------------------------------------------- configs


def set_dotted(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def run_config(base: dict[str, Any], name: str, seed: int, steps: int, out: Path) -> dict[str, Any]:
    """The full, validated run config of one run and seed, as a plain dict."""
    data = copy.deepcopy(base)
    for path, value in RUNS[name][0].items():
        set_dotted(data, path, value)
    set_dotted(data, "seed", seed)
    set_dotted(data, "train.steps", steps)
    set_dotted(data, "train.output_dir", str(run_dir(out, name, seed)))
    set_dotted(data, "train.checkpoint_every", 0)
    set_dotted(data, "eval.step0_cache", str(out / "step0_cache"))   # step 0 is the same model for every run
    return parse_config(data, f"run {name} seed {seed}").model_dump(mode="json")


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / name / f"seed{seed}"


def model_fingerprint(config: dict[str, Any]) -> str:
    """sha256 (first 16 hex) of the model's weight files: the shipped model can be rebuilt under a run."""
    from trainers.config import resolve_model_path

    folder = Path(resolve_model_path(config["model"]["path"]))
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        return "unknown"
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def is_complete(folder: Path, steps: int) -> bool:
    return any(r["step"] >= steps for r in read_metrics(folder / METRICS_FILE, "val")) if (folder / METRICS_FILE).exists() else False


# --------------------------------------------------------------------------- running


def same_run(folder: Path, config: dict[str, Any], model: str) -> bool:
    saved, saved_model = folder / "config.yaml", folder / "model.sha256"
    return saved.exists() and yaml.safe_load(saved.read_text()) == config and \
        saved_model.exists() and saved_model.read_text().strip() == model


def launch(label: str, config: dict[str, Any], folder: Path, model: str) -> subprocess.Popen:
    if folder.exists() and (folder / "config.yaml").exists() and not same_run(folder, config, model):
        print(f"[{label}] config or model changed: deleting {folder}", flush=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.sha256").write_text(model + "\n")
    (folder / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    log = (folder / "train.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "trainers", str(folder / "run.yaml")], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def run_all(configs: dict[tuple[str, int], dict], out: Path, steps: int, jobs: int, model: str,
            max_load: float | None = None) -> dict[tuple[str, int], str]:
    """Run every not yet complete (run, seed), up to ``jobs`` at a time; returns (run, seed) -> 'ok' | 'reused' |
    'failed (rc N)'. With ``max_load``, a run beyond the first starts only while the machine's 1-minute load
    average is below it (a shared machine)."""
    status: dict[tuple[str, int], str] = {}
    pending = []
    for key in configs:
        folder = run_dir(out, *key)
        if is_complete(folder, steps) and same_run(folder, configs[key], model):
            status[key] = "reused"
        else:
            pending.append(key)
    print(f"{len(status)} run(s) reused, {len(pending)} to run", flush=True)
    running: dict[tuple[str, int], tuple[subprocess.Popen, float]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            if running and max_load is not None and os.getloadavg()[0] >= max_load:
                break
            key = pending.pop(0)
            running[key] = (launch(f"{key[0]} seed {key[1]}", configs[key], run_dir(out, *key), model), time.time())
            print(f"[{key[0]} seed {key[1]}] started (pid {running[key][0].pid})", flush=True)
        time.sleep(2)
        for key, (process, started) in list(running.items()):
            rc = process.poll()
            if rc is None:
                continue
            del running[key]
            minutes = (time.time() - started) / 60
            log = run_dir(out, *key) / "train.log"
            if rc == 0:
                status[key] = "ok"
                print(f"[{key[0]} seed {key[1]}] finished in {minutes:.1f} min", flush=True)
            else:
                status[key] = f"failed (rc {rc})"
                tail = log.read_text().splitlines()[-40:]
                print(f"[{key[0]} seed {key[1]}] FAILED (rc {rc}) after {minutes:.1f} min; end of {log}:\n"
                      + "\n".join("    " + line for line in tail), flush=True)
    return status


# --------------------------------------------------------------------------- reading back


def load_run(folder: Path) -> dict[str, Any] | None:
    path = folder / METRICS_FILE
    if not path.exists():
        return None
    return {"train": read_metrics(path, "train"), "val": read_metrics(path, "val"),
            "per_prompt": {record["step"]: record for record in read_per_prompt(folder / PER_PROMPT_FILE)}}


def series(records: list[dict], key: str) -> dict[int, float]:
    return {r["step"]: float(r[key]) for r in records if key in r}


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (NaN SE for fewer than 2 values)."""
    return mean(values), standard_error(values)


def train_window_mean(run: dict, key: str, first: bool) -> float:
    values = [float(r[key]) for r in run["train"] if key in r]
    return mean(values[:FINAL_WINDOW] if first else values[-FINAL_WINDOW:])


def seed_curves(seeds_runs: dict[int, dict], kind: str, key: str, smooth: int = 0) -> tuple[list[int], list[float], list[float]]:
    """Steps common to every seed, the mean over seeds and its SE at each step."""
    per_seed = []
    for run in seeds_runs.values():
        points = series(run[kind], key)
        if smooth:
            steps = sorted(points)
            points = dict(zip(steps, moving_average([points[s] for s in steps], smooth)))
        per_seed.append(points)
    if not per_seed:
        return [], [], []
    steps = sorted(set.intersection(*(set(p) for p in per_seed)))
    means = [mean([p[s] for p in per_seed]) for s in steps]
    ses = [standard_error([p[s] for p in per_seed]) if len(per_seed) > 1 else 0.0 for s in steps]
    return steps, means, ses


def per_prompt_values(record: dict, metric: str) -> list[float]:
    """A per-prompt metric of one validation; pass@k for any k <= n comes from the correct counts."""
    if metric.startswith("pass@"):
        k = int(metric.split("@")[1])
        return [pass_at_k(record["n_samples"], c, k) for c in record["correct"]]
    return list(record["per_prompt"][metric])


def prompt_means(seeds_runs: dict[int, dict], step: int, metric: str) -> list[float] | None:
    """Per prompt, the metric averaged over the seeds that validated ``step``."""
    records = [run["per_prompt"][step] for run in seeds_runs.values() if step in run["per_prompt"]]
    if not records:
        return None
    rows = [per_prompt_values(record, metric) for record in records]
    return [mean(list(column)) for column in zip(*rows)]


def paired_over_prompts(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and SE over prompts of a - b (same prompts, same order)."""
    return mean_se([x - y for x, y in zip(a, b)])


def paired_over_seeds(runs_a: dict[int, dict], runs_b: dict[int, dict], key: str, step: int) -> tuple[float, float]:
    """Mean and SE over the common seeds of (a's metric - b's metric) at ``step``."""
    diffs = [series(runs_a[s]["val"], key)[step] - series(runs_b[s]["val"], key)[step]
             for s in sorted(set(runs_a) & set(runs_b))
             if step in series(runs_a[s]["val"], key) and step in series(runs_b[s]["val"], key)]
    return mean_se(diffs)


# --------------------------------------------------------------------------- outputs


COLORS = {"entropy_bonus": "tab:blue", "siren": "tab:red", "aer": "tab:orange", "steer": "tab:green",
          "forking_tokens": "tab:purple", "clip_cov": "tab:brown", "kl_cov": "tab:pink", "entropy_advantage": "tab:cyan"}


def style(name: str) -> dict[str, Any]:
    """One fixed look per run, so a run keeps its colour whatever subset is plotted."""
    if name == "grpo":
        return {"color": "black", "linewidth": 2.6, "linestyle": "-", "zorder": 5}
    if name == "clip_higher":
        return {"color": "0.45", "linewidth": 2.2, "linestyle": "--", "zorder": 4}
    dashed = list(COLORS).index(name) % 2 == 1 if name in COLORS else False
    return {"color": COLORS.get(name, "tab:olive"), "linewidth": 1.7, "linestyle": "-." if dashed else "-", "zorder": 3}


def plot(runs: dict[str, dict[int, dict]], ks: list[int], steps: int, seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k_max = max(ks)
    fig, axes = plt.subplots(3, 2, figsize=(14, 15))
    panels = [
        (axes[0, 0], "train", "train/entropy", f"(a) train entropy (rollout batch, {SMOOTH_WINDOW}-step moving average)", "nats"),
        (axes[0, 1], "val", "val/entropy", "(b) validation entropy", "nats"),
        (axes[1, 0], "val", "val/pass@1", "(c) validation pass@1", "pass@1"),
        (axes[1, 1], "val", f"val/pass@{k_max}", f"(d) validation pass@{k_max}", f"pass@{k_max}"),
    ]
    for name, seeds_runs in runs.items():
        line_style = style(name)
        for ax, kind, key, _, _ in panels:
            xs, ys, ses = seed_curves(seeds_runs, kind, key, SMOOTH_WINDOW if kind == "train" else 0)
            if not xs:
                continue
            ax.plot(xs, ys, label=LABELS.get(name, name), marker=None if kind == "train" else "o", markersize=3.5, **line_style)
            if len(seeds_runs) > 1:
                ax.fill_between(xs, [y - s for y, s in zip(ys, ses)], [y + s for y, s in zip(ys, ses)],
                                color=line_style["color"], alpha=0.12, linewidth=0)
    for ax, _, _, title, ylabel in panels:
        ax.set_title(title, fontsize=13, loc="left")
        ax.set_ylabel(ylabel, fontsize=11)
        ax.set_xlabel("rollout step", fontsize=11)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, steps)

    # (e) pass@k against k at the last validation (mean over seeds), and the shared step-0 curve
    ax = axes[2, 0]
    reference = next(iter(runs.get("grpo", next(iter(runs.values()))).values()))
    step0 = reference["per_prompt"].get(0)
    if step0 is not None:
        ax.plot(ks, [mean(per_prompt_values(step0, f"pass@{k}")) for k in ks], color="0.6", linewidth=3, marker="s",
                label="initial policy (step 0)", zorder=6)
    for name, seeds_runs in runs.items():
        last = max((max(run["per_prompt"]) for run in seeds_runs.values() if run["per_prompt"]), default=None)
        if last is None:
            continue
        values = [prompt_means(seeds_runs, last, f"pass@{k}") for k in ks]
        if all(v is not None for v in values):
            ax.plot(ks, [mean(v) for v in values], marker="o", markersize=3.5, label=LABELS.get(name, name), **style(name))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_title("(e) pass@k against k at the last validation", fontsize=13, loc="left")
    ax.set_xlabel("k (samples per prompt)", fontsize=11)
    ax.set_ylabel("pass@k", fontsize=11)
    ax.grid(alpha=0.3)

    # (f) the trade-off at the last validation
    ax = axes[2, 1]
    if step0 is not None:
        ax.scatter([mean(per_prompt_values(step0, "pass@1"))], [mean(per_prompt_values(step0, f"pass@{k_max}"))],
                   color="0.6", marker="s", s=80, zorder=6, label="initial policy (step 0)")
    for name, seeds_runs in runs.items():
        finals = [(series(run["val"], "val/pass@1"), series(run["val"], f"val/pass@{k_max}")) for run in seeds_runs.values()]
        finals = [(p1[max(p1)], pk[max(pk)]) for p1, pk in finals if p1 and pk]
        if not finals:
            continue
        (x, xe), (y, ye) = mean_se([f[0] for f in finals]), mean_se([f[1] for f in finals])
        look = style(name)
        ax.errorbar([x], [y], xerr=[0 if math.isnan(xe) else xe], yerr=[0 if math.isnan(ye) else ye], fmt="o",
                    color=look["color"], markersize=7, capsize=3, zorder=look["zorder"], label=LABELS.get(name, name))
    ax.set_title(f"(f) final pass@1 vs pass@{k_max} (mean +- SE over seeds)", fontsize=13, loc="left")
    ax.set_xlabel("pass@1", fontsize=11)
    ax.set_ylabel(f"pass@{k_max}", fontsize=11)
    ax.grid(alpha=0.3)

    handles, labels = axes[2, 0].get_legend_handles_labels()   # panel (e): every run and the initial policy
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=11.5, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"GRPO and the entropy methods on the tiny arithmetic testbed: mean over seeds {seeds} "
                 "(bands: one SE over seeds)", fontsize=14)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_se(pair: tuple[float, float], digits: int = 3, signed: bool = False) -> str:
    value, se = pair
    if math.isnan(value):
        return "n/a"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text if math.isnan(se) else f"{text} ± {se:.{digits}f}"


def fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def method_section(config: dict[str, Any]) -> dict[str, Any]:
    """The config section a run's entropy method reads (plus the anchor for SIREN and AER)."""
    method = config["entropy"]["method"]
    section = {"entropy_bonus": "bonus", "forking_tokens": "forking"}.get(method, method)
    params = {f"entropy.{section}.{k}": v for k, v in config["entropy"].get(section, {}).items()} if method != "none" else {}
    if method in ("siren", "aer"):
        params.update({f"entropy.anchor.{k}": v for k, v in config["entropy"]["anchor"].items()})
    params["clip.eps_low/eps_high/dual_c"] = f"{config['clip']['eps_low']}/{config['clip']['eps_high']}/{config['clip']['dual_c']}"
    return params


def summarize(runs: dict[str, dict[int, dict]], ks: list[int]) -> dict[str, Any]:
    """Every number the markdown reports, computed once."""
    k_max = max(ks)
    key_k = f"val/pass@{k_max}"
    summary: dict[str, Any] = {"runs": {}, "k_max": k_max}
    grpo = runs.get("grpo")
    reference = next(iter((grpo or next(iter(runs.values()))).values()))
    step0 = reference["per_prompt"].get(0)
    summary["initial"] = {
        "val/entropy": series(reference["val"], "val/entropy").get(0, float("nan")),
        "val/pass@1": series(reference["val"], "val/pass@1").get(0, float("nan")),
        key_k: series(reference["val"], key_k).get(0, float("nan")),
        "train/entropy": mean([train_window_mean(run, "train/entropy", first=True) for s in runs for run in runs[s].values()]),
        "prompts": len(step0["correct"]) if step0 else 0,
    }
    for name, seeds_runs in runs.items():
        last = min(max(series(run["val"], "val/pass@1")) for run in seeds_runs.values())
        row: dict[str, Any] = {"step": last, "seeds": sorted(seeds_runs)}
        for key in ("val/entropy", "val/pass@1", key_k):
            row[key] = mean_se([series(run["val"], key)[last] for run in seeds_runs.values()])
        row["best pass@1"] = mean_se([max(v for s, v in series(run["val"], "val/pass@1").items() if s > 0)
                                      for run in seeds_runs.values()])
        row["train/entropy"] = mean_se([train_window_mean(run, "train/entropy", first=False) for run in seeds_runs.values()])
        row["diagnostics"] = {short: mean([train_window_mean(run, key, first=False) for run in seeds_runs.values()])
                              for key, short in DIAGNOSTICS.get(name, {}).items()
                              if any(key in r for run in seeds_runs.values() for r in run["train"])}
        if step0 is not None:
            for metric in ("pass@1", f"pass@{k_max}"):
                finals = prompt_means(seeds_runs, last, metric)
                if finals is not None:
                    row[f"vs initial {metric} (prompts)"] = paired_over_prompts(finals, per_prompt_values(step0, metric))
        if grpo is not None and name != "grpo":
            for metric in ("pass@1", f"pass@{k_max}"):
                mine, theirs = prompt_means(seeds_runs, last, metric), prompt_means(grpo, last, metric)
                if mine is not None and theirs is not None:
                    row[f"vs grpo {metric} (prompts)"] = paired_over_prompts(mine, theirs)
                row[f"vs grpo {metric} (seeds)"] = paired_over_seeds(seeds_runs, grpo, f"val/{metric}", last)
        summary["runs"][name] = row
    return summary


def properties(summary: dict[str, Any]) -> list[str]:
    """The issue's properties, each checked on the measured numbers (one line each)."""
    k_max = summary["k_max"]
    initial, rows = summary["initial"], summary["runs"]
    grpo = rows.get("grpo")
    if grpo is None:
        return ["- (no GRPO run: nothing to check)"]
    lines = []
    best_gain = grpo["best pass@1"][0] - initial["val/pass@1"]
    end_gain = grpo["vs initial pass@1 (prompts)"] if "vs initial pass@1 (prompts)" in grpo else (float("nan"), float("nan"))
    lines.append(f"- GRPO raises pass@1: best {fmt(grpo['best pass@1'][0])} vs initial {fmt(initial['val/pass@1'])} "
                 f"(+{fmt(best_gain)}; wanted >= +0.05); at the end {fmt_se(end_gain, signed=True)} (paired over prompts) "
                 f"-> **{'holds' if best_gain >= 0.05 and end_gain[0] > 2 * end_gain[1] else 'does not hold'}**")
    train_drop = 1 - grpo["train/entropy"][0] / initial["train/entropy"]
    val_drop = 1 - grpo["val/entropy"][0] / initial["val/entropy"]
    lines.append(f"- GRPO's entropy falls: train {fmt(initial['train/entropy'])} -> {fmt(grpo['train/entropy'][0])} "
                 f"(-{100 * train_drop:.0f}%), validation {fmt(initial['val/entropy'])} -> {fmt(grpo['val/entropy'][0])} "
                 f"(-{100 * val_drop:.0f}%); wanted >= 30% -> **{'holds' if min(train_drop, val_drop) >= 0.3 else 'does not hold'}**")
    key = f"vs initial pass@{k_max} (prompts)"
    if key in grpo:
        change = grpo[key]
        lines.append(f"- GRPO's pass@{k_max} ends at or below the initial policy's: {fmt(grpo[f'val/pass@{k_max}'][0])} vs "
                     f"{fmt(initial[f'val/pass@{k_max}'])}, change {fmt_se(change, signed=True)} (paired over prompts) -> "
                     f"**{'holds' if change[0] <= 0 else 'does not hold'}**"
                     + (" (clearly below: more than 2 SE)" if change[0] < -2 * change[1] else ""))
    gain = grpo["best pass@1"][0] - initial["val/pass@1"]
    grpo_end_gain = grpo["val/pass@1"][0] - initial["val/pass@1"]
    winners, method_lines = [], []
    for name, row in rows.items():
        if name == "grpo" or f"vs grpo pass@{k_max} (prompts)" not in row:
            continue
        diff, se = row[f"vs grpo pass@{k_max} (prompts)"]
        kept = (row["val/pass@1"][0] - initial["val/pass@1"]) / grpo_end_gain if grpo_end_gain > 0 else float("nan")
        _, seed_se = row.get(f"vs grpo pass@{k_max} (seeds)", (float("nan"), float("nan")))
        verdict = diff > 2 * se and kept > 0.5
        if verdict:
            winners.append(LABELS.get(name, name))
        method_lines.append(f"  - {LABELS.get(name, name)}: pass@{k_max} - GRPO's = {fmt(diff, 3)} (prompt SE {fmt(se)}, "
                            f"{fmt(diff / se if se else float('nan'), 1)} SE; seed SE {fmt(seed_se)}), keeps "
                            f"{fmt(100 * kept, 0)}% of GRPO's final pass@1 gain -> {'**yes**' if verdict else 'no'}")
    lines.append(f"- An entropy method ends with a higher pass@{k_max} than GRPO by more than 2 paired SE over the same "
                 f"prompts while keeping most (> 50%) of GRPO's final pass@1 gain (GRPO gains {fmt(gain)} at best, "
                 f"{fmt(grpo_end_gain)} at the end) -> **{'holds: ' + ', '.join(winners) if winners else 'does not hold'}**")
    lines.extend(method_lines)
    return lines


def write_markdown(runs: dict[str, dict[int, dict]], configs: dict[tuple[str, int], dict], status: dict[tuple[str, int], str],
                   ks: list[int], steps: int, seeds: list[int], command: str, png: Path, path: Path, models: set[str]) -> None:
    summary = summarize(runs, ks)
    k_max, initial = summary["k_max"], summary["initial"]
    base = next(iter(configs.values()))
    lines = [
        "# Entropy dynamics: GRPO and the entropy methods, several seeds",
        "",
        f"Generated by `{command}` ({datetime.date.today().isoformat()}). Base run: `examples/tiny_grpo.yaml` "
        f"(shipped model `builtin:tiny-arith`, levels {base['data']['synthetic']['levels']}, "
        f"{base['rollout']['prompts_per_step']} prompts x {base['rollout']['group_size']} samples per step, "
        f"{base['train']['ppo_epochs']} epoch(s) x {base['train']['mini_batches']} mini-batch(es), lr {base['optim']['lr']:g}); "
        f"{steps} steps; training seeds {seeds}; validation every {base['train']['eval_every']} steps on "
        f"{base['eval']['num_prompts']} prompts x {base['eval']['n_samples']} samples at T = {base['eval']['temperature']:g}, "
        f"sampled with eval.seed {base['eval']['seed']} (the same numbers for every run). Model weights sha256 "
        f"{', '.join(sorted(models)) or 'unknown'} (first 16 hex digits).",
        "",
        f"![entropy dynamics]({png.name})",
        "",
        "## Final values (mean ± SE over seeds)",
        "",
        f"Train entropy: token-mean entropy of the rollout batch, mean of the first / last {FINAL_WINDOW} steps. "
        f"Validation values are those of step {max(r['step'] for r in summary['runs'].values())}. The last two columns compare "
        "with GRPO on the same prompts: the difference of the seed-averaged per-prompt values, ± its SE over prompts "
        "(and, in brackets, ± the SE over seeds of the seed-paired difference).",
        "",
        f"| run | train entropy | val entropy | val pass@1 | best val pass@1 | val pass@{k_max} | Δpass@1 vs GRPO | "
        f"Δpass@{k_max} vs GRPO | diagnostics (last {FINAL_WINDOW} steps) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| *initial policy* | {fmt(initial['train/entropy'])} | {fmt(initial['val/entropy'])} | {fmt(initial['val/pass@1'])} | | "
        f"{fmt(initial[f'val/pass@{k_max}'])} | | | |",
    ]
    for name, row in summary["runs"].items():
        failed = [s for (n, s), st in status.items() if n == name and st.startswith("failed")]
        note = f" **failed seeds {failed}**" if failed else ""
        cells = []
        for metric in ("pass@1", f"pass@{k_max}"):
            prompts = row.get(f"vs grpo {metric} (prompts)")
            seeds_pair = row.get(f"vs grpo {metric} (seeds)")
            cells.append("—" if prompts is None else f"{fmt_se(prompts, signed=True)} ({fmt_se(seeds_pair, signed=True)})")
        diag = ", ".join(f"{short} {fmt(value)}" for short, value in row["diagnostics"].items())
        lines.append(f"| {LABELS.get(name, name)}{note} | {fmt_se(row['train/entropy'])} | {fmt_se(row['val/entropy'])} | "
                     f"{fmt_se(row['val/pass@1'])} | {fmt_se(row['best pass@1'])} | {fmt_se(row[f'val/pass@{k_max}'])} | "
                     f"{cells[0]} | {cells[1]} | {diag} |")
    lines += ["", "## The issue's properties, checked on these numbers", "", *properties(summary), ""]
    if RUNS_NOTE:
        lines += ["## How the methods' knobs were chosen", "", RUNS_NOTE, ""]
    lines += ["## Hyperparameters of each run", "",
              "Each run is the base run plus the overrides shown; the method's full config section is listed "
              "(values not overridden are the config defaults, see the module docstrings in `trainers/entropy/`).", ""]
    for name in runs:
        overrides, reason = RUNS[name]
        config = next(c for (n, _), c in configs.items() if n == name)
        lines.append(f"- **{LABELS.get(name, name)}** (`{name}`): " + ", ".join(f"`{k}: {fmt_value(v)}`" for k, v in overrides.items())
                     + f". Why: {reason}.")
        lines.append("  Used: " + ", ".join(f"`{k}` {fmt_value(v)}" for k, v in method_section(config).items()))
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- initial-policy statistics


def initial_stats(base: dict[str, Any], out: Path) -> None:
    """Print the initial-policy numbers the choices in RUNS rely on (no training)."""
    import torch

    from trainers.algorithms import aggregate, compute_advantages
    from trainers.entropy.ops import nucleus_entropy, token_entropy, token_logprobs
    from trainers.grpo import GRPOTrainer
    from trainers.rollout import SamplingSettings

    data = copy.deepcopy(base)
    set_dotted(data, "rollout.prompts_per_step", 64)
    set_dotted(data, "train.output_dir", str(out / "_initial_stats"))
    trainer = GRPOTrainer(parse_config(data))
    cfg = trainer.config
    G = cfg.rollout.group_size
    torch.manual_seed(cfg.seed)
    problems = trainer._sample_problems(1)
    rollout = trainer.engine.generate([p.prompt for p in problems], G, SamplingSettings(
        cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_new_tokens))
    rewards = torch.tensor([trainer.reward_fn(c, p.answer) for c, p in zip(rollout.completions, [p for p in problems for _ in range(G)])])
    advantages = compute_advantages(cfg.advantage, rewards.float(), G)
    with torch.no_grad():
        logits = trainer._response_logits(trainer.model, rollout)
    valid = rollout.response_mask.bool()
    entropy = token_entropy(logits)
    group_accuracy = (rewards > 0).float().reshape(-1, G).mean(-1)
    print(f"initial policy, {len(problems)} prompts x {G}: {int(valid.sum())} response tokens "
          f"({float(valid.sum(-1).float().mean()):.2f} per response), accuracy {float((rewards > 0).float().mean()):.3f}, "
          f"groups with accuracy <= 0.5: {float((group_accuracy <= 0.5).float().mean()):.2f}, "
          f"zero-variance groups: {float(((group_accuracy == 0) | (group_accuracy == 1)).float().mean()):.2f}")
    print(f"  token-mean entropy {float(entropy[valid].mean()):.3f} nats; positions with H > 0.1: {float((entropy[valid] > 0.1).float().mean()):.2f}")
    for top_p in (0.8, 0.95, 0.99, 1.0):
        nucleus = nucleus_entropy(logits, top_p)
        print(f"  top_p {top_p}: positions whose nucleus holds >= 2 tokens (H_top > 0): {float((nucleus[valid] > 0).float().mean()):.2f}, "
              f"mean nucleus entropy {float(nucleus[valid].mean()):.3f}")
    params = list(trainer.model.parameters())

    def grad_norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        return float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))

    total = rollout.response_ids.shape[0]
    for responses in (64, 256):
        pg_norms, entropy_norms = [], []
        for start in range(0, min(total, 2 * responses), responses):   # up to 2 disjoint mini-batches
            rows = torch.arange(start, start + responses)
            part = rollout.select(rows)
            logits = trainer._response_logits(trainer.model, part)
            mask = part.response_mask.float()
            pg = aggregate(cfg.loss_agg, -advantages[rows][:, None] * token_logprobs(logits, part.response_ids), mask,
                           cfg.rollout.max_new_tokens)
            pg_norms.append(grad_norm(pg))
            entropy_norms.append(grad_norm(aggregate(cfg.loss_agg, token_entropy(logits), mask, cfg.rollout.max_new_tokens)))
        pg_mean, entropy_mean = mean(pg_norms), mean(entropy_norms)
        print(f"  {responses:3d}-response batches (mean of {len(pg_norms)}): |grad L_pg| {pg_mean:.2f}, "
              f"|grad token-mean H| {entropy_mean:.2f}, ratio {entropy_mean / pg_mean:.2f}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="rollout steps per run (default 200)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    parser.add_argument("--max-load", type=float, default=None,
                        help="start a run beyond the first only while the 1-minute load average is below this")
    parser.add_argument("--methods", default="all", help=f"comma list of runs (default all): {','.join(RUNS)}; 'none' = grpo")
    parser.add_argument("--out", default="/tmp/entropy-dynamics", help="folder of the run directories")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where entropy_dynamics.png/.md go")
    parser.add_argument("--from-existing", action="store_true", help="run nothing; plot and tabulate the runs in --out")
    parser.add_argument("--initial-stats", action="store_true", help="only print the initial-policy numbers behind RUNS")
    args = parser.parse_args()

    names = list(RUNS) if args.methods == "all" else \
        ["grpo" if m.strip() == "none" else m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"--methods: unknown run(s) {unknown}; choose from {', '.join(RUNS)} (or 'none' for grpo)")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: give integers separated by commas, got {args.seeds!r}")
    if args.steps <= 0 or args.jobs <= 0 or not seeds:
        parser.error("--steps and --jobs must be positive and --seeds non-empty")

    out = Path(args.out).resolve()
    base = yaml.safe_load(BASE_CONFIG.read_text())
    if args.initial_stats:
        initial_stats(base, out)
        return 0
    # seed-major: an interrupted benchmark holds every method of its first seeds (paired comparisons)
    configs = {(name, seed): run_config(base, name, seed, args.steps, out) for seed in seeds for name in names}
    ks = sorted(next(iter(configs.values()))["eval"]["k"])
    run_args = [a for a in sys.argv[1:] if a != "--from-existing"]   # the command that produced the runs
    command = " ".join(["python benchmarks/entropy_dynamics.py", *(shlex.quote(a) for a in run_args)])
    model = model_fingerprint(next(iter(configs.values())))

    if args.from_existing:
        status = {key: "reused" for key in configs}
    else:
        started = time.time()
        status = run_all(configs, out, args.steps, args.jobs, model, args.max_load)
        print(f"all runs done in {(time.time() - started) / 60:.1f} min", flush=True)
        if model_fingerprint(next(iter(configs.values()))) != model:
            print(f"WARNING: the model files changed during the benchmark (were {model}); rerun", file=sys.stderr)
            status = {key: "failed (model changed during the run)" for key in configs}
    models = {(run_dir(out, *key) / "model.sha256").read_text().strip() for key in configs
              if (run_dir(out, *key) / "model.sha256").exists()}
    if len(models) > 1:
        print(f"WARNING: runs used different model files: {sorted(models)}", file=sys.stderr)

    runs: dict[str, dict[int, dict]] = {}
    for name, seed in configs:
        run = load_run(run_dir(out, name, seed))
        if run is not None and run["val"]:
            runs.setdefault(name, {})[seed] = run
    if not runs:
        print(f"no {METRICS_FILE} under {out}", file=sys.stderr)
        return 1
    docs = Path(args.docs)
    png, md = docs / "entropy_dynamics.png", docs / "entropy_dynamics.md"
    plot(runs, ks, args.steps, seeds, png)
    write_markdown(runs, configs, status, ks, args.steps, seeds, command, png, md, models)
    print(md.read_text())
    print(f"wrote {png} and {md}")
    failed = [key for key, s in status.items() if s.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
