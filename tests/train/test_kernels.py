"""The per-phase gated-DeltaNet kernels (:mod:`medgspo.train.kernels`, :mod:`medgspo.train.kernel_dispatch`): the choice for each (device, Triton, fla,
TileLang), the dispatch on the tiny model (no-grad calls on one kernel, training calls on the other, the same
numbers), the gradient check that keeps a wrong backward out of training, and the log line said once."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from medgspo.train import kernel_dispatch as dispatch
from medgspo.train import kernels
from medgspo.train.configs import ConfigError
from medgspo.train.kernels import FLA, TORCH, KernelChoice, KernelSetup, choose_kernels

H200, H100, A100, B200 = (
    ("NVIDIA H200", (9, 0)),
    ("NVIDIA H100 80GB HBM3", (9, 0)),
    ("NVIDIA A100", (8, 0)),
    (
        "NVIDIA B200",
        (10, 0),
    ),
)
QWEN35 = "transformers.models.qwen3_5.modeling_qwen3_5"


@pytest.mark.parametrize(
    ("device", "gpu", "triton", "fla", "tilelang", "expected"),
    [
        ("cpu", None, None, True, False, (TORCH, TORCH)),
        ("cuda", H200, "3.6.0", False, False, (TORCH, TORCH)),  # no fla: the reference everywhere
        ("cuda", H200, None, True, False, (TORCH, TORCH)),  # fla's kernels are Triton kernels
        ("cuda", H200, "3.6.0", True, False, (FLA, TORCH)),  # the first GPU run's machine: split, not stopped
        ("cuda", H100, "3.4.0", True, False, (FLA, TORCH)),  # the first refused Triton
        ("cuda", H100, "3.7.0", True, False, (FLA, TORCH)),
        ("cuda", H100, "3.7.1", True, False, (FLA, FLA)),  # the fixed Triton
        ("cuda", H100, "3.3.1", True, False, (FLA, FLA)),  # before the miscompile
        ("cuda", H200, "3.6.0", True, True, (FLA, FLA)),  # TileLang serves the backward
        ("cuda", A100, "3.6.0", True, False, (FLA, FLA)),  # not Hopper
        ("cuda", B200, "3.6.0", True, False, (FLA, FLA)),
    ],
)
def test_the_choice_for_each_device_triton_fla_and_tilelang(device, gpu, triton, fla, tilelang, expected):
    name, capability = gpu or (None, None)
    choice = choose_kernels(KernelSetup(device, name, capability, triton, fla=fla, tilelang=tilelang))
    assert (choice.no_grad, choice.grad) == expected
    assert choice.reason and choice.line().startswith("Gated-DeltaNet kernels: ")
    if choice.split:
        assert f"Triton {triton}" in choice.reason and "pip install tilelang" in choice.reason


def test_this_machine_is_probed_as_a_cpu():
    setup = kernels.probe_setup("cpu")
    assert setup.device == "cpu" and setup.capability is None
    assert choose_kernels(setup) == KernelChoice(TORCH, TORCH, "fla is used on CUDA GPUs only; device: cpu")


class Recorder:
    """Stand-ins for the two implementations: each is the reference, and records the phase it was called in."""

    def __init__(self):
        self.calls: list[tuple[str, str, bool]] = []

    def implementations(self, original, name, reference):
        reference = dispatch.reference_only(reference, name)

        def named(label):
            def run(*args, **kwargs):
                self.calls.append((name, label, torch.is_grad_enabled()))
                return reference(*args, **kwargs)

            return run

        return {FLA: named(FLA), TORCH: named(TORCH)}


@pytest.fixture
def recorder(monkeypatch):
    found = Recorder()
    monkeypatch.setattr(dispatch, "kernel_implementations", found.implementations)
    yield found
    dispatch.restore_kernels()


def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "in_proj_qkv", "down_proj"]))


def test_rollouts_take_the_no_grad_kernel_and_training_the_other(tiny_model_dir, recorder):
    model = lora_model(tiny_model_dir)
    module = sys.modules[QWEN35]
    originals = {name: getattr(module, name) for name in dispatch.KERNEL_NAMES}
    assert dispatch.install_phase_kernels(model, KernelChoice(FLA, TORCH, "test")) == 2
    ids = torch.randint(5, 5000, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert {label for _, label, _ in recorder.calls} == {FLA}
    assert {name for name, _, _ in recorder.calls} == set(dispatch.KERNEL_NAMES)  # prefill (chunk) and decode steps
    recorder.calls.clear()
    model.train()
    model(ids, labels=ids).loss.backward()
    assert recorder.calls and {label for _, label, grad in recorder.calls} == {TORCH}
    dispatch.restore_kernels()
    assert {name: getattr(module, name) for name in dispatch.KERNEL_NAMES} == originals


def test_the_dispatch_changes_no_number(tiny_model_dir):
    """With transformers' own implementations behind it (on a CPU both are the reference), logits and gradients
    under the split dispatch equal those without it."""
    model = lora_model(tiny_model_dir)
    ids = torch.randint(5, 5000, (2, 70), generator=torch.Generator().manual_seed(4))  # > one 64-token chunk

    def loss_and_grads():
        model.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss, grads = loss_and_grads()
    try:
        dispatch.install_phase_kernels(model, KernelChoice(FLA, TORCH, "test"))
        again, grads_again = loss_and_grads()
    finally:
        dispatch.restore_kernels()
    assert torch.equal(loss, again)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_again, strict=True))


class WrongBackward(torch.autograd.Function):
    """The reference's forward with a backward off by half: what a miscompiled kernel looks like to training."""

    @staticmethod
    def forward(ctx, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.5


def wrong_backward(original, name, reference):
    reference = dispatch.reference_only(reference, name)

    def run(*args, **kwargs):
        out, state = reference(*args, **kwargs)
        return WrongBackward.apply(out), state

    return {FLA: run, TORCH: reference}


def test_the_gradient_check_measures_a_wrong_backward(tiny_model_dir, monkeypatch):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    inputs = kernels.kernel_inputs(config, "cpu", seq_len=80)
    name = dispatch.KERNEL_NAMES[0]
    binding = getattr(sys.modules[QWEN35], name)
    reference = dispatch.reference_only(dispatch.reference_kernel(binding), name)
    same = kernels.compare_kernels(reference, reference, inputs)
    assert set(same) == {"output", "grad_query", "grad_key", "grad_value", "grad_g", "grad_beta"}
    assert max(same.values()) == 0.0

    def fla_like(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, **kwargs):
        """fla's signature (q, k, v, not query, key, value): the check calls kernels as the layer does."""
        return reference(q, k, v, g=g, beta=beta, initial_state=initial_state, **kwargs)

    assert max(kernels.compare_kernels(fla_like, reference, inputs).values()) == 0.0
    broken = wrong_backward(binding, name, dispatch.reference_kernel(binding))[FLA]
    diffs = kernels.compare_kernels(broken, reference, inputs)
    assert diffs["output"] == 0.0 and diffs["grad_value"] == pytest.approx(0.5, rel=1e-4)


def gpu(monkeypatch, name, capability, triton, **packages):
    setup = KernelSetup("cuda", name, capability, triton, fla=True, **packages)
    monkeypatch.setattr(kernels, "probe_setup", lambda device: setup)


def test_a_wrong_fla_backward_keeps_training_on_the_reference(tiny_model_dir, monkeypatch, caplog):
    model = lora_model(tiny_model_dir)
    gpu(monkeypatch, "NVIDIA B200", (10, 0), "3.7.1")  # fla would train here; its backward is checked first
    monkeypatch.setattr(dispatch, "kernel_implementations", wrong_backward)
    try:
        with caplog.at_level(logging.INFO, logger="medgspo.train.kernels"):
            choice = kernels.apply_kernel_choice(model, "cuda")
    finally:
        dispatch.restore_kernels()
    assert (choice.no_grad, choice.grad) == (FLA, TORCH)
    assert "fla's backward differs from the reference by 0.5" in choice.reason and "bfloat16" in choice.reason
    assert "(bfloat16, relative L2)" in caplog.text and "grad_value 5.0" in caplog.text
    assert caplog.text.count("Gated-DeltaNet kernels:") == 1


def test_the_gradient_check_passes_a_correct_kernel_in_bfloat16_and_stops_on_an_error(tiny_model_dir, monkeypatch):
    """On a CPU fla's binding runs the reference: in bfloat16 it differs from float32 only by rounding (well inside
    the tolerance), so training stays on fla; a kernel that raises keeps training on the reference."""
    model = lora_model(tiny_model_dir).to(torch.bfloat16)
    result = kernels.backward_check(model)
    assert result.dtype == "bfloat16" and 0 < result.worst < result.tolerance / 5
    gpu(monkeypatch, "NVIDIA B200", (10, 0), "3.7.1")
    assert kernels.apply_kernel_choice(model, "cuda").grad == FLA

    def raising(model):
        raise AssertionError("ChunkGatedDeltaRuleFunction does not support float32")

    choice = kernels.apply_kernel_choice(model, "cuda", check=raising)
    assert choice.grad == TORCH and "gradient check failed on this GPU (AssertionError: Chunk" in choice.reason
    dispatch.restore_kernels()


def test_a_correct_fla_backward_trains_on_fla_and_a_refused_one_is_not_called(tiny_model_dir, monkeypatch, caplog):
    model = lora_model(tiny_model_dir)
    checked = []
    gpu(monkeypatch, "NVIDIA H100", (9, 0), "3.7.1")
    passing = kernels.KernelCheck({"output": 1e-3, "grad_g": 2e-2}, "bfloat16")  # within bfloat16's 5e-2
    choice = kernels.apply_kernel_choice(model, "cuda", check=lambda m: checked.append(m) or passing)
    assert (choice.no_grad, choice.grad) == (FLA, FLA) and checked == [model]
    gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.6.0")
    checked.clear()
    original = getattr(sys.modules[QWEN35], dispatch.KERNEL_NAMES[0])
    with caplog.at_level(logging.WARNING, logger="medgspo.train.kernels"):
        try:
            choice = kernels.apply_kernel_choice(model, "cuda", check=lambda m: checked.append(m))
            dispatching = getattr(sys.modules[QWEN35], dispatch.KERNEL_NAMES[0])
            gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.7.1")  # a later stage that may train on fla: bindings back
            kernels.apply_kernel_choice(model, "cuda", check=lambda m: passing)
            after = getattr(sys.modules[QWEN35], dispatch.KERNEL_NAMES[0])
        finally:
            dispatch.restore_kernels()
    assert choice.split and checked == []  # no backward check: fla's backward is never used here
    assert dispatching.kernel_choice == choice and after is original
    gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.6.0")
    assert "fla for rollouts and log-probs (no gradients), torch for the training forward" in caplog.text
    with pytest.raises(ConfigError, match="--padding_free true needs fla's kernels in training"):
        kernels.apply_kernel_choice(model, "cuda", padding_free=True)
    dispatch.restore_kernels()


def test_the_reference_is_found_behind_transformers_binding():
    module = sys.modules[QWEN35]
    for name in dispatch.KERNEL_NAMES:
        reference = dispatch.reference_kernel(getattr(module, name))
        assert reference.__module__ == QWEN35 and reference.__name__ == name  # the PyTorch function itself


def test_packed_sequences_on_the_reference_are_refused_with_the_fix():
    name = dispatch.KERNEL_NAMES[0]
    reference = dispatch.reference_only(dispatch.reference_kernel(getattr(sys.modules[QWEN35], name)), name)
    with pytest.raises(ValueError, match="set --padding_free false"):
        reference(torch.zeros(1), cu_seqlens=torch.tensor([0, 1]))


def test_plan_speaks_only_when_the_phases_split(tiny_model_dir, monkeypatch):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert kernels.plan_note(config) is None  # CPU
    gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.6.0")
    assert "fla for rollouts" in kernels.plan_note(config)
    gpu(monkeypatch, "NVIDIA H200", (9, 0), "3.7.1")
    assert kernels.plan_note(config) is None


def test_layers_that_hold_their_own_kernels_dispatch_too(monkeypatch):
    """Older transformers releases gave each gated-DeltaNet layer its kernels as attributes (fla's functions, or the
    references, which stayed module globals): those attributes dispatch per phase, and come back on restore."""
    import types

    module = types.ModuleType("older_modeling_qwen3_5")
    new = sys.modules[QWEN35]
    for name in dispatch.KERNEL_NAMES:  # the older module's globals are the plain PyTorch references
        setattr(module, name, dispatch.reference_kernel(getattr(new, name)))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    calls = []

    def fla(label):
        def run(*args, **kwargs):
            calls.append(label)
            return "fla"

        return run

    class OlderGatedDeltaNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.chunk_gated_delta_rule, self.recurrent_gated_delta_rule = fla("chunk"), fla("recurrent")

    OlderGatedDeltaNet.__module__ = module.__name__
    model = torch.nn.Sequential(OlderGatedDeltaNet(), OlderGatedDeltaNet())
    originals = [(layer.chunk_gated_delta_rule, layer.recurrent_gated_delta_rule) for layer in model]
    sites = dispatch.kernel_sites(model)
    assert [(s.owner, s.name) for s in sites] == [(layer, n) for layer in model for n in dispatch.LAYER_KERNELS]
    assert sites[0].reference is module.torch_chunk_gated_delta_rule
    assert dispatch.install_phase_kernels(model, KernelChoice(FLA, TORCH, "test")) == 4
    q = torch.randn(1, 70, 2, 8, requires_grad=True)
    k, v = torch.randn(1, 70, 2, 8), torch.randn(1, 70, 2, 8)
    g, beta = -torch.rand(1, 70, 2), torch.rand(1, 70, 2)
    with torch.no_grad():
        assert model[0].chunk_gated_delta_rule(q, k, v, g=g, beta=beta) == "fla" and calls == ["chunk"]
    out, _ = model[1].chunk_gated_delta_rule(q, k, v, g=g, beta=beta, use_qk_l2norm_in_kernel=True)
    out.sum().backward()  # the training call ran the reference, and it has a gradient
    assert calls == ["chunk"] and q.grad is not None and q.grad.abs().sum() > 0
    dispatch.restore_kernels()
    assert [(layer.chunk_gated_delta_rule, layer.recurrent_gated_delta_rule) for layer in model] == originals
