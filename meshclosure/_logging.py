"""Logging for the command line: one handler on the ``meshclosure`` logger, for one command.

Library modules log to loggers named after themselves
(``logging.getLogger("meshclosure.data.generate")``) and never configure
handlers: a program that imports meshclosure decides where its messages go.
The ``meshclosure`` command does decide, for the duration of one command, with
:func:`cli_logging`:

=============  =========  ===============================================
flag           level      what reaches stderr
=============  =========  ===============================================
``--quiet``    WARNING    warnings and errors only (progress bars off too)
(none)         INFO       plus one-line summaries ("wrote x.nc: ...")
``--verbose``  DEBUG      plus debug lines (with the logger's name) and
                          the traceback of an error
=============  =========  ===============================================

Python warnings raised inside meshclosure during the command are logged as
one ``meshclosure CMD: warning: ...`` line instead of Python's two-line
``file:line: UserWarning`` form; warnings from other packages keep theirs.

Examples
--------
>>> import io, logging
>>> stream = io.StringIO()
>>> with cli_logging("generate", logging.INFO, stream):
...     logging.getLogger("meshclosure.data.generate").info("wrote x.nc")
...     logging.getLogger("meshclosure.data.generate").debug("not shown")
...     logging.getLogger("meshclosure.io").warning("replaced nothing")
>>> print(stream.getvalue(), end="")
wrote x.nc
meshclosure generate: warning: replaced nothing
>>> with cli_logging("generate", "loud", stream):
...     pass
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: level='loud': must be a logging level (an int such as logging.INFO); pass logging.WARNING, logging.INFO or logging.DEBUG.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from typing import IO, Callable, Iterator, Optional

from .errors import ArgumentError

__all__ = ["cli_logging", "LOGGER_NAME"]

LOGGER_NAME = "meshclosure"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _CliFormatter(logging.Formatter):
    """INFO: the bare message; WARNING and above: ``meshclosure CMD: warning: ...``;
    DEBUG: the message with the logger's name."""

    def __init__(self, command: str, spell: Optional[Callable[[str], str]] = None) -> None:
        super().__init__()
        self.command = command
        self.spell = spell or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        message = self.spell(record.getMessage())
        if record.exc_info and record.levelno >= logging.WARNING:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"meshclosure {self.command}: {record.levelname.lower()}: {message}"
        if record.levelno < logging.INFO:
            return f"[{record.name}] {message}"
        return message


@contextmanager
def cli_logging(command: str, level: int, stream: Optional[IO[str]] = None,
                spell: Optional[Callable[[str], str]] = None) -> Iterator[logging.Logger]:
    """Send the ``meshclosure`` loggers at ``level`` and above to ``stream`` while the block runs.

    Parameters
    ----------
    command : str
        The subcommand, named in warning lines (``meshclosure generate: warning: ...``).
    level : int
        ``logging.WARNING`` (``--quiet``), ``logging.INFO`` (default) or
        ``logging.DEBUG`` (``--verbose``).
    stream : text stream, optional
        Default ``sys.stderr`` as it is when the block starts (so pytest's
        capture sees it).
    spell : callable str -> str, optional
        Re-spells each message (Python parameters as command-line flags).

    Yields
    ------
    logging.Logger
        The ``meshclosure`` logger. On exit its handler, level and
        propagation are restored, so a program calling ``main`` twice (or a
        test) does not collect handlers.
    """
    if isinstance(level, bool) or not isinstance(level, int):
        raise ArgumentError("level", level, "must be a logging level (an int such as "
                            "logging.INFO)", "pass logging.WARNING, logging.INFO or logging.DEBUG")
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_CliFormatter(command, spell))
    handler.setLevel(level)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False       # the command owns the output; no second copy via root
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
            logger.warning("%s", message)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield logger
    finally:
        warnings.showwarning = shown
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
