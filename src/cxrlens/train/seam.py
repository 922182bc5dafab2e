"""``cxrlens refine``: train the PCM with SEAM on a frozen classifier (paper 003 Sec. 4.4, eq. 6-7).

A weight-shared Siamese pair: one branch sees the image ``x``, the other ``A(x)``, a
random rotation in [-30, 30] degrees. Each branch gives the classifier's CAM ``yhat``
(non-maximum suppressed) and its PCM refinement ``y``. Losses:

* ECR (eq. 6): ``|A(y^o) - yhat^t|_1 + |A(yhat^o) - y^t|_1``, per pixel, keeping the top
  20 % largest pixel losses of each image (OHEM). The paper prints a minus between the
  two terms; that would make the loss unbounded below (the PCM could drive the second
  term up forever), so the sum of SEAM (Wang et al. 2020, the method it cites) is used.
* MSML: multilabel soft margin on the global average pool of the refined maps of both
  branches, against the image labels;
* ``loss = 1.5 MSML + 1 ECR`` (eq. 7). Backbone and classifier stay frozen (eval mode);
  only the PCM's 1x1 embedding trains (Adam, lr 1e-6, 3 epochs in the paper). Images are
  normalised as the classifier's checkpoint records (the refine config's ``train.mean`` /
  ``train.std`` are not used).

The result is the classifier checkpoint plus the PCM (``refined.ckpt``), which
``evaluate --refine`` and ``predict --refine pcm`` use.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxrlens.checkpoints import ClassifierCheckpoint, PCMSpec, RefinedCheckpoint, save_checkpoint
from cxrlens.config import Normalisation, RefineConfig, SplitConfig
from cxrlens.data.cache import PreparedCache
from cxrlens.data.preprocess import normalise
from cxrlens.data.provenance import data_provenance, digest
from cxrlens.data.roles import refine_roles
from cxrlens.data.torch_datasets import CachedImageDataset
from cxrlens.models import load_classifier
from cxrlens.models.loading import check_input
from cxrlens.models.pcm import PixelCorrelationModule
from cxrlens.train.losses import multilabel_soft_margin
from cxrlens.train.objectives import Objective
from cxrlens.train.run_folder import RunFolder
from cxrlens.train.trainer import Trainer, launch


def rotate(tensors: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each map of a B x C x H x W batch about its centre by its own angle (bilinear, zeros outside)."""
    radians = degrees * math.pi / 180
    cos, sin = torch.cos(radians), torch.sin(radians)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta.to(tensors.dtype), list(tensors.shape), align_corners=False)
    return F.grid_sample(tensors, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def ohem_l1(difference: torch.Tensor, keep: float) -> torch.Tensor:
    """Mean of the ``keep`` fraction largest absolute pixel differences of each image (OHEM)."""
    flat = difference.abs().flatten(1)
    k = max(1, int(round(keep * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean()


class SEAM(nn.Module):
    """Frozen classifier + trainable PCM; ``forward(images, labels, mask)`` -> SEAM loss terms."""

    def __init__(self, classifier: nn.Module, pcm: PixelCorrelationModule, config: RefineConfig) -> None:
        super().__init__()
        self.classifier = classifier
        for parameter in classifier.parameters():
            parameter.requires_grad_(False)
        self.pcm = pcm
        self.config = config

    def train(self, mode: bool = True) -> SEAM:
        super().train(mode)
        self.classifier.eval()  # frozen: BatchNorm keeps its statistics
        return self

    def _branch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features = self.classifier.cam_features(images)
            cams = self.pcm.suppress(self.classifier.class_maps(features))
        return cams, self.pcm(features, cams)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        limit = self.config.rotation
        degrees = (torch.rand(images.shape[0], device=images.device) * 2 - 1) * limit
        raw_o, refined_o = self._branch(images)
        raw_t, refined_t = self._branch(rotate(images, degrees))
        ecr = ohem_l1(rotate(refined_o, degrees) - raw_t, self.config.ohem_keep) + \
            ohem_l1(rotate(raw_o, degrees) - refined_t, self.config.ohem_keep)
        msml = multilabel_soft_margin(refined_o.mean(dim=(2, 3)), labels, mask) + \
            multilabel_soft_margin(refined_t.mean(dim=(2, 3)), labels, mask)
        loss = self.config.lambda_msml * msml + self.config.lambda_ecr * ecr
        return {"loss": loss, "ecr": ecr.detach(), "msml": msml.detach()}


class SEAMObjective(Objective):
    """SEAM's loss on normalised images; a snapshot is the classifier with the PCM (``refined.ckpt``)."""

    def __init__(self, describes: RefinedCheckpoint) -> None:
        self.describes = describes

    @property
    def normalisation(self) -> Normalisation:
        return self.describes.normalisation

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return model(normalise(batch["image"], self.normalisation), batch["labels"], batch["mask"])

    def snapshot(self, module: nn.Module, epoch: int, metrics: dict[str, float]) -> RefinedCheckpoint:
        return self.describes.model_copy(update={"pcm_state": module.pcm.state_dict()})


def train_pcm(checkpoint: str | Path, cache_dir: str | Path, run_dir: str | Path, config: RefineConfig,
              split: SplitConfig = SplitConfig(), resume: bool = False, overwrite: bool = False,
              show_progress: bool = True) -> dict:
    """Train a PCM for ``checkpoint``'s classifier on the cache's training split; writes ``refined.ckpt``."""
    loaded = load_classifier(checkpoint)
    if not loaded.model.has_class_maps:
        raise ValueError(f"{checkpoint}: the PCM refines class maps, which need a linear head on the pooled map "
                         "(paper 003's classifier); this model has an MLP head")
    cache = PreparedCache(cache_dir)
    check_input(loaded, cache, checkpoint)
    if list(cache.classes) != loaded.classes:
        raise ValueError(f"{cache_dir}: classes {list(cache.classes)} differ from the classifier's {loaded.classes}")
    roles = refine_roles(cache.items(), cache.classes, cache.ready_indices(), split, config.train.seed)
    train_indices = roles["refine"]
    if not len(train_indices):
        raise ValueError(f"{cache_dir}: no training images (for a set all in the official test list set "
                         "--splits patient)")
    fabric = launch(config.train)
    channels = loaded.model.feature_channels
    pcm = PixelCorrelationModule(channels, config.embed_channels, config.nms)
    classifier_fields = {name: getattr(loaded.checkpoint, name) for name in ClassifierCheckpoint.model_fields}
    classifier_fields["provenance"] = [*loaded.checkpoint.provenance,
                                       data_provenance(cache, roles, {**split.model_dump(), "seed": config.train.seed})]
    describes = RefinedCheckpoint(**classifier_fields, pcm_state={},
                                  pcm=PCMSpec(in_channels=channels, embed_channels=config.embed_channels, nms=config.nms))
    objective = SEAMObjective(describes)
    model = SEAM(loaded.model, pcm, config)
    record = {"checkpoint": str(checkpoint), "cache": str(cache_dir), "train_images": len(train_indices),
              "normalisation": objective.normalisation.model_dump(), **config.model_dump(mode="json")}
    trainer = Trainer(config.train, RunFolder(run_dir, [checkpoint, cache_dir]), fabric, show_progress=show_progress)
    summary = trainer.fit(model, objective, CachedImageDataset(cache, train_indices), resume=resume,
                          overwrite=overwrite, record=record, data=digest(describes.provenance))
    refined = trainer.run.path / "refined.ckpt"
    if fabric.is_global_zero:
        save_checkpoint(objective.snapshot(model, config.train.epochs, {}), refined)
    fabric.barrier()
    return {**summary, "refined": str(refined)}
