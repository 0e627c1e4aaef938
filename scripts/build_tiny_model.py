"""Build the shipped base model ``trainers/assets/tiny-arith`` (``model.path: builtin:tiny-arith``).

No machine of this project can download a model, so the project ships its own: a character-level
tokenizer and a small Llama, supervised-trained on the train side of the synthetic arithmetic task
(:mod:`trainers.data`) just long enough that held-out pass@1 at temperature 1 sits well between 0 and 1,
leaving RL room to improve it (and entropy to collapse).

- Tokenizer: one token per character (digits, ``+ - * = ( )`` and space) plus ``<pad> <bos> <eos> <unk>``,
  built with ``tokenizers`` and saved as a transformers fast tokenizer: ``tokenizer(prompt)`` gives
  ``<bos>`` followed by one id per character, decoding joins characters without spaces, padding is on the
  left (for batched ``generate``).
- Model: ``LlamaForCausalLM`` (saved as Llama: transformers 5.x replaces a custom tokenizer saved
  beside a qwen2 config on reload).
- Training: sequences ``<bos> prompt answer <eos>``, cross-entropy on the answer and ``<eos>`` tokens,
  AdamW with linear warmup and cosine decay, seeded; the problems are the train side of the task's
  split with ``seed`` (:func:`trainers.data.synthetic_problems`), so validation problems are never seen.
- At the end: pass@1 / pass@8 (unbiased, n=8, temperature 1.0) on the validation problems of the default
  task (and per level), written with the recipe to ``build_info.json``.

Run (600 steps of batch 256: about 6 minutes on 2 idle CPU cores, longer on a shared machine)::

    .venv/bin/python scripts/build_tiny_model.py            # writes trainers/assets/tiny-arith
    .venv/bin/python scripts/build_tiny_model.py --steps 20 --out /tmp/tiny   # a quick trial build
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trainers.config import ASSETS_DIR, SyntheticTaskConfig  # noqa: E402
from trainers.data import Problem, synthetic_problems  # noqa: E402
from trainers.evaluation import evaluation_metrics  # noqa: E402
from trainers.rewards import get_extractor, get_reward  # noqa: E402

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARACTERS = list("0123456789+-*=() ")


def build_tokenizer():
    """The character-level fast tokenizer: ids 0-3 are <pad> <bos> <eos> <unk>, then one id per character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character, spaces too
    core.decoder = decoders.Fuse()  # join tokens without inserting spaces
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=64,
    )


def build_model(tokenizer, hidden: int, layers: int, heads: int, intermediate: int, max_positions: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def training_batch(problems: list[Problem], tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded ``<bos> prompt answer <eos>`` sequences; labels -100 except on answer and <eos>."""
    sequences, label_rows = [], []
    for problem in problems:
        prompt_ids = tokenizer(problem.prompt)["input_ids"]
        answer_ids = tokenizer(problem.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        sequences.append(prompt_ids + answer_ids)
        label_rows.append([-100] * len(prompt_ids) + answer_ids)
    width = max(len(row) for row in sequences)
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, (ids, targets) in enumerate(zip(sequences, label_rows)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(targets)] = torch.tensor(targets)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int = 8, batch_prompts: int = 64) -> list[list[str]]:
    """n completions per prompt at temperature 1.0 (left-padded batched generate), decoded without specials."""
    model.eval()
    completions: list[list[str]] = []
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start : start + batch_prompts]
        encoded = tokenizer(chunk, padding=True, return_tensors="pt")
        output = model.generate(
            input_ids=encoded["input_ids"].repeat_interleave(n, dim=0),
            attention_mask=encoded["attention_mask"].repeat_interleave(n, dim=0),
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        completions.extend(texts[i * n : (i + 1) * n] for i in range(len(chunk)))
    return completions


def score(problems: list[Problem], completions: list[list[str]], ks: list[int]) -> dict[str, float]:
    reward, extract = get_reward("exact_numeric"), get_extractor("exact_numeric")
    correct = [[reward(c, p.answer) for c in row] for p, row in zip(problems, completions)]
    answers = [[extract(c) for c in row] for row in completions]
    return evaluation_metrics(correct, answers, ks)


@torch.no_grad()
def greedy_correct(model, tokenizer, problems: list[Problem], max_new_tokens: int = 8, batch_prompts: int = 256) -> list[bool]:
    """Whether the greedy (argmax) answer of each problem is right."""
    model.eval()
    reward = get_reward("exact_numeric")
    correct: list[bool] = []
    for start in range(0, len(problems), batch_prompts):
        chunk = problems[start : start + batch_prompts]
        encoded = tokenizer([p.prompt for p in chunk], padding=True, return_tensors="pt")
        output = model.generate(**encoded, do_sample=False, max_new_tokens=max_new_tokens,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        correct.extend(reward(text, p.answer) > 0 for text, p in zip(texts, chunk))
    return correct


def evaluate(model, tokenizer, problems: list[Problem], n: int = 8) -> dict[str, float]:
    """pass@1/pass@n (and maj/mean) over ``problems`` and greedy accuracy (``greedy``: the pass@1 that full
    sharpening would reach), plus per level as ``level{L}/pass@1``, ``level{L}/pass@{n}``, ``level{L}/greedy``."""
    completions = sample_completions(model, tokenizer, [p.prompt for p in problems], n)
    greedy = greedy_correct(model, tokenizer, problems)
    metrics = score(problems, completions, [1, n])
    metrics["greedy"] = sum(greedy) / len(greedy)
    for level in sorted({p.level for p in problems}):
        indices = [i for i, p in enumerate(problems) if p.level == level]
        per_level = score([problems[i] for i in indices], [completions[i] for i in indices], [1, n])
        metrics[f"level{level}/pass@1"] = per_level["pass@1"]
        metrics[f"level{level}/pass@{n}"] = per_level[f"pass@{n}"]
        metrics[f"level{level}/greedy"] = sum(greedy[i] for i in indices) / len(indices)
    return metrics


def corrupt_digit(answer: str, rng: random.Random) -> str:
    """``answer`` with one digit (uniform position) replaced by a different uniform digit; no new leading zero."""
    positions = [i for i, ch in enumerate(answer) if ch.isdigit()]
    i = rng.choice(positions)
    leading = i == positions[0] and len(positions) > 1
    choices = [d for d in ("123456789" if leading else "0123456789") if d != answer[i]]
    return answer[:i] + rng.choice(choices) + answer[i + 1:]


def with_label_noise(problems: list[Problem], fraction: float, seed: int) -> list[Problem]:
    """A copy of ``problems`` where each answer is, with probability ``fraction``, one wrong digit away (:func:`corrupt_digit`)."""
    rng = random.Random(f"label-noise:{seed}")
    return [Problem(p.prompt, corrupt_digit(p.answer, rng), p.level) if rng.random() < fraction else p for p in problems]


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ASSETS_DIR / "tiny-arith"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and evaluation samples")
    parser.add_argument("--task-seed", type=int, default=SyntheticTaskConfig().seed, help="seed of the train/validation split")
    parser.add_argument("--levels", default="1,2,3", help="task levels trained on")
    parser.add_argument("--eval-levels", default=",".join(map(str, SyntheticTaskConfig().levels)), help="levels of the reported pass@k")
    parser.add_argument("--steps", type=int, default=600, help="phase 1 (clean answers): steps of warmup + cosine")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3, help="phase 1 peak learning rate")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--noisy-steps", type=int, default=150, help="phase 2 (label noise): steps of cosine decay to 0; 0 = no phase 2")
    parser.add_argument("--noisy-lr", type=float, default=2e-4, help="phase 2 peak learning rate (fresh AdamW)")
    parser.add_argument("--label-noise", type=float, default=0.3, help="phase 2: fraction of answers with one digit replaced at random")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--max-positions", type=int, default=64)
    parser.add_argument("--eval-prompts", type=int, default=SyntheticTaskConfig().val_size)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.time()

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.hidden, args.layers, args.heads, args.intermediate, args.max_positions)
    num_params = sum(p.numel() for p in model.parameters())
    train_levels = [int(x) for x in args.levels.split(",")]
    eval_levels = [int(x) for x in args.eval_levels.split(",")]
    total_steps = args.steps + args.noisy_steps
    train_task = SyntheticTaskConfig(levels=train_levels, train_size=total_steps * args.batch_size, val_size=1, seed=args.task_seed)
    eval_task = SyntheticTaskConfig(levels=eval_levels, val_size=args.eval_prompts, seed=args.task_seed)
    train_problems = synthetic_problems(train_task, "train")
    split = args.steps * args.batch_size
    train_problems = train_problems[:split] + with_label_noise(train_problems[split:], args.label_noise, args.seed)
    val_problems = synthetic_problems(eval_task, "val")
    print(f"model: {num_params / 1e6:.2f}M params; train {len(train_problems)} problems of levels {train_levels}", flush=True)

    model.train()
    phases = [("clean", args.steps, lambda step: learning_rate(step, args.steps, args.lr, args.warmup))]
    if args.noisy_steps:
        phases.append(("noisy", args.noisy_steps,
                       lambda step: args.noisy_lr * 0.5 * (1.0 + math.cos(math.pi * step / args.noisy_steps))))
    offset = 0
    for phase, steps, lr_at in phases:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr_at(0), weight_decay=0.01, betas=(0.9, 0.98))
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            rows = train_problems[(offset + step) * args.batch_size : (offset + step + 1) * args.batch_size]
            loss = model(**training_batch(rows, tokenizer)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % 25 == 0 or step == steps - 1:
                print(f"{phase} step {step:4d} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                      f"({time.time() - started:.0f}s)", flush=True)
        offset += steps
    train_seconds = time.time() - started

    torch.manual_seed(args.seed + 1)
    metrics = evaluate(model, tokenizer, val_problems, n=8)
    print("held-out " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Name the class every transformers version knows (5.x writes its internal 'TokenizersBackend').
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.pop("backend", None)
    config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    import transformers

    info = {
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "threads")},
        "num_params": num_params,
        "vocab_size": len(tokenizer),
        "token_ids": {"pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id},
        "eval": {"split": "val", "levels": eval_levels, "task_seed": args.task_seed, "num_prompts": len(val_problems),
                 "n_samples": 8, "temperature": 1.0, "max_new_tokens": 8},
        "metrics": metrics,
        "pass@1": metrics["pass@1"],
        "pass@8": metrics["pass@8"],
        "train_seconds": round(train_seconds, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out} (pass@1 {metrics['pass@1']:.3f}, pass@8 {metrics['pass@8']:.3f}, {time.time() - started:.0f}s)", flush=True)
    return info


if __name__ == "__main__":
    main()
