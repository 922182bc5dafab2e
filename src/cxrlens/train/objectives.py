"""What a training step computes, supplied to the :class:`cxrlens.train.trainer.Trainer`.

An :class:`Objective` owns everything the trainer must not know: the loss of a batch
(``training_step``), what validation collects and which metrics it makes of it
(``validation_step`` / ``validation_metrics``, with ``monitor`` naming the metric that picks
``best.ckpt``, drives the plateau scheduler and early stopping; higher is better), work
after each optimizer step (``after_step``, e.g. BYOL's EMA target) and what a saved model
is (``snapshot``: the typed checkpoint written as ``best.ckpt`` and epoch snapshots).

:class:`SupervisedObjective` is classification (papers 000, 001, 003, 004); the
self-supervised and SEAM objectives live beside their methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cxrlens.checkpoints import Checkpoint, ClassifierCheckpoint
from cxrlens.config import CamLossConfig, TrainConfig
from cxrlens.data.preprocess import normalise
from cxrlens.evaluate.classification import mean_auroc
from cxrlens.evaluate.thresholds import operating_thresholds
from cxrlens.train.cam_loss import cam_loss
from cxrlens.train.losses import dynamic_weighted_bce, multilabel_soft_margin, positive_weighted_bce

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Objective(ABC):
    """See the module docstring. ``model`` arguments are the Fabric-wrapped module; ``module`` the bare one."""

    monitor: str | None = None

    @abstractmethod
    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """``{"loss": total, ...other scalar terms to log}`` for one micro-batch on the device."""

    def validation_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Tensors to collect from one validation batch (concatenated over batches and processes)."""
        raise NotImplementedError(f"{type(self).__name__} does not validate")

    def validation_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics (``val_*``) of everything :meth:`validation_step` collected."""
        return {}

    def after_step(self, module: nn.Module, global_step: int, total_steps: int) -> None:
        """Called after every optimizer step."""

    @abstractmethod
    def snapshot(self, module: nn.Module, epoch: int, metrics: dict[str, float]) -> Checkpoint:
        """The checkpoint of ``module`` after ``epoch`` (1-based) with its validation ``metrics``."""


class SupervisedObjective(Objective):
    """Classification: ``loss_fn(model(normalised images), labels, mask)``; validation mean AUROC.

    ``describes`` is the classifier's checkpoint without weights (network config, classes,
    input, normalisation, provenance); its normalisation is applied to every batch. With a
    ``cam`` config, paper 000 eq. 8 with the classification loss in place of BYOL's:
    ``L_cls + lambda L_CAM``, the CAM loss (:func:`cxrlens.train.cam_loss.cam_loss`) of the
    classifier's own Grad-CAM of each boxed finding against the batch's ``box_mask``.
    """

    monitor = "val_mean_auroc"

    def __init__(self, loss_fn: LossFunction, describes: ClassifierCheckpoint, threshold_rule: str = "youden",
                 target_sensitivity: float = 0.9, cam: CamLossConfig | None = None) -> None:
        self.loss_fn = loss_fn
        self.cam = cam
        self.describes = describes
        self.threshold_rule = threshold_rule
        self.target_sensitivity = target_sensitivity
        self.thresholds: dict[str, float] = {}

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        images = normalise(batch["image"], self.describes.normalisation)
        if self.cam is None:
            return {"loss": self.loss_fn(model(images).float(), batch["labels"], batch["mask"])}
        logits, features = model(images, with_features=True)
        classification = self.loss_fn(logits.float(), batch["labels"], batch["mask"])
        camloss = cam_loss(features, logits, batch["box_mask"], batch["box_findings"], self.cam.cam_resolution,
                           self.cam.cam_relu)
        return {"loss": classification + self.cam.cam_lambda * camloss,
                "classification_loss": classification.detach(), "cam_loss": camloss.detach()}

    def validation_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(normalise(batch["image"], self.describes.normalisation)).float()
        return {"loss": self.loss_fn(logits, batch["labels"], batch["mask"]).reshape(1),
                "index": torch.as_tensor(batch["index"], device=logits.device), "prob": torch.sigmoid(logits),
                "labels": batch["labels"].float(), "mask": batch["mask"].float()}

    def validation_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        _, unique = np.unique(outputs["index"], return_index=True)  # DistributedSampler pads with repeats
        probabilities, labels, masks = outputs["prob"][unique], outputs["labels"][unique], outputs["mask"][unique] > 0
        self.thresholds = operating_thresholds(probabilities, labels, masks, self.describes.classes,
                                               self.threshold_rule, self.target_sensitivity)
        return {"val_loss": float(np.mean(outputs["loss"])), "val_mean_auroc": mean_auroc(probabilities, labels, masks)}

    def snapshot(self, module: nn.Module, epoch: int, metrics: dict[str, float]) -> ClassifierCheckpoint:
        """The classifier at ``epoch`` with the operating thresholds its validation just chose."""
        return self.describes.model_copy(update={"state": module.state_dict(), "epoch": epoch, "metrics": metrics,
                                                 "thresholds": self.thresholds,
                                                 "threshold_rule": self._rule_name()})

    def _rule_name(self) -> str:
        return (f"sensitivity {self.target_sensitivity:g}" if self.threshold_rule == "sensitivity"
                else self.threshold_rule)


def make_loss(config: TrainConfig, pos_weight: torch.Tensor | None = None) -> LossFunction:
    """The loss ``config.loss`` names, as ``loss(logits, targets, mask)``."""
    if config.loss == "dynamic-bce":
        return dynamic_weighted_bce
    if config.loss == "soft-margin":
        return multilabel_soft_margin
    weight = pos_weight if config.loss == "weighted-bce" else None
    return lambda logits, targets, mask: positive_weighted_bce(logits, targets, mask, weight)
