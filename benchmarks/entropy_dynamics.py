"""Entropy and validation pass@k over training: vanilla GRPO, clip-higher and every entropy method.

Every run is the default run (``examples/tiny_grpo.yaml``: the shipped tiny model on the synthetic
arithmetic task, seed 0, tuned so plain GRPO visibly collapses) with one change: the entropy method
and its hyperparameters from ``RUNS`` below. All runs share the seed, so they see the same prompts
at every step and start from the same validation numbers.

Each run is a separate ``python -m trainers run.yaml`` process with ``OMP_NUM_THREADS=1`` (without it
two runs oversubscribe a 2-core machine and each becomes ~10x slower), at most ``--jobs`` at a time,
writing ``--out/<run>/metrics.jsonl``. The script then reads the metrics back and writes

- ``docs/entropy_dynamics.png``: (a) train entropy (moving average), (b) validation entropy,
  (c) validation pass@1, (d) validation pass@k (largest k of ``eval.k``), one line per run;
- ``docs/entropy_dynamics.md``: final values per run (train entropy = mean of the last 10 steps),
  the step-0 reference row, the command line and every run's hyperparameters.

A run directory whose saved config and model fingerprint (sha256 of the weights) match is reused
(complete) or resumed (interrupted); a mismatching one is deleted and rerun. The model's fingerprint
goes into the markdown: the shipped model can be rebuilt, which changes every number here.

    python benchmarks/entropy_dynamics.py                               # all runs, 200 steps, 2 at a time
    python benchmarks/entropy_dynamics.py --methods grpo,siren --steps 50 --out /tmp/ed-small
    python benchmarks/entropy_dynamics.py --from-existing               # only re-plot and re-tabulate
    python benchmarks/entropy_dynamics.py --initial-stats               # the numbers behind RUNS' choices
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
from trainers.reporting import read_metrics  # noqa: E402

BASE_CONFIG = REPO / "examples" / "tiny_grpo.yaml"

# --------------------------------------------------------------------------- the runs
# run name -> (dotted-path overrides of the base run, why these values). Picked once from
# shared/methods.md and the module docstrings, before any run, never tuned on results.
# Measured on the initial policy (``--initial-stats``: one 512-response rollout batch, model 5493a7e0):
# token-mean entropy 0.40 nats, 54% of response positions have H > 0.1, a 0.8-nucleus holds >= 2 tokens
# at 11% of positions (0.95: 14%), and per unit coefficient the gradient of token-mean H is ~0.53x the PG
# gradient (16-256 responses per mini-batch).
# "x4 (log-vocab)": a coefficient on an entropy is scaled by log(151936)/log(21) = 3.9 ~ 4, because the
# entropy (and the norm of its gradient) ranges up to log V: the same coefficient pulls ~4x weaker on a
# 21-token vocabulary than on Qwen's 152k one.
RUNS: dict[str, tuple[dict[str, Any], str]] = {
    "grpo": ({"entropy.method": "none"},
             "the default run unchanged (eps_low = eps_high = 0.2)"),
    "clip_higher": ({"entropy.method": "none", "clip.eps_high": 0.28},
                    "DAPO clip-higher 0.2/0.28"),
    "entropy_bonus": ({"entropy.method": "entropy_bonus", "entropy.bonus.coef": 4e-3},
                      "coef 1e-3 (verl / config default) x4 (log-vocab); lies between the published 1e-3 and 5e-3"),
    "siren": ({"entropy.method": "siren", "entropy.siren.coef": 0.02},
              "coef 0.005 (code) x4 (log-vocab); top_p 0.8 (code) kept: 'top-1 >= p gives an empty nucleus' does not "
              "depend on the vocabulary, and 0.95 would not change the picture (a >= 2-token nucleus at 11% vs 14% "
              "of step-0 positions, both under the 20% the 0.8 peak quantile aims at); anchor = initial, ratio 1.0 (code)"),
    "aer": ({"entropy.method": "aer", "entropy.anchor.ratio": 0.8, "entropy.aer.alpha_init": 4e-3,
             "entropy.aer.alpha_lr": 4e-3, "entropy.aer.alpha_max": 4e-2},
            "tau 0.8 instead of 0.5: vanilla GRPO's val entropy only falls to ~0.6 x its start in 200 steps (0.45 -> 0.27), "
            "so a 0.5 x H0 target is never reached and AER would be plain GRPO; alpha_init, alpha_lr, "
            "alpha_max = 1e-3, 1e-3, 1e-2 x4 (log-vocab); rho 0.5, threshold allocation"),
    "steer": ({"entropy.method": "steer"},
              "release defaults (w_min 0.8, exp mapping, code Omega, per micro-batch = the 16-response "
              "mini-batch); the release's clip-higher 0.28 / dual clip 10 backbone is NOT added, so the row "
              "isolates the reweighting (clip-higher has its own row)"),
    "forking_tokens": ({"entropy.method": "forking_tokens"},
                       "paper: PG on the top 20% entropy tokens of the step batch"),
    "clip_cov": ({"entropy.method": "clip_cov"},
                 "verl defaults (ratio 2e-4, cov in (1, 5)); with ~50 tokens per mini-batch the max(1, .) "
                 "floor detaches 1 token per mini-batch whenever a candidate exists (~2%, ~100x the paper's fraction)"),
    "kl_cov": ({"entropy.method": "kl_cov"},
               "SIREN code defaults (ratio 2e-4 -> 1 token per mini-batch by the max(1, .) floor, coef 1.0); "
               "KL-Cov has no ratio clipping anywhere"),
    "entropy_advantage": ({"entropy.method": "entropy_advantage"},
                          "paper: alpha 0.4, kappa 2"),
}

LABELS = {
    "grpo": "GRPO (vanilla)", "clip_higher": "clip-higher (0.28)", "entropy_bonus": "entropy bonus",
    "siren": "SIREN", "aer": "AER (reconstr.)", "steer": "STEER", "forking_tokens": "forking tokens 80/20",
    "clip_cov": "Clip-Cov", "kl_cov": "KL-Cov", "entropy_advantage": "entropy advantage",
}

# Per-method diagnostics for the table: metric key -> short name (mean of the last 10 logged steps).
DIAGNOSTICS = {
    "clip_higher": {"train/clip_frac_high": "clip_frac_high"},
    "grpo": {"train/clip_frac_high": "clip_frac_high"},
    "entropy_bonus": {"entropy_bonus/bonus": "bonus"},
    "siren": {"siren/target": "target", "siren/old_selected_entropy": "H_sel", "siren/old_selected_fraction": "selected"},
    "aer": {"aer/alpha": "alpha", "aer/target": "target", "aer/fraction_regularized": "regularized"},
    "steer": {"steer/weight_mean": "w_mean", "steer/weight_min": "w_min"},
    "forking_tokens": {"forking_tokens/selected_fraction": "selected"},
    "clip_cov": {"clip_cov/detached_fraction": "detached"},
    "kl_cov": {"kl_cov/penalized_fraction": "penalized", "train/kl_old": "kl_old"},
    "entropy_advantage": {"entropy_advantage/bonus_mean": "bonus", "entropy_advantage/cap_active_fraction": "capped"},
}

SMOOTH_WINDOW = 10   # steps in the trailing moving average of train entropy
FINAL_WINDOW = 10    # final train entropy = mean over the last this many steps


# --------------------------------------------------------------------------- configs


def set_dotted(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def run_config(base: dict[str, Any], name: str, steps: int, out: Path) -> dict[str, Any]:
    """The full, validated run config of one run, as a plain dict."""
    data = copy.deepcopy(base)
    for path, value in RUNS[name][0].items():
        set_dotted(data, path, value)
    set_dotted(data, "train.steps", steps)
    set_dotted(data, "train.output_dir", str(out / name))
    return parse_config(data, f"run {name}").model_dump(mode="json")


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


def is_complete(run_dir: Path, steps: int) -> bool:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return False
    return any(r["step"] >= steps for r in read_metrics(path, "val"))


# --------------------------------------------------------------------------- running


def same_run(run_dir: Path, config: dict[str, Any], model: str) -> bool:
    saved, saved_model = run_dir / "config.yaml", run_dir / "model.sha256"
    return saved.exists() and yaml.safe_load(saved.read_text()) == config and \
        saved_model.exists() and saved_model.read_text().strip() == model


def launch(name: str, config: dict[str, Any], run_dir: Path, model: str) -> subprocess.Popen:
    if run_dir.exists() and (run_dir / "config.yaml").exists() and not same_run(run_dir, config, model):
        print(f"[{name}] config or model changed: deleting {run_dir}", flush=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.sha256").write_text(model + "\n")
    (run_dir / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    log = (run_dir / "train.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "trainers", str(run_dir / "run.yaml")], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def run_all(names: list[str], configs: dict[str, dict], out: Path, steps: int, jobs: int, model: str) -> dict[str, str]:
    """Run every not yet complete run, ``jobs`` at a time; returns run name -> 'ok' | 'reused' | 'failed (rc N)'."""
    status: dict[str, str] = {}
    pending = []
    for name in names:
        if is_complete(out / name, steps) and same_run(out / name, configs[name], model):
            status[name] = "reused"
            print(f"[{name}] complete in {out / name}, reused", flush=True)
        else:
            pending.append(name)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            running[name] = (launch(name, configs[name], out / name, model), time.time())
            print(f"[{name}] started (pid {running[name][0].pid})", flush=True)
        time.sleep(2)
        for name, (process, started) in list(running.items()):
            rc = process.poll()
            if rc is None:
                continue
            del running[name]
            minutes = (time.time() - started) / 60
            if rc == 0:
                status[name] = "ok"
                print(f"[{name}] finished in {minutes:.1f} min", flush=True)
            else:
                status[name] = f"failed (rc {rc})"
                tail = (out / name / "train.log").read_text().splitlines()[-40:]
                print(f"[{name}] FAILED (rc {rc}) after {minutes:.1f} min; end of {out / name / 'train.log'}:\n"
                      + "\n".join("    " + line for line in tail), flush=True)
    return status


# --------------------------------------------------------------------------- reading back


def load_run(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    return {"train": read_metrics(path, "train"), "val": read_metrics(path, "val")}


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], float(r[key])) for r in records if key in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def tail_mean(records: list[dict], key: str, count: int = FINAL_WINDOW) -> float:
    values = [float(r[key]) for r in records if key in r][-count:]
    return sum(values) / len(values) if values else float("nan")


def last_val(records: list[dict], key: str) -> tuple[int | None, float]:
    with_key = [r for r in records if key in r]
    return (with_key[-1]["step"], float(with_key[-1][key])) if with_key else (None, float("nan"))


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


def plot(runs: dict[str, dict], k_max: int, steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10), sharex=True)
    panels = [
        (axes[0, 0], "train", "train/entropy", f"(a) train entropy (rollout batch, {SMOOTH_WINDOW}-step moving average)", "nats"),
        (axes[0, 1], "val", "val/entropy", "(b) validation entropy", "nats"),
        (axes[1, 0], "val", "val/pass@1", "(c) validation pass@1", "pass@1"),
        (axes[1, 1], "val", f"val/pass@{k_max}", f"(d) validation pass@{k_max}", f"pass@{k_max}"),
    ]
    for name, run in runs.items():
        line_style = style(name)
        for ax, kind, key, _, _ in panels:
            xs, ys = series(run[kind], key)
            if not xs:
                continue
            if kind == "train":
                ax.plot(xs, moving_average(ys, SMOOTH_WINDOW), label=LABELS.get(name, name), **line_style)
            else:
                ax.plot(xs, ys, marker="o", markersize=4, label=LABELS.get(name, name), **line_style)
    for ax, _, _, title, ylabel in panels:
        ax.set_title(title, fontsize=13, loc="left")
        ax.set_ylabel(ylabel, fontsize=11)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, steps)
        ax.tick_params(labelsize=10)
    for ax in axes[1]:
        ax.set_xlabel("rollout step", fontsize=11)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=11.5, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Entropy and pass@k on the tiny arithmetic task: GRPO, clip-higher and the entropy methods "
                 "(seed 0, same prompts)", fontsize=14)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def method_section(config: dict[str, Any]) -> dict[str, Any]:
    """The config section a run's entropy method reads (plus the anchor for SIREN and AER)."""
    method = config["entropy"]["method"]
    section = {"entropy_bonus": "bonus", "forking_tokens": "forking"}.get(method, method)
    params = {f"entropy.{section}.{k}": v for k, v in config["entropy"].get(section, {}).items()} if method != "none" else {}
    if method in ("siren", "aer"):
        params.update({f"entropy.anchor.{k}": v for k, v in config["entropy"]["anchor"].items()})
    params["clip.eps_low/eps_high/dual_c"] = f"{config['clip']['eps_low']}/{config['clip']['eps_high']}/{config['clip']['dual_c']}"
    return params


def write_markdown(runs: dict[str, dict], configs: dict[str, dict], status: dict[str, str], k_max: int,
                   steps: int, command: str, png: Path, path: Path, models: dict[str, str]) -> None:
    lines = [
        "# Entropy dynamics: vanilla GRPO, clip-higher and the entropy methods",
        "",
        f"Generated by `{command}` ({datetime.date.today().isoformat()}). Base run: `examples/tiny_grpo.yaml` "
        "(shipped tiny model `builtin:tiny-arith`, 21-token vocabulary; synthetic arithmetic levels 1-2; "
        "8 prompts x 8 samples per step; 2 epochs x 4 mini-batches; lr 2e-5; token-mean loss; seed 0 for every run, "
        f"so all runs see the same prompts). {steps} steps per run; validation every 25 steps on 64 prompts x 8 samples at T = 1. "
        f"Model weights sha256 {', '.join(sorted(set(models.values()))) or 'unknown'} (first 16 hex digits).",
        "",
        f"![entropy dynamics]({png.name})",
        "",
        f"Train entropy is the token-mean full entropy of the rollout batch (old policy), mean of the last "
        f"{FINAL_WINDOW} steps; the other columns are the last validation (step shown). One seed: with 64 "
        "validation prompts, one standard error of pass@k is about sqrt(p(1-p)/64) = 0.04-0.06, so differences "
        "below ~0.1 are within noise.",
        "",
        f"| run | train entropy | val entropy | val pass@1 | val pass@{k_max} | step | method diagnostics (last {FINAL_WINDOW} steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    reference = runs.get("grpo") or next(iter(runs.values()), None)
    if reference:
        first_train = [r for r in reference["train"] if r["step"] == 1]
        step0 = [r for r in reference["val"] if r["step"] == 0]
        h1 = float(first_train[0]["train/entropy"]) if first_train else float("nan")
        v0 = step0[0] if step0 else {}
        lines.append(f"| *initial policy (train: step 1 batch; val: step 0)* | {fmt(h1)} | {fmt(v0.get('val/entropy', float('nan')))} | "
                     f"{fmt(v0.get('val/pass@1', float('nan')))} | {fmt(v0.get(f'val/pass@{k_max}', float('nan')))} | 0 | |")
    for name in configs:
        run = runs.get(name)
        label = LABELS.get(name, name)
        if run is None:
            lines.append(f"| {label} | n/a | n/a | n/a | n/a | - | no metrics ({status.get(name, 'not run')}) |")
            continue
        step, val_entropy = last_val(run["val"], "val/entropy")
        _, pass1 = last_val(run["val"], "val/pass@1")
        _, passk = last_val(run["val"], f"val/pass@{k_max}")
        diag = ", ".join(f"{short} {fmt(tail_mean(run['train'], key))}" for key, short in DIAGNOSTICS.get(name, {}).items()
                         if any(key in r for r in run["train"]))
        note = "" if status.get(name, "ok") in ("ok", "reused") else f" **{status[name]}**"
        if step is not None and step < steps:
            note += f" (stopped at step {step})"
        lines.append(f"| {label}{note} | {fmt(tail_mean(run['train'], 'train/entropy'))} | {fmt(val_entropy)} | "
                     f"{fmt(pass1)} | {fmt(passk)} | {step} | {diag} |")
    lines += ["", "## Hyperparameters of each run", "",
              "Each run is the base run plus the overrides shown; the method's full config section is listed "
              "(values not overridden are the config defaults = the papers' / official code's defaults, see the "
              "module docstrings in `trainers/entropy/`). Coefficients on an entropy are scaled x4 "
              "(log(151936)/log(21) = 3.9): the entropy and its gradient range up to log V, so a coefficient pulls "
              "~4x weaker on this 21-token vocabulary than on an LLM's. Picked once before any run, not tuned.", ""]
    for name, config in configs.items():
        overrides, reason = RUNS[name]
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
    print(f"initial policy, {len(problems)} prompts x {G}: {int(valid.sum())} response tokens "
          f"({float(valid.sum(-1).float().mean()):.2f} per response), accuracy {float((rewards > 0).float().mean()):.3f}")
    print(f"  token-mean entropy {float(entropy[valid].mean()):.3f} nats; positions with H > 0.1: {float((entropy[valid] > 0.1).float().mean()):.2f}")
    for top_p in (0.8, 0.95):
        nucleus = nucleus_entropy(logits, top_p)
        print(f"  top_p {top_p}: positions whose nucleus holds >= 2 tokens (H_top > 0): {float((nucleus[valid] > 0).float().mean()):.2f}")
    params = list(trainer.model.parameters())

    def grad_norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        return float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))

    total = rollout.response_ids.shape[0]
    for responses in (16, 64, 256):
        pg_norms, entropy_norms = [], []
        for start in range(0, min(total, 4 * responses), responses):   # up to 4 disjoint mini-batches
            rows = torch.arange(start, start + responses)
            part = rollout.select(rows)
            logits = trainer._response_logits(trainer.model, part)
            mask = part.response_mask.float()
            pg = aggregate(cfg.loss_agg, -advantages[rows][:, None] * token_logprobs(logits, part.response_ids), mask,
                           cfg.rollout.max_new_tokens)
            pg_norms.append(grad_norm(pg))
            entropy_norms.append(grad_norm(aggregate(cfg.loss_agg, token_entropy(logits), mask, cfg.rollout.max_new_tokens)))
        pg_mean, entropy_mean = sum(pg_norms) / len(pg_norms), sum(entropy_norms) / len(entropy_norms)
        print(f"  {responses:3d}-response mini-batches (mean of {len(pg_norms)}): |grad L_pg| {pg_mean:.2f}, "
              f"|grad token-mean H| {entropy_mean:.2f}, ratio {entropy_mean / pg_mean:.2f}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="rollout steps per run (default 200)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
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
    if args.steps <= 0 or args.jobs <= 0:
        parser.error("--steps and --jobs must be positive")

    out = Path(args.out).resolve()
    base = yaml.safe_load(BASE_CONFIG.read_text())
    if args.initial_stats:
        initial_stats(base, out)
        return 0
    configs = {name: run_config(base, name, args.steps, out) for name in names}
    k_max = max(configs[names[0]]["eval"]["k"])
    run_args = [a for a in sys.argv[1:] if a != "--from-existing"]   # the command that produced the runs
    command = " ".join(["python benchmarks/entropy_dynamics.py", *(shlex.quote(a) for a in run_args)])
    model = model_fingerprint(configs[names[0]])

    if args.from_existing:
        status = {name: "reused" for name in names}
    else:
        started = time.time()
        status = run_all(names, configs, out, args.steps, args.jobs, model)
        print(f"all runs done in {(time.time() - started) / 60:.1f} min", flush=True)
        if model_fingerprint(configs[names[0]]) != model:
            print(f"WARNING: the model files changed during the benchmark (were {model}); rerun", file=sys.stderr)
            status = {name: "failed (model changed during the run)" for name in names}
    models = {name: (out / name / "model.sha256").read_text().strip() for name in names if (out / name / "model.sha256").exists()}
    if len(set(models.values())) > 1:
        print(f"WARNING: runs used different model files: {models}", file=sys.stderr)

    runs = {name: run for name in names if (run := load_run(out / name)) is not None}
    if not runs:
        print(f"no metrics.jsonl under {out}", file=sys.stderr)
        return 1
    docs = Path(args.docs)
    png, md = docs / "entropy_dynamics.png", docs / "entropy_dynamics.md"
    plot(runs, k_max, args.steps, png)
    write_markdown(runs, configs, status, k_max, args.steps, command, png, md, models)
    print(md.read_text())
    print(f"wrote {png} and {md}")
    failed = [n for n, s in status.items() if s.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
