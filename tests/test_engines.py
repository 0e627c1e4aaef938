"""The tuned method on the engines users scale with: TRL (trainers.engines.trl) and verl (trainers.engines.verl_plugin).

- every method runs on TRL: one step on the same batch through the native trainer and through
  ``EntropyGRPOTrainer`` (built from ``sweeper.results.formats.to_trl`` of the same run config) gives the same loss and
  gradients (tests/engines/trl_engine_check.py, in .venv-trl; marker ``exports``);
- the TRL export's files (GRPOConfig, run config, launcher) run 2 steps on the CPU through the launcher's entry
  point with the method's metrics logged (marker ``exports``);
- verl is refused, with what it lacks, for the methods its policy-loss entry point cannot feed; the verl plugin's
  losses are checked through verl's own loss entry point in tests/test_export_libraries.py (test_clip_cov_and_kl_cov).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from sweeper.results.export import export_text
from sweeper.results.formats import EngineRefused, to_trl, to_verl
from sweeper.results.launchers import write_trl_launcher
from trainers.config import METHOD_SECTIONS, RunConfig, engine_refusal, parse_config

REPO = Path(__file__).resolve().parents[1]
TRL_PYTHON = REPO / ".venv-trl" / "bin" / "python"
VERL_REFUSED = {"siren": "logits", "aer": "entropy with grad", "steer": "H(pi_old)", "forking_tokens": "per-token entropy",
                "entropy_advantage": "per-token entropy"}

# one run-config section per method, chosen so that the method acts on a 2-prompt x 4-response batch
METHODS = {
    "none": {},
    "siren": {"entropy": {"method": "siren", "siren": {"coef": 0.5}, "anchor": {"source": "fixed", "value": 0.3}}},
    "siren_two_micro_batches": {"entropy": {"method": "siren", "siren": {"coef": 0.5, "peak_scope": "batch"},
                                            "anchor": {"source": "fixed", "value": 0.3}},
                                "train": {"micro_batch_size": 4}},
    "aer": {"entropy": {"method": "aer", "aer": {"alpha_init": 0.05, "rho": 1.0}}},
    "steer_two_micro_batches": {"entropy": {"method": "steer", "steer": {"w_min": 0.5, "normalize_over": "batch"}},
                                "train": {"micro_batch_size": 4}},
    "forking": {"entropy": {"method": "forking_tokens", "forking": {"top_fraction": 0.3}}},
    "clip_cov": {"entropy": {"method": "clip_cov", "clip_cov": {"ratio": 0.3, "lower": -100.0, "upper": 100.0}}},
    "kl_cov": {"entropy": {"method": "kl_cov", "kl_cov": {"ratio": 0.2, "coef": 1.0}}},
    "entropy_advantage": {"entropy": {"method": "entropy_advantage"}},
    "entropy_bonus_with_kl": {"entropy": {"method": "entropy_bonus", "bonus": {"coef": 0.05}}, "kl": {"beta": 0.1}},
    # four micro-batches of unequal token counts: TRL's token_mean divides by the optimizer step's tokens, as native
    "none_unequal_micro_batches": {"train": {"micro_batch_size": 2}, "rollout": {"max_new_tokens": 8, "temperature": 2.0}},
}


def config_with(**sections) -> dict:
    config = RunConfig().model_dump(mode="json")
    for key, value in sections.items():
        for sub, item in value.items():
            if isinstance(item, dict):
                config[key][sub].update(item)
            else:
                config[key][sub] = item
    return parse_config(config, "test").model_dump(mode="json")


# --------------------------------------------------------------------------- refusals and mappings (no library needed)


def test_every_method_is_covered_by_the_trl_equivalence_check():
    assert {sections.get("entropy", {}).get("method", "none") for sections in METHODS.values()} == set(METHOD_SECTIONS)


@pytest.mark.parametrize("method", sorted(VERL_REFUSED))
def test_verl_refuses_the_methods_its_policy_loss_cannot_feed(method):
    config = config_with(entropy={"method": method})
    with pytest.raises(EngineRefused, match=rf"--format verl: entropy.method '{method}' cannot run on verl: .*"
                                             rf"{re.escape(VERL_REFUSED[method])}"):
        to_verl(config)
    with pytest.raises(EngineRefused):
        export_text(config, "verl", [])
    assert engine_refusal(method, "trl") is None and engine_refusal(method, "native") is None


def test_engine_refusal_names_accepted_engines():
    with pytest.raises(ValueError, match=r"engine: unknown engine 'deepspeed'; accepted: native, trl, verl"):
        engine_refusal("siren", "deepspeed")


@pytest.mark.parametrize("method", sorted(METHOD_SECTIONS))
def test_trl_export_keeps_float32_master_weights_and_turns_trl_own_terms_off(method):
    for dtype, bf16 in (("bfloat16", True), ("float32", False)):
        mapped, unmapped, notes = to_trl(config_with(entropy={"method": method}, model={"dtype": dtype}, kl={"beta": 0.1}))
        assert mapped["model_init_kwargs"] == {"dtype": "float32"} and mapped["bf16"] is bf16
        assert mapped["top_entropy_quantile"] == 1.0 and mapped["entropy_coef"] == 0.0
        assert mapped["use_bias_correction_kl"] is False
        assert not [path for path, _ in unmapped if path.startswith("entropy.")]   # the run config carries them
        assert any("trainers.engines.trl.EntropyGRPOTrainer" in note for note in notes)


def test_verl_export_keeps_float32_master_weights_with_bf16_compute():
    mapped, _, notes = to_verl(config_with(model={"dtype": "bfloat16"}, kl={"beta": 0.1}))
    for role in ("actor", "ref"):
        fsdp = mapped["actor_rollout_ref"][role]["fsdp_config"]
        assert fsdp["model_dtype"] == "fp32" and fsdp["mixed_precision"]["param_dtype"] == "bf16"
    assert any(note.startswith("differs: verl's rollout left-truncates") for note in notes)


def test_trl_vllm_export_turns_off_the_importance_sampling_correction_the_trial_never_had():
    mapped, _, _ = to_trl(config_with(rollout={"engine": "vllm"}))
    assert mapped["use_vllm"] is True and mapped["vllm_importance_sampling_correction"] is False


# --------------------------------------------------------------------------- TRL itself (.venv-trl)


def run_trl(mode: str, request: dict, timeout: int = 1200) -> dict:
    if not (TRL_PYTHON.parent.parent / ".exports-stamp").exists():
        message = ".venv-trl is not set up: run `bash scripts/setup_exports.sh trl` (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([str(TRL_PYTHON), str(REPO / "tests" / "engines" / "trl_engine_check.py"), mode],
                          input=json.dumps(request), capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    assert done.returncode == 0, f"the TRL engine failed:\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.exports
def test_one_step_through_native_and_trl_gives_the_same_loss_and_gradients(tmp_path):
    answers = run_trl("equivalence", {"methods": METHODS, "output": str(tmp_path)})
    for name, answer in answers.items():
        assert answer["trl_loss"] == pytest.approx(answer["native_loss"], rel=1e-4, abs=1e-6), name
        assert answer["grad_params"] == answer["grad_params_trl"] > 0, name
        assert answer["grad_max_abs_diff"] <= 1e-4 * max(answer["grad_max_abs"], 1e-3), (name, answer)
        native, trl = answer["native_method_metrics"], answer["trl_method_metrics"]
        assert set(native) == set(trl), name
        for key, value in native.items():
            assert trl[key] == pytest.approx(value, rel=1e-3, abs=1e-5), (name, key)
    assert len(set(answers["none_unequal_micro_batches"]["micro_batch_tokens"])) > 1   # the counts differ
    for name in ("siren", "aer", "kl_cov"):   # the method acted: its term or selection is not empty
        assert answers[name]["native_method_metrics"], name
    assert answers["siren"]["native_method_metrics"]["siren/mse"] > 0
    assert answers["kl_cov"]["native_method_metrics"]["kl_cov/penalized_fraction"] > 0


@pytest.mark.exports
def test_the_trl_export_runs_two_steps_with_the_method_logged(tmp_path):
    config = parse_config({
        "seed": 0, "model": {"path": "builtin:tiny-arith", "dtype": "float32"},
        "entropy": {"method": "siren", "siren": {"coef": 0.5}},
        "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 6},
        "train": {"steps": 2, "mini_batches": 2, "ppo_epochs": 1, "eval_every": 100, "eval_at_start": False,
                  "checkpoint_every": 1, "output_dir": str(tmp_path / "run")},
        "eval": {"num_prompts": 2, "n_samples": 2, "k": [1]},
    }, "trl launch").model_dump(mode="json")
    output = tmp_path / "best.trl.yaml"
    output.write_text(export_text(config, "trl", ["test export"]))
    run_config, script = write_trl_launcher(output, config, ["test export"])
    launch = script.read_text().splitlines()[-1]
    assert launch.startswith("exec accelerate launch ${ACCELERATE_ARGS:-} -m trainers.engines.trl ")
    module_args = shlex.split(launch.split(" -m trainers.engines.trl ", 1)[1].replace(' "$@"', ""))
    answer = run_trl("run", {"run_config": str(tmp_path / module_args[0]), "trl_config": str(tmp_path / module_args[1])})
    # 2 rollout steps x 2 mini-batches = 4 optimizer steps; each rollout step needs the old-policy pass (off-policy
    # after the first update) and SIREN's anchor from it; TRL logs every rollout step (logging_steps = 2)
    assert answer["global_step"] == 4 and answer["model_dtype"] == "float32"
    steps = [entry for entry in answer["log_history"] if "siren/anchor" in entry]
    assert len(steps) == 2 and all("train/pg_loss" in entry and "siren/selected_fraction" in entry for entry in steps)
    assert any(entry["siren/mse"] > 0 for entry in steps)   # the method's term acted (the anchor is step 1's value)
    assert (tmp_path / "run" / "checkpoint-4" / "intervention.pt").exists()   # the method's state is checkpointed
