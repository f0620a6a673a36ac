"""Portable LoRA adapters: one adapter loads on either Qwen3.5 class, whichever class it was saved on.

Qwen3.5 checkpoints come in two layouts, and PEFT names an adapter's weights after the class it was trained on:

* **text** (``Qwen3_5ForCausalLM``, what medgspo trains and runs): ``base_model.model.model.layers.N.<module>...``
* **vision-language** (``Qwen3_5ForConditionalGeneration``, the hub checkpoint's own class, which Unsloth's
  ``FastVisionModel`` and TRL-given-a-path load): ``base_model.model.model.language_model.layers.N.<module>...``,
  often with a regex ``target_modules`` over ``language_model`` (Unsloth's ``get_peft_model``).

PEFT loads an adapter of the other layout as a silent no-op (its weights find no module) or refuses it ("Target
modules ... not found"). :func:`load_adapter` reads the adapter's weight names first, picks the renaming that makes
every adapted module exist in the model at hand (``model.language_model.`` <-> ``model.``), gives PEFT the renaming
(``key_mapping``) and target modules that select exactly the adapted modules, and refuses with
:class:`~medgspo.errors.AdapterMismatchError` an adapter that no renaming fits. :func:`convert_adapter` writes a
copy in a chosen layout (what ``medgspo export --merge false`` writes for ``vllm serve --enable-lora``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.errors import AdapterMismatchError, ModelLoadError

logger = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
TEXT, VISION_LANGUAGE = "text", "vision-language"
# (pattern, replacement) over module paths without PEFT's prefix; `lm_head` is the same in both layouts.
TO_TEXT = (r"^model\.language_model\.", "model.")
TO_VISION_LANGUAGE = (r"^model\.(?!language_model\.|visual\.)", "model.language_model.")
RENAMES = {TEXT: TO_TEXT, VISION_LANGUAGE: TO_VISION_LANGUAGE}
VISION_TOWER = "model.visual."
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# what a converted copy carries besides the adapter: tokenizer, chat template and format, model card
COPIED_FILES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges", "chat_", "README")


# ---- pure helpers -----------------------------------------------------------------------------------------------
def module_of(key: str) -> str | None:
    """The module a LoRA weight belongs to, without PEFT's prefix (``None`` for a key that is not a LoRA weight).

    >>> module_of("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight")
    'model.layers.3.self_attn.q_proj'
    >>> module_of("base_model.model.lm_head.weight") is None
    True
    """
    key = key.removeprefix(PEFT_PREFIX)
    head, sep, _ = key.partition(".lora_")
    return head if sep else None


def rename(module: str, rule: tuple[str, str] | None) -> str:
    """``module`` after a layout rule (``None`` keeps it).

    >>> rename("model.language_model.layers.0.mlp.up_proj", TO_TEXT)
    'model.layers.0.mlp.up_proj'
    >>> rename("model.layers.0.mlp.up_proj", TO_VISION_LANGUAGE), rename("lm_head", TO_VISION_LANGUAGE)
    ('model.language_model.layers.0.mlp.up_proj', 'lm_head')
    """
    return module if rule is None else re.sub(rule[0], rule[1], module, count=1)


def layout_of(module_names: Iterable[str]) -> str:
    """``vision-language`` when the text layers sit under ``model.language_model``, else ``text``.

    >>> layout_of(["model.language_model.layers.0.mlp"]), layout_of(["model.layers.0.mlp"])
    ('vision-language', 'text')
    """
    return VISION_LANGUAGE if any(n.startswith("model.language_model.") for n in module_names) else TEXT


def targets_select(targets: str | Iterable[str] | None, name: str) -> bool:
    """Whether PEFT's ``target_modules`` selects module ``name``: a string is a regex that must match the whole
    name, a list names modules by their last dotted parts.

    >>> targets_select(".*language_model.*\\\\.(q_proj|v_proj)", "model.language_model.layers.0.self_attn.q_proj")
    True
    >>> targets_select(["q_proj"], "model.layers.0.self_attn.q_proj"), targets_select(["q_proj"], "x.k_proj")
    (True, False)
    """
    if targets is None:
        return False
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


@dataclass
class AdapterFit:
    """How an adapter is loaded on a given model: the key renaming, the target modules and what is left out."""

    rule: tuple[str, str] | None  # None: the names fit as saved
    target_modules: str | list[str]  # what PEFT gets: the saved value when it already selects exactly the modules
    modules: set[str]  # the adapted modules, named as in the model
    dropped: list[str] = field(default_factory=list)  # vision-tower modules on a model without a vision tower

    @property
    def changed(self) -> bool:
        return self.rule is not None or bool(self.dropped)

    @property
    def key_mapping(self) -> dict[str, str]:
        return {} if self.rule is None else {self.rule[0]: self.rule[1]}


def fit_adapter(adapted: set[str], model_modules: set[str], saved_targets: Any) -> AdapterFit:
    """Choose how adapter modules ``adapted`` (names as saved) load on a model whose modules are ``model_modules``.

    Raises :class:`AdapterMismatchError` when no layout rule makes every adapted module exist in the model.

    >>> model = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head"}
    >>> fit = fit_adapter({"model.language_model.layers.0.self_attn.q_proj"}, model, ".*language_model.*q_proj")
    >>> fit.rule == TO_TEXT, fit.target_modules
    (True, ['q_proj'])
    """
    has_vision = any(n.startswith(VISION_TOWER) for n in model_modules)
    for rule in (None, TO_TEXT, TO_VISION_LANGUAGE):
        mapped = {rename(m, rule) for m in adapted}
        dropped = sorted(m for m in mapped if m.startswith(VISION_TOWER) and not has_vision)
        kept = mapped.difference(dropped)
        if kept and kept <= model_modules:
            return AdapterFit(rule, _targets_for(kept, model_modules, saved_targets), kept, dropped)
    missing = sorted(adapted - model_modules)[:3]
    raise AdapterMismatchError(
        f"its LoRA weights name modules this model does not have under any Qwen3.5 layout (e.g. {missing}), so it "
        "would load as a no-op"
    )


def _targets_for(modules: set[str], model_modules: set[str], saved: Any) -> str | list[str]:
    """PEFT ``target_modules`` that select exactly ``modules``: the saved value if it does, else the modules' last
    names if those do, else the full module names."""
    for candidate in (saved, sorted({m.rsplit(".", 1)[-1] for m in modules})):
        if candidate and {n for n in model_modules if targets_select(candidate, n)} == modules:
            return sorted(candidate) if not isinstance(candidate, str) else candidate
    return sorted(modules)


def same_targets(a: Any, b: Any) -> bool:
    """Whether two ``target_modules`` values are the same (lists in any order).

    >>> same_targets(["v_proj", "q_proj"], ["q_proj", "v_proj"]), same_targets(".*q_proj", ["q_proj"])
    (True, False)
    """
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return a == b
    return set(a) == set(b)


# ---- files ------------------------------------------------------------------------------------------------------
def weight_file(adapter: str | Path) -> Path:
    """The adapter's weights file (safetensors, or PEFT's older ``.bin``)."""
    for name in WEIGHT_FILES:
        if (Path(adapter) / name).is_file():
            return Path(adapter) / name
    raise ModelLoadError(f"no adapter weights ({' or '.join(WEIGHT_FILES)}) in {adapter}")


def read_weights(adapter: str | Path, *, keys_only: bool = False) -> dict[str, Any] | list[str]:
    """The adapter's tensors (or only their names)."""
    path = weight_file(adapter)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()) if keys_only else {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    import torch

    tensors = torch.load(path, map_location="cpu", weights_only=True)
    return list(tensors) if keys_only else tensors


def adapter_config(adapter: str | Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict."""
    return json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))


def adapted_modules(adapter: str | Path) -> set[str]:
    """The modules an adapter carries LoRA weights for, named as saved."""
    return {m for k in read_weights(adapter, keys_only=True) if (m := module_of(k))}


# ---- loading ----------------------------------------------------------------------------------------------------
def load_adapter(model: Any, adapter: str | Path, *, is_trainable: bool = False):
    """``PeftModel.from_pretrained`` for an adapter saved on either Qwen3.5 layout; refuses one that would do nothing.

    The saved adapter is untouched; a converted one is saved (after GSPO) in the layout of ``model``. The adapter's
    ``base_model_name_or_path`` is set to the base actually loaded, so a continued adapter records its base.
    """
    import warnings

    from peft import PeftModel

    kwargs = _layout_kwargs(model, adapter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable, **kwargs)
    for w in caught:
        message = str(w.message)
        if "missing adapter keys" in message:
            raise AdapterMismatchError(
                f"adapter {str(adapter)!r} does not fit {type(model).__name__}: its LoRA weights name modules this "
                f"model does not have, so it would load as a no-op ({message[:300]}). See docs/scaling.md (adapters)."
            )
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    base = getattr(model, "name_or_path", None)
    if base:
        for config in peft_model.peft_config.values():
            config.base_model_name_or_path = base
    return peft_model


def _layout_kwargs(model: Any, adapter: str | Path) -> dict[str, Any]:
    """``PeftModel.from_pretrained`` keywords that load ``adapter`` on ``model``'s layout (none when it fits as
    saved); vision-tower modules a text model lacks are left out, with a warning."""
    from peft import PeftConfig

    names = {n for n, _ in model.named_modules()}
    saved = adapter_config(adapter)
    adapted = adapted_modules(adapter)
    if not adapted:
        return {}
    try:
        fit = fit_adapter(adapted, names, saved.get("target_modules"))
    except AdapterMismatchError as exc:
        raise AdapterMismatchError(f"adapter {str(adapter)!r} does not fit {type(model).__name__}: {exc}") from None
    if fit.dropped:
        logger.warning(
            "Adapter %s also adapts %d vision-tower modules (e.g. %s); %s has no vision tower, and text prompts "
            "never run it, so they are left out (a continued adapter will not carry them).",
            adapter,
            len(fit.dropped),
            fit.dropped[0],
            type(model).__name__,
        )
    if not fit.changed and same_targets(fit.target_modules, saved.get("target_modules")):
        return {}
    config = PeftConfig.from_pretrained(str(adapter))
    config.target_modules = fit.target_modules if isinstance(fit.target_modules, str) else set(fit.target_modules)
    logger.info(
        "Adapter %s: %s layout, loaded on %s (%s layout)%s",
        adapter,
        layout_of(adapted),
        type(model).__name__,
        layout_of(names),
        " with its module names converted" if fit.rule else "",
    )
    return {"config": config, "key_mapping": fit.key_mapping}


# ---- converting a saved adapter ---------------------------------------------------------------------------------
def convert_adapter(adapter: str | Path, output: str | Path, model_modules: set[str]) -> Path:
    """Copy ``adapter`` to ``output`` with its weights named for a model whose modules are ``model_modules``
    (the base checkpoint's own class), ``target_modules`` as a plain list of module names, and the tokenizer, chat
    template, chat format and README as they are (training logs and checkpoints stay behind)."""
    from safetensors.torch import save_file

    adapter, output = Path(adapter), Path(output)
    config = adapter_config(adapter)
    fit = fit_adapter(adapted_modules(adapter), model_modules, config.get("target_modules"))
    tensors = {}
    for key, tensor in read_weights(adapter).items():
        module = module_of(key)
        if module is not None and rename(module, fit.rule) in fit.dropped:
            continue
        inner = rename(key.removeprefix(PEFT_PREFIX), fit.rule)
        tensors[PEFT_PREFIX + inner if key.startswith(PEFT_PREFIX) else key] = tensor.contiguous()
    output.mkdir(parents=True, exist_ok=True)
    for item in adapter.iterdir():
        if item.is_file() and item.name.startswith(COPIED_FILES):
            shutil.copy2(item, output / item.name)
    save_file(tensors, str(output / "adapter_model.safetensors"), metadata={"format": "pt"})
    leaves = sorted({m.rsplit(".", 1)[-1] for m in fit.modules})
    exact = {n for n in model_modules if targets_select(leaves, n)} == fit.modules
    config["target_modules"] = leaves if exact else sorted(fit.modules)
    (output / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return output
