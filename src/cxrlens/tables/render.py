"""Assembled tables (and the figures drawn beside them) written as Markdown, HTML, CSV or LaTeX.

A cell reads ``ours [95 % CI] (paper: value)``, with ours in the paper's unit (percentages where
the paper prints them) and as many decimals as the paper gives; a floor row's cell reads
``floor (model - floor +d [low, high])``. Figures are referred to by file name, relative to the
folder the tables are written to.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Sequence

from cxrlens.tables.assemble import Cell, FloorCell, Table
from cxrlens.tables.figures import DrawnFigure

SCALES = {"full": "full scale (the papers' settings)", "smoke": "SMOKE scale: a pipeline check on tiny random-init "
          "models; these numbers are noise, never results"}
FORMATS = ("md", "html", "csv", "latex")


def scale_note(scale: str, description: str = "") -> str:
    """What a run's scale means, for the line above its tables."""
    return SCALES.get(scale, f"{scale} scale" + (f": {description}" if description else ""))


def _decimals(paper: str | None, percent: bool) -> int:
    number = re.search(r"\d[\d,]*(?:\.(\d+))?", paper or "")
    least = 1 if percent else 2
    if number is None:
        return least + 1
    return max(len(number.group(1) or ""), least)


def number(value: float, paper: str | None, percent: bool) -> str:
    """``value`` in the paper's unit and precision (thousands separated where the paper separates them)."""
    if paper and re.fullmatch(r"\d{1,3}(,\d{3})+", paper.strip()):
        return f"{value:,.0f}"
    return f"{value * (100 if percent else 1):.{_decimals(paper, percent)}f}"


def _signed(value: float, paper: str | None, percent: bool) -> str:
    text = number(abs(value), paper, percent)
    return ("-" if value < 0 else "+") + text


def cell_text(cell: Cell, percent: bool) -> str:
    """``ours [low, high] (paper: value)``; without ours, the paper's value and why ours is missing."""
    missing = f"ours: {cell.missing}" if cell.missing else ""
    if cell.ours is None:
        return "; ".join(part for part in (f"paper: {cell.paper}" if cell.paper else "", missing) if part) or "-"
    ours = number(cell.ours.value, cell.paper, percent)
    if cell.ours.low is not None and cell.ours.high is not None:
        ours += f" [{number(cell.ours.low, cell.paper, percent)}, {number(cell.ours.high, cell.paper, percent)}]"
    return ours + (f" (paper: {cell.paper})" if cell.paper else "")


def floor_text(cell: FloorCell | None, percent: bool) -> str:
    """``floor (model - floor +d [low, high])``."""
    if cell is None:
        return "-"
    text = number(cell.value, None, percent)
    difference = cell.difference
    if difference is not None:
        text += f" (model - floor {_signed(difference.value, None, percent)}"
        if difference.low is not None and difference.high is not None:
            text += f" [{_signed(difference.low, None, percent)}, {_signed(difference.high, None, percent)}]"
        text += ")"
    return text


def grid(table: Table) -> tuple[list[str], list[list[str]]]:
    """The header and the body rows (paper rows, then floor rows) as text."""
    layout = table.layout
    header = ["", *layout.columns]
    body = [[row, *(cell_text(table.cell(row, column), layout.percent) for column in layout.columns)]
            for row in layout.rows]
    body += [[f"floor - {floor.label}", *(floor_text(floor.cells.get(column), layout.percent)
                                          for column in layout.columns)] for floor in table.floors]
    return header, body


def markdown(tables: Sequence[Table], figures: Sequence[DrawnFigure], title: str, scale: str) -> str:
    """The tables as Markdown, the figures as image links."""
    lines = [f"# {title}", "", f"Scale: {scale}.", "",
             "Each cell: ours [95 % CI] (paper: its value). Floor rows: the raw-pixel logistic regression beside "
             "AUROC, the image-blind location prior beside localization, with the paired model - floor difference "
             "and its 95 % CI.", ""]
    for table in tables:
        header, body = grid(table)
        lines += [f"## {table.layout.label}: {table.layout.caption}", "",
                  "| " + " | ".join(_md(cell) for cell in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in body]
        lines.append("")
    for figure in figures:
        lines += [f"## {figure.layout.label}: {figure.layout.caption}", ""]
        lines.append(f"![{figure.layout.label}]({figure.file})" if figure.file else f"Not drawn: {figure.skipped}.")
        lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def html_body(tables: Sequence[Table], figures: Sequence[DrawnFigure], prefix: str = "") -> str:
    """The tables and figures as HTML elements (``prefix``: the figures' folder relative to the page)."""
    parts = []
    for table in tables:
        header, body = grid(table)
        rows = "".join(
            "<tr" + (' class="floor"' if number_ >= len(table.layout.rows) else "") + ">" +
            "".join(f"<{'th' if column == 0 else 'td'}>{html.escape(cell)}</{'th' if column == 0 else 'td'}>"
                    for column, cell in enumerate(row)) + "</tr>"
            for number_, row in enumerate(body))
        parts.append(f"<h2>{html.escape(table.layout.label)}</h2><p class=caption>{html.escape(table.layout.caption)}"
                     f"</p><table class=paper><thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}"
                     f"</tr></thead><tbody>{rows}</tbody></table>")
    for figure in figures:
        body = (f'<img src="{html.escape(prefix + figure.file)}" alt="{html.escape(figure.layout.label)}">'
                if figure.file else f"<p>Not drawn: {html.escape(figure.skipped)}.</p>")
        parts.append(f"<h2>{html.escape(figure.layout.label)}</h2><p class=caption>"
                     f"{html.escape(figure.layout.caption)}</p>{body}")
    return "\n".join(parts)


STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table.paper{border-collapse:collapse;"
         "font-size:13px;margin-bottom:1em}table.paper td,table.paper th{border:1px solid #ccc;padding:3px 6px;"
         "text-align:left}tr.floor{background:#f4f4f4;font-style:italic}p.caption{color:#444}img{max-width:100%}")


def html_page(tables: Sequence[Table], figures: Sequence[DrawnFigure], title: str, scale: str,
              prefix: str = "", extra: str = "") -> str:
    """A whole page (no script): title, scale, ``extra`` HTML, then the tables and figures."""
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}"
            f"</style></head><body><h1>{html.escape(title)}</h1><p><b>Scale:</b> {html.escape(scale)}.</p>"
            "<p>Each cell: ours [95 % CI] (paper: its value). Floor rows (grey): the raw-pixel logistic regression "
            "beside AUROC, the location prior beside localization, with the paired model - floor difference.</p>"
            f"{extra}{html_body(tables, figures, prefix)}</body></html>")


def csv_text(tables: Sequence[Table]) -> str:
    """One line per cell: table, row, column, kind (ours / floor), value, CI, paper value, difference, note."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["table", "row", "column", "kind", "value", "low", "high", "paper", "difference",
                     "difference_low", "difference_high", "note"])
    for table in tables:
        for row in table.layout.rows:
            for column in table.layout.columns:
                cell = table.cell(row, column)
                ours = cell.ours
                writer.writerow([table.layout.label, row, column, "ours", *(_plain(getattr(ours, name, None))
                                 for name in ("value", "low", "high")), cell.paper or "", "", "", "", cell.missing])
        for floor in table.floors:
            for column, cell in floor.cells.items():
                difference = cell.difference
                writer.writerow([table.layout.label, floor.label, column, "floor", _plain(cell.value), "", "", "",
                                 *(_plain(getattr(difference, name, None)) for name in ("value", "low", "high")), ""])
    return buffer.getvalue()


def _plain(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def latex(tables: Sequence[Table], figures: Sequence[DrawnFigure]) -> str:
    """One ``table`` environment per table (booktabs), and a ``figure`` per drawn figure."""
    parts = []
    for table in tables:
        header, body = grid(table)
        rows = [" & ".join(_tex(cell) for cell in header) + r" \\ \midrule"]
        rows += [" & ".join(_tex(cell) for cell in row) + r" \\" for row in body]
        parts.append("\\begin{table}[ht]\n\\centering\\scriptsize\n"
                     f"\\caption{{{_tex(table.layout.label)}: {_tex(table.layout.caption)}}}\n"
                     f"\\begin{{tabular}}{{l{'l' * len(table.layout.columns)}}}\n\\toprule\n" + "\n".join(rows) +
                     "\n\\bottomrule\n\\end{tabular}\n\\end{table}")
    for figure in figures:
        if figure.file:
            parts.append(f"\\begin{{figure}}[ht]\n\\centering\n\\includegraphics[width=\\linewidth]{{{figure.file}}}"
                         f"\n\\caption{{{_tex(figure.layout.label)}: {_tex(figure.layout.caption)}}}\n\\end{{figure}}")
    return "\n\n".join(parts) + "\n"


def _tex(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text).replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
