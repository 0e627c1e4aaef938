"""SIREN (peak-entropy mask, selected entropy, anchored loss) and the shared target-entropy anchor,
against loop references and hand-computed values."""

import pytest
import torch

from trainers.config import EntropyConfig, RunConfig
from trainers.entropy import build_intervention
from trainers.entropy.anchor import TargetAnchor
from trainers.entropy.siren import FEATURE, peak_entropy_mask, selected_entropy

from _entropy_batches import (loop_over_positions, micro_batch, nucleus_entropy_reference, python_quantile,
                              random_rollout, step_batch)


# --------------------------------------------------------------------------- loop references


def peak_mask_reference(entropy: torch.Tensor, mask: torch.Tensor, quantile: float, scope: str) -> list[list[bool]]:
    rows, length = entropy.shape
    valid = [[mask[i, t].item() > 0 for t in range(length)] for i in range(rows)]
    if scope == "batch":
        pool = [entropy[i, t].item() for i in range(rows) for t in range(length) if valid[i][t]]
        thresholds = [python_quantile(pool, quantile) if pool else None] * rows
    else:
        thresholds = []
        for i in range(rows):
            values = [entropy[i, t].item() for t in range(length) if valid[i][t]]
            thresholds.append(python_quantile(values, quantile) if values else None)
    return [[valid[i][t] and thresholds[i] is not None and entropy[i, t].item() > thresholds[i]
             for t in range(length)] for i in range(rows)]


def selected_entropy_reference(entropy: torch.Tensor, selection: list[list[bool]], agg: str) -> torch.Tensor:
    rows, length = entropy.shape
    if agg == "token_mean":
        picked = [entropy[i, t] for i in range(rows) for t in range(length) if selection[i][t]]
        return sum(picked) / len(picked) if picked else entropy.new_zeros(())
    per_row = []
    for i in range(rows):
        picked = [entropy[i, t] for t in range(length) if selection[i][t]]
        per_row.append(sum(picked) / len(picked) if picked else entropy.new_zeros(()))
    return sum(per_row) / rows


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("scope", ["response", "batch"])
@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.8, 0.95])
def test_peak_entropy_mask_matches_loop_reference(scope, quantile):
    rollout = random_rollout(seed=1)
    entropy = torch.rand(rollout.response_mask.shape, generator=torch.Generator().manual_seed(2)) * 3
    entropy = entropy + 10.0 * (1 - rollout.response_mask)   # padding holds large values: must never be picked
    got = peak_entropy_mask(entropy, rollout.response_mask, quantile, scope)
    assert got.tolist() == peak_mask_reference(entropy, rollout.response_mask, quantile, scope)
    assert not got[rollout.response_mask == 0].any()


def test_peak_entropy_mask_hand_computed_and_empty_cases():
    entropy = torch.tensor([[0.1, 0.4, 0.2, 0.3, 0.9],     # 0.8-quantile of 5 values: 0.4 + 0.2*(0.9-0.4) = 0.5
                            [0.7, 0.7, 0.7, 0.7, 0.0],     # all equal -> nothing strictly above
                            [2.0, 0.0, 0.0, 0.0, 0.0],     # a single valid token -> quantile = itself -> empty
                            [0.0, 0.0, 0.0, 0.0, 0.0]])    # no valid token -> empty
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    got = peak_entropy_mask(entropy, mask, 0.8, "response")
    assert got.tolist() == [[False, False, False, False, True], [False] * 5, [False] * 5, [False] * 5]
    assert not peak_entropy_mask(torch.ones(2, 3), torch.ones(2, 3), 0.8, "batch").any()


def test_selected_entropy_hand_computed_empty_rows_count_in_the_mean():
    entropy = torch.tensor([[1.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    selection = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert selected_entropy(entropy, selection, "seq_mean_token_mean").item() == pytest.approx((2.5 + 0.0) / 2)
    assert selected_entropy(entropy, selection, "token_mean").item() == pytest.approx(2.5)
    nothing = torch.zeros_like(selection)
    assert selected_entropy(entropy, nothing, "seq_mean_token_mean").item() == 0.0
    assert selected_entropy(entropy, nothing, "token_mean").item() == 0.0


def test_validation_errors_name_the_argument():
    with pytest.raises(ValueError, match="peak_quantile"):
        peak_entropy_mask(torch.ones(1, 2), torch.ones(1, 2), 1.0)
    with pytest.raises(ValueError, match="peak_scope"):
        peak_entropy_mask(torch.ones(1, 2), torch.ones(1, 2), 0.5, "group")
    with pytest.raises(ValueError, match="entropy.siren.agg"):
        selected_entropy(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), "sum")


# --------------------------------------------------------------------------- the intervention


def build_siren(**siren):
    config = RunConfig.model_validate({"entropy": {"method": "siren", "chunk_size": 5, "siren": siren}})
    return build_intervention(config.entropy, run_config=config)


@pytest.mark.parametrize("scope,agg", [("response", "seq_mean_token_mean"), ("batch", "token_mean")])
def test_siren_step_matches_loop_reference(scope, agg):
    siren_config = dict(top_p=0.8, top_k=6, peak_quantile=0.6, peak_scope=scope, coef=0.05, agg=agg)
    siren = build_siren(**siren_config)
    rollout = random_rollout(seed=4, logit_scale=1.5)
    batch = step_batch(rollout, siren)

    # old-policy feature and anchor: SIREN's H_sel of the old policy over the WHOLE first batch
    old_nucleus = loop_over_positions(lambda row: nucleus_entropy_reference(row, 0.8, 6), rollout.old_logits.double())
    torch.testing.assert_close(batch.old_features[FEATURE].double(), old_nucleus, rtol=1e-5, atol=1e-5)
    expected_anchor = selected_entropy_reference(
        old_nucleus, peak_mask_reference(old_nucleus, rollout.response_mask, 0.6, scope), agg).item()
    metrics = siren.begin_step(batch)
    assert metrics["anchor"] == pytest.approx(expected_anchor, abs=1e-5)
    assert metrics["target"] == pytest.approx(expected_anchor, abs=1e-5)   # ratio defaults to 1.0

    rows = [4, 5, 6, 7, 8, 9]   # the all-wrong group and half of the mixed one
    micro = micro_batch(rollout, batch, rows)
    loss, micro_metrics = siren.extra_loss(micro)
    loss.backward()

    leaf = rollout.new_logits[rows].double().clone().requires_grad_(True)
    current = loop_over_positions(lambda row: nucleus_entropy_reference(row, 0.8, 6), leaf)
    selection = peak_mask_reference(current.detach(), rollout.response_mask[rows], 0.6, scope)
    selected = selected_entropy_reference(current, selection, agg)
    expected_loss = 0.05 * (selected - metrics["target"]) ** 2
    expected_loss.backward()
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-4, abs=1e-8)
    torch.testing.assert_close(micro.logits.grad.double(), leaf.grad, rtol=1e-3, atol=1e-7)
    assert micro.logits.grad.abs().sum() > 0
    assert 0 < micro_metrics["selected_fraction"] < 1
    assert micro_metrics["selected_fraction"] == pytest.approx(
        sum(map(sum, selection)) / rollout.response_mask[rows].sum().item())
    assert micro_metrics["selected_entropy"] == pytest.approx(selected.item(), rel=1e-4)


def test_siren_loss_is_two_sided():
    siren = build_siren(coef=1.0)
    rollout = random_rollout(seed=5)
    batch = step_batch(rollout, siren)
    siren.begin_step(batch)
    micro = micro_batch(rollout, batch, range(12))
    selected = siren.extra_loss(micro)[1]["selected_entropy"]
    for shift in (-0.5, 0.5):
        siren.anchor.anchor = selected + shift       # target above, then below, the current H_sel
        loss, _ = siren.extra_loss(micro_batch(rollout, batch, range(12)))
        assert loss.item() == pytest.approx(shift ** 2, rel=1e-5)


def test_siren_anchor_initial_is_held_and_survives_a_checkpoint(tmp_path):
    siren = build_siren()
    first = random_rollout(seed=6)
    anchor = siren.begin_step(step_batch(first, siren))["anchor"]
    later = random_rollout(seed=7, logit_scale=4.0)   # a sharper policy: lower nucleus entropy
    metrics = siren.begin_step(step_batch(later, siren, step=2))
    assert metrics["anchor"] == anchor and metrics["old_selected_entropy"] != anchor
    torch.save(siren.state_dict(), tmp_path / "intervention.pt")

    resumed = build_siren()
    resumed.load_state_dict(torch.load(tmp_path / "intervention.pt", weights_only=False))
    assert resumed.begin_step(step_batch(later, resumed, step=3))["anchor"] == anchor


# --------------------------------------------------------------------------- the anchor


def test_anchor_sources_and_ratio():
    initial = TargetAnchor("initial", ratio=0.5)
    assert [initial.update(v) for v in (2.0, 1.0, 3.0)] == [2.0, 2.0, 2.0]
    assert initial.target == 1.0
    previous = TargetAnchor("previous", ratio=1.0)
    assert [previous.update(v) for v in (2.0, 1.0, 3.0)] == [2.0, 2.0, 1.0]   # first step: its own value
    assert previous.target == 1.0
    fixed = TargetAnchor("fixed", ratio=2.0, value=0.7)
    assert [fixed.update(v) for v in (2.0, 1.0)] == [0.7, 0.7] and fixed.target == pytest.approx(1.4)


def test_anchor_state_round_trip_for_previous():
    anchor = TargetAnchor("previous")
    anchor.update(2.0)
    anchor.update(1.5)
    restored = TargetAnchor("previous")
    restored.load_state_dict(anchor.state_dict())
    assert restored.update(1.0) == 1.5 and restored.initial == 2.0


def test_anchor_defaults_per_method():
    siren = build_intervention(EntropyConfig(method="siren"))
    aer = build_intervention(EntropyConfig(method="aer"))
    assert siren.anchor.ratio == 1.0 and aer.anchor.ratio == 0.5
    tuned = build_intervention(EntropyConfig.model_validate({"method": "aer", "anchor": {"ratio": 0.4}}))
    assert tuned.anchor.ratio == 0.4


def test_anchor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="entropy.anchor.source"):
        TargetAnchor("median")
    with pytest.raises(ValueError, match="entropy.anchor.value"):
        TargetAnchor("fixed")
    with pytest.raises(ValueError, match="entropy.anchor.ratio"):
        TargetAnchor("initial", ratio=0.0)
