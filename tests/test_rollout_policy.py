"""Rollouts are samples of exactly the policy being trained, and the memory options keep the same step.

- HF rollouts use a generation config holding only what the run config names: a model whose own
  generation_config sets a repetition penalty (instruct models ship 1.05-1.1) is sampled from plain pi at the
  rollout temperature (the sampler's log-probs equal the trainer's forward's).
- Chat-template text is tokenized without adding special tokens again: one BOS, not two.
- ``rollout.generation_batch_size`` bounds each generate call; ``train.gradient_checkpointing`` is on in the
  training forward (after the eval/train switches) and gives the same gradients; ``kl.ref_offload`` too.
Real model (the shipped tiny-arith), real tokenizer, real transformers generate.
"""

import pytest
import torch

from trainers.config import ConfigError, parse_config
from trainers.entropy.ops import token_logprobs
from trainers.forward import response_logits
from trainers.grpo import GRPOTrainer
from trainers.rollout import HFRolloutEngine, SamplingSettings, _tokenize_prompts, format_prompts
from trainers.setup import load_policy

PROMPTS = ["12+3=", "7+8=", "40+2=", "5+55="]


def _policy():
    tokenizer, model, _ = load_policy(parse_config({}))
    return tokenizer, model.eval()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_hf_rollout_ignores_the_models_repetition_penalty(temperature):
    tokenizer, model = _policy()
    model.generation_config.repetition_penalty = 1.3      # what an instruct model's generation_config.json sets
    model.generation_config.no_repeat_ngram_size = 2
    model.generation_config.top_k = 3                     # and a top-k the run config does not name
    engine = HFRolloutEngine(model, tokenizer, record_logprobs=True)
    rollout = engine.generate(PROMPTS, 4, SamplingSettings(temperature=temperature, max_new_tokens=8, seed=0))
    mask = rollout.response_mask.bool()
    with torch.no_grad():
        logits = response_logits(model, rollout, torch.device("cpu"), temperature)
        policy_logp = token_logprobs(logits, rollout.response_ids, 64)
    torch.testing.assert_close(rollout.sampled_logprobs[mask], policy_logp[mask], rtol=1e-4, atol=1e-4)
    # the model's own config is left as it was
    assert model.generation_config.repetition_penalty == 1.3 and model.generation_config.top_k == 3


def test_the_models_penalty_would_have_changed_the_sampler():
    """The check above can fail: generate with the model's generation_config (the old behaviour) draws from
    a distribution whose log-probs differ from the policy's."""
    tokenizer, model = _policy()
    model.generation_config.repetition_penalty = 1.3
    ids, mask = _tokenize_prompts(tokenizer, PROMPTS)
    with torch.no_grad():
        out = model.generate(input_ids=ids.repeat_interleave(4, 0), attention_mask=mask.repeat_interleave(4, 0),
                             do_sample=True, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id, top_k=None,
                             output_scores=True, return_dict_in_generate=True)
    scores = torch.stack(out.scores, 1).log_softmax(-1)
    new = out.sequences[:, ids.shape[1]:]
    sampler = scores.gather(-1, new[..., None]).squeeze(-1)
    engine = HFRolloutEngine(model, tokenizer)
    from trainers.rollout import Rollout, response_mask_from_ids
    response_mask = response_mask_from_ids(new, engine.stop_ids, tokenizer.pad_token_id)
    rollout = Rollout(ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), new, response_mask, [""] * len(new))
    with torch.no_grad():
        policy_logp = token_logprobs(response_logits(model, rollout, torch.device("cpu")), new, 64)
    assert float((sampler - policy_logp)[response_mask.bool()].abs().max()) > 1e-2


def test_chat_template_text_gets_one_bos():
    """A Llama-3-style template writes the BOS itself: tokenizing its text must not add a second one."""
    tokenizer, _ = _policy()
    assert tokenizer.bos_token_id is not None
    tokenizer.chat_template = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
    texts = format_prompts(tokenizer, PROMPTS, chat_template=True)
    ids, mask = _tokenize_prompts(tokenizer, texts, chat_template=True)
    for row, row_mask in zip(ids, mask):
        tokens = row[row_mask.bool()].tolist()
        assert tokens[0] == tokenizer.bos_token_id and tokens.count(tokenizer.bos_token_id) == 1, tokens
    plain_ids, plain_mask = _tokenize_prompts(tokenizer, PROMPTS)   # plain prompts keep the tokenizer's BOS
    assert all(row[m.bool()].tolist()[0] == tokenizer.bos_token_id for row, m in zip(plain_ids, plain_mask))


def test_generation_batch_size_bounds_each_generate_call():
    tokenizer, model = _policy()
    calls = []
    generate = model.generate

    def recording(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    model.generate = recording
    engine = HFRolloutEngine(model, tokenizer, batch_size=8)
    settings = SamplingSettings(max_new_tokens=6, seed=3)
    rollout = engine.generate(PROMPTS, 4, settings)
    assert calls == [8, 8]
    assert rollout.response_ids.shape[0] == 16 and rollout.prompt_ids.shape[0] == 16
    assert (rollout.response_mask.sum(-1) >= 1).all()
    again = engine.generate(PROMPTS, 4, settings)              # a fixed seed: the same samples for the same size
    assert torch.equal(again.response_ids, rollout.response_ids)
    calls.clear()
    HFRolloutEngine(model, tokenizer, batch_size=3).generate(PROMPTS, 4, settings)   # at least one prompt's group
    assert calls == [4, 4, 4, 4]


def _one_step(make_run_config, **train):
    config = parse_config(make_run_config(kl={"beta": 0.05, "ref_offload": train.pop("ref_offload", False)},
                                          rollout={"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
                                          train={"steps": 1, "mini_batches": 2, "micro_batch_size": 4, **train}))
    trainer = GRPOTrainer(config)
    seen = []
    layer = trainer.accelerator.unwrap_model(trainer.model).model.layers[0]
    layer.register_forward_pre_hook(lambda module, args: seen.append((torch.is_grad_enabled(), module.training,
                                                                      bool(getattr(module, "gradient_checkpointing", False)))))
    metrics = trainer.train_step(1)
    grads = {k: v.grad.detach().clone() for k, v in trainer.model.named_parameters() if v.grad is not None}
    return trainer, metrics, grads, seen


def test_gradient_checkpointing_is_on_in_the_training_forward_and_changes_nothing(make_run_config):
    plain, plain_metrics, plain_grads, _ = _one_step(make_run_config)
    trainer, metrics, grads, seen = _one_step(make_run_config, gradient_checkpointing=True, ref_offload=True)
    with_grad = [entry for entry in seen if entry[0]]
    assert with_grad and all(training and checkpointing for _, training, checkpointing in with_grad), seen
    # the no-grad passes (rollout, old policy) run in eval mode, as before
    assert all(not training for grad, training, _ in seen if not grad)
    assert not trainer.model.training
    assert next(trainer.ref_model.parameters()).device.type == "cpu"      # kl.ref_offload: back on the CPU
    for key in ("train/loss", "train/pg_loss", "train/kl_ref", "train/entropy"):
        assert metrics[key] == pytest.approx(plain_metrics[key], rel=1e-5, abs=1e-7), key
    scale = max(float(g.abs().max()) for g in plain_grads.values())
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_importance_sampling_cap_needs_the_vllm_engine():
    with pytest.raises(ConfigError) as error:
        parse_config({"rollout": {"importance_sampling_cap": 2.0}})
    assert "rollout.importance_sampling_cap" in str(error.value) and "rollout.engine: vllm" in str(error.value)
    parse_config({"rollout": {"engine": "vllm", "importance_sampling_cap": 2.0}})
