"""User-facing errors: one line naming what is wrong and what is allowed."""

from __future__ import annotations

from typing import Any


class DiffsearchError(ValueError):
    """A bad input from the user (unknown name, invalid schedule, bad budget).

    The CLI prints the message as one line and exits with status 2; the Python API raises it.
    """


def validation_message(error: Any) -> str:
    """One line of a pydantic ``ValidationError``: the first failing field and what is allowed."""
    first = error.errors()[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
