"""Build a tutorial notebook (outputs stripped) from a percent-format script.

    python tools/make_notebook.py notebooks/src/01_meshes_and_graphs.py notebooks/01_meshes_and_graphs.ipynb

Cells are separated by lines starting with ``# %%``; ``# %% [markdown]`` cells
hold markdown written as ``# `` comment lines.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def convert(src: Path, dst: Path) -> None:
    cells, kind, lines = [], "code", []

    def flush():
        text = "\n".join(lines).strip("\n")
        if text:
            if kind == "markdown":
                text = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in text.splitlines())
                cells.append(nbformat.v4.new_markdown_cell(text))
            else:
                cells.append(nbformat.v4.new_code_cell(text))

    for line in src.read_text().splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    tmp = dst.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(dst)


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
