"""Execute every tutorial notebook top to bottom (small sizes), as a newcomer would,
and check that every figure a cell makes arrives as an image.

The kernel runs the matplotlib-inline backend, as Jupyter does: under it
``plt.show()`` and a cell ending in a figure send ``image/png`` outputs (under
``Agg`` they send nothing, which is how figures went missing unnoticed).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
INLINE = "module://matplotlib_inline.backend_inline"

#: Images each notebook shows, at least: one per figure its cells make.
FIGURES = {
    "01_meshes_and_graphs.ipynb": 3,              # one map; all families; coarsening
    "02_solver_and_test_cases.ipynb": 3,          # limiter; test 1 final/exact/error; RH wave
    "03_truth_data_and_subgrid_fluxes.ipynb": 4,  # subgrid panels x 3 families; convection
    "04_conservative_closures.ipynb": 1,          # conservation drift
    "05_training_and_uncertainty.ipynb": 5,       # K_eff; constraints; online; split; fallback
    "06_validation_hierarchy.ipynb": 5,           # bands; spectra; coupled; online; statistics
    "07_comparing_architectures.ipynb": 4,        # committed bars; seeds; cost; tiny run
}


def figures_shown(source: str) -> int:
    """How many images a code cell shows at least: one per ``plt.show()`` or
    ``display(...)`` call, plus one if its last statement is a figure (``fig``,
    ``plot(...)``, ``plot_comparison(...)``), which Jupyter displays.

    >>> figures_shown("fig = plot(m, q)\\nfig")
    1
    >>> figures_shown("for k in range(3):\\n    plt.show()\\nx = 1")
    1
    >>> figures_shown("print(1)")
    0
    """
    tree = ast.parse(source)
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    names = [f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "") for f in calls]
    count = sum(n in ("show", "display") for n in names)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        value = last.value
        if isinstance(value, ast.Name) and value.id.startswith("fig"):
            count += 1
        elif isinstance(value, ast.Call) and getattr(value.func, "id", "") in (
                "plot", "plot_comparison"):
            count += 1
    return count


def _images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_figures(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib_inline")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # outputs are stripped in git
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: strip outputs before committing"
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE          # what ipykernel uses when nothing is set
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    missing = [(i, figures_shown(c.source), _images(c)) for i, c in enumerate(code)
               if _images(c) < figures_shown(c.source)]
    assert not missing, f"{path.name}: (code cell, figures made, images shown): {missing}"
    images = sum(_images(c) for c in code)
    assert images >= FIGURES[path.name] >= 1, f"{path.name}: {images} images"


def test_every_notebook_has_a_figure_count() -> None:
    assert any(p.name.startswith("01_") for p in NOTEBOOKS)
    assert {p.name for p in NOTEBOOKS} == set(FIGURES)


def test_figure_count_reads_the_cells() -> None:
    """The table counts at least the figures the cells visibly make (a ``plt.show()``
    in a loop counts once here, once per pass in the table)."""
    nbformat = pytest.importorskip("nbformat")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        made = sum(figures_shown(c.source) for c in nb.cells if c.cell_type == "code")
        assert 1 <= made <= FIGURES[path.name], f"{path.name}: cells make {made} figures"
