"""Typed configuration of every step, with the papers' values as documented defaults.

Each model is a pydantic model, so a YAML file under ``configs/`` is validated field by
field (unknown keys are errors) and the resolved config is written next to every result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(Strict):
    """Network architecture (papers 000, 003, 004)."""

    arch: Literal["standard", "multires", "dense-multires"] = Field(
        "standard", description="standard backbone; merge-block MultiRes (paper 003); dense multi-resolution decoder (paper 004)")
    backbone: str = Field("resnet50", description="resnet18/34/50/101, wide_resnet50_2, densenet121, efficientnet_b4")
    num_classes: int = Field(14, ge=1, description="14 NIH findings (paper 000, 003, 004)")
    pooling: Literal["gap", "lse", "lse-lba"] = Field("gap", description="gap; lse (paper 003); lse-lba (paper 004, dense-multires only)")
    lse_gamma: float = Field(10.0, gt=0, description="LSE sharpness, paper 003: 10")
    lba_r0: float = Field(0.0, ge=0, description="LSE-LBA lower bound r0, paper 004: 0, 5 or 10")
    lba_per_class: bool = Field(False, description="one learnable beta per class instead of paper 004's scalar")
    weights: str | None = Field(None, description="None (random init), 'imagenet' (download), or a local weights file")
    in_chans: int = Field(1, ge=1, description="input channels; CXRs are 1-channel")
    trainable_from: int = Field(0, ge=0, le=4, description="freeze stages before this one; paper 003: 3 (blocks 3-4 train)")
    saliency_stride: int = Field(8, description="dense-multires saliency stride: 64 x 64 maps at 512 input (paper 004)")
    dense_width: int = Field(128, ge=8, description="dense-multires channels per level (not given in paper 004)")
    dense_layers: int = Field(4, ge=1, description="layers per DenseNet block (not given in paper 004)")
    dense_growth: int = Field(32, ge=1, description="DenseNet growth rate (not given in paper 004)")


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
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="paper 000: x0.1")
    plateau_patience: int = Field(4, ge=0, description="paper 000: 4 epochs without improvement")
    min_lr: float = Field(1e-6, ge=0, description="paper 000: down to 1e-6")
    early_stopping: int | None = Field(None, ge=1, description="stop after this many epochs without a better val mean AUROC")
    loss: Literal["bce", "weighted-bce", "dynamic-bce", "soft-margin"] = Field(
        "dynamic-bce", description="dynamic-bce: paper 003 eq. 3-5; weighted-bce: paper 000 positive weights")
    mean: float = Field(0.5, description="intensity normalisation mean (dataset mean, paper 000)")
    std: float = Field(0.25, gt=0, description="intensity normalisation std")
    augment: bool = Field(True, description="paper 003: crop 80-100 % area, aspect 0.75-1.733, hflip, rotation +-15")
    accelerator: Literal["cpu", "cuda", "auto"] = "auto"
    devices: int | str = Field(1, description="processes/GPUs; 'auto' for all")
    strategy: str = Field("auto", description="auto, ddp (torchrun or Fabric launcher)")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = Field("32-true", description="bf16-mixed on GPU for AMP")
    num_workers: int = Field(2, ge=0)
    seed: int = 0
    freeze_batchnorm: bool = Field(False, description="BatchNorm layers use running statistics only")
    sync_batchnorm: bool = Field(True, description="SyncBatchNorm under multi-GPU DDP")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap optimizer steps per epoch (smoke runs)")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a one-line error naming the file when it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read YAML ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    return data


def dump_yaml(data: BaseModel | dict, path: str | Path) -> None:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    Path(path).write_text(yaml.safe_dump(payload, sort_keys=False))
