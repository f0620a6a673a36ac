"""The faster transformers rollouts of GSPO (:mod:`medgspo.train.rollouts`) on the tiny model: generating with the
LoRA merged gives the same greedy tokens and gives the weights back within rounding, TRL's trainer generates with
the adapter merged and trains on the unmerged one, a static cache decodes the same tokens as the dynamic one, and
the compiled decode is refused, with its reason, where it cannot run."""

from __future__ import annotations

import logging

import pytest
import torch

from medgspo.train.configs import MedGSPOConfig
from medgspo.train.rollouts import compile_decision, is_merged, make_trainer_class, merged_adapter


def lora_model(tiny_model_dir, dtype=torch.float32):
    """The tiny model, weights scaled up (greedy decoding then varies), with a random non-zero LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(8.0)
    targets = ["q_proj", "v_proj", "down_proj", "in_proj_qkv"]  # attention, MLP and gated-DeltaNet projections
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return peft_model.eval()


def greedy(model, ids):
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False, pad_token_id=0
        )
    return out[:, ids.shape[1] :]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_rollouts_give_the_same_tokens_and_the_weights_back(tiny_model_dir, dtype):
    model = lora_model(tiny_model_dir, dtype)
    ids = torch.randint(5, 5000, (3, 12), generator=torch.Generator().manual_seed(1))
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    unmerged = greedy(model, ids)
    with merged_adapter(model) as merged:
        assert merged and is_merged(model)
        during = greedy(model, ids)
    assert not is_merged(model)
    if dtype == torch.float32:
        assert torch.equal(during, unmerged)  # bf16 rounds the merged sum: tokens may part after a near tie
    eps = torch.finfo(dtype).eps
    for name, param in model.named_parameters():
        bound = eps * before[name].abs().max().item()
        assert (param - before[name]).abs().max().item() <= bound, name


def test_a_model_without_an_adapter_is_left_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with merged_adapter(model) as merged:
        assert not merged


def test_static_cache_decodes_the_same_tokens_as_the_dynamic_one(tiny_model_dir):
    model = lora_model(tiny_model_dir).merge_and_unload()
    ids = torch.randint(5, 5000, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        kwargs = {"attention_mask": torch.ones_like(ids), "max_new_tokens": 16, "do_sample": False, "pad_token_id": 0}
        dynamic = model.generate(ids, **kwargs)
        static = model.generate(ids, cache_implementation="static", **kwargs)
    assert torch.equal(dynamic, static)


@pytest.mark.parametrize("merge", [True, False])
def test_the_trainer_generates_merged_and_trains_unmerged(tiny_model_dir, tmp_path, merge):
    """Inside TRL's rollout the adapter is merged (seen by a forward hook); afterwards it is not, and the training
    loss on the same batch is what it was before the rollout."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    model = lora_model(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = MedGSPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        use_cpu=True,
        report_to="none",
        merge_adapter_for_rollouts=merge,
    )
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "问？"}]}] * 4)
    trainer = make_trainer_class()(
        model=model,
        reward_funcs=lambda completions, **kw: [float(len(c[0]["content"])) for c in completions],
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
    )
    seen = []
    base = trainer.model.get_base_model()  # generate runs the transformers model under the PEFT wrapper
    hook = base.register_forward_pre_hook(lambda module, inputs: seen.append(is_merged(trainer.model)))
    batch = [{"prompt": [{"role": "user", "content": "问？"}]}] * 4
    trainer.model.eval()
    inputs = trainer._generate_and_score_completions(batch)
    hook.remove()
    assert seen and (True in seen) == merge and not is_merged(trainer.model)  # merged only when asked; unmerged after
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, inputs)
    with merged_adapter(trainer.model):
        pass  # another merge and unmerge round trip: the loss on the same batch stays
    again = trainer.compute_loss(trainer.model, inputs)
    assert torch.allclose(loss, again, atol=1e-6)


def test_a_compiled_decode_is_refused_with_its_reason_where_it_cannot_run(tiny_model_dir, caplog):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert compile_decision(model, "cpu") == "a compiled decode needs CUDA graphs (device: cpu)"
    assert compile_decision(model, "cuda") is None  # Qwen3.5 declares a full-graph compile in this transformers

    class Plain(torch.nn.Module):
        pass

    assert "does not declare a full-graph compile" in compile_decision(Plain(), "cuda")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("medgspo.train.rollouts").warning("--rollout_compile: not used, %s", "x")
    assert "--rollout_compile: not used" in caplog.text


def gspo_steps(tiny_model_dir, tmp_path, kernel_choice=None, **fast):
    """Two GSPO optimizer steps (TRL's own ``train``) on one rollout batch of the tiny model (the second step's
    ratios are not 1: the policy moved): the logged figures, each step's loss and LoRA gradients."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    from medgspo.train.kernel_dispatch import install_phase_kernels

    losses, grads = [], []

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    model = lora_model(tiny_model_dir).train()
    if kernel_choice is not None:
        install_phase_kernels(model, kernel_choice)
    args = MedGSPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_generations=2,
        max_completion_length=8,
        beta=0.1,  # reference log-probs (no gradients, the starting adapter) and a KL term
        num_iterations=2,  # old-policy log-probs (no gradients) in the rollout; step 2 reuses its completions
        learning_rate=1e-4,
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        log_completions=False,
        **fast,
    )
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in ("头痛？", "发热？")] * 4)
    trainer = make_trainer_class()(
        model=model,
        reward_funcs=lambda completions, **kw: [float(len(set(c[0]["content"]))) for c in completions],
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        callbacks=[Grads()],
    )
    compute_loss = trainer.compute_loss

    def recording(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        losses.append(loss.item())
        return loss

    trainer.compute_loss = recording
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return logs, losses, grads


def test_a_gspo_step_on_the_fast_path_gives_the_same_loss_and_gradients(tiny_model_dir, tmp_path, monkeypatch):
    """The fast path (LoRA merged for the rollout, a static cache, rollouts and log-probs on the no-grad kernel,
    training on the other) against today's path: the same rollouts, losses and LoRA gradients."""
    from medgspo.train import kernel_dispatch as dispatch
    from medgspo.train import kernels

    calls = []

    def implementations(original, name, reference):
        reference = dispatch.reference_only(reference, name)

        def no_grad_kernel(*args, **kwargs):
            calls.append(torch.is_grad_enabled())
            return reference(*args, **kwargs)

        return {kernels.FLA: no_grad_kernel, kernels.TORCH: reference}

    logs, losses, grads = gspo_steps(tiny_model_dir, tmp_path / "today")
    monkeypatch.setattr(dispatch, "kernel_implementations", implementations)
    try:
        fast_logs, fast_losses, fast_grads = gspo_steps(
            tiny_model_dir,
            tmp_path / "fast",
            kernels.KernelChoice(kernels.FLA, kernels.TORCH, "test"),
            merge_adapter_for_rollouts=True,
            cache_implementation="static",
            rollout_compile=True,  # refused on a CPU, with its reason: rollouts decode step by step
        )
    finally:
        dispatch.restore_kernels()
    assert calls and not any(calls)  # the no-grad kernel ran, and only without gradients
    for key in ("completions/mean_length", "reward", "reward_std"):  # the same rollouts (step 2 reuses them)
        assert fast_logs[0][key] == logs[0][key], key
    assert logs[0]["reward_std"] > 0 and len(losses) == 2 and losses[1] != 0  # step 2's ratios are not 1
    assert fast_losses == pytest.approx(losses, rel=1e-5, abs=1e-9)
    assert len(grads) == len(fast_grads) == 2 and any(g.abs().max() > 0 for g in grads[1].values())
    for step, fast_step in zip(grads, fast_grads, strict=True):
        for name, grad in step.items():
            assert torch.allclose(fast_step[name], grad, rtol=1e-4, atol=1e-7), name


@pytest.mark.slow
def test_a_compiled_static_cache_decode_gives_the_eager_tokens(tiny_model_dir):
    """The whole fast rollout path under torch.compile (forced on a CPU through transformers' CompileConfig switch,
    without CUDA graphs): LoRA merged, the per-phase kernel dispatch traced by dynamo, a static cache; the same
    greedy tokens as the eager decode, and dynamo really compiled something."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    from medgspo.train import kernel_dispatch as dispatch
    from medgspo.train import kernels

    model = lora_model(tiny_model_dir)
    ids = torch.randint(5, 5000, (2, 9), generator=torch.Generator().manual_seed(5))
    kwargs = {"attention_mask": torch.ones_like(ids), "max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    kwargs["cache_implementation"] = "static"
    config = CompileConfig(mode="default")  # CUDA graphs need CUDA
    config._compile_all_devices = True
    counters.clear()
    try:
        dispatch.install_phase_kernels(model, kernels.KernelChoice(kernels.FLA, kernels.TORCH, "test"))
        with torch.no_grad(), merged_adapter(model):
            eager = model.generate(ids, disable_compile=True, **kwargs)
            assert not counters["stats"]["unique_graphs"]
            compiled = model.generate(ids, disable_compile=False, compile_config=config, **kwargs)
    finally:
        dispatch.restore_kernels()
        torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] > 0
    assert torch.equal(compiled, eager)
