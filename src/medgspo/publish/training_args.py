"""Read the settings a trainer saved in ``training_args.bin`` (``torch.save`` of TRL's config) without running it.

``torch.load(weights_only=False)`` would import and call whatever the pickle names; a model card is often written
from a run folder someone else made, so :func:`read_training_args` never imports or calls anything: every class
the pickle names becomes an inert stand-in that records its arguments and state, and the result is plain data
(a config's fields as a ``dict``, an enum as its value).

    >>> import argparse, http, io, pickle
    >>> saved = pickle.dumps(argparse.Namespace(learning_rate=5e-4, status=http.HTTPStatus.OK), protocol=2)
    >>> plain_data(load_inert(io.BytesIO(saved)))  # nothing of argparse or http was imported or called
    {'learning_rate': 0.0005, 'status': 200}
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "complex": complex}


class _Inert:
    """Stands for an object of a class named in the pickle: its constructor arguments and state, nothing run."""

    qualname = "?"

    def __init__(self, *args: Any) -> None:
        self.args, self.state = args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in SAFE_BUILTINS:
            return SAFE_BUILTINS[name]
        return type(name, (_Inert,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> None:  # a tensor storage: not a setting
        return None


def load_inert(stream) -> Any:
    """Unpickle ``stream`` with every named class replaced by an inert stand-in."""
    return _InertUnpickler(stream).load()


def plain_data(value: Any) -> Any:
    """Stand-ins turned into plain data: a config's state dict, an enum's (or ``torch.device``'s) single argument."""
    if isinstance(value, _Inert):
        if isinstance(value.state, dict):
            return {k: plain_data(v) for k, v in value.state.items() if not k.startswith("_")}
        args = [a for a in value.args if not (isinstance(a, type) and issubclass(a, _Inert))]
        return plain_data(args[0]) if len(args) == 1 else type(value).qualname
    if isinstance(value, type) and issubclass(value, _Inert):
        return value.qualname
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_data(v) for v in value]
    return value


def read_training_args(path: Path) -> dict[str, Any] | None:
    """The fields of the config saved at ``path`` (a ``torch.save`` zip or a plain pickle), or ``None`` when it is
    missing or unreadable (the card then says the settings were not recorded)."""
    if not path.is_file():
        return None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                stream = io.BytesIO(archive.read(name))
        else:
            stream = io.BytesIO(path.read_bytes())
        data = plain_data(load_inert(stream))
    except (OSError, StopIteration, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("Cannot read %s (%s); the card says its settings were not recorded", path, exc)
        return None
    return data if isinstance(data, dict) else None
