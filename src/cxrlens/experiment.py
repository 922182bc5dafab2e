"""An experiment: named datasets and a chain of steps (the model of a ``configs/*.yaml`` file).

An experiment YAML names its datasets (reader + folders + cache size, optionally a binary
task carved out of them) and lists steps, each a typed config of one command:
``pretrain``, ``train`` (supervised, or fine-tuning when it names a pretraining step as
``encoder``), ``linear-eval``, ``refine``, ``evaluate`` (which also writes the HTML
report) and ``compare`` (two evaluations of the same images, paired: a cross-run verdict
row). Steps refer to earlier steps by name.

Each step class knows how to ``run`` itself in a :class:`StepContext`, how to shrink
itself for ``smoke`` runs, which earlier steps it ``needs``, how to ``check`` its names
against the registries, and how to ``plan`` itself in a :class:`PlanContext`: which images
of its datasets it would use, drawn by :mod:`cxrlens.data.roles` exactly as the run
draws them, so that ``cxrlens run --check`` finds an evaluation that would score a
model's own training images before anything trains.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from cxrlens.checkpoints import DataProvenance
from cxrlens.config import (EvaluateConfig, InputSpec, LinearEvalConfig, ModelConfig, PretrainConfig, RefineConfig,
                            SplitConfig, Strict, TaskConfig, TrainConfig, load_yaml)
from cxrlens.data.labels import match_classes
from cxrlens.data.provenance import describe_roles, digest, refuse_training_overlap
from cxrlens.data.records import CXRItem, boxed_positions
from cxrlens.data.roles import (evaluated_indices, linear_eval_splits, pretrain_roles, refine_roles,
                                training_roles, with_cam_loss)
from cxrlens.data.splits import count_patients
from cxrlens.devices import DEFAULT_DEVICE

if TYPE_CHECKING:  # the models layer is imported only by the steps that run
    from cxrlens.models.xrv import PublishedModel


class DataSpec(Strict):
    """A dataset and how it is cached."""

    dataset: str = Field(description="reader (nih, chexpert, kermany, cohen, folder) or 'sample'")
    roots: list[str] = Field(default_factory=list, description="dataset folders; for 'sample' the sample set names")
    size: int = Field(256, ge=16, le=4096, description="cache side in pixels (papers: 256; paper 004: 512)")
    fit: Literal["squash", "pad", "crop"] = "squash"
    limit: int | None = Field(None, ge=1, description="use a seeded random subset of this many images (smoke runs)")
    options: dict[str, str | float | int | bool | list[str]] = Field(
        default_factory=dict, description="reader options, e.g. chexpert uncertain: zeros; folder csv, label_columns")
    task: TaskConfig | None = Field(None, description="a binary task carved out of the dataset (papers 001, 002: "
                                    "pneumonia vs images without a finding)")
    smoke: list[str] = Field(default_factory=lambda: ["nih-sample"],
                             description="sample sets standing in for this dataset under --smoke")


class SmokeSettings(Strict):
    """How ``--smoke`` shrinks an experiment."""

    size: int = 64
    backbone: str = "resnet18"
    epochs: int = 1
    max_steps_per_epoch: int = 2
    batch_size: int = 8
    bootstrap: int = 20
    max_boxed_images: int = 4
    max_images: int = 200

    def train(self, config: TrainConfig) -> TrainConfig:
        return config.model_copy(update={"epochs": self.epochs, "max_steps_per_epoch": self.max_steps_per_epoch,
                                         "batch_size": self.batch_size, "accumulate": 1, "num_workers": 0,
                                         "keep_epochs": (self.epochs,) if config.keep_epochs else (),
                                         "early_stopping": None})

    def model(self, config: ModelConfig) -> ModelConfig:
        return config.model_copy(update={"backbone": self.backbone, "weights": None, "dense_width": 16,
                                         "init": None if config.init_kind in ("xrv", "timm") else config.init,
                                         "dense_layers": 1, "dense_growth": 8})


@dataclass(frozen=True)
class StepContext:
    """Where a step runs: its folder, the experiment's prepared caches (by data key), the outputs of
    earlier steps (by name), whether it resumes an interrupted run, and the device (``auto``: each
    training step's own ``accelerator``, which defaults to auto)."""

    folder: Path
    caches: dict[str, Path]
    outputs: dict[str, Path]
    resume: bool
    device: str

    def train(self, config: TrainConfig) -> TrainConfig:
        return config if self.device == DEFAULT_DEVICE else config.model_copy(update={"accelerator": self.device})


@dataclass
class StepPlan:
    """What a step would do: a one-line ``summary``, ``problems`` that stop the experiment, ``notes`` to read."""

    name: str
    kind: str
    summary: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: str = ""
    """For a step that trains: the digest of what its model learns from (the run's checkpoint records the same)."""


@dataclass
class PlanContext:
    """The experiment's datasets (items and class names by data key, and the images their caches decoded, or None
    before any cache is prepared) and, filled in step by step, what each earlier step's model learned from (its
    provenance) and the classes it predicts."""

    items: dict[str, list[CXRItem]]
    classes: dict[str, tuple[str, ...]]
    decoded: dict[str, np.ndarray] | None = None
    provenance: dict[str, list[DataProvenance]] = field(default_factory=dict)
    predicts: dict[str, list[str]] = field(default_factory=dict)
    scored_by: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Per evaluate step: its data key and a digest of the images it scores (what a compare step pairs)."""

    def ready(self, key: str) -> np.ndarray:
        """The images of ``key`` a run can use: those its prepared cache decoded, or (before any cache) all."""
        return self.decoded[key] if self.decoded is not None else np.arange(len(self.items[key]))

    def record(self, key: str, roles: dict[str, np.ndarray], split: dict) -> DataProvenance:
        return describe_roles(self.items[key], roles, split, cache=key, dataset=key)

    def learned(self, plan: StepPlan, provenance: list[DataProvenance]) -> None:
        """What ``plan``'s model learns from: kept for the steps that use it, and digested into the plan."""
        self.provenance[plan.name] = provenance
        plan.data = digest(provenance)

    def scored(self, plan: StepPlan, key: str, indices: np.ndarray, model: str, allow: bool,
               released: frozenset[str] = frozenset()) -> None:
        """Check the images ``indices`` of ``key`` against what ``model`` learned from, into ``plan`` (``released``:
        patients the official lists share, kept by ``splits: official``)."""
        try:
            found = refuse_training_overlap(self.provenance.get(model, []), self.items[key], indices, key, model, allow,
                                            released)
        except ValueError as error:  # an overlap, or patients that cannot be compared
            plan.problems.append(str(error))
            return
        for entry in found:
            if entry.either:
                plan.notes.append(f"{entry.either} of {entry.total} images ({entry.patients} patients) were in "
                                  f"{model}'s {entry.role} data" + (" - scored anyway (allow_train_overlap)"
                                                                    if entry.supervised else " (pixels only)"))




NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
"""Experiment and step names become folder names: letters, digits and . _ + - only."""


class Step(Strict, ABC):
    """One command of an experiment (see the module docstring)."""

    kind: str
    name: str = Field(pattern=NAME)
    data: str | list[str] = Field(description="the dataset key(s) the step reads")

    def data_keys(self) -> list[str]:
        return _keys(self.data)

    def needs(self) -> dict[str, tuple[str, ...]]:
        """``{field: kinds}``: fields naming an earlier step, and the kinds that step may be."""
        return {}

    def check(self) -> None:
        """Refuse names no registry knows (raises ValueError)."""

    @abstractmethod
    def run(self, context: StepContext) -> dict:
        """Run the step; returns its record (``kind``, ``output`` and the headline results)."""

    @abstractmethod
    def smoke(self, settings: SmokeSettings) -> Step:
        """The same step, tiny."""

    @abstractmethod
    def plan(self, context: PlanContext) -> StepPlan:
        """Which images the step would use (and record them in ``context``), without running it."""


def _check_model(config: ModelConfig) -> None:
    from cxrlens.models import ARCHITECTURES, BACKBONES

    ARCHITECTURES.get(config.arch)
    BACKBONES.get(config.backbone)


class PretrainStep(Step):
    kind: Literal["pretrain"]
    data: list[str] = Field(description="dataset keys whose images (labels unused) are pooled")
    config: PretrainConfig = Field(default_factory=PretrainConfig)

    def check(self) -> None:
        _check_model(self.config.encoder)

    def run(self, context: StepContext) -> dict:
        from cxrlens.ssl import pretrain

        config = self.config.model_copy(update={"train": context.train(self.config.train)})
        result = pretrain([context.caches[key] for key in self.data], context.folder, config, resume=context.resume,
                          overwrite=not context.resume)
        return {"kind": self.kind, "output": result["encoder"], "final_loss": result["history"][-1]["train_loss"]}

    def plan(self, context: PlanContext) -> StepPlan:
        plan = StepPlan(self.name, self.kind)
        roles = pretrain_roles([(context.items[key], context.ready(key)) for key in self.data], self.config)
        split = {"images": self.config.images, "box_test_fraction": self.config.box_test_fraction,
                 "seed": self.config.train.seed, "fraction": self.config.fraction}
        context.learned(plan, [context.record(key, part, split) for key, part in zip(self.data, roles)])
        images = sum(len(part["pretrain"]) for part in roles)
        boxed = sum(len(part.get("cam-loss", ())) for part in roles)
        plan.summary = f"{images} images" + (f", {boxed} with boxes for the CAM loss" if boxed else "")
        if not images:
            plan.problems.append(f"{self.name}: no images to pretrain on")
        if self.config.method.boxes_per_batch() and not boxed:
            plan.problems.append(f"{self.name}: the CAM loss needs boxed images and none is left to pretrain on")
        return plan

    def smoke(self, settings: SmokeSettings) -> PretrainStep:
        config = self.config.model_copy(update={"encoder": settings.model(self.config.encoder),
                                                "train": settings.train(self.config.train),
                                                "method": self.config.method.smoke(),
                                                "fraction": max(self.config.fraction, 0.1)})  # >= one batch
        return self.model_copy(update={"config": config})


class TrainStep(Step):
    kind: Literal["train"]
    data: str
    encoder: str | None = Field(None, description="a pretrain step to fine-tune from (None: supervised baseline)")
    freeze: Literal["none", "last-blocks", "all"] = "none"
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    label_fraction: float = Field(1.0, gt=0, le=1)
    split: SplitConfig = Field(default_factory=SplitConfig)

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("pretrain",)}

    def check(self) -> None:
        _check_model(self.model)

    def run(self, context: StepContext) -> dict:
        from cxrlens.train.supervised import finetune, train_supervised

        options = {"fraction": self.label_fraction, "split": self.split, "resume": context.resume,
                   "overwrite": not context.resume}
        cache, train = context.caches[self.data], context.train(self.train)
        if self.encoder:
            result = finetune(cache, context.folder, context.outputs[self.encoder], self.model, train, self.freeze,
                              **options)
        else:
            result = train_supervised(cache, context.folder, self.model, train, **options)
        return {"kind": self.kind, "output": str(context.folder / "checkpoints" / "best.ckpt"),
                "best_val_mean_auroc": result["best_val_mean_auroc"], "best_epoch": result["best_epoch"]}

    def plan(self, context: PlanContext) -> StepPlan:
        plan = StepPlan(self.name, self.kind)
        items = context.items[self.data]
        roles = training_roles(items, context.classes[self.data], context.ready(self.data), self.split,
                               self.label_fraction, self.train.seed)
        if self.train.cam_loss:
            roles = with_cam_loss(roles, items, context.classes[self.data])
            if not len(roles["cam-loss"]):
                plan.problems.append(f"{self.name}: the CAM loss needs boxed training images and {self.data!r} "
                                     "has none in its training split")
        split = {**self.split.model_dump(), "seed": self.train.seed, "label_fraction": self.label_fraction}
        context.learned(plan, [*context.provenance.get(self.encoder or "", []), context.record(self.data, roles, split)])
        context.predicts[self.name] = list(context.classes[self.data])
        plan.summary = (f"train {len(roles['train'])} images ({count_patients(items, roles['train'])} patients), "
                        f"val {len(roles['val'])} ({count_patients(items, roles['val'])})")
        if not len(roles["train"]) or not len(roles["val"]):
            plan.problems.append(f"{self.name}: empty training or validation split of {self.data!r}")
        return plan

    def smoke(self, settings: SmokeSettings) -> TrainStep:
        return self.model_copy(update={"model": settings.model(self.model), "train": settings.train(self.train)})


class LinearEvalStep(Step):
    kind: Literal["linear-eval"]
    data: str
    encoder: str | None = Field(None, description="a pretrain step (None: random-init baseline of 'backbone')")
    backbone: str = "resnet50"
    config: LinearEvalConfig = Field(default_factory=LinearEvalConfig)

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("pretrain",)}

    def check(self) -> None:
        from cxrlens.models import BACKBONES

        BACKBONES.get(self.backbone)

    def run(self, context: StepContext) -> dict:
        from cxrlens.evaluate.linear_probe import run_linear_eval

        encoder = context.outputs[self.encoder] if self.encoder else None
        payload = run_linear_eval(context.caches[self.data], context.folder, encoder, self.config,
                                  backbone=self.backbone, device=context.device, overwrite=True)
        return {"kind": self.kind, "output": str(context.folder / "metrics.json"), "mean_auc": payload["mean_auc"],
                "verdict": payload["verdict"]}

    def plan(self, context: PlanContext) -> StepPlan:
        plan = StepPlan(self.name, self.kind)
        items = context.items[self.data]
        splits = linear_eval_splits(items, context.ready(self.data), self.config)
        plan.summary = (f"fit on {len(splits.train) + len(splits.val)} images, test {len(splits.test)} "
                        f"({count_patients(items, splits.test)} patients)")
        if not len(splits.test) or not len(splits.train) + len(splits.val):
            plan.problems.append(f"{self.name}: empty training or test split of {self.data!r}")
        context.scored(plan, self.data, splits.test, self.encoder or "", self.config.allow_train_overlap,
                       splits.released)
        return plan

    def smoke(self, settings: SmokeSettings) -> LinearEvalStep:
        config = self.config.model_copy(update={"bootstrap": settings.bootstrap, "folds": 2, "fractions": (1.0,),
                                                "c_grid": (0.1, 1.0), "max_iter": 300})
        return self.model_copy(update={"config": config, "backbone": settings.backbone})


class RefineStep(Step):
    kind: Literal["refine"]
    data: str
    checkpoint: str = Field(description="a train (or refine) step whose classifier the PCM refines")
    config: RefineConfig = Field(default_factory=RefineConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"checkpoint": ("train", "refine")}

    def run(self, context: StepContext) -> dict:
        from cxrlens.train.seam import train_pcm

        config = self.config.model_copy(update={"train": context.train(self.config.train)})
        result = train_pcm(context.outputs[self.checkpoint], context.caches[self.data], context.folder, config,
                           split=self.split, resume=context.resume,
                           overwrite=not context.resume)
        return {"kind": self.kind, "output": result["refined"]}

    def plan(self, context: PlanContext) -> StepPlan:
        plan = StepPlan(self.name, self.kind)
        roles = refine_roles(context.items[self.data], context.classes[self.data], context.ready(self.data),
                             self.split, self.config.train.seed)
        if list(context.classes[self.data]) != context.predicts[self.checkpoint]:
            plan.problems.append(f"{self.name}: {self.data!r} has other classes than {self.checkpoint}'s model")
        context.learned(plan, [*context.provenance[self.checkpoint], context.record(
            self.data, roles, {**self.split.model_dump(), "seed": self.config.train.seed})])
        context.predicts[self.name] = context.predicts[self.checkpoint]
        plan.summary = f"refine on {len(roles['refine'])} images"
        if not len(roles["refine"]):
            plan.problems.append(f"{self.name}: no training images in {self.data!r}")
        return plan

    def smoke(self, settings: SmokeSettings) -> RefineStep:
        config = self.config.model_copy(update={"train": settings.train(self.config.train)})
        return self.model_copy(update={"config": config})


class EvaluateStep(Step, EvaluateConfig):
    kind: Literal["evaluate"]
    data: str
    checkpoint: str = Field(description="a train or refine step, or xrv:<name>: a TorchXRayVision model as published "
                            "(paper 000's XRV rows)")
    weights_file: str | None = Field(None, description="xrv:<name>: its weights file, where it is not in "
                                     "TorchXRayVision's cache folder")

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {} if self.published else {"checkpoint": ("train", "refine")}

    @property
    def published(self) -> bool:
        """Whether the checkpoint is a published model (``xrv:<name>``) rather than a step of the experiment."""
        return self.checkpoint.startswith("xrv:")

    def check(self) -> None:
        from cxrlens.explain import METHODS

        METHODS.get(self.cam)
        if self.published:
            self.published_model()

    def run(self, context: StepContext) -> dict:
        from cxrlens.evaluate import evaluate
        from cxrlens.evaluate.report import write_report

        checkpoint = self.checkpoint if self.published else context.outputs[self.checkpoint]
        payload = evaluate(checkpoint, context.caches[self.data], context.folder, self.settings(),
                           device=context.device, overwrite=True, weights_file=self.weights_file)
        page = write_report(context.folder)
        localization = payload["localization"]
        return {"kind": self.kind, "output": str(context.folder / "metrics.json"), "report": str(page),
                "classification_mean": payload["classification_mean"], "verdict": payload["verdict"],
                "localization": localization["comparison"] if localization else None}

    def settings(self) -> EvaluateConfig:
        """The evaluation settings of this step (its EvaluateConfig fields)."""
        return EvaluateConfig.model_validate(self.model_dump(include=set(EvaluateConfig.model_fields)))

    def plan(self, context: PlanContext) -> StepPlan:
        plan = StepPlan(self.name, self.kind)
        items = context.items[self.data]
        scored, _, splits = evaluated_indices(items, context.ready(self.data), self.settings())
        match = match_classes(self.predicts(context), context.classes[self.data])
        findings = set(match.names)
        boxed = int(boxed_positions(items, scored, findings).sum())
        plan.summary = (f"{len(scored)} images ({count_patients(items, scored)} patients), {boxed} with boxes; "
                        f"{len(match.pairs)} findings scored")
        if not len(scored):
            plan.problems.append(f"{self.name}: the {self.split} split of {self.data!r} is empty")
        if not match.pairs:
            plan.problems.append(f"{self.name}: {self.checkpoint}'s model predicts none of {self.data!r}'s classes")
        if match.model_only or match.data_only:
            plan.notes.append(f"not scored: predicted but not labelled here: {', '.join(match.model_only) or '-'}; "
                              f"labelled here but not predicted: {', '.join(match.data_only) or '-'}")
        context.scored(plan, self.data, scored, self.checkpoint, self.allow_train_overlap,
                       splits.released if splits else frozenset())
        context.scored_by[self.name] = (self.data, hashlib.sha256(np.asarray(scored, dtype=np.int64).tobytes()).hexdigest())
        return plan

    def published_model(self) -> PublishedModel:
        """What TorchXRayVision publishes about the ``xrv:<name>`` this step scores (ValueError for an unknown name)."""
        from cxrlens.models.xrv import published_model

        return published_model(self.checkpoint[len("xrv:"):])

    def published_input(self) -> InputSpec:
        """The input of the published model: its resolution, centre-cropped."""
        return InputSpec(size=self.published_model().resolution, fit="crop")

    def predicts(self, context: PlanContext) -> list[str]:
        """The classes the evaluated model predicts."""
        if not self.published:
            return context.predicts[self.checkpoint]
        return [name for _, name in self.published_model().trained()]

    def smoke(self, settings: SmokeSettings) -> EvaluateStep:
        return self.model_copy(update={"bootstrap": settings.bootstrap, "max_boxed_images": settings.max_boxed_images})


class CompareStep(Step):
    """Two evaluate steps of the same images compared paired: a cross-run verdict row (e.g. MultiRes > standard)."""

    kind: Literal["compare"]
    data: str = Field(description="the dataset both evaluations scored")
    model: str = Field(description="the evaluate step of the method the claim is about")
    baseline: str = Field(description="the evaluate step it is compared with, on the same images")
    claim: str = Field(description="what is claimed, e.g. 'MultiRes > standard' (paper 003)")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the paired 95 % CIs")
    seed: int = 0

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"model": ("evaluate",), "baseline": ("evaluate",)}

    def run(self, context: StepContext) -> dict:
        import json

        from cxrlens.evaluate.comparison import compare_evaluations
        from cxrlens.folders import claim_folder

        model, baseline = (context.outputs[name].parent for name in (self.model, self.baseline))
        payload = compare_evaluations(model, baseline, context.caches[self.data], self.claim, self.bootstrap,
                                      self.seed)
        claim_folder(context.folder, "comparison", [model, baseline])
        (context.folder / "metrics.json").write_text(json.dumps(payload, indent=2))
        return {"kind": self.kind, "output": str(context.folder / "metrics.json"), "verdict": payload["verdict"]}

    def plan(self, context: PlanContext) -> StepPlan:
        plan = StepPlan(self.name, self.kind, summary=f"{self.model} vs {self.baseline}: {self.claim}")
        scored = [context.scored_by.get(name, ("", name)) for name in (self.model, self.baseline)]
        if any(data != self.data for data, _ in scored) or scored[0][1] != scored[1][1]:
            plan.problems.append(f"{self.name}: {self.model} and {self.baseline} must evaluate the same images of "
                                 f"{self.data!r} (same data, split and protocol)")
        return plan

    def smoke(self, settings: SmokeSettings) -> CompareStep:
        return self.model_copy(update={"bootstrap": settings.bootstrap})


AnyStep = Annotated[Union[PretrainStep, TrainStep, LinearEvalStep, RefineStep, EvaluateStep, CompareStep],
                    Field(discriminator="kind")]


class Reference(Strict):
    """One cell of a paper's table (:data:`cxrlens.tables.layouts.TABLES`): the paper's number exactly as printed,
    and where the same quantity lands in this experiment's results."""

    table: str = Field(description="the table's label, e.g. 'Table II' (a layout of cxrlens.tables.layouts)")
    row: str = Field(description="the row as the paper prints it, e.g. 'Edema (45)'")
    column: str = Field(description="the column as the paper prints it, e.g. 'SSL + CAM Loss + FT (ours)'")
    value: str | None = Field(description="the paper's number exactly as printed (checked against the paper's "
                              "text by the tests); None where the paper gives none (a '-' cell, or a figure only)")
    step: str | None = Field(None, description="the step whose metrics hold ours; None for another work's result "
                             "that the paper quotes beside its own (shown as the paper prints it)")
    metric: str | None = Field(None, description="path into the step's metrics.json, e.g. classification/Edema/auc")

    @model_validator(mode="after")
    def _step_and_metric(self) -> Reference:
        if (self.step is None) != (self.metric is None):
            raise ValueError(f"reference {self.table} / {self.row} / {self.column}: give both step and metric, or "
                             "neither (a result the paper quotes from other work)")
        return self


class Deviation(Strict):
    """Where this experiment does not do what its paper did, and why (listed in docs/deviations.md)."""

    topic: str = Field(description="e.g. 'NIH pneumonia task size'")
    paper: str = Field(description="what the paper did or says")
    ours: str = Field(description="what this experiment does")
    why: str


class Profile(Strict):
    """A named scale of an experiment (``cxrlens run CONFIG --profile cpu``), written as what it changes: fields of
    datasets replaced, step fields merged in (nested sections field by field), steps it leaves out, and steps it
    runs first (with their own datasets), e.g. a short self-supervised pretraining that its training steps start
    from where the paper starts from ImageNet weights this machine cannot download."""

    description: str = Field(description="what this scale is, printed in its tables (e.g. 'CPU scale: ...')")
    data: dict[str, dict] = Field(default_factory=dict, description="data key -> DataSpec fields that replace the "
                                  "experiment's (e.g. dataset: sample, roots: [nih-sample], size: 128); a key the "
                                  "experiment lacks is a whole new dataset, for the steps this scale adds")
    steps: dict[str, dict] = Field(default_factory=dict, description="step name -> fields merged into that step")
    skip: list[str] = Field(default_factory=list, description="steps this scale cannot run, and so leaves out")
    add: list[dict] = Field(default_factory=list, description="steps this scale runs before the experiment's own "
                            "(e.g. a pretrain step that its train steps name as encoder)")


class Experiment(Strict):
    name: str = Field(pattern=NAME)
    paper: str
    description: str
    data: dict[str, DataSpec]
    steps: list[AnyStep]
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    profiles: dict[Annotated[str, Field(pattern=NAME)], Profile] = Field(
        default_factory=dict, description="named scales, e.g. cpu: the sample sets on 2 CPU cores in about 30 minutes, "
        "with settings that learn ('full' and 'smoke' are taken)")
    scale: str = Field("full", description="what this run is: full (the paper's settings), a profile's name, or "
                       "smoke; set by --profile / --smoke")
    references: list[Reference] = Field(default_factory=list)
    deviations: list[Deviation] = Field(default_factory=list)

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, profiles: dict[str, Profile]) -> dict[str, Profile]:
        taken = {"full", "smoke"} & set(profiles)
        if taken:
            raise ValueError(f"profile name(s) {sorted(taken)} are taken: 'full' is the config itself, 'smoke' --smoke")
        return profiles

    @property
    def config_name(self) -> str:
        """The config this experiment came from (its name without the scale's suffix)."""
        return self.name if self.scale == "full" else self.name.removesuffix(f"-{self.scale}")

    @property
    def scale_description(self) -> str:
        """The profile's description when this is a profile's version; empty otherwise."""
        profile = self.profiles.get(self.scale)
        return profile.description if profile else ""


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML and each of its profiles; step references and registered names are
    checked before anything runs."""
    raw = load_yaml(path)
    if isinstance(raw, dict) and "scale" in raw:
        raise ValueError(f"{path}: 'scale' is set by --profile and --smoke, not in a config")
    experiment = checked_experiment(Experiment.model_validate(raw), path)
    for name in experiment.profiles:
        profile_version(experiment, name, path)
    return experiment


def checked_experiment(experiment: Experiment, path: str | Path) -> Experiment:
    """``experiment`` once its steps' references to data and earlier steps, and their registered names, are checked."""
    seen: dict[str, str] = {}
    for step in experiment.steps:
        if step.name in seen:
            raise ValueError(f"{path}: step name {step.name!r} is used twice")
        for key in step.data_keys():
            if key not in experiment.data:
                raise ValueError(f"{path}: step {step.name!r} uses unknown data {key!r}")
        for attribute, kinds in step.needs().items():
            target = getattr(step, attribute)
            if target is not None and seen.get(target) not in kinds:
                raise ValueError(f"{path}: step {step.name!r} needs {attribute} = an earlier {'|'.join(kinds)} step, "
                                 f"not {target!r}")
        try:
            step.check()
        except ValueError as error:
            raise ValueError(f"{path}: step {step.name!r}: {error}") from None
        seen[step.name] = step.kind
    for reference in experiment.references:
        if reference.step is not None and reference.step not in seen:
            raise ValueError(f"{path}: reference {reference.table} / {reference.row} / {reference.column} names "
                             f"unknown step {reference.step!r}")
    return experiment


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it; nested sections merge field by field, everything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _keys(data: str | Sequence[str]) -> list[str]:
    """The data keys of a step's ``data`` (``data: key`` or ``data: [keys]``)."""
    return [data] if isinstance(data, str) else list(data)


def profile_version(experiment: Experiment, name: str, path: str | Path = "") -> Experiment:
    """``experiment`` at its profile ``name`` (named ``<experiment>-<name>``), checked like a config file."""
    if experiment.scale != "full":
        raise ValueError(f"{experiment.name}: already at {experiment.scale} scale; profiles apply to a config")
    if name not in experiment.profiles:
        raise ValueError(f"{path or experiment.name}: no profile {name!r}; it has "
                         f"{', '.join(experiment.profiles) or 'none'}")
    profile = experiment.profiles[name]
    where = f"{path or experiment.name} (profile {name})"
    unknown = (set(profile.steps) | set(profile.skip)) - {step.name for step in experiment.steps}
    added_data = {key for step in profile.add for key in _keys(step.get("data", []))}
    unknown |= set(profile.data) - set(experiment.data) - added_data
    if unknown:
        raise ValueError(f"{where}: names unknown data or steps {sorted(unknown)}; the data are "
                         f"{', '.join(experiment.data)}, the steps {', '.join(step.name for step in experiment.steps)}"
                         " (new data must be used by a step the profile adds)")
    raw = experiment.model_dump(exclude_unset=True)  # what the config sets: unset fields keep their meaning (e.g.
    # a fine-tune without mean / std normalises as its encoder was trained)
    for key, fields in profile.data.items():
        raw["data"][key] = {**raw["data"].get(key, {}), **fields}
    raw["steps"] = [*profile.add, *(_merged(step, profile.steps.get(step["name"], {})) for step in raw["steps"]
                                    if step["name"] not in profile.skip)]
    raw["references"] = [reference for reference in raw.get("references", [])
                         if reference.get("step") not in profile.skip]
    raw.update(name=f"{experiment.name}-{name}", scale=name)
    try:
        version = Experiment.model_validate(raw)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return checked_experiment(version, where)


def smoke_version(experiment: Experiment) -> Experiment:
    """The same graph, tiny: sample data, small images, small random-init backbones, short epochs. Data a published
    model (``xrv:``) scores keeps that model's input (it cannot shrink), and it is scored with its published weights."""
    if experiment.scale != "full":
        raise ValueError(f"{experiment.name}: already at {experiment.scale} scale; --smoke applies to a config")
    s = experiment.smoke
    published = {step.data: step.published_input() for step in experiment.steps
                 if isinstance(step, EvaluateStep) and step.published}
    data = {key: spec.model_copy(update={"dataset": "sample", "roots": spec.smoke, "options": {}, "limit": s.max_images,
                                         **(published[key].model_dump() if key in published else {"size": s.size})})
            for key, spec in experiment.data.items()}
    steps = [step.smoke(s) for step in experiment.steps]
    return experiment.model_copy(update={"name": experiment.name + "-smoke", "data": data, "steps": steps,
                                         "scale": "smoke"})


