"""Every paper number in the configs is the paper's own: each reference's (table, row, column, value) is read back
from the paper's text in ``../shared/papers``, every printed cell of a laid-out table has its reference, and every
reference fits its table's layout."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from cxrlens.experiment import load_experiment
from cxrlens.paths import bundled_configs
from cxrlens.tables.layouts import FIGURES, TABLES, paper_figures, paper_tables
from paper_text import PAPERS, key, paper_text, table_rows

pytestmark = pytest.mark.skipif(not PAPERS.is_dir(), reason="the papers' texts (../shared/papers) are not here")

EXPERIMENTS = [load_experiment(path) for path in bundled_configs()]
REFERENCES = [(experiment, reference) for experiment in EXPERIMENTS for reference in experiment.references]
LAYOUTS = {(table.paper, table.label): table for table in TABLES}


def _printed(cell: str) -> str | None:
    return None if cell in ("", "-") else cell


def test_every_reference_fits_a_layout_of_its_paper() -> None:
    assert REFERENCES
    for experiment, reference in REFERENCES:
        layout = LAYOUTS.get((experiment.paper, reference.table))
        assert layout is not None, f"{experiment.name}: paper {experiment.paper} has no table {reference.table!r}"
        assert reference.row in layout.rows, f"{experiment.name}: {reference.table} has no row {reference.row!r}"
        assert reference.column in layout.columns, f"{experiment.name}: {reference.table} has no column {reference.column!r}"
        if reference.step is not None:
            assert reference.step in {step.name for step in experiment.steps}


def test_every_reference_value_is_the_papers_cell() -> None:
    for experiment, reference in REFERENCES:
        layout = LAYOUTS[(experiment.paper, reference.table)]
        where = f"{experiment.name}: {reference.table} / {reference.row} / {reference.column}"
        if layout.source == "none":
            assert reference.value is None, f"{where}: the paper prints no number for it"
            continue
        if layout.source == "text":
            normalised = " ".join(paper_text(experiment.paper).split())
            assert layout.quote in normalised, f"{reference.table}: its quote is not in paper {experiment.paper}"
            if reference.value is not None:
                assert re.search(rf"(?<![\d.]){re.escape(reference.value)}(?![\d])", layout.quote), where
            continue
        rows = table_rows(experiment.paper, layout.label)
        assert key(reference.row) in rows, f"{where}: row not printed in the paper's {layout.label}"
        cells = rows[key(reference.row)]
        column = layout.columns.index(reference.column)
        printed = _printed(cells[column]) if column < len(cells) else None
        assert reference.value == printed, f"{where}: config says {reference.value!r}, the paper prints {printed!r}"


def test_every_printed_cell_of_a_table_has_its_reference() -> None:
    referenced = defaultdict(set)
    for experiment, reference in REFERENCES:
        if reference.value is not None:
            referenced[(experiment.paper, reference.table)].add((reference.row, reference.column))
    for layout in TABLES:
        if layout.source != "table":
            continue
        rows = table_rows(layout.paper, layout.label)
        for row in layout.rows:
            assert key(row) in rows, f"paper {layout.paper} {layout.label}: no row {row!r} in its text"
            for column, cell in zip(layout.columns, rows[key(row)]):
                if _printed(cell) is not None:
                    assert (row, column) in referenced[(layout.paper, layout.label)], (
                        f"paper {layout.paper} {layout.label}: {row} / {column} ({cell}) has no reference")


def test_the_five_papers_have_their_tables_and_figures() -> None:
    assert {table.paper for table in TABLES} == {"000", "001", "002", "003", "004"}
    assert [table.label for table in paper_tables("003")] == ["Table 1", "Table 2", "Table 2 (every T(IoBB))",
                                                              "Table 3", "Table 4"]
    assert [table.label for table in paper_tables("004")] == ["Table 2", "Table 3"]
    assert [figure.label for figure in paper_figures("000")] == ["Fig. 3", "Fig. 5"]
    assert [figure.label for figure in paper_figures("002")] == ["Fig. 2", "Fig. 3", "Fig. 4"]
    experiments = {experiment.name: experiment for experiment in EXPERIMENTS}
    for figure in FIGURES:  # each figure's panels name steps that exist in bundled configs
        for panel in figure.panels:
            assert panel.step in {step.name for step in experiments[panel.experiment].steps}, panel


def test_paper_002_keeps_the_snapshots_its_figures_need() -> None:
    experiment = next(e for e in EXPERIMENTS if e.paper == "002")
    for step in experiment.steps:
        if step.kind == "pretrain":
            assert step.config.train.keep_epochs == (10, 25, 50, 100)
            assert step.config.train.epochs == 100
