"""Named, seeded truth scenarios: fine runs whose coarse-graining gives subgrid targets.

A :class:`Scenario` owns a fine mesh, its :class:`~meshclosure.mesh.Coarsening`,
a fine model advanced by SSP-RK3 (:func:`meshclosure.solver.integrate`), and the
resolved flux operator ``Φ^res`` of every conserved prognostic variable, which
it evaluates on ANY mesh of the hierarchy with the same scheme and
coefficients. The fine tendency of every variable ``v`` in
:attr:`Scenario.variables` is, exactly (to rounding) ::

    dv/dt = −div_fine(Φ^res_fine[v], Φ^b_fine[v]) + S_v

(``Φ^b`` the prescribed boundary fluxes, :meth:`Scenario.boundary_fluxes`;
``S_v`` the cell-local sources, :meth:`Scenario.sources`), so the subgrid flux
of DESIGN.md §5 ::

    Φ^sgs = restrict_flux(Φ^res_fine(v, U)) − Φ^res_coarse(restrict(v), restrict_flux(U))

closes the coarse budget: ``restrict(−div_fine Φ) = −div_coarse(restrict_flux Φ)``.

Scenarios (:data:`SCENARIOS`, :func:`get_scenario`), all non-dimensional
(unit plane ``[0, 1)²`` or unit sphere), each documented in its class:

* ``"kinematic"`` (:class:`KinematicScenario`): passive tracer in a prescribed
  multiscale Ornstein–Uhlenbeck flow whose small-scale intensity follows a
  resolved field ``N``; families cartesian, healpix, icosahedral, cubed.
* ``"barotropic"`` (:class:`BarotropicScenario`): forced–dissipative 2-D
  turbulence with a passive tracer, spun up to statistical equilibrium;
  cartesian (f-plane), healpix, icosahedral and cubed (rotating sphere).
* ``"convection"`` (:class:`ConvectionScenario`): Boussinesq convection in an
  x–z slice heated from below, averaged horizontally onto a column.

The sphere scenarios (``kinematic``, ``barotropic`` on ``healpix``,
``icosahedral`` and ``cubed`` meshes) take a ``rotation`` (degrees: a tilt, or ``[tilt,
azimuth]``; :func:`rotation_matrix`) that tilts the axes of their physics (the
``N`` pattern, the tracer's relaxation pattern, the planetary rotation axis)
while the mesh, the seeds and the random modes stay: the out-of-distribution
symmetry test of issue 13 (``get_scenario("kinematic", "healpix:16",
rotation=30)``).

Every scenario's :attr:`~Scenario.config` is complete and JSON-serialisable:
``get_scenario(**config)`` (or :meth:`Scenario.from_config`) rebuilds it exactly.
Randomness comes only from NumPy generators seeded by ``config["seed"]``
(never the global torch seed), so runs are bit-for-bit reproducible.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from .barotropic import BarotropicScenario
from .base import Scenario, canonical_rotation, ood_seed, rotation_matrix
from .convection import ConvectionScenario
from .kinematic import KinematicScenario

__all__ = ["SCENARIOS", "get_scenario", "Scenario", "KinematicScenario", "BarotropicScenario",
           "ConvectionScenario", "ood_seed", "rotation_matrix",
           "canonical_rotation"]

SCENARIOS: Dict[str, type] = {cls.name: cls for cls in (KinematicScenario, BarotropicScenario,
                                                        ConvectionScenario)}
"""Scenario classes by name."""


def get_scenario(name: str, mesh: Optional[str] = None, factor: int = 4, seed: int = 0,
                 device: Any = None, **config: Any) -> Scenario:
    """Build a named truth scenario.

    Parameters
    ----------
    name : {"kinematic", "barotropic", "convection"}
    mesh : str, optional
        Fine-mesh spec: ``"cartesian:64"``, ``"cartesian:64x64"``, ``"healpix:32"``,
        ``"icosahedral:5"`` (convection: ``"cartesian:NXxNZ"``); a bare family
        name (``"healpix"``) takes that family's default size; ``None`` the
        scenario's default mesh.
    factor : int
        Coarsening factor in linear resolution (native nesting; convection:
        fine levels per column cell).
    seed : int
        Seed of every random number in the run.
    device : str or torch.device, optional
        Where the fine run lives (mesh, random-field tables, fine model; default
        the CPU). Not a scenario parameter: it is not in :attr:`Scenario.config`,
        and results agree across devices to rounding.
    **config
        Scenario parameters (see each class; unknown keys are an error), e.g.
        ``rotation=30`` (degrees) for ``kinematic`` and ``barotropic`` on the sphere,
        and for every scenario ``operators`` (:mod:`meshclosure.fv.versions`; default
        the current version, ``"fv1"`` the operators of data made before versions).

    Examples
    --------
    >>> s = get_scenario("kinematic", "cartesian:16", factor=4, seed=1)
    >>> s.variables, s.coarse.n_cells, s.config["seed"]
    (('q',), 16, 1)
    >>> get_scenario("kinematic", "healpix:4", factor=2, rotation=30).config["rotation"]
    30.0
    >>> get_scenario("kinematic", "cartesian:16", operators="fv1").operators
    'fv1'
    >>> get_scenario("kinematic", "cartesian:16", rotation=30)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: rotation=30: tilts the axes of a sphere scenario; ...
    >>> get_scenario("kinetic")
    Traceback (most recent call last):
    ...
    ValueError: name must be one of ['barotropic', 'convection', 'kinematic']; got 'kinetic'. ...
    """
    if name not in SCENARIOS:
        raise ValueError(f"name must be one of {sorted(SCENARIOS)}; got {name!r}. Pick a "
                         "scenario from meshclosure.data.SCENARIOS.")
    kw = {} if device is None else {"device": device}
    return SCENARIOS[name](mesh=mesh, factor=factor, seed=seed, **kw, **config)
