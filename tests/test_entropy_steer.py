"""STEER: Omega (code and paper forms), the exp and linear weight mappings and their edge cases, and
micro-batch vs step-batch normalization, against loops and hand-computed values."""

import math

import pytest
import torch

from trainers.config import RunConfig
from trainers.entropy import build_intervention
from trainers.entropy.steer import steer_omega, steer_weights

from _entropy_batches import micro_batch, random_rollout, step_batch


def omega_reference(x, p_old, entropy, advantage, form, clipped=False):
    x = min(max(x, 1e-8), 1 - 1e-8)
    p_old = min(max(p_old, 1e-8), 1.0)
    if form == "code":
        value = advantage / p_old * x * (1 - x) * (math.log(x) + entropy)
    else:
        value = 0.0 if clipped else -advantage * x * (1 - x) ** 2 * (math.log(x) + entropy) / p_old
    return value if math.isfinite(value) else 0.0


def weights_reference(omega, mask, w_min, mapping, w_max=1.0, floor=0.02, m_max=None, m_min=None):
    rows, length = len(omega), len(omega[0])
    valid = [abs(omega[i][t]) for i in range(rows) for t in range(length) if mask[i][t]]
    m_max = max(valid) if m_max is None else m_max
    m_min = min(valid) if m_min is None else m_min
    out = [[0.0] * length for _ in range(rows)]
    for i in range(rows):
        for t in range(length):
            if not mask[i][t]:
                continue
            m = abs(omega[i][t])
            if mapping == "exp":
                k = -math.log(w_min) / max(m_max, floor)
                out[i][t] = min(max(math.exp(-k * m), w_min), 1.0)
            else:
                w = w_max - (m - m_min) * (w_max - w_min) / (m_max - m_min) if m_max > m_min else (w_min + w_max) / 2
                out[i][t] = min(max(w, w_min), w_max)
    return out


@pytest.mark.parametrize("form", ["code", "paper"])
def test_omega_matches_loop_reference(form):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 6, generator=generator)
    p_old = torch.rand(4, 6, generator=generator)
    entropy = torch.rand(4, 6, generator=generator) * 3
    advantages = torch.randn(4, 6, generator=generator)
    clipped = torch.rand(4, 6, generator=generator) < 0.3
    x[0, 0], p_old[0, 1], x[1, 0] = 0.0, 0.0, 1.0          # exercise the clamps
    got = steer_omega(x, p_old, entropy, advantages, form, clipped if form == "paper" else None)
    for i in range(4):
        for t in range(6):
            expected = omega_reference(x[i, t].item(), p_old[i, t].item(), entropy[i, t].item(),
                                       advantages[i, t].item(), form, form == "paper" and clipped[i, t].item())
            assert got[i, t].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_non_finite_omega_becomes_zero():
    x = torch.tensor([0.3, 0.3, 0.3])
    entropy = torch.tensor([float("inf"), float("nan"), 1.0])
    omega = steer_omega(x, torch.tensor([0.5, 0.5, 0.5]), entropy, torch.ones(3), "code")
    assert omega[:2].tolist() == [0.0, 0.0] and omega[2].item() != 0.0


def test_exp_weights_hand_computed():
    omega = torch.tensor([[0.1, -0.05, 0.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])        # the huge value is padding: ignored
    weights = steer_weights(omega, mask, w_min=0.8, mapping="exp")
    # k = ln(1/0.8) / 0.1: the largest token gets exactly w_min, half of it sqrt(w_min), zero gets 1
    assert weights[0, :3].tolist() == pytest.approx([0.8, math.sqrt(0.8), 1.0], rel=1e-6)
    assert weights[0, 3].item() == 0.0


def test_exp_weights_floor_on_the_largest_omega():
    omega = torch.tensor([[0.01, 0.005]])
    weights = steer_weights(omega, torch.ones(1, 2), w_min=0.8, mapping="exp", omega_floor=0.02)
    # max |Omega| = 0.01 < floor 0.02 -> k = ln(1.25)/0.02 -> the largest gets 0.8 ** 0.5, not 0.8
    assert weights[0].tolist() == pytest.approx([0.8 ** 0.5, 0.8 ** 0.25], rel=1e-6)


def test_linear_weights_hand_computed():
    omega = torch.tensor([[0.0, -0.5, 1.0]])
    weights = steer_weights(omega, torch.ones(1, 3), w_min=0.8, mapping="linear", w_max=1.2)
    assert weights[0].tolist() == pytest.approx([1.2, 1.0, 0.8], rel=1e-6)


def test_all_equal_omega():
    omega = torch.full((2, 3), -0.4)
    mask = torch.ones(2, 3)
    assert steer_weights(omega, mask, 0.7, "exp").unique().tolist() == pytest.approx([0.7])
    assert steer_weights(omega, mask, 0.7, "linear", w_max=1.1).unique().tolist() == pytest.approx([0.9])
    tiny = torch.full((2, 3), 0.001)                     # all equal and below the floor
    assert steer_weights(tiny, mask, 0.7, "exp").unique().tolist() == pytest.approx([0.7 ** (0.001 / 0.02)])


def test_zero_reward_variance_groups_keep_full_weight():
    rollout = random_rollout(seed=3)
    batch = step_batch(rollout)
    advantages = batch.advantages[:, None].expand_as(batch.old_logp)
    omega = steer_omega(batch.old_logp.exp(), batch.old_logp.exp(), batch.old_entropy, advantages, "code")
    weights = steer_weights(omega, batch.response_mask, 0.8, "exp")
    zero_variance_rows = slice(0, 8)                     # the all-correct and the all-wrong groups: A = 0
    assert omega[zero_variance_rows].abs().max() == 0
    valid = batch.response_mask[zero_variance_rows].bool()
    assert weights[zero_variance_rows][valid].unique().tolist() == [1.0]
    assert weights[8:][batch.response_mask[8:].bool()].min().item() == pytest.approx(0.8)


def test_weights_match_loop_reference_on_random_omegas():
    generator = torch.Generator().manual_seed(4)
    omega = torch.randn(5, 7, generator=generator) * 0.3
    mask = (torch.rand(5, 7, generator=generator) < 0.8).float()
    for mapping, w_max in (("exp", 1.0), ("linear", 1.2)):
        got = steer_weights(omega, mask, 0.6, mapping, w_max)
        expected = weights_reference(omega.tolist(), mask.tolist(), 0.6, mapping, w_max)
        torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    empty = steer_weights(omega, torch.zeros(5, 7), 0.6, "exp")
    assert empty.abs().sum() == 0


def test_w_min_is_validated():
    with pytest.raises(ValueError, match="w_min"):
        steer_weights(torch.ones(1, 1), torch.ones(1, 1), 0.0)
    with pytest.raises(ValueError, match="w_min"):
        steer_weights(torch.ones(1, 1), torch.ones(1, 1), 1.5)


# --------------------------------------------------------------------------- the intervention


def build_steer(clip=None, **steer):
    data = {"entropy": {"method": "steer", "steer": steer}}
    if clip is not None:
        data["clip"] = clip
    config = RunConfig.model_validate(data)
    return build_intervention(config.entropy, run_config=config)


def test_micro_batch_normalization_matches_loop_reference():
    steer = build_steer(w_min=0.7)
    rollout = random_rollout(seed=5)
    batch = step_batch(rollout)
    steer.begin_step(batch)
    rows = [8, 9, 10, 11, 0]
    micro = micro_batch(rollout, batch, rows)
    weights, metrics = steer.token_weights(micro)
    omega = [[omega_reference(math.exp(micro.logp[i, t].item()), math.exp(micro.old_logp[i, t].item()),
                              micro.old_entropy[i, t].item(), micro.advantages[i, t].item(), "code")
              for t in range(micro.logp.shape[1])] for i in range(len(rows))]
    expected = weights_reference(omega, micro.response_mask.tolist(), 0.7, "exp")
    torch.testing.assert_close(weights, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert not weights.requires_grad
    assert metrics["weight_min"] == pytest.approx(0.7, rel=1e-6)
    assert metrics["weight_max"] <= 1.0 and 0.7 < metrics["weight_mean"] < 1.0


def test_batch_normalization_uses_the_step_batch_maximum():
    rollout = random_rollout(seed=6, drift=0.0)          # current = old policy: x = p_old (first mini-batch)
    batch = step_batch(rollout)
    steer = build_steer(w_min=0.7, normalize_over="batch")
    steer.begin_step(batch)
    step_omega = steer_omega(batch.old_logp.exp(), batch.old_logp.exp(), batch.old_entropy,
                             batch.advantages[:, None].expand_as(batch.old_logp), "code")
    step_weights = steer_weights(step_omega, batch.response_mask, 0.7, "exp")
    rows = [9, 10]
    weights, _ = steer.token_weights(micro_batch(rollout, batch, rows))
    torch.testing.assert_close(weights, step_weights[rows], rtol=1e-5, atol=1e-6)
    micro_only, _ = build_steer(w_min=0.7).token_weights(micro_batch(rollout, batch, rows))
    # the micro-batch's own max gets w_min; against the larger step max the same tokens weigh more
    assert micro_only.min() == pytest.approx(0.7)
    assert (weights >= micro_only - 1e-6).all() and (weights > micro_only + 1e-3).any()


def test_paper_form_zeroes_clipped_tokens():
    steer = build_steer(clip={"eps_low": 0.2, "eps_high": 0.28}, omega_form="paper", w_min=0.5)
    rollout = random_rollout(seed=7, drift=0.0)
    batch = step_batch(rollout)
    steer.begin_step(batch)
    rows = [8, 9, 10, 11]                                # the mixed group: A != 0
    logits = rollout.new_logits[rows].clone()
    advantages = batch.advantages[rows]
    # push the first sampled token of each row far up: A > 0 rows clip high (r > 1.28); A < 0 rows are
    # not clipped by a ratio above 1 (their clip is r < 0.8) and keep their Omega
    for i in range(len(rows)):
        logits[i, 0, rollout.tokens[rows[i], 0]] += 5.0
    micro = micro_batch(rollout, batch, rows, logits=logits.requires_grad_(True), clip=steer.run_config.clip)
    ratio0 = (micro.logp[:, 0] - micro.old_logp[:, 0]).exp()
    assert (ratio0 > 1.28).all()
    weights, _ = steer.token_weights(micro)
    positive = advantages > 0
    assert positive.any() and (~positive).any()
    assert (weights[positive, 0] == 1.0).all()          # clipped -> Omega = 0 -> weight 1
    code_weights, _ = build_steer(omega_form="code", w_min=0.5).token_weights(micro)
    assert (code_weights[positive, 0] < 1.0).all()      # the code form has no I_clip
