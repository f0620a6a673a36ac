"""A running batch of sequences for the continuous batcher: prefill, one decode step, join, leave (torch, any model).

    batch = prefill(model, [ids_a, ids_b])          # left-padded forward pass; batch.logits: (2, vocab)
    batch = join(batch, prefill(model, [ids_c]))    # a request that arrived meanwhile joins (rows a, b, c)
    batch = decode(model, batch, next_ids)          # one token per row -> batch.logits for the next
    batch = keep(batch, [0, 2])                     # row b finished: it leaves, the others go on
    batch = extend(model, prefill(model, [ids[:512]]), ids[512:1024])   # chunked prefill of one long prompt

Every row is left-padded, as ``model.generate`` pads a batch; each row has its own position ids (counted over its
real tokens only), so a row gives the same tokens as it would alone. Joining needs cache surgery: the attention
layers' keys and values are left-padded with zeros (masked out) to a common length; the recurrent state of a
linear-attention layer (Qwen3.5's gated DeltaNet) has no length and is simply stacked. :func:`can_join` says
whether a cache consists only of layers this module knows; otherwise the batcher admits new requests only when the
batch is empty (a request may still leave early).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """Model state for some rows: the KV/recurrent cache, the attention mask and each row's next position."""

    cache: Any
    attention_mask: Any  # (rows, cached length) long tensor, 0 = padding
    positions: Any  # (rows,) position id of each row's next token
    logits: Any  # (rows, vocab) float logits for each row's next token
    prompt_logits: Any = None  # (rows, tokens, vocab) logits at every position fed, when asked for (``all_logits``)

    @property
    def rows(self) -> int:
        return int(self.attention_mask.shape[0])


def prefill(model: Any, prompts: Sequence[Sequence[int]], pad_id: int = 0, all_logits: bool = False) -> Batch:
    """Run the prompts through the model as one left-padded batch (the model makes a fresh cache); with
    ``all_logits`` the logits at every position are kept too (``Batch.prompt_logits``, for prompt logprobs)."""
    import torch

    device = model.device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long, device=device)
        mask[row, width - len(prompt) :] = 1
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as `generate` computes them
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=0 if all_logits else 1,
    )
    return Batch(_cache_of(out), mask, mask.sum(-1), out.logits[:, -1, :].float(), out.logits if all_logits else None)


def extend(model: Any, batch: Batch, ids: Sequence[int], all_logits: bool = False) -> Batch:
    """Feed the next ``ids`` of a one-row batch's prompt in one forward pass (chunked prefill): its keys and values
    are appended to the cache, the linear-attention layers go on from their recurrent and convolution states."""
    import torch

    if batch.rows != 1:
        raise ValueError("extend() continues the prompt of a one-row batch")
    device = batch.attention_mask.device
    new = torch.tensor([list(ids)], dtype=torch.long, device=device)
    mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones((1, len(ids)))], dim=1)
    positions = batch.positions[:, None] + torch.arange(len(ids), device=device)[None, :]
    out = model(
        input_ids=new,
        attention_mask=mask,
        position_ids=positions,
        cache=batch.cache,
        use_cache=True,
        logits_to_keep=0 if all_logits else 1,
    )
    logits = out.logits[:, -1, :].float()
    return Batch(_cache_of(out), mask, batch.positions + len(ids), logits, out.logits if all_logits else None)


def decode(model: Any, batch: Batch, next_ids: Any) -> Batch:
    """Feed one token per row (``next_ids``: (rows,)) and return the batch with the logits for the next one."""
    import torch

    mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones((batch.rows, 1))], dim=1)
    out = model(
        input_ids=next_ids[:, None],
        attention_mask=mask,
        position_ids=batch.positions[:, None],
        cache=batch.cache,
        use_cache=True,
    )
    return Batch(_cache_of(out), mask, batch.positions + 1, out.logits[:, -1, :].float())


def keep(batch: Batch, rows: Sequence[int]) -> Batch:
    """Only ``rows`` (in that order) stay; columns that became padding for every remaining row are dropped."""
    import torch

    index = torch.tensor(list(rows), dtype=torch.long, device=batch.attention_mask.device)
    mask = batch.attention_mask.index_select(0, index)
    lead = int(_leading_padding(mask).min()) if len(rows) else 0
    for layer in batch.cache.layers:
        _map_layer(
            layer,
            lambda t: t.index_select(0, index.to(t.device))[..., lead:, :],
            lambda t: t.index_select(0, index.to(t.device)),
        )
    return Batch(
        batch.cache, mask[:, lead:], batch.positions.index_select(0, index), batch.logits.index_select(0, index)
    )


def join(first: Batch, second: Batch) -> Batch:
    """One batch holding the rows of ``first`` then those of ``second`` (the shorter is left-padded)."""
    import torch

    width = max(first.attention_mask.shape[1], second.attention_mask.shape[1])
    masks = [_left_pad(b.attention_mask, width, dim=1) for b in (first, second)]
    for layer, other in zip(first.cache.layers, second.cache.layers, strict=True):
        _join_layer(layer, other, width)
    return Batch(
        first.cache,
        torch.cat(masks, dim=0),
        torch.cat([first.positions, second.positions]),
        torch.cat([first.logits, second.logits]),
    )


def can_join(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a kind :func:`join` knows: transformers' growing attention layer, its
    linear-attention layer, or the two combined (not sliding-window, static or quantized layers)."""
    from transformers import cache_utils

    known = {
        getattr(cache_utils, name, None)
        for name in ("DynamicLayer", "LinearAttentionLayer", "LinearAttentionAndFullAttentionLayer")
    }
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in known for layer in layers)


# ---- cache layers -----------------------------------------------------------------------------------------------
def _has_kv(layer: Any) -> bool:
    return hasattr(layer, "keys") and hasattr(layer, "values")


def _has_states(layer: Any) -> bool:
    return isinstance(getattr(layer, "conv_states", None), dict) and isinstance(
        getattr(layer, "recurrent_states", None), dict
    )


def _map_layer(layer: Any, on_kv, on_state) -> None:
    """Apply ``on_kv`` to a layer's keys/values (batch, heads, length, dim) and ``on_state`` to its states."""
    if _has_kv(layer) and getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel():
        layer.keys, layer.values = on_kv(layer.keys), on_kv(layer.values)
    if _has_states(layer):
        for store in (layer.conv_states, layer.recurrent_states):
            for idx, state in store.items():
                if state is not None:
                    store[idx] = on_state(state)


def _join_layer(layer: Any, other: Any, width: int) -> None:
    import torch

    if _has_kv(layer) and getattr(layer, "is_initialized", False):
        layer.keys = torch.cat([_left_pad(layer.keys, width, dim=2), _left_pad(other.keys, width, dim=2)])
        layer.values = torch.cat([_left_pad(layer.values, width, dim=2), _left_pad(other.values, width, dim=2)])
    if _has_states(layer):
        for store, other_store in (
            (layer.conv_states, other.conv_states),
            (layer.recurrent_states, other.recurrent_states),
        ):
            for idx, state in store.items():
                if state is not None:
                    store[idx] = torch.cat([state, other_store[idx]])


def _left_pad(tensor: Any, width: int, dim: int) -> Any:
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _leading_padding(mask: Any) -> Any:
    """Per row, how many columns of ``mask`` are padding before its first real token."""
    return (mask.cumsum(dim=1) == 0).sum(dim=1)


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
