"""Safe files: every file diffsearch writes goes to a temporary file in the same folder, is
flushed to disk, then renamed over the target (POSIX rename is atomic), so a crash or a full
disk leaves either the old file or the new one, never a truncated mix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from diffsearch.errors import DiffsearchError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    For writers that want a file name (``savefig``, ``safetensors.save_file``, ``np.savez``).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as temporary:
        ...     _ = temporary.write_text("whole")
        >>> target.read_text()
        'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (temporary file + rename)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (temporary file + rename)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_output_file(path: str | Path, option: str = "--out", create_folder: bool = False) -> Path:
    """Pre-flight check of a file the run will write: not a folder, its folder exists (or is
    created when ``create_folder``) and is writable. Raises DiffsearchError naming the problem."""
    path = Path(path)
    if path.is_dir():
        raise DiffsearchError(f"{option} {path}: is a folder; give a file name (e.g. {path / 'best.json'})")
    folder = path.parent
    if not folder.is_dir():
        if not create_folder:
            raise DiffsearchError(f"{option} {path}: the folder {folder} does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DiffsearchError(f"{option} {path}: cannot create the folder {folder} ({error.strerror})") from None
    check_writable_folder(folder, option)
    return path


def check_writable_folder(folder: str | Path, option: str) -> Path:
    """Raise DiffsearchError unless a file can be created in ``folder`` (tried, then removed)."""
    folder = Path(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".diffsearch-write-check-"):
            pass
    except OSError as error:
        raise DiffsearchError(f"{option}: cannot write in {folder} ({error.strerror or error})") from None
    return folder
