"""KERNELHOOK_* settings from the environment, read where they are used, never at import time.

A malformed value is a SettingError that names the variable, the value and the
form it takes, raised by the call that needs it: importing a module never fails
on a setting, and no bare ValueError from ``int()`` reaches the user. An unset
or empty variable means the default.

    whole_number("KERNELHOOK_RETRIES", 3)                  # 0, 1, 2, ...
    seconds("KERNELHOOK_RETRY_BACKOFF_S", 0.5)             # a plain number of seconds, no unit
    byte_count("KERNELHOOK_MAX_FILE_BYTES", 64 * 1024**3)  # a plain number of bytes, no unit
    parsed("KERNELHOOK_SYSTEM", None, SystemInfo.parse, ...)  # any parser that raises ValueError
"""

from __future__ import annotations

import math
import os
from typing import Callable, TypeVar

from .errors import SettingError

T = TypeVar("T")


def whole_number(name: str, default: int, example: str = "3") -> int:
    """The variable as a whole number >= 0.

    Returns:
        Its value, or ``default`` when it is unset or empty.

    Raises:
        SettingError: it is set to anything else (a word, a sign, a fraction, a unit).
    """
    return parsed(name, default, _whole_number, "a whole number >= 0", example)


def seconds(name: str, default: float, example: str = "30") -> float:
    """The variable as a number of seconds >= 0 (``0.5``, ``300``; no unit).

    Returns:
        Its value, or ``default`` when it is unset or empty.

    Raises:
        SettingError: it is set to anything else (``5m``, ``-1``, ``nan``).
    """
    return parsed(name, default, _seconds, "a number of seconds >= 0 (no unit)", example)


def byte_count(name: str, default: int, example: str = str(64 * 1024**3)) -> int:
    """The variable as a number of bytes (a whole number >= 0; no unit).

    Returns:
        Its value, or ``default`` when it is unset or empty.

    Raises:
        SettingError: it is set to anything else (``64GiB``, ``1e9``).
    """
    return parsed(name, default, _whole_number, "a whole number of bytes (no unit)", example)


def parsed(name: str, default: T, parse: Callable[[str], T], expected: str, example: str,
           unset: str | None = None) -> T:
    """The variable read by ``parse``, which raises ValueError (its message, if any, says why) on bad text.

    Args:
        name: the environment variable.
        default: what an unset or empty variable means.
        parse: text (stripped) -> value.
        expected: the form it takes, for the message ("a whole number >= 0").
        example: a good value, for the message.
        unset: what unsetting it does, for the message (default: "the default, {default}").

    Returns:
        The parsed value, or ``default``.

    Raises:
        SettingError: ``parse`` refused the value.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        reason = f" ({exc})" if str(exc) else ""
    shown = int(default) if isinstance(default, float) and default.is_integer() else default
    after_unset = unset or f"the default, {shown}"
    raise SettingError(
        f"{name}={raw!r} is not {expected}{reason}; e.g. {name}={example}. "
        f"Fix: set it in that form, or unset it for {after_unset}."
    )


def _whole_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError from None  # float()'s own words name neither the variable nor the form
    if not math.isfinite(value) or value < 0:
        raise ValueError
    return value
