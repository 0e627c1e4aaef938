"""Does STEER's Omega track the entropy change it claims to estimate? A check on a tabular softmax policy.

Setup (one "setting" = vocabulary size V and logit scale; several seeds each):
- ``STATES`` independent states, logits theta[s] ~ N(0, scale^2) over V tokens (free parameters).
- In every state ONE token a ~ pi_old(.|s) is sampled, so each state's entropy change comes from a
  single token and the first-order theory applies token by token. Reward 1[a = c_s] for a random
  "correct" token c_s; advantage A = reward - pi_old(c_s|s) (the exact expected-reward baseline).
- ONE plain gradient step, lr = ``LR``, on the unclipped, unweighted PG loss -sum_s A_s r_s(theta),
  r = pi/pi_old. The realized change is dH_s = H(pi_new(.|s)) - H(pi_old(.|s)).
- Estimators, at the sampled token with x = pi_old(a|s) (on-policy, first mini-batch):
    code   Omega = (A/p_old) x(1-x)(log x + H)        (released code; its sign is dropped, so -Omega is
                                                        compared with dH)
    paper  Omega = -A x(1-x)^2 (log x + H) / p_old      (Theorem 1 / Eq. 9 on the sampled token)
  and, as a check of the harness, the exact first-order change of a tabular softmax,
    exact  dH/lr = -A [ x(log x + H) - sum_j pi_j^2 (log pi_j + H) ]
  (Cui et al.'s covariance form). Also the "sampled logit only" derivation, -A x^2(1-x)(log x + H)/p_old.
- Pearson correlation between each estimate and dH over the states with A != 0, per seed.

``python tests/test_steer_estimator.py`` rewrites ``docs/steer_estimator.md`` with the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __name__ == "__main__":   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.entropy.steer import steer_omega  # noqa: E402

STATES = 512
LR = 1e-3
SEEDS = range(5)
SETTINGS = [(vocab, scale) for vocab in (4, 16, 64) for scale in (0.5, 1.0, 2.0, 4.0)]
FORMS = ("code", "paper", "sampled_logit", "exact")


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def one_step(vocab: int, scale: float, seed: int, lr: float = LR) -> dict[str, torch.Tensor]:
    """Realized per-state entropy change after one PG step, and each estimator's prediction."""
    generator = torch.Generator().manual_seed(seed)
    theta_old = torch.randn(STATES, vocab, dtype=torch.float64, generator=generator) * scale
    correct = torch.randint(0, vocab, (STATES,), generator=generator)
    p_old = theta_old.softmax(-1)
    entropy_old = -(p_old * p_old.log()).sum(-1)
    sampled = torch.multinomial(p_old, 1, generator=generator).squeeze(-1)
    rows = torch.arange(STATES)
    advantages = (sampled == correct).double() - p_old[rows, correct]

    theta = theta_old.clone().requires_grad_(True)
    logp = theta.log_softmax(-1)[rows, sampled]
    loss = -(advantages * torch.exp(logp - logp.detach())).sum()   # unclipped, unweighted PG loss
    loss.backward()
    p_new = (theta_old - lr * theta.grad).softmax(-1)
    realized = -(p_new * p_new.log()).sum(-1) - entropy_old

    x = p_old[rows, sampled]
    log_x_plus_h = x.log() + entropy_old
    collision = (p_old ** 2 * (p_old.log() + entropy_old[:, None])).sum(-1)
    estimates = {
        "code": -steer_omega(x, x, entropy_old, advantages, "code").double(),
        "paper": steer_omega(x, x, entropy_old, advantages, "paper").double(),
        "sampled_logit": -advantages * x ** 2 * (1 - x) * log_x_plus_h / x,
        "exact": -advantages * (x * log_x_plus_h - collision),
    }
    keep = advantages != 0
    return {"realized": realized[keep], **{name: value[keep] for name, value in estimates.items()}}


def estimator_table() -> list[dict]:
    """Per setting: mean and min over seeds of the Pearson correlation of each estimator with dH."""
    table = []
    for vocab, scale in SETTINGS:
        per_form = {form: [] for form in FORMS}
        per_magnitude = {form: [] for form in ("code", "paper")}
        for seed in SEEDS:
            result = one_step(vocab, scale, seed)
            for form in FORMS:
                per_form[form].append(pearson(result[form], result["realized"]))
            for form in per_magnitude:
                per_magnitude[form].append(pearson(result[form].abs(), result["realized"].abs()))
        row = {"vocab": vocab, "scale": scale}
        for form, values in per_form.items():
            row[form] = (sum(values) / len(values), min(values))
        for form, values in per_magnitude.items():
            row[f"{form}_abs"] = (sum(values) / len(values), min(values))
        table.append(row)
    return table


def summary(table: list[dict]) -> dict[str, float]:
    """Mean over settings of the per-setting mean correlations."""
    return {form: sum(row[form][0] for row in table) / len(table) for form in FORMS + ("code_abs", "paper_abs")}


def test_steer_omega_tracks_the_realized_entropy_change():
    table = estimator_table()
    means = summary(table)
    print("\nPearson(estimate, realized dH), mean over settings:",
          {form: round(value, 3) for form, value in means.items()})
    for row in table:
        print(row["vocab"], row["scale"], {form: tuple(round(v, 3) for v in row[form]) for form in FORMS + ("code_abs", "paper_abs")})
    for row in table:
        # the harness: at this lr the realized change is first order (the exact tabular formula fits)
        assert row["exact"][1] >= 0.999
        # both STEER forms point the right way in every setting and seed
        assert row["code"][1] > 0.3 and row["paper"][1] > 0.3
        # the released code form tracks the change at least as well as the paper form, on average
        assert row["code"][0] >= row["paper"][0]
    # neither STEER form is a close estimate in a tabular softmax (the brief's >= 0.9 bar is met in few
    # settings, see docs/steer_estimator.md): the averages stay well above chance, below the exact formula
    assert 0.6 < means["paper"] <= means["code"] < means["exact"]


def write_report(path: Path) -> None:
    table = estimator_table()
    means = summary(table)
    lines = [
        "# STEER's Omega vs the realized entropy change of a softmax policy",
        "",
        "Generated by `python tests/test_steer_estimator.py` (asserted by `pytest tests/test_steer_estimator.py`).",
        "",
        f"Tabular softmax policy: {STATES} independent states, logits ~ N(0, scale^2) over V tokens. In each state one",
        "token is sampled from pi_old, reward 1[token = a random correct token], advantage = reward - pi_old(correct).",
        f"One plain SGD step (lr = {LR}) on the unclipped, unweighted PG loss. Realized change dH_s = H_new(s) - H_old(s)",
        "of each state (one sampled token per state, so the first-order theory applies token by token).",
        "Pearson correlation between each estimate (at x = pi_old(a|s)) and dH, over states with A != 0;",
        f"mean (min) over {len(SEEDS)} seeds.",
        "",
        "| estimate | formula on the sampled token |",
        "|---|---|",
        "| code (`omega_form: code`, default) | -(A/p_old) x(1-x)(log x + H)  (sign restored; the code drops it) |",
        "| paper (`omega_form: paper`) | -A x(1-x)^2 (log x + H) / p_old |",
        "| sampled logit only | -A x^2(1-x)(log x + H) / p_old  (first order if only the sampled logit moved) |",
        "| exact (harness check) | -A [x(log x + H) - sum_j pi_j^2 (log pi_j + H)]  (tabular softmax, first order) |",
        "",
        "Columns code / paper / sampled logit only / exact: signed estimate vs dH. Columns abs code / abs paper: the",
        "magnitudes |Omega| vs |dH|, which is all that STEER's weights use.",
        "",
        "| V | logit scale | code | paper | sampled logit only | exact | abs code | abs paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    columns = FORMS + ("code_abs", "paper_abs")
    for row in table:
        cells = " | ".join(f"{row[form][0]:.3f} ({row[form][1]:.3f})" for form in columns)
        lines.append(f"| {row['vocab']} | {row['scale']} | {cells} |")
    lines.append("| **mean** | | " + " | ".join(f"**{means[form]:.3f}**" for form in columns) + " |")
    code_means = [row["code"][0] for row in table]
    better = sum(row["code"][0] >= row["paper"][0] for row in table)
    reaching = [f"V={row['vocab']}, scale {row['scale']}" for row in table if max(row["code"][0], row["paper"][0]) >= 0.9]
    lines += [
        "",
        "Findings:",
        "",
        f"- The released **code form tracks the realized change better than the paper form**: mean Pearson "
        f"{means['code']:.3f} vs {means['paper']:.3f}, higher on average in {better} of {len(table)} settings.",
        f"- Neither form is a close estimate of a softmax policy's entropy change: the code form's per-setting means",
        f"  range from {min(code_means):.3f} to {max(code_means):.3f} (single seeds down to "
        f"{min(row['code'][1] for row in table):.3f}); the better form's mean reaches 0.9 in {len(reaching)} of "
        f"{len(table)} settings ({'; '.join(reaching) or 'none'}).",
        "  Both differ from the exact first-order change of a softmax, -A [x(log x + H) - sum_j pi_j^2 (log pi_j + H)]:",
        "  they weight the sampled token by (1-x) or (1-x)^2 where the exact formula has x, and they leave out the",
        "  change that reaches the state through the other tokens' logits (the sum_j term). The exact formula fits",
        "  to 1.000, so the gap is the estimators', not a second-order effect of the step.",
        "- STEER's weights use only |Omega| / max|Omega|, so what matters there is the ranking of magnitudes",
        f"  (abs columns: code {means['code_abs']:.3f}, paper {means['paper_abs']:.3f} on average).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    write_report(Path(__file__).resolve().parents[1] / "docs" / "steer_estimator.md")
    print((Path(__file__).resolve().parents[1] / "docs" / "steer_estimator.md").read_text())
