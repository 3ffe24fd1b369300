"""User-facing errors and warnings: one line, naming the file/row/key and what to do."""

from __future__ import annotations

import warnings


class UserError(Exception):
    """Bad input from the user. The CLI prints it as one line on stderr and exits non-zero.

    Raise it *before* anything is written: callers rely on "error => nothing changed".
    """

    def __init__(self, message: str) -> None:
        # Keep it to one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class WiscWarning(UserWarning):
    """Something the user should know but that does not stop the run (clipped times, dropped files)."""


def warn(message: str) -> None:
    warnings.warn(" ".join(message.split()), WiscWarning, stacklevel=2)
