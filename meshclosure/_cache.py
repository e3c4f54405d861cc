"""One per-mesh cache for everything precomputed from a mesh's geometry.

Operators (sparse matrices, least-squares weights, face maps, graph
Laplacians, ...) are built once per mesh and dropped with the mesh: the cache
holds the mesh weakly. Each caller names its entries with a key that starts
with its own name (``("fv.div", dtype, device)``), so callers never collide.

Examples
--------
>>> from meshclosure.mesh import cartesian
>>> mesh = cartesian(3, 3, 1.0, 1.0)
>>> per_mesh(mesh, ("doc", "n"), lambda: mesh.n_cells)
9
>>> per_mesh(mesh, ("doc", "n"), lambda: 1 / 0)      # built once: not called again
9
>>> per_mesh(object(), "n", lambda: 0)
Traceback (most recent call last):
...
TypeError: cannot create weak reference to 'object' object
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Hashable

__all__ = ["per_mesh", "cached_keys"]

_STORE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def per_mesh(mesh: Any, key: Hashable, build: Callable[[], Any]) -> Any:
    """The value cached for ``(mesh, key)``, built with ``build()`` on first use.

    Parameters
    ----------
    mesh : Mesh (or any weakly referenceable object, e.g. a graph)
        The owner: the entry is dropped when it is garbage-collected.
    key : hashable
        The entry's name; start it with the caller's module (``"fv.lsq"``).
    build : callable
        Builds the value; called only when the entry is missing. An exception
        leaves nothing cached.
    """
    store = _STORE.setdefault(mesh, {})
    if key not in store:
        store[key] = build()
    return store[key]


def cached_keys(mesh: Any) -> list:
    """The keys cached for ``mesh`` (for tests and debugging)."""
    return list(_STORE.get(mesh, {}))
