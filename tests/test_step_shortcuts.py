"""The GRPO step's shortcuts compute what the plain step does, up to float rounding:

- each distinct prompt runs once in the training forward (``trainers.forward``): the logits and gradients of
  the full ``[prompt | response]`` forward;
- the rollout's prefill runs each distinct prompt once: the same samples;
- with one update from one forward, the old-policy pass is skipped (its values come from the update's own
  forward, detached): the same losses, method metrics, state and gradients as with the pass, for every method.
"""

import pytest
import torch

import trainers.forward
from _dp_run import METHODS
from trainers.config import parse_config
from trainers.entropy.base import registered_interventions
from trainers.grpo import GRPOTrainer
from trainers.rollout import SamplingSettings

PROMPTS = ["1+2=", "13+4*5=", "7*8="]   # different lengths: left padding


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(got, expected, rtol=1e-4):
    """Equal up to float reordering, against each tensor's scale (as tests/test_trainer_scale.py)."""
    assert got.keys() == expected.keys()
    for name in expected:
        scale = float(expected[name].abs().max())
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=rtol * scale, msg=name)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_each_prompt_run_once_gives_the_full_forwards_logits_and_gradients(make_run_config, monkeypatch, temperature):
    trainer = GRPOTrainer(parse_config(make_run_config()))
    rollout = trainer.engine.generate(PROMPTS, 4, SamplingSettings(max_new_tokens=6, seed=1))
    assert rollout.prompt_mask.min() == 0 and rollout.response_mask.min() == 0   # both paddings are exercised
    assert trainers.forward.shares_prompt_prefix(trainer.model)

    def forward_and_gradients():
        trainer.model.zero_grad(set_to_none=True)
        logits = trainer._response_logits(trainer.model, rollout, temperature)
        weights = torch.linspace(-1.0, 1.0, logits.shape[-1])
        ((logits.float().log_softmax(-1) * weights).sum(-1) * rollout.response_mask).sum().backward()
        return logits.detach(), gradients(trainer.model)

    calls = []
    base_model = type(trainer.model).base_model
    monkeypatch.setattr(type(trainer.model), "base_model", property(lambda self: calls.append(1) or base_model.fget(self)))
    shared_logits, shared_grads = forward_and_gradients()
    assert calls, "the prompt prefix was not run on its own"
    monkeypatch.setattr(trainers.forward, "shares_prompt_prefix", lambda model: False)
    full_logits, full_grads = forward_and_gradients()
    # float reordering errs in proportion to the largest terms summed, not to each logit: the atol scales with the
    # largest logit (an AVX2-only CPU differed by 1.3e-5 at a logit of 0.24, past a flat 1e-5)
    scale = max(1.0, float(full_logits.abs().max()))
    torch.testing.assert_close(shared_logits, full_logits, rtol=1e-5, atol=1e-5 * scale)
    assert_same_gradients(shared_grads, full_grads)


def test_distinct_rows_finds_each_prompt_once_in_order_of_appearance():
    rows = torch.tensor([[3, 1], [5, 2], [3, 1], [3, 1], [0, 0], [5, 2]])
    first, inverse = trainers.forward.distinct_rows(rows)
    assert first.tolist() == [0, 1, 4] and inverse.tolist() == [0, 1, 0, 0, 2, 1]
    assert torch.equal(rows[first][inverse], rows)


def test_shared_prefill_draws_the_same_samples(make_run_config, monkeypatch):
    trainer = GRPOTrainer(parse_config(make_run_config()))
    sampling = SamplingSettings(temperature=1.0, max_new_tokens=6, seed=7)
    shared = trainer.engine.generate(PROMPTS, 5, sampling)
    monkeypatch.setattr(trainers.forward, "shares_prompt_prefix", lambda model: False)
    plain = trainer.engine.generate(PROMPTS, 5, sampling)
    assert torch.equal(shared.response_ids, plain.response_ids) and shared.completions == plain.completions


def one_step(config: dict, fuse: bool):
    trainer = GRPOTrainer(parse_config(config))
    trainer.fuse_old_policy_pass = fuse
    calls = []
    old_policy_pass = trainer._old_policy_pass
    trainer._old_policy_pass = lambda *args: calls.append(1) or old_policy_pass(*args)
    metrics = trainer.train_step(1)
    assert bool(calls) != fuse, "the old-policy pass ran" if fuse else "the old-policy pass did not run"
    return metrics, gradients(trainer.model), trainer


# CI runs a method without step state, two with it and one advantage-shaping method; the rest are `extended` (each
# method's loss through the fused step is also checked against TRL's in test_engines)
CI_METHODS = {"none", "siren", "steer", "entropy_advantage"}


@pytest.mark.parametrize("method", [m if m in CI_METHODS else pytest.param(m, marks=pytest.mark.extended)
                                    for m in sorted(registered_interventions())])
def test_skipped_old_policy_pass_gives_the_same_step(make_run_config, method):
    """One update from one forward (ppo_epochs 1, mini_batches 1): pi_old = pi. Every method, with the knobs that
    make it act on this model (tests/_dp_run.py), a KL term for plain GRPO; its losses, metrics, state and
    gradients with the pass skipped equal those with it."""
    config = method_config(make_run_config, method)
    skipped, skipped_grads, skipped_trainer = one_step(config, fuse=True)
    passed, passed_grads, passed_trainer = one_step(config, fuse=False)
    assert skipped.keys() == passed.keys()
    for key in passed:
        if not key.startswith("time/") and not (method == "kl_cov" and key == "train/grad_norm"):   # (below)
            assert skipped[key] == pytest.approx(passed[key], rel=1e-4, abs=1e-6), key
    assert skipped["train/ratio_mean"] == 1.0 and skipped["train/kl_old"] == 0.0
    state, expected = skipped_trainer.intervention.state_dict(), passed_trainer.intervention.state_dict()
    assert repr(state) == repr(expected) or state == pytest.approx(expected, rel=1e-5)
    if method == "kl_cov":
        # coef |logp - logp_old| has its kink at pi = pi_old: skipped, log pi_old IS log pi and the gradient is
        # torch's subgradient 0; with the pass the two differ by rounding (~1e-7), whose sign picks +-coef per
        # penalized token. The rest of the gradient is compared with the penalty off.
        config = method_config(make_run_config, method, coef=0.0)
        skipped_grads, passed_grads = one_step(config, fuse=True)[1], one_step(config, fuse=False)[1]
    assert_same_gradients(skipped_grads, passed_grads)


def method_config(make_run_config, method: str, **knobs) -> dict:
    overrides = {key: value for key, value in METHODS[method].items()}
    entropy = {"method": method, **overrides.pop("entropy", {})}
    if knobs:
        section = next(key for key in entropy if key not in ("method", "anchor"))
        entropy[section] = {**entropy[section], **knobs}
    return make_run_config(**overrides, entropy=entropy, train={"steps": 1, "mini_batches": 1, "ppo_epochs": 1})


def test_the_pass_runs_where_the_old_policy_differs_or_the_batch_is_split(make_run_config):
    trainer = GRPOTrainer(parse_config(make_run_config(train={"mini_batches": 1, "ppo_epochs": 1})))
    rows = trainer.config.rollout.prompts_per_step * trainer.config.rollout.group_size
    assert trainer.fuses_old_policy_pass(rows)
    for train in ({"mini_batches": 2, "ppo_epochs": 1}, {"mini_batches": 1, "ppo_epochs": 2},
                  {"mini_batches": 1, "ppo_epochs": 1, "micro_batch_size": 8}):
        assert not GRPOTrainer(parse_config(make_run_config(train=train))).fuses_old_policy_pass(rows), train
