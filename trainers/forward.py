"""The policy's forward pass over a rollout: the logits that predict each response token, with each distinct
prompt run once.

A GRPO batch holds every prompt G times (``rollout.group_size`` responses each). The hidden states of a
prompt's tokens do not depend on its response (causal attention), so the G copies compute the same thing.
``response_logits`` runs each distinct prompt once (its key/value cache, ``shared_prompt_cache``), gives
every row its prompt's cache by index, then runs only the response positions over it::

    prefix pass   U distinct prompts x (P - 1) tokens -> cache (keys, values per layer)   [U, ., P - 1, .]
    index         cache[inverse]                                                          [B, ., P - 1, .]
    suffix pass   B rows x T tokens: [last prompt token, o_1 .. o_{T-1}] -> logits of o_1 .. o_T

The same function as the full forward of ``[prompt | response]`` sliced to the positions that predict the
response (causal attention; the last response token predicts nothing and is not run), up to float
rounding; with grad, indexing the cache sums the G copies' gradients into their prompt's. Tokens of compute:
B (P + T) -> U (P - 1) + B T (GRPO's 8 prompts x 8 samples of the shipped run: 64 x 16 -> 8 x 7 + 64 x 8).

The rollout engine's prefill shares the prompt the same way (``trainers.rollout.HFRolloutEngine``).
Models whose cache is not a plain per-layer key/value store (sliding windows, recurrent or linear-attention
layers, encoder-decoders, remote code without ``base_model``) take the full forward (``shares_prompt_prefix``).
"""

from __future__ import annotations

from typing import Any

import torch


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` as positions (transformers >= 4.50 causal LMs)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def shares_prompt_prefix(model) -> bool:
    """Whether ``model`` (unwrapped) can run a prompt once and hand its key/value cache to several rows:
    a transformers decoder whose cache is the default ``DynamicCache`` of full-attention layers only."""
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    config = getattr(model, "config", None)
    if is_checkpointing(model) and model.training:
        return False   # a checkpointed layer re-runs its forward in the backward, which would append to the cache again
    if supports is None or config is None or not supports() or getattr(model, "_is_stateful", False):
        return False
    if getattr(config, "is_encoder_decoder", False) or getattr(model, "base_model", model) is model:
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None or getattr(config, "use_sliding_window", True) is False


def is_checkpointing(model) -> bool:
    """Whether HF activation (gradient) checkpointing is on for ``model`` (either name, transformers 4.x to 5.x)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def cache_keyword(model) -> str:
    """The forward's name for a key/value cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefix_cache(model, ids: torch.Tensor, mask: torch.Tensor):
    """The key/value cache of ``ids`` [U, L] (left-padded by ``mask``) from ``model.base_model``, the decoder
    without the vocabulary projection."""
    decoder = model.base_model
    output = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids_of(mask), use_cache=True)
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the unmasked tokens (left padding), 0 on the padding (``generate``'s rule)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def distinct_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, inverse)``: the index of the first occurrence of each distinct row of ``rows`` [B, ...] (in
    order of appearance) and, per row, which of them it equals: ``rows[first][inverse] == rows``."""
    _, inverse = torch.unique(rows.reshape(rows.shape[0], -1), dim=0, return_inverse=True)
    count = int(inverse.max()) + 1 if inverse.numel() else 0
    first = torch.full((count,), rows.shape[0], dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, inverse, torch.arange(rows.shape[0], device=rows.device), reduce="amin")
    order = torch.argsort(first)                     # distinct prompts in order of appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(count, device=rows.device)
    return first[order], rank[inverse]


def shared_prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[Any, torch.Tensor] | None:
    """The key/value cache of ``prompt_ids[:, :-1]`` computed once per distinct prompt, and per row the index
    of its prompt's cache row; None when sharing saves nothing (no repeated prompt, one-token prompts).

    ``model`` is the unwrapped causal LM; its ``base_model`` (the decoder without the vocabulary projection)
    runs the prefix. The cache keeps the graph when grad is on."""
    if prompt_ids.shape[1] < 2:
        return None
    first, inverse = distinct_rows(torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1))
    if first.numel() == prompt_ids.shape[0]:
        return None
    return prefix_cache(model, prompt_ids[first, :-1], prompt_mask[first, :-1]), inverse


def response_logits(model, rollout, device: torch.device, temperature: float = 1.0, share_prompt: bool = True) -> torch.Tensor:
    """Logits that predict each response token, divided by ``temperature``: [B, T, V], contiguous, in the
    dtype of the forward (the caller's autocast). ``model`` may be wrapped (DDP): the suffix pass goes
    through the wrapper (its gradient hooks), the prefix pass through the unwrapped model.

    Without a shared prefix, a model that takes ``logits_to_keep`` projects only the T positions that
    predict the response (no [B, P + T, V] block, no sliced copy of it); the temperature is applied in place
    (the vocabulary projection's backward does not need its output). ``share_prompt`` False: always the full
    forward through ``model`` (the TRL engine: FSDP shards only what runs through the wrapper)."""
    unwrapped = getattr(model, "module", model)
    prompt_ids, prompt_mask = rollout.prompt_ids.to(device), rollout.prompt_mask.to(device)
    response_ids, response_mask = rollout.response_ids.to(device), rollout.response_mask.to(device)
    prompt_len, response_len = prompt_ids.shape[1], response_ids.shape[1]
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    position_ids = position_ids_of(attention_mask)
    shared = shared_prompt_cache(unwrapped, prompt_ids, prompt_mask) if share_prompt and shares_prompt_prefix(unwrapped) else None
    if shared is not None:
        cache, inverse = shared
        cache.batch_select_indices(inverse)   # indexing: the backward sums each copy's gradient into its prompt
        suffix = torch.cat([prompt_ids[:, -1:], response_ids[:, :-1]], dim=1)
        logits = model(input_ids=suffix, attention_mask=attention_mask[:, :-1], position_ids=position_ids[:, prompt_len - 1:-1],
                       **{cache_keyword(unwrapped): cache}).logits
        return logits.div_(temperature) if temperature != 1.0 else logits
    inputs = {"input_ids": torch.cat([prompt_ids, response_ids], dim=1), "attention_mask": attention_mask,
              "position_ids": position_ids}
    if takes_logits_to_keep(unwrapped):
        keep = torch.arange(prompt_len - 1, prompt_len + response_len - 1, device=device)
        logits = model(**inputs, logits_to_keep=keep).logits
        return logits.div_(temperature) if temperature != 1.0 else logits
    logits = model(**inputs).logits[:, prompt_len - 1:prompt_len + response_len - 1, :]
    return logits / temperature if temperature != 1.0 else logits.contiguous()
