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
