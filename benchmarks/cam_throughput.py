"""CAM engine against torch-cam and pytorch-grad-cam, like for like, in interleaved rounds of one process.

Every implementation gets the same model (a ResNet-50 with our 1-channel stem and 14
findings; Score-CAM: a ResNet-18, whose 512 channels keep the reference's per-channel
passes affordable), the same real radiographs (the first boxed NIH images, fitted to
``--size`` px and normalised) and the same target layer (the last ResNet stage, which is
what cxrlens's ``cam_features`` returns), and must return what an overlay needs: one map
per image and finding at the input size, min-max scaled. cxrlens explains all findings in
one call; torch-cam reuses one forward pass with ``retain_graph`` and is called once per
finding; pytorch-grad-cam is called once per finding (its API explains one target per
image per call). cxrlens is timed as ``predict``, ``evaluate`` and ``serve`` run it, on
:func:`cxrlens.models.inference.inference_model` of the model (batch norms folded,
channels-last), the same with ``--compile``, and its engine alone on the model
as given. Each implementation's maps are checked against cxrlens's (mean Pearson
correlation over the maps, required >= 0.99) before anything is timed.

Timing: ``--rounds`` rounds, each running cxrlens and torch-cam once in alternating
order; medians. pytorch-grad-cam takes minutes per call at batch 16 and is timed once
(Score-CAM: for ``--score-ref-classes`` findings, scaled to all, as each finding is an
independent call). Ratios are reference seconds / cxrlens seconds at batch 1 and ``--batch``.

    python benchmarks/cam_throughput.py [--batch 16] [--size 256] [--rounds 3] [--device cpu] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrlens.config import ModelConfig
from cxrlens.data import NIHChestXray14
from cxrlens.data.io import read_image
from cxrlens.data.preprocess import fit_image
from cxrlens.explain import CAMExplainer
from cxrlens.explain.base import scale_maps
from cxrlens.models import build_model
from cxrlens.models.inference import inference_model
from cxrlens.paths import find_data_root

Maps = Callable[[torch.Tensor], torch.Tensor]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=find_data_root())
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--score-ref-classes", type=int, default=2)
    parser.add_argument("--skip-pytorch-grad-cam", action="store_true", help="its calls take minutes at batch 16")
    parser.add_argument("--skip-compiled-scorecam", action="store_true",
                        help="time Score-CAM without --compile (each new masked-batch shape compiles once)")
    parser.add_argument("--methods", nargs="+", default=["gradcam", "gradcampp", "scorecam"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def _images(data_root: Path, count: int, size: int, device: str) -> torch.Tensor:
    items = NIHChestXray14(data_root / "nih-chestxray14-bbox").items[:count]
    pixels = np.stack([fit_image(read_image(item.path), size, "squash") for item in items])
    return ((torch.from_numpy(pixels).float().div(255) - 0.5) / 0.25).unsqueeze(1).to(device)


def _model(backbone: str, classes: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone=backbone, num_classes=classes, weights=None)).to(device).eval()


def _at_input(maps: torch.Tensor, size: int) -> torch.Tensor:
    """B x K x h x w -> B x K x size x size, min-max scaled (what an overlay needs)."""
    return scale_maps(F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False))


def cxrlens_maps(model: torch.nn.Module, method: str) -> Maps:
    def run(images: torch.Tensor) -> torch.Tensor:
        with CAMExplainer(model, method) as explain:
            return explain(images).maps
    return run


def torch_cam_maps(model: torch.nn.Module, method: str, classes: int) -> Maps:
    from torchcam.methods import GradCAM, GradCAMpp, ScoreCAM

    kind = {"gradcam": GradCAM, "gradcampp": GradCAMpp, "scorecam": ScoreCAM}[method]
    layer = model.extractor.net.layer4

    def run(images: torch.Tensor) -> torch.Tensor:
        options = {"batch_size": 64} if method == "scorecam" else {}
        with kind(model, target_layer=layer, input_shape=tuple(images.shape[1:]), **options) as extractor:
            logits = model(images)
            graph = {} if method == "scorecam" else {"retain_graph": True}  # Score-CAM needs no gradient
            maps = [extractor([k] * len(images), logits, **graph)[0] for k in range(classes)]
        return _at_input(torch.stack(maps, dim=1).detach(), images.shape[-1])
    return run


def pytorch_grad_cam_maps(model: torch.nn.Module, method: str, classes: int) -> Maps:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "scorecam": ScoreCAM}[method]

    def run(images: torch.Tensor) -> torch.Tensor:
        with kind(model=model, target_layers=[model.extractor.net.layer4]) as cam:
            cam.batch_size = 64
            maps = [torch.from_numpy(cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * len(images)))
                    for k in range(classes)]
        return scale_maps(torch.stack(maps, dim=1).float())
    return run


def correlation(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean Pearson correlation of corresponding maps (a map constant in either is skipped)."""
    a = ours.flatten(2).double().cpu()
    b = reference.flatten(2).double().cpu()
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    valid = norms > 0
    return float(((a * b).sum(-1)[valid] / norms[valid]).mean())


def _seconds(run: Maps, images: torch.Tensor, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def compare(method: str, model: torch.nn.Module, images: torch.Tensor, args: argparse.Namespace) -> dict:
    """cxrlens as predict / evaluate / serve run it (on :func:`inference_model`), cxrlens's engine on the model as
    given, and torch-cam (on the model as given), in rounds of alternating order; pytorch-grad-cam once."""
    runs = {"cxrlens": cxrlens_maps(inference_model(model, images.shape[-1]), method),
            "cxrlens engine alone": cxrlens_maps(model, method),
            "torch-cam": torch_cam_maps(model, method, args.classes)}
    if method != "scorecam" or not args.skip_compiled_scorecam:
        runs["cxrlens --compile"] = cxrlens_maps(inference_model(model, images.shape[-1], compile=True), method)
    ours_maps = runs["cxrlens"](images)
    row = {"method": method, "batch": len(images), "backbone": "resnet18" if method == "scorecam" else "resnet50",
           **{f"correlation_{name}": round(correlation(ours_maps, run(images)), 4)  # the first call compiles
              for name, run in runs.items() if name != "cxrlens"}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, run in list(runs.items())[::1 if round_ % 2 == 0 else -1]:
            times[name].append(_seconds(run, images, args.device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    row.update({f"{name}_s": round(value, 3) for name, value in medians.items()})
    row.update({"speedup_vs_torch_cam": round(medians["torch-cam"] / medians["cxrlens"], 2),
                "engine_alone_speedup_vs_torch_cam": round(medians["torch-cam"] / medians["cxrlens engine alone"], 2)})
    if "cxrlens --compile" in medians:
        row["compiled_speedup_vs_torch_cam"] = round(medians["torch-cam"] / medians["cxrlens --compile"], 2)
    if not args.skip_pytorch_grad_cam:
        classes = args.score_ref_classes if method == "scorecam" else args.classes
        reference = pytorch_grad_cam_maps(model, method, classes)
        started = time.perf_counter()
        reference_maps = reference(images)
        seconds = (time.perf_counter() - started) * args.classes / classes
        row.update({"correlation_pytorch_grad_cam": round(correlation(ours_maps[:, :classes], reference_maps), 4),
                    "pytorch_grad_cam_s": round(seconds, 3),
                    "speedup_vs_pytorch_grad_cam": round(seconds / medians["cxrlens"], 1)})
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    args = _arguments()
    images = _images(args.data_root, args.batch, args.size, args.device)
    resnet50, resnet18 = _model("resnet50", args.classes, args.device), _model("resnet18", args.classes, args.device)
    rows = []
    for batch in (1, args.batch):
        for method in [name for name in ("gradcam", "gradcampp") if name in args.methods]:
            rows.append(compare(method, resnet50, images[:batch], args))
    if "scorecam" in args.methods:
        rows.append(compare("scorecam", resnet18, images[:1], args))
    result = {"torch_threads": torch.get_num_threads(), "size": args.size, "classes": args.classes,
              "device": args.device, "results": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
