"""The error classes of meshclosure: one root, and one argument error that the CLI can re-spell.

Every error meshclosure raises on purpose derives from :class:`MeshclosureError`,
so ``except MeshclosureError`` catches them all; each also derives from the
built-in class callers already expect (``ValueError`` for bad values,
``FloatingPointError`` for a blow-up, ...), so existing ``except ValueError``
code keeps working.

:class:`ArgumentError` carries the four parts of a good message separately
(argument, value, rule, fix), so the command line can name its flag
(``--samples``) where the library names its parameter (``n_samples``).

Examples
--------
>>> err = ArgumentError("n_samples", 2, "must be an integer >= 3", "ask for 3 or more samples")
>>> print(err)
n_samples=2: must be an integer >= 3; ask for 3 or more samples.
>>> print(err.renamed({"n_samples": "--samples"}))
--samples 2: must be an integer >= 3; ask for 3 or more samples.
>>> raise err
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: n_samples=2: must be an integer >= 3; ask for 3 or more samples.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["MeshclosureError", "ArgumentError", "ArgumentTypeError", "OutputExistsError"]


class MeshclosureError(Exception):
    """Root of every error meshclosure raises on purpose."""


class ArgumentError(MeshclosureError, ValueError):
    """A bad argument: names the argument, the value received, the rule and the fix.

    Parameters
    ----------
    argument : str
        The parameter's name as the caller spelled it (``"n_samples"``).
    value : Any
        The value received (shown with ``repr``).
    rule : str
        What the value must satisfy (``"must be an integer >= 3"``).
    fix : str
        What to do instead; may name other arguments with ``{name}``
        placeholders, which :meth:`renamed` re-spells as well. A literal brace
        is written doubled, ``{{`` / ``}}``, as in :meth:`str.format`.

    Examples
    --------
    >>> print(ArgumentError("spec", "x", "must be a mapping", "pass {{'n': 3}} or set {n_cells}"))
    spec='x': must be a mapping; pass {'n': 3} or set n_cells.
    >>> print(ArgumentError("spec", "x", "must be a mapping", "pass {{'n': 3}} or set {n_cells}")
    ...       .renamed({"n_cells": "--cells"}))
    spec='x': must be a mapping; pass {'n': 3} or set --cells.
    """

    def __init__(self, argument: str, value: Any, rule: str, fix: str = "",
                 names: Mapping[str, str] | None = None) -> None:
        self.argument, self.value, self.rule, self.fix = argument, value, rule, fix
        self.names = dict(names or {})
        super().__init__(self._message())

    def _spell(self, name: str) -> str:
        return self.names.get(name, name)

    def _placeholder(self, match: "re.Match[str]") -> str:
        """``{{`` -> ``{``, ``}}`` -> ``}``, ``{name}`` -> the name as spelled (a lone brace is dropped)."""
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        if text in ("{", "}"):
            return ""
        return self._spell(match.group(1))

    def _message(self) -> str:
        name = self._spell(self.argument)
        head = f"{name} {self.value!r}" if name.startswith("-") else f"{name}={self.value!r}"
        fix = re.sub(r"\{\{|\}\}|\{([^{}]*)\}|[{}]", self._placeholder, self.fix)
        return f"{head}: {self.rule}" + (f"; {fix}" if fix else "") + "."

    def renamed(self, names: Mapping[str, str]) -> "ArgumentError":
        """The same error with argument names spelled as ``names`` says (e.g. as CLI flags)."""
        return type(self)(self.argument, self.value, self.rule, self.fix,
                          {**self.names, **names})


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong kind (dtype, type, device): names the argument, what was
    received, the rule and the fix; caught by ``except TypeError`` and ``except ValueError``.

    Examples
    --------
    >>> err = ArgumentTypeError("q", "int64 tensor", "must be a floating-point tensor",
    ...                         "convert it with q.double()")
    >>> isinstance(err, TypeError) and isinstance(err, ValueError)
    True
    """


class OutputExistsError(MeshclosureError, FileExistsError):
    """An output file exists and the caller did not ask to overwrite it (it is left untouched)."""
