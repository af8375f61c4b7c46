"""Exceptions for user mistakes.

Anything derived from `UserError` is the user's to fix (a bad path, an unknown env, a typo'd key):
the CLI prints its message as one line and exits with code 2. Every other exception is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for."""


class ConfigError(UserError, ValueError):
    """A YAML card or config that does not match its dataclass."""


class EnvError(UserError):
    """An environment that cannot be found or built (unknown id, missing package)."""


class DatasetError(UserError):
    """A replay dataset that is missing, corrupt, or not what the caller needs."""
