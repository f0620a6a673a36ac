"""Which gated-DeltaNet kernels each phase of a run uses: flash-linear-attention (fla) or transformers' PyTorch
reference, chosen once per run and said once in the log.

    setup = probe_setup("cuda")          # GPU, Triton, fla, TileLang: what this machine has
    choice = choose_kernels(setup)       # pure: no-grad phases vs training, and why
    install_phase_kernels(model, choice) # the model's gated-DeltaNet layers dispatch on the phase from now on

The phases differ in what they need from a kernel. Rollouts, the old-policy and the reference log-probs run without
gradients and need only fla's forward and recurrent kernels, which are correct on every GPU fla supports. The
training forward needs fla's backward too, and flash-linear-attention 0.6 refuses that backward on Hopper GPUs
(H100, H200) under Triton >= 3.4.0, < 3.7.1, which miscompiles one of its kernels (fla issue #640) unless TileLang
serves it. There the training forward runs on the PyTorch reference while every no-grad forward keeps fla: the run
trains correctly at the speed the machine allows instead of stopping. Where fla's backward is used, its gradients
are first compared with the reference's on the device (:func:`compare_kernels`); a difference beyond
:data:`GRAD_TOLERANCE` (or any error) puts training back on the reference, with the figures in the log.

How a choice reaches the layers (a dispatcher on autograd in place of transformers' kernel bindings) is
:mod:`medgspo.train.kernel_dispatch`. On a CPU, or without fla, nothing is replaced.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medgspo.train import kernel_dispatch as dispatch
from medgspo.train.backends import linear_attention_layers, package_available
from medgspo.train.kernel_dispatch import (
    FLA,
    TORCH,
    KernelChoice,
    gated_delta_layers,
    install_phase_kernels,
    restore_kernels,
)

logger = logging.getLogger(__name__)

# flash-linear-attention 0.6 raises in the backward pass of its gated chunk kernel on Hopper (H100/H200) under
# Triton >= 3.4.0, < 3.7.1, which computes it wrongly there (its issue #640), unless TileLang serves that kernel.
# Seen 2026-11-29 on an H200 with torch 2.11.0 (Triton 3.6.0): SFT stopped at its first backward (bench/gpu).
FLA_BAD_TRITON_ON_HOPPER = ("3.4.0", "3.7.1")
FLA_DEVICES = ("cuda",)  # transformers also hands fla XPU/MLU/NPU inputs; medgspo's checks are written for CUDA
# Relative L2 difference allowed between fla's output and gradients (in the model's dtype) and the reference's (in
# float32 on the same values). The reference itself run in bfloat16 differs by 1.6e-3 (output) to 3.0e-3 (gradients)
# at the 4B model's head sizes (measured on a CPU, 2026-12-08); a miscompiled kernel is off by order 1. fla's own
# figures on a GPU: bench/gpu/check.py records them (rollout.kernel_check).
GRAD_TOLERANCE = {"float32": 1e-2, "float16": 5e-2, "bfloat16": 5e-2}


@dataclass(frozen=True)
class KernelSetup:
    """What decides the kernels: the training device, its GPU, and the packages that provide them."""

    device: str  # "cuda", "cpu", ...
    gpu: str | None = None
    capability: tuple[int, int] | None = None
    triton: str | None = None
    fla: bool = False
    tilelang: bool = False


# ---- the choice (pure) --------------------------------------------------------------------------------------------
def fla_backward_refused(capability: tuple[int, int], triton_version: str, tilelang: bool) -> bool:
    """Whether flash-linear-attention will refuse the gated-DeltaNet backward pass on this GPU and Triton.

    >>> fla_backward_refused((9, 0), "3.6.0", tilelang=False)
    True
    >>> fla_backward_refused((9, 0), "3.7.1", tilelang=False), fla_backward_refused((8, 0), "3.6.0", tilelang=False)
    (False, False)
    >>> fla_backward_refused((9, 0), "3.6.0", tilelang=True)
    False
    """
    from packaging.version import Version

    low, high = (Version(v) for v in FLA_BAD_TRITON_ON_HOPPER)
    return capability[0] == 9 and low <= Version(triton_version) < high and not tilelang


def choose_kernels(setup: KernelSetup) -> KernelChoice:
    """The kernels each phase uses on ``setup``.

    >>> choose_kernels(KernelSetup("cpu", fla=True)).line()
    'Gated-DeltaNet kernels: torch in every phase (fla is used on CUDA GPUs only; device: cpu).'
    >>> choice = choose_kernels(KernelSetup("cuda", "NVIDIA H200", (9, 0), "3.6.0", fla=True))
    >>> choice.no_grad, choice.grad
    ('fla', 'torch')
    """
    if setup.device not in FLA_DEVICES:
        return KernelChoice(TORCH, TORCH, f"fla is used on CUDA GPUs only; device: {setup.device}")
    if not setup.fla:
        return KernelChoice(TORCH, TORCH, "flash-linear-attention is not installed: pip install 'medgspo[gpu]'")
    if setup.triton is None:
        return KernelChoice(TORCH, TORCH, "Triton is not installed, and fla's kernels are Triton kernels")
    if setup.capability is not None and fla_backward_refused(setup.capability, setup.triton, setup.tilelang):
        low, high = FLA_BAD_TRITON_ON_HOPPER
        return KernelChoice(
            FLA,
            TORCH,
            f"fla's gated backward is refused on {setup.gpu or 'this GPU'} with Triton {setup.triton}: Triton {low} "
            f"to <{high} computes it wrongly on Hopper GPUs (flash-linear-attention issue #640); its forward is "
            f"unaffected. To train on fla too: pip install tilelang, or a torch whose Triton is >= {high}",
        )
    why = "TileLang serves its backward" if setup.tilelang and setup.capability and setup.capability[0] == 9 else ""
    return KernelChoice(FLA, FLA, why or f"Triton {setup.triton} on {setup.gpu or setup.device}")


# ---- what this machine has (I/O) ----------------------------------------------------------------------------------
def imports(module: str) -> bool:
    """Whether ``module`` imports here (its import error, if any, is logged at debug level)."""
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - a package that fails to import for any reason is not available
        logger.debug("%s does not import: %r", module, err)
        return False
    return True


def probe_setup(device: str) -> KernelSetup:
    """The :class:`KernelSetup` of training on ``device`` (a device type, e.g. the trainer's ``"cuda"``)."""
    import torch

    fla, tilelang = package_available("fla"), package_available("tilelang")
    if device != "cuda" or not torch.cuda.is_available():
        return KernelSetup(device, fla=fla, tilelang=tilelang)
    fla = fla and imports("fla.ops.gated_delta_rule")  # installed but broken (e.g. its Triton): transformers skips it
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name, capability = torch.cuda.get_device_name(), tuple(torch.cuda.get_device_capability())
    return KernelSetup(device, name, capability, triton_version, fla=fla, tilelang=tilelang)


# ---- checking fla's backward against the reference ----------------------------------------------------------------
@dataclass(frozen=True)
class KernelCheck:
    """fla's kernel against the reference: relative L2 differences (``output``, ``grad_query``, ...) in ``dtype``."""

    diffs: dict[str, float]
    dtype: str

    @property
    def worst(self) -> float:
        return max(self.diffs.values())

    @property
    def tolerance(self) -> float:
        return GRAD_TOLERANCE.get(self.dtype, GRAD_TOLERANCE["bfloat16"])

    def line(self) -> str:
        figures = ", ".join(f"{k} {v:.2e}" for k, v in self.diffs.items())
        return f"fla's gated-DeltaNet kernel vs the PyTorch reference ({self.dtype}, relative L2): {figures}"


def kernel_inputs(config: Any, device: Any, dtype: Any = None, seq_len: int = 256, seed: int = 0) -> dict[str, Any]:
    """Random gated-DeltaNet inputs of ``config``'s head sizes (one sequence) as the layer hands them to the kernel:
    q, k, v and beta in ``dtype`` (default float32), the log decay g in float32."""
    import torch

    dtype = dtype or torch.float32
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    gen = torch.Generator(device="cpu").manual_seed(seed)
    heads_k, heads_v = text.linear_num_key_heads, text.linear_num_value_heads
    dim_k, dim_v = text.linear_key_head_dim, text.linear_value_head_dim

    def rand(*shape: int, to: Any = dtype):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=to)

    query, key = rand(1, seq_len, heads_k, dim_k), rand(1, seq_len, heads_k, dim_k)  # the kernel repeats them
    value = rand(1, seq_len, heads_v, dim_v)
    g = -torch.nn.functional.softplus(rand(1, seq_len, heads_v, to=torch.float32))  # log decay, < 0
    beta = torch.sigmoid(rand(1, seq_len, heads_v))
    return {"query": query, "key": key, "value": value, "g": g, "beta": beta}


def compare_kernels(fast: Callable, reference: Callable, inputs: dict[str, Any]) -> dict[str, float]:
    """Relative L2 difference of ``fast`` on ``inputs`` from ``reference`` on the same values in float32 (the
    ground truth): the output and each input's gradient, for the same random upstream gradient."""
    import torch

    def run(kernel: Callable, tensors: dict[str, Any]):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items()}
        # positional, as the layer calls it: fla names them q, k, v, and transformers' wrapper drops unknown names
        q, k, v = (leaves[name] for name in ("query", "key", "value"))
        out, _ = kernel(q, k, v, g=leaves["g"], beta=leaves["beta"], use_qk_l2norm_in_kernel=True)
        upstream = torch.randn(out.shape, generator=torch.Generator(device="cpu").manual_seed(1)).to(out.device)
        out.backward(upstream.to(out.dtype))
        return out.detach().float(), {k: v.grad.float() for k, v in leaves.items()}

    out_fast, grads_fast = run(fast, inputs)
    out_ref, grads_ref = run(reference, {k: v.float() for k, v in inputs.items()})

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    return {"output": rel(out_fast, out_ref)} | {f"grad_{k}": rel(grads_fast[k], grads_ref[k]) for k in grads_ref}


def backward_check(model: Any) -> KernelCheck | None:
    """fla's chunk kernel against the reference on the model's device, head sizes and dtype (bfloat16 for a float32
    model: fla's chunk kernel refuses float32), or ``None`` when the model has no gated-DeltaNet layer."""
    import torch

    site = next((s for s in dispatch.kernel_sites(model) if s.is_chunk), None)
    if site is None:
        return None
    param = next(model.parameters())
    dtype = param.dtype if param.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    implementations = dispatch.kernel_implementations(site.original, site.name, site.reference)
    inputs = kernel_inputs(model.config, param.device, dtype)
    diffs = compare_kernels(implementations[FLA], implementations[TORCH], inputs)
    return KernelCheck(diffs, str(dtype).removeprefix("torch."))


# ---- one call per run ---------------------------------------------------------------------------------------------
def apply_kernel_choice(
    model: Any, device: str, *, padding_free: bool = False, check: Callable[[Any], KernelCheck | None] = backward_check
) -> KernelChoice:
    """Choose the kernels for training ``model`` on ``device``, check fla's backward on the device before using it,
    install the choice and log it once; returns it. Packed sequences (``padding_free``) need fla in training: a
    choice that trains on the reference stops the run here, before the first step."""
    if not gated_delta_layers(model):
        return KernelChoice(TORCH, TORCH, "the model has no gated-DeltaNet layers")
    choice = choose_kernels(probe_setup(device))
    if choice.grad == FLA:
        choice = checked(choice, model, check)
    if choice.split and padding_free:
        from medgspo.train.configs import ConfigError

        raise ConfigError(f"--padding_free true needs fla's kernels in training, and here {choice.reason}")
    if choice.split:
        install_phase_kernels(model, choice)
    else:
        restore_kernels()  # an earlier stage of this process may have split them (the pipeline runs every stage)
    level = logging.WARNING if choice.split else logging.INFO if device in FLA_DEVICES else logging.DEBUG
    logger.log(level, choice.line())  # a CPU run has nothing to choose: said only with --verbose
    return choice


def checked(choice: KernelChoice, model: Any, check: Callable[[Any], KernelCheck | None]) -> KernelChoice:
    """``choice``, or training on the reference when fla's backward fails or misses its check on this device."""
    try:
        result = check(model)
    except Exception as err:  # noqa: BLE001 - any failure of fla's kernel here means: do not train on it
        return KernelChoice(
            choice.no_grad, TORCH, f"fla's gradient check failed on this GPU ({type(err).__name__}: {err})"
        )
    if result is None:
        return choice
    logger.info(result.line())
    if result.worst <= result.tolerance:
        return choice
    return KernelChoice(
        choice.no_grad,
        TORCH,
        f"fla's backward differs from the reference by {result.worst:.3g} (> {result.tolerance:g}, "
        f"{result.dtype}) on this GPU",
    )


def plan_note(config: Any) -> str | None:
    """``medgspo plan``'s line on the kernels when this machine's GPU splits the phases, else ``None``."""
    import torch

    if not linear_attention_layers(config):
        return None
    choice = choose_kernels(probe_setup("cuda" if torch.cuda.is_available() else "cpu"))
    return choice.line() if choice.split else None
