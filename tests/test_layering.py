"""Layering (issue 10 item 8, STYLE.md "Drifting"): the package's imports, read with ``ast``.

Rules:

(a) No library module imports :mod:`meshclosure.cli` (only ``cli`` itself and
    ``__main__`` may): the library must work without the command line.
(b) No module imports another unit's ``_``-prefixed module or name, where a
    *unit* is a subpackage (``meshclosure.mesh``) or a root module
    (``meshclosure.plot``). Imports within one unit are free. Root internal
    modules (``meshclosure._files``, ``_logging``, ``_cache``, ...) are the
    shared helpers: their public names may be imported from anywhere.

Late imports inside functions count too (``ast.walk`` sees every import).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import meshclosure

ROOT = Path(meshclosure.__file__).parent
CLI_USERS = {"meshclosure.cli", "meshclosure.__main__"}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _unit(module: str) -> str:
    """``meshclosure.fv.operators`` -> ``fv``; ``meshclosure`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, source: str, is_package: bool = False):
    """Every ``(line, imported_module, imported_name_or_None)`` of meshclosure in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "meshclosure":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target.split(".")[0] != "meshclosure":
                continue
            for alias in node.names:
                yield node.lineno, target, alias.name


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The layering violations of ``module`` (dotted name) with text ``source``."""
    found = []
    for line, target, name in _imports(module, source, is_package):
        # `from meshclosure import cli` / `from .. import _x` import a module by name
        full = f"{target}.{name}" if name is not None else target
        is_module = name is not None and (ROOT / Path(*full.split(".")[1:])).with_suffix(
            ".py").exists() or (name is not None and (ROOT.joinpath(*full.split(".")[1:])
                                                      / "__init__.py").exists())
        path = full if (name is None or is_module) else target
        if module not in CLI_USERS and (path == "meshclosure.cli"
                                        or path.startswith("meshclosure.cli.")):
            found.append(f"{module}:{line}: imports {path} (rule a: the library must not "
                         "import the CLI)")
            continue
        if _unit(path) == _unit(module):
            continue
        parts = path.split(".")[1:] + ([name] if name is not None and not is_module else [])
        shared = len(parts) >= 1 and _private(parts[0]) and len(path.split(".")) == 2
        private = [p for p in parts[1:] if _private(p)] if shared else \
            [p for p in parts if _private(p)]
        if private:
            found.append(f"{module}:{line}: imports {'.'.join(['meshclosure'] + parts)} "
                         f"(rule b: {private[0]!r} is private to meshclosure.{parts[0]})")
    return found


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), path, is_package


def test_package_keeps_its_layers():
    found = [v for module, path, is_package in _modules()
             for v in violations(module, path.read_text(encoding="utf-8"), is_package)]
    assert not found, "layering violations:\n" + "\n".join(found)


def test_walk_sees_every_subpackage():
    units = {_unit(m) for m, _, _ in _modules()}
    assert {"mesh", "fv", "solver", "nn", "data", "closures", "io", "cli", "sht"} <= units


@pytest.mark.parametrize("module, source, rule", [
    ("meshclosure.fv.operators", "from ..mesh._mesh import Mesh\n", "rule b"),
    ("meshclosure.solver.tracer", "from ..fv.operators import _spmm\n", "rule b"),
    ("meshclosure.plot", "def f():\n    from .io import _unwrapped_polygons\n", "rule b"),
    ("meshclosure.nn.cnn", "import meshclosure.mesh._mesh\n", "rule b"),
    ("meshclosure.nn.cnn", "from meshclosure.mesh import _mesh\n", "rule b"),
    ("meshclosure.io.ugrid", "from .._files import _private_helper\n", "rule b"),
    ("meshclosure.data.scenarios.base", "from ...cli import parse_mesh_spec\n", "rule a"),
    ("meshclosure.data.scenarios.base", "def f():\n    import meshclosure.cli\n", "rule a"),
    ("meshclosure.plot", "from meshclosure import cli\n", "rule a"),
])
def test_checker_fails_on_each_kind_of_violation(module, source, rule):
    found = violations(module, source)
    assert len(found) == 1 and rule in found[0], found


@pytest.mark.parametrize("module, source", [
    ("meshclosure.fv.advection", "from .operators import _spmm\n"),          # same unit
    ("meshclosure.mesh.cartesian", "from ._mesh import Mesh, MeshError\n"),
    ("meshclosure.data.scenarios.kinematic", "from ..random_flows import _x\n"),
    ("meshclosure.fv.operators", "from .._sparse import csr, spmm\n"),       # shared internal
    ("meshclosure.io.vtu", "from .._files import atomic_path\n"),
    ("meshclosure.nn.checkpoint", "from meshclosure import __version__\n"),  # dunder
    ("meshclosure.__main__", "from meshclosure.cli import main\n"),          # CLI users
    ("meshclosure.cli", "from meshclosure.mesh import parse_mesh_spec\n"),
    ("meshclosure.solver.tracer", "from ..mesh import Mesh\nimport numpy._core\n"),
])
def test_checker_accepts_allowed_imports(module, source):
    assert violations(module, source) == []


def _fresh_import(code: str) -> set[str]:
    """The meshclosure modules loaded by ``code`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join("
                          "m for m in sys.modules if m.startswith('meshclosure')))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_spherical_harmonic_transform_does_not_load_the_networks():
    loaded = _fresh_import("from meshclosure.sht import HealpixSHT\nHealpixSHT(2, lmax=4)")
    assert "meshclosure.sht" in loaded
    assert not any(m == "meshclosure.nn" or m.startswith("meshclosure.nn.") for m in loaded)
    from meshclosure.nn import HealpixSHT as FromNN
    from meshclosure.sht import HealpixSHT
    assert FromNN is HealpixSHT


def test_mesh_validates_and_builds_graphs_without_the_operators():
    loaded = _fresh_import("from meshclosure.mesh import icosahedral\n"
                           "icosahedral(1).validate()")
    assert not {m for m in loaded if m.split(".")[1:2] in (["fv"], ["nn"], ["solver"],
                                                           ["data"], ["cli"])}, loaded


def test_every_error_class_derives_from_the_root():
    import importlib
    import inspect

    from meshclosure.errors import MeshclosureError

    errors = []
    for module, _, _ in _modules():
        if module.endswith("__main__"):
            continue
        mod = importlib.import_module(module)
        errors += [obj for _, obj in inspect.getmembers(mod, inspect.isclass)
                   if issubclass(obj, BaseException) and obj.__module__ == module]
    assert len(errors) >= 10
    assert [e.__qualname__ for e in errors if not issubclass(e, MeshclosureError)] == []
