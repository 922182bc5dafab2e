"""CAM throughput: cxrlens's engine vs pytorch-grad-cam and torch-cam, same model, same images.

Grad-CAM and Grad-CAM++: all ``--classes`` (14) classes of a batch of ``--batch`` (16)
images at ``--size`` (256) px. The references take one call per class (their API
explains one target per image per call; torch-cam reuses one forward with
``retain_graph``); cxrlens explains all classes in one call. Score-CAM: its masked
forward passes dominate (one per channel per image), so it is timed on
``--score-images`` images; cxrlens shares the passes between classes, pytorch-grad-cam
reruns them per class, so the reference is timed for ``--score-ref-classes`` classes and
its per-class cost (each class is an independent call) scales to all classes.
Everything runs in this one process; ratios are reported as maps per second.

    python benchmarks/cam_throughput.py [--backbone resnet50] [--score-backbone resnet18] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cxrlens.config import ModelConfig
from cxrlens.explain import CAMExplainer
from cxrlens.models import build_model


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--score-backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--score-images", type=int, default=1)
    parser.add_argument("--score-ref-classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def _best_of(repeats: int, function, warmup: bool = True) -> float:  # noqa: ANN001 - a callable
    """Best wall time of ``repeats`` calls, after one untimed call (allocator and thread-pool warm-up)."""
    if warmup:
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def _model(backbone: str, classes: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone=backbone, num_classes=classes)).to(device).eval()


def main() -> None:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchCamGradCAM
    from torchcam.methods import GradCAMpp as TorchCamGradCAMpp

    args = _arguments()
    images = torch.randn(args.batch, 1, args.size, args.size, device=args.device)
    model = _model(args.backbone, args.classes, args.device)
    layer = model.extractor.net.layer4
    maps = args.batch * args.classes
    rows = []
    for ours, grad_cam_class, torch_cam_class in (("gradcam", GradCAM, TorchCamGradCAM),
                                                  ("gradcampp", GradCAMPlusPlus, TorchCamGradCAMpp)):
        with CAMExplainer(model, ours) as explainer:
            cxrlens_s = _best_of(args.repeats, lambda: explainer(images))
        with grad_cam_class(model=model, target_layers=[layer]) as cam:
            reference_s = _best_of(args.repeats, lambda: [cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * args.batch)
                                                         for k in range(args.classes)], warmup=False)  # ~100 s a call

        def torch_cam() -> None:
            with torch_cam_class(model, target_layer=layer) as extractor:
                logits = model(images)
                for k in range(args.classes):
                    extractor([k] * args.batch, logits, retain_graph=k + 1 < args.classes)

        torch_cam_s = _best_of(args.repeats, torch_cam)
        rows.append({"method": ours, "model": args.backbone, "maps": maps, "cxrlens_maps_per_s": maps / cxrlens_s,
                     "pytorch_grad_cam_maps_per_s": maps / reference_s, "torch_cam_maps_per_s": maps / torch_cam_s,
                     "speedup_vs_pytorch_grad_cam": reference_s / cxrlens_s, "speedup_vs_torch_cam": torch_cam_s / cxrlens_s})
        print(json.dumps(rows[-1]))

    score_model = _model(args.score_backbone, args.classes, args.device)
    score_images = images[:args.score_images]
    with CAMExplainer(score_model, "scorecam") as explainer:
        cxrlens_s = _best_of(1, lambda: explainer(score_images), warmup=False)
    with ScoreCAM(model=score_model, target_layers=[score_model.extractor.net.layer4]) as cam:
        cam.batch_size = 64
        reference_s = _best_of(1, lambda: [cam(input_tensor=score_images,
                                               targets=[ClassifierOutputTarget(k)] * args.score_images)
                                           for k in range(args.score_ref_classes)], warmup=False)
    reference_all = reference_s / args.score_ref_classes * args.classes
    score_maps = args.score_images * args.classes
    rows.append({"method": "scorecam", "model": args.score_backbone, "maps": score_maps,
                 "cxrlens_maps_per_s": score_maps / cxrlens_s, "pytorch_grad_cam_maps_per_s": score_maps / reference_all,
                 "speedup_vs_pytorch_grad_cam": reference_all / cxrlens_s,
                 "note": f"reference timed for {args.score_ref_classes} classes, scaled to {args.classes}"})
    print(json.dumps(rows[-1]))
    print(json.dumps({"torch_threads": torch.get_num_threads(), "batch": args.batch, "size": args.size,
                      "results": rows}, indent=2))


if __name__ == "__main__":
    main()
