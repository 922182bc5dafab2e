"""The CAM engine: agreement with pytorch-grad-cam and torch-cam, all classes at once,
polarity, boxes from heatmaps, and no memory growth over 1,000 calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlens.config import ModelConfig
from cxrlens.data.boxes import Box, box_iou
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.data.preprocess import to_unit_float
from cxrlens.explain import CAMExplainer, explain, heatmap_to_boxes
from cxrlens.models import build_model
from cxrlens.models.classifier import PooledClassifier
from cxrlens.models.pooling import GlobalAvgPool

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


@pytest.fixture(scope="module")
def real_images(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> torch.Tensor:
    """Four real NIH radiographs with boxes, 96 px, normalised."""
    cache = prepare_cache(open_sample(data_root, ["nih-bbox"]), tmp_path_factory.mktemp("cams") / "c", size=96,
                          workers=2)
    images = torch.from_numpy(np.stack([np.array(cache.images[i]) for i in range(4)]))[:, None]
    return (to_unit_float(images) - 0.5) / 0.25


def _model(arch: str = "standard", pooling: str = "gap") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="resnet18", num_classes=3, arch=arch, pooling=pooling)).eval()


def _target_layer(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    return model.extractor.net.layer4 if arch == "standard" else model.extractor.merges[0]


def _assert_agree(ours: np.ndarray, reference: np.ndarray) -> None:
    if np.ptp(reference) < 1e-6 or np.ptp(ours) < 1e-6:  # a class with no positive evidence: both maps empty
        assert np.ptp(reference) < 1e-6 and np.ptp(ours) < 1e-6 and np.abs(ours).max() < 1e-6
        return
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] >= 0.99


@pytest.mark.parametrize(("arch", "pooling"), [("standard", "gap"), ("standard", "lse"), ("multires", "lse")])
@pytest.mark.parametrize(("method", "reference"), [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"),
                                                    ("scorecam", "ScoreCAM")])
def test_maps_agree_with_pytorch_grad_cam(real_images: torch.Tensor, arch: str, pooling: str, method: str,
                                          reference: str) -> None:
    images = real_images[:1] if method == "scorecam" else real_images
    model = _model(arch, pooling)
    ours = explain(model, images, method)
    assert ours.maps.shape == (len(images), 3, 96, 96) and ours.classes == (0, 1, 2)
    with getattr(pytorch_grad_cam, reference)(model=model, target_layers=[_target_layer(model, arch)]) as cam:
        cam.batch_size = 128
        for k in range(3):
            maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * len(images))
            for b in range(len(images)):
                _assert_agree(ours.maps[b, k].numpy(), maps[b])


def test_cam_agrees_with_torch_cam(real_images: torch.Tensor) -> None:
    torchcam = pytest.importorskip("torchcam.methods")
    model = _model()
    ours = explain(model, real_images, "cam")
    with torchcam.CAM(model, target_layer=model.extractor.net.layer4, fc_layer=model.fc) as extractor:
        logits = model(real_images)
        for k in range(3):
            (maps,) = extractor([k] * len(real_images), logits)
            upsampled = F.interpolate(maps[:, None], size=96, mode="bilinear", align_corners=False)[:, 0]
            for b in range(len(real_images)):
                _assert_agree(ours.maps[b, k].numpy(), upsampled[b].numpy())


def test_selected_classes_and_raw_maps(real_images: torch.Tensor) -> None:
    model = _model()
    everything = explain(model, real_images, "gradcam")
    some = explain(model, real_images, "gradcam", classes=[2, 0])
    torch.testing.assert_close(some.maps, everything.maps[:, [2, 0]])
    raw = explain(model, real_images, "cam", normalize=False)
    features = model.cam_features(real_images)
    expected = F.interpolate(torch.einsum("kc,bchw->bkhw", model.fc.weight, features), size=96, mode="bilinear")
    torch.testing.assert_close(raw.maps, expected, atol=1e-4, rtol=1e-4)


class _ImageAsFeatures(torch.nn.Module):
    """A transparent 'backbone': its only feature map is the image, 4x average-pooled."""

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [F.avg_pool2d(images, 4)]


def test_polarity_hot_region_is_bright() -> None:
    """Where the evidence for a class is, the normalised heatmap must be bright (not inverted)."""
    model = PooledClassifier(_ImageAsFeatures(), -1, 1, 2, GlobalAvgPool()).eval()
    with torch.no_grad():
        model.fc.weight[:] = torch.tensor([[1.0], [-1.0]])  # class 0: brightness is evidence; class 1: against
        model.fc.bias.zero_()
    images = torch.zeros(1, 1, 96, 96)
    images[..., 8:40, 48:84] = 1.0
    for method in ("cam", "gradcam", "gradcampp", "scorecam"):
        heatmap = explain(model, images, method).maps[0, 0]
        assert heatmap[12:36, 52:80].mean() > 0.9 and heatmap[60:, :40].max() < 0.1, method
    assert explain(model, images, "gradcam").maps[0, 1].max() == 0  # negative evidence only: an empty map


class _SmallConvNet(torch.nn.Module):
    """A small trainable extractor: the leak test is about the engine, not the backbone's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=2, padding=1))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(images)]


def test_no_hooks_no_graph_and_no_memory_growth_over_1000_calls() -> None:
    model = PooledClassifier(_SmallConvNet(), -1, 32, 14, GlobalAvgPool()).eval()
    images = torch.randn(4, 1, 64, 64)

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    with CAMExplainer(model, "gradcam") as explainer:
        for _ in range(100):
            explainer(images)
        before = resident()
        for _ in range(1000):
            result = explainer(images)
        grown = resident() - before
    assert not result.maps.requires_grad and result.maps.grad_fn is None
    assert all(not module._forward_hooks and not module._backward_hooks for module in model.modules())
    assert grown < 20 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


def test_explainer_restores_training_mode_and_rejects_bad_input() -> None:
    model = _model().train()
    with CAMExplainer(model, "gradcam") as explainer:
        assert not model.training
        with pytest.raises(ValueError, match="B x C x H x W"):
            explainer(torch.zeros(1, 32, 32))
    assert model.training
    with pytest.raises(ValueError, match="unknown CAM method"):
        CAMExplainer(model, "eigencam")
    mlp = build_model(ModelConfig(backbone="resnet18", num_classes=2, head="mlp")).eval()
    with pytest.raises(ValueError, match="linear head"):
        explain(mlp, torch.zeros(1, 1, 32, 32), "cam")
    assert explain(mlp, torch.zeros(1, 1, 32, 32), "gradcam").maps.shape == (1, 2, 32, 32)


def test_saliency_model_cam_is_its_saliency_map() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="dense-multires", pooling="lse-lba", backbone="resnet18", num_classes=2,
                                    dense_width=16, dense_layers=1, dense_growth=8)).eval()
    images = torch.randn(1, 1, 64, 64)
    raw = explain(model, images, "cam", normalize=False).maps
    expected = F.interpolate(model.saliency(images), size=64, mode="bilinear")
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=1e-5)
    assert explain(model, images, "gradcam").maps.shape == (1, 2, 64, 64)


def test_heatmap_to_boxes_by_hand() -> None:
    heatmap = np.zeros((100, 100))
    heatmap[10:30, 20:60] = 1.0   # a 40 x 20 block
    heatmap[70:80, 70:75] = 0.4   # below 127/255 of the max after min-max: dropped by the absolute rule
    (box,) = heatmap_to_boxes(heatmap, 127, "absolute", "Mass")
    assert (box.finding, box.x, box.y, box.w, box.h) == ("Mass", 20, 10, 40, 20)
    boxes = heatmap_to_boxes(heatmap, 0.3, "relative")
    assert [(b.x, b.y, b.w, b.h) for b in boxes] == [(20, 10, 40, 20), (70, 70, 5, 10)]  # largest first
    assert heatmap_to_boxes(np.zeros((8, 8)), 0.7, "relative") == []
    a, b = Box("", 0, 0, 10, 10), Box("", 5, 0, 10, 10)
    assert box_iou(a, b) == pytest.approx(50 / 150) and box_iou(a, a) == 1.0
    assert box_iou(a, Box("", 20, 20, 5, 5)) == 0.0


def test_a_new_gradient_method_is_one_weights_override(real_images: torch.Tensor) -> None:
    """The template of explain/base.py: a subclass that only says how gradients weigh channels is a full method."""
    from cxrlens.explain import GradientCAM

    class MeanGradient(GradientCAM):  # Grad-CAM's eq. 1, written as a newcomer's method would be
        def weights(self, gradients: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
            return gradients.mean(dim=(3, 4))

    model = _model()
    torch.testing.assert_close(explain(model, real_images, MeanGradient()).maps, explain(model, real_images).maps)
