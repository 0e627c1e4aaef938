"""GRPO math against hand-computed values and slow, obvious references (loops over tokens)."""

import math

import pytest
import torch

from trainers.algorithms import aggregate, compute_advantages, kl_k3, ppo_clip_loss


def test_grpo_advantages_by_hand():
    # group 1: rewards 1,0,0,1 -> mean 0.5, unbiased std sqrt(1/3) = 0.57735
    # group 2: all zero -> mean 0, std 0 -> advantages 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    adv = compute_advantages("grpo", rewards, group_size=4)
    std = math.sqrt(1 / 3)
    expected = [0.5 / (std + 1e-6), -0.5 / (std + 1e-6)] * 1
    assert adv[:2].tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[2:4].tolist() == pytest.approx([-0.5 / (std + 1e-6), 0.5 / (std + 1e-6)], rel=1e-6)
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # zero-variance group: no signal


def test_dr_grpo_advantages_are_mean_centred_only():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert compute_advantages("dr_grpo", rewards, 4).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_groups_of_one_get_mean_zero_std_one():
    rewards = torch.tensor([1.0, 0.0, 1.0])
    assert compute_advantages("grpo", rewards, 1).tolist() == pytest.approx([1.0 / (1 + 1e-6), 0.0, 1.0 / (1 + 1e-6)])


def test_unknown_advantage_names_the_field():
    with pytest.raises(ValueError, match="advantage"):
        compute_advantages("ppo", torch.zeros(4), 2)


def _reference_token_loss(logp, old_logp, adv, eps_low, eps_high, dual_c):
    out = torch.zeros_like(logp)
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            r = math.exp(max(-20.0, min(20.0, float(logp[i, t] - old_logp[i, t]))))
            a = float(adv[i, t])
            loss = max(-a * r, -a * min(max(r, 1 - eps_low), 1 + eps_high))
            if dual_c is not None and a < 0:
                loss = min(loss, -a * dual_c)
            out[i, t] = loss
    return out


@pytest.mark.parametrize("dual_c", [None, 3.0])
def test_ppo_clip_loss_matches_reference(dual_c):
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(5, 7, generator=g) * 0.5 - 1
    old_logp = logp + torch.randn(5, 7, generator=g) * 0.8
    adv = torch.randn(5, 1, generator=g).expand(5, 7) * 2
    loss, stats = ppo_clip_loss(logp, old_logp, adv, 0.2, 0.28, dual_c)
    assert torch.allclose(loss, _reference_token_loss(logp, old_logp, adv, 0.2, 0.28, dual_c), atol=1e-5)
    ratio = torch.exp(logp - old_logp)
    assert torch.equal(stats["clipped_low"], (adv < 0) & (ratio < 0.8))
    assert torch.equal(stats["clipped_high"], (adv > 0) & (ratio > 1.28))


def test_clip_by_hand_and_gradient_vanishes_when_clipped():
    # A = +1, r = 1.5 > 1 + 0.28: loss = -1.28 (clipped, no gradient)
    # A = -1, r = 0.5 < 1 - 0.2: loss = max(0.5, 0.8) = 0.8 (clipped, no gradient)
    # A = +1, r = 0.5: loss = max(-0.5, -0.8) = -0.5 (unclipped, gradient -r = -0.5)
    logp = torch.log(torch.tensor([[1.5, 0.5, 0.5]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, stats = ppo_clip_loss(logp, torch.zeros(1, 3), adv, 0.2, 0.28)
    assert loss.detach()[0].tolist() == pytest.approx([-1.28, 0.8, -0.5])
    loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, 0.0, -0.5])
    assert stats["clipped_high"].tolist() == [[True, False, False]]
    assert stats["clipped_low"].tolist() == [[False, True, False]]


@pytest.mark.parametrize("dual_c", [None, 3.0])
def test_clip_statistics_handed_to_the_hooks_match_a_loop(dual_c):
    """``clipped`` (STEER's I_clip = 0: no gradient through r) and ``clipped_term_larger`` (Clip-Cov's
    "already clipped": -A clip(r) > -A r, dual clip not considered), token by token."""
    g = torch.Generator().manual_seed(3)
    logp = torch.randn(6, 8, generator=g) * 0.5 - 1
    old_logp = logp + torch.randn(6, 8, generator=g) * 1.5
    adv = torch.randn(6, 1, generator=g).expand(6, 8) * 2
    _, stats = ppo_clip_loss(logp, old_logp, adv, 0.2, 0.28, dual_c)
    for i in range(6):
        for t in range(8):
            a, r = adv[i, t].item(), math.exp(logp[i, t].item() - old_logp[i, t].item())
            no_gradient = (a > 0 and r > 1.28) or (a < 0 and r < 0.8) or \
                (dual_c is not None and a < 0 and max(-a * r, -a * min(max(r, 0.8), 1.28)) > -a * dual_c)
            assert stats["clipped"][i, t].item() == no_gradient, (i, t)
            assert stats["clipped_term_larger"][i, t].item() == (-a * min(max(r, 0.8), 1.28) > -a * r), (i, t)
    assert stats["clipped"].any() and (~stats["clipped"]).any()
    if dual_c is not None:
        assert stats["clipped_dual"].any()


def test_dual_clip_by_hand():
    # A = -1, r = 5: plain clip loss max(5, 1.2) = 5; dual clip c = 3 -> min(5, 3) = 3
    logp = torch.log(torch.tensor([[5.0]]))
    loss, stats = ppo_clip_loss(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]), 0.2, 0.2, dual_c=3.0)
    assert loss.item() == pytest.approx(3.0)
    assert stats["clipped_dual"].item()


VALUES = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


def test_aggregations_by_hand():
    # token_mean: (1+2+3+4)/4 = 2.5
    assert aggregate("token_mean", VALUES, MASK).item() == pytest.approx(2.5)
    # seq_mean_token_mean: mean(2, 4) = 3
    assert aggregate("seq_mean_token_mean", VALUES, MASK).item() == pytest.approx(3.0)
    # seq_mean_token_sum_norm: mean(6, 4) / T(=4) = 1.25
    assert aggregate("seq_mean_token_sum_norm", VALUES, MASK).item() == pytest.approx(1.25)


def test_dr_grpo_normalizer_is_a_constant_length_not_the_padding():
    # mean(6, 4) / 10 = 0.5, however many pad columns the batch carries; the other modes ignore it
    padded_values = torch.cat([VALUES, torch.full((2, 3), 7.0)], dim=1)
    padded_mask = torch.cat([MASK, torch.zeros(2, 3)], dim=1)
    for values, mask in ((VALUES, MASK), (padded_values, padded_mask)):
        assert aggregate("seq_mean_token_sum_norm", values, mask, norm_length=10).item() == pytest.approx(0.5)
        assert aggregate("token_mean", values, mask, norm_length=10).item() == pytest.approx(2.5)
        assert aggregate("seq_mean_token_mean", values, mask, norm_length=10).item() == pytest.approx(3.0)


def test_aggregations_match_brute_force_on_random_input():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(6, 9, generator=g)
    mask = (torch.rand(6, 9, generator=g) > 0.3).float()
    mask[:, 0] = 1
    tokens = [(i, t) for i in range(6) for t in range(9) if mask[i, t]]
    assert aggregate("token_mean", values, mask).item() == pytest.approx(sum(values[i, t].item() for i, t in tokens) / len(tokens), rel=1e-5)
    per_seq = [sum(values[i, t].item() for t in range(9) if mask[i, t]) for i in range(6)]
    counts = [sum(1 for t in range(9) if mask[i, t]) for i in range(6)]
    assert aggregate("seq_mean_token_mean", values, mask).item() == pytest.approx(sum(s / c for s, c in zip(per_seq, counts)) / 6, rel=1e-5)
    assert aggregate("seq_mean_token_sum_norm", values, mask).item() == pytest.approx(sum(per_seq) / 6 / 9, rel=1e-5)


def test_kl_k3_is_zero_at_equality_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert kl_k3(logp, logp).tolist() == [0.0, 0.0, 0.0]
    ref = torch.tensor([-1.5, -1.0, -0.5])
    # delta = ref - logp = -0.5, 1, 0 -> exp(d) - d - 1
    expected = [math.exp(-0.5) + 0.5 - 1, math.exp(1) - 2, 0.0]
    assert kl_k3(logp, ref).tolist() == pytest.approx(expected, rel=1e-6)


def test_truncated_importance_weights_by_hand():
    from trainers.algorithms import importance_weight_metrics, rollout_mismatch_metrics, truncated_importance_weights

    trainer = torch.tensor([[math.log(0.5), math.log(0.9), math.log(0.2)]])
    sampler = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.4)]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # ratios 1, 3, 0.5 -> capped at 2: 1, 2, 0.5
    assert truncated_importance_weights(trainer, sampler, 2.0)[0].tolist() == pytest.approx([1.0, 2.0, 0.5], rel=1e-6)
    metrics = importance_weight_metrics(trainer, sampler, mask, 2.0)
    assert metrics["train/rollout_is_weight_mean"] == pytest.approx(1.5)          # (1 + 2) / 2 masked tokens
    assert metrics["train/rollout_is_truncated_fraction"] == pytest.approx(0.5)
    mismatch = rollout_mismatch_metrics(trainer, sampler, mask)
    assert mismatch["train/rollout_logprob_diff"] == pytest.approx(math.log(3) / 2, rel=1e-6)
    assert mismatch["train/rollout_logprob_diff_max"] == pytest.approx(math.log(3), rel=1e-6)
    # k3 of delta = log 3 on token 2: 3 - log 3 - 1; token 1: 0
    assert mismatch["train/rollout_kl"] == pytest.approx((2 - math.log(3)) / 2, rel=1e-6)


def test_aggregate_with_mini_batch_totals_gives_shares_that_sum_to_the_whole():
    """Two micro-batches of one mini-batch: their shares add up to the aggregate of the whole (verl 0.9.1)."""
    from trainers.algorithms import BatchTotals

    values = torch.arange(1.0, 13.0).reshape(4, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    totals = BatchTotals.of(mask)
    assert (totals.tokens, totals.sequences) == (7.0, 4.0)
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        whole = aggregate(mode, values, mask, 5)
        shares = aggregate(mode, values[:2], mask[:2], 5, totals) + aggregate(mode, values[2:], mask[2:], 5, totals)
        assert shares.item() == pytest.approx(whole.item(), rel=1e-6), mode
    # token_mean by hand: (1+2+3 + 4 + 7+8 + 10) / 7
    assert aggregate("token_mean", values, mask).item() == pytest.approx(35 / 7)
