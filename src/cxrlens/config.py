"""Typed configuration of every step, with the papers' values as documented defaults.

Each model is a pydantic model, so a YAML file under ``configs/`` is validated field by
field (unknown keys are errors) and the resolved config is written next to every result.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


MAX_SIDE = 4096
"""Largest model input or cache side: a checkpoint or config asking for more is refused, not allocated."""


class Strict(BaseModel):
    """A config section: unknown keys are errors that name the nearest known one."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(unknown_key(key, cls.model_fields))
        elif data is not None and not isinstance(data, BaseModel):
            raise ValueError(f"expected a mapping of {cls.__name__} fields, got {type(data).__name__} {data!r}")
        return data


class Normalisation(Strict):
    """Intensity normalisation ``(x - mean) / std`` of images in [0, 1] (paper 000: the dataset mean).

    Training takes it from its config; every checkpoint records it, and inference reads it
    from the checkpoint only.
    """

    mean: float = Field(0.5, description="intensity mean")
    std: float = Field(0.25, gt=0, description="intensity standard deviation")


class InputSpec(Strict):
    """The model input a checkpoint was trained on: side and how images were fitted (the training cache's)."""

    size: int = Field(ge=8, le=MAX_SIDE, description="side of the square input, pixels")
    fit: Literal["squash", "pad", "crop"] = Field(
        description="squash (resize to square), pad (keep aspect, black bars) or crop (centre square, TorchXRayVision)")


SplitMode = Literal["official-disjoint", "official", "patient"]
"""How a dataset's official split lists are used (:func:`cxrlens.data.splits.split_by_patient`)."""
SharedSide = Literal["train", "test"]


class SplitChoice(Strict):
    """How a dataset's official split lists are used (every step that splits data has these two fields)."""

    splits: SplitMode = Field(
        "official-disjoint", description="official-disjoint: the dataset's official lists (NIH train_val / test "
        "lists, CheXpert valid.csv as test, Kermany's folders) made patient-disjoint: the images of patients on both "
        "sides leave the drop_shared side (Kermany's personN ids recur between train/ and test/); official: the lists "
        "as released, shared patients kept, counted and reported (papers 001, 002 report on Kermany's as released); "
        "patient: every split redrawn by patient, lists ignored")
    drop_shared: SharedSide = Field("train", description="official-disjoint: drop the shared patients' images from "
                                    "train (the official test set stays whole) or from test")

    @model_validator(mode="before")
    @classmethod
    def _replaced_official_flag(cls, data: object) -> object:
        if isinstance(data, dict) and ({"official", "official_splits"} & set(data)):
            raise ValueError("official / official_splits were replaced by splits: official-disjoint (the old true, "
                             "now patient-disjoint), official (the lists as released) or patient (the old false)")
        return data


class FloorChoice(Strict):
    """The raw-pixel floor beside a classification result (every evaluation has these two fields)."""

    floor: bool = Field(True, description="fit the raw-pixel floor (32 x 32 class-balanced logistic regression) on the "
                        "model's training images and report the paired AUROC difference; false only for quick runs "
                        "(the verdict then says the floor was not fitted)")
    floor_max_images: int = Field(2000, ge=10, description="fit the floor on at most this many training images, drawn "
                                  "with seed (the fit grows with the images; 2,000 x 14 findings take about a minute "
                                  "on 2 cores)")


class SplitConfig(SplitChoice):
    """Which patients train, validate and test a model (always patient-level, never image-level)."""

    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of the training patients drawn for validation: "
                                "paper 000 20 %, paper 003 20 % (80:20), paper 004 25 %")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of the patients drawn for test where the "
                                 "dataset has no official test list (paper 002: 20 %)")
    no_finding_images: int | None = Field(None, ge=1, description="keep only this many images without any finding in "
                                          "train + val, drawn at random (paper 003: about 5,000); None keeps all")


class TaskConfig(Strict):
    """A binary task carved out of a multi-label dataset: a finding against images with no finding at all
    (paper 001: NIH pneumonia vs No Finding; paper 002: pneumonia vs a matched number of healthy controls)."""

    positive: str = Field("Pneumonia", description="images labelled with this finding are the positives")
    matched: bool = Field(False, description="paper 002: as many controls as positives, one image per healthy "
                          "patient, drawn with seed; False (paper 001): every image without a finding")
    seed: int = Field(0, description="seed of the matched controls' draw")


XRV_BACKBONES = {"densenet121": "xrv-densenet121", "resnet50": "xrv-resnet50"}
"""The cxrlens backbone of each TorchXRayVision architecture (the first part of its weights names)."""


class ModelConfig(Strict):
    """Network architecture (papers 000, 003, 004)."""

    arch: str = Field(
        "standard", description="a registered architecture (cxrlens models list): standard backbone; multires "
        "(merge blocks, paper 003); dense-multires (dense multi-resolution decoder, paper 004)")
    backbone: str = Field("resnet50", description="a registered backbone: resnet18/34/50/101, wide_resnet50_2, "
                          "densenet121, efficientnet_b4, xrv-densenet121, xrv-resnet50 (set by init xrv:)")
    num_classes: int = Field(14, ge=1, description="14 NIH findings (paper 000, 003, 004)")
    pooling: Literal["gap", "lse", "lse-lba"] = Field("gap", description="gap; lse (paper 003); lse-lba (paper 004, dense-multires only)")
    lse_gamma: float = Field(10.0, gt=0, description="LSE sharpness, paper 003: 10")
    lba_r0: float = Field(0.0, ge=0, description="LSE-LBA lower bound r0, paper 004: 0, 5 or 10")
    lba_per_class: bool = Field(False, description="one learnable beta per class instead of paper 004's scalar")
    weights: str | None = Field(None, description="the backbone's weights: None (random init), 'imagenet' (download "
                                "through timm), a TorchXRayVision weights name, or a local weights file for them")
    in_chans: int = Field(1, ge=1, description="input channels; CXRs are 1-channel")
    trainable_from: int = Field(0, ge=0, le=5, description="freeze stages before this one; paper 003: 3 (blocks 3-4 train); 5 freezes the whole backbone")
    init: str | None = Field(None, description="where the starting weights come from: a cxrlens encoder checkpoint "
                             "(paper 000, 001) or classifier checkpoint (its backbone, and the head rows of the classes "
                             "both share); 'xrv:<name>' a TorchXRayVision model (backbone and head rows); 'timm:<name>' "
                             "timm's ImageNet weights of backbone <name>. 'weights' may name a local file for the last two")
    head: Literal["linear", "mlp"] = Field("linear", description="linear (paper 000: fc with 14 outputs); mlp (paper 001: two FC layers, each with dropout)")
    head_hidden: int = Field(512, ge=1, description="mlp head hidden units (not given in paper 001)")
    dropout: float = Field(0.5, ge=0, lt=1, description="mlp head dropout (not given in paper 001)")
    saliency_stride: int = Field(8, description="dense-multires saliency stride: 64 x 64 maps at 512 input (paper 004)")
    dense_width: int = Field(128, ge=8, description="dense-multires channels per level (not given in paper 004)")
    dense_layers: int = Field(4, ge=1, description="layers per DenseNet block (not given in paper 004)")
    dense_growth: int = Field(32, ge=1, description="DenseNet growth rate (not given in paper 004)")

    @property
    def init_kind(self) -> Literal["none", "file", "xrv", "timm"]:
        """What ``init`` names: nothing, a cxrlens checkpoint file, a TorchXRayVision model or timm weights."""
        if not self.init:
            return "none"
        source = self.init.partition(":")[0]
        return source if source in ("xrv", "timm") else "file"  # type: ignore[return-value]

    @model_validator(mode="after")
    def _backbone_of_init(self) -> ModelConfig:
        """``init: timm:<name>`` and ``xrv:<name>`` fix the backbone (and its weights, unless a local file is given)."""
        source, _, name = (self.init or "").partition(":")
        if self.init_kind not in ("timm", "xrv"):
            return self
        if not name:
            raise ValueError(f"init {self.init}: name the model after the colon")
        backbone = name if source == "timm" else XRV_BACKBONES.get(name.split("-")[0], "")
        if not backbone:
            raise ValueError(f"init {self.init}: TorchXRayVision names start with densenet121- or resnet50-")
        if "backbone" in self.model_fields_set and self.backbone != backbone:
            raise ValueError(f"init {self.init} is a {backbone}, but backbone is {self.backbone}")
        weights = self.weights if self.weights and self.weights not in ("imagenet", name) else (
            "imagenet" if source == "timm" else name)
        object.__setattr__(self, "backbone", backbone)
        object.__setattr__(self, "weights", weights)
        return self


class CamLossConfig(Strict):
    """Paper 000's CAM loss (eq. 6-8): Grad-CAM against the radiologist boxes, added with weight lambda."""

    cam_lambda: float = Field(2.0, ge=0, description="CAM loss weight, paper 000 eq. 8: 2 (larger hurt)")
    cam_resolution: Literal["feature", "image"] = Field(
        "feature", description="compare CAM and box mask at feature-map resolution (mask area-averaged) or image resolution")
    cam_relu: bool = Field(
        False, description="ReLU on the Grad-CAM before the sigmoid, the literal eq. 2 + 6. Off by default: after a ReLU "
        "sigmoid(cam) >= 0.5, pixels outside the boxes can never score below log 2 and the loss stalls (measured flat at "
        "0.693 over 20 steps on the real boxed images, vs 0.69 -> 0.42 without)")
    boxed_per_batch: int = Field(0, ge=0, description="guarantee this many boxed images per batch (0: random mixing)")


Logger = Literal["auto", "tensorboard", "mlflow", "csv", "none"]
"""The experiment trackers of :mod:`cxrlens.tracking`."""


class TrainConfig(Strict):
    """Supervised training (paper 000 fine-tuning, paper 003 and 004 training)."""

    epochs: int = Field(35, ge=1, description="paper 003: 35; paper 000: up to 200 with early stopping")
    batch_size: int = Field(32, ge=1, description="per process; paper 003: 32")
    accumulate: int = Field(3, ge=1, description="gradient accumulation steps; paper 003: 3 (32 x 3 = 96)")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(3e-4, gt=0, description="paper 003: 3e-4; paper 004: 1e-3; paper 000: Adam")
    betas: tuple[float, float] = Field((0.9, 0.9), description="Adam betas; paper 003: (0.9, 0.9)")
    weight_decay: float = Field(0.0, ge=0, description="paper 004: 1e-5")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    scheduler: Literal["plateau", "cosine", "none"] = Field("plateau", description="paper 000: reduce on plateau")
    plateau_on: Literal["train-loss", "val-metric"] = Field(
        "train-loss", description="what the plateau scheduler watches: paper 000 the training loss; or the validation "
        "metric that picks best.ckpt")
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="paper 000: x0.1")
    plateau_patience: int = Field(4, ge=0, description="paper 000: 4 epochs without improvement")
    min_lr: float = Field(1e-6, ge=0, description="paper 000: down to 1e-6")
    early_stopping: int | None = Field(None, ge=1, description="stop after this many epochs without a better val mean AUROC")
    loss: Literal["bce", "weighted-bce", "dynamic-bce", "soft-margin"] = Field(
        "dynamic-bce", description="dynamic-bce: paper 003 eq. 3-5; weighted-bce: paper 000 positive weights")
    mean: float = Field(0.5, description="intensity normalisation mean (paper 003: ImageNet's, 0.449 in grey)")
    std: float = Field(0.25, gt=0, description="intensity normalisation std (paper 003: 0.226)")
    threshold_rule: Literal["youden", "max-f1", "sensitivity"] = Field(
        "youden", description="how each finding's operating threshold is chosen on the validation split and stored in "
        "the checkpoint (used by evaluate, predict and serve): Youden's J, max F1, or the highest threshold reaching "
        "target_sensitivity; the papers report AUROC and give no threshold rule (paper 002's metrics use 0.5)")
    target_sensitivity: float = Field(0.9, gt=0, le=1, description="threshold_rule sensitivity: the sensitivity the "
                                      "threshold must reach on the validation split")
    intensity_stats: Literal["fields", "training-images"] = Field(
        "fields", description="fields: normalise with mean / std above; training-images: with the mean and std of "
        "the training images' pixels, measured on the cache (paper 000: 'the dataset mean and standard deviation')")
    augment: Literal["crop-flip-rotate", "affine", "zoom-shift-rotate", "none"] = Field(
        "crop-flip-rotate", description="crop-flip-rotate: paper 003 (crop 80-100 % area, aspect 0.75-1.733, hflip, "
        "rotation +-15); affine: paper 000 fine-tuning (random affine as the BYOL target view, p = 0.5); "
        "zoom-shift-rotate: paper 004 (zoom 0.25-0.75, shift +-50 px at 512, rotation +-25)")
    accelerator: Literal["cpu", "cuda", "auto"] = "auto"
    devices: int | str = Field(1, description="processes/GPUs; 'auto' for all")
    strategy: str = Field("auto", description="auto, ddp (torchrun or Fabric launcher)")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = Field(
        "32-true", description="bf16-mixed: AMP on a GPU, and on a CPU whose oneDNN has bfloat16 (AVX512-BF16 / AMX; "
        "about 1.6x faster training there, 32-true elsewhere); 16-mixed: GPU only")
    channels_last: bool = Field(False, description="train with NHWC weights (faster oneDNN / tensor-core convolutions; "
                                "the checkpoints are the same)")
    num_workers: int = Field(2, ge=0)
    logger: Logger = Field("auto", description="experiment tracking (cxrlens.tracking): tensorboard, mlflow "
                           "(MLFLOW_TRACKING_URI, else a SQLite store beside the run), csv, none; auto: TensorBoard when "
                           "installed")
    seed: int = 0
    freeze_batchnorm: bool = Field(False, description="BatchNorm layers use running statistics only")
    sync_batchnorm: bool = Field(True, description="SyncBatchNorm under multi-GPU DDP")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap optimizer steps per epoch (smoke runs)")
    cam_loss: CamLossConfig | None = Field(
        None, description="paper 000's 'XRV + CAM loss': while training, also the CAM loss of every training image's "
        "boxes (the classifier's own Grad-CAM of each boxed finding) with weight cam_lambda; None: classification only")
    keep_epochs: tuple[int, ...] = Field((), description="also keep checkpoints/epoch-NNNN.ckpt after exactly these "
                                         "epochs (paper 002 Fig. 2-3: 10, 25, 50, 100)")

    @model_validator(mode="after")
    def _kept_epochs_run(self) -> TrainConfig:
        outside = [epoch for epoch in self.keep_epochs if not 1 <= epoch <= self.epochs]
        if outside:
            raise ValueError(f"keep_epochs {outside}: not epochs of this run (1 to {self.epochs})")
        return self

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation(mean=self.mean, std=self.std)


class ViewAugmentConfig(Strict):
    """One view's random augmentation for self-supervised pretraining (papers 000, 001, 002).

    The papers name the operations but not their ranges; the defaults are SimCLR's (crop,
    blur) and paper 003's (rotation) values, kept mild for radiographs. Each operation is
    applied with its own probability ``*_p``; a probability of 0 removes it.
    """

    crop_p: float = Field(1.0, ge=0, le=1, description="random resized crop (papers 000, 001, 002)")
    crop_scale: tuple[float, float] = Field((0.3, 1.0), description="crop area fraction")
    crop_ratio: tuple[float, float] = Field((0.75, 1.333), description="crop aspect ratio")
    affine_p: float = Field(0.5, ge=0, le=1, description="random affine (paper 000)")
    affine_degrees: float = Field(10.0, ge=0, description="affine rotation range, degrees")
    affine_translate: float = Field(0.1, ge=0, lt=1, description="affine translation, fraction of the side")
    affine_scale: tuple[float, float] = Field((0.9, 1.1), description="affine zoom range")
    rotation_p: float = Field(0.0, ge=0, le=1, description="random rotation (paper 002)")
    rotation: float = Field(15.0, ge=0, description="rotation range, degrees")
    hflip_p: float = Field(0.5, ge=0, le=1, description="horizontal flip (papers 001, 002)")
    blur_p: float = Field(0.5, ge=0, le=1, description="gaussian blur (papers 000, 001, 002)")
    blur_sigma: tuple[float, float] = Field((0.1, 2.0), description="blur sigma range, pixels (SimCLR)")
    jitter_p: float = Field(0.8, ge=0, le=1, description="brightness/contrast jitter (papers 001, 002's color jitter, gray)")
    brightness: float = Field(0.4, ge=0, description="brightness jitter strength")
    contrast: float = Field(0.4, ge=0, description="contrast jitter strength")


def _train_defaults_validator(defaults: Callable[[], TrainConfig]) -> classmethod:
    """A validator giving the fields a ``train:`` mapping leaves out the step's own defaults, not the supervised ones."""

    def merge(cls: type, value: object) -> object:
        return {**defaults().model_dump(), **value} if isinstance(value, dict) else value

    return field_validator("train", mode="before")(merge)


def _byol_target_view() -> ViewAugmentConfig:
    """Paper 000: the target branch's augmentations are more frequent and slightly stronger."""
    return ViewAugmentConfig(crop_scale=(0.2, 1.0), affine_p=0.8, affine_degrees=15.0, affine_translate=0.15,
                             affine_scale=(0.85, 1.15), blur_p=1.0, blur_sigma=(0.1, 2.5), jitter_p=0.9)


def _pretrain_defaults() -> TrainConfig:
    """Paper 000's BYOL optimisation: Adam lr 1e-4, betas (0.9, 0.999), batch 128, 500 epochs."""
    return TrainConfig(epochs=500, batch_size=128, accumulate=1, lr=1e-4, betas=(0.9, 0.999), scheduler="none")


class SSLMethodConfig(Strict):
    """What every self-supervised method config answers (see :mod:`cxrlens.ssl`)."""

    def box_findings(self) -> tuple[str, ...]:
        """Findings whose radiologist boxes the method reads (none: labels and boxes are never read)."""
        return ()

    def boxes_per_batch(self) -> int:
        """Boxed images every batch must carry (0: random batches)."""
        return 0

    def smoke(self) -> SSLMethodConfig:
        """The same method for a tiny smoke run."""
        return self


class SimCLRConfig(SSLMethodConfig):
    """SimCLR (papers 001, 002): NT-Xent over two views, projection head on the pooled features."""

    name: Literal["simclr"] = "simclr"
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature: paper 002 0.5, paper 001 0.1")
    projection: Literal["bn", "mlp"] = Field(
        "bn", description="projection head: bn = paper 002 Table I (2048 + BN + ReLU, 128 no bias); mlp = paper 001 (two FC + ReLU)")
    projection_hidden: int = Field(2048, ge=1, description="projection head hidden units (paper 002: 2048)")
    projection_dim: int = Field(128, ge=1, description="projection size (paper 002: 128)")
    gather_distributed: bool = Field(True, description="NT-Xent negatives from every DDP rank, gradients through the gather")


class BYOLConfig(SSLMethodConfig):
    """BYOL (paper 000, Grill et al.): online network regresses an EMA target's projection."""

    name: Literal["byol"] = "byol"
    hidden: int = Field(512, ge=1, description="projector/predictor hidden units (paper 000: 512)")
    dim: int = Field(256, ge=1, description="projection size (paper 000: 256)")
    tau: float = Field(0.99, gt=0, le=1, description="target EMA rate (paper 000: 0.99)")
    tau_schedule: Literal["constant", "cosine"] = Field("constant", description="cosine: tau rises to 1 over training (BYOL paper)")


class BYOLCAMConfig(BYOLConfig, CamLossConfig):
    """BYOL + CAM loss (paper 000 eq. 6-8): Grad-CAM of the online encoder against the radiologist boxes."""

    name: Literal["byol-cam"] = "byol-cam"  # type: ignore[assignment]
    cam_findings: tuple[str, ...] = Field(
        ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax"),
        min_length=1, description="findings the CAM loss explains: the 8 NIH box findings")

    def box_findings(self) -> tuple[str, ...]:
        return self.cam_findings

    def boxes_per_batch(self) -> int:
        return self.boxed_per_batch

    def smoke(self) -> BYOLCAMConfig:
        return self.model_copy(update={"boxed_per_batch": min(self.boxed_per_batch, 2)})


MethodConfig = Annotated[Union[SimCLRConfig, BYOLConfig, BYOLCAMConfig], Field(discriminator="name")]
"""One self-supervised method's settings, chosen by ``name`` (``method: {name: simclr, temperature: 0.1}``)."""


class PretrainConfig(SplitChoice):
    """Self-supervised pretraining: SimCLR (papers 001, 002), BYOL and BYOL + CAM loss (paper 000)."""

    method: MethodConfig = Field(default_factory=BYOLCAMConfig,
                                 description="the method and its knobs; paper 000: byol-cam; papers 001/002: simclr")
    encoder: ModelConfig = Field(default_factory=lambda: ModelConfig(num_classes=8),
                                 description="the encoder (backbone, weights, in_chans)")
    images: Literal["all", "train"] = Field(
        "all", description="all: every image of the datasets, test lists included (papers 001, 002: labels are never "
        "read); train: only the training part of each dataset's split (paper 000: NIH's train_val list), plus the "
        "boxed images that feed the CAM loss")
    box_test_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of the boxed patients held out of pretraining entirely (each patient by "
        "a hash of its id and train.seed, whatever datasets are pooled), so localization is scored on patients whose "
        "boxes never trained the CAM loss: paper 000 divides its boxes 80/20; evaluate with box_test_fraction set to "
        "the same value (and seed) scores exactly these")
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of the unlabeled images used (paper 002: 1, 10, 100 %)")
    online_view: ViewAugmentConfig = Field(default_factory=ViewAugmentConfig, description="online (first) view")
    target_view: ViewAugmentConfig = Field(default_factory=_byol_target_view, description="target (second) view, stronger")
    views_on: Literal["workers", "device"] = Field(
        "workers", description="where the two views are drawn: workers (each image in the DataLoader's worker "
        "processes, torchvision v2; one CPU core each) or device (whole batches on the training device with kornia, "
        "the same operations with per-image random parameters; for a GPU that the workers cannot keep busy)")
    train: TrainConfig = Field(default_factory=_pretrain_defaults, description="optimisation (paper 000 values)")

    _train_over_defaults = _train_defaults_validator(_pretrain_defaults)

    @field_validator("method", mode="before")
    @classmethod
    def _method_by_name(cls, value: object) -> object:
        """``method: simclr`` is short for ``method: {name: simclr}`` (the method's paper defaults)."""
        return {"name": value} if isinstance(value, str) else value


def _seam_defaults() -> TrainConfig:
    """Paper 003 PCM training: Adam lr 1e-6, 3 epochs, batch 32 x 3 accumulation."""
    return TrainConfig(epochs=3, batch_size=32, accumulate=3, lr=1e-6, scheduler="none", augment="none")


class RefineConfig(Strict):
    """PCM trained with SEAM on a frozen classifier (paper 003 Sec. 4.2-4.4)."""

    rotation: float = Field(30.0, gt=0, le=180, description="Siamese branch rotation range, degrees (paper 003: +-30)")
    ohem_keep: float = Field(0.2, gt=0, le=1, description="ECR keeps the top 20 % largest pixel losses (OHEM)")
    lambda_msml: float = Field(1.5, ge=0, description="weight of the multilabel soft-margin loss, eq. 7: 1.5")
    lambda_ecr: float = Field(1.0, ge=0, description="weight of the ECR loss, eq. 7: 1")
    embed_channels: int = Field(128, ge=1, description="theta's 1x1-conv output channels (not given in paper 003)")
    nms: bool = Field(True, description="suppress non-maximum CAM activations before refinement (paper 003)")
    train: TrainConfig = Field(default_factory=_seam_defaults, description="optimisation (paper 003 values)")

    _train_over_defaults = _train_defaults_validator(_seam_defaults)


class LinearEvalConfig(SplitChoice, FloorChoice):
    """Linear evaluation of frozen features (paper 002)."""

    c_grid: tuple[float, ...] = Field((0.01, 0.05, 0.1, 0.2, 0.5, 1.0), description="paper 002's grid of C")
    folds: int = Field(5, ge=2, description="stratified k-fold for the grid search (k not given in paper 002)")
    fractions: tuple[float, ...] = Field((1.0,), description="label fractions of the training split; paper 002 uses "
                                         "all labels (its 1/10/100 % are pretext fractions, PretrainConfig.fraction)")
    max_iter: int = Field(2000, ge=1, description="logistic regression iterations")
    standardize: bool = Field(True, description="scale features to unit variance before the regression (not in paper 002; helps lbfgs converge)")
    solver: Literal["lbfgs", "liblinear"] = Field("lbfgs", description="scikit-learn solver (the raw-pixel floor uses "
                                                  "liblinear: several times faster on 1,024 pixel features)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="patients held out for testing where the set has no official test list")
    random_init_baseline: bool = Field(True, description="also fit the probe on a random-init copy of the encoder's "
                                       "network (same seed, images and fractions) and compare the two paired: the "
                                       "verdict shows whether pretraining helped (papers 001, 002: pretrained vs "
                                       "random init)")
    allow_train_overlap: bool = Field(False, description="score test images the encoder's CAM loss trained on (refused "
                                      "otherwise; the report says so)")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95 % CIs")
    batch_size: int = Field(64, ge=1, description="feature extraction batch")
    by_epoch: bool = Field(False, description="also probe the snapshots its pretraining kept (keep_epochs), all labels:"
                           " ACC and AUC per pretraining epoch (paper 002 Fig. 2) and a t-SNE panel per epoch (Fig. 3)")
    gradcam_images: int = Field(0, ge=0, description="Grad-CAM through the probe of this many test images of the "
                                "(first) class that it calls positive, drawn at random (paper 002 Fig. 4: 6)")
    seed: int = 0


class EvaluateConfig(SplitChoice, FloorChoice):
    """``cxrlens evaluate``: which images, which heatmaps, how boxes are read, how CIs are drawn."""

    split: Literal["train", "val", "test", "all"] = Field("test", description="which part of the splits (drawn as "
                                                          "training drew them, see splits) is scored")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="where the dataset has no official test list, the "
                                 "share of patients drawn as test, as training drew it (SplitConfig.test_fraction)")
    box_test_fraction: float | None = Field(
        None, ge=0, lt=1, description="paper 000: score only the boxed patients pretraining held out (the same seeded "
        "draw as PretrainConfig.box_test_fraction) and leave out every image of the other boxed patients, so all of "
        "the paper's models are scored on the same images; None: every image of the split")
    allow_train_overlap: bool = Field(False, description="score images or patients the checkpoint trained or "
                                      "validated on (refused otherwise; the report then says so in red)")
    cam: str = Field("gradcam", description="a registered CAM method: gradcam (paper 000's choice), gradcampp, "
                     "scorecam, cam")
    normalize_maps: bool = Field(True, description="min-max each heatmap to [0, 1] (papers 000, 003); False keeps the "
                                 "model's own map, e.g. paper 004's probabilistic saliency S for DICE")
    prior_weighted: bool = Field(True, description="also score prior-aware localization (not in the papers): each "
                                 "heatmap times the finding's location prior, reported apart from plain heatmaps and "
                                 "compared with the prior alone, so the table shows whether the image adds anything; not with box_rule "
                                 "probability, whose tau thresholds a probability map")
    box_rule: Literal["relative", "absolute", "probability"] = Field(
        "relative", description="relative (paper 003: Q x max), absolute (paper 000: min-max to 0..255) or "
        "probability (paper 004: pixels whose probability is at least tau)")
    threshold: float | None = Field(None, description="Q, the 0..255 level or tau; None: the rule's paper value "
                                    "(0.7, 127 or 0.5)")
    threshold_sweep: tuple[float, ...] = Field(
        (), description="also score localization at each of these thresholds (paper 004 Table 2: tau 0.1, 0.4, 0.8), "
        "all reported; none is picked on the test images")
    refine: bool = Field(False, description="refine the CAMs with the checkpoint's PCM (cxrlens refine)")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95 % CIs")
    seed: int = Field(0, description="seed of the split draw, the cross-fitted prior and the bootstrap")
    batch_size: int = Field(32, ge=1, description="images per forward pass")
    gallery: int = Field(12, ge=0, description="CAM overlays written for the report")
    max_boxed_images: int | None = Field(None, ge=1, description="localize only the first N boxed images (quick runs)")

    @model_validator(mode="after")
    def _probabilities_need_raw_maps(self) -> EvaluateConfig:
        if self.box_rule == "probability" and self.normalize_maps:
            raise ValueError("box_rule probability thresholds the model's own probabilities: set normalize_maps to "
                             "false (--raw-maps), or min-max scaled maps would be read as probabilities")
        return self


def unknown_key(key: object, known: Iterable[str]) -> str:
    """``unknown key 'modle'; did you mean 'model'?`` (or the known keys when none is close)."""
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    return f"unknown key {key!r}; " + (f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a one-line error naming the file when it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    return data


def dump_yaml(data: BaseModel | dict, path: str | Path) -> None:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    Path(path).write_text(yaml.safe_dump(payload, sort_keys=False))
