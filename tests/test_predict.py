"""``cxrlens predict`` and ``cxrlens export --onnx`` on real radiographs (8-bit and 16-bit PNG,
DICOM), boxes in the source pixels, PCM refinement, bad files, and ONNX Runtime parity."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cxrlens.checkpoints import (CheckpointError, ClassifierCheckpoint, PCMSpec, RefinedCheckpoint, load_checkpoint,
                                 save_checkpoint)
from cxrlens.cli import app
from cxrlens.data.preprocess import fit_geometry
from cxrlens.explain.boxes import heatmap_to_boxes
from cxrlens.infer.onnx_model import ExportedClassifier, OnnxClassifier, export_onnx
from cxrlens.infer.predictor import Predictor
from cxrlens.models import load_classifier
from cxrlens.models.pcm import PixelCorrelationModule
from synthetic import write_dicom

runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, nih_bbox_root: Path, oblong_radiograph: Path) -> dict[str, Path]:
    """One real NIH radiograph as 8-bit PNG, 16-bit PNG and 16-bit DICOM; a real non-square Cohen JPEG."""
    folder = tmp_path_factory.mktemp("inputs")
    nih = sorted((nih_bbox_root / "images").glob("*.png"))[0]
    pixels = np.asarray(Image.open(nih).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(pixels).save(folder / "sixteen.png")
    write_dicom(folder / "sixteen.dcm", pixels, BitsStored=16, HighBit=15)
    return {"png8": nih, "png16": folder / "sixteen.png", "dicom": folder / "sixteen.dcm", "jpeg": oblong_radiograph}


def test_predict_writes_probabilities_overlays_and_boxes_in_source_pixels(tiny_classifier: Path, inputs: dict,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(tiny_classifier), *(str(p) for p in inputs.values()), "--out", str(out),
                                 "--top", "2", "--max-side", "300"])
    assert result.exit_code == 0, result.output
    payloads = {key: json.loads((out / f"{path.stem}.json").read_text()) for key, path in inputs.items()}
    for key, payload in payloads.items():
        width, height = Image.open(inputs[key]).size if key != "dicom" else Image.open(inputs["png8"]).size
        assert (payload["width"], payload["height"]) == (width, height), key
        probabilities = payload["probabilities"]
        assert len(probabilities) == 14 and all(0 < p < 1 for p in probabilities.values())
        top = [entry["finding"] for entry in payload["top_findings"]]
        assert top == sorted(probabilities, key=probabilities.get, reverse=True)[:2]
        thresholds = payload["thresholds"]  # the checkpoint's operating thresholds decide the calls
        assert payload["positive_findings"] == [name for name in sorted(probabilities, key=probabilities.get,
                                                                        reverse=True)
                                                if probabilities[name] >= thresholds[name]]
        assert sorted(payload["overlays"]) == sorted(top)
        for finding, name in payload["overlays"].items():
            picture = Image.open(out / name)
            assert picture.mode == "RGB" and max(picture.size) == min(300, max(width, height))
        for boxes in payload["boxes"].values():
            for box in boxes:
                assert 0 <= box["x"] and box["x"] + box["w"] <= width + 1e-6
                assert 0 <= box["y"] and box["y"] + box["h"] <= height + 1e-6
    # the 16-bit copies hold the 8-bit values times 257: same pixels after the uint8 fit, same answer
    assert payloads["png16"]["probabilities"] == payloads["png8"]["probabilities"]
    np.testing.assert_allclose(list(payloads["dicom"]["probabilities"].values()),
                               list(payloads["png8"]["probabilities"].values()), atol=2e-3)
    table = (out / "predictions.csv").read_text().splitlines()
    assert len(table) == 5 and table[0].startswith("image,Atelectasis") and table[0].endswith(",positive_findings")
    written = {record["source"]: record for record in (json.loads(path.read_text()) for path in out.glob("*.json"))
               if "source" in record}  # not the folder's cxrlens.json
    for row in csv.DictReader(table):  # the calls at the checkpoint's operating thresholds, as in the JSON
        calls = written[row["image"]]["positive_findings"]
        assert row["positive_findings"] == "|".join(sorted(calls, key=list(row).index))
    again = runner.invoke(app, ["predict", str(tiny_classifier), str(inputs["png8"]), "--out", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output


def test_source_pixel_boxes_match_boxes_read_off_the_resampled_heatmap() -> None:
    """A hot block in a 64 px map of a 300 x 200 image, squashed or padded: reading the box in model
    pixels and mapping it back agrees with resampling the map to the image and reading it there."""
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[20:36, 8:24] = 1.0
    for fit in ("squash", "pad"):
        geometry = fit_geometry(300, 200, 64, fit)
        mapped = geometry.to_source(heatmap_to_boxes(heatmap, 0.5, "relative")[0])
        resampled = heatmap_to_boxes(geometry.map_to_source(heatmap, 300, 200), 0.5, "relative")[0]
        assert len(heatmap_to_boxes(geometry.map_to_source(heatmap, 300, 200), 0.5, "relative")) == 1
        np.testing.assert_allclose(mapped.as_xyxy(), resampled.as_xyxy(), atol=3.0, err_msg=fit)


def test_bad_files_get_one_line_errors_and_the_good_ones_are_still_written(tiny_classifier: Path, inputs: dict,
                                                                           tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(inputs["png8"].read_bytes()[:2000])
    report = tmp_path / "report.dcm"
    write_dicom(report, np.zeros((4, 4)))
    import pydicom

    dataset = pydicom.dcmread(report)
    del dataset.PixelData
    dataset.save_as(report)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(tiny_classifier), str(text), str(truncated), str(report),
                                 str(tmp_path / "missing.png"), str(inputs["png8"]), "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 4
    for path, reason in ((text, "not a recognised image"), (truncated, "truncated"), (report, "no pixel data"),
                         (tmp_path / "missing.png", "does not exist")):
        assert any(str(path) in line and reason in line for line in lines), (path, lines)
    assert "Traceback" not in result.output
    assert (out / f"{inputs['png8'].stem}.json").is_file()


def test_refine_pcm_changes_the_maps_and_needs_a_pcm(tiny_classifier: Path, inputs: dict, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["predict", str(tiny_classifier), str(inputs["png8"]), "--out", str(tmp_path / "a"),
                                  "--refine", "pcm"])
    assert missing.exit_code == 2 and "has no PCM" in missing.output
    checkpoint = load_checkpoint(tiny_classifier, ClassifierCheckpoint)
    pcm = PixelCorrelationModule(512, 32)
    refined = tmp_path / "refined.ckpt"
    save_checkpoint(RefinedCheckpoint(**dict(checkpoint), pcm=PCMSpec(in_channels=512, embed_channels=32),
                                      pcm_state=pcm.state_dict()), refined)
    image = Predictor(refined).read(inputs["png8"])
    plain = Predictor(refined).predict([image], ["x"])[0]
    with_pcm = Predictor(refined, refine=True).predict([image], ["x"])[0]
    assert plain.probabilities == with_pcm.probabilities
    assert any(not np.allclose(plain.heatmaps[f], with_pcm.heatmaps[f], atol=1e-3) for f in plain.heatmaps)
    result = runner.invoke(app, ["predict", str(refined), str(inputs["png8"]), "--out", str(tmp_path / "b"),
                                 "--refine", "pcm", "--cam", "gradcampp"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / f"{inputs['png8'].stem}.json").read_text())["cam"] == "gradcampp + PCM"


def test_onnx_export_matches_pytorch_and_serves_predict(tiny_classifier: Path, inputs: dict, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(tiny_classifier.read_bytes())
    result = runner.invoke(app, ["export", str(checkpoint), "--onnx"])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "model.onnx"
    assert "# Model card: model.ckpt" in (tmp_path / "model.card.md").read_text()  # shipped beside the export
    runtime = OnnxClassifier(exported)
    assert runtime.metadata["classes"][0] == "Atelectasis" and runtime.metadata["input"]["size"] == 64
    # parity on real radiographs, batch size other than the export's
    predictor = Predictor(checkpoint)
    images = [predictor.read(path) for path in inputs.values()]
    batch = predictor.inputs(images)  # fitted to 64 px as in training, normalised
    with torch.no_grad():
        expected = ExportedClassifier(load_classifier(checkpoint).model)(batch)
    for name, ours, theirs in zip(("probabilities", "logits", "features"), runtime(batch), expected):
        assert ours.shape == theirs.shape and float((ours - theirs).abs().max()) < 1e-4, name
    # predict --runtime onnx: same probabilities and boxes as PyTorch
    for backend in ("torch", "onnx"):
        outcome = runner.invoke(app, ["predict", str(checkpoint), str(inputs["png8"]), "--out", str(tmp_path / backend),
                                      "--runtime", backend, "--cam", "scorecam"])
        assert outcome.exit_code == 0, outcome.output
    torch_json, onnx_json = (json.loads((tmp_path / b / f"{inputs['png8'].stem}.json").read_text())
                             for b in ("torch", "onnx"))
    assert onnx_json["runtime"] == "onnx"
    np.testing.assert_allclose(list(onnx_json["probabilities"].values()), list(torch_json["probabilities"].values()),
                               atol=1e-4)
    assert onnx_json["boxes"] == torch_json["boxes"]
    # the default (auto) times both on one batch and runs the faster; without an export, PyTorch, saying why
    chosen = Predictor(checkpoint)
    assert chosen.runtime in ("torch", "onnx") and "ONNX Runtime" in chosen.runtime_reason
    assert (chosen.onnx is not None) == (chosen.runtime == "onnx")
    exported.rename(tmp_path / "elsewhere.onnx")
    alone = Predictor(checkpoint)
    assert alone.runtime == "torch" and alone.runtime_reason.startswith(f"{exported}: no ONNX export")
    assert "faster" in Predictor(checkpoint, onnx=tmp_path / "elsewhere.onnx").runtime_reason  # --onnx elsewhere
    (tmp_path / "elsewhere.onnx").rename(exported)
    # an export of other weights is refused, not silently used
    state = load_checkpoint(checkpoint, ClassifierCheckpoint)
    state.state = {key: value + 1 if value.is_floating_point() else value for key, value in state.state.items()}
    save_checkpoint(state, checkpoint)
    with pytest.raises(CheckpointError, match="exported from other weights"):
        Predictor(checkpoint, runtime="onnx")
    stale = Predictor(checkpoint)  # auto never runs a stale export
    assert stale.runtime == "torch" and "exported from other weights" in stale.runtime_reason
    with pytest.raises(FileExistsError):
        export_onnx(checkpoint)


def test_a_checkpoint_without_an_input_size_is_refused(tiny_classifier: Path, tmp_path: Path) -> None:
    current = load_checkpoint(tiny_classifier, ClassifierCheckpoint)  # written as cxrlens 0.1 did, without "input"
    old = tmp_path / "old.ckpt"
    torch.save({"model": current.state, "model_config": current.network.model_dump(), "classes": current.classes,
                "normalisation": current.normalisation.model_dump(), "epoch": 1}, old)
    result = runner.invoke(app, ["predict", str(old), str(old), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "records no input size" in result.output


def test_feature_statistics_score_is_the_ppca_distance_and_the_threshold_the_held_out_percentile() -> None:
    from cxrlens.train.feature_statistics import summarise

    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 12)) * np.linspace(3, 0.5, 12)
    held_out = rng.normal(size=(100, 12)) * np.linspace(3, 0.5, 12)
    statistics = summarise(train, held_out, components=4)
    assert statistics.threshold == pytest.approx(np.percentile(statistics.score(held_out), 99))
    centred = held_out[:5] - train.mean(axis=0)
    axes = np.asarray(statistics.components)
    on_axes = centred @ axes.T
    off_axes = centred - on_axes @ axes
    expected = (on_axes ** 2 / statistics.variances).sum(axis=1) + (off_axes ** 2).sum(axis=1) / \
        statistics.residual_variance
    np.testing.assert_allclose(statistics.score(held_out[:5]), expected, rtol=1e-9)


def test_inputs_the_model_should_not_be_trusted_on_are_flagged(tiny_classifier: Path, nih_bbox_root: Path,
                                                               tmp_path: Path) -> None:
    """A natural photograph and inverted radiographs are out of the training distribution (the negative of an
    inverted one is in it); a DICOM lateral, a washed-out and a clipped radiograph are named; NIH's held-out
    frontal test images are not flagged (false alarms measured; the threshold is the validation images' 99th
    percentile)."""
    from skimage import data

    predictor = Predictor(tiny_classifier, runtime="torch")
    statistics = load_checkpoint(tiny_classifier, ClassifierCheckpoint).feature_statistics
    assert statistics is not None and statistics.held_out > 0 and statistics.percentile == 99
    frontal = [predictor.read(path) for path in sorted((nih_bbox_root / "images").glob("*.png"))[:40]]
    held_out = predictor.predict(frontal, [f"frontal-{row}" for row in range(len(frontal))])
    assert sum(bool(prediction.warnings) for prediction in held_out) <= 2  # measured: 0 of 40
    [photograph] = predictor.predict([data.astronaut().mean(axis=2) / 255.0], ["astronaut"])
    assert photograph.warnings and photograph.warnings[0].startswith("out of distribution")
    inverted = predictor.predict([1.0 - radiograph.image for radiograph in frontal[:20]],
                                 [f"inverted-{row}" for row in range(20)])
    called = [prediction for prediction in inverted if any(w.startswith("intensity probably inverted")
                                                           for w in prediction.warnings)]
    assert called  # measured: 7 of 20 out of distribution, each of them called inverted
    pixels = np.asarray(Image.open(sorted((nih_bbox_root / "images").glob("*.png"))[0]).convert("L"), dtype=np.uint16)
    write_dicom(tmp_path / "lateral.dcm", pixels * 257, BitsStored=16, HighBit=15, ViewPosition="LL")
    [lateral] = predictor.predict([predictor.read(tmp_path / "lateral.dcm")], ["lateral"])
    assert any(w.startswith("lateral view (DICOM ViewPosition LL)") for w in lateral.warnings)
    image = frontal[0].image
    washed, clipped = predictor.predict([0.5 + 0.02 * (image - 0.5), (image > 0.5).astype(np.float32)],
                                        ["washed", "clipped"])
    assert any(w.startswith("very low contrast") for w in washed.warnings)
    assert any(w.startswith("clipped") for w in clipped.warnings)
    assert photograph.to_dict()["warnings"] == list(photograph.warnings)
