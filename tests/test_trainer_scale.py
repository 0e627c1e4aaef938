"""The trainer at real scale, on this CPU box: the loss does not depend on how a batch is padded or
split into micro-batches (where the README says so), bad batch shapes are refused, bf16 runs keep float32
master weights."""

import pytest
import torch

from trainers.config import ConfigError, parse_config
from trainers.grpo import GRPOTrainer
from trainers.setup import check_batch_shape
from trainers.rollout import Rollout, SamplingSettings


class ExtraPadding:
    """The trainer's own rollout engine, with ``columns`` more pad tokens after every response (what a rank
    whose longest response is longer, or an engine that pads to the maximum length, hands the step)."""

    def __init__(self, engine, pad_id: int, columns: int):
        self.engine, self.pad_id, self.columns = engine, pad_id, columns

    def generate(self, prompts, n, sampling):
        rollout = self.engine.generate(prompts, n, sampling)
        rows = rollout.response_ids.shape[0]
        return Rollout(rollout.prompt_ids, rollout.prompt_mask,
                       torch.cat([rollout.response_ids, torch.full((rows, self.columns), self.pad_id)], dim=1),
                       torch.cat([rollout.response_mask, torch.zeros(rows, self.columns, dtype=rollout.response_mask.dtype)], dim=1),
                       rollout.completions)


def one_step(config, columns: int = 0):
    trainer = GRPOTrainer(parse_config(config))
    if columns:
        trainer.engine = ExtraPadding(trainer.engine, trainer.tokenizer.pad_token_id, columns)
    metrics = trainer.train_step(1)
    return metrics, {k: v.grad.detach().clone() for k, v in trainer.model.named_parameters()}


def assert_same_gradients(got, expected, rtol=1e-4):
    """Equal up to float reordering: each tensor's difference is small against the gradient's scale.
    (Gradients, not updated weights: Adam's first step is lr * g / (|g| + eps), which turns float noise in
    a near-zero gradient into a full lr-sized difference.)"""
    scale = max(float(g.abs().max()) for g in expected.values())
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=rtol * scale, msg=name)


def test_dr_grpo_normalizer_is_the_configured_maximum_length_not_the_longest_response(make_run_config):
    """Dr.GRPO divides by a constant (verl pads to the configured maximum): rollout.max_new_tokens."""
    config = make_run_config(loss_agg="seq_mean_token_sum_norm", advantage="dr_grpo", kl={"beta": 0.05},
                             entropy={"method": "entropy_bonus", "bonus": {"coef": 0.01}},
                             train={"steps": 1, "mini_batches": 1, "ppo_epochs": 1})
    plain, plain_grads = one_step(config)
    padded, padded_grads = one_step(config, columns=5)
    for key in ("train/loss", "train/pg_loss", "entropy_bonus/bonus", "train/kl_ref"):
        assert padded[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-7), key
    assert_same_gradients(padded_grads, plain_grads)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_every_loss_agg_is_invariant_to_the_micro_batch_size(make_run_config, loss_agg):
    """The README's claim: every loss_agg gives the same update whatever train.micro_batch_size is (the
    mini-batch's token and response counts divide each micro-batch's sums, as verl 0.9.1); with 2 processes
    too in tests/test_loss_aggregation.py."""
    base = dict(loss_agg=loss_agg, rollout={"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
                train={"steps": 1, "mini_batches": 1, "ppo_epochs": 1})
    whole, whole_grads = one_step(make_run_config(**base))
    split, split_grads = one_step(make_run_config(**{**base, "train": {**base["train"], "micro_batch_size": 4}}))
    assert split["train/loss"] == pytest.approx(whole["train/loss"], rel=1e-5, abs=1e-7)
    assert_same_gradients(split_grads, whole_grads)


def test_micro_batch_size_that_leaves_a_short_last_slice_is_refused():
    """6 responses per mini-batch in slices of 4 would leave a slice of 2: refused, naming the field."""
    with pytest.raises(ConfigError) as error:
        parse_config({"rollout": {"prompts_per_step": 3, "group_size": 2}, "train": {"mini_batches": 1, "micro_batch_size": 4}})
    message = str(error.value)
    assert "train.micro_batch_size (4)" in message and "6 responses" in message and "[1, 2, 3, 6]" in message
    parse_config({"rollout": {"prompts_per_step": 3, "group_size": 2}, "train": {"mini_batches": 1, "micro_batch_size": 3}})
    # per process: 4 prompts x 3 = 12 rows on one process, 6 on each of two: 4 divides 12 but not 6
    config = parse_config({"rollout": {"prompts_per_step": 4, "group_size": 3}, "train": {"mini_batches": 1, "micro_batch_size": 4}})
    check_batch_shape(config, 1)
    with pytest.raises(ConfigError, match=r"train.micro_batch_size \(4\).*each of 2 processes"):
        check_batch_shape(config, 2)


def test_ppo_epochs_defaults_to_the_papers_one_and_the_shipped_runs_say_it_too():
    from pathlib import Path

    import yaml

    from trainers.config import RunConfig, load_config

    examples = Path(__file__).resolve().parents[1] / "examples"
    assert RunConfig().train.ppo_epochs == 1
    assert load_config(examples / "tiny_grpo.yaml").train.ppo_epochs == 1   # the default run is on-policy (issue 12)
    quickstart_base = yaml.safe_load((examples / "quickstart.yaml").read_text())["base"]
    assert parse_config(quickstart_base).train.ppo_epochs == 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_keep_float32_master_weights_that_move_at_lr_1e_6(make_run_config, dtype):
    """bf16 weights of size ~0.02 have a spacing of ~1e-4: AdamW steps of lr 1e-6 round away and nothing
    learns. The trainer keeps float32 weights and optimizer state and autocasts its forwards to ``dtype``."""
    from transformers import AutoModelForCausalLM

    from trainers.config import resolve_model_path

    config = parse_config(make_run_config(model={"path": "builtin:tiny-arith", "dtype": dtype}, optim={"lr": 1e-6},
                                          train={"steps": 2, "mini_batches": 2, "ppo_epochs": 2}))
    trainer = GRPOTrainer(config)
    start = AutoModelForCausalLM.from_pretrained(resolve_model_path(config.model.path)).state_dict()
    trainer.train_step(1)
    trainer.train_step(2)
    weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    assert all(value.dtype == torch.float32 for value in weights.values())
    changed = sum(int((weights[k] != start[k]).sum()) for k in weights) / sum(v.numel() for v in weights.values())
    assert changed > 0.5, f"only {changed:.1%} of the weights moved"
    states = [s for s in trainer.optimizer.state_dict()["state"].values()]
    assert states and all(s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32 for s in states)
    rollout = trainer.engine.generate(["1+1="], 2, SamplingSettings())
    assert trainer._response_logits(trainer.model, rollout).dtype == getattr(torch, dtype)   # the forward ran in dtype
    assert trainer.grad_scaler.is_enabled() == (dtype == "float16")
    if dtype == "float16":   # the loss scale is part of the checkpoint
        trainer.grad_scaler.update(1024.0)
        trainer.step = 2
        trainer.save_checkpoint()
        resumed = GRPOTrainer(config)
        assert resumed.load_checkpoint() and resumed.grad_scaler.get_scale() == 1024.0


def test_response_logits_from_only_the_response_positions_equal_the_sliced_full_logits(make_run_config, monkeypatch):
    """With ``logits_to_keep`` the model projects only the positions that predict the response (no
    [B, P + T, V] block): the same logits as slicing the full output, at temperature 1 and not."""
    import trainers.forward

    trainer = GRPOTrainer(parse_config(make_run_config()))
    rollout = trainer.engine.generate(["1+2=", "13+4="], 3, SamplingSettings(max_new_tokens=6))
    monkeypatch.setattr(trainers.forward, "shares_prompt_prefix", lambda model: False)   # the full forward's path
    kept = {t: trainer._response_logits(trainer.model, rollout, t) for t in (1.0, 0.7)}
    monkeypatch.setattr(trainers.forward, "takes_logits_to_keep", lambda model: False)
    for temperature, logits in kept.items():
        assert logits.is_contiguous() and logits.shape[:2] == rollout.response_ids.shape
        torch.testing.assert_close(logits, trainer._response_logits(trainer.model, rollout, temperature), rtol=1e-6, atol=1e-6)


def test_every_forward_pass_holds_at_most_a_micro_batch_of_sequences(make_run_config):
    """The old-policy, reference, training and validation-entropy forwards each take at most
    train.micro_batch_size sequences (at 152k vocabulary x 3k tokens one more sequence is ~1 GB of logits)."""
    config = parse_config(make_run_config(kl={"beta": 0.05}, train={"steps": 1, "micro_batch_size": 2},
                                          eval={"num_prompts": 4, "n_samples": 4, "k": [1, 4]}))
    trainer = GRPOTrainer(config)
    seen: list[tuple[str, int]] = []
    forward = trainer._response_logits

    def recording(model, rollout, *args, **kwargs):
        seen.append(("reference" if model is trainer.ref_model else "policy", rollout.response_ids.shape[0]))
        return forward(model, rollout, *args, **kwargs)

    trainer._response_logits = recording
    trainer.train_step(1)
    trainer.evaluate()
    assert {kind for kind, _ in seen} == {"policy", "reference"}
    assert max(rows for _, rows in seen) <= 2, seen
