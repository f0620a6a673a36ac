"""What ``medgspo export`` keeps of the base checkpoint unchanged: the weights outside the language model (the hub
checkpoint's multi-token-prediction ``mtp.*`` tensors, which transformers does not load and vLLM uses for
speculative decoding, and the vision tower of the vision-language class) and the base's generation, processor and
chat-template files.

Run by :func:`medgspo.publish.merge.merge_adapter` after ``save_pretrained``: each such tensor is read from the base
safetensors with its own dtype and written into the merged folder byte for byte (a ``--dtype`` cast applies to the
merged language model only); tensors the saved model lacks (``mtp.*``) go into the last shard and its index.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
BASE_FILES = (
    "generation_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
)
TEMPLATE_FILE = "chat_template.jinja"  # the adapter's (training's) template wins; the base's only fills a gap


def is_copied(name: str, language_prefixes: tuple[str, ...], adapted: tuple[str, ...]) -> bool:
    """Whether tensor ``name`` lies outside the language model and outside every module the adapter changed.

    >>> is_copied("mtp.fc.weight", ("model.language_model.", "lm_head."), ())
    True
    >>> is_copied("model.language_model.norm.weight", ("model.language_model.", "lm_head."), ())
    False
    >>> is_copied("model.visual.blocks.0.attn.qkv.weight", ("model.language_model.",), ("model.visual.blocks.0.attn.qkv",))
    False
    """
    if name.startswith(language_prefixes):
        return False
    return not any(name == m or name.startswith(m + ".") for m in adapted)


def group_counts(names) -> dict[str, int]:
    """Tensor names counted by their first two dotted parts (``model.visual``, ``mtp.fc``...), for the record.

    >>> group_counts(["mtp.fc.weight", "mtp.norm.weight", "model.visual.x.weight"])
    {'model.visual': 1, 'mtp.fc': 1, 'mtp.norm': 1}
    """
    return dict(sorted(Counter(".".join(n.split(".")[:2]) for n in names).items()))


def base_files_dir(base: str, base_path: str) -> Path:
    """The local folder holding the base checkpoint's files (a Hub id: its files in the Hub cache)."""
    if Path(base_path).is_dir():
        return Path(base_path)
    from huggingface_hub import snapshot_download

    patterns = ["*.safetensors", "*.json", "*.jinja"]
    return Path(snapshot_download(base, allow_patterns=patterns))


def safetensors_files(folder: Path) -> list[Path]:
    """The folder's weight files, in shard order (the index's, else sorted names)."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [folder / f for f in sorted(set(weight_map.values()))]
    return sorted(folder.glob("*.safetensors"))


def tensor_locations(folder: Path) -> dict[str, Path]:
    """Every tensor name of the folder's safetensors -> the file holding it (headers only, no weights read)."""
    from safetensors import safe_open

    where = {}
    for path in safetensors_files(folder):
        with safe_open(path, framework="pt") as f:
            where.update(dict.fromkeys(f.keys(), path))
    return where


def keep_base_weights(
    base_dir: Path, output: Path, language_prefixes: tuple[str, ...], adapted: tuple[str, ...]
) -> list[str]:
    """Write the base's tensors outside the language model into ``output`` unchanged; return their names."""
    base = tensor_locations(base_dir)
    copied = sorted(n for n in base if is_copied(n, language_prefixes, adapted))
    if not copied:
        return []
    out = tensor_locations(output)
    missing = [n for n in copied if n not in out]
    last = safetensors_files(output)[-1]
    for path in safetensors_files(output):
        names = [n for n in copied if out.get(n) == path] + (missing if path == last else [])
        if names:
            _rewrite_shard(path, {n: _base_tensor(base[n], n) for n in names})
    if missing and (output / INDEX_FILE).is_file():
        index = json.loads((output / INDEX_FILE).read_text(encoding="utf-8"))
        index["weight_map"].update(dict.fromkeys(missing, last.name))
        (output / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("Kept %d base tensors unchanged (%s)", len(copied), ", ".join(group_counts(copied)))
    return copied


def _base_tensor(path: Path, name: str):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return f.get_tensor(name)


def _rewrite_shard(path: Path, replacements: dict) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {"format": "pt"}
        tensors = {n: f.get_tensor(n) for n in f.keys()}
    tensors.update(replacements)
    tmp = path.with_name(path.name + ".tmp")
    save_file({n: t.contiguous() for n, t in tensors.items()}, tmp, metadata=metadata)
    tmp.replace(path)


def copy_base_files(base_dir: Path, output: Path) -> list[str]:
    """Copy the base's generation, processor and chat-template files; return the names copied."""
    copied = []
    for name in BASE_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, output / name)
            copied.append(name)
    if (base_dir / TEMPLATE_FILE).is_file() and not (output / TEMPLATE_FILE).is_file():
        shutil.copy2(base_dir / TEMPLATE_FILE, output / TEMPLATE_FILE)
        copied.append(TEMPLATE_FILE)
    return copied
