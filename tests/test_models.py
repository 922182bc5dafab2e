"""Every model variant on a batch of real sample radiographs; parameter counts; weights files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from cxrlens.config import ModelConfig
from cxrlens.data import NIHChestXray14
from cxrlens.data.preprocess import fit_image
from cxrlens.data.io import read_image
from cxrlens.explain import explain
from cxrlens.models import BACKBONES, Backbone, WeightsUnavailableError, build_model, count_parameters
from cxrlens.models.inference import inference_model


@pytest.fixture(scope="module")
def real_batch(nih_bbox_root: Path) -> torch.Tensor:
    items = NIHChestXray14(nih_bbox_root).items[:2]
    pixels = np.stack([fit_image(read_image(item.path), 64, "squash") for item in items])
    return torch.from_numpy(pixels).float().div(255).unsqueeze(1)


VARIANTS = [
    *({"backbone": name} for name in BACKBONES),
    {"backbone": "resnet50", "pooling": "lse"},
    {"backbone": "resnet50", "arch": "multires", "pooling": "lse"},
    {"backbone": "efficientnet_b4", "arch": "multires", "pooling": "lse"},
    {"backbone": "resnet18", "arch": "dense-multires", "pooling": "lse-lba", "lba_r0": 5.0},
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_forward_backward_on_real_images(options: dict, real_batch: torch.Tensor) -> None:
    model = build_model(ModelConfig(**options))
    logits = model(real_batch)
    assert logits.shape == (2, 14) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    maps = model.cam_features(real_batch)
    expected_side = 16 if options.get("arch") == "multires" else (8 if options.get("arch") == "dense-multires" else 2)
    assert maps.shape[-1] == expected_side


def test_merge_blocks_keep_the_scale_of_the_backbone_maps(real_batch: torch.Tensor) -> None:
    """He-initialised merge blocks pass the stride-4 map the backbone's activation scale (PyTorch's default init
    shrank it about 5x over three merges, and a MultiRes ResNet-18 trained from it stayed at chance)."""
    torch.manual_seed(0)
    extractor = build_model(ModelConfig(backbone="resnet18", arch="multires", pooling="lse")).extractor
    with torch.no_grad():
        features, merged = extractor.backbone(real_batch), extractor(real_batch)
    assert 0.5 < merged[0].std() / features[0].std() < 2.0


def test_merge_block_at_the_coarse_resolution_equals_the_papers_literal_form(real_batch: torch.Tensor) -> None:
    """The merge block runs the coarse half of its fuse convolution before upsampling; outputs and gradients must be
    those of paper 003 Fig. 2b as drawn (upsample, concatenate, 1x1 conv + ReLU)."""
    torch.manual_seed(0)
    extractor = build_model(ModelConfig(backbone="resnet18", arch="multires", pooling="lse")).extractor
    features = [feature.detach() for feature in extractor.backbone(real_batch)]
    for level, block in enumerate(extractor.merges):
        coarse, fine = features[level + 1].requires_grad_(), features[level].requires_grad_()
        upsampled = torch.nn.functional.interpolate(block.reduce_coarse(coarse), size=fine.shape[-2:],
                                                    mode="bilinear", align_corners=False)
        literal = block.fuse(torch.cat([upsampled, block.reduce_fine(fine)], dim=1))
        literal_grads = torch.autograd.grad(literal.square().sum(), [coarse, fine, block.fuse[0].weight])
        merged = block(coarse, fine)
        grads = torch.autograd.grad(merged.square().sum(), [coarse, fine, block.fuse[0].weight])
        torch.testing.assert_close(merged, literal, rtol=1e-4, atol=1e-5)
        for grad, literal_grad in zip(grads, literal_grads):
            torch.testing.assert_close(grad, literal_grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("options", [{"backbone": "resnet18", "pooling": "lse"}, {"backbone": "densenet121"},
                                     {"backbone": "resnet18", "arch": "multires", "pooling": "lse"},
                                     {"backbone": "resnet18", "arch": "dense-multires", "pooling": "lse-lba"}],
                         ids=lambda o: "-".join(str(v) for v in o.values()))
def test_the_inference_model_gives_the_same_outputs_and_heatmaps(options: dict, real_batch: torch.Tensor) -> None:
    """What predict, evaluate and serve run (batch norms folded, channels-last): the model's logits and Grad-CAMs."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**options)).eval()
    for module in model.modules():  # trained-looking statistics, so a wrong fold would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    prepared = inference_model(model, 64)
    images = (real_batch - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(prepared(images), model(images), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(explain(prepared, images).maps, explain(model, images).maps, atol=1e-3, rtol=1e-3)
    if options.get("arch") != "dense-multires" and options["backbone"] == "resnet18":  # (its decoder is BN-ReLU-conv)
        assert not any(type(module) is torch.nn.BatchNorm2d for module in prepared.modules())  # every conv -> BN folded
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())  # the model untouched


def test_a_convolution_that_also_feeds_a_skip_is_not_folded() -> None:
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = self.conv(images)
            return (self.bn(out) + out).mean(dim=(2, 3))

    model = Branchy().eval()
    model.bn.running_var.fill_(4.0)
    prepared = inference_model(model, 16)
    assert type(prepared.bn) is torch.nn.BatchNorm2d  # folding would change the skip: the copy stays unfolded
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(prepared(images), model(images))


def test_a_compiled_inference_model_gives_the_same_heatmaps_or_runs_uncompiled(real_batch: torch.Tensor,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile: the feature extractor runs compiled with frozen weights, same outputs; where compiling fails, a
    warning names why and the model runs as it is."""
    from cxrlens.models import inference

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", pooling="lse")).eval()
    images = (real_batch - 0.5) / 0.25
    compiled = inference_model(model, 64, compile=True)
    assert isinstance(compiled.extractor, inference.CompiledExtractor)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), model(images), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(explain(compiled, images).maps, explain(model, images).maps, atol=1e-3, rtol=1e-3)

    def broken(module: torch.nn.Module, **options: object) -> object:
        def run(images: torch.Tensor) -> None:
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(inference.torch, "compile", broken)
    with pytest.warns(UserWarning, match="not used .RuntimeError: no C.. compiler"):
        uncompiled = inference_model(model, 64, compile=True)
    assert not isinstance(uncompiled.extractor, inference.CompiledExtractor)


def test_parameter_counts_against_paper_003_table_4() -> None:
    standard = build_model(ModelConfig(in_chans=3))
    assert count_parameters(standard) == 23_536_718  # paper: 23,536,718 (3-channel input)
    multires = build_model(ModelConfig(in_chans=3, arch="multires", pooling="lse"))
    assert abs(count_parameters(multires) - 26_273_615) / 26_273_615 < 0.001  # paper: 26,273,615
    efficientnet = build_model(ModelConfig(in_chans=3, backbone="efficientnet_b4"))
    assert count_parameters(efficientnet) == 17_573_718  # paper: 17,573,718


def test_dense_multires_saliency_64_at_512() -> None:
    model = build_model(ModelConfig(backbone="resnet18", arch="dense-multires", pooling="lse-lba", dense_width=16,
                                    dense_layers=1, dense_growth=8))
    with torch.no_grad():
        saliency = model.saliency(torch.rand(1, 1, 512, 512))
    assert saliency.shape == (1, 14, 64, 64) and 0 <= saliency.min() and saliency.max() <= 1


def test_local_weights_file_summed_over_rgb(tmp_path: Path) -> None:
    rgb = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(rgb.state_dict(), path)
    backbone = Backbone("resnet18", weights=path)
    torch.testing.assert_close(backbone.net.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(backbone.net.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        Backbone("resnet18", weights=tmp_path / "missing.pth")


def test_imagenet_download_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="could not download ImageNet weights for resnet18"):
        Backbone("resnet18", weights="imagenet")


def test_trainable_from_freezes_early_stages() -> None:
    backbone = Backbone("resnet50", trainable_from=3)
    frozen = {name for name, p in backbone.net.named_parameters() if not p.requires_grad}
    assert any(name.startswith("layer2.") for name in frozen) and "conv1.weight" in frozen
    assert not any(name.startswith(("layer3.", "layer4.")) for name in frozen)
    backbone.train()
    assert not backbone.net.bn1.training and backbone.net.layer3[0].bn1.training
