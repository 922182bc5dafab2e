"""Self-supervised pretraining: SimCLR, BYOL, the CAM loss, views, sampler, pretrain runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from cxrlens.config import (BYOLCAMConfig, BYOLConfig, ModelConfig, PretrainConfig, SimCLRConfig, TrainConfig,
                            ViewAugmentConfig)
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.explain import gradcam
from cxrlens.models.backbones import Backbone
from cxrlens.ssl.augment import view_transform
from cxrlens.ssl.byol import BYOL
from cxrlens.ssl.byol_cam import BYOLCAM
from cxrlens.ssl.device_views import DeviceViews
from cxrlens.train.cam_loss import cam_loss
from cxrlens.ssl.pretrain import pretrain, pretraining_sets
from cxrlens.ssl.simclr import SimCLR
from cxrlens.data.torch_datasets import box_union_mask
from cxrlens.ssl.views import TwoViewDataset
from cxrlens.train.boxed_batches import BoxedBatchSampler
from cxrlens.train.run_folder import RunExistsError


@pytest.fixture(scope="module")
def boxed_cache(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> PreparedCache:
    """The real NIH images with radiologist boxes, at 64 px."""
    return prepare_cache(open_sample(data_root, ["nih-bbox"]), tmp_path_factory.mktemp("bbox") / "c", size=64, workers=2)


def _pretrain_config(method: str = "byol-cam", **train: object) -> PretrainConfig:
    settings = {"epochs": 1, "batch_size": 16, "num_workers": 0, "accelerator": "cpu", "max_steps_per_epoch": 3, **train}
    boxes = {"boxed_per_batch": 4} if method == "byol-cam" else {}
    return PretrainConfig(method={"name": method, **boxes}, encoder=ModelConfig(backbone="resnet18"),
                          train=TrainConfig(**{**PretrainConfig().train.model_dump(), **settings}))


def test_simclr_projection_heads_follow_the_papers() -> None:
    layers = list(SimCLR(Backbone("resnet18"), SimCLRConfig(projection="bn")).projector.layers)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features, layers[0].bias is not None) == (512, 2048, True)
    assert (layers[3].out_features, layers[3].bias is None) == (128, True)  # paper 002 Table I
    mlp = list(SimCLR(Backbone("resnet18"), SimCLRConfig(projection="mlp")).projector.layers)
    assert [type(layer) for layer in mlp] == [nn.Linear, nn.ReLU, nn.Linear]  # paper 001


def test_simclr_negatives_gathered_across_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    script = Path(__file__).with_name("ddp_simclr.py")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "1"], check=True, capture_output=True,
                   timeout=300)
    for gather in ("1", "0"):
        subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29541", str(script),
                        str(tmp_path / f"ddp{gather}"), gather], check=True, capture_output=True, timeout=300)
    single = json.loads((tmp_path / "single.rank0").read_text())
    gathered = json.loads((tmp_path / "ddp1.rank0").read_text())
    local = json.loads((tmp_path / "ddp0.rank0").read_text())
    assert gathered["loss"] == pytest.approx(single["loss"], rel=1e-5)
    np.testing.assert_allclose(gathered["gradient"], single["gradient"], rtol=1e-4, atol=1e-6)
    assert local["loss"] != pytest.approx(single["loss"], rel=1e-3)  # without the gather, fewer negatives


def _byol(tau_schedule: str = "constant") -> BYOL:
    torch.manual_seed(0)
    return BYOL(Backbone("resnet18"), BYOLConfig(hidden=32, dim=16, tau_schedule=tau_schedule))


def test_byol_loss_is_the_sum_of_both_directions_of_eq_3() -> None:
    model = _byol().eval()
    view1, view2 = torch.randn(2, 4, 1, 32, 32).unbind(0)
    loss = model(view1, view2)["loss"]

    def online(view: torch.Tensor) -> torch.Tensor:
        return model.predictor(model.projector(model.encoder(view)[-1].mean((2, 3))))

    def target(view: torch.Tensor) -> torch.Tensor:
        return model.target_projector(model.target_encoder(view)[-1].mean((2, 3)))

    def eq3(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()

    expected = eq3(online(view1), target(view2)) + eq3(online(view2), target(view1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_byol_target_is_an_exponential_moving_average() -> None:
    model = _byol()
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    model.after_step(step=1, total_steps=10)
    for old, new, online in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * online)
    cosine = _byol("cosine")
    assert cosine.momentum(0, 100) == pytest.approx(0.99) and cosine.momentum(100, 100) == pytest.approx(1.0)


def test_differentiable_gradcam_is_eq_1_2_for_every_class_at_once() -> None:
    torch.manual_seed(0)
    features = torch.randn(3, 5, 4, 4, requires_grad=True)
    head = nn.Linear(5, 6)
    scores = head(features.mean((2, 3)))
    classes = torch.tensor([1, 4])
    cams = gradcam(features, scores, classes, create_graph=True)
    # for GAP + linear, d y^c / d A^k_ij = w_ck / (h w): Grad-CAM equals ReLU(sum_k w_ck A^k) / (h w)
    expected = F.relu(torch.einsum("kc,bchw->bkhw", head.weight[classes], features)) / 16
    torch.testing.assert_close(cams, expected)
    cams.sum().backward()  # differentiable: gradients reach the features and the head
    assert features.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0


def test_box_mask_moves_with_the_first_views_geometry(boxed_cache: PreparedCache) -> None:
    findings = list(BYOLCAMConfig().cam_findings)
    flip_only = ViewAugmentConfig(crop_p=0, affine_p=0, hflip_p=1.0, blur_p=0, jitter_p=0)
    dataset = TwoViewDataset(boxed_cache, boxed_cache.ready_indices()[:5], view_transform(flip_only, 64),
                             view_transform(flip_only, 64), findings)
    sample = dataset[0]
    index = int(dataset.indices[0])
    mask, present = box_union_mask(boxed_cache, index, findings)
    assert mask.sum() > 0 and present.sum() >= 1
    torch.testing.assert_close(sample["box_mask"][0], torch.from_numpy(mask).flip(-1))
    torch.testing.assert_close(sample["view1"][0], torch.from_numpy(np.array(boxed_cache.images[index])).flip(-1))
    assert sample["box_findings"].tolist() == present.tolist()
    unboxed = TwoViewDataset(boxed_cache, [index], view_transform(flip_only, 64), view_transform(flip_only, 64), ())
    assert unboxed[0]["box_mask"].sum() == 0 and not unboxed.boxed.any()


def test_boxed_batch_sampler_guarantees_k_boxed_per_batch_on_every_rank() -> None:
    boxed = np.zeros(200, dtype=bool)
    boxed[[3, 50, 99, 150, 170]] = True
    ranks = [BoxedBatchSampler(boxed, 10, 2, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    batches = [list(sampler) for sampler in ranks]
    assert len(batches[0]) == len(ranks[0]) == 10
    for rank_batches in batches:
        assert all(len(b) == 10 and boxed[b].sum() == 2 for b in rank_batches)
    unboxed_seen = [i for rank_batches in batches for b in rank_batches for i in b if not boxed[i]]
    assert len(unboxed_seen) == len(set(unboxed_seen))  # no unboxed image twice in an epoch, across ranks
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != batches[0]
    ranks[0].set_epoch(0)
    assert list(ranks[0]) == batches[0]


def _cam_loss_history(dataset: TwoViewDataset, relu: bool, steps: int = 20) -> list[float]:
    torch.manual_seed(0)
    model = BYOLCAM(Backbone("resnet18"), BYOLCAMConfig(hidden=64, dim=32, cam_relu=relu))
    batch = torch.utils.data.default_collate([dataset[i] for i in range(8)])
    views = [(batch[name].float() / 255 - 0.5) / 0.25 for name in ("view1", "view2")]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for step in range(steps):
        terms = model(*views, box_mask=batch["box_mask"], box_findings=batch["box_findings"])
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        model.after_step(step + 1, steps)
        history.append(terms["cam_loss"].item())
    return history


def test_cam_loss_reaches_the_encoder_and_falls_over_20_steps_on_real_boxes(boxed_cache: PreparedCache) -> None:
    config = _pretrain_config()
    dataset = pretraining_sets([boxed_cache.directory], config).datasets[0]
    torch.manual_seed(0)
    model = BYOLCAM(Backbone("resnet18"), BYOLCAMConfig(hidden=64, dim=32))
    assert model.finding_head.out_features == len(config.method.cam_findings)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(8)])
    assert batch["box_findings"].sum() >= 8  # every image here carries a box
    features = model.encoder((batch["view1"].float() / 255 - 0.5) / 0.25)[-1]
    loss = cam_loss(features, model.finding_head(features.mean((2, 3))), batch["box_mask"], batch["box_findings"])
    (gradient,) = torch.autograd.grad(loss, model.encoder.net.conv1.weight)
    assert gradient.abs().sum() > 0  # the CAM loss alone trains the encoder's first layer
    history = _cam_loss_history(dataset, relu=False)
    assert np.mean(history[-3:]) < 0.8 * history[0]
    literal = _cam_loss_history(dataset, relu=True)  # eq. 2's ReLU before the sigmoid: stuck near log 2
    assert min(literal) > 0.65 and np.mean(history[-3:]) < min(literal) - 0.1


def test_device_views_match_the_workers_views_and_move_the_box_mask(boxed_cache: PreparedCache) -> None:
    """views_on: device - kornia on whole batches: flips like the workers' torchvision path (exactly, in uint8),
    each image its own draw, the box mask moved with view 1 only, and every operation of the config running."""
    findings = list(BYOLCAMConfig().cam_findings)
    raw = TwoViewDataset(boxed_cache, boxed_cache.ready_indices()[:16], v2.Identity(), v2.Identity(), findings)
    batch = torch.utils.data.default_collate([raw[i] for i in range(16)])
    flip = ViewAugmentConfig(crop_p=0, affine_p=0, hflip_p=1.0, blur_p=0, jitter_p=0)
    view1, view2, mask = DeviceViews(flip, ViewAugmentConfig(crop_p=0, affine_p=0, hflip_p=0, blur_p=0, jitter_p=0),
                                     64)(batch["view1"], batch["view2"], batch["box_mask"])
    assert view1.dtype == view2.dtype == mask.dtype == torch.uint8
    torch.testing.assert_close(view1, batch["view1"].flip(-1))
    torch.testing.assert_close(mask, batch["box_mask"].flip(-1))
    torch.testing.assert_close(view2, batch["view2"])
    torch.manual_seed(0)
    paper = PretrainConfig()
    view1, view2, mask = DeviceViews(paper.online_view, paper.target_view, 64)(batch["view1"], batch["view2"],
                                                                              batch["box_mask"])
    assert view1.shape == view2.shape == mask.shape == (16, 1, 64, 64)
    assert set(mask.unique().tolist()) <= {0, 1} and mask.sum() > 0
    assert all(not torch.equal(view1[i], batch["view1"][i]) for i in range(16))  # crop_p = 1: all are cropped
    same = batch["view1"][:1].expand(8, -1, -1, -1)
    drawn, _, _ = DeviceViews(paper.online_view, paper.target_view, 64)(same, same, batch["box_mask"][:1].expand_as(same))
    assert len({bytes(view.numpy()) for view in drawn}) == 8  # one image eight times: eight different views


def test_pretrain_runs_resumes_and_refuses_to_overwrite(tmp_path: Path, boxed_cache: PreparedCache) -> None:
    for method in ("simclr", "byol", "byol-cam"):
        summary = pretrain([boxed_cache.directory], tmp_path / method, _pretrain_config(method), show_progress=False)
        row = summary["history"][0]
        assert np.isfinite(row["train_loss"]) and Path(summary["encoder"]).is_file()
        assert ("train_cam_loss" in row) == (method == "byol-cam")
    on_device = _pretrain_config("byol-cam").model_copy(update={"views_on": "device"})
    summary = pretrain([boxed_cache.directory], tmp_path / "device-views", on_device, show_progress=False)
    assert np.isfinite(summary["history"][0]["train_cam_loss"])  # the boxes still reach the CAM loss
    with pytest.raises(RunExistsError):
        pretrain([boxed_cache.directory], tmp_path / "byol", _pretrain_config("byol"), show_progress=False)
    resumed = pretrain([boxed_cache.directory], tmp_path / "byol", _pretrain_config("byol", epochs=2, keep_epochs=(2,)),
                       resume=True, show_progress=False)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2]
    assert (tmp_path / "byol" / "checkpoints" / "epoch-0002.ckpt").is_file()


def test_pretrain_config_keeps_paper_000_defaults_for_fields_not_given() -> None:
    config = PretrainConfig(train={"epochs": 3})
    assert (config.train.epochs, config.train.lr, config.train.betas, config.train.batch_size) == (3, 1e-4, (0.9, 0.999), 128)
    method = config.method
    assert (method.tau, method.cam_lambda, method.dim, method.hidden) == (0.99, 2.0, 256, 512)
