"""The one error type for bad input: a config field, a flag, a space file, a data path.

`tune-smpl` turns a `ConfigError` into one line on stderr and exit status 2; any other
exception is a programming error and keeps its traceback (exit 1). Both subclass the
built-in they replace, so `except ValueError` (or `TypeError` for a wrong type) still
catches them. This module imports nothing, so every package may raise it.
"""


class ConfigError(ValueError):
    """Bad input: the message names the field, the rule and the value."""


class ConfigTypeError(ConfigError, TypeError):
    """Bad input of the wrong type (a string where a number belongs)."""
