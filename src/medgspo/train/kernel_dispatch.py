"""How a per-phase kernel choice reaches Qwen3.5's gated-DeltaNet layers: a dispatcher in place of transformers'
kernel bindings.

    install_phase_kernels(model, KernelChoice("fla", "torch", why))   # no-grad calls on fla, training on the reference
    restore_kernels()                                               # transformers' bindings back

A call is a training call when gradients are enabled and one of its tensor inputs requires them; every other call
(``torch.no_grad``, ``torch.inference_mode``, frozen inputs) is a no-grad call. transformers binds the two kernels as
the module globals ``torch_chunk_gated_delta_rule`` and ``torch_recurrent_gated_delta_rule`` of the model's module
(fla's when it imports, else the PyTorch reference, behind its fallback wrapper and, with the ``kernels`` package,
a function module); older releases set them as attributes of each layer, with the references as those globals.
Both places are :class:`KernelSite` s; the dispatcher replaces the binding and keeps the original to call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FLA, TORCH = "fla", "torch"
KERNEL_NAMES = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule")
# older transformers releases (before the kernel-hub wrappers, which 5.17 already had) gave each layer its kernels as
# attributes, with the references as module globals: layer attribute -> the module global that is its reference
LAYER_KERNELS = {
    "chunk_gated_delta_rule": "torch_chunk_gated_delta_rule",
    "recurrent_gated_delta_rule": "torch_recurrent_gated_delta_rule",
}
_ORIGINALS: dict[tuple[int, str], tuple[Any, Any]] = {}  # (id(owner), name) -> (owner, transformers' own binding)


@dataclass(frozen=True)
class KernelChoice:
    """The kernels of the no-grad phases and of the training forward/backward (``"fla"`` or ``"torch"``), and why."""

    no_grad: str
    grad: str
    reason: str

    @property
    def split(self) -> bool:
        return self.no_grad != self.grad

    def line(self) -> str:
        if not self.split:
            return f"Gated-DeltaNet kernels: {self.no_grad} in every phase ({self.reason})."
        return (
            f"Gated-DeltaNet kernels: {self.no_grad} for rollouts and log-probs (no gradients), {self.grad} for the "
            f"training forward and backward ({self.reason})."
        )


# ---- the dispatcher -----------------------------------------------------------------------------------------------
def is_training_call(args: tuple, kwargs: dict) -> bool:
    """Whether a kernel call is recorded for a backward pass: gradients on and a tensor input that requires them."""
    import torch

    if not torch.is_grad_enabled():
        return False
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in (*args, *kwargs.values()))


def reference_kernel(binding: Any) -> Callable:
    """transformers' PyTorch reference behind a kernel binding: through ``functools.wraps`` (transformers' fallback
    wrapper) and through the ``kernels`` package's function modules (the function their ``forward`` closes over).

    >>> import functools
    >>> def reference(x): return x
    >>> reference_kernel(functools.wraps(reference)(lambda x: -x)) is reference
    True
    """
    for _ in range(8):
        if hasattr(binding, "__wrapped__"):
            binding = binding.__wrapped__
            continue
        inner = module_function(binding)
        if inner is binding:
            return binding
        binding = inner
    return binding


def module_function(binding: Any) -> Any:
    """The function a ``kernels``-package function module calls (the one its ``forward`` closes over), or
    ``binding`` itself when it is not such a module."""
    cells = getattr(getattr(type(binding), "forward", None), "__closure__", None) or ()
    inner = [c.cell_contents for c in cells if callable(c.cell_contents) and not isinstance(c.cell_contents, type)]
    return inner[0] if len(inner) == 1 else binding


def reference_only(reference: Callable, name: str) -> Callable:
    """The PyTorch ``reference`` of kernel ``name``, refusing packed sequences as transformers does without fla."""

    def run(*args: Any, **kwargs: Any):
        if kwargs.get("cu_seqlens") is not None:
            raise ValueError(
                f"{name}: packed sequences (padding_free) need fla's kernels in this phase, and this run uses the "
                "PyTorch reference there; set --padding_free false"
            )
        return reference(*args, **kwargs)

    run.__name__ = name
    return run


def kernel_implementations(original: Any, name: str, reference: Callable) -> dict[str, Callable]:
    """``{"fla": transformers' binding of kernel ``name`` (fla's where it imported), "torch": its reference}``."""
    return {FLA: original, TORCH: reference_only(reference, name)}


def phase_dispatch(implementations: dict[str, Callable], choice: KernelChoice) -> Callable:
    """A kernel that runs ``implementations[choice.grad]`` for training calls and ``[choice.no_grad]`` otherwise."""
    grad, no_grad = implementations[choice.grad], implementations[choice.no_grad]

    def dispatch(*args: Any, **kwargs: Any):
        return (grad if is_training_call(args, kwargs) else no_grad)(*args, **kwargs)

    dispatch.kernel_choice, dispatch.implementations = choice, implementations
    return dispatch


@dataclass(frozen=True)
class KernelSite:
    """Where gated-DeltaNet layers look a kernel up, ``owner.name``, and the kernel's PyTorch reference. Recent
    transformers (5.17, 5.25): a global of the model's Python module, one site for every layer; older releases: an
    attribute of each layer."""

    owner: Any
    name: str
    reference: Callable

    @property
    def original(self) -> Any:
        return original_binding(self.owner, self.name)

    @property
    def is_chunk(self) -> bool:
        return "chunk" in self.name


def original_binding(owner: Any, name: str) -> Any:
    """transformers' own binding of ``owner.name`` (saved when a dispatcher replaced it)."""
    saved = _ORIGINALS.get((id(owner), name))
    return saved[1] if saved else getattr(owner, name)


def gated_delta_layers(model: Any) -> list[Any]:
    return [m for m in model.modules() if type(m).__name__.endswith("GatedDeltaNet")]


def kernel_sites(model: Any) -> list[KernelSite]:
    """Every place ``model``'s gated-DeltaNet layers look their two kernels up."""
    sites, modules = [], []
    for layer in gated_delta_layers(model):
        module = sys.modules[type(layer).__module__]
        own = [name for name in LAYER_KERNELS if name in vars(layer)]
        if own:  # each layer holds its kernels
            sites += [KernelSite(layer, name, getattr(module, LAYER_KERNELS[name])) for name in own]
        elif module not in modules:
            modules.append(module)
            bound = [name for name in KERNEL_NAMES if hasattr(module, name)]
            sites += [KernelSite(module, name, reference_kernel(original_binding(module, name))) for name in bound]
    return sites


def install_phase_kernels(model: Any, choice: KernelChoice) -> int:
    """Make ``model``'s gated-DeltaNet layers use ``choice`` per phase; returns how many kernel sites now dispatch
    (0 for fla everywhere: transformers' own binding, put back if it was replaced)."""
    replaced = 0
    for site in kernel_sites(model):
        original = _ORIGINALS.setdefault((id(site.owner), site.name), (site.owner, site.original))[1]
        if choice.no_grad == choice.grad == FLA:
            setattr(site.owner, site.name, original)  # transformers' binding is fla's already (where fla imported)
            continue
        implementations = kernel_implementations(original, site.name, site.reference)
        setattr(site.owner, site.name, phase_dispatch(implementations, choice))
        replaced += 1
    return replaced


def restore_kernels() -> None:
    """Give every replaced kernel its transformers binding back."""
    for (_, name), (owner, original) in _ORIGINALS.items():
        setattr(owner, name, original)
    _ORIGINALS.clear()
