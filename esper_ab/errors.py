"""One error hierarchy for the whole project.

Every message names the bad value and says how to fix it. The CLI turns any
``EsperABError`` into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 60, 60, 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 6


def shown(value: object) -> str:
    """``repr(value)``, bounded: error messages never print unbounded input; a numpy
    scalar prints as the plain number it holds (``0``, not ``np.int64(0)``)."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    return _REPR.repr(value)


class EsperABError(Exception):
    """Base class of every error esper-ab raises on purpose."""


class ConfigError(EsperABError, ValueError):
    """A configuration value (strategy parameter, gate setting, YAML field) is invalid."""


class DataError(EsperABError, ValueError):
    """An input table or dataset is missing, malformed or has the wrong types."""


class NotFittedError(EsperABError, RuntimeError):
    """A calibrating strategy was used before ``fit`` was called."""


def bad_value(name: str, value: object, fix: str) -> ConfigError:
    """Build a ConfigError whose message names the value and the fix."""
    return ConfigError(f"{name}={shown(value)} is invalid: {fix}")
