"""The shipped base model builtin:tiny-arith: tokenizer, architecture, generation, recorded skill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainers.config import SyntheticTaskConfig, resolve_model_path
from trainers.data import synthetic_problems
from trainers.evaluation import mean_pass_at_k
from trainers.rewards import get_reward

FOLDER = Path(resolve_model_path("builtin:tiny-arith"))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FOLDER)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    return AutoModelForCausalLM.from_pretrained(FOLDER).eval()


@pytest.fixture(scope="module")
def build_info():
    return json.loads((FOLDER / "build_info.json").read_text())


def test_asset_folder_is_complete_and_small():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "build_info.json"):
        assert (FOLDER / name).is_file(), name
    total_bytes = sum(path.stat().st_size for path in FOLDER.iterdir())
    assert total_bytes < 15 * 2**20


def test_tokenizer_is_character_level_and_round_trips(tokenizer):
    assert len(tokenizer) == 21
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.padding_side == "left"
    ids = tokenizer("12+7=")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == list("12+7=")
    for text in ("12+7=", "23*4-97=-5", "1 2 + (3)", "  0  "):
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text) + 1
        assert tokenizer.decode(ids, skip_special_tokens=True) == text  # no spaces inserted or lost
    assert tokenizer.decode([5, 6, tokenizer.eos_token_id], skip_special_tokens=True) == "12"
    # unknown characters map to <unk>, not to a digit
    assert tokenizer("x")["input_ids"] == [tokenizer.bos_token_id, tokenizer.unk_token_id]


def test_left_padded_batch(tokenizer):
    batch = tokenizer(["1+1=", "23*4-97="], padding=True, return_tensors="pt")
    assert batch["input_ids"][0].tolist()[:4] == [tokenizer.pad_token_id] * 4
    assert batch["attention_mask"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_model_is_a_small_llama(model, build_info):
    assert model.config.model_type == "llama"
    assert type(model).__name__ == "LlamaForCausalLM"
    num_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < num_params < 5_000_000
    assert num_params == build_info["num_params"]
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 0


def test_batched_generation_matches_single_prompts(model, tokenizer):
    prompts = ["12+7=", "7*8+5=", "23*4-97="]
    kwargs = dict(do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    batched = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    batched_text = tokenizer.batch_decode(batched[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    for prompt, text in zip(prompts, batched_text):
        single = tokenizer(prompt, return_tensors="pt")
        output = model.generate(**single, **kwargs)
        assert tokenizer.decode(output[0, single["input_ids"].shape[1] :], skip_special_tokens=True) == text
        assert text and text.lstrip("-").isdigit(), f"{prompt!r} -> {text!r}"


def test_recorded_pass_at_1_leaves_room_for_rl(build_info):
    assert 0.05 < build_info["pass@1"] < 0.95
    assert build_info["pass@1"] <= build_info["pass@8"] <= 1.0
    assert build_info["eval"]["n_samples"] == 8 and build_info["eval"]["temperature"] == 1.0


def test_recorded_model_is_a_noisy_sampler_of_a_better_argmax(build_info):
    """The testbed's premise: the last SFT phase saw label noise, so T = 1 samples are noisy while the
    argmax is much better (the pass@1 that sharpening can reach). Recorded: greedy 0.570 vs pass@1 0.317."""
    recipe, metrics = build_info["recipe"], build_info["metrics"]
    assert recipe["noisy_steps"] > 0 and 0 < recipe["label_noise"] < 0.5
    assert metrics["greedy"] >= build_info["pass@1"] + 0.15
    for level in build_info["eval"]["levels"]:
        assert metrics[f"level{level}/greedy"] > metrics[f"level{level}/pass@1"]
    assert metrics["level1/greedy"] > 0.6 and metrics["level2/greedy"] < 0.5   # level 2: the argmax is mostly wrong


def _build_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_tiny_model", Path(__file__).parent.parent / "scripts" / "build_tiny_model.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_label_noise_changes_exactly_one_digit_and_no_sign():
    import random

    build = _build_module()
    rng = random.Random(0)
    for answer in ["0", "7", "19", "125", "-5", "-47", "180"] * 50:
        noisy = build.corrupt_digit(answer, rng)
        assert noisy != answer and len(noisy) == len(answer)
        assert sum(a != b for a, b in zip(answer, noisy)) == 1
        assert noisy.startswith("-") == answer.startswith("-")
        digits = noisy.lstrip("-")
        assert len(digits) == 1 or digits[0] != "0"          # no new leading zero: still a well-formed integer
    from trainers.data import Problem

    problems = [Problem(f"{i}+0=", str(i), 1) for i in range(2000)]
    noisy = build.with_label_noise(problems, 0.3, seed=0)
    changed = sum(a.answer != b.answer for a, b in zip(problems, noisy))
    assert 0.26 * 2000 < changed < 0.34 * 2000             # binomial(2000, 0.3): SD 20
    assert [p.prompt for p in noisy] == [p.prompt for p in problems]
    assert build.with_label_noise(problems, 0.3, seed=0) == noisy
    assert build.with_label_noise(problems, 0.0, seed=0) == problems


def test_live_pass_at_1_agrees_with_the_record(model, tokenizer, build_info):
    problems = synthetic_problems(SyntheticTaskConfig(levels=build_info["eval"]["levels"], val_size=64), "val")
    n = 4
    encoded = tokenizer([p.prompt for p in problems], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    output = model.generate(
        input_ids=encoded["input_ids"].repeat_interleave(n, dim=0),
        attention_mask=encoded["attention_mask"].repeat_interleave(n, dim=0),
        do_sample=True, temperature=1.0, top_k=0, max_new_tokens=8,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    reward = get_reward("exact_numeric")
    correct = [[reward(texts[i * n + j], p.answer) for j in range(n)] for i, p in enumerate(problems)]
    live = mean_pass_at_k(correct, 1)
    # 64 prompts x 4 samples: the prompt-level standard error is about 0.06
    assert abs(live - build_info["pass@1"]) < 0.2, (live, build_info["pass@1"])
    assert 0.05 < live < 0.95


def test_build_script_is_reproducible(tmp_path):
    build = _build_module()
    tiny = ["--steps", "3", "--noisy-steps", "2", "--batch-size", "16", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--intermediate", "64", "--eval-prompts", "8", "--seed", "5"]
    first = build.main(tiny + ["--out", str(tmp_path / "a")])
    second = build.main(tiny + ["--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert first["metrics"] == second["metrics"]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "a")("1 2=")["input_ids"] == [1, 5, 20, 6, 17]
