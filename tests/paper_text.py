"""The papers' tables read back from their text files (``../shared/papers/NNN_*.txt``), for the reference tests.

A table starts at the line that carries its label (``TABLE II``, ``Table 2:``, ``#### TABLE III``)
and runs to the next table label; its rows are tab-separated lines whose first cell is the row
label. Labels compare without spaces, ``$``, ``_``, braces and case (``$r_0 = 0$`` is ``r0 = 0``).
"""

from __future__ import annotations

import re
from pathlib import Path

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"
_LABEL = re.compile(r"^#*\s*(TABLE|Table)\s+([0-9]+|[IVX]+)\b")


def key(text: str) -> str:
    return re.sub(r"[\s$_{}\\]", "", text).lower()


def paper_text(paper: str) -> str:
    [path] = PAPERS.glob(f"{paper}_*.txt")
    return path.read_text()


def _label(line: str) -> str | None:
    """``Table N`` when ``line`` starts a table (not a sentence such as "Table 4 shows ...")."""
    found = _LABEL.match(line)
    if found is None or re.match(r"\s+[a-z]", line[found.end():]):
        return None
    return f"Table {found.group(2)}"


def table_rows(paper: str, label: str) -> dict[str, list[str]]:
    """Row label key -> the row's cells (as printed, ``<b>`` tags removed) of the table ``label`` ('Table II')."""
    wanted = f"Table {label.split()[-1]}"
    rows: dict[str, list[str]] = {}
    inside = False
    for line in paper_text(paper).splitlines():
        found = _label(line)
        if found is not None:
            if inside and rows:
                break
            inside = found == wanted
            continue
        if inside and "\t" in line:
            cells = [re.sub(r"</?b>", "", cell).strip() for cell in line.split("\t")]
            rows.setdefault(key(cells[0]), cells[1:])
    return rows
