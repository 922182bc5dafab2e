"""What the linear probe sees along pretraining, and where it looks (paper 002, Figs. 2-4).

* :func:`probe_snapshots` - Fig. 2 (b, c): the probe of :mod:`cxrlens.evaluate.linear_probe`
  (all labels) on each encoder snapshot kept during pretraining (``keep_epochs``: 10, 25, 50,
  100), its ACC and AUC with 95 % CIs per epoch; Fig. 3: the t-SNE of the test images'
  features at those epochs, one panel per epoch (:mod:`cxrlens.evaluate.tsne`).
* :func:`probe_gradcam` - Fig. 4: Grad-CAM (Selvaraju et al. eq. 1-2) of the probe on test
  images of the positive class it calls positive. The probe is a logistic regression on
  standardised global-average-pooled features, so it is laid onto the encoder as one linear
  layer, ``w / sigma`` and ``b - w . mu / sigma``, and explained by the CAM engine like any
  cxrlens classifier (for a linear head on average pooling Grad-CAM equals CAM up to scale).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from cxrlens.config import LinearEvalConfig, Normalisation
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import normalise
from cxrlens.evaluate.cam_localization import cache_batch
from cxrlens.evaluate.frozen_features import extract_features, probe_fractions
from cxrlens.evaluate.probe import fit_probe, quiet_convergence
from cxrlens.evaluate.tsne import tsne_figure
from cxrlens.explain import CAMExplainer
from cxrlens.explain.overlay import overlay
from cxrlens.models import Backbone, load_encoder
from cxrlens.models.classifier import PooledClassifier
from cxrlens.models.pooling import GlobalAvgPool


def snapshot_files(encoder: str | Path) -> dict[int, Path]:
    """The ``epoch-NNNN.ckpt`` snapshots kept beside a pretraining's ``encoder.ckpt``, by epoch."""
    folder = Path(encoder).parent / "checkpoints"
    return {int(path.stem.split("-")[1]): path for path in sorted(folder.glob("epoch-*.ckpt"))}


def probe_snapshots(snapshots: dict[int, Path], cache: PreparedCache, train: np.ndarray, test: np.ndarray,
                    config: LinearEvalConfig, run_dir: Path, device: str) -> dict:
    """Per snapshot epoch: the all-labels probe's results (Fig. 2); ``tsne.png``, one panel per epoch (Fig. 3)."""
    one_fraction = config.model_copy(update={"fractions": (1.0,)})
    by_epoch, panels = {}, {}
    for epoch, path in sorted(snapshots.items()):
        network, checkpoint = load_encoder(path)
        train_features, test_features = (extract_features(network, checkpoint.normalisation, cache, indices,
                                                          config.batch_size, device) for indices in (train, test))
        results, _ = probe_fractions(train_features, test_features, cache, train, test, one_fraction)
        by_epoch[str(epoch)] = results["1"]
        panels[f"epoch {epoch}"] = test_features
    if not panels:
        return {"skipped": "the encoder's pretraining kept no snapshots (keep_epochs)"}
    groups = cache.labels[test, 0].astype(int)
    name = cache.classes[0]
    figure = tsne_figure(panels, groups, [f"no {name}", name], run_dir / "tsne.png", config.seed)
    return {"epochs": by_epoch, "tsne": figure.name}


def probe_classifier(encoder: Backbone, features: np.ndarray, labels: np.ndarray, config: LinearEvalConfig
                     ) -> PooledClassifier:
    """The probe fitted on ``features`` (GAP of ``encoder``) as a one-class cxrlens classifier over the encoder."""
    with quiet_convergence():
        fitted, _ = fit_probe(features, labels, config)
    scaler, regression = fitted[0], fitted[-1]
    mean = getattr(scaler, "mean_", np.zeros(features.shape[1]))
    scale = getattr(scaler, "scale_", np.ones(features.shape[1]))
    weight = regression.coef_[0] / scale
    bias = regression.intercept_[0] - float(weight @ mean)
    model = PooledClassifier(encoder, len(encoder.channels) - 1, encoder.channels[-1], 1, GlobalAvgPool())
    with torch.no_grad():
        model.fc.weight.copy_(torch.as_tensor(weight, dtype=torch.float32)[None])
        model.fc.bias.fill_(bias)
    return model.eval()


def probe_gradcam(encoder: Backbone, normalisation: Normalisation, cache: PreparedCache,
                  indices: tuple[np.ndarray, np.ndarray], features: tuple[np.ndarray, np.ndarray],
                  config: LinearEvalConfig, run_dir: Path, device: str) -> dict:
    """Fig. 4: ``gradcam.png``, Grad-CAM of the probe (all labels, first class) on ``config.gradcam_images`` test
    images of that class which it calls positive, drawn at random (seeded) from all such images - not picked by
    score. ``indices`` and ``features``: the training and test images and their GAP features (extracted once)."""
    (train, test), (train_features, test_features) = indices, features
    known = cache.masks[train, 0].astype(bool)
    model = probe_classifier(encoder, train_features[known], cache.labels[train[known], 0].astype(int), config)
    positive = cache.masks[test, 0].astype(bool) & (cache.labels[test, 0] == 1)
    logits = test_features[positive] @ model.fc.weight[0].detach().numpy() + model.fc.bias.item()
    called = [int(index) for index, logit in zip(test[positive], logits) if logit >= 0]
    if not called:
        return {"skipped": "the probe calls no positive test image positive"}
    model = model.to(device)
    chosen = sorted(np.random.default_rng(config.seed).choice(called, min(config.gradcam_images, len(called)),
                                                              replace=False))
    batch = normalise(cache_batch(cache, chosen, device), normalisation)
    with CAMExplainer(model, "gradcam") as explain:
        maps = explain(batch).maps[:, 0].cpu().numpy()
    pictures = [overlay(np.array(cache.images[index]), heatmap) for index, heatmap in zip(chosen, maps)]
    cv2.imwrite(str(run_dir / "gradcam.png"), cv2.cvtColor(np.concatenate(pictures, axis=1), cv2.COLOR_RGB2BGR))
    return {"images": [Path(cache.item(index).path).name for index in chosen], "of": len(called),
            "figure": "gradcam.png"}

