"""GGUF for llama.cpp, Ollama and LM Studio: the merged folder converted by llama.cpp's own converter, and an
Ollama ``Modelfile`` whose template and stop tokens are our chat format's.

    medgspo export --adapter runs/default/gspo --output runs/merged --gguf f16 q8_0 --llama_cpp DIR

The converter is llama.cpp's ``convert_hf_to_gguf.py`` (with its ``conversion/`` and ``gguf-py/`` beside it), run
as its own process from ``--llama_cpp DIR`` or ``$LLAMA_CPP_DIR``: a llama.cpp checkout, or the copy inside the
``llama-cpp-python`` sdist that ``scripts/get_llama_cpp.sh`` unpacks. Read 2026-12-07 in
llama-cpp-python 0.3.36's vendored llama.cpp: it registers ``Qwen3_5ForConditionalGeneration`` and
``Qwen3_5ForCausalLM`` (architecture ``qwen35``), recognises the Qwen3.5 tokenizer by its pre-tokenizer hash,
offers ``--outtype f32 f16 bf16 q8_0`` (``tq1_0``/``tq2_0`` are for ternary models), writes the hub checkpoint's
``mtp.*`` weights as next-token-prediction layers and needs ``--no-mtp`` for a folder without them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from medgspo.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_ENV = "LLAMA_CPP_DIR"
MODELFILE = "Modelfile"
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def check_types(types: list[str]) -> list[str]:
    """The requested GGUF types, lower-cased; an unknown one names the choices.

    >>> check_types(["F16", "q8_0"])
    ['f16', 'q8_0']
    """
    wanted = [t.lower() for t in types]
    for t in wanted:
        if t not in GGUF_TYPES:
            raise ConfigError(f"--gguf {t}: choose from {', '.join(GGUF_TYPES)}")
    return wanted


def find_converter(llama_cpp: str | None) -> Path:
    """``convert_hf_to_gguf.py`` in ``--llama_cpp`` (or ``$LLAMA_CPP_DIR``); a one-line error says how to get it."""
    folder = llama_cpp or os.environ.get(CONVERTER_ENV)
    if not folder:
        raise ConfigError(
            f"--gguf needs llama.cpp's converter: pass --llama_cpp DIR or set ${CONVERTER_ENV} "
            "(a llama.cpp checkout; scripts/get_llama_cpp.sh unpacks one)"
        )
    script = Path(folder).expanduser() / CONVERTER
    if not script.is_file():
        raise ConfigError(f"--llama_cpp {folder}: no {CONVERTER} there (a llama.cpp checkout holds it)")
    return script


def gguf_name(folder: Path, outtype: str) -> str:
    """``merged`` + ``q8_0`` -> ``merged-q8_0.gguf``."""
    return f"{folder.name}-{outtype}.gguf"


def has_mtp(folder: Path) -> bool:
    """Whether the folder's weights carry the multi-token-prediction block (``mtp.*``)."""
    from medgspo.publish.base_weights import tensor_locations

    return any(name.startswith("mtp.") for name in tensor_locations(folder))


def convert(folder: Path, outtype: str, converter: Path) -> Path:
    """Convert the merged ``folder`` into ``folder/<name>-<outtype>.gguf`` with llama.cpp's converter."""
    out = folder / gguf_name(folder, outtype)
    command = [sys.executable, str(converter), str(folder), "--outfile", str(out), "--outtype", outtype]
    if not has_mtp(folder):
        command.append("--no-mtp")
    logger.info("GGUF %s: %s", outtype, " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ModelLoadError(f"llama.cpp's converter failed on {folder}: {lines[-1] if lines else done.returncode}")
    return out


def ollama_template(enable_thinking: bool) -> str:
    """Our chat format as an Ollama (Go) template: system, every turn, then the assistant's opening (``<think>\\n``,
    or an empty thinking block when thinking is hidden), as the tokenizer's chat template renders it."""
    opening = "<think>\n" if enable_thinking else "<think>\n\n</think>\n\n"
    return (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
        f"<|im_start|>assistant\n{opening}"
    )


def modelfile(gguf_file: str, chat_format: dict, sampling) -> str:
    """An Ollama ``Modelfile`` for ``gguf_file``: template, stop tokens, system prompt and sampling defaults."""
    lines = [f"FROM ./{gguf_file}", f'TEMPLATE """{ollama_template(chat_format.get("enable_thinking", True))}"""']
    if chat_format.get("system_prompt"):
        lines.append(f'SYSTEM """{chat_format["system_prompt"]}"""')
    lines += [f'PARAMETER stop "{token}"' for token in STOP_TOKENS]
    lines += [
        f"PARAMETER temperature {sampling.temperature}",
        f"PARAMETER top_p {sampling.top_p}",
        f"PARAMETER top_k {sampling.top_k}",
    ]
    return "\n".join(lines) + "\n"
