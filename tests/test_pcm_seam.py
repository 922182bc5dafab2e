"""PCM (paper 003 eq. 2) and its SEAM training (eq. 6-7), by hand and on the real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.config import ModelConfig, RefineConfig
from cxrlens.explain import CAMExplainer
from cxrlens.models import build_model
from cxrlens.models.pcm import PixelCorrelationModule, suppress_non_maximum
from cxrlens.models import load_classifier
from cxrlens.train.seam import SEAM, ohem_l1, rotate

runner = CliRunner()


def test_pcm_is_a_normalised_relu_cosine_affinity_average() -> None:
    torch.manual_seed(0)
    pcm = PixelCorrelationModule(4, 3)
    features = torch.randn(2, 4, 3, 5)
    cams = torch.rand(2, 2, 3, 5)
    refined = pcm(features, cams)
    embedded = pcm.theta(features).flatten(2)                                     # B x E x N
    cosine = F.cosine_similarity(embedded[:, :, :, None], embedded[:, :, None, :], dim=1)   # B x N x N
    weights = F.relu(cosine)
    expected = torch.einsum("bij,bkj->bki", weights, cams.flatten(2)) / weights.sum(2)[:, None, :]
    torch.testing.assert_close(refined.flatten(2), expected, atol=1e-4, rtol=1e-4)
    uniform = pcm(torch.ones(1, 4, 3, 5), cams[:1])  # identical pixels: every pixel becomes the map's mean
    torch.testing.assert_close(uniform, cams[:1].mean(dim=(2, 3), keepdim=True).expand_as(uniform), atol=1e-4,
                               rtol=1e-4)


def test_non_maximum_suppression_keeps_each_pixels_strongest_class() -> None:
    cams = torch.tensor([[[[2.0, -1.0]], [[1.0, 3.0]]]])  # 1 x 2 classes x 1 x 2 pixels
    out = suppress_non_maximum(cams)
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]), atol=1e-4, rtol=0)  # scaled to max 1 per class, then the argmax kept
    assert suppress_non_maximum(cams, nms=False)[0, 1, 0, 0] == pytest.approx(1 / 3, rel=1e-4)


def test_rotation_and_ohem() -> None:
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(rotate(maps, torch.tensor([90.0])), torch.rot90(maps, 1, (2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(rotate(maps, torch.tensor([0.0])), maps)
    difference = torch.tensor([[1.0, -5.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0]])
    assert ohem_l1(difference, 0.2).item() == pytest.approx(7.5)  # top 2 of 10: 10 and 5


def test_seam_trains_only_the_pcm_and_sums_the_ecr_terms() -> None:
    torch.manual_seed(0)
    classifier = build_model(ModelConfig(backbone="resnet18", num_classes=3)).eval()
    frozen = {name: value.clone() for name, value in classifier.state_dict().items()}
    config = RefineConfig()
    model = SEAM(classifier, PixelCorrelationModule(512, 16), config).train()
    assert not classifier.training
    images = torch.randn(4, 1, 96, 96)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = model.pcm.theta.weight.clone()
    for _ in range(3):
        terms = model(images, labels, torch.ones_like(labels, dtype=torch.bool))
        assert terms["ecr"] >= 0
        assert terms["loss"].item() == pytest.approx(1.5 * terms["msml"].item() + terms["ecr"].item(), rel=1e-5)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    assert not torch.equal(before, model.pcm.theta.weight)
    for name, value in classifier.state_dict().items():
        torch.testing.assert_close(value, frozen[name], msg=name)


def test_explainer_applies_the_pcm_before_upsampling() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3)).eval()
    pcm = PixelCorrelationModule(512, 8).eval()
    images = torch.randn(2, 1, 128, 128)
    with CAMExplainer(model, "cam", normalize=False, refiner=pcm) as explainer:
        refined = explainer(images, classes=[1]).maps
    features = model.cam_features(images)
    raw = torch.einsum("kc,bchw->bkhw", model.fc.weight, features)
    expected = F.interpolate(pcm(features, suppress_non_maximum(raw))[:, [1]], size=128, mode="bilinear")
    torch.testing.assert_close(refined, expected, atol=1e-5, rtol=1e-4)


def test_refine_then_evaluate_with_pcm_on_real_images(tmp_path: Path, data_root: Path) -> None:
    from cxrlens.config import SplitConfig, TrainConfig
    from cxrlens.data.cache import prepare_cache
    from cxrlens.data.registry import open_sample
    from cxrlens.train.supervised import train_supervised

    cache = prepare_cache(open_sample(data_root, ["nih-bbox"]), tmp_path / "boxed", size=64, workers=2)
    train = TrainConfig(epochs=1, batch_size=16, accumulate=1, num_workers=0, accelerator="cpu", loss="bce",
                        max_steps_per_epoch=2, scheduler="none")
    train_supervised(cache.directory, tmp_path / "train", ModelConfig(backbone="resnet18"), train,
                     split=SplitConfig(splits="patient"), show_progress=False)
    checkpoint = tmp_path / "train" / "checkpoints" / "best.ckpt"
    result = runner.invoke(app, ["refine", str(checkpoint), "--cache", str(cache.directory), "--run",
                                 str(tmp_path / "seam"), "--epochs", "1", "--batch-size", "8",
                                 "--max-steps-per-epoch", "2", "--device", "cpu", "--splits", "patient"])
    assert result.exit_code == 0, result.output
    refined = tmp_path / "seam" / "refined.ckpt"
    assert isinstance(load_classifier(refined).refiner, PixelCorrelationModule)
    result = runner.invoke(app, ["evaluate", str(refined), "--cache", str(cache.directory), "--run",
                                 str(tmp_path / "eval"), "--split", "test", "--splits", "patient", "--refine",
                                 "--bootstrap", "20",
                                 "--gallery", "2", "--no-report"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["cam"] == "gradcam + PCM" and 0 < metrics["localization"]["boxes"] < 592  # the held-out patients
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--cache", str(cache.directory), "--run",
                                 str(tmp_path / "eval2"), "--split", "all", "--refine"])
    assert result.exit_code == 2 and "has no PCM" in result.output


def test_refine_refuses_an_mlp_head_before_training(tmp_path: Path) -> None:
    from cxrlens.checkpoints import ClassifierCheckpoint, save_checkpoint
    from cxrlens.config import InputSpec, Normalisation
    from cxrlens.train.seam import train_pcm

    network = ModelConfig(backbone="resnet18", num_classes=3, head="mlp")
    checkpoint = save_checkpoint(ClassifierCheckpoint(state=build_model(network).state_dict(), network=network,
                                                      classes=["A", "B", "C"], input=InputSpec(size=64, fit="squash"),
                                                      normalisation=Normalisation()), tmp_path / "mlp.ckpt")
    with pytest.raises(ValueError, match="PCM refines class maps.*MLP head"):
        train_pcm(checkpoint, tmp_path / "no-cache", tmp_path / "run", RefineConfig())
    assert not (tmp_path / "run").exists()
