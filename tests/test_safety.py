"""Nothing the user has is lost: every command that writes refuses to write into, over or around its
inputs, and ``--overwrite`` replaces only what cxrlens itself wrote. Each test plants a user file and a
source radiograph where the command would write and shows both survive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.data.cache import prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.train.run_folder import RunExistsError, RunFolder

runner = CliRunner()


@pytest.fixture(scope="module")
def source_image(nih_sample_root: Path) -> Path:
    return sorted((nih_sample_root / "images").glob("*.png"))[0]


def _plant(folder: Path, source_image: Path) -> list[Path]:
    """A user's notes and a source radiograph in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    notes, image = folder / "notes.txt", folder / source_image.name
    notes.write_text("my notes")
    shutil.copy(source_image, image)
    return [notes, image]


def _refused(arguments: list[str], planted: list[Path], words: str) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output, result.output
    assert all(path.is_file() for path in planted)
    assert planted[0].read_text() == "my notes"


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """Sixty real NIH images at 64 px (the tiny classifier's input)."""
    dataset = open_sample(data_root, ["nih-sample"])
    dataset.items[:] = dataset.items[:60]
    return prepare_cache(dataset, tmp_path_factory.mktemp("safety") / "cache", size=64, workers=1).directory


def test_prepare_never_deletes_a_folder_that_is_not_its_cache(tmp_path: Path, source_image: Path) -> None:
    folder = tmp_path / "mine"
    planted = _plant(folder, source_image)
    _refused(["data", "prepare", "folder", str(folder), "-o", str(folder), "--size", "32", "--overwrite"], planted,
             "overlaps the input")  # the case: the input folder as the output
    other = tmp_path / "other"
    planted += _plant(other, source_image)
    _refused(["data", "prepare", "folder", str(folder), "-o", str(other), "--size", "32", "--overwrite"], planted,
             "is not a cache")
    _refused(["data", "prepare", "folder", str(folder), "-o", str(folder / "cache"), "--size", "32"], planted,
             "overlaps the input")  # inside the dataset


def test_prepare_overwrite_replaces_only_the_caches_own_files(tmp_path: Path, source_image: Path) -> None:
    images = tmp_path / "images"
    _plant(images, source_image)
    out = tmp_path / "cache"
    assert runner.invoke(app, ["data", "prepare", "folder", str(images), "-o", str(out), "--size", "32"]).exit_code == 0
    planted = _plant(out, source_image)
    result = runner.invoke(app, ["data", "prepare", "folder", str(images), "-o", str(out), "--size", "48",
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    assert all(path.is_file() for path in planted) and "(48 x 48" in result.output


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (random) ResNet-18 encoder checkpoint, as pretrain writes one."""
    from cxrlens.checkpoints import EncoderCheckpoint, save_checkpoint
    from cxrlens.config import ModelConfig, Normalisation
    from cxrlens.models import Backbone

    checkpoint = EncoderCheckpoint(state=Backbone("resnet18").state_dict(), method="byol",
                                   encoder=ModelConfig(backbone="resnet18"), normalisation=Normalisation())
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("encoder") / "encoder.ckpt")


@pytest.mark.parametrize("command", ["train-supervised", "finetune", "pretrain", "refine", "linear-eval",
                                     "evaluate"])
def test_training_and_evaluation_never_take_a_folder_of_other_files(command: str, tmp_path: Path, source_image: Path,
                                                                    small_cache: Path, tiny_classifier: Path,
                                                                    encoder_file: Path) -> None:
    run = tmp_path / "mine"
    planted = _plant(run, source_image)
    arguments = {
        "train-supervised": ["train-supervised", "--cache", str(small_cache), "--run", str(run), "--backbone",
                             "resnet18", "--splits", "patient", "--overwrite"],
        "finetune": ["finetune", "--encoder", str(encoder_file), "--cache", str(small_cache), "--run", str(run),
                     "--splits", "patient", "--overwrite"],
        "pretrain": ["pretrain", "--cache", str(small_cache), "--run", str(run), "--backbone", "resnet18",
                     "--overwrite"],
        "refine": ["refine", str(tiny_classifier), "--cache", str(small_cache), "--run", str(run),
                   "--splits", "patient", "--overwrite"],
        "linear-eval": ["linear-eval", "--random-init", "resnet18", "--cache", str(small_cache), "--run",
                        str(small_cache), "--overwrite"],
        "evaluate": ["evaluate", str(tiny_classifier), "--cache", str(small_cache), "--run", str(small_cache),
                     "--overwrite"],
    }[command]
    words = {"linear-eval": "overlaps the input", "evaluate": "overlaps the input"}
    _refused(arguments, planted, words.get(command, "is not a cxrlens run folder"))
    assert (small_cache / "index.json").is_file()


def test_overwriting_a_run_keeps_what_the_user_put_in_it(tmp_path: Path, source_image: Path) -> None:
    run = RunFolder(tmp_path / "run", inputs=[tmp_path / "cache"])
    run.claim(resume=False, overwrite=False)
    run.checkpoints.mkdir()
    for name in ("last.ckpt", "best.ckpt", "epoch-0002.ckpt", "mine.ckpt"):
        (run.checkpoints / name).write_text("x")
    (run.path / "metrics.csv").write_text("epoch\n1\n")
    planted = _plant(run.path, source_image)
    with pytest.raises(RunExistsError, match="--resume .* --overwrite"):
        run.claim(resume=False, overwrite=False)
    run.claim(resume=False, overwrite=True)
    assert sorted(path.name for path in run.checkpoints.iterdir()) == ["mine.ckpt"]
    assert not (run.path / "metrics.csv").exists() and all(path.is_file() for path in planted)
    with pytest.raises(ValueError, match="overlaps the input"):
        RunFolder(tmp_path / "cache" / "run", inputs=[tmp_path / "cache"]).claim(resume=False, overwrite=True)


def test_evaluate_overwrite_keeps_the_users_files(tmp_path: Path, source_image: Path, small_cache: Path,
                                                  tiny_classifier: Path) -> None:
    run = tmp_path / "eval"
    arguments = ["evaluate", str(tiny_classifier), "--cache", str(small_cache), "--run", str(run), "--split", "test",
                 "--bootstrap", "0", "--no-report"]  # the classifier's held-out patients (official test list)
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    planted = _plant(run, source_image)
    again = runner.invoke(app, [*arguments, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert all(path.is_file() for path in planted) and (run / "metrics.json").is_file()


def test_predict_never_writes_over_or_into_its_inputs(tmp_path: Path, source_image: Path,
                                                      tiny_classifier: Path) -> None:
    folder = tmp_path / "radiographs"
    planted = _plant(folder, source_image)
    _refused(["predict", str(tiny_classifier), str(folder), "--out", str(folder), "--overwrite"], planted,
             "overlaps the input")
    _refused(["predict", str(tiny_classifier), str(planted[1]), "--out", str(folder), "--overwrite"], planted,
             "overlaps the input")
    out = tmp_path / "out"
    assert runner.invoke(app, ["predict", str(tiny_classifier), str(planted[1]), "--out", str(out)]).exit_code == 0
    kept = _plant(out, source_image)
    refused = runner.invoke(app, ["predict", str(tiny_classifier), str(planted[1]), "--out", str(out)])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    again = runner.invoke(app, ["predict", str(tiny_classifier), str(planted[1]), "--out", str(out), "--overwrite"])
    assert again.exit_code == 0, again.output
    assert all(path.is_file() for path in kept)


def test_predict_checks_the_whole_output_before_writing(tmp_path: Path, nih_sample_root: Path,
                                                        tiny_classifier: Path) -> None:
    images = sorted((nih_sample_root / "images").glob("*.png"))[:3]
    out = tmp_path / "out"
    earlier = runner.invoke(app, ["predict", str(tiny_classifier), str(images[2]), "--out", str(out), "--top", "1"])
    assert earlier.exit_code == 0, earlier.output  # an earlier result for the third image only
    before = sorted(path.name for path in out.iterdir())
    result = runner.invoke(app, ["predict", str(tiny_classifier), *map(str, images), "--out", str(out)])
    assert result.exit_code == 2 and images[2].stem in result.output
    assert sorted(path.name for path in out.iterdir()) == before  # nothing written


def test_export_never_replaces_a_file_it_did_not_write(tmp_path: Path, source_image: Path,
                                                       tiny_classifier: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    shutil.copy(tiny_classifier, checkpoint)
    planted = _plant(tmp_path / "mine", source_image)
    _refused(["export", str(checkpoint), "--onnx", "--out", str(planted[1]), "--overwrite"], planted,
             "not a cxrlens ONNX export")
    _refused(["export", str(checkpoint), "--onnx", "--out", str(checkpoint), "--overwrite"], planted,
             "overlaps the input")
    assert checkpoint.read_bytes() == tiny_classifier.read_bytes()


def test_run_never_takes_a_step_folder_of_other_files(tmp_path: Path, source_image: Path, data_root: Path) -> None:
    planted = _plant(tmp_path / "runs" / "quickstart-smoke" / "pretrain-simclr", source_image)
    _refused(["run", "quickstart", "--smoke", "--runs", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"),
              "--device", "cpu", "--data-root", str(data_root)], planted, "is not a cxrlens experiment folder")
    _refused(["run", "quickstart", "--smoke", "--runs", str(data_root / "nih-chestxray14-sample" / "runs"),
              "--cache", str(tmp_path / "cache"), "--data-root", str(data_root)], planted, "overlaps the input")


@pytest.mark.parametrize("command", ["evaluate", "linear-eval"])
def test_evaluations_never_write_into_a_folder_of_other_files(command: str, tmp_path: Path, source_image: Path,
                                                              small_cache: Path, tiny_classifier: Path) -> None:
    folder = tmp_path / "thesis"
    planted = _plant(folder, source_image)
    for name in ("predictions.csv", "metrics.csv", "report.html"):  # names an evaluation also writes
        (folder / name).write_text("MY THESIS DATA")
        planted.append(folder / name)
    arguments = {"evaluate": ["evaluate", str(tiny_classifier), "--cache", str(small_cache), "--run", str(folder),
                              "--split", "all", "--bootstrap", "0"],
                 "linear-eval": ["linear-eval", "--random-init", "resnet18", "--cache", str(small_cache), "--run",
                                 str(folder)]}[command]
    for extra in ([], ["--overwrite"]):
        _refused([*arguments, *extra], planted, "files cxrlens did not write")
    assert all(path.read_text() == "MY THESIS DATA" for path in planted[2:])


def test_a_lightning_style_folder_is_not_taken_for_a_run(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "lightning")
    run.checkpoints.mkdir(parents=True)
    (run.checkpoints / "last.ckpt").write_text("someone else's")
    with pytest.raises(RuntimeError, match="files cxrlens did not write"):
        run.claim(resume=False, overwrite=True)
    assert (run.checkpoints / "last.ckpt").read_text() == "someone else's"


def test_a_config_file_inside_the_run_folder_is_refused(tmp_path: Path, small_cache: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.yaml"
    config.write_text("model: {backbone: resnet18}\n")
    result = runner.invoke(app, ["train-supervised", "--cache", str(small_cache), "--run", str(run), "--config",
                                 str(config), "--overwrite"])
    assert result.exit_code == 2 and "overlaps the input" in result.output
    assert config.read_text() == "model: {backbone: resnet18}\n"


def test_predict_keeps_other_images_and_other_files(tmp_path: Path, nih_sample_root: Path,
                                                     tiny_classifier: Path) -> None:
    images = sorted((nih_sample_root / "images").glob("*.png"))[:2]
    first, second = tmp_path / "x" / "chest.png", tmp_path / "y" / "chest.png"  # two images, one file name
    for path, source in ((first, images[0]), (second, images[1])):
        path.parent.mkdir()
        shutil.copy(source, path)
    out = tmp_path / "out"
    assert runner.invoke(app, ["predict", str(tiny_classifier), str(first), "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["predict", str(tiny_classifier), str(second), "--out", str(out)]).exit_code == 0
    assert {path.name for path in out.glob("*.json")} == {"chest.json", "chest-2.json", "cxrlens.json"}
    again = runner.invoke(app, ["predict", str(tiny_classifier), str(first), "--out", str(out), "--overwrite"])
    assert again.exit_code == 0, again.output
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and any(str(second) in row for row in rows)  # the other image's row is kept
    beside = runner.invoke(app, ["predict", str(tiny_classifier), str(first), "--out", str(tiny_classifier.parent)])
    assert beside.exit_code == 2 and "overlaps the input" in beside.output  # never beside the checkpoint


def test_single_file_outputs_are_not_replaced_without_asking(tmp_path: Path, source_image: Path,
                                                           small_cache: Path) -> None:
    planted = _plant(tmp_path / "mine", source_image)
    picture = planted[1]
    for arguments in (["augment", "--cache", str(small_cache), "--show", str(picture)],
                      ["tsne", str(small_cache / "index.json"), "--cache", str(small_cache), "--out", str(picture)],
                      ["report", str(tmp_path), "--out", str(picture)]):
        _refused(arguments, planted, "exists; pass --overwrite")
    assert picture.read_bytes() == source_image.read_bytes()
