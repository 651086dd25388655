"""Progress of a search on stderr: a rich bar on a terminal, timestamped log lines otherwise.

Lower layers only call ``logging.getLogger(__name__).info(...)`` (a phase starting, how far it is);
``log_lines`` routes the ``diffsearch`` logger to stderr for the length of a command, above the
bar when there is one. Nothing here writes to stdout, so ``search run ... > out`` keeps the
summary alone in ``out``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

LOGGER = "diffsearch"
DETAIL = 120  # from this width the bar also shows the evaluation counts (and the study name when it fits)
_active: dict[str, Any] = {}


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


class _LineHandler(logging.Handler):
    """Log records as lines on the shared stderr console (timestamped when it is not a terminal)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.console.is_terminal:
            self.console.print(message, markup=False, highlight=False)
        else:
            self.console.file.write(f"{timestamp()} {message}\n")
            self.console.file.flush()


class log_lines:
    """While active, ``diffsearch`` log records go to stderr (``enabled=False``: nowhere)."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled, self.console, self.handler = enabled, console, None

    def __enter__(self) -> log_lines:
        if self.enabled:
            from rich.console import Console

            self.console = self.console or Console(stderr=True)
            self.handler = _LineHandler(self.console)
            logger = logging.getLogger(LOGGER)
            self.previous = logger.level, logger.propagate
            logger.addHandler(self.handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            _active["console"] = self.console
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handler is not None:
            logger = logging.getLogger(LOGGER)
            logger.removeHandler(self.handler)
            logger.level, logger.propagate = self.previous
            _active.pop("console", None)


def best_text(metric: str, best: float | None) -> str:
    """``best fid 0.1283``, or ``best fid -`` before the first finite value."""
    return f"best {metric} " + ("-" if best is None or not math.isfinite(best) else f"{best:.4g}")


def bar_columns(width: int, name: str = "") -> list[Any]:
    """Columns of the search bar: count, best value and ETA always; the evaluation counts from ``DETAIL``
    columns; the study ``name`` when it fits too (otherwise the study's first log line named it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Column

    def fixed() -> Column:
        return Column(no_wrap=True)

    named = width >= DETAIL + len(name) + 8
    columns = [TextColumn(f"search {name}" if named else "search", table_column=fixed()), BarColumn(bar_width=12),
               MofNCompleteColumn(table_column=fixed()), TextColumn("{task.fields[best]}", table_column=fixed()),
               TimeElapsedColumn(table_column=fixed()), TextColumn("eta", table_column=fixed()), TimeRemainingColumn(table_column=fixed())]
    if width >= DETAIL:
        columns.append(TextColumn("{task.fields[detail]}", table_column=fixed()))
    return columns


class SearchProgress:
    """Expensive evaluations out of ``total`` with the best value: a bar on a terminal, else a line every ``every``."""

    def __init__(self, name: str, total: int, metric: str, enabled: bool = True, every: int = 10) -> None:
        self.name, self.total, self.metric, self.enabled, self.every = name, total, metric, enabled, every
        self.bar, self.task, self.console, self.logged, self.started = None, None, None, None, (time.monotonic(), 0)

    def __enter__(self) -> SearchProgress:
        if not self.enabled:
            return self
        from rich.console import Console

        self.console = _active.get("console") or Console(stderr=True)
        logging.getLogger(__name__).info(f"search {self.name}: {self.total} expensive evaluations of {self.metric}")
        if self.console.is_terminal:
            from rich.progress import Progress

            self.bar = Progress(*bar_columns(self.console.width, self.name), console=self.console)
            self.task = self.bar.add_task(self.name, total=self.total, best=best_text(self.metric, None), detail="")
            self.bar.start()
        return self

    def update(self, completed: int, best: float | None, detail: str = "") -> None:
        """Show ``completed`` evaluations and the best value (a log line every ``every`` without a terminal)."""
        if not self.enabled:
            return
        if self.logged is None:
            self.started, self.logged = (time.monotonic(), completed), completed
        if self.bar is not None:
            self.bar.update(self.task, completed=min(completed, self.total), best=best_text(self.metric, best), detail=detail)
        elif completed - self.logged >= self.every or (completed >= self.total and completed != self.logged):
            self.logged = completed
            logging.getLogger(__name__).info(f"search {completed}/{self.total} {best_text(self.metric, best)} "
                                             f"elapsed {_clock(time.monotonic() - self.started[0])} eta {self._eta(completed)} {detail}".rstrip())

    def _eta(self, completed: int) -> str:
        done = completed - self.started[1]
        if done <= 0:
            return "-"
        return _clock((time.monotonic() - self.started[0]) / done * max(self.total - completed, 0))

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
