"""Hostile but fair input to every entry point: malformed DICOM tags, file names that are not UTF-8,
checkpoints that carry code, misspelt or mistyped configs, caches of another resolution, inconsistent
checkpoints, out-of-range options, and medical record numbers as patient ids. Each is one clear
error line (or a clean success), never a traceback, lost output or a leaked identifier."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from PIL import Image
from typer.testing import CliRunner

from cxrlens.checkpoints import VERSION, ClassifierCheckpoint, load_checkpoint, save_checkpoint
from cxrlens.cli import app
from cxrlens.data.cache import CACHE_FORMAT_VERSION, PreparedCache, prepare_cache
from cxrlens.data.io import CXRImageError, read_image
from cxrlens.data.provenance import describe_roles, overlap
from cxrlens.data.registry import open_dataset, open_sample
from cxrlens.paths import pseudonym_key_id
from synthetic import with_raw_element, write_dicom

runner = CliRunner()
NUMBER_OF_FRAMES, ROWS = 0x00280008, 0x00280010


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture()
def malformed_dicoms(tmp_path: Path, source_pixels: np.ndarray) -> list[Path]:
    """Real pixels in two DICOMs whose numeric tags are text: NumberOfFrames "ab" and Rows "xx"."""
    frames = with_raw_element(write_dicom(tmp_path / "frames.dcm", source_pixels), NUMBER_OF_FRAMES, "IS", b"ab")
    rows = with_raw_element(write_dicom(tmp_path / "rows.dcm", source_pixels), ROWS, "IS", b"xx")
    return [frames, rows]


@pytest.fixture(scope="module")
def source_pixels(nih_bbox_root: Path) -> np.ndarray:
    nih = sorted((nih_bbox_root / "images").glob("*.png"))[0]
    return np.asarray(Image.open(nih).convert("L").resize((64, 64)), dtype=np.uint16) * 16


def test_malformed_dicom_tags_are_one_image_error(malformed_dicoms: list[Path]) -> None:
    for path in malformed_dicoms:
        with pytest.raises(CXRImageError, match=f"{path}: unreadable image .*ValueError"):
            read_image(path)


def test_prepare_records_a_malformed_dicom_and_keeps_the_rest(tmp_path: Path, malformed_dicoms: list[Path],
                                                              source_pixels: np.ndarray) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in malformed_dicoms:
        shutil.move(path, folder / path.name)
    write_dicom(folder / "good.dcm", source_pixels)
    result = runner.invoke(app, ["data", "prepare", "folder", str(folder), "-o", str(tmp_path / "cache"), "--size",
                                 "32", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "1 of 3 images ready" in result.output and "2 image(s) could not be decoded" in result.output
    failures = PreparedCache(tmp_path / "cache").failures()
    assert sorted(Path(f["path"]).name for f in failures) == ["frames.dcm", "rows.dcm"]
    again = runner.invoke(app, ["data", "prepare", "folder", str(folder), "-o", str(tmp_path / "cache"), "--size",
                                "32", "--workers", "1"])
    assert again.exit_code == 0 and "1 of 3 images ready" in again.output  # a re-run does not fail again


def test_predict_names_the_malformed_file_and_writes_the_good_ones(tmp_path: Path, malformed_dicoms: list[Path],
                                                                   source_pixels: np.ndarray,
                                                                   tiny_classifier: Path) -> None:
    good = write_dicom(tmp_path / "good.dcm", source_pixels)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(tiny_classifier), str(malformed_dicoms[0]), str(good),
                                 str(malformed_dicoms[1]), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = _error_lines(result.output)
    assert len(lines) == 2 and all(any(str(path) in line for line in lines) for path in malformed_dicoms)
    assert (out / "good.json").is_file() and (out / "predictions.csv").read_text().count("\n") == 2


def test_file_names_that_are_not_utf8(tmp_path: Path, nih_sample_root: Path, tiny_classifier: Path) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    source = sorted((nih_sample_root / "images").glob("*.png"))[0]
    odd = os.fsdecode(os.fsencode(folder) + b"/bad\xffname.png")
    shutil.copy(source, odd)
    shutil.copy(source, folder / "good.png")
    prepared = runner.invoke(app, ["data", "prepare", "folder", str(folder), "-o", str(tmp_path / "cache"), "--size",
                                   "32", "--workers", "1"])
    assert prepared.exit_code == 0 and "2 of 2 images ready" in prepared.output, prepared.output
    out = tmp_path / "out"
    predicted = runner.invoke(app, ["predict", str(tiny_classifier), str(folder), "--out", str(out)])
    assert predicted.exit_code == 0, predicted.output
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and any("bad\\udcffname.png" in row for row in rows)


@pytest.fixture(scope="module")
def evil_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch exploited",))

    path = tmp_path_factory.mktemp("evil") / "evil.ckpt"
    torch.save({"format": "cxrlens-checkpoint", "model": Exploit()}, path)
    return path


@pytest.fixture(scope="module")
def kermany_cache(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    return prepare_cache(open_sample(data_root, ["kermany"]), tmp_path_factory.mktemp("k") / "c", size=32,
                         workers=1).directory


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "serve", "finetune", "resume"])
def test_a_checkpoint_that_carries_code_is_one_refusal(command: str, evil_checkpoint: Path, kermany_cache: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    if command == "resume":  # a cxrlens run whose last.ckpt was swapped for one that carries code
        (run / "checkpoints").mkdir(parents=True)
        (run / "cxrlens.json").write_text('{"kind": "run"}')
        shutil.copy(evil_checkpoint, run / "checkpoints" / "last.ckpt")
    arguments = {
        "predict": ["predict", str(evil_checkpoint), str(evil_checkpoint), "--out", str(tmp_path / "out")],
        "evaluate": ["evaluate", str(evil_checkpoint), "--cache", str(kermany_cache), "--run", str(run)],
        "export": ["export", str(evil_checkpoint), "--onnx", "--out", str(tmp_path / "x.onnx")],
        "serve": ["serve", str(evil_checkpoint)],
        "finetune": ["finetune", "--encoder", str(evil_checkpoint), "--cache", str(kermany_cache), "--run", str(run)],
        "resume": ["train-supervised", "--cache", str(kermany_cache), "--run", str(run), "--backbone", "resnet18",
                   "--batch-size", "8", "--resume", "--device", "cpu"],
    }[command]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = _error_lines(result.output)
    assert "refused: it holds Python objects" in line and "weights_only" not in result.output
    assert not (tmp_path / "exploited").exists()


@pytest.mark.parametrize(("config", "words"), [
    ("modle: {arch: multires}\n", "unknown key 'modle'; did you mean 'model'?"),
    ("model: resnet50\n", "model: expected a mapping of fields, got str"),
    ("model: {backbone: resnet18, pooling: lse, lse_gama: 5}\n", "unknown key 'lse_gama'; did you mean 'lse_gamma'?"),
    ("train: {epoch: 2}\n", "train: unknown key 'epoch'; did you mean 'epochs'?"),
    ("train: {epochs: many}\n", "epochs: Input should be a valid integer"),
    ("[1, 2]\n", "expected a YAML mapping"),
])
def test_config_mistakes_are_one_line_naming_the_key(config: str, words: str, tmp_path: Path,
                                                     kermany_cache: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    result = runner.invoke(app, ["train-supervised", "--cache", str(kermany_cache), "--run", str(tmp_path / "run"),
                                 "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = _error_lines(result.output)
    assert words in line, line
    assert not (tmp_path / "run").exists()  # nothing started


def test_experiment_keys_are_checked_at_every_level(tmp_path: Path) -> None:
    from cxrlens.experiment import load_experiment

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npaper: '0'\ndescription: d\ndata: {a: {dataset: sample, roots: [kermany]}}\n"
                   "steps:\n  - {kind: train, name: t, data: a, tran: {epochs: 2}}\n")
    with pytest.raises(ValueError, match="unknown key 'tran'; did you mean 'train'"):
        load_experiment(bad)


def test_evaluate_refuses_a_cache_of_another_resolution(tiny_classifier: Path, kermany_cache: Path,
                                                        tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tiny_classifier), "--cache", str(kermany_cache), "--run",
                                 str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "images are 32 px (squash) but" in result.output and "--size 64 --fit squash" in result.output


def test_a_checkpoint_whose_classes_do_not_fit_its_head_is_refused(tiny_classifier: Path, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(tiny_classifier, ClassifierCheckpoint)
    broken = save_checkpoint(checkpoint.model_copy(update={"classes": checkpoint.classes[:3]}), tmp_path / "b.ckpt")
    result = runner.invoke(app, ["predict", str(broken), str(broken), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "names 3 classes for a head of 14 outputs" in result.output


def test_every_numeric_option_has_a_range() -> None:
    unbounded = []
    stack = [((), typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        for parameter in command.params:
            annotation = str(parameter.type_descriptor.annotation) if hasattr(parameter, "type_descriptor") else ""
            if re.search(r"\b(int|float)\b", annotation) and parameter.min is None and parameter.max is None:
                unbounded.append(f"{' '.join(path)} --{parameter.name}")
        stack += [((*path, name), sub) for name, sub in getattr(command, "commands", {}).items()]
    assert not unbounded, unbounded
    refused = runner.invoke(app, ["serve", "x.ckpt", "--max-upload-mb", "-5"])
    assert refused.exit_code == 2 and "--max-upload-mb" in refused.output


def test_medical_record_numbers_are_stored_only_hashed(tmp_path: Path, source_pixels: np.ndarray,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXRLENS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "dicoms"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm"):
        write_dicom(folder / name, source_pixels, PatientID="MRN-0012345")
    write_dicom(folder / "c.dcm", source_pixels, PatientID="MRN-0099999")
    cache = prepare_cache(open_dataset("folder", [folder]), tmp_path / "cache", size=32, workers=1)
    index = (tmp_path / "cache" / "index.json").read_text()
    assert "MRN-00" not in index and not (tmp_path / "cache" / "patient.key").exists()  # the key stays home
    key = tmp_path / "home" / "patient.key"
    assert key.is_file() and key.stat().st_mode & 0o077 == 0  # readable by its owner only
    patients = [cache.item(i).patient_id for i in range(3)]
    assert patients[0] == patients[1] != patients[2] and patients[0].startswith("dicom-")
    assert json.loads(index)["items"][0]["meta"] == {"patient_id": "dicom", "pseudonym_key": pseudonym_key_id(),
                                                     "source": "folder"}
    other = prepare_cache(open_dataset("folder", [folder]), tmp_path / "other", size=48, fit="pad", workers=1)
    assert [other.item(i).patient_id for i in range(3)] == patients  # one pseudonym per patient in every cache
    trained = [describe_roles(cache.items(), {"train": [0, 1]}, {})]
    assert overlap(trained, other.items(), [0, 1, 2])[0].patients == 1
    monkeypatch.setenv("CXRLENS_HOME", str(tmp_path / "elsewhere"))  # another machine's key
    foreign = open_dataset("folder", [folder])
    assert foreign.items[0].patient_id != patients[0]
    with pytest.raises(ValueError, match="pseudonymised with key .* cannot be told"):
        overlap(trained, foreign.items, [0, 1, 2])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "patient.key").write_text("")
    monkeypatch.setenv("CXRLENS_HOME", str(tmp_path / "broken"))
    with pytest.raises(OSError, match="broken/patient.key: not a cxrlens patient key"):
        open_dataset("folder", [folder])


def test_damaged_files_are_one_line_errors(tmp_path: Path, tiny_classifier: Path, kermany_cache: Path) -> None:
    listed = tmp_path / "listed.ckpt"
    torch.save({"format": "cxrlens-checkpoint", "version": VERSION, "kind": ["classifier"], "meta": "{}"}, listed)
    checkpoint = load_checkpoint(tiny_classifier, ClassifierCheckpoint)
    huge = save_checkpoint(checkpoint, tmp_path / "huge.ckpt")
    payload = torch.load(huge, weights_only=True)
    payload["meta"] = payload["meta"].replace('"size":64', '"size":200000')
    torch.save(payload, huge)
    cache = tmp_path / "cache"
    shutil.copytree(kermany_cache, cache)
    (cache / "index.json").write_text(json.dumps({"format": CACHE_FORMAT_VERSION}))
    broken_yaml, latin = tmp_path / "broken.yaml", tmp_path / "latin.yaml"
    broken_yaml.write_text("model: {backbone: resnet18\ntrain: [\n")
    latin.write_bytes("model: {backbone: r\xe9snet}\n".encode("latin-1"))
    cases = [
        (["predict", str(listed), str(listed), "--out", str(tmp_path / "o1")], "is not one this cxrlens reads"),
        (["predict", str(huge), str(huge), "--out", str(tmp_path / "o2")], "damaged classifier checkpoint"),
        (["train-supervised", "--cache", str(cache), "--run", str(tmp_path / "r1")], "damaged cache"),
        (["train-supervised", "--cache", str(kermany_cache), "--run", str(tmp_path / "r2"), "--config",
          str(broken_yaml)], "cannot read YAML"),
        (["train-supervised", "--cache", str(kermany_cache), "--run", str(tmp_path / "r3"), "--config", str(latin)],
         "latin.yaml: cannot read YAML"),
    ]
    for arguments, words in cases:
        result = runner.invoke(app, arguments)
        assert result.exit_code == 2 and "Traceback" not in result.output, (arguments, result.output)
        (line,) = _error_lines(result.output)
        assert words in line, (arguments, line)


def test_experiment_and_step_names_stay_inside_the_runs_folder(tmp_path: Path) -> None:
    from cxrlens.experiment import load_experiment

    for name, step in (("/home/me/Docs", "t"), ("x", "..")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"name: '{name}'\npaper: '0'\ndescription: d\ndata: {{a: {{dataset: sample, roots: [kermany]}}}}\n"
                       f"steps:\n  - {{kind: train, name: '{step}', data: a}}\n")
        with pytest.raises(ValueError, match="should match pattern"):
            load_experiment(bad)
