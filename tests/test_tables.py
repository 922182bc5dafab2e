"""``cxrlens tables`` on hand-made run folders: cells in the paper's unit and precision, CIs, floors, runs gathered by
paper and scale, and cells of experiments that did not run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.tables.assemble import assemble
from cxrlens.tables.render import cell_text, number
from cxrlens.tables.runs import paper_runs

runner = CliRunner()


def _run(root: Path, config: str, paper: str, scale: str, steps: dict[str, dict]) -> Path:
    folder = root / (config if scale == "full" else f"{config}-{scale}")
    for step, metrics in steps.items():
        (folder / step).mkdir(parents=True)
        (folder / step / "metrics.json").write_text(json.dumps(metrics))
    (folder / "summary.json").write_text(json.dumps({
        "experiment": folder.name, "config": config, "paper": paper, "scale": scale, "scale_description": "test",
        "steps": {step: {"kind": "evaluate"} for step in steps}, "references": []}))
    return folder


def _localization(acc: float, prior: float) -> dict:
    entry = {"acc@0.1": {"model": {"value": acc, "low": acc - 0.1, "high": acc + 0.1},
                         "prior": {"value": prior, "low": prior, "high": prior},
                         "difference": {"value": acc - prior, "low": acc - prior - 0.1, "high": acc - prior + 0.1}}}
    return {"by_finding": {"Cardiomegaly": entry}}


def test_cells_floors_and_units(tmp_path: Path) -> None:
    standard = {"localization": _localization(0.5, 0.25), "model_cost": {"parameters": 11177538, "inference_ms": 9.87},
                "classification": {"Cardiomegaly": {"auc": {"value": 0.8, "low": 0.7, "high": 0.9}}},
                "floor": {"findings": {"Cardiomegaly": {"floor": 0.6, "difference": {"value": 0.2, "low": 0.05,
                                                                                       "high": 0.3}}}}}
    folder = _run(tmp_path, "paper003-resnet50", "003", "cpu",
                  {"standard-eval": standard, "multires-eval": {"localization": _localization(0.75, 0.25)}})
    _run(tmp_path, "paper003-resnet50", "003", "smoke", {"standard-eval": {}})  # another scale: not gathered
    copy = _run(tmp_path, "another-copy", "003", "cpu", {"standard-eval": {}})  # the same config, copied beside
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "config": "paper003-resnet50"}))
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "summary.json").write_text(json.dumps({"experiment": "x", "paper": "003"}))  # pre-tables
    runs = paper_runs(folder)
    assert (runs.paper, runs.scale, runs.folders) == ("003", "cpu", {"paper003-resnet50": folder})  # the one asked for
    assert paper_runs(copy).folders == {"paper003-resnet50": copy}
    tables = {table.layout.label: table for table in assemble(runs)}
    table2 = tables["Table 2"]
    cell = table2.cell("Standard ResNet50", "Cardiomegaly")
    assert (cell.ours.value, cell.ours.low, cell.ours.high, cell.paper) == (0.5, 0.4, 0.6, "0.788")
    assert cell_text(cell, False) == "0.500 [0.400, 0.600] (paper: 0.788)"
    assert table2.cell("MultiRes-ResNet50", "Cardiomegaly").ours.value == 0.75
    assert table2.cell("Standard ResNet50", "Atelectasis").missing == "not produced by this run"
    assert table2.cell("Standard EfficientNetB4", "Cardiomegaly").missing == "not run"
    assert table2.cell("MultiRes-ResNet50 (with PCM)", "Cardiomegaly").missing == "step not run"
    # the location prior beside each model, with that model's own paired difference
    assert [(row.label, row.cells["Cardiomegaly"].value, row.cells["Cardiomegaly"].difference.value)
            for row in table2.floors] == [("Standard ResNet50: location prior", 0.25, 0.25),
                                          ("MultiRes-ResNet50: location prior", 0.25, 0.5)]
    table1 = tables["Table 1"]
    assert table1.cell("Cardiomegaly", "Standard ResNet50 [1]").paper == "0.810"  # a result the paper quotes
    assert [row.label for row in table1.floors] == ["Cardiomegaly: raw-pixel floor"]
    floor = table1.floors[0].cells["Standard Resnet50 (our version)"]
    assert (floor.value, floor.difference.low) == (0.6, 0.05)
    table4 = tables["Table 4"]
    parameters = table4.cell("Standard ResNet50", "Number of parameters")
    assert number(parameters.ours.value, parameters.paper, False) == "11,177,538"
    assert cell_text(table4.cell("Standard ResNet50", "Inference time (ms)"), False) == "9.87 (paper: 15.51)"


def test_percent_tables_show_ours_in_the_papers_unit() -> None:
    assert number(0.9154, "97.7", True) == "91.5"
    assert number(0.9154, "83", True) == "91.5"
    assert number(0.9154, "82%", True) == "91.5"
    assert number(0.9154, "0.3334", False) == "0.9154"
    assert number(0.9154, None, False) == "0.915"


def test_tables_command_writes_every_format(tmp_path: Path) -> None:
    folder = _run(tmp_path, "paper004-lse-lba", "004", "cpu", {"lse-lba-r0-5-eval": {"classification_mean": {
        "auc": 0.7}}})
    for fmt, name in (("md", "tables.md"), ("html", "tables.html"), ("csv", "tables.csv"), ("latex", "tables.tex")):
        result = runner.invoke(app, ["tables", str(folder), "--format", fmt])
        assert result.exit_code == 0, result.output
        assert (folder / "tables" / name).is_file()
    text = (folder / "tables" / "tables.md").read_text()
    assert "| A.V.G. | paper: 0.738 |" in text and "0.700 (paper: 0.760)" in text
    assert "\\begin{tabular}" in (folder / "tables" / "tables.tex").read_text()
    result = runner.invoke(app, ["tables", str(folder), "--format", "docx"])
    assert result.exit_code == 2 and "unknown format" in result.output
