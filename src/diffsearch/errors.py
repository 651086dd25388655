"""User-facing errors: one line naming what is wrong and what is allowed."""

from __future__ import annotations


class DiffsearchError(ValueError):
    """A bad input from the user (unknown name, invalid schedule, bad budget).

    The CLI prints the message as one line and exits with status 2; the Python API raises it.
    """
