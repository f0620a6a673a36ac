"""Model back-ends and rollout engines: plain transformers + PEFT (the default), Unsloth, and TRL's vLLM modes.

``--backend transformers`` (default) loads the text class through :mod:`medgspo.modeling.loading` and lets TRL
attach the LoRA adapter. ``--backend unsloth`` loads it the way the Qwen3.5-4B-Medical-GSPO model card did::

    model, processor = FastVisionModel.from_pretrained(name, load_in_4bit=False, max_seq_length=2048)
    model = FastVisionModel.get_peft_model(model, r=16, lora_alpha=32, target_modules=[...], ...)

Unsloth needs a CUDA GPU and ``pip install 'medgspo[unsloth]'``; without either, the command stops with an error
that says which is missing. Both back-ends save a standard PEFT adapter (``adapter_config.json`` +
``adapter_model.safetensors``) that ``PeftModel.from_pretrained`` loads and every medgspo command accepts.

Both back-ends converge on :mod:`medgspo.modeling.loading`: the default back-end trains the text class
``Qwen3_5ForCausalLM`` (loaded there, not by TRL), Unsloth the vision-language class, and an adapter from either
loads in every command (its layout is converted on load).

On a CUDA GPU, Qwen3.5's gated-DeltaNet layers need ``flash-linear-attention`` and ``causal-conv1d`` for their fast
kernels (``pip install 'medgspo[gpu]'``); without them transformers runs a slow PyTorch fallback, and
:func:`kernel_note` says so at start-up (``sft``, ``gspo``) and in ``medgspo plan``. On a CPU nothing changes.
Which kernel each phase runs where flash-linear-attention cannot train (Hopper GPUs under some Triton releases) is
:mod:`medgspo.train.kernels`' choice.

vLLM rollouts are TRL's: ``use_vllm: true`` with ``vllm_mode: colocate`` (an engine inside each training process)
or ``vllm_mode: server`` (``trl vllm-serve`` on separate GPUs). :func:`check_rollout_engine` stops a run before any
model is loaded when vLLM is missing or the mode is unknown.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "unsloth")
VLLM_MODES = ("colocate", "server")
UNSLOTH_INSTALL = "pip install 'medgspo[unsloth]'"
VLLM_INSTALL = "pip install 'medgspo[vllm]'"
GPU_INSTALL = "pip install 'medgspo[gpu]'"
# import name -> distribution: the packages transformers looks for to run Qwen3.5's gated-DeltaNet kernels
KERNEL_PACKAGES = {"fla": "flash-linear-attention", "causal_conv1d": "causal-conv1d"}


# ---- availability (small functions so tests can stand in for a GPU) ----------------------------------------------
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def package_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---- checks (pure apart from the availability probes) -----------------------------------------------------------
def check_backend(backend: str) -> None:
    """Raise :class:`ConfigError` unless ``backend`` is known and usable on this machine."""
    from medgspo.train.configs import (
        ConfigError,  # imports TRL; kept out of module scope so Unsloth can be imported first
    )

    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "unsloth":
        return
    missing = []
    if not package_available("unsloth"):
        missing.append(f"the unsloth package is not installed ({UNSLOTH_INSTALL})")
    if not cuda_available():
        missing.append("no CUDA GPU is visible (Unsloth's kernels run only on NVIDIA GPUs)")
    if missing:
        raise ConfigError(
            "--backend unsloth is unavailable: " + "; ".join(missing) + ". Use --backend transformers (the default), "
            "which trains the same LoRA adapter format."
        )


def check_rollout_engine(training_args: Any, backend: str = "transformers") -> None:
    """Raise :class:`ConfigError` for vLLM settings that cannot work, before any model is loaded."""
    from medgspo.train.configs import ConfigError

    if not getattr(training_args, "use_vllm", False):
        return
    mode = training_args.vllm_mode
    if mode not in VLLM_MODES:
        raise ConfigError(f"--vllm_mode must be one of {', '.join(VLLM_MODES)}, got {mode!r}")
    if backend == "unsloth":
        raise ConfigError(
            "--use_vllm true with --backend unsloth is not supported by medgspo: Unsloth runs its own vLLM engine "
            "(fast_inference) that TRL's vllm_mode does not drive. Use --backend transformers with vLLM, or "
            "--backend unsloth without it."
        )
    if not package_available("vllm"):
        raise ConfigError(
            f"--use_vllm true (vllm_mode={mode}) needs vLLM, which is not installed: {VLLM_INSTALL} "
            "(CUDA GPUs only), or set --use_vllm false to generate rollouts with transformers."
        )
    if not cuda_available():
        raise ConfigError("--use_vllm true needs a CUDA GPU; none is visible. Set --use_vllm false on this machine.")


def linear_attention_layers(config: Any) -> int:
    """How many gated-DeltaNet (linear-attention) layers a model config has, text or vision-language."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return sum(t == "linear_attention" for t in getattr(text, "layer_types", None) or [])


def kernel_note(config: Any) -> str | None:
    """What to install, and what going without costs, when a CUDA run of a model with gated-DeltaNet layers lacks
    their kernel packages; ``None`` on a CPU, for other models, or when both are installed."""
    n_linear = linear_attention_layers(config)
    if not n_linear or not cuda_available():
        return None
    missing = [dist for module, dist in KERNEL_PACKAGES.items() if not package_available(module)]
    if not missing:
        return None
    return (
        f"GPU kernels: {' and '.join(missing)} not installed, so the {n_linear} gated-DeltaNet layers run on "
        f"transformers' PyTorch fallback. Install them with {GPU_INSTALL}. Going without costs speed: in a public "
        "measurement a Qwen3.5-9B training step took 1.22 s instead of 0.70 s (transformers issue #48718), and "
        "batched generation, which GSPO rollouts are, ran about 2x slower; packed sequences (padding_free) are "
        "refused. Installing costs little: flash-linear-attention is pure Triton; causal-conv1d needs a wheel "
        "matching your torch and CUDA, or compiles with nvcc."
    )


def log_model_notes(model: Any) -> None:
    """Start-up log of SFT and GSPO: what the LoRA adapts per layer kind, and the GPU-kernel note."""
    from medgspo.modeling.coverage import coverage_lines, lora_coverage

    for line in coverage_lines(lora_coverage(model)):
        (logger.warning if line.startswith("note:") else logger.info)(line)
    note = kernel_note(model.config)
    if note:
        logger.warning(note)


# ---- early import -----------------------------------------------------------------------------------------------
def requested_backend(argv: list[str]) -> str:
    """The ``--backend`` a command line asks for, looking in ``--config`` too (default ``transformers``).

    >>> requested_backend(["--config", "missing.yaml", "--backend", "unsloth"])
    'unsloth'
    >>> requested_backend(["--backend=transformers"])
    'transformers'
    """
    backend = _flag(argv, "--backend") or recipe_values(argv).get("backend")
    return backend if isinstance(backend, str) else "transformers"


def recipe_values(argv: list[str]) -> dict:
    """The keys of the ``--config`` recipe a command line names, read without TRL (``{}`` when there is none or it
    does not parse: the recipe parser reports that with its location)."""
    config = _flag(argv, "--config")
    if not config or not Path(config).is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _flag(argv: list[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (``--name value`` or ``--name=value``; the last one wins, as in argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def import_unsloth_first(argv: list[str]) -> None:
    """Import Unsloth before transformers/TRL when the command asks for it (Unsloth patches them on import)."""
    if requested_backend(argv) == "unsloth" and package_available("unsloth") and cuda_available():
        importlib.import_module("unsloth")


# ---- loading ----------------------------------------------------------------------------------------------------
def take_over_checkpointing(training_args: Any) -> bool:
    """Whether the recipe asks for activation checkpointing; turns the Trainer's own off (Unsloth does it instead).

    transformers 5 reads ``activation_checkpointing`` and keeps ``gradient_checkpointing`` as a deprecated alias, so
    both are set.

    >>> import types
    >>> args = types.SimpleNamespace(activation_checkpointing=True, gradient_checkpointing=True)
    >>> take_over_checkpointing(args), args.activation_checkpointing, args.gradient_checkpointing
    (True, False, False)
    """
    wanted = bool(getattr(training_args, "activation_checkpointing", None) or training_args.gradient_checkpointing)
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if hasattr(training_args, name):
            setattr(training_args, name, False)
    return wanted


def load_unsloth(model_args: Any, *, adapter: str | None = None, gradient_checkpointing: bool = True, seed: int = 42):
    """The model card's Unsloth loading: a PEFT model ready for TRL (the tokenizer is loaded as on the default path).

    With ``adapter`` (GSPO continuing SFT) the saved LoRA is loaded trainable; without, a new LoRA is added with
    ``FastVisionModel.get_peft_model`` on the language layers' attention and MLP projections.
    """
    check_backend("unsloth")
    import torch

    fast_vision_model = importlib.import_module("unsloth").FastVisionModel
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
        model_args.dtype or "bfloat16", torch.bfloat16
    )
    from medgspo.modeling.loading import local_path

    model, _processor = fast_vision_model.from_pretrained(
        model_name=local_path(model_args.model_name_or_path),  # absolute: the adapter records a base found anywhere
        max_seq_length=model_args.max_seq_length,
        load_in_4bit=model_args.load_in_4bit,
        dtype=dtype,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
    )
    if adapter:
        from medgspo.modeling.loading import load_adapter

        model = load_adapter(model, adapter, is_trainable=True)
    else:
        model = fast_vision_model.get_peft_model(
            model,
            finetune_vision_layers=False,
            finetune_language_layers=True,
            finetune_attention_modules=True,
            finetune_mlp_modules=True,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            bias="none",
            target_modules=model_args.lora_target_modules,
            random_state=seed,
        )
    fast_vision_model.for_training(model)
    logger.info("Unsloth: loaded %s (max_seq_length %d)", model_args.model_name_or_path, model_args.max_seq_length)
    return model
