"""The README's comparison table is the one the default ``meshclosure compare`` wrote.

CI cannot rerun the default comparison (about half an hour on 2 cores), so its output is
committed in ``results/compare_default/`` and the README quotes it. This test parses the
README section "Results: comparing architectures" and checks every cell of its tables
against ``results/compare_default/table.csv``: each cell must be exactly the text
:func:`meshclosure.compare.cell_text` makes of that CSV row (so a number edited by hand,
a row dropped or a closure renamed fails), and the compute-time line must be the one the
command wrote into ``table.md``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from meshclosure.compare import cell_text, read_table
from meshclosure.compare.table import markdown, md_columns

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results" / "compare_default"
SECTION = "## Results: comparing architectures"

#: A README table: (mesh, column headers, rows of cells; the first cell is the closure).
Table = Tuple[str, List[str], List[List[str]]]


def section(text: str, title: str = SECTION) -> str:
    """The README section from ``title`` to the next level-2 heading (or the end)."""
    if title not in text:
        raise AssertionError(f"README has no section {title!r}")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text: str) -> List[Table]:
    """Every comparison table in ``text``: a ``### <mesh>`` (or ``## <mesh>``) heading,
    then a Markdown table whose first column is ``closure``.

    >>> tables("### plane:4\\n\\n| closure | a |\\n|---|---|\\n| none | 1 ± 0 (n=2) |\\n")
    [('plane:4', ['a'], [['none', '1 ± 0 (n=2)']])]
    """
    out: List[Table] = []
    mesh, current = "", None
    for line in text.splitlines():
        heading = re.match(r"^#{2,3} (\S+:\S+)\s*$", line)
        if heading:
            mesh, current = heading.group(1), None
        elif line.startswith("| closure |"):
            current = (mesh, _cells(line)[1:], [])
            out.append(current)
        elif line.startswith("|---"):
            continue
        elif line.startswith("|") and current is not None:
            current[2].append(_cells(line))
        else:
            current = None
    return out


def _r2_key(rows: Sequence[dict]) -> str:
    return "step_mean." if any(r["metric"].startswith("offline.step_mean.") for r in rows) else ""


def mismatches(text: str, rows: Sequence[dict]) -> List[str]:
    """Cells of the tables in ``text`` that differ from what the CSV ``rows``
    (:func:`read_table`) print as, closures of the CSV missing from the tables, and
    tables that are missing or empty. ``[]`` when the text quotes the CSV exactly."""
    tilted = any(r["metric"].startswith("tilted.") for r in rows)
    keys = dict((h, k) for k, h in md_columns(_r2_key(rows), tilted=tilted))
    index: Dict[tuple, dict] = {(r["mesh"], r["closure"], r["metric"]): r for r in rows}
    problems: List[str] = []
    found = tables(text)
    if not found:
        return ["no comparison table (### <mesh> heading, then | closure | ... |)"]
    seen = set()
    for mesh, headers, body in found:
        if not body:
            problems.append(f"{mesh}: empty table")
        for cells in body:
            name = cells[0]
            seen.add((mesh, name))
            if len(cells) != len(headers) + 1:
                problems.append(f"{mesh} {name}: {len(cells) - 1} cells for {len(headers)} "
                                "columns")
                continue
            for header, got in zip(headers, cells[1:]):
                if header not in keys:
                    problems.append(f"{mesh}: unknown column {header!r}")
                    continue
                r = index.get((mesh, name, keys[header]))
                want = cell_text(r["mean"], r["sd"], r["n"], r["values"]) if r else "n/a"
                if got != want:
                    problems.append(f"{mesh} {name} {header}: README {got!r}, CSV {want!r}")
    for mesh, name in sorted({(r["mesh"], r["closure"]) for r in rows} - seen):
        problems.append(f"{mesh} {name}: in the CSV, not in the README")
    return problems


@pytest.fixture(scope="module")
def readme_section() -> str:
    return section(README.read_text())


@pytest.fixture(scope="module")
def csv_rows() -> List[dict]:
    return read_table(RESULTS / "table.csv")


def test_readme_table_is_the_committed_csv(readme_section, csv_rows):
    assert mismatches(readme_section, csv_rows) == []
    meshes = [mesh for mesh, _, _ in tables(readme_section)]
    assert meshes == list(dict.fromkeys(r["mesh"] for r in csv_rows))


def test_readme_quotes_the_commands_header(readme_section):
    """The compute time and machine line, and the scenario line, as the command wrote
    them; the command itself and its wall time (the log's ``real``)."""
    md = (RESULTS / "table.md").read_text()
    for line in md.splitlines():
        if line.startswith(("Compute time of the table:", "Scenario `")):
            assert line in readme_section, line
    assert "meshclosure -q compare --scenario kinematic" in readme_section
    assert re.search(r"wall time[^.]*\d+ min", readme_section)


def test_hand_edited_number_fails(readme_section, csv_rows):
    """Changing one digit of one number, dropping a row or renaming a closure is caught."""
    body = tables(readme_section)[0][2]
    cell = body[0][4]                                   # first closure, offline R² test
    digit = re.search(r"\d", cell)
    assert digit, cell
    edited_cell = cell[:digit.start()] + str((int(digit.group()) + 1) % 10) + cell[digit.end():]
    edited = readme_section.replace(f"| {cell} |", f"| {edited_cell} |", 1)
    assert edited != readme_section
    problems = mismatches(edited, csv_rows)
    assert len(problems) == 1 and repr(edited_cell) in problems[0], problems
    row = "| " + " | ".join(body[1]) + " |"
    dropped = mismatches(readme_section.replace(row + "\n", "", 1), csv_rows)
    assert any("not in the README" in p and body[1][0] in p for p in dropped), dropped
    renamed = readme_section.replace(f"| {body[0][0]} |", "| mystery |", 1)
    assert any("mystery" in p for p in mismatches(renamed, csv_rows))
    assert mismatches("no table here", csv_rows)


def test_check_on_a_known_table():
    """The check itself on a table :func:`markdown` writes from known rows: passes as
    written, fails on a hand-rounded number (0.58 -> 0.6) and on a sd of 0 dropped."""
    rows = [{"mesh": "plane:4", "closure": c, "kind": "model", "metric": m, "mean": mean,
             "sd": sd, "n": 3, "values": vals}
            for c, m, mean, sd, vals in [
                ("mgn", "parameters", 100.0, 0.0, [100.0] * 3),
                ("mgn", "online.similarity_mean", 0.58, 0.1, [0.48, 0.58, 0.68]),
                ("none", "online.similarity_mean", 0.0, 0.0, [0.0] * 3)]]
    text = markdown(rows, ["plane:4"]).replace("## plane:4", "### plane:4")
    assert mismatches(text, rows) == []
    assert "0.58 ± 0.1 (n=3)" in text
    assert len(mismatches(text.replace("0.58 ± 0.1", "0.6 ± 0.1"), rows)) == 1
    assert len(mismatches(text.replace("100 ± 0 (n=3)", "100 (n=3)"), rows)) == 1


#: The rotation symmetry test (issue 13, item 3): its README section and committed run.
ROTATION_SECTION = "## Results: the rotation symmetry test"
ROTATION_RESULTS = ROOT / "results" / "compare_rotation"


def test_readme_rotation_table_is_the_committed_csv():
    """The symmetry test's table (trained at the default axis, scored on a tilted one)
    is quoted exactly as its command wrote it, tilted columns included."""
    text = section(README.read_text(), ROTATION_SECTION)
    rows = read_table(ROTATION_RESULTS / "table.csv")
    assert any(r["metric"].startswith("tilted.") for r in rows)
    assert mismatches(text, rows) == []
    for line in (ROTATION_RESULTS / "table.md").read_text().splitlines():
        if line.startswith("Compute time of the table:"):
            assert line in text, line
    assert "--rotation 30" in text
