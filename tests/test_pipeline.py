"""Experiments: every paper config validates at the papers' settings and runs end to end in smoke mode."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrlens.checkpoints import ClassifierCheckpoint, load_checkpoint
from cxrlens.cli import app
from cxrlens.config import Normalisation, SplitConfig
from cxrlens.data.chexpert import CHEXPERT_CLASSES
from cxrlens.data.cohen import COHEN_CLASSES
from cxrlens.data.kermany import KERMANY_CLASSES
from cxrlens.data.labels import canonical
from cxrlens.data.nih import NIH_CLASSES
from cxrlens.data.provenance import digest
from cxrlens.experiment import (CompareStep, EvaluateStep, Experiment, LinearEvalStep, PretrainStep, RefineStep,
                                TrainStep, load_experiment, profile_version, smoke_version)
from cxrlens.pipeline import ExperimentCheckError, run_experiment
from cxrlens.tables import write_tables
from cxrlens.tables.layouts import paper_tables
from browser import CHROMIUM, open_page

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
runner = CliRunner()


def _steps(name: str) -> dict:
    return {step.name: step for step in load_experiment(Path(__file__).parents[1] / "configs" / name).steps}


def test_there_is_a_config_per_paper_experiment() -> None:
    names = {path.stem for path in CONFIGS}
    assert {"quickstart", "paper000-baseline", "paper000-ssl-ft", "paper000-ssl-camloss-ft", "paper000-cam-methods",
            "paper000-resnet-depth", "paper000-xrv", "paper001-simclr-resnet50", "paper001-simclr-resnet101",
            "paper002-simclr-linear", "paper003-resnet50", "paper003-efficientnet-b4", "paper004-lse-lba"} <= names


def test_configs_carry_the_papers_settings() -> None:
    camloss = _steps("paper000-ssl-camloss-ft.yaml")["byol-cam"].config
    method = camloss.method
    assert (method.name, method.cam_lambda, method.tau, method.dim, method.hidden) == ("byol-cam", 2.0, 0.99, 256, 512)
    assert (camloss.train.epochs, camloss.train.batch_size, camloss.train.lr, camloss.train.betas) == (
        500, 128, 1e-4, (0.9, 0.999))
    simclr = _steps("paper001-simclr-resnet50.yaml")
    assert (simclr["simclr"].config.method.temperature, simclr["simclr"].config.train.batch_size,
            simclr["simclr"].config.train.epochs) == (0.1, 64, 400)
    head = simclr["cell-simclr"]
    assert (head.model.head, head.train.epochs, head.train.batch_size, head.train.lr) == ("mlp", 30, 16, 1e-4)
    wide = _steps("paper002-simclr-linear.yaml")
    assert {step.config.fraction for step in wide.values() if isinstance(step, PretrainStep)} == {0.01, 0.1, 1.0}
    pretext = wide["simclr-1pct"].config
    assert (pretext.encoder.backbone, pretext.method.temperature, pretext.train.lr, pretext.method.projection) == (
        "wide_resnet50_2", 0.5, 5e-4, "bn")
    assert wide["linear-cell-1pct"].config.c_grid == (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
    multires = _steps("paper003-resnet50.yaml")
    model, train = multires["multires"].model, multires["multires"].train
    assert (model.arch, model.pooling, model.lse_gamma, model.trainable_from) == ("multires", "lse", 10.0, 3)
    assert (train.lr, train.betas, train.batch_size, train.accumulate, train.epochs, train.loss) == (
        3e-4, (0.9, 0.9), 32, 3, 35, "dynamic-bce")
    seam = multires["multires-pcm"].config
    assert (seam.rotation, seam.ohem_keep, seam.lambda_msml, seam.lambda_ecr, seam.train.lr, seam.train.epochs) == (
        30.0, 0.2, 1.5, 1.0, 1e-6, 3)
    lba = _steps("paper004-lse-lba.yaml")
    assert sorted(step.model.lba_r0 for step in lba.values() if isinstance(step, TrainStep)) == [0.0, 5.0, 10.0]
    assert load_experiment(Path(__file__).parents[1] / "configs" / "paper004-lse-lba.yaml").data["nih"].size == 512


def _experiment(name: str):  # noqa: ANN202
    return load_experiment(Path(__file__).parents[1] / "configs" / name)


def test_configs_follow_the_papers_protocols() -> None:
    """Splits, tasks, schedules and scoring rules as each paper states them (deviations: docs/deviations.md)."""
    for name in ("paper000-baseline.yaml", "paper000-ssl-ft.yaml", "paper000-ssl-camloss-ft.yaml"):
        steps = _steps(name)
        train = next(step for step in steps.values() if isinstance(step, TrainStep))
        assert (train.split.val_fraction, train.train.plateau_on, train.train.plateau_patience, train.train.min_lr,
                train.train.augment, train.train.intensity_stats) == (0.2, "train-loss", 4, 1e-6, "affine",
                                                                      "training-images")
        chexpert = _experiment(name).data["chexpert"]
        assert chexpert.options == {"uncertain": "zeros", "views": "all"}
        nih_test = steps["nih-test"]
        assert (nih_test.split, nih_test.splits, nih_test.box_test_fraction, nih_test.box_rule,
                nih_test.threshold) == ("test", "official-disjoint", 0.2, "absolute", 127)
        for pretrain in (step for step in steps.values() if isinstance(step, PretrainStep)):
            assert (pretrain.config.images, pretrain.config.box_test_fraction) == ("train", 0.2)
    assert _steps("paper000-baseline.yaml")["baseline"].model.weights is None  # from scratch, not ImageNet
    for depth in ("50", "101"):
        steps, data = _steps(f"paper001-simclr-resnet{depth}.yaml"), _experiment(f"paper001-simclr-resnet{depth}.yaml").data
        assert data["nih-pneumonia"].task.positive == "Pneumonia" and not data["nih-pneumonia"].task.matched
        assert steps["nih-imagenet"].model.weights == steps["cell-imagenet"].model.weights == "imagenet"
        assert {steps[name].data for name in ("nih-simclr", "nih-imagenet")} == {"nih-pneumonia"}
        assert (steps["simclr"].config.images, steps["simclr"].config.box_test_fraction) == ("all", 0.0)  # 112,120
    wide = _experiment("paper002-simclr-linear.yaml")
    assert wide.data["covidgr"].dataset == "covidgr" and wide.data["nih"].task.matched
    assert all(step.config.fractions == (1.0,) for step in wide.steps if isinstance(step, LinearEvalStep))
    for name in ("paper003-resnet50.yaml", "paper003-efficientnet-b4.yaml"):
        for step in _steps(name).values():
            if isinstance(step, TrainStep):
                assert (step.split.val_fraction, step.split.no_finding_images) == (0.2, 5000)
            if isinstance(step, EvaluateStep):
                assert (step.data, step.split, step.splits, step.box_test_fraction) == ("nih", "test",
                                                                                       "official-disjoint", None)
    for step in _steps("paper004-lse-lba.yaml").values():
        if isinstance(step, TrainStep):
            assert (step.split.val_fraction, step.train.mean, step.train.std, step.model.weights,
                    step.train.augment) == (0.25, 0.0, 1.0, None, "zoom-shift-rotate")
        if isinstance(step, EvaluateStep):
            assert (step.normalize_maps, step.box_rule, step.threshold_sweep) == (False, "probability",
                                                                                   (0.1, 0.4, 0.8))
            assert (step.data, step.split, step.splits, step.box_test_fraction) == ("nih", "test", "official-disjoint",
                                                                                   None)


def test_a_profile_changes_only_what_it_names(tmp_path: Path) -> None:
    base = load_experiment(Path(__file__).parents[1] / "configs" / "paper003-resnet50.yaml")
    cpu = profile_version(base, "cpu")
    assert (cpu.name, cpu.scale, cpu.config_name) == ("paper003-resnet50-cpu", "cpu", "paper003-resnet50")
    assert cpu.scale_description == base.profiles["cpu"].description
    assert (cpu.data["nih"].dataset, cpu.data["nih"].roots, cpu.data["nih"].options) == (
        "sample", ["nih-sample", "nih-bbox"], {})
    pretrain, standard, paper = cpu.steps[0], cpu.steps[1], base.steps[0]
    assert (pretrain.kind, pretrain.data, pretrain.config.images) == ("pretrain", ["kermany", "nih-pretext", "covid"],
                                                                      "train")
    assert cpu.data["kermany"].roots == ["kermany", "kermany-more"] and "kermany" not in base.data
    assert (standard.encoder, standard.model.lse_gamma, standard.train.epochs) == ("pretrain-simclr", 1.0, 15)
    assert (standard.train.lr, standard.train.betas, standard.model.pooling) == (paper.train.lr, paper.train.betas, "lse")
    assert [step.name for step in cpu.steps] == ["pretrain-simclr", *(step.name for step in base.steps)]
    untouched = {step.name: step.model_dump(exclude_unset=True) for step in base.steps}
    for step in cpu.steps[1:]:  # what the config leaves unset stays unset (e.g. a fine-tune's normalisation)
        if step.name not in base.profiles["cpu"].steps:
            assert step.model_dump(exclude_unset=True) == untouched[step.name]
    skipped = profile_version(load_experiment(Path(__file__).parents[1] / "configs" / "paper002-simclr-linear.yaml"),
                              "cpu")
    assert not any("covidgr" in step.name for step in skipped.steps)
    assert all(reference.step is None or "covidgr" not in reference.step for reference in skipped.references)
    with pytest.raises(ValueError, match="no profile 'gpu'"):
        profile_version(base, "gpu")
    broken = base.model_copy(update={"profiles": {"cpu": base.profiles["cpu"].model_copy(
        update={"steps": {"nonexistent": {}}})}})
    with pytest.raises(ValueError, match="unknown data or steps"):
        profile_version(broken, "cpu")
    unused = base.model_copy(update={"profiles": {"cpu": base.profiles["cpu"].model_copy(update={"add": []})}})
    with pytest.raises(ValueError, match=r"unknown data or steps \['covid', 'kermany', 'nih-pretext'\]"):
        profile_version(unused, "cpu")  # new data only for the steps a profile adds
    wrong = base.model_copy(update={"profiles": {"cpu": base.profiles["cpu"].model_copy(
        update={"steps": {"standard": {"train": {"epochs": -1}}}})}})
    with pytest.raises(ValueError, match=r"profile cpu"):
        profile_version(wrong, "cpu")
    result = runner.invoke(app, ["run", "paper003-resnet50", "--smoke", "--profile", "cpu"])
    assert result.exit_code == 2 and "give one" in result.output
    result = runner.invoke(app, ["tables", str(tmp_path)])
    assert result.exit_code == 2 and "summary.json: missing" in result.output and "Traceback" not in result.output


def test_bad_experiments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npaper: '0'\ndescription: d\ndata: {a: {dataset: sample, roots: [kermany]}}\n"
                   "steps:\n  - {kind: evaluate, name: e, data: a, checkpoint: nothing}\n")
    with pytest.raises(ValueError, match="earlier train\\|refine step"):
        load_experiment(bad)
    bad.write_text("name: x\npaper: '0'\ndescription: d\ndata: {}\nsteps:\n  - {kind: train, name: t, data: b}\n")
    with pytest.raises(ValueError, match="unknown data 'b'"):
        load_experiment(bad)
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "unknown data" in result.output
    bad.write_text("name: x\npaper: '0'\ndescription: d\ndata: {a: {dataset: sample, roots: [nih-sample]}}\n"
                   "steps:\n  - {kind: train, name: t, data: a}\n  - {kind: train, name: u, data: a}\n"
                   "  - {kind: compare, name: c, data: a, model: t, baseline: u, claim: 't > u'}\n")
    with pytest.raises(ValueError, match="needs model = an earlier evaluate step"):
        load_experiment(bad)  # a compare step pairs two evaluations, not two checkpoints


def test_compare_refuses_evaluations_of_other_images(data_root: Path) -> None:
    """Two evaluations of other splits cannot be compared paired: the check says so before anything runs."""
    from cxrlens.pipeline import check_experiment, open_data

    experiment = Experiment.model_validate({
        "name": "x", "paper": "0", "description": "d",
        "data": {"nih": {"dataset": "sample", "roots": ["nih-sample"]}},
        "steps": [{"kind": "train", "name": "t", "data": "nih"},
                  {"kind": "evaluate", "name": "test", "data": "nih", "checkpoint": "t", "split": "test"},
                  {"kind": "evaluate", "name": "all", "data": "nih", "checkpoint": "t", "split": "val"},
                  {"kind": "compare", "name": "c", "data": "nih", "model": "test", "baseline": "all", "claim": "a > b"}]})
    datasets = {"nih": open_data(experiment.data["nih"], data_root)}
    with pytest.raises(ExperimentCheckError) as refused:
        check_experiment(experiment, datasets)
    assert "c: test and all must evaluate the same images of 'nih'" in str(refused.value)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline-cache")


KNOWN_FINDINGS = {canonical(name) for name in (*NIH_CLASSES, *CHEXPERT_CLASSES, *KERMANY_CLASSES, *COHEN_CLASSES)}
_FINDING_LEVEL = re.compile(r"^(classification|localization/by_finding|localization/threshold_sweep/[^/]+/by_finding|"
                            r"results/[^/]+)$")


def _resolved(metrics: dict, path: str) -> float | None:
    """The number at ``path`` in a step's metrics.json (a bare number or a ``{"value", "low", "high"}`` node); None
    only where a smoke run legitimately lacks it: no evaluated image with a box, a finding with no box or no positive
    among the few images, or one its stand-in training set lacks. A path naming a field, or a name that is no
    finding of any reader, fails."""
    predicted = {canonical(name) for name in metrics.get("classes", ())}  # an evaluation's (linear-eval: none)
    value: object = metrics
    parents: list[str] = []
    for part in path.split("/"):
        if value is None and parents == ["localization"]:
            return None
        assert isinstance(value, dict), f"{path}: {'/'.join(parents)} is not a mapping"
        if _FINDING_LEVEL.match("/".join(parents)):
            assert part in KNOWN_FINDINGS, f"{path}: {part!r} is no finding of any reader (canonical names)"
            if (predicted and part not in predicted) or part not in value or "skipped" in value[part]:
                return None  # a smoke model trained on a stand-in set may not predict the full run's findings
        assert part in value, f"{path}: metrics.json has no {'/'.join([*parents, part])}"
        value = value[part]
        parents.append(part)
    if isinstance(value, dict):
        value = value.get("value")
    assert isinstance(value, (int, float)), f"{path}: not a number ({value!r})"
    return float(value)


ONE_PER_PAPER = {"paper000-cam-methods", "paper001-simclr-resnet50", "paper002-simclr-linear", "paper003-resnet50",
                 "paper004-lse-lba"}


def _check_tables(folder: Path, experiment: Experiment, summary: dict) -> None:
    """The run's paper's tables in the layouts' shapes, each of ours the number its metrics hold; for one config per
    paper also every format, the figures, the experiment's page, and the same tables from a copy of the runs."""
    layouts = paper_tables(experiment.paper)
    csv_rows = list(csv.DictReader(io.StringIO(write_tables(folder, "csv")[0])))
    for layout in layouts:
        ours = [row for row in csv_rows if row["table"] == layout.label and row["kind"] == "ours"]
        assert [(row["row"], row["column"]) for row in ours] == [(r, c) for r in layout.rows for c in layout.columns]
    cells = {(row["table"], row["row"], row["column"]): row for row in csv_rows if row["kind"] == "ours"}
    for reference in summary["references"]:
        if reference["step"] is None:
            continue
        metrics = json.loads((folder / reference["step"] / "metrics.json").read_text())
        value = _resolved(metrics, reference["metric"])
        cell = cells[(reference["table"], reference["row"], reference["column"])]
        assert (float(cell["value"]) if cell["value"] else None) == (None if value is None else
                                                                   pytest.approx(value, rel=1e-5)), reference
        assert cell["paper"] == (reference["value"] or "")
    if experiment.config_name not in ONE_PER_PAPER:
        return
    markdown_text = write_tables(folder, "md")[0]
    for layout in layouts:
        assert f"## {layout.label}: {layout.caption}" in markdown_text
    assert "SMOKE scale" in markdown_text
    assert all(layout.label in write_tables(folder, "latex")[0] for layout in layouts)
    page = write_tables(folder, "html")[0]
    assert page.count("<table class=paper>") == len(layouts)
    report = (folder / "report.html").read_text()
    assert report.count("<table class=paper>") == len(layouts)
    assert re.findall(r'<img src="([^"]+)"', report) == [f"tables/{name}" for name in re.findall(r'<img src="([^"]+)"', page)]
    for image in re.findall(r'<img src="([^"]+)"', report):
        assert not Path(image).is_absolute() and (folder / image).is_file()
    if experiment.config_name == "paper000-cam-methods" and CHROMIUM is not None:  # a page with a figure, in a browser
        _check_page_in_chromium(folder / "report.html", layouts)
    original, copied, away = write_tables(folder, "csv")[0], folder.parent.parent / "copied", folder.parent.parent / "away"
    shutil.copytree(folder.parent, copied)
    shutil.move(folder.parent, away)  # the copy must not lean on the original
    try:
        assert write_tables(copied / folder.name, "csv")[0] == original
    finally:
        shutil.move(away, folder.parent)


def _check_page_in_chromium(path: Path, layouts: list) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        browser, page = open_page(driver, path)
        widths = page.evaluate("Array.from(document.images).map(image => image.naturalWidth)")
        headings = page.locator("h2").all_inner_texts()
        floor_rows = page.locator("table.paper tr.floor").count()
        browser.close()
    assert widths and all(width > 0 for width in widths)  # every figure loads from its relative path
    assert all(layout.label in headings for layout in layouts) and "Steps" in headings
    assert floor_rows > 0


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_config_runs_in_smoke_mode(config: Path, tmp_path: Path, shared_cache: Path, data_root: Path,
                                        xrv_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(xrv_home))  # TorchXRayVision's published models (random weights here)
    experiment = smoke_version(load_experiment(config))
    published = {step.data for step in experiment.steps if getattr(step, "published", False)}
    assert all(spec.dataset == "sample" and (spec.size, spec.fit) == ((224, "crop") if key in published else (64, "squash"))
               for key, spec in experiment.data.items())
    summary = run_experiment(experiment, tmp_path / "runs", shared_cache, data_root, "cpu", log=lambda _: None)
    folder = tmp_path / "runs" / experiment.name
    assert json.loads((folder / "summary.json").read_text())["steps"].keys() == {s.name for s in experiment.steps}
    plans = json.loads((folder / "plan.json").read_text())
    steps = {step.name: step for step in experiment.steps}
    assert [plan["name"] for plan in plans] == [step.name for step in experiment.steps]
    assert not any(plan["problems"] for plan in plans)
    planned = {plan["name"]: plan["data"] for plan in plans}
    for step in experiment.steps:
        record = summary["steps"][step.name]
        assert Path(record["output"]).exists(), step.name
        if isinstance(step, (PretrainStep, TrainStep, RefineStep)):  # the check planned exactly what the run used
            provenance = load_checkpoint(record["output"]).provenance
            assert digest(provenance) == planned[step.name], step.name
            if isinstance(step, TrainStep) and step.encoder and (
                    steps[step.encoder].config.method.boxes_per_batch()):  # the encoder's CAM-loss boxes travel on
                assert any("cam-loss" in entry.images for entry in provenance), step.name
        if isinstance(step, TrainStep) and step.train.intensity_stats == "training-images":
            assert load_checkpoint(record["output"], ClassifierCheckpoint).normalisation != Normalisation()
        if isinstance(step, EvaluateStep):
            assert Path(record["report"]).is_file()
            metrics = json.loads(Path(record["output"]).read_text())
            assert (metrics["split"], metrics["splits"]["mode"], metrics["box_test_fraction"]) == (
                step.split, step.splits, step.box_test_fraction)  # the config's protocol, not a smoke one
            overlap = metrics["data_overlap"]
            assert not overlap["allowed"] and not any(entry["either"] for entry in overlap["roles"].values()
                                                      if entry["supervised"]), step.name
            if step.box_rule == "probability" and metrics["localization"]:  # tau thresholds probabilities
                assert metrics["localization"]["prior_weighted"] is None
            auc = metrics["classification_mean"]["auc"]
            assert 0 <= auc <= 1 or auc != auc
        if isinstance(step, CompareStep):  # paired on the same images: the same rows both evaluations wrote
            metrics = json.loads(Path(record["output"]).read_text())
            scored = [Path(summary["steps"][name]["output"]).parent / "predictions.csv" for name in (step.model, step.baseline)]
            assert metrics["images"] == scored[0].read_text().count("\n") - 1
            assert [claim["claim"] for claim in metrics["verdict"]] == [
                f"{step.claim} (mean AUROC)", f"{step.claim} (iou)", f"{step.claim} (acc@0.5)"]
            assert "localization" in metrics and record["verdict"] == metrics["verdict"]
            assert set(metrics["localization"]["iou"]) == {"model", "baseline", "difference"}
            if "PCM" in step.claim:  # one classifier, two heatmaps: no AUROC difference to test
                assert metrics["verdict"][0]["untested"].startswith("the same probabilities")
        if isinstance(step, LinearEvalStep):
            assert record["mean_auc"]
            overlap = json.loads(Path(record["output"]).read_text())["data_overlap"]
            assert not any(entry["either"] for entry in overlap["roles"].values() if entry["supervised"])
    _check_tables(folder, experiment, summary)


def test_rerun_skips_finished_steps_and_cli_prints_the_summary(tmp_path: Path, shared_cache: Path,
                                                               data_root: Path) -> None:
    arguments = ["run", "quickstart", "--smoke", "--runs", str(tmp_path), "--cache", str(shared_cache),
                 "--device", "cpu", "--data-root", str(data_root)]
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    assert "mean AUROC" in first.output and "location prior" in first.output and "report.html" in first.output
    marker = tmp_path / "quickstart-smoke" / "pretrain-simclr" / "step.json"
    stamp = marker.stat().st_mtime
    second = runner.invoke(app, arguments)
    assert second.exit_code == 0 and second.output.count("done earlier, skipped") == 5
    assert marker.stat().st_mtime == stamp
    experiment = smoke_version(load_experiment(Path(__file__).parents[1] / "configs" / "quickstart.yaml"))
    edited = [step.model_copy(update={"split": SplitConfig(val_fraction=0.3)}) if isinstance(step, TrainStep) else step
              for step in experiment.steps]  # a finished step's images change: it is not silently reused
    with pytest.raises(ValueError, match="nih-finetune: finished earlier on other images than the config now selects"):
        run_experiment(experiment.model_copy(update={"steps": edited}), tmp_path, shared_cache, data_root, "cpu",
                       log=lambda _: None)
