"""The baselines: entropy bonus, forking tokens (80/20), Clip-Cov, KL-Cov and entropy advantage,
against loop references and hand-computed values."""

import math

import pytest
import torch

from trainers.algorithms import ppo_clip_loss
from trainers.config import RunConfig
from trainers.entropy import build_intervention
from trainers.entropy.clip_cov import clip_cov_selection, token_covariance
from trainers.entropy.entropy_advantage import entropy_shaped_advantages
from trainers.entropy.forking import top_entropy_mask
from trainers.entropy.kl_cov import kl_cov_selection, kl_cov_token_loss

from _entropy_batches import full_entropy_reference, micro_batch, python_quantile, random_rollout, step_batch


def build(method, section=None, **run):
    """The intervention for ``method`` with its config section ``section`` and run-level fields."""
    entropy = {"method": method, "chunk_size": 3}
    if section is not None:
        entropy[{"entropy_bonus": "bonus", "forking_tokens": "forking"}.get(method, method)] = section
    config = RunConfig.model_validate({"entropy": entropy, **run})
    return build_intervention(config.entropy, run_config=config)


def valid_positions(mask):
    return [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t] > 0]


# --------------------------------------------------------------------------- entropy bonus


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_entropy_bonus_matches_loop_reference(loss_agg):
    # rollout.max_new_tokens = the padded length of this batch (7): Dr.GRPO divides by the former
    bonus = build("entropy_bonus", {"coef": 0.01}, loss_agg=loss_agg, rollout={"max_new_tokens": 7})
    rollout = random_rollout(seed=20)
    batch = step_batch(rollout)
    rows = [0, 1, 2, 5, 9]
    micro = micro_batch(rollout, batch, rows)
    loss, metrics = bonus.extra_loss(micro)
    loss.backward()

    leaf = rollout.new_logits[rows].double().clone().requires_grad_(True)
    mask = rollout.response_mask[rows]
    per_row = []
    for i in range(len(rows)):
        per_row.append([full_entropy_reference(leaf[i, t]) for t in range(mask.shape[1]) if mask[i, t]])
    if loss_agg == "token_mean":
        aggregate = sum(sum(r) for r in per_row) / sum(len(r) for r in per_row)
    elif loss_agg == "seq_mean_token_mean":
        aggregate = sum(sum(r) / len(r) for r in per_row) / len(per_row)
    else:   # Dr.GRPO: token sums, mean over sequences, divided by the padded length (= max_new_tokens)
        aggregate = sum(sum(r) for r in per_row) / len(per_row) / mask.shape[1]
    expected = -0.01 * aggregate
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(micro.logits.grad.double(), leaf.grad, rtol=1e-4, atol=1e-9)
    assert metrics["bonus"] == pytest.approx(-expected.item(), rel=1e-5)


# --------------------------------------------------------------------------- forking tokens


@pytest.mark.parametrize("scope", ["batch", "response"])
@pytest.mark.parametrize("top_fraction", [0.2, 0.5, 1.0])
def test_forking_mask_matches_loop_reference(scope, top_fraction):
    rollout = random_rollout(seed=21)
    batch = step_batch(rollout)
    mask, entropy = batch.response_mask, batch.old_entropy
    got = top_entropy_mask(entropy, mask, top_fraction, scope)
    if scope == "batch":
        pool = [entropy[i, t].item() for i, t in valid_positions(mask)]
        thresholds = [python_quantile(pool, 1 - top_fraction)] * mask.shape[0]
    else:
        thresholds = [python_quantile([entropy[i, t].item() for t in range(mask.shape[1]) if mask[i, t]], 1 - top_fraction)
                      for i in range(mask.shape[0])]
    expected = [[bool(mask[i, t]) and entropy[i, t].item() >= thresholds[i] - 1e-7 for t in range(mask.shape[1])]
                for i in range(mask.shape[0])]
    assert got.tolist() == expected
    if top_fraction == 1.0:
        assert got.tolist() == mask.bool().tolist()


def test_forking_hand_computed_and_intervention():
    entropy = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    mask = torch.ones(1, 5)
    # 0.8-quantile of (0.1, 0.3, 0.5, 0.7, 0.9): position 0.8 * 4 = 3.2 -> 0.7 + 0.2 * (0.9 - 0.7) = 0.74
    assert top_entropy_mask(entropy, mask, 0.2, "batch").tolist() == [[False, True, False, False, False]]
    forking = build("forking_tokens")
    rollout = random_rollout(seed=22)
    batch = step_batch(rollout)
    metrics = forking.begin_step(batch)
    assert metrics["selected_fraction"] == pytest.approx(0.2, abs=0.05)
    assert metrics["entropy_selected"] > metrics["entropy_unselected"]
    rows = torch.tensor([3, 7, 11])
    loss_mask, _ = forking.loss_mask(micro_batch(rollout, batch, rows))
    assert loss_mask.tolist() == top_entropy_mask(batch.old_entropy, batch.response_mask, 0.2, "batch")[rows].float().tolist()


# --------------------------------------------------------------------------- Clip-Cov


def covariance_reference(advantages, logp, mask):
    positions = valid_positions(mask)
    mean_a = sum(advantages[i, t].item() for i, t in positions) / len(positions)
    mean_l = sum(logp[i, t].item() for i, t in positions) / len(positions)
    return {(i, t): (advantages[i, t].item() - mean_a) * (logp[i, t].item() - mean_l) for i, t in positions}


def test_clip_cov_candidates_and_count_match_loop_reference():
    generator = torch.Generator().manual_seed(23)
    advantages = torch.randn(6, 1, generator=generator).expand(6, 9) * 3
    logp = -torch.rand(6, 9, generator=generator) * 4
    old_logp = logp + 0.4 * torch.randn(6, 9, generator=generator)
    mask = (torch.rand(6, 9, generator=generator) < 0.85).float()
    cov = covariance_reference(advantages, logp, mask)
    clipped = {}
    for (i, t) in cov:
        r = math.exp(logp[i, t].item() - old_logp[i, t].item())
        a = advantages[i, t].item()
        clipped[(i, t)] = -a * min(max(r, 0.8), 1.28) > -a * r
    candidates = {p for p, c in cov.items() if 0.5 < c < 4.0 and not clipped[p]}
    assert candidates and any(clipped.values())
    for ratio in (2e-4, 0.1, 1.0):
        _, clip_stats = ppo_clip_loss(logp, old_logp, advantages, 0.2, 0.28)   # the step's own PPO loss statistics
        chosen, got_candidates = clip_cov_selection(advantages, logp, mask, clip_stats["clipped_term_larger"], ratio,
                                                    0.5, 4.0, torch.Generator().manual_seed(0))
        assert {tuple(p) for p in torch.nonzero(got_candidates).tolist()} == candidates
        picked = {tuple(p) for p in torch.nonzero(chosen).tolist()}
        assert picked <= candidates
        assert len(picked) == min(max(1, int(ratio * len(cov))), len(candidates))
    torch.testing.assert_close(token_covariance(advantages, logp, mask)[mask.bool()],
                               torch.tensor([cov[p] for p in valid_positions(mask)]), rtol=1e-5, atol=1e-6)


def test_clip_cov_intervention_zeroes_the_chosen_tokens_and_checkpoints_its_rng():
    clip_cov = build("clip_cov", {"ratio": 0.05, "lower": -10.0, "upper": 10.0})
    rollout = random_rollout(seed=24)
    batch = step_batch(rollout)
    micro = micro_batch(rollout, batch, list(range(12)))
    state = clip_cov.state_dict()
    weights, metrics = clip_cov.token_weights(micro)
    assert set(weights[micro.response_mask.bool()].unique().tolist()) == {0.0, 1.0}
    assert metrics["detached_fraction"] == pytest.approx(int(0.05 * micro.response_mask.sum().item()) /
                                                         micro.response_mask.sum().item())
    clip_cov.load_state_dict(state)
    again, _ = clip_cov.token_weights(micro)
    assert torch.equal(weights, again)


# --------------------------------------------------------------------------- KL-Cov


def test_kl_cov_matches_loop_reference():
    kl_cov = build("kl_cov", {"ratio": 0.1, "coef": 0.5})
    rollout = random_rollout(seed=25, drift=0.2)
    batch = step_batch(rollout)
    micro = micro_batch(rollout, batch, list(range(4, 12)))
    advantages = micro.advantages
    token_loss, metrics = kl_cov.modify_token_loss(micro, torch.zeros_like(micro.logp), advantages)
    cov = covariance_reference(advantages, micro.logp.detach(), micro.response_mask)
    count = max(1, int(0.1 * len(cov)))
    top = set(sorted(cov, key=lambda p: -cov[p])[:count])
    assert {tuple(p) for p in torch.nonzero(kl_cov_selection(advantages, micro.logp, micro.response_mask, 0.1)).tolist()} == top
    for (i, t) in cov:
        log_ratio = micro.logp[i, t].item() - micro.old_logp[i, t].item()
        expected = -advantages[i, t].item() * math.exp(log_ratio) + (0.5 * abs(log_ratio) if (i, t) in top else 0.0)
        assert token_loss[i, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert metrics["penalized_fraction"] == pytest.approx(count / len(cov))
    token_loss[micro.response_mask.bool()].sum().backward()
    assert micro.logits.grad.abs().sum() > 0


def test_kl_cov_has_no_ratio_clipping_and_selects_at_least_one_token():
    logp = torch.tensor([[-0.1, -2.0, -1.0]], requires_grad=True)
    old_logp = torch.tensor([[-1.0, -1.0, -1.0]])
    advantages = torch.tensor([[1.0, 1.0, 1.0]])
    chosen = kl_cov_selection(advantages, logp, torch.ones(1, 3), ratio=2e-4)
    assert chosen.sum() == 1                     # max(1, floor(2e-4 * 3)) as in the code
    loss = kl_cov_token_loss(logp, old_logp, advantages, torch.zeros_like(chosen), 1.0)
    assert loss[0, 0].item() == pytest.approx(-math.exp(0.9))   # ratio 2.46, unclipped


# --------------------------------------------------------------------------- entropy advantage


def test_entropy_advantage_matches_loop_reference_and_keeps_zero_variance_groups_at_zero():
    intervention = build("entropy_advantage", {"alpha": 0.4, "kappa": 2.0})
    rollout = random_rollout(seed=26)
    batch = step_batch(rollout)
    rows = [0, 5, 8, 9, 10]
    micro = micro_batch(rollout, batch, rows)
    shaped = intervention.token_advantages(micro)
    for i in range(len(rows)):
        for t in range(micro.logp.shape[1]):
            a = micro.advantages[i, t].item()
            h = full_entropy_reference(rollout.new_logits[rows[i], t].double()).item()
            assert shaped[i, t].item() == pytest.approx(a + min(0.4 * h, abs(a) / 2.0), rel=1e-5, abs=1e-6)
    assert shaped[:2].abs().max() == 0            # all-correct and all-wrong groups: A = 0 stays 0
    assert (torch.sign(shaped[2:]) == torch.sign(micro.advantages[2:])).all()
    _, metrics = intervention.modify_token_loss(micro, torch.zeros_like(shaped), shaped)
    assert metrics["bonus_mean"] > 0


def test_entropy_advantage_hand_computed():
    advantages = torch.tensor([1.0, -1.0, 0.0, 0.1])
    entropy = torch.tensor([2.0, 0.5, 3.0, 1.0])
    # min(0.4 H, |A|/2) = (0.5, 0.2, 0, 0.05)
    assert entropy_shaped_advantages(advantages, entropy).tolist() == pytest.approx([1.5, -0.8, 0.0, 0.15])
