"""Hostile input: every bad study spec, space include, Slurm profile or run config is refused by the CLI with
exit 2 and a message naming the field, the bad value and what would be accepted; never a traceback, never
a hang or an exhausted memory. Named regression tests for each class found by the issue-14 corpus, and a
property-based test (hypothesis) that mutates valid studies and run configs at random.

Everything runs the real CLI entry points in this process (``sweeper.cli.main``, ``trainers.__main__.main``
for configs it refuses before training), so a traceback would be an exception escaping here."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sweeper.cli import main as sweeper_main
from trainers.__main__ import main as trainer_main
from trainers.config import ConfigError, launch_problems, load_config

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("study", "objective", "base", "space", "enqueue", "sampler", "pruner", "budget", "executor", "tracking")
HANG_GUARD_S = 30  # a hang detector, not a speed target (benchmarks/hostile_inputs.py measures the time)


def valid_study(tmp_path: Path) -> dict:
    return {
        "study": {"name": "hostile", "dir": str(tmp_path / "studies" / "hostile")},
        "objective": {"metric": "val/pass@8", "aggregation": "mean_last_n", "last_n": 2},
        "base": {"model": {"path": "builtin:tiny-arith"}, "rollout": {"prompts_per_step": 8, "group_size": 8},
                 "train": {"steps": 60, "eval_every": 10, "mini_batches": 4}, "eval": {"k": [1, 8]},
                 "optim": {"lr": 2.0e-5}},
        "space": {
            "include": ["builtin:siren"],
            "params": {
                "entropy.method": {"type": "categorical", "choices": ["none", "siren", "steer"]},
                "clip.eps_high": {"type": "float", "low": 0.2, "high": 0.32},
                "entropy.steer.w_min": {"type": "float", "low": 0.5, "high": 1.0, "when": {"entropy.method": "steer"}},
            },
            "constraints": ["clip.eps_high >= clip.eps_low"],
        },
        "enqueue": [{"entropy.method": "none", "clip.eps_high": 0.2}],
        "sampler": {"type": "tpe", "seed": 0},
        "pruner": {"type": "successive_halving", "min_resource": 20, "reduction_factor": 2,
                   "health": {"collapse": {"fraction": 0.3, "patience": 3}, "nan": True}},
        "budget": {"n_trials": 8, "max_parallel": 2, "timeout": "2h"},
        "executor": {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 30}, "env": {"A": "1"}},
        "tracking": {"enabled": False},
    }


def valid_run_config(tmp_path: Path) -> dict:
    return {"seed": 0, "model": {"path": "builtin:tiny-arith"}, "rollout": {"prompts_per_step": 4, "group_size": 4},
            "train": {"steps": 2, "mini_batches": 2, "output_dir": str(tmp_path / "run")},
            "eval": {"num_prompts": 8, "n_samples": 4, "k": [1, 4]}, "optim": {"lr": 1e-4},
            "entropy": {"method": "siren", "siren": {"coef": 0.005}}}


@contextlib.contextmanager
def hang_guard(seconds: float = HANG_GUARD_S):
    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s: a hang, not a refusal")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(main, argv: list[str]) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of a CLI entry point run here; an exception escaping it fails."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with hang_guard(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - started


def write(path: Path, data=None, *, text: str | None = None, raw: bytes | None = None) -> Path:
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def assert_refused(code: int, err: str, *expected: str) -> None:
    assert code == 2, f"exit {code}, expected 2; stderr:\n{err}"
    assert err.startswith("error: ") and "Traceback" not in err, err
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"


def names_a_field(err: str, path: Path) -> bool:
    """A line of the message starts with a field of the spec (or run config), or names the file itself."""
    fields = SECTIONS + ("model", "data", "rollout", "advantage", "loss_agg", "clip", "kl", "optim", "train", "eval",
                         "entropy", "seed", "base:", "space.include", "executor.profile")
    lines = [line.strip() for line in err.splitlines()]
    return str(path) in err or any(re.match(rf"(error: )?({'|'.join(map(re.escape, fields))})[.\[:\s]", line) for line in lines)


def mutate(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    parts = path.split("/")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = parts[-1]
    if value is DELETE:
        del node[int(key) if isinstance(node, list) else key]
    elif isinstance(node, list):
        node[int(key)] = value
    else:
        node[key] = value
    return data


DELETE = object()

# --------------------------------------------------------------------------- named regression tests: files

FILE_CASES = {
    "not_utf8": (dict(raw=b"study: {name: caf\xe9}\n"), ["not UTF-8 text", "byte 0xe9"]),
    "utf16": (dict(raw="study: {name: x}\n".encode("utf-16")), ["not UTF-8 text"]),
    "deep_flow_nesting": (dict(text="study: " + "[" * 5000 + "]" * 5000 + "\n"), ["nest"]),
    "deep_block_nesting": (dict(text="".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n"),
                           ["more than 64 deep"]),
    "huge_integer": (dict(text="budget: {n_trials: " + "9" * 5000 + "}\n"), ["budget.n_trials", "5000 digits", "at most 100"]),
    "alias_bomb": (dict(text="a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))
        + "enqueue: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"), ["expands to more than 100000 values"]),
    "self_alias": (dict(text="study: &s {name: x, dir: *s}\n"), ["contains itself"]),
    "nul_in_a_string": (dict(text='study: {name: "a\\0b"}\n'), ["study.name", "NUL"]),
    "duplicate_key": (dict(text="budget: {n_trials: 4}\nbudget: {n_trials: 8}\n"), ["budget is given twice", "lines 1 and 2"]),
    "oversized": (dict(text="# " + "x" * (300 << 10) + "\n"), ["bytes", "at most 262144"]),
    "not_a_mapping": (dict(text="- just\n- a list\n"), ["must be a mapping"]),
    "python_tag": (dict(text="study: !!python/object/apply:os.system ['true']\n"), ["not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_study_files_are_refused_cleanly(case, tmp_path):
    content, expected = FILE_CASES[case]
    path = write(tmp_path / "study.yaml", **content)
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    assert_refused(code, err, str(path), *expected)


@pytest.mark.parametrize("target", ["folder", "/dev/zero", "/dev/urandom", "/dev/null", "fifo", "missing", "itself"])
@pytest.mark.parametrize("where", ["include", "base", "profile"])
def test_includes_bases_and_profiles_must_be_regular_yaml_files(where, target, tmp_path):
    path = tmp_path / "study.yaml"
    special = {"folder": str(tmp_path), "missing": str(tmp_path / "missing.yaml"), "itself": str(path)}.get(target, target)
    if target == "fifo":
        special = str(tmp_path / "fifo.yaml")
        os.mkfifo(special)  # opening it would block forever
    study = valid_study(tmp_path)
    if where == "include":
        study["space"]["include"] = [special]
    elif where == "base":
        study["base"] = special
    else:
        study["executor"] = {"type": "slurm", "profile": special}
    write(path, study)
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    field = {"include": "space.include", "base": "base", "profile": "executor.profile"}[where]
    if target == "itself" and where != "base":
        assert code == 2 and "Traceback" not in err and field in err, err  # read, then refused for its keys or as a loop
        return
    if target == "itself":
        assert_refused(code, err, "base")
        return
    reason = {"folder": "is a folder", "/dev/zero": "is a device", "/dev/urandom": "is a device", "/dev/null": "is a device",
              "fifo": "is a named pipe", "missing": "no file" if where == "profile" else "does not exist"}[target]
    assert_refused(code, err, field, reason)


@pytest.mark.parametrize("name", ["a" * 5000, "x/" * 3000 + "y.yaml"])
def test_paths_too_long_for_the_filesystem(name, tmp_path):
    study = valid_study(tmp_path)
    study["base"] = name
    path = write(tmp_path / "study.yaml", study)
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    assert_refused(code, err, "base: run config", "cannot be read")


# --------------------------------------------------------------------------- named regression tests: values

VALUE_CASES = {
    # name: (path in the study, value, expected substrings)
    "inf_bound": ("space/params/clip.eps_high/high", float("inf"), ["space.params[clip.eps_high].high", "finite", "inf"]),
    "nan_bound": ("space/params/clip.eps_high/low", float("nan"), ["space.params[clip.eps_high].low", "finite"]),
    "inf_lr": ("base/optim/lr", float("inf"), ["base.optim.lr", "finite", "inf"]),
    "group_size_1": ("base/rollout/group_size", 1, ["base.rollout.group_size", "zero advantage", "2 or more"]),
    "unknown_builtin_model": ("base/model/path", "builtin:tiny-arithh", ["base.model.path", "builtin:tiny-arithh", "builtin:tiny-arith"]),
    "missing_model_folder": ("base/model/path", "/no/such/model", ["base.model.path", "/no/such/model", "no such folder"]),
    "unknown_reward": ("base/data", {"reward": "exact"}, ["base.data.reward", "'exact'", "exact_numeric, math_verify"]),
    "health_metric_typo": ("pruner/health/collapse/metrics", ["train/entropyy"],
                           ["pruner.health.collapse.metrics[0]", "train/entropyy", "never fire", "'train/entropy'"]),
    "objective_never_logged": ("objective/metric", "val/accuracy", ["objective.metric", "val/accuracy", "val/pass@8"]),
    "constraint_when_never_holds": ("space/constraints", [{"expr": "clip.eps_high >= 0.1", "when": {"entropy.method": "sirne"}}],
                                    ["space.constraints[0].when.entropy.method", "'sirne'", "'siren'"]),
    "param_when_on_unswept_path": ("space/params/entropy.steer.w_min/when", {"advantage": "dr_grpo"},
                                   ["space.params[entropy.steer.w_min].when.advantage", "'dr_grpo'", "base config has 'grpo'"]),
    "constraint_never_holds": ("space/constraints", ["clip.eps_high >= 0.5"],
                               ["space.constraints[0]", "clip.eps_high >= 0.5", "false for each of 20 configs"]),
    "successive_halving_min_resource_0": ("pruner/min_resource", 0, ["pruner.min_resource", "0", "1 or more"]),
    "min_resource_beyond_the_steps": ("pruner/min_resource", 500, ["pruner.min_resource", "500", "60 steps"]),
    "hyperband_max_below_min": ("pruner", {"type": "hyperband", "min_resource": 50, "max_resource": 10},
                                ["pruner.max_resource", "10", "min_resource (50)"]),
    "entrypoint_module_missing": ("executor/entrypoint", "trainers.grpoo:train", ["executor.entrypoint", "no module trainers.grpoo"]),
    "entrypoint_function_missing": ("executor/entrypoint", "trainers.grpo:trian", ["executor.entrypoint", "'trian'", "'train'"]),
    "entrypoint_file_missing": ("executor/entrypoint", "no_such_trainer.py:train", ["executor.entrypoint", "no file"]),
    "env_value_not_a_string": ("executor/env", {"CUDA_VISIBLE_DEVICES": [0, 1]}, ["executor.env.CUDA_VISIBLE_DEVICES", "list"]),
    "env_value_boolean": ("executor/env", {"DEBUG": True}, ["executor.env.DEBUG", "true", "quote it"]),
    "n_trials_true": ("budget/n_trials", True, ["budget.n_trials", "boolean true"]),
    "lr_true": ("base/optim/lr", True, ["base.optim.lr", "boolean true"]),
    "grid_needs_steps": ("sampler", {"type": "grid"}, ["space.params[clip.eps_high]", "step"]),
    "unknown_key": ("budget/n_trails", 4, ["budget.n_trails", "unknown key", "n_trials"]),
    "study_dir_under_a_file": ("study/dir", "/dev/null/studies/x", ["study.dir", "/dev/null is a file"]),
    "storage_under_a_file": ("study/storage", "journal:///dev/null/optuna.log", ["study.storage", "/dev/null is a file"]),
    # found by the fuzz test below (with the valid study's include): a non-list constraints was concatenated
    "constraints_true_with_include": ("space/constraints", True, ["space.constraints", "list"]),
    "constraints_mapping_with_include": ("space/constraints", {"expr": "clip.eps_high >= 0.2"}, ["space.constraints", "list"]),
    "params_list_with_include": ("space/params", ["clip.eps_high"], ["space.params", "dict"]),
    # issue 26: specs the schema took that can never work
    "seeds_absurd": ("budget/seeds", 10 ** 6, ["budget.seeds", "less than or equal to 100", "1000000"]),
    # budget.race (sweeper/run/race.py)
    "race_unknown": ("budget/race", "sometimes", ["budget.race", "'in_trial' or 'rounds'", "sometimes"]),
    "race_without_a_range": ("budget/race", "rounds", ["budget.race", "give budget.seeds as a range"]),
    "choice_twice": ("space/params/entropy.method/choices", ["none", "siren", "steer", "siren"],
                     ["space.params[entropy.method].choices", "'siren' appears more than once"]),
    "when_value_twice": ("space/params/entropy.steer.w_min/when", {"entropy.method": ["steer", "steer"]},
                         ["space.params[entropy.steer.w_min].when.entropy.method", "'steer' appears more than once"]),
    "health_metric_twice": ("pruner/health/collapse/metrics", ["train/entropy", "train/entropy"],
                            ["pruner.health.collapse.metrics", "'train/entropy' appears more than once"]),
    "storage_is_a_folder": ("study/storage", "sqlite:////tmp", ["study.storage", "/tmp is a folder", "sqlite:///path/optuna.db"]),
    "storage_under_proc": ("study/storage", "sqlite:////proc/self/optuna.db", ["study.storage", "pseudo-filesystem"]),
    "journal_under_sys": ("study/storage", "journal:///sys/optuna.journal", ["study.storage", "pseudo-filesystem"]),
    "tracking_scheme_typo": ("tracking", {"enabled": True, "uri": "htp://localhost:5000"},
                             ["tracking.uri", "'htp'", "http"]),
    "when_reads_itself": ("space/params/entropy.steer.w_min/when", {"entropy.steer.w_min": 0.5},
                          ["space.params[entropy.steer.w_min].when.entropy.steer.w_min", "this parameter sets"]),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_bad_values_are_refused_at_validate(case, tmp_path):
    where, value, expected = VALUE_CASES[case]
    path = write(tmp_path / "study.yaml", mutate(valid_study(tmp_path), where, value))
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    assert_refused(code, err, *expected)


def test_an_invalid_base_gives_no_second_error_about_the_objective(tmp_path):
    """The defaults stand in for a refused base: the objective is not checked against their eval.k."""
    study = mutate(mutate(mutate(valid_study(tmp_path), "base/eval/k", [1, 16]), "base/eval/n_samples", 16),
                   "objective/metric", "val/pass@16")
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(write(tmp_path / "ok.yaml", study))])
    assert code == 0, err
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(write(tmp_path / "bad.yaml", mutate(study, "base/train/steps", -1)))])
    assert_refused(code, err, "base.train.steps")
    assert "objective" not in err and "eval.k = [1, 8]" not in err, err


def diamond_includes(folder: Path, depth: int) -> Path:
    """Files a<i>, b<i> that each include both a<i+1> and b<i+1>: 2^depth paths from the top, 2 depth files."""
    for level in range(depth, -1, -1):
        below = [f"a{level + 1}.yaml", f"b{level + 1}.yaml"] if level < depth else []
        for side in "ab":
            write(folder / f"{side}{level}.yaml", {"include": below, "params": {f"clip.eps_high": [0.2, 0.28]}}
                  if below else {"params": {"clip.eps_high": [0.2, 0.28]}})
    return folder / "a0.yaml"


def test_include_fan_out_reads_each_file_once(tmp_path, monkeypatch):
    """Only cycles were refused: a diamond chain 30 deep was 2^30 expansions (a hang); now each file is read once."""
    from sweeper.study import includes

    reads = []
    real_read = includes.read_yaml
    monkeypatch.setattr(includes, "read_yaml", lambda path, what: reads.append(path) or real_read(path, what))  # counts, reads for real
    study = mutate(valid_study(tmp_path), "space/include", [str(diamond_includes(tmp_path, 30))])
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(write(tmp_path / "study.yaml", study))])
    assert code == 0, err
    assert len(reads) == len(set(reads)) == 1 + 2 * 30   # a0, then a1..a30 and b1..b30: each file once


def test_an_include_chain_deeper_than_the_limit_is_refused(tmp_path):
    from sweeper.study.includes import MAX_INCLUDE_DEPTH

    depth = MAX_INCLUDE_DEPTH + 5
    for level in range(depth):
        write(tmp_path / f"c{level}.yaml", {"include": [f"c{level + 1}.yaml"]} if level + 1 < depth else {"params": {}})
    study = mutate(valid_study(tmp_path), "space/include", [str(tmp_path / "c0.yaml")])
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(write(tmp_path / "study.yaml", study))])
    assert_refused(code, err, "space.include", f"more than {MAX_INCLUDE_DEPTH} files deep")


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    study = valid_study(tmp_path)
    study["sampler"] = {"type": "grid"}
    study["space"] = {"params": {"seed": {"type": "int", "low": 0, "high": 10 ** 12}, "clip.eps_high": [0.2, 0.28]}}
    study["enqueue"] = []
    path = write(tmp_path / "study.yaml", study)
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    assert_refused(code, err, "sampler", "grid has 2e+12 points")


def test_the_valid_study_is_valid_and_run_refuses_before_any_storage(tmp_path):
    path = write(tmp_path / "study.yaml", valid_study(tmp_path))
    code, out, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    assert code == 0 and "spec is valid" in out, err
    bad = write(tmp_path / "bad.yaml", mutate(valid_study(tmp_path), "pruner/health/collapse/metrics", ["train/entropyy"]))
    for argv in (["run", str(bad)], ["run", str(bad), "--dry-run"]):
        code, _, err, _ = run_cli(sweeper_main, argv)
        assert_refused(code, err, "pruner.health.collapse.metrics[0]")
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("command", ["status", "export", "report", "ui"])
def test_every_command_refuses_a_hostile_spec(command, tmp_path):
    path = write(tmp_path / "study.yaml", raw=b"study: {name: \xff}\n")
    extra = {"export": ["-o", str(tmp_path / "best.yaml")], "report": ["-o", str(tmp_path / "report")]}.get(command, [])
    code, _, err, _ = run_cli(sweeper_main, [command, str(path), *extra])
    assert_refused(code, err, "not UTF-8 text")


# --------------------------------------------------------------------------- `sweeper train` (the run config)

TRAIN_CASES = {
    "not_utf8": (dict(raw=b"seed: 0\nmodel: {path: caf\xe9}\n"), ["not UTF-8"]),
    "folder": ("folder", ["is a folder"]),
    "dev_zero": ("/dev/zero", ["is a device"]),
    "group_size_1": ({"rollout": {"group_size": 1}}, ["rollout.group_size", "2 or more"]),
    "inf_lr": ({"optim": {"lr": float("inf")}}, ["optim.lr", "finite"]),
    "unknown_builtin": ({"model": {"path": "builtin:nope"}}, ["model.path", "builtin:nope", "builtin:tiny-arith"]),
    "missing_folder": ({"model": {"path": "./no/such/folder"}}, ["model.path", "no such folder"]),
    "unknown_reward": ({"data": {"reward": "nope"}}, ["data.reward", "'nope'", "exact_numeric"]),
    "steps_true": ({"train": {"steps": True}}, ["train.steps", "boolean true"]),
    "huge_integer": (dict(text="seed: " + "1" * 4400 + "\n"), ["seed", "digits"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_sweeper_train_refuses_bad_run_configs_before_training(case, tmp_path):
    content, expected = TRAIN_CASES[case]
    if content == "folder":
        path = tmp_path
    elif isinstance(content, str):
        path = Path(content)
    elif "raw" in content or "text" in content:
        path = write(tmp_path / "run.yaml", **content)
    else:
        data = valid_run_config(tmp_path)
        for section, values in content.items():
            data[section] = {**data.get(section, {}), **values}
        path = write(tmp_path / "run.yaml", data)
    code, _, err, _ = run_cli(trainer_main, [str(path)])
    assert_refused(code, err, *expected)


# --------------------------------------------------------------------------- property-based: random mutations

HOSTILE_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-10 ** 6, max_value=10 ** 6),
    st.sampled_from([0, -1, 1, 2, 2 ** 63, 10 ** 40, -10 ** 40, int("9" * 99)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "builtin:nope", "builtin:siren", "/nonexistent", "/dev/zero", "val/pass@8", "val/entropy",
                     "train/entropy", "auto", "none", "siren", "grid", "hyperband", "slurm", "debug", "1e-4", "2h", "-1s",
                     "../x.yaml", "é", "\u202e", "a" * 300, "x:y", "trainers.grpo:train", "journal:///tmp/x.log",
                     "clip.eps_high >= clip.eps_low", "clip.eps_high >", "__import__('os')"]),
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(SECTIONS + ("type", "low", "high"))),
                                               children, max_size=3)),
    max_leaves=6,
)


def paths_of(node, prefix: str = "", seen: set | None = None) -> list[str]:
    """Paths to every value, each shared object walked once (an alias mutation shares one list 10^7 times)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return []
    seen.add(id(node))
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        if "/" in str(key) or not isinstance(key, (str, int)):
            continue
        path = f"{prefix}{key}"
        out.append(path)
        out += paths_of(value, path + "/", seen)
    return out


def random_document(draw, document: dict) -> dict:
    """Up to three mutations of a valid document: a value replaced, removed, added, nested or retyped."""
    for _ in range(draw(st.integers(1, 2))):
        paths = paths_of(document)
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["perturb"] * 6 + ["replace", "replace", "delete", "add", "nest", "listify", "alias"]))
        if operation == "perturb":
            document = mutate(document, path, perturb(draw, get(document, path)))
        elif operation == "replace":
            document = mutate(document, path, draw(HOSTILE_VALUES))
        elif operation == "delete":
            document = mutate(document, path, DELETE)
        elif operation == "add":
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            key = draw(st.one_of(st.text(min_size=1, max_size=8).filter(lambda k: "/" not in k), st.sampled_from(SECTIONS)))
            target = get(document, parent) if parent else document
            if isinstance(target, dict):
                document = mutate(document, f"{parent}/{key}" if parent else key, draw(HOSTILE_VALUES))
        elif operation == "nest":
            value = get(document, path)
            for _ in range(draw(st.sampled_from([1, 5, 70]))):
                value = {"x": value} if draw(st.booleans()) else [value]
            document = mutate(document, path, value)
        elif operation == "listify":
            document = mutate(document, path, [get(document, path)])
        else:  # the same object at several places: yaml.safe_dump writes it once, with aliases
            shared = [get(document, path)] * 10
            for _ in range(draw(st.integers(1, 7))):
                shared = [shared] * 10
            document = mutate(document, path, shared)
    return document


def perturb(draw, value):
    """A change that keeps the type: a number scaled, negated, zeroed or moved by one; a string with a typo or
    another word of the spec's vocabulary; a list with an item dropped or repeated; a boolean flipped."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        how = draw(st.sampled_from(["scale", "negate", "zero", "one_more", "one_less"]))
        if how == "scale":
            factor = draw(st.sampled_from([10, 0.1, 1e6, 1e-6, 2]))
            return type(value)(value * factor) if isinstance(value, float) else int(value * factor)
        return {"negate": -value, "zero": type(value)(0), "one_more": value + 1, "one_less": value - 1}[how]
    if isinstance(value, str):
        if value and draw(st.booleans()):
            index = draw(st.integers(0, len(value) - 1))
            return draw(st.sampled_from([value[:index] + value[index + 1:], value[:index] + value[index] + value[index:],
                                         value[:index] + "x" + value[index + 1:]]))
        return draw(st.sampled_from(["none", "siren", "steer", "aer", "tpe", "grid", "random", "median", "hyperband",
                                     "successive_halving", "local", "debug", "val/pass@1", "val/entropy", "train/entropy",
                                     "entropy.method", "clip.eps_low", "builtin:steer", "builtin:tiny-arith"]))
    if isinstance(value, list) and value:
        index = draw(st.integers(0, len(value) - 1))
        return value[:index] + value[index + 1:] if draw(st.booleans()) else value + [value[index]]
    return value


def get(document, path: str):
    node = document
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def encode(draw, document) -> bytes:
    try:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    except (RecursionError, yaml.YAMLError):
        text = "study: [unserializable]\n"
    data = text.encode("utf-8")
    how = draw(st.sampled_from(["utf-8"] * 15 + ["utf-16", "latin-1", "truncate", "flip", "prefix"]))
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    if how == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    if how == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        return data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1:]
    if how == "prefix":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"%YAML 1.1\n---\n", b"--- !!set\n", b"\x00", b"\t"])) + data
    return data


# Reproducible failures: the seed is printed in pytest's header (tests/conftest.py; rerun with
# --hypothesis-seed=N), a failing example is printed with its @reproduce_failure blob, and it is kept in
# .hypothesis/ (hypothesis's example database, git-ignored), which replays it first on the next local run.
FUZZ = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "120")), deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_random_mutations_of_a_valid_study_are_valid_or_refused_cleanly(data, tmp_path):
    document = random_document(data.draw, valid_study(tmp_path))
    if data.draw(st.integers(0, 9)) == 0 and isinstance(document.get("space"), dict):
        specials = [str(tmp_path), "/dev/zero", "/dev/urandom", "builtin:nope", "missing.yaml", "study.yaml"]
        document["space"]["include"] = data.draw(st.sampled_from(specials + ["builtin:steer"]))
    path = tmp_path / "study.yaml"
    path.write_bytes(encode(data.draw, document))
    command = data.draw(st.sampled_from(["validate", "validate", "validate", "status", "run --dry-run"]))
    code, out, err, seconds = run_cli(sweeper_main, [*command.split()[:1], str(path), *command.split()[1:]])
    assert code in (0, 2), f"exit {code}:\n{err}"
    assert "Traceback" not in err
    event(f"{command}: exit {code}")
    if code == 2:
        assert err.startswith("error: ") and names_a_field(err, path), err
    elif command == "validate":
        assert "spec is valid" in out


@FUZZ
@given(data=st.data())
def test_random_mutations_of_a_valid_run_config_are_valid_or_refused_cleanly(data, tmp_path):
    document = random_document(data.draw, valid_run_config(tmp_path))
    path = tmp_path / "run.yaml"
    path.write_bytes(encode(data.draw, document))
    with hang_guard():
        try:
            config = load_config(path)
        except ConfigError as error:
            config, message = None, str(error)
            assert names_a_field(message, path), message
    if config is not None:
        problems = launch_problems(config)
        assert all(isinstance(field, str) and field for field, _ in problems)
        if not problems:
            return  # a valid config: `sweeper train` would train it
    code, _, err, _ = run_cli(trainer_main, [str(path)])
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err and names_a_field(err, path), err


def test_the_sweeper_train_command_itself(tmp_path):
    """`sweeper train` execs `python -m trainers`: once end to end, in a real process (no traceback, exit 2)."""
    import subprocess
    import sys

    bad = write(tmp_path / "run.yaml", {**valid_run_config(tmp_path), "rollout": {"group_size": 1}})
    for argv in ([str(bad)], ["/dev/urandom"], [str(tmp_path)]):
        result = subprocess.run([sys.executable, "-m", "sweeper", "train", *argv], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert_refused(result.returncode, result.stderr)


# --------------------------------------------------------------------------- issue 26: bad-spec classes, drawn at random

def _drawn_bad_spec(draw, tmp_path: Path) -> tuple[dict, str]:
    """A valid study made bad in one of the classes `validate` refuses, and the field its message must name."""
    from sweeper.run.sanity import mlflow_schemes
    from sweeper.study.spec import MAX_SEEDS

    study = valid_study(tmp_path)
    kind = draw(st.sampled_from(["seeds", "choices", "when_values", "health_metrics", "storage_folder", "storage_pseudo",
                                 "tracking_scheme", "when_itself"]))
    event(kind)
    if kind == "seeds":
        return mutate(study, "budget/seeds", draw(st.integers(MAX_SEEDS + 1, 10 ** 12))), "budget.seeds"
    if kind in ("choices", "when_values", "health_metrics"):
        values = {"choices": ["none", "siren", "steer"], "when_values": ["steer", "siren"],
                  "health_metrics": ["train/entropy", "val/entropy"]}[kind]
        values = draw(st.permutations(values))
        doubled = list(values)
        doubled.insert(draw(st.integers(0, len(values))), draw(st.sampled_from(values)))
        where, field = {"choices": ("space/params/entropy.method/choices", "space.params[entropy.method].choices"),
                        "when_values": ("space/params/entropy.steer.w_min/when", "space.params[entropy.steer.w_min].when"),
                        "health_metrics": ("pruner/health/collapse/metrics", "pruner.health.collapse.metrics")}[kind]
        value = {"entropy.method": doubled} if kind == "when_values" else doubled
        return mutate(study, where, value), field
    if kind in ("storage_folder", "storage_pseudo"):
        if kind == "storage_folder":
            folder = draw(st.sampled_from([tmp_path, tmp_path / "sub", Path("/"), Path("/tmp")]))
            folder.mkdir(exist_ok=True)
            path = str(folder)
        else:
            root = draw(st.sampled_from(["/proc", "/sys", "/dev", "/proc/self", "/sys/kernel", "/dev/pts"]))
            path = root + "/" + draw(st.from_regex(r"[a-z][a-z0-9_]{0,12}\.(db|journal)", fullmatch=True))
        scheme = draw(st.sampled_from(["sqlite:///", "journal://"]))
        return mutate(study, "study/storage", scheme + path), "study.storage"
    if kind == "tracking_scheme":
        scheme = draw(st.from_regex(r"[a-z][a-z0-9.\-]{0,10}", fullmatch=True).filter(lambda s: s not in mlflow_schemes()))
        rest = draw(st.sampled_from(["//localhost:5000", "///tmp/x.db", "//user@host/db"]))
        return mutate(study, "tracking", {"enabled": True, "uri": f"{scheme}:{rest}"}), "tracking.uri"
    name = draw(st.sampled_from(["clip.eps_high", "entropy.steer.w_min"]))
    return mutate(study, f"space/params/{name}/when", {name: draw(st.sampled_from([0.2, 0.5, 1.0]))}), f"space.params[{name}].when"


@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "60")), deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_spec_classes_are_refused_naming_the_field(data, tmp_path):
    study, field = _drawn_bad_spec(data.draw, tmp_path)
    path = write(tmp_path / "study.yaml", study)
    code, _, err, _ = run_cli(sweeper_main, ["validate", str(path)])
    assert_refused(code, err, field)
