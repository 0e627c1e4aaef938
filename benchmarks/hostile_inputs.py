"""How long, and how much memory, does refusing hostile input take? (issue 14: "a second or two, whatever the file holds")

    python benchmarks/hostile_inputs.py [--repeat 3]

Runs ``sweeper validate`` (in this process, ``sweeper.cli.main``) on the valid quickstart study and on files
built to be expensive: a dense YAML file just under the 256 KiB limit (the parser's worst case that is still
read), one just over it, an alias bomb (10^7 values when expanded), 5000 nested ``[``, a 5000-digit integer,
a space at the parameter caps (some checks compare parameters pairwise), 256 constraints that never hold (the
dry sampling's worst case), and includes of ``/dev/zero`` and ``/dev/urandom`` (before issue 14: 18 s, then
MemoryError). Prints each
case's exit code, the best wall time of ``--repeat`` runs, its ratio to the valid study's time, and the growth
of the process's peak RSS (ru_maxrss) during the case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeper.cli import main  # noqa: E402
from trainers.safe_yaml import MAX_BYTES  # noqa: E402


def cases(folder: Path) -> dict[str, Path]:
    study = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    study["study"]["dir"] = str(folder / "studies")
    files = {"valid quickstart (with the checks before launch)": study}
    dense, line, i = [], 0, 0
    while line < MAX_BYTES - 64:
        entry = f"k{i}: [1, 2.5, abc, {{x: 1}}]\n"
        dense.append(entry)
        line += len(entry)
        i += 1
    files["dense YAML just under the size limit"] = "".join(dense)
    files["dense YAML just over the size limit"] = "".join(dense) + "x" * 128 + "\n"
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))
    files["alias bomb (10^7 values expanded)"] = bomb + "enqueue: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
    files["5000 nested ["] = "study: " + "[" * 5000 + "]" * 5000 + "\n"
    files["5000-digit integer"] = "budget: {n_trials: " + "9" * 5000 + "}\n"
    paths = ["clip.eps_high", "clip.eps_low", "optim.lr", "optim.weight_decay", "rollout.temperature", "rollout.top_p",
             "entropy.siren.coef", "entropy.bonus.coef"]
    params = {f"p{i}-{j}": {"path": path, "type": "float", "low": 0.01, "high": 0.1, "when": {"seed": j}}
              for i, path in enumerate(paths) for j in range(31)}
    params["seed"] = {"type": "categorical", "choices": list(range(31))}
    files["255 parameters, 31 on each path (at the caps)"] = {**study, "space": {"params": params}, "enqueue": []}
    constraints = [f"clip.eps_high >= {0.5 + i / 1000}" for i in range(256)]  # each false for every config
    files["256 constraints, all false (at the cap)"] = {**study, "space": {**study["space"], "constraints": constraints}}
    for device in ("/dev/zero", "/dev/urandom"):
        files[f"include {device}"] = {**study, "space": {"include": [device]}}
    paths = {}
    for index, (name, content) in enumerate(files.items()):
        path = folder / f"case{index}.yaml"
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        paths[name] = path
    return paths


def measure(path: Path, repeat: int) -> tuple[int, float, float]:
    best, code = float("inf"), None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(repeat):
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", str(path)])
        best = min(best, time.perf_counter() - started)
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return code, best, rss_growth_mb


def run(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = cases(Path(tmp))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["validate", str(next(iter(paths.values())))])  # warm the imports
        rows = [(name, *measure(path, repeat)) for name, path in paths.items()]
    baseline = rows[0][2]
    print(f"{'case':52s} {'exit':>4s} {'seconds':>8s} {'x valid':>8s} {'peak RSS +MB':>13s}")
    for name, code, seconds, rss in rows:
        print(f"{name:52s} {code:>4d} {seconds:8.3f} {seconds / baseline:8.2f} {rss:13.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    run(parser.parse_args().repeat)
