"""The embedded default model: a tiny, randomly initialised Qwen3.5-architecture causal LM.

It has the real ``Qwen3_5ForCausalLM`` architecture (gated-DeltaNet linear-attention layers *and* full-attention
layers), a byte-level BPE tokenizer trained on the bundled corpus with Qwen's special tokens, and the Qwen3.5
chat template (with ``enable_thinking``). It is saved as an ordinary Hugging Face model folder, so every command
loads it with ``--model PATH`` exactly as it would load ``Qwen/Qwen3.5-4B``.

Run: ``medgspo tiny-model --output runs/tiny-qwen3.5``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from medgspo.utils.paths import RESOURCES

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"  # `--model_name_or_path tiny` builds (once) and uses the embedded tiny model
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]  # added, not special: they survive `skip_special_tokens=True`, as in Qwen
CHAT_TEMPLATE_FILE = RESOURCES / "qwen3_5_chat_template.jinja"
DEFAULT_TINY_DIR = Path("runs") / "tiny-qwen3.5"


@dataclass
class TinySpec:
    """Sizes of the tiny model; the defaults give ~1.5M parameters with a 6k vocabulary."""

    vocab_size: int = 6000
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    full_attention_interval: int = 2  # layers: linear, full, linear, full
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    linear_num_key_heads: int = 2
    linear_num_value_heads: int = 4
    linear_key_head_dim: int = 32
    linear_value_head_dim: int = 32
    max_position_embeddings: int = 4096
    final_norm_gain: float = 5.0
    seed: int = 0


def corpus_texts(records: Iterable[dict]) -> Iterable[str]:
    """Every text field of the records (the tokenizer's training corpus)."""
    for rec in records:
        for key in ("Question", "Complex_CoT", "Response", "question", "explanation"):
            if isinstance(rec.get(key), str):
                yield rec[key]
        if isinstance(rec.get("options"), dict):
            yield from (str(v) for v in rec["options"].values())


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A Qwen3.5 tokenizer (same pre-tokenizer, byte-level BPE) whose merges are learned from ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX, Qwen3_5Tokenizer

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + THINK_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen3_5Tokenizer(
        vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.add_tokens(THINK_TOKENS, special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")
    tokenizer.model_max_length = 4096
    return tokenizer


def build_model(tokenizer, spec: TinySpec):
    """A randomly initialised ``Qwen3_5ForCausalLM`` sized by ``spec`` for ``tokenizer``."""
    import torch
    from transformers import GenerationConfig, Qwen3_5ForCausalLM, Qwen3_5TextConfig

    torch.manual_seed(spec.seed)
    sizes = {k: v for k, v in asdict(spec).items() if k not in ("vocab_size", "seed", "final_norm_gain")}
    config = Qwen3_5TextConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        bos_token_id=None,
        **sizes,
    )
    model = Qwen3_5ForCausalLM(config)
    # Tied embeddings drawn with std 0.02 cap the logits near +-2.5 after the unit-gain final norm, so a LoRA on the
    # frozen random body could never make a confident prediction. A pretrained model's final-norm gain is several
    # times larger; start the tiny one at `final_norm_gain` (Qwen3.5's RMSNorm scales by 1 + weight).
    with torch.no_grad():
        model.model.norm.weight.fill_(spec.final_norm_gain - 1.0)
    ends = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config = GenerationConfig(
        eos_token_id=ends, pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.0, top_p=0.95, top_k=20
    )
    return model


def create_tiny_model(output_dir: str | Path, records: list[dict] | None = None, spec: TinySpec | None = None) -> Path:
    """Train the tokenizer, build the model and save both as a Hugging Face model folder."""
    from medgspo.data.records import BUNDLED_MCQ, load_records

    spec = spec or TinySpec()
    if records is None:
        records = load_records().records
        if BUNDLED_MCQ.is_file():
            records = records + [json.loads(line) for line in BUNDLED_MCQ.read_text(encoding="utf-8").splitlines()]
    output_dir = Path(output_dir)
    tokenizer = train_tokenizer(corpus_texts(records), spec.vocab_size)
    model = build_model(tokenizer, spec)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "Tiny Qwen3.5 model (%.2fM parameters, vocab %d) saved to %s", n_params / 1e6, len(tokenizer), output_dir
    )
    return output_dir


def ensure_tiny_model(path: str | Path = DEFAULT_TINY_DIR) -> Path:
    """Build the tiny model at ``path`` unless a model folder is already there."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        return path
    logger.info("Building the tiny default model in %s (first use)", path)
    return create_tiny_model(path)


def resolve_model_path(name_or_path: str | None) -> str:
    """``tiny`` (or nothing) means the embedded tiny model, built on first use; anything else is returned as is."""
    if name_or_path in (None, "", TINY_MODEL):
        return str(ensure_tiny_model())
    return name_or_path
