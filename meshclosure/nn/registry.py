"""The model registry: ``build_model(name, mesh, **config)`` and ``list_models()``.

Every model declares the mesh families it supports (``mesh.family``:
``"cartesian"``, ``"healpix"``, ``"icosahedral"`` (including duals), ``"cubed"``,
``"meshio"``, ``"coarsened"``, ``"column"``); :func:`build_model` refuses a
mesh of any other family with an :class:`UnsupportedMeshError` that names the
supported families and the registered models that do fit.

Adding a model (e.g. a Cartesian CNN in ``meshclosure/nn/cnn.py``)::

    from meshclosure.nn.registry import register

    @register("cnn", families=("cartesian",), instead="mgn")
    class CartesianCNN(FluxModel):
        def __init__(self, mesh, in_features=1, n_vars=1, **config): ...

and import its module in ``meshclosure/nn/__init__.py`` so it registers.
The factory (a class or a function) is called as ``factory(mesh, **config)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

from ..errors import MeshclosureError
from ..mesh import Mesh

__all__ = ["register", "build_model", "list_models", "model_families", "check_family",
           "UnsupportedMeshError", "UnknownModelError", "ALL_FAMILIES"]

#: Every mesh family the adapters produce.
ALL_FAMILIES = ("cartesian", "healpix", "icosahedral", "cubed", "meshio", "coarsened", "column")


class UnsupportedMeshError(MeshclosureError, ValueError):
    """A model was asked to run on a mesh family it does not support."""


class UnknownModelError(MeshclosureError, ValueError):
    """No model is registered under the requested name."""


@dataclass(frozen=True)
class _Entry:
    name: str
    factory: Callable[..., nn.Module]
    families: tuple[str, ...]
    instead: str | None
    description: str
    conservative: bool = True


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, families: Iterable[str] = ALL_FAMILIES, instead: str | None = None,
             description: str | None = None, conservative: bool = True) -> Callable:
    """Decorator registering a model factory (class or function) under ``name``.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"mgn"``.
    families : iterable of str
        Mesh families (``mesh.family``) the model supports.
    instead : str, optional
        The model to suggest first for unsupported meshes.
    description : str, optional
        One line for :func:`list_models`; default the first docstring line.
    conservative : bool
        True (default) for closures in flux form (antisymmetric face fluxes), which
        every invariant test covers; False marks a reference outside that contract
        (e.g. ``nodewise``), listed only by ``list_models(conservative=False)``.

    Examples
    --------
    >>> @register("_doc_dummy", families=("healpix",), instead="mgn")
    ... def dummy(mesh, **config):
    ...     return None
    >>> "_doc_dummy" in list_models("healpix"), "_doc_dummy" in list_models("cartesian")
    (True, False)
    >>> _ = _REGISTRY.pop("_doc_dummy")
    """
    fams = tuple(families)
    unknown = [f for f in fams if f not in ALL_FAMILIES]
    if unknown:
        raise ValueError(f"register({name!r}): unknown families {unknown}; choose from "
                         f"{ALL_FAMILIES}.")

    def decorate(factory):
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"a model named {name!r} is already registered "
                             f"({_REGISTRY[name].factory!r}); pick another name.")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = _Entry(name, factory, fams, instead,
                                 description or (doc[0] if doc else ""), bool(conservative))
        if isinstance(factory, type):
            factory.name, factory.families = name, fams
        return factory

    return decorate


def list_models(family: str | None = None, conservative: bool | None = True) -> list[str]:
    """Registered model names, sorted; only those supporting ``family`` when given.

    ``conservative=True`` (default) lists the closures in flux form, which conserve
    by construction; ``False`` the references outside that contract (``nodewise``);
    ``None`` both.

    >>> "mgn" in list_models(), "mlp_global" in list_models("healpix")
    (True, True)
    >>> "nodewise" in list_models(), "nodewise" in list_models(conservative=False)
    (False, True)
    """
    return sorted(n for n, e in _REGISTRY.items() if (family is None or family in e.families)
                  and (conservative is None or e.conservative == conservative))


def model_families(name: str) -> tuple[str, ...]:
    """The mesh families model ``name`` supports."""
    return _entry(name).families


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; registered models: "
                                f"{list_models()}. Register new ones with "
                                f"@meshclosure.nn.register(name, families=...).")
    return _REGISTRY[name]


def check_family(name: str, mesh: Mesh) -> None:
    """Raise :class:`UnsupportedMeshError` unless model ``name`` supports ``mesh.family``."""
    entry = _entry(name)
    if mesh.family in entry.families:
        return
    fits = [n for n in list_models(mesh.family) if not n.startswith("_")]
    if entry.instead in fits:
        fits.remove(entry.instead)
        fits.insert(0, entry.instead)
    hint = (f"Use {' or '.join(repr(f) for f in fits)} instead." if fits
            else "No registered model supports it yet.")
    raise UnsupportedMeshError(
        f"model {name!r} supports mesh families {entry.families}; got a mesh of family "
        f"{mesh.family!r} ({mesh!r}). {hint}")


def build_model(name: str, mesh: Mesh, **config) -> nn.Module:
    """Build the registered model ``name`` for ``mesh``.

    Parameters
    ----------
    name : str
        See :func:`list_models`.
    mesh : Mesh
        The mesh the model will run on; its family must be supported.
    **config
        Passed to the model (e.g. ``in_features``, ``n_vars``, ``hidden``,
        ``head``, ``heteroscedastic``).

    Examples
    --------
    >>> from meshclosure.mesh import icosahedral
    >>> model = build_model("mgn", icosahedral(1), in_features=2, n_vars=1, hidden=8)
    >>> model.name, model.families[:2], model.mesh_signature["n_cells"]
    ('mgn', ('cartesian', 'healpix'), 80)
    >>> build_model("no_such_model", icosahedral(1))
    Traceback (most recent call last):
    ...
    meshclosure.nn.registry.UnknownModelError: unknown model 'no_such_model'; ...
    """
    check_family(name, mesh)
    model = _entry(name).factory(mesh, **config)
    if isinstance(model, nn.Module):
        # what the model was built for: meshclosure.data.check_compatible compares it with a
        # dataset's coarse mesh, so data from another family or resolution is refused
        model.mesh_signature = mesh.signature()
        # how to build it again (meshclosure.nn.save_model / load_model)
        model.build_config = {"name": name, "config": dict(config)}
    return model
