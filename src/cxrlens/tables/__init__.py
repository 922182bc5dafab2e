"""Each paper's tables and figures in the paper's layout, assembled from experiment runs (``cxrlens tables``).

:mod:`~cxrlens.tables.layouts` holds the shapes, the configs' ``references`` the paper's numbers
and where ours lie, :mod:`~cxrlens.tables.runs` finds a paper's runs, :mod:`~cxrlens.tables.assemble`
fills the cells and floor rows, :mod:`~cxrlens.tables.figures` draws the figures and
:mod:`~cxrlens.tables.render` writes Markdown, HTML, CSV or LaTeX. Everything goes to
``RUN/tables/`` and is referred to by relative names, so a copied run folder keeps working.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from cxrlens.tables.assemble import Table, assemble, not_run
from cxrlens.tables.figures import DrawnFigure, draw_figures
from cxrlens.tables.render import FORMATS, csv_text, html_page, latex, markdown, scale_note
from cxrlens.tables.runs import paper_runs

TABLES_FOLDER = "tables"


@dataclass(frozen=True)
class Assembled:
    """A run's paper's tables and figures, and how to title them."""

    summary: dict
    tables: list[Table]
    figures: list[DrawnFigure]
    title: str
    scale: str


def assembled(run_dir: Path) -> Assembled:
    """The tables and figures of ``run_dir``'s paper, from it and the other runs of that paper and scale beside
    it; the figures are drawn into ``run_dir/tables/``."""
    runs = paper_runs(run_dir)
    summary = runs.summaries[runs.config]
    missing = not_run(runs)
    described = [(config, other.get("scale_description", "")) for config, other in runs.summaries.items()]
    scale = scale_note(runs.scale, "; ".join(f"{config}: {text}" for config, text in described if text)) + (
        f". Not run at this scale: {', '.join(missing)}" if missing else "")
    return Assembled(summary, assemble(runs), draw_figures(runs, run_dir / TABLES_FOLDER),
                     f"Paper {runs.paper}: tables and figures from {', '.join(sorted(runs.folders))}", scale)


def write_tables(run_dir: str | Path, fmt: str = "md") -> tuple[str, Path]:
    """``run_dir/tables/tables.<ext>`` (and the figures' PNGs) in format ``fmt``; returns the text and the file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    found = assembled(run_dir)
    text = {"md": lambda: markdown(found.tables, found.figures, found.title, found.scale),
            "html": lambda: html_page(found.tables, found.figures, found.title, found.scale),
            "csv": lambda: csv_text(found.tables), "latex": lambda: latex(found.tables, found.figures)}[fmt]()
    path = run_dir / TABLES_FOLDER / f"tables.{'tex' if fmt == 'latex' else fmt}"
    path.write_text(text)
    return text, path


def write_experiment_page(run_dir: str | Path) -> Path:
    """``run_dir/report.html``: one page per experiment - its paper's tables and figures and a link to every
    step's own report."""
    run_dir = Path(run_dir)
    found = assembled(run_dir)
    steps = "".join(
        f'<li><a href="{html.escape(name)}/report.html">{html.escape(name)}</a> ({html.escape(step["kind"])})</li>'
        if (run_dir / name / "report.html").is_file() else f"<li>{html.escape(name)} ({html.escape(step['kind'])})</li>"
        for name, step in found.summary["steps"].items())
    note = ("<p>Written when this run finished, with the runs of the paper beside it then; <code>cxrlens tables "
            "RUN_DIR --format html</code> gathers them again.</p>")
    page = html_page(found.tables, found.figures, f"{found.summary['experiment']}: {found.title}", found.scale,
                     prefix=f"{TABLES_FOLDER}/", extra=f"{note}<h2>Steps</h2><ul>{steps}</ul>")
    path = run_dir / "report.html"
    path.write_text(page)
    return path
