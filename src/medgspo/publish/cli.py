"""The ``export`` command: merge (:mod:`medgspo.publish.merge`), write the model card, convert to GGUF, upload.

    medgspo export --adapter runs/default/gspo --output runs/merged                 # merged folder + README.md
    medgspo export --adapter runs/default/gspo --output runs/merged --gguf f16 q8_0 --llama_cpp DIR
    medgspo export --adapter runs/default/gspo --output runs/merged --push_to_hub me/med-gspo
    medgspo export --adapter runs/default/gspo --output runs/gspo-vllm-lora --merge false

Every flag is checked, and the Hub token found, before the merge starts; a user mistake is one ``error:`` line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from medgspo.data.chat_format import FORMAT_FILE
from medgspo.errors import ConfigError
from medgspo.modeling.generation import SamplingOptions
from medgspo.publish import card, hub
from medgspo.publish import gguf as to_gguf
from medgspo.publish.merge import DTYPES, INFO_FILE, merge_adapter
from medgspo.publish.run_files import read_run
from medgspo.utils.cli import Command
from medgspo.utils.io import write_text

logger = logging.getLogger(__name__)


@dataclass
class ExportArguments:
    """What ``export`` merges, where it writes, and what it publishes."""

    adapter: str = field(metadata={"help": "LoRA adapter folder (e.g. the output of `medgspo sft`)."})
    output: str = field(metadata={"help": "Folder to write the merged model to."})
    model: str | None = field(
        default=None,
        metadata={"help": "Base model (folder, Hub id or `tiny`); default: the one recorded in the adapter."},
    )
    dtype: str = field(
        default="auto", metadata={"help": "dtype of the saved weights (auto: the base model's).", "choices": DTYPES}
    )
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty --output folder."})
    merge: bool = field(
        default=True,
        metadata={
            "help": "false: write the adapter (not merged) renamed for the base checkpoint's own class, as "
            "`vllm serve BASE --enable-lora` needs it."
        },
    )
    card: bool = field(default=True, metadata={"help": "Write README.md, the model card, from the run's files."})
    calibration: str | None = field(
        default=None,
        metadata={"help": "calibration.json of `medgspo judge calibrate` (default: one found in the run)."},
    )
    gguf: list[str] = field(
        default_factory=list,
        metadata={"help": f"GGUF files to write with llama.cpp's converter: {', '.join(to_gguf.GGUF_TYPES)}."},
    )
    llama_cpp: str | None = field(
        default=None,
        metadata={"help": f"llama.cpp folder holding {to_gguf.CONVERTER} (default: ${to_gguf.CONVERTER_ENV})."},
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub repository (`you/name`) to upload the exported folder to."}
    )
    private: bool = field(default=False, metadata={"help": "Create the --push_to_hub repository as private."})

    def __post_init__(self) -> None:
        self.gguf = to_gguf.check_types(self.gguf)
        if self.gguf and not self.merge:
            raise ConfigError("--gguf needs the merged model: drop --merge false")
        if self.push_to_hub is not None:
            hub.check_repo_id(self.push_to_hub)
        if self.calibration is not None and not Path(self.calibration).exists():
            raise ConfigError(f"--calibration {self.calibration}: no such file or folder")


def run_export(args: ExportArguments) -> int:
    """``medgspo export``: check, merge, write the card, convert, upload; print the files written."""
    converter = to_gguf.find_converter(args.llama_cpp) if args.gguf else None
    token = hub.hub_token() if args.push_to_hub else None
    try:
        output = merge_adapter(
            args.model, args.adapter, args.output, dtype=args.dtype, overwrite=args.overwrite, merge=args.merge
        )
    except OSError as exc:
        raise ConfigError(f"cannot export to {args.output}: {exc}") from None
    gguf_files = [to_gguf.convert(output, t, converter).name for t in args.gguf] if converter else []
    if gguf_files:
        chat = read_json(output / FORMAT_FILE) or {}
        write_text(output / to_gguf.MODELFILE, to_gguf.modelfile(gguf_files[0], chat, SamplingOptions()))
    if args.card:
        write_model_card(args, output, gguf_files)
    what = "Merged model" if args.merge else "Adapter for vllm serve --enable-lora"
    files = sorted(p.name for p in output.iterdir())
    print(f"{what}: {output}\n  files: {', '.join(files)}\n  {FORMAT_FILE} copied from {args.adapter}")
    if token is not None:
        url = hub.push_folder(output, args.push_to_hub, token, private=args.private)
        print(f"Uploaded to the Hub: {url}")
    return 0


def write_model_card(args: ExportArguments, output: Path, gguf_files: list[str]) -> Path:
    """README.md from the run of ``--adapter``, with what the export itself knows."""
    info = read_json(output / INFO_FILE) or {}
    base = info.get("base_model") or args.model or ""
    config = read_json(output / "config.json") or {}
    facts = card.CardFacts(
        name=args.push_to_hub.split("/")[-1] if args.push_to_hub else output.name,
        base_model=base,
        license=card.base_license(base),
        model_type=config.get("model_type"),
        repo_id=args.push_to_hub,
        gguf_files=gguf_files,
    )
    record = read_run(Path(args.adapter), Path(args.calibration) if args.calibration else None)
    path = card.write_card(output, record, facts)
    logger.info("Model card written to %s", path)
    return path


def read_json(path: Path) -> dict:
    """A JSON object the export wrote, or ``{}``."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


COMMANDS = [
    Command(
        "export",
        (ExportArguments,),
        run_export,
        "Merge a LoRA adapter into its base model and save one standalone folder with its model card "
        "(--gguf: llama.cpp/Ollama files; --push_to_hub: upload).",
    ),
]
