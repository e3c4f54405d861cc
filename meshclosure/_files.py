"""Atomic file writes: a reader never sees a half-written file, and a failed
write leaves an existing file untouched."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "check_folder", "refuse_existing"]


def check_folder(path: str | os.PathLike, name: str = "path") -> Path:
    """The folder of file ``path``; FileNotFoundError/PermissionError (naming the
    argument ``name``) unless it exists and is writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}={str(path)!r}: the folder {str(folder)!r} does not "
                                "exist; create it first (mkdir -p) or choose another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}={str(path)!r}: the folder {str(folder)!r} is not "
                              "writable; choose a folder you can write to.")
    return folder


def refuse_existing(path: str | os.PathLike, overwrite: bool, name: str = "path",
                    flag: str = "overwrite=True") -> Path:
    """``path``, after raising :class:`~meshclosure.errors.OutputExistsError` if it exists and
    ``overwrite`` is False; ``name`` and ``flag`` spell the argument and the way to overwrite.

    >>> refuse_existing(__file__, overwrite=False, name="out")
    Traceback (most recent call last):
    ...
    meshclosure.errors.OutputExistsError: out=...: the file exists and was left untouched; pass overwrite=True to replace it, or choose another path.
    """
    from .errors import OutputExistsError

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{name}={str(path)!r}: the file exists and was left untouched; "
                                f"pass {flag} to replace it, or choose another path.")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file name next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    folder = check_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; use the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
