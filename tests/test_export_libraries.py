"""Exports that start: `sweeper export --format verl|trl` files accepted by the real libraries (marker ``exports``).

verl 0.9.x and TRL 1.16.x live in their own environments (.venv-verl, .venv-trl: their pins clash with this
project's; `bash scripts/setup_exports.sh` makes them, scripts/test.sh runs it). Each library runs once per test
session over all the exported variants below (tests/exports/verl_check.py, trl_check.py):

- verl: the file composed over verl's own ``ppo_trainer`` config with Hydra, ``validate_config`` (the asserts of a
  launch), the config dataclasses the workers build, the rollout registry, the model folder loaded by
  ``HFModelConfig``, the optimizer and LR schedule from verl's builders, and the actor loss of one mini-batch
  through verl's policy losses and ``agg_loss``;
- TRL: ``GRPOConfig(**file)``, a ``GRPOTrainer`` built on the CPU from the exported model folder, its optimizer and
  LR schedule.

One test per knob family compares the value the library ends up with to what this trainer runs: the LR of each
step against ``trainers.grpo.make_lr_lambda``, verl's loss against this trainer's loss functions on the same
tensors (``trainers.algorithms`` and the entropy methods' pure functions, composed as
``GRPOTrainer._micro_batch_loss`` composes them), batch and evaluation units, checkpoints.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from sweeper.results.export import export_text
from sweeper.results.formats import batch_shape
from trainers.algorithms import aggregate, kl_k3, ppo_clip_loss
from trainers.config import RunConfig, engine_refusal, parse_config
from trainers.entropy.bonus import entropy_bonus_loss
from trainers.entropy.clip_cov import clip_cov_selection
from trainers.entropy.kl_cov import kl_cov_selection, kl_cov_token_loss
from trainers.grpo import make_lr_lambda

pytestmark = pytest.mark.exports

REPO = Path(__file__).resolve().parents[1]
PYTHON = {"verl": REPO / ".venv-verl" / "bin" / "python", "trl": REPO / ".venv-trl" / "bin" / "python"}


def variant(**sections) -> dict:
    """A validated run config (plain data): the defaults with ``sections`` merged in, e.g. optim={"lr": 1e-4}."""
    config = RunConfig().model_dump(mode="json")
    config["train"]["steps"] = 10
    for key, value in sections.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                if isinstance(item, dict):
                    config[key][sub].update(item)
                else:
                    config[key][sub] = item
        else:
            config[key] = value
    return parse_config(config, "test variant").model_dump(mode="json")


# One config per knob family; the same files go to verl and to TRL.
VARIANTS = {
    "optim_warmup_constant": variant(optim={"lr": 1e-4, "betas": [0.8, 0.95], "weight_decay": 0.1, "schedule": "warmup_constant",
                                            "warmup_steps": 3, "max_grad_norm": None}),
    "optim_cosine": variant(optim={"lr": 3e-5, "schedule": "cosine", "min_lr_ratio": 0.1, "max_grad_norm": 0.5},
                            train={"steps": 12}),
    "optim_cosine_warmup": variant(optim={"lr": 3e-5, "schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1}),
    "batch": variant(rollout={"prompts_per_step": 8, "group_size": 4}, train={"mini_batches": 2, "micro_batch_size": 4,
                                                                             "ppo_epochs": 2}),
    "clip_dual": variant(clip={"eps_low": 0.2, "eps_high": 0.28, "dual_c": 3.0}),
    "clip_no_dual": variant(clip={"eps_low": 0.1, "eps_high": 0.3, "dual_c": None}),
    "kl": variant(kl={"beta": 0.05}),
    "agg_seq_mean": variant(loss_agg="seq_mean_token_mean"),
    "agg_sum_norm": variant(loss_agg="seq_mean_token_sum_norm", advantage="dr_grpo", rollout={"max_new_tokens": 6}),
    "entropy_bonus": variant(entropy={"method": "entropy_bonus", "bonus": {"coef": 0.01}}),
    "forking": variant(entropy={"method": "forking_tokens", "forking": {"top_fraction": 0.2}}),
    "clip_cov": variant(entropy={"method": "clip_cov", "clip_cov": {"ratio": 1.0, "lower": 0.05, "upper": 5.0}}),
    "kl_cov": variant(entropy={"method": "kl_cov", "kl_cov": {"ratio": 0.1, "coef": 0.5}}),
    "eval": variant(eval={"num_prompts": 16, "n_samples": 4, "k": [1, 4], "temperature": 0.7, "top_p": 0.9},
                    train={"eval_every": 5, "eval_at_start": False}),
    "checkpoints_end": variant(train={"checkpoint_every": 0, "steps": 10, "output_dir": "runs/ckpt-end"}),
    "checkpoints_every": variant(train={"checkpoint_every": 4, "steps": 10}, model={"dtype": "bfloat16", "trust_remote_code": True}),
}
LOSS_VARIANTS = ("clip_dual", "clip_no_dual", "kl", "agg_seq_mean", "agg_sum_norm", "entropy_bonus", "clip_cov", "kl_cov",
                 "optim_warmup_constant")


def mini_batch() -> dict[str, torch.Tensor]:
    """8 responses x 6 tokens: unequal lengths, one zero-advantage row, ratios far enough from 1 that the PPO clip,
    the dual clip and the covariance selections all act."""
    generator = torch.Generator().manual_seed(3)
    B, T = 8, 6
    lengths = torch.tensor([6, 3, 5, 1, 6, 4, 2, 6])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    old_logp = -torch.rand(B, T, generator=generator, dtype=torch.float64) * 3
    logp = old_logp + torch.randn(B, T, generator=generator, dtype=torch.float64) * 0.6
    logp[1, 0] = old_logp[1, 0] + 1.6                     # ratio ~5 on a negative-advantage row: dual clip acts
    advantages = torch.tensor([1.2, -0.8, 0.5, 0.0, -1.5, 0.9, -0.3, 0.7], dtype=torch.float64)[:, None].expand(B, T).clone()
    entropy = torch.rand(B, T, generator=generator, dtype=torch.float64) * 2
    ref_logp = old_logp + torch.randn(B, T, generator=generator, dtype=torch.float64) * 0.3
    return {"mask": mask, "old_logp": old_logp, "logp": logp, "advantages": advantages, "entropy": entropy, "ref_logp": ref_logp}


def our_loss(config: dict, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """This trainer's loss of one micro-batch, composed as ``GRPOTrainer._micro_batch_loss`` composes its hooks."""
    c = config
    mask, logp, old_logp, advantages = batch["mask"], batch["logp"], batch["old_logp"], batch["advantages"]
    token_loss, clip_stats = ppo_clip_loss(logp, old_logp, advantages, c["clip"]["eps_low"], c["clip"]["eps_high"],
                                           c["clip"]["dual_c"])
    method = c["entropy"]["method"]
    if method == "clip_cov":
        cov = c["entropy"]["clip_cov"]
        chosen, candidates = clip_cov_selection(advantages, logp, mask, clip_stats["clipped_term_larger"],
                                                cov["ratio"], cov["lower"], cov["upper"], torch.Generator().manual_seed(0))
        assert candidates.sum() <= max(1, int(cov["ratio"] * mask.sum())) and chosen.sum() > 0   # deterministic: all chosen
        token_loss = token_loss * ((~chosen).double() * mask)
    if method == "kl_cov":
        chosen = kl_cov_selection(advantages, logp, mask, c["entropy"]["kl_cov"]["ratio"])
        token_loss = kl_cov_token_loss(logp, old_logp, advantages, chosen, c["entropy"]["kl_cov"]["coef"])
    pg_loss = aggregate(c["loss_agg"], token_loss, mask)
    loss = pg_loss
    if method == "entropy_bonus":
        loss = loss + entropy_bonus_loss(batch["entropy"], mask, c["entropy"]["bonus"]["coef"], c["loss_agg"])
    if c["kl"]["beta"] > 0:
        loss = loss + c["kl"]["beta"] * aggregate(c["loss_agg"], kl_k3(logp, batch["ref_logp"]), mask)
    return {"pg_loss": float(pg_loss), "loss": float(loss)}


def run_library(name: str, requests: dict) -> dict:
    python = PYTHON[name]
    if not (python.parent.parent / ".exports-stamp").exists():
        message = f"{python.parent.parent.relative_to(REPO)} is not set up: run `bash scripts/setup_exports.sh` (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # this project on the path, and its verl plugin (trainers.engines.verl_plugin: entropy_sweeper.clip_cov / kl_cov)
    # loaded by verl's own external-module mechanism, as a worker with VERL_USE_EXTERNAL_MODULES set loads it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0",
           "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "VERL_USE_EXTERNAL_MODULES": "trainers.engines.verl_plugin"}
    done = subprocess.run([str(python), str(REPO / "tests" / "exports" / f"{name}_check.py")], input=json.dumps(requests),
                          capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    assert done.returncode == 0, f"{name} rejected an export:\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every variant written by ``export_text`` (what ``export_best`` writes), plus the files ``sweeper export
    --format verl|trl`` writes for the best trial of a small study (name ``cli``)."""
    from sweeper.cli import main
    from test_sweeper_export import run_small_study

    folder = tmp_path_factory.mktemp("exports")
    files = {}
    for fmt in ("verl", "trl"):
        for name, config in VARIANTS.items():
            if engine_refusal(config["entropy"]["method"], fmt):   # refused at export (test_methods_an_engine_cannot_run)
                continue
            path = folder / f"{name}.{fmt}.yaml"
            path.write_text(export_text(config, fmt, [f"test variant {name}"]))
            files[fmt, name] = path
    study = run_small_study(folder)   # a STEER study: TRL runs it, verl cannot (test_sweeper_export_cli_files_...)
    files["trl", "cli"] = folder / "best.trl.yaml"
    assert main(["export", str(study), "-o", str(files["trl", "cli"]), "--format", "trl", "--target-version", "1.16.0"]) == 0
    files["study"] = study
    return files


@pytest.fixture(scope="module")
def verl(exported):
    batch = {k: v.tolist() for k, v in mini_batch().items()}
    return run_library("verl", {key[1]: {"config": str(path), "batch": batch if key[1] in LOSS_VARIANTS else None}
                                for key, path in exported.items() if key[0] == "verl"})


@pytest.fixture(scope="module")
def trl(exported):
    """TRL gets the model the export names in its header (GRPOConfig has no model key)."""
    requests = {}
    for key, path in exported.items():
        if key[0] == "trl":
            name = key[1]
            model = re.search(r"method, model '([^']+)'", header(path))
            assert model, f"{path.name}: no model in the header"
            requests[name] = {"config": str(path), "model": model.group(1)}
    return run_library("trl", requests)


def header(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))


def our_lrs(config: dict) -> list[float]:
    schedule = make_lr_lambda(RunConfig(**config))
    return [config["optim"]["lr"] * schedule(s) for s in range(config["train"]["steps"])]


# --------------------------------------------------------------------------- every variant starts


def test_every_export_passes_verl_validation_and_builds_its_workers_configs(verl):
    for name, result in verl.items():
        assert result["verl_version"].startswith("0.9."), name
        assert result["actor_class"] == "FSDPActorConfig" and result["optim_class"] == "FSDPOptimizerConfig", name
        assert result["rollout_registered"] and result["rollout"]["name"] == "vllm", name
        assert result["model_type"] == "llama" and result["tokenizer_vocab"] > 0, name     # the shipped model folder loads
        assert result["resolved"]["actor_rollout_ref"]["model"]["path"] == str(REPO / "trainers" / "assets" / "tiny-arith")


def test_every_export_builds_a_trl_grpo_trainer(trl):
    for name, result in trl.items():
        assert result["trl_version"].startswith("1.16."), name
        assert result["model_path"] == str(REPO / "trainers" / "assets" / "tiny-arith"), name    # builtin: -> the folder
        assert result["trainer"]["model_type"] == "llama", name
        assert result["args"]["disable_dropout"] is True and result["optimizer"]["class"].startswith("AdamW"), name


# --------------------------------------------------------------------------- optimizer and schedule


def test_optimizer_and_schedule(verl, trl, exported):
    for name in ("optim_warmup_constant", "optim_cosine"):
        config, ours = VARIANTS[name], our_lrs(VARIANTS[name])
        assert verl[name]["lrs"] == pytest.approx(ours, rel=1e-12, abs=1e-15), name       # exactly this trainer's schedule
        assert verl[name]["optimizer"]["betas"] == pytest.approx(config["optim"]["betas"])
        assert verl[name]["optimizer"]["weight_decay"] == config["optim"]["weight_decay"]
        assert trl[name]["optimizer"]["betas"] == pytest.approx(config["optim"]["betas"])
        assert trl[name]["optimizer"]["weight_decay"] == config["optim"]["weight_decay"]
    assert verl["optim_warmup_constant"]["optim"]["clip_grad"] == float("inf")          # max_grad_norm: null = no clipping
    assert trl["optim_warmup_constant"]["args"]["max_grad_norm"] == 0.0                 # HF Trainer: 0 = no clipping
    assert verl["optim_cosine"]["optim"]["clip_grad"] == 0.5 and trl["optim_cosine"]["args"]["max_grad_norm"] == 0.5

    # cosine after a warmup: verl runs one step ahead after the warmup, as the export's comment says
    config = VARIANTS["optim_cosine_warmup"]
    ours, theirs, warmup = our_lrs(config), verl["optim_cosine_warmup"]["lrs"], config["optim"]["warmup_steps"]
    assert theirs[:warmup] == pytest.approx(ours[:warmup], rel=1e-12)
    assert theirs[warmup:-1] == pytest.approx(ours[warmup + 1:], rel=1e-12)
    assert "differs: actor_rollout_ref.actor.optim: after the warmup verl's cosine runs one step ahead" in header(exported["verl", "optim_cosine_warmup"])

    # TRL steps its schedule per optimizer step (K per rollout step): it meets this trainer's lr at the first
    # optimizer step of each rollout step after the warmup, and reaches the warmup's values one rollout step later
    for name in ("optim_warmup_constant", "optim_cosine", "optim_cosine_warmup"):
        config, lrs = VARIANTS[name], trl[name]["lrs"]
        K = config["train"]["ppo_epochs"] * config["train"]["mini_batches"]
        ours, warmup, steps = our_lrs(config), config["optim"]["warmup_steps"], config["train"]["steps"]
        assert len(lrs) == K * steps
        assert [lrs[s * K] for s in range(warmup, steps)] == pytest.approx(ours[warmup:], rel=1e-9), name
        assert [lrs[(s + 1) * K] for s in range(warmup)] == pytest.approx(ours[:warmup], rel=1e-9), name
        if warmup or config["optim"]["schedule"] == "cosine":
            assert "differs: TRL steps the LR schedule at every optimizer step" in header(exported["trl", name])


# --------------------------------------------------------------------------- batch units


def test_batch_units(verl, trl):
    config = VARIANTS["batch"]
    prompts, G = config["rollout"]["prompts_per_step"], config["rollout"]["group_size"]
    M, E, micro = config["train"]["mini_batches"], config["train"]["ppo_epochs"], config["train"]["micro_batch_size"]
    resolved, actor = verl["batch"]["resolved"], verl["batch"]["actor"]
    assert resolved["data"]["train_batch_size"] == prompts and actor["rollout_n"] == G      # prompts, before rollout.n
    assert actor["ppo_mini_batch_size"] * actor["rollout_n"] == prompts * G // M            # responses per optimizer step
    assert prompts // actor["ppo_mini_batch_size"] * actor["ppo_epochs"] == M * E           # optimizer steps per rollout step
    assert actor["ppo_micro_batch_size_per_gpu"] == micro
    assert verl["batch"]["rollout"]["log_prob_micro_batch_size_per_gpu"] == micro
    assert resolved["trainer"]["n_gpus_per_node"] * resolved["trainer"]["nnodes"] == 1
    args = trl["batch"]["args"]
    assert args["generation_batch_size"] == prompts * G and args["num_generations"] == G
    assert args["per_device_train_batch_size"] == micro
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == prompts * G // M
    per_generation = args["steps_per_generation"] * args["num_iterations"] // args["gradient_accumulation_steps"]
    assert per_generation == M * E and args["max_steps"] == config["train"]["steps"] * M * E
    # micro_batch_size unset: the whole mini-batch, written explicitly (verl requires the key)
    default = VARIANTS["clip_dual"]
    assert verl["clip_dual"]["actor"]["ppo_micro_batch_size_per_gpu"] == batch_shape(default)["per_mini"]
    assert trl["clip_dual"]["args"]["gradient_accumulation_steps"] == 1


# --------------------------------------------------------------------------- the loss: clip, KL, aggregation, entropy, covariance


def assert_same_loss(verl, name):
    ours = our_loss(VARIANTS[name], mini_batch())
    theirs = verl[name]["loss"]
    assert theirs["pg_loss"] == pytest.approx(ours["pg_loss"], rel=1e-9, abs=1e-12), name
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-9, abs=1e-12), name


def test_clip(verl, trl):
    for name in ("clip_dual", "clip_no_dual"):
        clip = VARIANTS[name]["clip"]
        actor = verl[name]["actor"]
        assert (actor["clip_ratio_low"], actor["clip_ratio_high"]) == (clip["eps_low"], clip["eps_high"])
        assert actor["clip_ratio_c"] == (clip["dual_c"] if clip["dual_c"] is not None else float("inf"))
        assert_same_loss(verl, name)
        trainer = trl[name]["trainer"]
        assert (trainer["epsilon_low"], trainer["epsilon_high"]) == (clip["eps_low"], clip["eps_high"])
        assert trl[name]["args"]["delta"] == clip["dual_c"]
    # the dual clip acts on this batch: without it the loss would differ
    no_dual = copy.deepcopy(VARIANTS["clip_dual"])
    no_dual["clip"]["dual_c"] = None
    assert our_loss(no_dual, mini_batch())["loss"] != pytest.approx(verl["clip_dual"]["loss"]["loss"])


def test_kl(verl, trl):
    assert verl["kl"]["use_reference_policy"] and verl["kl"]["actor"]["use_kl_loss"]
    assert verl["kl"]["actor"]["kl_loss_coef"] == 0.05 and verl["kl"]["ref"]["ppo_micro_batch_size_per_gpu"] > 0
    assert_same_loss(verl, "kl")
    assert not verl["clip_dual"]["use_reference_policy"] and not verl["clip_dual"]["actor"]["use_kl_loss"]
    assert trl["kl"]["trainer"]["beta"] == 0.05 and trl["clip_dual"]["trainer"]["beta"] == 0.0


def test_loss_aggregation(verl, trl, exported):
    expected = {"clip_dual": ("token-mean", "bnpo"), "agg_seq_mean": ("seq-mean-token-mean", "grpo"),
                "agg_sum_norm": ("seq-mean-token-sum-norm", "dr_grpo")}
    for name, (verl_mode, trl_type) in expected.items():
        assert verl[name]["actor"]["loss_agg_mode"] == verl_mode
        assert trl[name]["trainer"]["loss_type"] == trl_type
        assert_same_loss(verl, name)
    # Dr. GRPO: verl divides by loss_scale_factor = max_new_tokens; the same here when the padded length reaches it
    assert verl["agg_sum_norm"]["actor"]["loss_scale_factor"] == VARIANTS["agg_sum_norm"]["rollout"]["max_new_tokens"] == 6
    assert trl["agg_sum_norm"]["trainer"]["max_completion_length"] == 6
    assert verl["agg_sum_norm"]["algorithm"]["norm_adv_by_std_in_grpo"] is False
    assert trl["agg_sum_norm"]["trainer"]["scale_rewards"] == "none"
    for fmt in ("verl", "trl"):   # the same divisor as this trainer's (max_new_tokens): a note, not a difference
        text = header(exported[fmt, "agg_sum_norm"])
        assert "seq_mean_token_sum_norm (Dr.GRPO) is normalised by max_new_tokens = 6" in text and "differs: seq" not in text


def test_entropy_terms(verl, trl):
    assert verl["entropy_bonus"]["actor"]["entropy_coeff"] == 0.01
    assert_same_loss(verl, "entropy_bonus")
    assert verl["clip_dual"]["actor"]["entropy_coeff"] == 0.0
    # TRL: the method runs in trainers.engines.trl (the launcher beside the file): TRL's own entropy options stay off
    for name in ("entropy_bonus", "forking", "clip_dual"):
        assert trl[name]["trainer"]["entropy_coef"] == 0.0 and trl[name]["trainer"]["top_entropy_quantile"] == 1.0


def test_clip_cov_and_kl_cov(verl, exported):
    clip_cov = verl["clip_cov"]["policy_loss"]
    """verl runs this project's Clip-Cov and KL-Cov (trainers.engines.verl_plugin, registered in verl's policy-loss
    registry): the loss through verl's get_policy_loss_fn equals this trainer's on the same tensors."""
    assert (clip_cov["loss_mode"], clip_cov["clip_cov_ratio"], clip_cov["clip_cov_lb"], clip_cov["clip_cov_ub"]) == (
        "entropy_sweeper.clip_cov", 1.0, 0.05, 5.0)
    assert_same_loss(verl, "clip_cov")
    kl_cov = verl["kl_cov"]["policy_loss"]
    assert (kl_cov["loss_mode"], kl_cov["kl_cov_ratio"], kl_cov["ppo_kl_coef"]) == ("entropy_sweeper.kl_cov", 0.1, 0.5)
    assert_same_loss(verl, "kl_cov")
    for name in ("clip_cov", "kl_cov"):
        assert "trainers.engines.verl_plugin" in header(exported["verl", name])


# --------------------------------------------------------------------------- evaluation and checkpoints


def test_evaluation(verl, trl, exported):
    config = VARIANTS["eval"]
    val = verl["eval"]["rollout"]["val_kwargs"]
    assert (val["n"], val["temperature"], val["top_p"], val["top_k"], val["do_sample"]) == (4, 0.7, 0.9, -1, True)
    resolved = verl["eval"]["resolved"]
    assert resolved["data"]["val_max_samples"] == 16
    assert resolved["trainer"]["test_freq"] == 5 and resolved["trainer"]["val_before_train"] is False
    args, K = trl["eval"]["args"], config["train"]["ppo_epochs"] * config["train"]["mini_batches"]
    assert args["num_generations_eval"] == 4 and args["per_device_eval_batch_size"] % 4 == 0
    assert args["eval_strategy"] == "steps" and args["eval_steps"] == 5 * K and args["eval_on_start"] is False
    assert "differs: TRL evaluates with the training sampling" in header(exported["trl", "eval"])
    assert "differs: data.val_max_samples draws 16 validation prompts at random" in header(exported["verl", "eval"])


def test_checkpoints(verl, trl):
    for name, every in (("checkpoints_end", 10), ("checkpoints_every", 4)):
        config, K = VARIANTS[name], VARIANTS[name]["train"]["ppo_epochs"] * VARIANTS[name]["train"]["mini_batches"]
        trainer = verl[name]["resolved"]["trainer"]
        assert trainer["save_freq"] == every and trainer["max_actor_ckpt_to_keep"] == 1     # 0 = at the end only, not never
        assert trainer["default_local_dir"] == config["train"]["output_dir"] and trainer["total_training_steps"] == 10
        args = trl[name]["args"]
        assert args["save_strategy"] == "steps" and args["save_steps"] == every * K and args["save_total_limit"] == 1
    # precision and remote code travel with the same export
    assert verl["checkpoints_every"]["resolved"]["actor_rollout_ref"]["model"]["trust_remote_code"] is True
    # float32 master weights, bf16 compute (as the trial: bf16 weights round away small updates)
    for role in ("actor", "ref"):
        fsdp = verl["checkpoints_every"]["resolved"]["actor_rollout_ref"][role]["fsdp_config"]
        assert fsdp["model_dtype"] == "fp32" and fsdp["mixed_precision"]["param_dtype"] == "bf16"
    assert verl["kl"]["ref"]["model_dtype"] == "fp32"   # the reference policy as verl's worker builds it
    assert trl["checkpoints_every"]["args"]["trust_remote_code"] is True and trl["checkpoints_every"]["args"]["bf16"] is True
    assert trl["checkpoints_every"]["trainer"]["model_dtype"] == "float32"
    assert trl["checkpoints_end"]["trainer"]["model_dtype"] == "float32" and trl["checkpoints_end"]["args"]["bf16"] is False


# --------------------------------------------------------------------------- the CLI path and the version check


def test_sweeper_export_cli_files_start_in_both_libraries(trl, exported, capsys):
    """The files the CLI writes for a study's best trial (a STEER study): TRL's file, its run config and launcher
    carry the method; verl is refused with what it lacks (no file, never a plain GRPO)."""
    from sweeper.cli import main

    assert trl["cli"]["args"]["num_generations"] == 8 and trl["cli"]["trainer"]["model_type"] == "llama"
    text = header(exported["trl", "cli"])
    assert "# trial: " in text and "# target: trl " in text and "(--target-version)" in text and "WARNING" not in text
    assert "#   entropy.steer" not in text              # carried by the run config beside the file, not listed as lost
    run_config = yaml.safe_load((exported["trl", "cli"].parent / "best.trl.run.yaml").read_text())
    assert run_config["entropy"]["method"] == "steer"
    launcher = (exported["trl", "cli"].parent / "best.trl.launch.sh").read_text()
    assert "accelerate launch ${ACCELERATE_ARGS:-} -m trainers.engines.trl best.trl.run.yaml best.trl.yaml" in launcher
    refused = exported["study"].parent / "best.verl.yaml"
    assert main(["export", str(exported["study"]), "-o", str(refused), "--format", "verl"]) != 0
    assert not refused.exists()
    assert "cannot run on verl: STEER's Omega needs the old policy's full-vocabulary entropy" in capsys.readouterr().err
    native = yaml.safe_load(export_text(VARIANTS["clip_dual"], "native", []))
    assert native["model"]["path"] == "builtin:tiny-arith"       # the native export keeps the builtin name


def test_a_version_outside_the_supported_range_warns():
    with pytest.warns(UserWarning, match=r"verl 0.8.5 is outside the supported range verl >=0.9.1,<0.10"):
        text = export_text(VARIANTS["clip_dual"], "verl", [], target_version="0.8.5")
    assert "# WARNING: verl 0.8.5 is outside the supported range" in text
    with pytest.warns(UserWarning, match=r"trl 2.0.0 is outside"):
        export_text(VARIANTS["clip_dual"], "trl", [], target_version="2.0.0")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "# target: verl 0.9.3 (--target-version)" in export_text(VARIANTS["clip_dual"], "verl", [], target_version="0.9.3")
