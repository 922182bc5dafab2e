"""A paper's tables filled from its runs: each cell ours (with its 95 % CI) beside the paper's number, and the
floors as extra rows (the raw-pixel logistic regression beside AUROCs, the location prior beside localization),
each with the paired model - floor difference and its CI."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from cxrlens.experiment import Reference, load_experiment
from cxrlens.paths import bundled_configs
from cxrlens.tables.layouts import TableLayout, paper_tables
from cxrlens.tables.runs import Number, PaperRuns, as_number, floor_paths, lookup, step_metrics


@dataclass(frozen=True)
class Cell:
    """One cell: ours and the paper's number; ``missing`` says why ours is None (empty for another work's result
    that the paper quotes, where there is no ours to have)."""

    ours: Number | None = None
    paper: str | None = None
    missing: str = ""


@dataclass(frozen=True)
class FloorCell:
    """A floor's value beside one of our cells, and the paired model - floor difference with its CI."""

    value: float
    difference: Number | None


@dataclass
class FloorRow:
    """An extra row: the floor beside the cells of one row of ours, by column."""

    label: str
    cells: dict[str, FloorCell]


@dataclass
class Table:
    """One of the paper's tables, filled: cells by (row, column) and the floor rows."""

    layout: TableLayout
    scale: str
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    floors: list[FloorRow] = field(default_factory=list)

    def cell(self, row: str, column: str) -> Cell:
        """The cell at (``row``, ``column``); an empty one where no reference fills it."""
        return self.cells.get((row, column), Cell())


def not_run(runs: PaperRuns) -> list[str]:
    """The bundled experiments of the paper that have no run among ``runs``."""
    return sorted({config for config, _ in paper_references(runs.paper)} - set(runs.folders))


@functools.lru_cache(maxsize=None)
def paper_references(paper: str) -> tuple[tuple[str, Reference], ...]:
    """Every reference of the bundled configs of ``paper``, with its config's name (read once per process)."""
    found = []
    for path in bundled_configs():
        experiment = load_experiment(path)
        if experiment.paper == paper:
            found += [(experiment.name, reference) for reference in experiment.references]
    return tuple(found)


def _references(runs: PaperRuns) -> list[tuple[str, Reference]]:
    """The bundled configs' references, and those of runs whose config is not bundled (a user's own)."""
    references = list(paper_references(runs.paper))
    bundled = {config for config, _ in references}
    for config, summary in runs.summaries.items():
        if config not in bundled:
            try:
                references += [(config, Reference.model_validate({key: value for key, value in entry.items()
                                                                  if key != "ours"}))
                               for entry in summary.get("references", [])]
            except ValueError as error:
                raise ValueError(f"{runs.folders[config] / 'summary.json'}: a reference is not one cxrlens reads "
                                 f"({error})") from None
    return references


def assemble(runs: PaperRuns) -> list[Table]:
    """Every table of ``runs.paper`` in its layout, filled from ``runs``."""
    tables = {layout.label: Table(layout, runs.scale) for layout in paper_tables(runs.paper)}
    floors: dict[str, dict[tuple[str, str], dict[str, FloorCell]]] = {}
    cache: dict[tuple[str, str], dict | None] = {}
    for config, reference in _references(runs):
        table = tables.get(reference.table)
        if table is None or reference.row not in table.layout.rows or reference.column not in table.layout.columns:
            continue
        position = (reference.row, reference.column)
        if reference.step is None:
            table.cells[position] = Cell(paper=reference.value)
            continue
        folder = runs.folders.get(config)
        if folder is None:
            table.cells[position] = Cell(paper=reference.value, missing="not run")
            continue
        if (config, reference.step) not in cache:
            cache[(config, reference.step)] = step_metrics(folder, reference.step)
        metrics = cache[(config, reference.step)]
        ours = as_number(lookup(metrics, reference.metric))
        missing = "" if ours is not None else ("step not run" if metrics is None else "not produced by this run")
        table.cells[position] = Cell(ours, reference.value, missing)
        paths = floor_paths(reference.metric)
        floor = as_number(lookup(metrics, paths.value)) if paths else None
        if paths and floor is not None:
            row = floors.setdefault(reference.table, {}).setdefault((reference.row, paths.name), {})
            row[reference.column] = FloorCell(floor.value, as_number(lookup(metrics, paths.difference)))
    for label, rows in floors.items():
        tables[label].floors = _floor_rows(tables[label].layout, rows)
    return list(tables.values())


def _floor_rows(layout: TableLayout, rows: dict[tuple[str, str], dict[str, FloorCell]]) -> list[FloorRow]:
    """Floor rows in the table's row order, one per row of ours (each with that row's paired differences)."""
    ordered = sorted(rows.items(), key=lambda item: layout.rows.index(item[0][0]))
    return [FloorRow(f"{row}: {name}", cells) for (row, name), cells in ordered]
