"""Operator versions: which stencils the finite-volume operators use (DESIGN.md §6).

A closure's targets are defined with exactly the resolved operator the coarse
model computes online (``Φ^res_coarse``), and its inputs with exactly the
cell gradients the features compute. Changing a stencil changes both, so
every dataset and checkpoint records the operator version it was made with,
and :func:`meshclosure.data.coarse_model` / :func:`meshclosure.nn.load_model`
refuse to mix versions. Old versions stay selectable by name
(``operators="fv1"`` on every operator, model and scenario), so data made
with them can still be replayed.

========  =======================================================================
version   what it is
========  =======================================================================
``fv1``   Least-squares cell gradient over the **face** neighbours; the
          quadratic reconstruction fits cell averages as point values at the
          cell centres. The linear scheme is unstable on sliver triangles
          (random data grew ×10¹² per revolution on ``irregular_sphere(250)``).
``fv2``   The cell gradient fits the face neighbours on the built-in
          structured families (cartesian, HEALPix, icosahedral, cubed sphere)
          and the **vertex** neighbours (every cell sharing a vertex) on every
          other mesh (users' meshes, irregular triangulations, agglomerated
          coarse meshes) and on meshes that :meth:`Mesh.validate` warns of;
          the linear scheme then does not grow on the irregular meshes
          tested (the largest Re λ of ``−div Φ`` is rounding). The quadratic
          reconstruction is **k-exact**: its polynomial has the cell's
          average, it fits the neighbours' averages (the cells' second
          moments enter the fit) over the vertex neighbours (widened where
          fewer than 7), and the face value is the face average (along the
          chord), so it is exact for quadratic fields on planar meshes with
          straight faces where the stencil fixes a quadratic, third order on
          the sphere.
========  =======================================================================

The current version, :data:`OPERATOR_VERSION`, is what every operator uses by
default.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError, MeshclosureError

__all__ = ["OPERATOR_VERSION", "OPERATOR_VERSIONS", "OperatorSet", "operator_set",
           "check_operators", "agree_operators", "OperatorVersionError"]


@dataclass(frozen=True)
class OperatorSet:
    """The stencil choices of one operator version.

    Attributes
    ----------
    name : str
        The version (``"fv1"``, ``"fv2"``).
    gradient_stencil : {"face", "vertex", "by_mesh"}
        Cells in the least-squares gradient fit: face neighbours, every cell
        sharing a vertex, or the face neighbours on the structured families
        and the vertex neighbours elsewhere
        (:func:`meshclosure.fv.gradients.gradient_stencil`).
    quadratic : {"point", "cell_average"}
        The quadratic reconstruction fits neighbour averages as point values
        (``"point"``) or as averages over the cells (``"cell_average"``, k-exact).
    """

    name: str
    gradient_stencil: str
    quadratic: str


OPERATOR_VERSIONS: dict[str, OperatorSet] = {
    "fv1": OperatorSet("fv1", gradient_stencil="face", quadratic="point"),
    "fv2": OperatorSet("fv2", gradient_stencil="by_mesh", quadratic="cell_average"),
}
"""Every operator version this code can still compute, by name."""

OPERATOR_VERSION = "fv2"
"""The operator version used by default (and recorded in new datasets and checkpoints)."""


class OperatorVersionError(MeshclosureError, ValueError):
    """Two pieces made with different operator versions were to be used together."""


def check_operators(operators: str | None, argument: str = "operators") -> str:
    """The version name ``operators`` stands for (``None``: :data:`OPERATOR_VERSION`).

    Examples
    --------
    >>> check_operators(None) == OPERATOR_VERSION
    True
    >>> check_operators("fv1")
    'fv1'
    >>> check_operators("fv9")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: operators='fv9': must be one of the operator versions ('fv1', 'fv2'); pass one of those names, or leave it out for the current version 'fv2'.
    """
    if operators is None:
        return OPERATOR_VERSION
    if not isinstance(operators, str) or operators not in OPERATOR_VERSIONS:
        raise ArgumentError(argument, operators, "must be one of the operator versions "
                            f"{tuple(OPERATOR_VERSIONS)}", "pass one of those names, or leave "
                            f"it out for the current version {OPERATOR_VERSION!r}")
    return operators


def operator_set(operators: str | None = None) -> OperatorSet:
    """The :class:`OperatorSet` of a version name (``None``: the current version)."""
    return OPERATOR_VERSIONS[check_operators(operators)]


def agree_operators(operators: str | None, recorded: str | None, where: str) -> str:
    """The version to record: ``operators`` if given, else ``recorded`` (``None``: current).

    ``recorded`` is what a part already carries (``where`` names it, e.g. ``"the feature
    pipeline's operator version"``); an ``operators`` that differs is refused.

    Examples
    --------
    >>> agree_operators(None, "fv1", "the config's"), agree_operators("fv2", None, "x")
    ('fv1', 'fv2')
    >>> agree_operators("fv2", "fv1", "the config's operator version")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: operators='fv2': differs from the config's operator version 'fv1'; leave operators out (the recorded one is used).
    """
    if operators is None:
        return check_operators(recorded, "recorded operators")
    operators = check_operators(operators)
    if recorded is not None and recorded != operators:
        raise ArgumentError("operators", operators, f"differs from {where} {recorded!r}",
                            "leave {operators} out (the recorded one is used)")
    return operators
