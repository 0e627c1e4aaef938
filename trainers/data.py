"""Training and validation problems: the synthetic arithmetic task and any `datasets` dataset.

A problem is a prompt the policy completes and the answer a reward function checks
(:class:`Problem`). :func:`load_problems` turns ``data`` of the run config into
``(train, val)`` lists; the trainer samples rollout prompts from ``train`` and evaluates pass@k on
``val``.

The synthetic task (``data.source: synthetic``) is verifiable integer arithmetic, written without
spaces, the answer being the decimal integer that follows ``=``:

=======  ==============  ===========================================  ==================
level    form            operands                                     example
=======  ==============  ===========================================  ==================
1        ``a+b=``        a, b in [0, 99]                              ``12+7=`` -> ``19``
2        ``a*b+c=``      a, b in [0, 9]; c in [0, 99]                 ``7*8+5=`` -> ``61``
3        ``a*b-c=``      a in [10, 99]; b in [2, 9]; c in [0, 99]     ``23*4-97=`` -> ``-5``
=======  ==============  ===========================================  ==================

Train/validation split: every problem of the task (every prompt of every level) belongs to exactly
one side, decided by a hash of ``(seed, prompt)``: one problem in :data:`VAL_BUCKETS` is held out for
validation. Validation draws distinct held-out problems, training draws (with repetition: level 1 and 2
have 10,000 problems each) from the rest. So validation never overlaps training, whatever the levels or
sizes of either config, as long as the seed is the same: the shipped model was trained on the train side
of seed 1234 and its held-out score is measured on the validation side.

Dataset problems (``data.source: dataset``) come from ``datasets.load_dataset(path, name,
data_files=..., split=...)`` -- a hub id, ``json``/``parquet``/``csv`` with ``data_files``, or a local
folder -- with ``prompt_field``/``answer_field`` picking the columns and ``prompt_template`` formatting the
prompt (``"{prompt}"`` by default; other columns of the row are available by name too).

Selection and held-out prompts (:func:`validation_prompts`): a run validates on the first
``eval.num_prompts`` validation problems (``eval.split: selection``, what a study selects on) or on the
``eval.num_prompts`` after the first ``eval.heldout_offset`` (``eval.split: heldout``; the offset defaults to
``eval.num_prompts``), disjoint from them: ``sweeper verify`` confirms a study's choice there, on prompts the
choice was not made on (``--prompts N``: N of them, after the study's own ``eval.num_prompts``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable

from trainers.config import DataConfig, DatasetConfig, EvalConfig, SyntheticTaskConfig

VAL_BUCKETS = 10
"""One synthetic problem in VAL_BUCKETS is held out for validation (hash of seed and prompt)."""


@dataclass(frozen=True)
class Problem:
    """One verifiable problem: the raw ``prompt`` text the model completes and the reference ``answer``."""

    prompt: str
    answer: str
    level: int = 0
    """Difficulty level of a synthetic problem; 0 for dataset rows."""


# --------------------------------------------------------------------------- synthetic task


def _level_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return f"{a}+{b}=", a + b


def _level_2(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 99)
    return f"{a}*{b}+{c}=", a * b + c


def _level_3(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(10, 99), rng.randint(2, 9), rng.randint(0, 99)
    return f"{a}*{b}-{c}=", a * b - c


LEVEL_GENERATORS: dict[int, Callable[[random.Random], tuple[str, int]]] = {1: _level_1, 2: _level_2, 3: _level_3}
"""Level -> generator drawing one ``(prompt, integer answer)`` from a seeded RNG."""

LEVEL_SIZES: dict[int, int] = {1: 100 * 100, 2: 10 * 10 * 100, 3: 90 * 8 * 100}
"""Number of distinct prompts of each level (before the train/validation split)."""


def is_validation_prompt(prompt: str, seed: int) -> bool:
    """True if the synthetic ``prompt`` is on the validation side of the split for ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % VAL_BUCKETS == 0


def _check_levels(levels: list[int]) -> None:
    if not levels:
        raise ValueError(f"data.synthetic.levels is empty: give one or more of {sorted(LEVEL_GENERATORS)}")
    unknown = [level for level in levels if level not in LEVEL_GENERATORS]
    if unknown:
        raise ValueError(
            f"data.synthetic.levels contains unknown level(s) {unknown}: the synthetic task has levels "
            f"{sorted(LEVEL_GENERATORS)}"
        )


def synthetic_problems(config: SyntheticTaskConfig, split: str) -> list[Problem]:
    """Draw the ``split`` ('train' or 'val') problems of the synthetic task, deterministically from ``config``.

    Levels alternate round-robin in the order of ``config.levels`` (so the validation set is balanced
    and the same for the same config). Validation problems are distinct; training problems may repeat.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    levels = list(config.levels)
    _check_levels(levels)
    want_val = split == "val"
    size = config.val_size if want_val else config.train_size
    if want_val:
        for level in set(levels):
            share = -(-size // len(levels)) * levels.count(level)
            # about 1/VAL_BUCKETS of the level is held out; leave slack so rejection sampling ends quickly
            available = LEVEL_SIZES[level] // (2 * VAL_BUCKETS)
            if share > available:
                raise ValueError(
                    f"data.synthetic.val_size ({size}) asks {share} validation problems of level {level}, "
                    f"which holds about {available} usable held-out problems: lower val_size or add levels (a "
                    f"`sweeper verify --prompts N` arm needs eval.heldout_offset + N: give a smaller --prompts)"
                )
    rng = random.Random(f"synthetic:{config.seed}:{split}")
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < size:
        level = levels[len(problems) % len(levels)]
        prompt, answer = LEVEL_GENERATORS[level](rng)
        if is_validation_prompt(prompt, config.seed) != want_val:
            continue
        if want_val:
            if prompt in seen:
                continue
            seen.add(prompt)
        problems.append(Problem(prompt=prompt, answer=str(answer), level=level))
    return problems


# --------------------------------------------------------------------------- datasets


def _load_split(config: DatasetConfig, split: str) -> Any:
    import datasets  # imported here: the synthetic path and the sweeper's login node do not need it

    kwargs: dict[str, Any] = {"split": split}
    if config.name is not None:
        kwargs["name"] = config.name
    if config.data_files is not None:
        kwargs["data_files"] = _resolve_data_files(config.data_files)
    try:
        return datasets.load_dataset(config.path, **kwargs)
    except ValueError as error:
        if "split" in str(error).lower() or "Unknown split" in str(error):
            raise ValueError(
                f"data.dataset: split {split!r} not found in dataset {config.path!r}: {error} "
                f"(set data.dataset.train_split / val_split to an existing split)"
            ) from error
        raise ValueError(f"data.dataset.path: cannot load dataset {config.path!r}: {error}") from error
    except ConnectionError as error:
        raise ValueError(
            f"data.dataset.path: cannot reach {config.path!r} on the hub ({error}); on a machine without hub "
            f"access give a local folder, or path 'json'/'parquet' with data.dataset.data_files"
        ) from error
    except FileNotFoundError as error:
        raise ValueError(
            f"data.dataset: cannot load {config.path!r} (data_files={config.data_files!r}): {error} "
            f"(check data.dataset.path and data.dataset.data_files)"
        ) from error


def _resolve_data_files(data_files: Any) -> Any:
    """``data_files`` with each ``builtin:NAME/path`` entry made the path of that file of the built-in model
    (``trainers.built_models.resolve_builtin_file``: e.g. ``builtin:tiny-qwen-arith/data/train.jsonl``)."""
    from .built_models import resolve_builtin_file

    def one(value: Any) -> Any:
        if isinstance(value, list):
            return [one(item) for item in value]
        try:
            return resolve_builtin_file(value)
        except ValueError as error:
            raise ValueError(f"data.dataset.data_files: {error}") from None

    if isinstance(data_files, dict):
        return {split: one(value) for split, value in data_files.items()}
    return one(data_files)


def _rows_to_problems(rows: Any, config: DatasetConfig, where: str) -> list[Problem]:
    columns = list(rows.column_names)
    for field_name, column in (("prompt_field", config.prompt_field), ("answer_field", config.answer_field)):
        if column not in columns:
            raise ValueError(
                f"data.dataset.{field_name}: column {column!r} not found in {where}; columns found: {columns}"
            )
    problems = []
    for index, row in enumerate(rows):
        try:
            prompt = config.prompt_template.format(**{**row, "prompt": row[config.prompt_field]})
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"data.dataset.prompt_template {config.prompt_template!r} cannot be filled from row {index} of "
                f"{where} ({type(error).__name__}: {error}); available names: ['prompt'] + {columns}"
            ) from None
        answer = row[config.answer_field]
        if answer is None:
            raise ValueError(f"data.dataset.answer_field: column {config.answer_field!r} is empty in row {index} of {where}")
        problems.append(Problem(prompt=prompt, answer=str(answer), level=0))
    return problems


def dataset_problems(config: DatasetConfig) -> tuple[list[Problem], list[Problem]]:
    """Load ``(train, val)`` problems from a `datasets` dataset per ``config``.

    With ``val_split`` None, ``val_size`` rows are held out of the train split (a seeded shuffle of the
    row indices decides which), and training keeps the others.
    """
    train_rows = _load_split(config, config.train_split)
    train = _rows_to_problems(train_rows, config, f"split {config.train_split!r} of {config.path!r}")
    if config.val_split is not None:
        val_rows = _load_split(config, config.val_split)
        val = _rows_to_problems(val_rows, config, f"split {config.val_split!r} of {config.path!r}")
        return train, val
    if config.val_size >= len(train):
        raise ValueError(
            f"data.dataset.val_size ({config.val_size}) leaves no training rows: split {config.train_split!r} "
            f"of {config.path!r} has {len(train)} rows; lower val_size or set data.dataset.val_split"
        )
    order = list(range(len(train)))
    random.Random(f"dataset:{config.seed}").shuffle(order)
    held_out = set(order[: config.val_size])
    val = [train[i] for i in sorted(held_out)]
    train = [problem for i, problem in enumerate(train) if i not in held_out]
    return train, val


def load_problems(data_config: DataConfig) -> tuple[list[Problem], list[Problem]]:
    """The ``(train, val)`` problems that ``data`` of a run config describes."""
    if data_config.source == "synthetic":
        return synthetic_problems(data_config.synthetic, "train"), synthetic_problems(data_config.synthetic, "val")
    if data_config.source == "dataset":
        if data_config.dataset is None:
            raise ValueError("data.source is 'dataset' but data.dataset is missing: add data.dataset.path")
        return dataset_problems(data_config.dataset)
    raise ValueError(f"data.source: unknown source {data_config.source!r}; accepted: 'synthetic', 'dataset'")


def validation_prompts(val: list[Problem], eval_config: EvalConfig) -> list[Problem]:
    """The problems a run validates on: ``val[:n]`` for ``eval.split`` 'selection', ``val[m:m + n]`` for 'heldout'
    (n = ``eval.num_prompts``, m = ``eval.heldout_offset``, default n: disjoint from the selection prompts of
    any run with ``eval.num_prompts`` <= m). A held-out split needs m + n validation problems."""
    count = eval_config.num_prompts
    if eval_config.split == "selection":
        return val[:count]
    offset = eval_config.heldout_offset or count
    if len(val) < offset + count:
        raise ValueError(
            f"eval.split 'heldout' validates on the {count} validation problems (eval.num_prompts) after the first "
            f"{offset} (eval.heldout_offset, default eval.num_prompts: the selection prompts), but the validation set "
            f"holds {len(val)}: raise data.synthetic.val_size (or data.dataset.val_size / the val_split's rows) to at "
            f"least {offset + count}, or lower eval.num_prompts (`sweeper verify --prompts`)"
        )
    return val[offset:offset + count]
