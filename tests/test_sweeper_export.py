"""Export: the chosen trial's complete config (accepted by trainers.config.load_config), provenance,
--steps, TRL/verl names, Pareto-front choice; status table. Studies run in-process (debug executor)
on the stand-in trainer with a real SQLite storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeper.cli import main
from sweeper.run.driver import run_study
from sweeper.results.export import export_best
from sweeper.results.formats import to_trl, to_verl
from sweeper.study.spec import SpecError, load_spec
from trainers.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"


def run_small_study(tmp_path: Path, **sections) -> Path:
    spec = {
        "study": {"name": "ex"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 6, "eval_every": 2}},
        "space": {"include": "builtin:steer", "params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "random", "seed": 2},
        "pruner": "none",
        "budget": {"n_trials": 4},
        "executor": {"type": "debug", "entrypoint": STANDIN},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_study(path, progress=False, log=lambda m: None)
    return path


def test_export_best_is_a_valid_run_config_with_provenance(tmp_path, capsys):
    path = run_small_study(tmp_path)
    spec = load_spec(path)
    out = tmp_path / "best.yaml"
    assert main(["export", str(path), "-o", str(out), "--steps", "500"]) == 0
    config = load_config(out)                               # what `sweeper train best.yaml` reads
    assert isinstance(config, RunConfig)
    assert config.train.steps == 500
    assert config.train.output_dir == "runs/ex-trial" + str(config.train.output_dir.rsplit("trial", 1)[1])
    assert "studies" not in config.train.output_dir         # never resumes the trial's checkpoint
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    import optuna
    study = optuna.load_study(study_name="ex", storage=spec.study.storage)
    best = study.best_trial
    assert any(f"trial: {best.number} (COMPLETE)" in line and f"{best.value:.6g}" in line for line in header)
    assert any(line.startswith("# study: ex") and spec.study.storage in line for line in header)
    assert any("git commit:" in line for line in header) and any("entropy-sweeper 0.1.0" in line for line in header)
    assert any("train.steps: 500 (the trial ran 6" in line for line in header)
    assert config.clip.eps_high == pytest.approx(best.params["clip.eps_high"])
    assert config.entropy.method == "steer" and config.entropy.steer.w_min == pytest.approx(best.params["entropy.steer.w_min"])


def test_export_a_given_trial_and_the_python_api(tmp_path):
    path = run_small_study(tmp_path)
    written = export_best(path, tmp_path / "t1.yaml", trial=1)
    assert load_config(written).clip.eps_high == pytest.approx(
        next(t for t in __import__("optuna").load_study(study_name="ex", storage=load_spec(path).study.storage).trials
             if t.number == 1).params["clip.eps_high"])


@pytest.mark.parametrize("fmt", ["trl", "verl"])
def test_export_other_formats_map_knobs_and_list_the_rest(tmp_path, fmt, capsys):
    path = run_small_study(tmp_path)
    out = tmp_path / f"best.{fmt}.yaml"
    native = yaml.safe_load(export_best(path, tmp_path / "native.yaml").read_text())
    if fmt == "verl":   # STEER needs H(pi_old) per token, which verl's policy loss does not receive: refused, no file
        assert main(["export", str(path), "-o", str(out), "--format", fmt]) != 0
        assert not out.exists()
        assert "entropy.method 'steer' cannot run on verl" in capsys.readouterr().err
        return
    assert main(["export", str(path), "-o", str(out), "--format", fmt]) == 0
    text = out.read_text()
    mapped = yaml.safe_load(text)
    assert mapped["epsilon"] == native["clip"]["eps_low"] and mapped["epsilon_high"] == native["clip"]["eps_high"]
    assert mapped["num_generations"] == native["rollout"]["group_size"] and mapped["beta"] == native["kl"]["beta"]
    assert mapped["loss_type"] == "bnpo" and mapped["scale_rewards"] == "group"
    # STEER runs in TRL through trainers.engines.trl: the run config beside the file carries its knobs
    run_config = yaml.safe_load((tmp_path / "best.trl.run.yaml").read_text())
    assert run_config["entropy"] == native["entropy"] and run_config["entropy"]["method"] == "steer"
    assert "-m trainers.engines.trl best.trl.run.yaml best.trl.yaml" in (tmp_path / "best.trl.launch.sh").read_text()
    assert "#   entropy.steer" not in text and "entropy.siren" not in text   # not listed as lost
    assert "best.trl.launch.sh" in capsys.readouterr().out


def test_mapping_of_a_method_other_trainers_know():
    base = RunConfig().model_dump(mode="json")
    base["entropy"]["method"] = "forking_tokens"
    base["entropy"]["forking"]["top_fraction"] = 0.2
    base["clip"]["dual_c"] = 3.0
    trl, unmapped, _ = to_trl(base)   # the 80/20 rule runs in trainers.engines.trl, TRL's own quantile stays off
    assert trl["top_entropy_quantile"] == 1.0 and trl["delta"] == 3.0
    assert "entropy.method" not in dict(unmapped) and "entropy.forking.top_fraction" not in dict(unmapped)
    base["entropy"]["method"] = "entropy_bonus"
    base["entropy"]["bonus"]["coef"] = 0.003
    base["advantage"] = "dr_grpo"
    base["loss_agg"] = "seq_mean_token_sum_norm"
    verl, unmapped, _ = to_verl(base)
    actor = verl["actor_rollout_ref"]["actor"]
    assert actor["entropy_coeff"] == 0.003 and actor["clip_ratio_c"] == 3.0 and actor["loss_agg_mode"] == "seq-mean-token-sum-norm"
    assert verl["algorithm"]["norm_adv_by_std_in_grpo"] is False
    assert "entropy.bonus.coef" not in dict(unmapped)


def test_multi_objective_export_picks_from_the_pareto_front(tmp_path, capsys):
    path = run_small_study(tmp_path, objective=[{"metric": "val/pass@8"}, {"metric": "val/entropy", "direction": "minimize"}],
                           sampler={"type": "nsga2", "seed": 0, "population_size": 4})
    out = tmp_path / "mo.yaml"
    assert main(["export", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--pareto-index I or --prefer METRIC" in err and "[0] trial" in err
    assert main(["export", str(path), "-o", str(out), "--prefer", "val/entropy"]) == 0
    assert load_config(out).entropy.method == "steer"
    assert main(["export", str(path), "-o", str(out), "--pareto-index", "0"]) == 0
    assert main(["export", str(path), "-o", str(out), "--pareto-index", "99"]) == 2
    assert "outside the Pareto front" in capsys.readouterr().err


def test_export_and_status_of_a_study_that_does_not_exist(tmp_path, capsys):
    spec = {"study": {"name": "nothing"}, "objective": {"metric": "val/pass@8"}, "budget": {"n_trials": 1},
            "tracking": {"enabled": False}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["export", str(path), "-o", str(tmp_path / "x.yaml")]) == 2
    assert "run `sweeper run` first" in capsys.readouterr().err
    assert main(["status", str(path)]) == 2


def test_status_table(tmp_path, capsys):
    path = run_small_study(tmp_path, space={"params": {"entropy.method": ["none", "steer"]}},
                           pruner={"type": "none", "health": {"collapse": {"fraction": 0.5, "patience": 1}}},
                           enqueue=[{"entropy.method": "none"}, {"entropy.method": "steer"}], budget={"n_trials": 2})
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "trials: 1 complete, 1 pruned" in out
    assert "PRUNED    " in out and "entropy_collapse" in out and "entropy.method=none" in out
    with pytest.raises(SpecError):
        export_best(path, tmp_path / "x.yaml", pareto_index=0)
