"""A miniature of the ``Qwen/Qwen3.5-4B`` hub checkpoint, built in the test session (random weights, CPU, ~1 s),
and :func:`make_adapter`, a saved LoRA with non-zero weights on any model.

Same class and weight layout as the real one: ``Qwen3_5ForConditionalGeneration`` (``architectures``,
``model_type: qwen3_5``, a ``text_config`` and a ``vision_config``), weights under ``model.language_model.*``,
``model.visual.*`` and a few ``mtp.*`` tensors; 4 text layers (3 gated-DeltaNet, 1 full attention, as the real
3:1 pattern), a one-block vision tower, tied embeddings, and the tiny model's tokenizer with the Qwen3.5 template.
"""

from __future__ import annotations

from pathlib import Path


def build_hub_miniature(output_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Write the miniature (config, safetensors, tokenizer, generation config) to ``output_dir``."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, GenerationConfig, Qwen3_5Config, Qwen3_5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "tie_word_embeddings": True,
        "eos_token_id": im_end,
        "pad_token_id": tokenizer.pad_token_id,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000000,
            "partial_rotary_factor": 0.25,
            "mrope_section": [1, 1, 0],
            "mrope_interleaved": True,
        },
    }
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
    torch.manual_seed(seed)
    config = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True)
    model = Qwen3_5ForConditionalGeneration(config)
    with torch.no_grad():  # a larger final-norm gain, as in the tiny model, so a LoRA can move the logits
        model.model.language_model.norm.weight.fill_(4.0)
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    weights = output_dir / "model.safetensors"
    tensors = load_file(weights)
    assert any(k.startswith("model.language_model.layers.") for k in tensors)
    tensors["mtp.fc.weight"] = torch.randn(64, 128)  # the real checkpoint carries multi-token-prediction weights
    tensors["mtp.norm.weight"] = torch.ones(64)
    save_file(tensors, weights, metadata={"format": "pt"})
    return output_dir


def make_adapter(model, out, targets, seed=0):
    """A LoRA on ``model`` with random, non-zero B matrices, saved to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    peft.save_pretrained(out)
    return peft.eval()
