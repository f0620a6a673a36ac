"""The errors a user can fix. ``medgspo``'s entry point turns each into one ``error: ...`` line and exit code 2.

Every stage raises these (or a subclass) for bad input, bad flags and models that cannot be loaded; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; the message says what to change (a flag, a file and line, a path)."""


class ConfigError(UserError):
    """A configuration value the user must change; the message names the flag."""


class ModelLoadError(UserError):
    """The model or adapter the user named cannot be found or loaded."""


class AdapterMismatchError(ModelLoadError):
    """A LoRA adapter whose weights name modules the base model does not have (it would load as a no-op)."""
