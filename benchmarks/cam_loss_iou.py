"""Does paper 000's CAM loss make the encoder's CAMs land on the radiologists' boxes?

Same init, same seed, same data order and views: plain BYOL vs BYOL + CAM loss for
``--steps`` optimizer steps on the NIH sample images (the boxed images of 80 % of the
boxed patients carry their boxes into the CAM loss; the other 20 % are held out and
never seen). Then, for each encoder, the same probe: a balanced logistic regression per
box finding on frozen GAP features of the training boxed images ("does this image have a
box of finding f"), whose weights give the CAM of the held-out images
(``ReLU(sum_k w_fk A^k)``, = Grad-CAM for a linear head). Boxes from each CAM (paper 000:
min-max to 0..255, threshold 127, OpenCV contours) are scored by IoU with every held-out
radiologist box (best-matching predicted box), and so is the image-blind location prior
(the mean training box mask of the finding, the same for every image). The CAM-loss
encoder is also scored with its own finding head (the one the CAM loss trained).

Prints and writes JSON: mean IoU per model with bootstrap 95 % CIs over boxes, and the
paired difference CAM loss - plain BYOL.

    python benchmarks/cam_loss_iou.py [--data-root DIR] [--size 128] [--steps 200] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from cxrlens.checkpoints import TrainingState, load_checkpoint
from cxrlens.config import BYOLCAMConfig, ModelConfig, Normalisation, PretrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.data.boxes import box_iou
from cxrlens.data.preprocess import normalise
from cxrlens.data.roles import held_out_box_patients
from cxrlens.evaluate.frozen_features import extract_features, frozen_encoder
from cxrlens.explain.boxes import heatmap_to_boxes
from cxrlens.paths import find_data_root
from cxrlens.ssl.pretrain import pretrain
from cxrlens.ssl.views import box_union_mask


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench/cam_loss_iou"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--lr", type=float, default=1e-3, help="paper 000: 1e-4 over 500 epochs; higher for a brief run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-only", action="store_true", help="score the encoders a previous run left in --work")
    return parser.parse_args()


@torch.no_grad()
def _cams(encoder: torch.nn.Module, normalisation: Normalisation, cache: PreparedCache, indices: np.ndarray,
          weights: np.ndarray, relu: bool = True) -> np.ndarray:
    """CAMs (N x F x S x S) of the probe's finding weights, upsampled to the cache size."""
    encoder.eval()
    images = torch.from_numpy(np.stack([np.array(cache.images[int(i)]) for i in indices]))[:, None]
    feature_map = encoder(normalise(images, normalisation))[-1]
    cams = torch.einsum("fc,nchw->nfhw", torch.from_numpy(weights).float(), feature_map)
    cams = F.relu(cams) if relu else cams
    return F.interpolate(cams, size=cache.size, mode="bilinear", align_corners=False).numpy()


RULES = {"absolute-127 (paper 000)": ("absolute", 127), "relative-0.7 (paper 003)": ("relative", 0.7)}


def _best_iou(heatmap: np.ndarray, truth, rule: tuple[str, float]) -> float:  # noqa: ANN001 - a Box
    predicted = heatmap_to_boxes(heatmap, rule[1], rule[0])
    return max((box_iou(box, truth) for box in predicted), default=0.0)


def _ci(values: np.ndarray, resamples: int, rng: np.random.Generator) -> list[float]:
    draws = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return [float(values.mean()), *map(float, np.percentile(draws, [2.5, 97.5]))]


def main() -> None:
    args = _arguments()
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("no sample data root: pass --data-root or set CXRLENS_DATA")
    boxed_dir, other_dir = args.work / f"nih-bbox-{args.size}", args.work / f"nih-sample-{args.size}"
    boxed = prepare_cache(open_sample(root, ["nih-bbox"]), boxed_dir, size=args.size)
    prepare_cache(open_sample(root, ["nih-sample"]), other_dir, size=args.size)
    items = boxed.items()
    held_out = held_out_box_patients(items, PretrainConfig().box_test_fraction, args.seed)  # pretraining leaves them out
    test = np.array([i for i in boxed.ready_indices() if items[i].patient_id in held_out])
    train = np.setdiff1d(boxed.ready_indices(), test)
    findings = list(BYOLCAMConfig().cam_findings)
    images = len(boxed.ready_indices()) - len(test) + len(PreparedCache(other_dir).ready_indices())
    epochs = -(-args.steps // (images // args.batch_size))
    encoders = {}
    timings = {}
    own_heads = {}
    for method in ("byol", "byol-cam"):
        if args.eval_only:
            encoders[method] = frozen_encoder(args.work / method / "encoder.ckpt")
            own_heads[method] = load_checkpoint(args.work / method / "checkpoints" / "last.ckpt", TrainingState).state
            continue
        config = PretrainConfig(method=method, encoder=ModelConfig(backbone=args.backbone), train={
            "epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
            "num_workers": 2, "seed": args.seed, "accelerator": args.device})
        started = time.perf_counter()
        summary = pretrain([other_dir, boxed_dir], args.work / method, config, overwrite=True)
        timings[method] = time.perf_counter() - started
        encoders[method] = frozen_encoder(summary["encoder"])
        own_heads[method] = load_checkpoint(args.work / method / "checkpoints" / "last.ckpt", TrainingState).state
        print(method, summary["history"][-1])

    targets = np.array([[any(b.finding == f for b in boxed.boxes(int(i))) for f in findings] for i in train], float)
    truths = [(row, box) for row, i in enumerate(test) for box in boxed.boxes(int(i)) if box.finding in findings]
    scores: dict[str, np.ndarray] = {}
    for method, (encoder, normalisation) in encoders.items():
        features = extract_features(encoder, normalisation, boxed, train)
        weights = np.stack([LogisticRegression(class_weight="balanced", max_iter=3000).fit(features, targets[:, f]).coef_[0]
                            if 0 < targets[:, f].sum() < len(targets) else np.zeros(features.shape[1])
                            for f in range(len(findings))])
        cams = _cams(encoder, normalisation, boxed, test, weights)
        for label, rule in RULES.items():
            scores[f"{method} | {label}"] = np.array([_best_iou(cams[row, findings.index(box.finding)], box, rule)
                                                      for row, box in truths])
    # the CAM the CAM loss trained: Grad-CAM of BYOL + CAM loss's own finding head (= its CAM, a linear head)
    # the map the CAM loss trained: sigmoid of Grad-CAM (cam_relu off), whose weights for a linear head on GAP are
    # the head's weights over h x w; scored as such, so the relative rule applies too
    own = own_heads["byol-cam"]["finding_head.weight"].numpy() / (args.size // 32) ** 2
    cams = 1 / (1 + np.exp(-_cams(*encoders["byol-cam"], boxed, test, own, relu=False)))
    for label, rule in RULES.items():
        scores[f"byol-cam own finding head | {label}"] = np.array(
            [_best_iou(cams[row, findings.index(box.finding)], box, rule) for row, box in truths])
    prior = {f: np.mean([box_union_mask(boxed, int(i), [f])[0] for i in train], axis=0) for f in findings}
    for label, rule in RULES.items():
        scores[f"location prior | {label}"] = np.array([_best_iou(prior[box.finding], box, rule) for _, box in truths])

    rng = np.random.default_rng(args.seed)
    result = {"size": args.size, "steps": epochs * (images // args.batch_size), "epochs": epochs,
              "batch_size": args.batch_size, "backbone": args.backbone,
              "held_out_boxes": len(truths), "train_boxed_images": len(train), "pretrain_seconds": timings,
              "mean_iou": {name: _ci(values, args.bootstrap, rng) for name, values in scores.items()},
              "difference_cam_loss_minus_byol": {
                  label: _ci(scores[f"byol-cam | {label}"] - scores[f"byol | {label}"], args.bootstrap, rng)
                  for label in RULES},
              "difference_own_head_minus_byol": {
                  label: _ci(scores[f"byol-cam own finding head | {label}"] - scores[f"byol | {label}"],
                             args.bootstrap, rng) for label in RULES}}
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
