"""AER (reconstruction): allocation by group accuracy, the clipped dual update of alpha, the target
tau x H_0, and the weighted entropy loss, against hand values and loop references."""

import pytest
import torch

from trainers.config import RunConfig
from trainers.entropy import build_intervention
from trainers.entropy.aer import aer_allocation_weights, aer_alpha_update, aer_coefficients, aer_entropy_loss

from _entropy_batches import full_entropy_reference, micro_batch, random_rollout, step_batch


def build_aer(anchor=None, **aer):
    data = {"entropy": {"method": "aer", "chunk_size": 3, "aer": aer}}
    if anchor is not None:
        data["entropy"]["anchor"] = anchor
    config = RunConfig.model_validate(data)
    return build_intervention(config.entropy, run_config=config)


def test_allocation_weights_hand_computed():
    accuracy = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert aer_allocation_weights(accuracy, 0.5, "threshold").tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert aer_allocation_weights(accuracy, 0.5, "linear").tolist() == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert aer_allocation_weights(accuracy, 0.0, "linear").tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert aer_allocation_weights(accuracy, 1.0, "linear").tolist() == [1.0] * 5
    assert aer_allocation_weights(accuracy, 1.0, "threshold").tolist() == [1.0] * 5
    assert aer_coefficients(accuracy, 0.002, 0.5).tolist() == pytest.approx([0.002, 0.002, 0.002, 0.0, 0.0])
    with pytest.raises(ValueError, match="entropy.aer.allocation"):
        aer_allocation_weights(accuracy, 0.5, "step")


def test_alpha_update_is_clipped_to_its_bounds():
    assert aer_alpha_update(0.001, target_entropy=1.0, current_entropy=0.5, alpha_lr=0.01, alpha_max=0.01) == pytest.approx(0.006)
    assert aer_alpha_update(0.001, target_entropy=1.0, current_entropy=0.0, alpha_lr=0.1, alpha_max=0.01) == 0.01
    assert aer_alpha_update(0.001, target_entropy=0.5, current_entropy=1.0, alpha_lr=0.01, alpha_max=0.01) == 0.0


def test_entropy_loss_matches_loop_reference():
    entropy = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    coefficients = torch.tensor([0.1, 0.0, 0.3])
    total, count = 0.0, 0
    for i in range(3):
        for t in range(4):
            if mask[i, t]:
                total += coefficients[i].item() * entropy[i, t].item()
                count += 1
    assert aer_entropy_loss(entropy, mask, coefficients).item() == pytest.approx(-total / count)


def test_aer_steps_follow_the_dual_update_toward_tau_times_initial_entropy():
    aer = build_aer(alpha_init=0.004, alpha_lr=0.01, alpha_max=0.02, rho=0.5)
    alpha = 0.004
    h0 = None
    for step, (seed, scale) in enumerate([(10, 1.0), (11, 3.0), (12, 6.0)], start=1):
        batch = step_batch(random_rollout(seed=seed, logit_scale=scale), step=step)
        mask = batch.response_mask
        h_t = ((batch.old_entropy * mask).sum() / mask.sum()).item()
        h0 = h_t if h0 is None else h0
        alpha = min(max(alpha + 0.01 * (0.5 * h0 - h_t), 0.0), 0.02)
        metrics = aer.begin_step(batch)
        assert metrics["entropy"] == pytest.approx(h_t, rel=1e-6)
        assert metrics["target"] == pytest.approx(0.5 * h0, rel=1e-6)     # tau defaults to 0.5
        assert metrics["alpha"] == pytest.approx(alpha, rel=1e-6, abs=1e-12)
        # groups: all correct (acc 1), all wrong (acc 0), mixed (acc 0.5) -> threshold regularizes 2 of 3
        assert metrics["fraction_regularized"] == pytest.approx(2 / 3)
    assert aer.alpha > 0   # the sharper later policies fell below the target, so alpha grew back


def test_aer_loss_and_gradient_match_loop_reference_and_skip_easy_groups():
    aer = build_aer(alpha_init=0.01, alpha_lr=0.0, rho=0.5)
    rollout = random_rollout(seed=13)
    batch = step_batch(rollout)
    aer.begin_step(batch)
    rows = [2, 3, 4, 5, 8, 9]          # all-correct group (acc 1), all-wrong (acc 0), mixed (acc 0.5)
    micro = micro_batch(rollout, batch, rows, chunk_size=3)
    loss, metrics = aer.extra_loss(micro)
    loss.backward()

    leaf = rollout.new_logits[rows].double().clone().requires_grad_(True)
    accuracy = batch.group_accuracy[rows].tolist()
    mask = rollout.response_mask[rows]
    terms, count = [], 0
    for i in range(len(rows)):
        for t in range(mask.shape[1]):
            if mask[i, t]:
                count += 1
                if accuracy[i] <= 0.5:
                    terms.append(0.01 * full_entropy_reference(leaf[i, t]))
    expected = -sum(terms) / count
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(micro.logits.grad.double(), leaf.grad, rtol=1e-4, atol=1e-8)
    assert micro.logits.grad[:2].abs().sum() == 0       # the all-correct group is not regularized
    assert micro.logits.grad[2:].abs().sum() > 0        # the all-wrong (zero variance) group is


def test_no_loss_when_no_prompt_is_regularized():
    aer = build_aer(alpha_init=0.01, alpha_lr=0.0, rho=0.5)
    rollout = random_rollout(seed=14)
    batch = step_batch(rollout)
    aer.begin_step(batch)
    loss, _ = aer.extra_loss(micro_batch(rollout, batch, [0, 1, 2, 3]))   # the all-correct group only
    assert loss is None


def test_aer_state_survives_a_checkpoint(tmp_path):
    aer = build_aer(anchor={"source": "initial", "ratio": 0.4}, alpha_init=0.003, alpha_lr=0.01)
    aer.begin_step(step_batch(random_rollout(seed=15), step=1))
    aer.begin_step(step_batch(random_rollout(seed=16, logit_scale=4.0), step=2))
    torch.save(aer.state_dict(), tmp_path / "intervention.pt")
    resumed = build_aer(anchor={"source": "initial", "ratio": 0.4}, alpha_init=0.003, alpha_lr=0.01)
    resumed.load_state_dict(torch.load(tmp_path / "intervention.pt", weights_only=False))
    batch = step_batch(random_rollout(seed=17, logit_scale=5.0), step=3)
    assert resumed.begin_step(batch) == aer.begin_step(batch)
