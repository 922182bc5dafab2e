"""TorchXRayVision models and other published weights through cxrlens, offline (paper 000's XRV rows).

The published files cannot be downloaded here, so TorchXRayVision DenseNet-121s with random weights are saved where
TorchXRayVision caches its downloads (the ``xrv_home`` fixture) and read by TorchXRayVision itself as the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from typer.testing import CliRunner

from cxrlens.checkpoints import ClassifierCheckpoint, load_checkpoint, save_checkpoint
from cxrlens.cli import app
from cxrlens.config import ModelConfig, SplitConfig, TrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.io import read_image
from cxrlens.data.labels import canonical, match_classes
from cxrlens.data.preprocess import normalise
from cxrlens.data.registry import open_sample
from cxrlens.explain import explain
from cxrlens.models import WeightsUnavailableError, build_model, load_classifier
from cxrlens.models.xrv import published_model, torchxrayvision
from cxrlens.train.supervised import train_supervised

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

runner = CliRunner()
NIH = "densenet121-res224-nih"


@pytest.fixture(scope="module")
def nih_224(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedCache:
    """Real NIH images as TorchXRayVision takes them (centre square, 224 px): 100 of the official train_val list and
    60 boxed images (all on the official test list)."""
    nih = open_sample(data_root, ["nih-sample", "nih-bbox"])
    nih.items[:] = [*nih.items[:100], *nih.items[-60:]]
    return prepare_cache(nih, tmp_path_factory.mktemp("xrv") / "nih", size=224, fit="crop", workers=2)


@pytest.fixture()
def offline_xrv(xrv_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(xrv_home))
    return xrv_home


def test_loaded_model_gives_torchxrayvisions_own_outputs_on_real_images(offline_xrv: Path, nih_224: PreparedCache
                                                                        ) -> None:
    xrv = torchxrayvision()
    theirs = xrv.models.DenseNet(weights=NIH)  # TorchXRayVision reads the same file from its own cache
    loaded = load_classifier(f"xrv:{NIH}")
    published = published_model(NIH)
    rows = [row for row, _ in published.trained()]
    assert loaded.classes == [canonical(label) for label in published.labels if label] and len(rows) == 14
    assert (loaded.checkpoint.input.size, loaded.checkpoint.input.fit) == (224, "crop")
    pixels = torch.from_numpy(np.stack([np.array(nih_224.images[i]) for i in (0, 1, 150, 159)]))[:, None]
    ours = normalise(pixels, loaded.normalisation)
    assert torch.allclose(ours, torch.from_numpy(xrv.datasets.normalize(pixels.numpy().astype(np.float32), 255)),
                          atol=1e-3)  # [-1024, 1024]
    with torch.no_grad():
        logits = loaded.model(ours)
        reference = theirs.classifier(theirs.features2(ours))
        published_outputs = theirs(ours)  # sigmoid, then its operating-point normalisation
    assert torch.allclose(logits, reference[:, rows], rtol=0, atol=1e-5 * float(reference.abs().max()))
    operating = torch.tensor([published.op_threshs[row] for row in rows])
    assert torch.allclose(xrv.models.op_norm(torch.sigmoid(logits), operating), published_outputs[:, rows], atol=1e-5)
    assert loaded.checkpoint.thresholds == published.operating_points()


def test_the_resnet50_at_512_px_is_torchxrayvisions_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    published = published_model("resnet50-res512-all")
    torch.manual_seed(2)
    network = torchvision.models.resnet50(num_classes=18)
    network.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    published.cached_file.parent.mkdir(parents=True)
    torch.save(network.state_dict(), published.cached_file)  # TorchXRayVision's ResNet file: a state dict
    theirs = torchxrayvision().models.ResNet(weights="resnet50-res512-all")
    loaded = load_classifier("xrv:resnet50-res512-all")
    assert loaded.checkpoint.input.size == 512 and len(loaded.classes) == 18
    images = torch.rand(1, 1, 512, 512) * 2048 - 1024
    with torch.no_grad():
        reference = theirs.model(images)
        assert torch.allclose(loaded.model(images), reference, rtol=0, atol=1e-5 * float(reference.abs().max()))


def test_the_cache_prepares_images_as_torchxrayvision_does(nih_224: PreparedCache) -> None:
    xrv = torchxrayvision()
    for index in (0, 150):
        source = xrv.datasets.normalize(read_image(nih_224.item(index).path) * 255.0, 255)[None]
        theirs = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(source))[0]
        ours = (np.asarray(nih_224.images[index], dtype=np.float32) / 255 - 0.5) * 2048
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.995  # interpolation kernels differ, not geometry


def test_untrained_outputs_are_never_scored(offline_xrv: Path, nih_224: PreparedCache) -> None:
    published = published_model("densenet121-res224-chex")
    loaded = load_classifier("xrv:densenet121-res224-chex")
    untrained = [row for row, label in enumerate(published.labels) if not label]
    assert untrained and "" not in loaded.classes and loaded.model.fc.out_features == 18 - len(untrained)
    match = match_classes(loaded.classes, nih_224.classes)
    assert "Infiltration" in match.data_only  # an NIH finding CheXpert's labels never trained


class _XRVWithReluModule(nn.Module):
    """TorchXRayVision's DenseNet forward with its functional ReLU as a module, for pytorch-grad-cam to hook."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.features, self.relu, self.classifier = network.features, nn.ReLU(), network.classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.relu(self.features(images)), 1).flatten(1))


def test_gradcam_on_it_agrees_with_pytorch_grad_cam(offline_xrv: Path, nih_224: PreparedCache) -> None:
    loaded = load_classifier(f"xrv:{NIH}")
    images = normalise(torch.from_numpy(np.stack([np.array(nih_224.images[i]) for i in (150, 151)]))[:, None],
                       loaded.normalisation)
    ours = explain(loaded.model, images, "gradcam", classes=[0, 7, 10])
    reference_model = _XRVWithReluModule(torchxrayvision().models.DenseNet(weights=NIH)).eval()
    with pytorch_grad_cam.GradCAM(model=reference_model, target_layers=[reference_model.relu]) as cam:
        for slot, k in enumerate([0, 7, 10]):
            maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * len(images))
            for b in range(len(images)):
                if np.ptp(maps[b]) > 1e-6:
                    assert np.corrcoef(ours.maps[b, slot].numpy().ravel(), maps[b].ravel())[0, 1] >= 0.99


def test_evaluate_xrv_on_the_boxed_images_with_floor_and_prior(offline_xrv: Path, nih_224: PreparedCache,
                                                                tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", f"xrv:{NIH}", "--cache", str(nih_224.directory), "--run",
                                 str(tmp_path / "e"), "--bootstrap", "20", "--gallery", "0", "--no-report"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["checkpoint"] == f"xrv:{NIH}" and "TorchXRayVision" in metrics["origin"]
    assert metrics["images"] >= 60 and metrics["localization"]["boxes"] > 0  # the boxed images are all test
    assert "prior" in metrics["localization"]["comparison"]["iou"] and "difference" in metrics["floor"]["mean"]
    assert metrics["thresholds"]["rule"].startswith("TorchXRayVision")
    assert "weights not trained by cxrlens" in result.output


def test_predict_with_xrv_uses_its_preprocessing_on_a_real_image(offline_xrv: Path, nih_224: PreparedCache,
                                                                  tmp_path: Path) -> None:
    source = Path(nih_224.item(150).path)
    result = runner.invoke(app, ["predict", f"xrv:{NIH}", str(source), "--out", str(tmp_path / "p"), "--top", "1"])
    assert result.exit_code == 0, result.output
    answer = json.loads((tmp_path / "p" / f"{source.stem}.json").read_text())
    assert set(answer["probabilities"]) == set(load_classifier(f"xrv:{NIH}").classes)


def test_offline_without_the_file_is_one_line_naming_it(tmp_path: Path, nih_224: PreparedCache,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    result = runner.invoke(app, ["evaluate", f"xrv:{NIH}", "--cache", str(nih_224.directory), "--run",
                                 str(tmp_path / "e")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    expected = tmp_path / "empty-home" / ".torchxrayvision" / "models_data" / Path(published_model(NIH).url).name
    assert str(expected) in line and published_model(NIH).url in line and "--weights-file" in line
    missing = runner.invoke(app, ["evaluate", f"xrv:{NIH}", "--cache", str(nih_224.directory), "--run",
                                  str(tmp_path / "f"), "--weights-file", str(tmp_path / "nowhere.pt")])
    assert missing.exit_code != 0 and "nowhere.pt: weights file does not exist" in missing.output


def test_a_weights_file_given_explicitly_is_used(xrv_home: Path, nih_224: PreparedCache, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    local = next((xrv_home / ".torchxrayvision").rglob("nih-*.pt"))
    loaded = load_classifier(f"xrv:{NIH}", local)
    assert loaded.checkpoint.network.weights == str(local)


@pytest.fixture(scope="module")
def boxed_64(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedCache:
    """The real NIH boxed images, centre squares at 64 px (short fine-tunes)."""
    return prepare_cache(open_sample(data_root, ["nih-bbox"]), tmp_path_factory.mktemp("boxed") / "c", size=64,
                         fit="crop", workers=2)


def _short(**options: object) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=8, accumulate=1, num_workers=0, accelerator="cpu", loss="bce",
                       max_steps_per_epoch=2, scheduler="none", **options)


def test_cam_loss_fine_tune_from_xrv_on_the_boxed_images(offline_xrv: Path, boxed_64: PreparedCache,
                                                         tmp_path: Path) -> None:
    boxed = boxed_64
    train = _short(cam_loss={"cam_lambda": 2.0, "boxed_per_batch": 4})
    summary = train_supervised(boxed.directory, tmp_path / "run", ModelConfig(init=f"xrv:{NIH}"), train,
                               split=SplitConfig(splits="patient"), show_progress=False)
    (epoch,) = summary["history"]
    assert epoch["train_cam_loss"] > 0 and epoch["train_loss"] > epoch["train_classification_loss"]
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", ClassifierCheckpoint)
    assert checkpoint.network.backbone == "xrv-densenet121" and "TorchXRayVision" in checkpoint.origin
    assert checkpoint.normalisation.std == pytest.approx(1 / 2048)  # XRV's intensities, inherited
    (record,) = checkpoint.provenance
    assert record.images["cam-loss"] and set(record.images["cam-loss"]) <= set(record.images["train"])
    # the head starts from XRV's rows of the same findings
    start = build_model(ModelConfig(init=f"xrv:{NIH}", num_classes=len(boxed.classes)), boxed.classes)
    head = torchxrayvision().models.DenseNet(weights=NIH).classifier
    published = published_model(NIH)
    for row, name in enumerate(boxed.classes):
        (source,) = [r for r, label in published.trained() if label == name]
        assert torch.equal(start.fc.weight[row], head.weight[source])


def test_timm_weights_from_a_local_file(tmp_path: Path, boxed_64: PreparedCache) -> None:
    torch.manual_seed(1)
    imagenet_like = timm.create_model("resnet50", pretrained=False)  # RGB, with its 1000-class head
    torch.save(imagenet_like.state_dict(), tmp_path / "resnet50.pth")
    model = build_model(ModelConfig(init="timm:resnet50", weights=str(tmp_path / "resnet50.pth"), num_classes=2))
    stem = model.extractor.net.conv1.weight
    assert stem.shape[1] == 1 and torch.allclose(stem, imagenet_like.conv1.weight.sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(model.extractor.net.layer4[2].conv3.weight, imagenet_like.layer4[2].conv3.weight)
    with pytest.raises(WeightsUnavailableError, match="could not download ImageNet weights for resnet50"):
        build_model(ModelConfig(init="timm:resnet50", num_classes=2))
    # and fine-tuned from them on real images, the checkpoint saying where its weights started
    train_supervised(boxed_64.directory, tmp_path / "run", ModelConfig(init="timm:resnet50",
                                                                       weights=str(tmp_path / "resnet50.pth")),
                     _short(), split=SplitConfig(splits="patient"), show_progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", ClassifierCheckpoint)
    assert checkpoint.network.backbone == "resnet50" and checkpoint.origin == "ImageNet weights of resnet50 through timm"


def test_a_classifier_checkpoint_starts_a_model_with_its_head_rows(tiny_classifier: Path) -> None:
    trained = load_checkpoint(tiny_classifier, ClassifierCheckpoint)
    classes = [trained.classes[3], "Not A Finding", trained.classes[0]]
    model = build_model(ModelConfig(init=str(tiny_classifier), backbone="resnet18", num_classes=3), classes)
    assert torch.equal(model.fc.weight[0], trained.state["head.weight"][3])
    assert torch.equal(model.fc.weight[2], trained.state["head.weight"][0])
    assert torch.equal(model.extractor.net.conv1.weight, trained.state["extractor.net.conv1.weight"])


def test_a_checkpoint_written_before_init_existed_still_loads(tiny_classifier: Path, tmp_path: Path) -> None:
    import json as json_module

    payload = torch.load(tiny_classifier, map_location="cpu", weights_only=True)
    meta = json_module.loads(payload["meta"])
    meta["network"] = {("encoder" if key == "init" else key): value for key, value in meta["network"].items()}
    meta["network"]["encoder"] = "some/encoder.ckpt"
    torch.save({**payload, "meta": json_module.dumps(meta)}, tmp_path / "old.ckpt")
    assert load_checkpoint(tmp_path / "old.ckpt", ClassifierCheckpoint).network.init == "some/encoder.ckpt"
    save_checkpoint(load_checkpoint(tmp_path / "old.ckpt", ClassifierCheckpoint), tmp_path / "new.ckpt")


def test_crop_fit_keeps_the_centre_square_of_an_oblong_real_image(oblong_radiograph: Path) -> None:
    from cxrlens.data.boxes import Box
    from cxrlens.data.preprocess import fit_geometry, fit_image

    image = read_image(oblong_radiograph)
    height, width = image.shape
    geometry = fit_geometry(width, height, 64, "crop")
    short = min(width, height)
    assert geometry.scale_x == geometry.scale_y == pytest.approx(64 / short)
    centre = geometry.to_cache(Box("x", width / 2 - short / 4, height / 2 - short / 4, short / 2, short / 2))
    assert (centre.x, centre.y, centre.w, centre.h) == pytest.approx((16, 16, 32, 32), abs=0.01)
    pixels = fit_image(image, 64, "crop")
    top, left = (height - short) // 2, (width - short) // 2
    square = fit_image(image[top:top + short, left:left + short], 64, "squash")
    assert pixels.shape == (64, 64) and np.abs(pixels.astype(int) - square.astype(int)).mean() < 2
