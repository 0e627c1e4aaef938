"""Sampling from the space on real Optuna studies (SQLite): conditional parameters of unchosen methods
are never sampled, constraints and the run-config schema are enforced by rejection, grids."""

from __future__ import annotations

import optuna
import pytest

from sweeper.study.space import Rejected, grid_search_space
from sweeper.study.spec import build_sampler_of, resolve, sample
from sweeper.study.spec import load_spec
from sweeper.run.storage import make_storage
from trainers.config import parse_config

METHOD_KNOBS = {  # parameter-name prefixes that belong to one method in all_methods.yaml
    "siren": ("entropy.siren.", "siren."), "aer": ("entropy.aer.", "aer."), "steer": ("entropy.steer.",),
    "entropy_bonus": ("entropy.bonus.",), "forking_tokens": ("entropy.forking.",), "clip_cov": ("entropy.clip_cov.",),
    "kl_cov": ("entropy.kl_cov.",), "entropy_advantage": ("entropy.entropy_advantage.",),
}


def spec_for(tmp_path, space, sampler, **extra):
    return load_spec({"study": {"name": "s"}, "objective": {"metric": "val/pass@8"}, "budget": {"n_trials": 1},
                      "base": {"train": {"steps": 10}}, "space": space, "sampler": sampler,
                      "tracking": {"enabled": False}, **extra}, base_dir=tmp_path)


@pytest.mark.parametrize("sampler", [{"type": "random", "seed": 1}, {"type": "tpe", "seed": 1, "n_startup_trials": 8}])
def test_unchosen_method_knobs_are_never_sampled(tmp_path, sampler):
    spec = spec_for(tmp_path, {"include": "builtin:all_methods"}, sampler)
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'o.db'}"), sampler=build_sampler_of(spec), direction="maximize")
    base = spec.base
    seen_methods = set()
    for i in range(40):
        trial = study.ask()
        sampled = sample(spec, trial)
        method = sampled.config["entropy"]["method"]
        seen_methods.add(method)
        for other, prefixes in METHOD_KNOBS.items():
            knobs = [name for name in trial.params if name.startswith(prefixes)]
            if other == method:
                assert knobs, f"{method}: its own knobs must be sampled"
            else:
                assert not knobs, f"method {method}: knobs of {other} were sampled: {knobs}"
                # and the config keeps the base values of that method's section
                section = prefixes[0].split(".")[1] if prefixes[0].startswith("entropy.") else None
                if section:
                    assert sampled.config["entropy"][section] == base["entropy"][section]
        assert set(trial.params) == set(sampled.sampled)
        if method == "steer" and sampled.config["entropy"]["steer"]["mapping"] == "exp":
            assert "entropy.steer.w_max" not in trial.params     # nested condition: linear mapping only
        try:
            resolve(spec, sampled)
            study.tell(trial, (i % 7) / 7.0)
        except Rejected:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert len(seen_methods) >= 5


def test_two_parameters_share_a_path_under_exclusive_conditions(tmp_path):
    spec = spec_for(tmp_path, {"include": ["builtin:siren", "builtin:aer"],
                               "params": {"entropy.method": ["siren", "aer"]}}, {"type": "random", "seed": 0})
    study = optuna.create_study(sampler=build_sampler_of(spec))
    for _ in range(20):
        trial = study.ask()
        sampled = sample(spec, trial)
        method = sampled.config["entropy"]["method"]
        if method == "aer":
            assert "aer.tau" in trial.params and "siren.anchor_source" not in trial.params
            assert sampled.config["entropy"]["anchor"]["ratio"] == trial.params["aer.tau"]
        else:
            assert "aer.tau" not in trial.params and sampled.config["entropy"]["anchor"]["ratio"] is None
        study.tell(trial, 0.0)


def test_constraints_are_enforced_by_rejection(tmp_path):
    spec = spec_for(tmp_path, {"include": "builtin:clip"}, {"type": "random", "seed": 3})
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'o.db'}"), sampler=build_sampler_of(spec))
    accepted = rejected = 0
    for _ in range(60):
        trial = study.ask()
        sampled = sample(spec, trial)
        try:
            config = resolve(spec, sampled)
        except Rejected as error:
            assert trial.params["clip.eps_high"] < trial.params["clip.eps_low"]
            assert "clip.eps_high >= clip.eps_low" in str(error)
            rejected += 1
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        assert config["clip"]["eps_high"] >= config["clip"]["eps_low"]
        parse_config(config)
        accepted += 1
        study.tell(trial, 0.0)
    assert accepted and rejected   # the ranges overlap: both happen


def test_conditional_constraint_applies_only_when_its_condition_holds(tmp_path):
    spec = spec_for(tmp_path, {"params": {"entropy.method": ["aer", "none"], "entropy.aer.alpha_init": 0.05},
                               "constraints": [{"expr": "entropy.aer.alpha_init <= entropy.aer.alpha_max",
                                                "when": {"entropy.method": "aer"}}]}, {"type": "random"})
    fixed = optuna.trial.FixedTrial({"entropy.method": "none"})
    resolve(spec, sample(spec, fixed))                                   # condition false: accepted
    with pytest.raises(Rejected, match="alpha_init <= entropy.aer.alpha_max"):
        resolve(spec, sample(spec, optuna.trial.FixedTrial({"entropy.method": "aer"})))


def test_run_config_schema_refusal_is_a_rejection(tmp_path):
    spec = spec_for(tmp_path, {"params": {"rollout.prompts_per_step": [6, 8]}}, {"type": "random"},
                    )
    ok = resolve(spec, sample(spec, optuna.trial.FixedTrial({"rollout.prompts_per_step": 8})))
    assert ok["rollout"]["prompts_per_step"] == 8
    with pytest.raises(Rejected, match="mini_batches .4. must divide rollout.prompts_per_step .6."):
        resolve(spec, sample(spec, optuna.trial.FixedTrial({"rollout.prompts_per_step": 6})))


def test_budget_steps_and_output_dir_override(tmp_path):
    spec = load_spec({"study": {"name": "s"}, "objective": {"metric": "val/pass@8"}, "budget": {"n_trials": 1, "steps": 33},
                      "space": {"params": {"clip.eps_high": 0.3}}}, base_dir=tmp_path)
    config = resolve(spec, sample(spec, optuna.trial.FixedTrial({})), output_dir="/x/run")
    assert config["train"]["steps"] == 33 and config["train"]["output_dir"] == "/x/run" and config["clip"]["eps_high"] == 0.3


def test_grid(tmp_path):
    spec = spec_for(tmp_path, {"params": {"entropy.method": ["none", "steer"],
                                          "clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3, "step": 0.05},
                                          "rollout.group_size": {"type": "int", "low": 4, "high": 8, "step": 4}}},
                    {"type": "grid"})
    assert grid_search_space(spec.space) == {"entropy.method": ["none", "steer"], "clip.eps_high": [0.2, 0.25, 0.3],
                                       "rollout.group_size": [4, 8]}
    study = optuna.create_study(sampler=build_sampler_of(spec))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        sampled = sample(spec, trial)
        seen.add(tuple(sorted(sampled.sampled.items())))
        study.tell(trial, 0.0)
    assert len(seen) == 12
