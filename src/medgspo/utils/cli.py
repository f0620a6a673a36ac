"""How every ``medgspo`` command reads its flags: dataclasses parsed by TRL's ``TrlParser``.

A flag is a dataclass field, spelled ``--foo_bar`` or ``--foo-bar``; ``--config FILE.yaml`` sets any field from a
recipe and the command line overrides it. A command module offers ``make_parser(prog)`` (or ``ARGUMENTS``, a tuple
of dataclasses) and ``run(*parsed) -> int``; :func:`parse` turns a rejected value into a
:class:`~medgspo.errors.ConfigError` naming the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgspo.errors import ConfigError


def make_parser(
    dataclass_types: Sequence[type],
    prog: str,
    description: str | None = None,
    positionals: Sequence[tuple[str, dict[str, Any]]] = (),
):
    """A ``TrlParser`` over ``dataclass_types``; ``positionals`` are ``(name, add_argument kwargs)`` pairs."""
    from trl import TrlParser

    parser = TrlParser(tuple(dataclass_types), prog=prog, description=description)
    for name, kwargs in positionals:
        parser.add_argument(name, **kwargs)
    parser.add_argument(  # TrlParser reads and removes it before parsing; SUPPRESS keeps it out of the namespace
        "--config", metavar="FILE.yaml", default=argparse.SUPPRESS, help="Recipe whose keys set any flag."
    )
    return parser


def has_config(argv: Sequence[str]) -> bool:
    """Whether the user named a recipe."""
    return any(a == "--config" or a.startswith("--config=") for a in argv)


def with_default_config(argv: Sequence[str], recipe: Path | None) -> list[str]:
    """``argv`` with ``--config recipe`` first unless the user gave a recipe (``--config=FILE`` is split)."""
    out = []
    for arg in argv:
        out += arg.split("=", 1) if arg.startswith("--config=") else [arg]
    if recipe is None or has_config(out):
        return out
    return ["--config", str(recipe), *out]


def parse(parser: Any, argv: Sequence[str], default_config: Path | None = None) -> tuple:
    """The dataclass instances (and, with positionals, a namespace last) for ``argv``."""
    argv = with_default_config(argv, default_config)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file")
        if not Path(argv[index + 1]).is_file():
            raise ConfigError(f"--config {argv[index + 1]}: no such file")
    try:
        return tuple(parser.parse_args_and_config(argv))
    except ValueError as err:  # dataclass __post_init__ checks (transformers, TRL, ours) reject a flag value
        raise ConfigError(str(err).strip().splitlines()[0]) from None


@dataclass(frozen=True)
class Command:
    """One ``medgspo`` sub-command: its flags (dataclasses, plus positionals) and what runs them.

    ``run`` receives the parsed dataclass instances in ``arguments`` order (and the positionals' namespace last when
    there are any) and returns the exit code. A command with ``own_parsing`` gets its raw ``argv`` instead (the
    pipeline routes ``--sft.*``/``--gspo.*`` flags to its stages before parsing).
    """

    name: str
    arguments: tuple[type, ...]
    run: Callable[..., int]
    description: str = ""
    positionals: tuple[tuple[str, dict[str, Any]], ...] = ()
    default_config: Path | None = None
    own_parsing: bool = False

    def parser(self):
        return make_parser(self.arguments, f"medgspo {self.name}", self.description, self.positionals)

    def __call__(self, argv: Sequence[str]) -> int:
        if self.own_parsing and not {"-h", "--help"} & set(argv):
            return self.run(list(argv))
        argv = merge_repeated(argv, list_fields(self.arguments))
        return self.run(*parse(self.parser(), argv, self.default_config))


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str], prog: str = "medgspo") -> tuple:
    """``make_parser`` + ``parse`` in one call (tests, notebooks, the pipeline's stages)."""
    return parse(make_parser(dataclass_types, prog), argv)


def merge_repeated(argv: Sequence[str], flags: Iterable[str]) -> list[str]:
    """``argv`` with every repeat of a list-valued flag folded into its first occurrence, so that
    ``--adapter none --adapter runs/sft`` means ``--adapter none runs/sft`` (argparse would keep only the last).
    ``flags`` are field names; ``--foo_bar``, ``--foo-bar`` and ``--foo_bar=value`` are all recognised.

    >>> merge_repeated(["--adapter", "none", "--limit", "2", "--adapter=runs/sft", "--model", "tiny"], ["adapter"])
    ['--adapter', 'none', 'runs/sft', '--limit', '2', '--model', 'tiny']
    >>> merge_repeated(["--max-new-tokens", "8", "--adapter", "a", "b", "--adapter", "-"], ["adapter"])
    ['--max-new-tokens', '8', '--adapter', 'a', 'b', '-']
    """
    wanted = set(flags)
    out: list[str | list[str]] = []  # a list entry holds one flag's values; later repeats extend it in place
    merged: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        name, eq, inline = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        i += 1
        if key not in wanted:
            out.append(arg)
            continue
        values = [inline] if eq else []
        while not eq and i < len(argv) and not _is_flag(argv[i]):
            values.append(argv[i])
            i += 1
        if key in merged:
            merged[key] += values
        else:
            merged[key] = values
            out += [f"--{name}", values]
    return [arg for item in out for arg in (item if isinstance(item, list) else [item])]


def list_fields(dataclass_types: Sequence[type]) -> list[str]:
    """Names of the list-valued fields (flags that take several values)."""
    import dataclasses

    return [f.name for d in dataclass_types for f in dataclasses.fields(d) if "list[" in str(f.type)]


def _is_flag(arg: str) -> bool:
    """``--x``/``-x`` but not a lone ``-`` (a value: no adapter) or a negative number."""
    return arg.startswith("-") and len(arg) > 1 and not arg[1:].replace(".", "", 1).isdigit()


def json_object(text: str, flag: str) -> dict[str, Any]:
    """A flag given as a JSON object (``--judge_extra_body '{"top_k": 1}'``); ``ConfigError`` naming the flag.

    >>> json_object('{"enable_thinking": false}', "--x")
    {'enable_thinking': False}
    """
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object (got {text!r})")
    return value
