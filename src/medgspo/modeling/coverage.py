"""What a LoRA adapts, per layer kind: Qwen3.5's gated-DeltaNet (linear-attention) layers, its full-attention
layers and the MLPs.

Qwen3.5 interleaves 3 linear-attention layers (``linear_attn``: ``in_proj_qkv``, ``in_proj_z``, ``in_proj_b``,
``in_proj_a``, ``out_proj``) with 1 full-attention layer (``self_attn``: ``q_proj``, ``k_proj``, ``v_proj``,
``o_proj``); every layer has an MLP (``gate_proj``, ``up_proj``, ``down_proj``). The model card's targets
(q/k/v/o/gate/up/down) therefore adapt attention in only a quarter of the layers (8 of Qwen3.5-4B's 32).

:func:`lora_coverage` counts, on any PEFT-wrapped model (a real one at training start-up, or one built on the meta
device from a config by :func:`meta_coverage`, with no weights), the linear layers and weights of each kind and how
many of them carry LoRA. :func:`coverage_lines` prints it for ``medgspo plan`` and the SFT/GSPO start-up log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DELTANET_TARGETS = ["in_proj_qkv", "in_proj_z", "out_proj"]  # the DeltaNet projections vLLM's LoRA can bind
KINDS = {"linear_attn": "linear-attention", "self_attn": "full-attention", "mlp": "MLP"}
LAYER = re.compile(r"layers\.(\d+)\.(\w+)\.")


def layer_kind(name: str) -> tuple[str, int | None]:
    """``(kind, layer index)`` of a module name; kinds: linear-attention, full-attention, MLP, vision, other.

    >>> layer_kind("base_model.model.model.layers.3.self_attn.q_proj")
    ('full-attention', 3)
    >>> layer_kind("model.language_model.layers.0.linear_attn.in_proj_qkv"), layer_kind("lm_head")
    (('linear-attention', 0), ('other', None))
    """
    if ".visual." in f".{name}":
        return "vision", None
    match = LAYER.search(name)
    if match is None:
        return "other", None
    return KINDS.get(match.group(2), "other"), int(match.group(1))


@dataclass
class KindCoverage:
    """Linear layers of one kind: how many there are, how many carry LoRA, and their weights."""

    kind: str
    layers: set[int]
    modules: int = 0
    adapted: int = 0
    weights: int = 0
    adapted_weights: int = 0
    lora_params: int = 0
    names: set[str] | None = None  # last names of the kind's linear modules
    adapted_names: set[str] | None = None


def lora_coverage(model: Any) -> dict[str, KindCoverage]:
    """Per layer kind, the linear layers of a PEFT-wrapped ``model`` and how many carry LoRA (no weights read)."""
    import torch
    from peft.tuners.lora import LoraLayer

    kinds: dict[str, KindCoverage] = {}
    inside_lora: list[str] = []
    for name, module in model.named_modules():
        if inside_lora and name.startswith(inside_lora[-1] + "."):
            continue  # the base layer and the lora_A/lora_B of an adapted module
        is_lora = isinstance(module, LoraLayer)
        base = module.get_base_layer() if is_lora else module
        if not isinstance(base, torch.nn.Linear):
            continue
        if is_lora:
            inside_lora.append(name)
        kind, layer = layer_kind(name)
        entry = kinds.setdefault(kind, KindCoverage(kind, set(), names=set(), adapted_names=set()))
        leaf = name.rsplit(".", 1)[-1]
        entry.modules += 1
        entry.weights += base.weight.numel()
        entry.names.add(leaf)
        if layer is not None:
            entry.layers.add(layer)
        if is_lora:
            entry.adapted += 1
            entry.adapted_weights += base.weight.numel()
            entry.adapted_names.add(leaf)
            entry.lora_params += sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    return kinds


def meta_model(config: Any):
    """The text class of ``config`` on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    with torch.device("meta"), no_init_weights():
        model = AutoModelForCausalLM.from_config(text_config)
    model.tie_weights()  # tied embeddings count once, as in the real model
    return model


def meta_coverage(config: Any, lora_r: int, lora_alpha: int, targets: Any) -> tuple[int, int, dict[str, KindCoverage]]:
    """``(all parameters, LoRA parameters, coverage)`` of the model ``config`` describes with a LoRA on ``targets``."""
    from peft import LoraConfig, get_peft_model

    model = meta_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=targets))
    lora = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    return n_params, lora, lora_coverage(peft)


def _count(n: int) -> str:
    """
    >>> _count(1_234_567_890), _count(21_233_664), _count(512)
    ('1.23B', '21.2M', '512')
    """
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}" if n < 100 * size else f"{n / size:.0f}{unit}"
    return str(n)


def coverage_lines(coverage: dict[str, KindCoverage], label: str = "LoRA on") -> list[str]:
    """One line per layer kind, in the plan's ``label  value`` layout, plus a warning when a kind gets none."""
    lines = []
    for kind in ("linear-attention", "full-attention", "MLP", "vision", "other"):
        c = coverage.get(kind)
        if c is None or (kind in ("other", "vision") and not c.adapted):
            continue
        where = f" in {len(c.layers)} layers" if c.layers else ""
        which = ", ".join(sorted(c.adapted_names or c.names))
        lines.append(
            f"{label + ' ' + kind:<31}{c.adapted}/{c.modules} linear layers{where} ({which if c.adapted else 'none of ' + which})"
            f": {_count(c.adapted_weights)} of {_count(c.weights)} weights, +{_count(c.lora_params)} LoRA parameters"
        )
    for kind in ("linear-attention", "full-attention"):
        c = coverage.get(kind)
        if c is not None and c.modules and not c.adapted:
            names = DELTANET_TARGETS if kind == "linear-attention" else sorted(c.names)
            lines.append(
                f"note: the LoRA targets adapt none of the {len(c.layers)} {kind} layers; add {', '.join(names)} to "
                "--lora_target_modules to adapt them"
                + (" (recipes/qwen3.5-4b-medical/sft-deltanet.yaml does)" if kind == "linear-attention" else "")
            )
    return lines
