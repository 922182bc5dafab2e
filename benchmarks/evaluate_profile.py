"""Where ``cxrlens evaluate`` spends its time, against its forward and CAM passes alone, same process.

A ResNet-18 is trained for a few steps at ``--size`` (128) px on nih-sample's official
train_val images, then evaluated like the issue's measurement: nih-sample + nih-bbox at
128 px, NIH's official test list (893 images, the 532 boxed among them), Grad-CAM boxes,
1,000 bootstrap resamples. The reference is the same model's forward pass over the same
images (:func:`cxrlens.evaluate.evaluator.predict_cache`) plus the Grad-CAM passes over the
boxed ones, timed on their own. Prints evaluate's stages (``metrics.json`` ``seconds``) and
the ratio evaluate / (forward + CAM passes) twice: for the first evaluation of models trained
on these images (which fits the raw-pixel floor) and for the next (which reuses it, as an
experiment's second model does); the goal is <= 1.5.

    python benchmarks/evaluate_profile.py [--data-root ../shared/data] [--out runs/bench/evaluate-profile]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from cxrlens.config import EvaluateConfig, ModelConfig, TrainConfig
from cxrlens.data.cache import PreparedCache, prepare_cache
from cxrlens.data.preprocess import normalise
from cxrlens.data.registry import open_sample
from cxrlens.data.roles import evaluated_indices
from cxrlens.evaluate.cam_localization import boxes_of, cache_batch
from cxrlens.evaluate.evaluator import evaluate, predict_cache
from cxrlens.explain import CAMExplainer
from cxrlens.models.loading import load_classifier
from cxrlens.paths import find_data_root
from cxrlens.train.supervised import train_supervised


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=find_data_root())
    parser.add_argument("--out", type=Path, default=Path("runs/bench/evaluate-profile"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--bootstrap", type=int, default=1000)
    return parser.parse_args()


def _forward_and_cam(checkpoint: Path, cache: PreparedCache, config: EvaluateConfig) -> dict[str, float]:
    """The reference: the forward pass over the evaluated images and Grad-CAM over the boxed ones, nothing else."""
    loaded = load_classifier(checkpoint)
    loaded = loaded.for_inference("cpu")  # as evaluate runs it
    indices, _, _ = evaluated_indices(cache.items(), cache.ready_indices(), config)
    started = time.perf_counter()
    predict_cache(loaded, cache, indices, config.batch_size)
    forward = time.perf_counter() - started
    boxed = [int(i) for i in indices if boxes_of(cache, int(i), set(cache.classes))]
    started = time.perf_counter()
    with CAMExplainer(loaded.model, config.cam) as explainer:
        for start in range(0, len(boxed), 8):
            chunk = boxed[start:start + 8]
            explainer(normalise(cache_batch(cache, chunk, "cpu"), loaded.normalisation))
    return {"forward": forward, "cam passes": time.perf_counter() - started}


def main() -> None:
    arguments = _arguments()
    out = arguments.out
    shutil.rmtree(out, ignore_errors=True)
    train_cache = prepare_cache(open_sample(arguments.data_root, ["nih-sample"]), out / "train-cache",
                                size=arguments.size)
    cache = prepare_cache(open_sample(arguments.data_root, ["nih-sample", "nih-bbox"]), out / "cache",
                          size=arguments.size)
    train = TrainConfig(epochs=1, batch_size=32, accumulate=1, num_workers=0, max_steps_per_epoch=5,
                        scheduler="none")
    train_supervised(train_cache.directory, out / "train", ModelConfig(backbone="resnet18", weights=None), train,
                     show_progress=False)
    checkpoint = out / "train" / "checkpoints" / "best.ckpt"
    config = EvaluateConfig(cam="gradcam", bootstrap=arguments.bootstrap)
    reference = _forward_and_cam(checkpoint, cache, config)
    first, payload = _timed_evaluate(checkpoint, cache, out / "evaluate", config)
    again, repeat = _timed_evaluate(checkpoint, cache, out / "evaluate-again", config)
    alone = sum(reference.values())
    result = {"images": payload["images"], "threads": torch.get_num_threads(),
              "evaluate_seconds": round(first, 2), "stages": payload["seconds"],
              "again_seconds": round(again, 2), "again_stages": repeat["seconds"],
              "reference_seconds": {k: round(v, 2) for k, v in reference.items()},
              "ratio": round(first / alone, 2), "ratio_again": round(again / alone, 2)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"evaluate / (forward + CAM passes alone) = {first:.1f} s / {alone:.1f} s = {first / alone:.2f}x, "
          f"{again / alone:.2f}x for a second model trained on the same images (the floor reused); goal <= 1.5x")


def _timed_evaluate(checkpoint: Path, cache: PreparedCache, run: Path, config: EvaluateConfig) -> tuple[float, dict]:
    started = time.perf_counter()
    payload = evaluate(checkpoint, cache.directory, run, config, device="cpu")
    return time.perf_counter() - started, payload


if __name__ == "__main__":
    main()
