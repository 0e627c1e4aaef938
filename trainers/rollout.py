"""Rollout engines: turn prompts into G sampled responses each, as token ids ready for training.

``RolloutEngine.generate`` returns a :class:`Rollout`: the prompt ids (left-padded), the response
ids (right-padded, cut after the first EOS) and masks, laid out as one sequence per response
``[prompt | response]`` so the trainer's forward pass sees exactly what was sampled.

- ``HFRolloutEngine``: ``model.generate`` on the (unwrapped) policy; works everywhere.
- ``VLLMRolloutEngine``: vLLM's offline ``LLM`` API (GPU, optional extra ``vllm``), imported lazily;
  the policy's weights are pushed into it before each rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
    response_mask: torch.Tensor     # [B, T] 1 up to and including the first EOS
    completions: list[str]          # decoded responses (special tokens dropped)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def select(self, rows: torch.Tensor) -> "Rollout":
        rows_list = rows.tolist()
        return Rollout(self.prompt_ids[rows], self.prompt_mask[rows], self.response_ids[rows],
                       self.response_mask[rows], [self.completions[i] for i in rows_list])


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout: ...


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int | None, pad_token_id: int) -> torch.Tensor:
    """1 on every token up to and including the first EOS; 0 after it (and on trailing pad)."""
    if eos_token_id is None:
        return (response_ids != pad_token_id).long()
    is_eos = (response_ids == eos_token_id).long()
    eos_seen_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (eos_seen_before == 0).long()


def format_prompts(tokenizer, prompts: list[str], chat_template: bool) -> list[str]:
    if not chat_template:
        return prompts
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]


def _tokenize_prompts(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
    return encoded["input_ids"], encoded["attention_mask"]


def _finish_rollout(tokenizer, prompt_ids, prompt_mask, response_ids: torch.Tensor) -> Rollout:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    response_mask = response_mask_from_ids(response_ids, eos, pad)
    response_ids = torch.where(response_mask.bool(), response_ids, torch.full_like(response_ids, pad))
    completions = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, response_ids, response_mask, completions)


class HFRolloutEngine:
    """Samples with ``transformers`` ``generate`` from the policy model itself."""

    def __init__(self, model, tokenizer, chat_template: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout:
        prompt_ids, prompt_mask = _tokenize_prompts(self.tokenizer, format_prompts(self.tokenizer, prompts, self.chat_template))
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        try:
            output = self.model.generate(
                input_ids=prompt_ids.to(device), attention_mask=prompt_mask.to(device), do_sample=True,
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None,
                max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        finally:
            self.model.train(was_training)
        response_ids = output[:, prompt_ids.shape[1]:].cpu()
        if response_ids.shape[1] == 0:
            response_ids = torch.full((prompt_ids.shape[0], 1), self.tokenizer.pad_token_id, dtype=torch.long)
        return _finish_rollout(self.tokenizer, prompt_ids, prompt_mask, response_ids)


class VLLMRolloutEngine:
    """Samples with vLLM (GPU). Needs ``pip install entropy-sweeper[vllm]``.

    The policy's current weights are loaded into vLLM's model before each ``generate`` call
    (colocated engine, as TRL's ``vllm_mode="colocate"``).
    """

    def __init__(self, model, tokenizer, model_path: str, chat_template: bool = False, gpu_memory_utilization: float = 0.3,
                 dtype: str = "auto", seed: int = 0):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "rollout.engine is 'vllm' but vLLM is not installed: `pip install 'entropy-sweeper[vllm]'` on a GPU "
                "machine, or set rollout.engine: hf") from None
        import os

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.llm = LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, seed=seed,
                       enable_prefix_caching=True)

    def _sync_weights(self) -> None:
        # The colocated path TRL uses (needs VLLM_ENABLE_V1_MULTIPROCESSING=0 so the engine is in-process).
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        engine_model.load_weights(self.model.state_dict().items())
        self.llm.reset_prefix_cache()

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingSettings) -> Rollout:
        from vllm import SamplingParams

        self._sync_weights()
        texts = format_prompts(self.tokenizer, prompts, self.chat_template)
        params = SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens)
        outputs = self.llm.generate(texts, params, use_tqdm=False)
        prompt_ids, prompt_mask = _tokenize_prompts(self.tokenizer, texts)
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        sequences = [list(choice.token_ids) for out in outputs for choice in out.outputs]
        width = max(1, max(len(s) for s in sequences))
        pad = self.tokenizer.pad_token_id
        response_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], dtype=torch.long)
        return _finish_rollout(self.tokenizer, prompt_ids, prompt_mask, response_ids)
