"""Does self-supervised pretraining on the unlabeled sample images help with few labels?

Pretrains an encoder briefly on every real sample image (NIH bbox + NIH sample + Kermany
+ Cohen COVID; labels unused), then compares it in the same run with a random-init
encoder of the same architecture under paper 002's linear evaluation (frozen GAP
features -> balanced logistic regression, C grid-searched by AUC in stratified k-fold)
at 10 % and 100 % of the training labels, on two tasks:

* Kermany pneumonia vs normal (papers 001, 002), patient-level 80/20 split;
* NIH 14-finding multi-label (paper 000), the official test list as test split.

Prints and writes JSON with mean AUC (bootstrap 95 % CI over test images, averaged per
class) for both encoders, and their difference with a paired bootstrap 95 % CI (both
encoders rescored on the same resampled test images).

    python benchmarks/ssl_evidence.py [--data-root DIR] [--size 128] [--epochs 3] [--method byol]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cxrlens.config import LinearEvalConfig, ModelConfig, PretrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.registry import open_sample
from cxrlens.evaluate.classification import paired_mean_auroc_difference
from cxrlens.evaluate.linear_probe import run_linear_eval, summarise
from cxrlens.paths import find_data_root
from cxrlens.ssl.pretrain import pretrain


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench/ssl_evidence"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", default="byol", choices=("simclr", "byol", "byol-cam"))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("no sample data root: pass --data-root or set CXRLENS_DATA")
    caches = {name: args.work / f"{name}-{args.size}" for name in ("nih", "kermany", "cohen")}
    prepare_cache(open_sample(root, ["nih-bbox", "nih-sample"]), caches["nih"], size=args.size)
    prepare_cache(open_sample(root, ["kermany"]), caches["kermany"], size=args.size)
    prepare_cache(open_sample(root, ["cohen"]), caches["cohen"], size=args.size)

    config = PretrainConfig(method=args.method, encoder=ModelConfig(backbone=args.backbone), train={
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "num_workers": 2, "seed": args.seed,
        "accelerator": args.device})
    run = args.work / f"pretrain-{args.method}"
    summary = pretrain(list(caches.values()), run, config, resume=(run / "checkpoints" / "last.ckpt").exists())
    pretrain_seconds = sum(epoch["seconds"] for epoch in summary["history"])  # also right after a resume

    probe = LinearEvalConfig(fractions=(0.1, 1.0), bootstrap=args.bootstrap, seed=args.seed)
    result = {"method": args.method, "backbone": args.backbone, "size": args.size, "epochs": args.epochs,
              "pretrain_images": summary.get("images"), "pretrain_seconds": round(pretrain_seconds, 1),
              "final_pretrain_loss": summary["history"][-1]["train_loss"], "tasks": {}}
    for task in ("kermany", "nih"):
        rows = {}
        for name, encoder in (("pretrained", summary["encoder"]), ("random-init", None)):
            payload = run_linear_eval(caches[task], args.work / f"linear-{task}-{name}", encoder, probe,
                                      backbone=args.backbone, device=args.device, overwrite=True)
            rows[name] = {"mean_auc": summarise(payload["results"]),
                          "mean_auc_ci": _mean_ci(payload["results"]),
                          "test_images": payload["test_images"], "train_images": payload["train_images"]}
        rows["difference"] = _paired_difference(caches[task], args.work / f"linear-{task}-pretrained",
                                                args.work / f"linear-{task}-random-init", args.bootstrap, args.seed)
        result["tasks"][task] = rows
    (args.work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _paired_difference(cache_dir: Path, pretrained: Path, random_init: Path, resamples: int, seed: int) -> dict:
    """Per fraction: mean AUC pretrained - random init on the same test images, paired bootstrap 95 % CI."""
    cache = PreparedCache(cache_dir)
    a, b = np.load(pretrained / "test_scores.npz"), np.load(random_init / "test_scores.npz")
    indices = a["test_indices"]
    assert np.array_equal(indices, b["test_indices"]), "the two encoders were tested on different images"
    return {key.removeprefix("fraction_"): paired_mean_auroc_difference(cache.labels[indices], cache.masks[indices],
                                                                        a[key], b[key], resamples, seed)
            for key in a.files if key.startswith("fraction_")}


def _mean_ci(results: dict[str, dict]) -> dict[str, list[float]]:
    """Per fraction: the class-mean of the per-class AUC CI bounds (a summary, not a joint CI)."""
    summary = {}
    for fraction, per_class in results.items():
        scored = [entry["auc"] for entry in per_class.values() if "auc" in entry]
        summary[fraction] = [float(np.mean([s[key] for s in scored])) for key in ("value", "low", "high")]
    return summary


if __name__ == "__main__":
    main()
