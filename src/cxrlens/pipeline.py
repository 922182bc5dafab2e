"""Experiments: named datasets and a chain of steps, run by ``cxrlens run CONFIG [--smoke]``.

An experiment YAML (``configs/``) names its datasets (reader + folders + cache size) and
lists steps, each a typed config of one command: ``pretrain``, ``train`` (supervised,
or fine-tuning when it names a pretraining step as ``encoder``), ``linear-eval``,
``refine`` and ``evaluate`` (which also writes the HTML report). Steps refer to earlier
steps by name. Everything a step writes goes to ``RUNS/<experiment>/<step>/``; prepared
caches go to ``CACHE/`` and are shared between experiments (fingerprinted, never
clobbered).

Each step class knows how to ``run`` itself in a :class:`StepContext`, how to shrink
itself for ``smoke`` runs, which earlier steps it ``needs`` and how to ``check`` its names
against the registries before anything runs. Re-running resumes: a finished step
(``step.json`` written) is skipped, an interrupted one continues from its last checkpoint. ``--smoke`` runs the same graph tiny: sample
sets stand in for the full datasets, images are ``smoke.size`` px, backbones
``smoke.backbone`` with random init, one short epoch per training step.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field

from cxrlens.config import (EvaluateConfig, LinearEvalConfig, ModelConfig, PretrainConfig, RefineConfig, Strict,
                            TrainConfig, load_yaml)
from cxrlens.data.cache import prepare_cache_with_bar
from cxrlens.data.records import CXRDataset
from cxrlens.data.registry import open_dataset, open_sample
from cxrlens.devices import DEFAULT_DEVICE
from cxrlens.folders import claim_folder
from cxrlens.paths import find_data_root


class DataSpec(Strict):
    """A dataset and how it is cached."""

    dataset: str = Field(description="reader (nih, chexpert, kermany, cohen, folder) or 'sample'")
    roots: list[str] = Field(default_factory=list, description="dataset folders; for 'sample' the sample set names")
    size: int = Field(256, ge=16, le=4096, description="cache side in pixels (papers: 256; paper 004: 512)")
    fit: Literal["squash", "pad"] = "squash"
    limit: int | None = Field(None, ge=1, description="use a seeded random subset of this many images (smoke runs)")
    options: dict[str, str | float | int | bool | list[str]] = Field(
        default_factory=dict, description="reader options, e.g. chexpert uncertain: zeros; folder csv, label_columns")
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
                                         "keep_every": None, "early_stopping": None})

    def model(self, config: ModelConfig) -> ModelConfig:
        return config.model_copy(update={"backbone": self.backbone, "weights": None, "dense_width": 16,
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


NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
"""Experiment and step names become folder names: letters, digits and . _ + - only."""


class Step(Strict, ABC):
    """One command of an experiment (see the module docstring)."""

    kind: str
    name: str = Field(pattern=NAME)
    data: str | list[str] = Field(description="the dataset key(s) the step reads")

    def data_keys(self) -> list[str]:
        return [self.data] if isinstance(self.data, str) else list(self.data)

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
    official_splits: bool = True

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": ("pretrain",)}

    def check(self) -> None:
        _check_model(self.model)

    def run(self, context: StepContext) -> dict:
        from cxrlens.train.supervised import finetune, train_supervised

        options = {"fraction": self.label_fraction, "use_official_splits": self.official_splits,
                   "resume": context.resume, "overwrite": not context.resume}
        cache, train = context.caches[self.data], context.train(self.train)
        if self.encoder:
            result = finetune(cache, context.folder, context.outputs[self.encoder], self.model, train, self.freeze,
                              **options)
        else:
            result = train_supervised(cache, context.folder, self.model, train, **options)
        return {"kind": self.kind, "output": str(context.folder / "checkpoints" / "best.ckpt"),
                "best_val_mean_auroc": result["best_val_mean_auroc"], "best_epoch": result["best_epoch"]}

    def smoke(self, settings: SmokeSettings) -> TrainStep:
        return self.model_copy(update={"model": settings.model(self.model), "train": settings.train(self.train),
                                       "official_splits": False})


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
        return {"kind": self.kind, "output": str(context.folder / "metrics.json"), "mean_auc": payload["mean_auc"]}

    def smoke(self, settings: SmokeSettings) -> LinearEvalStep:
        config = self.config.model_copy(update={"bootstrap": settings.bootstrap, "folds": 2, "fractions": (1.0,),
                                                "c_grid": (0.1, 1.0), "max_iter": 300})
        return self.model_copy(update={"config": config, "backbone": settings.backbone})


class RefineStep(Step):
    kind: Literal["refine"]
    data: str
    checkpoint: str = Field(description="a train (or refine) step whose classifier the PCM refines")
    config: RefineConfig = Field(default_factory=RefineConfig)
    official_splits: bool = True

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"checkpoint": ("train", "refine")}

    def run(self, context: StepContext) -> dict:
        from cxrlens.train.seam import train_pcm

        config = self.config.model_copy(update={"train": context.train(self.config.train)})
        result = train_pcm(context.outputs[self.checkpoint], context.caches[self.data], context.folder, config,
                           use_official_splits=self.official_splits, resume=context.resume,
                           overwrite=not context.resume)
        return {"kind": self.kind, "output": result["refined"]}

    def smoke(self, settings: SmokeSettings) -> RefineStep:
        config = self.config.model_copy(update={"train": settings.train(self.config.train)})
        return self.model_copy(update={"config": config, "official_splits": False})


class EvaluateStep(Step, EvaluateConfig):
    kind: Literal["evaluate"]
    data: str
    checkpoint: str = Field(description="a train or refine step")

    def needs(self) -> dict[str, tuple[str, ...]]:
        return {"checkpoint": ("train", "refine")}

    def check(self) -> None:
        from cxrlens.explain import METHODS

        METHODS.get(self.cam)

    def run(self, context: StepContext) -> dict:
        from cxrlens.evaluate import evaluate
        from cxrlens.evaluate.report import write_report

        settings = EvaluateConfig.model_validate(self.model_dump(include=set(EvaluateConfig.model_fields)))
        payload = evaluate(context.outputs[self.checkpoint], context.caches[self.data], context.folder, settings,
                           device=context.device, overwrite=True)
        page = write_report(context.folder)
        localization = payload["localization"]
        return {"kind": self.kind, "output": str(context.folder / "metrics.json"), "report": str(page),
                "classification_mean": payload["classification_mean"],
                "localization": localization["comparison"] if localization else None}

    def smoke(self, settings: SmokeSettings) -> EvaluateStep:
        # sample sets may sit in one official split: draw the test split by patient, as training did
        return self.model_copy(update={"bootstrap": settings.bootstrap, "official_splits": False,
                                       "max_boxed_images": settings.max_boxed_images})


AnyStep = Annotated[Union[PretrainStep, TrainStep, LinearEvalStep, RefineStep, EvaluateStep], Field(discriminator="kind")]


class Reference(Strict):
    """A paper's figure, and where the same quantity lands in this experiment's results."""

    table: str = Field(description="e.g. 'paper 003 Table 2, MultiRes-ResNet50 (with PCM), mean Lacc T=0.1'")
    value: str
    step: str
    metric: str = Field(description="path into the step's metrics.json, e.g. localization/model/mean/acc@0.1")


class Experiment(Strict):
    name: str = Field(pattern=NAME)
    paper: str
    description: str
    data: dict[str, DataSpec]
    steps: list[AnyStep]
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    references: list[Reference] = Field(default_factory=list)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML; step references and registered names are checked before anything runs."""
    experiment = Experiment.model_validate(load_yaml(path))
    seen: dict[str, str] = {}
    for step in experiment.steps:
        if step.name in seen:
            raise ValueError(f"{path}: step name {step.name!r} is used twice")
        for key in step.data_keys():
            if key not in experiment.data:
                raise ValueError(f"{path}: step {step.name!r} uses unknown data {key!r}")
        for field, kinds in step.needs().items():
            target = getattr(step, field)
            if target is not None and seen.get(target) not in kinds:
                raise ValueError(f"{path}: step {step.name!r} needs {field} = an earlier {'|'.join(kinds)} step, "
                                 f"not {target!r}")
        try:
            step.check()
        except ValueError as error:
            raise ValueError(f"{path}: step {step.name!r}: {error}") from None
        seen[step.name] = step.kind
    return experiment


def smoke_version(experiment: Experiment) -> Experiment:
    """The same graph, tiny: sample data, small images, small random-init backbones, short epochs."""
    s = experiment.smoke
    data = {key: spec.model_copy(update={"dataset": "sample", "roots": spec.smoke, "size": s.size, "options": {},
                                         "limit": s.max_images})
            for key, spec in experiment.data.items()}
    steps = [step.smoke(s) for step in experiment.steps]
    return experiment.model_copy(update={"name": experiment.name + "-smoke", "data": data, "steps": steps})


def _cache_name(spec: DataSpec) -> str:
    roots = "+".join(Path(root).name for root in spec.roots) or "all"
    limit = f"-n{spec.limit}" if spec.limit else ""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{spec.dataset}-{roots}-{spec.size}-{spec.fit}{limit}")


def _open(spec: DataSpec, data_root: str | Path | None) -> CXRDataset:
    if spec.dataset == "sample":
        root = find_data_root(data_root)
        if root is None:
            raise FileNotFoundError("no sample data root: pass --data-root or set $CXRLENS_DATA")
        dataset = open_sample(root, spec.roots)
    else:
        dataset = open_dataset(spec.dataset, spec.roots, **spec.options)
    if spec.limit and spec.limit < len(dataset.items):
        keep = sorted(np.random.default_rng(0).choice(len(dataset.items), spec.limit, replace=False))
        dataset = CXRDataset(dataset.classes, [dataset.items[i] for i in keep], dataset.problems, dataset.name,
                             roots=dataset.roots)
    return dataset


def run_experiment(experiment: Experiment, runs_root: str | Path = "runs", cache_root: str | Path = "cache",
                   data_root: str | Path | None = None, device: str = DEFAULT_DEVICE,
                   log: Callable[[str], None] = print) -> dict:
    """Run every step (skipping finished ones) on ``device``; returns and writes ``summary.json``."""
    out = Path(runs_root) / experiment.name
    datasets = {key: _open(spec, data_root) for key, spec in experiment.data.items()}
    claim_folder(out, "experiment", [root for dataset in datasets.values() for root in dataset.roots])
    caches = {}
    for key, spec in experiment.data.items():
        directory = Path(cache_root) / _cache_name(spec)
        prepare_cache_with_bar(datasets[key], directory, size=spec.size, fit=spec.fit)
        caches[key] = directory
    results: dict[str, dict] = {}
    outputs: dict[str, Path] = {}
    for number, step in enumerate(experiment.steps, 1):
        folder = out / step.name
        marker = folder / "step.json"
        if marker.exists():
            record = json.loads(marker.read_text())
            log(f"[{number}/{len(experiment.steps)}] {step.name}: done earlier, skipped")
        else:
            resume = (folder / "checkpoints" / "last.ckpt").exists()
            log(f"[{number}/{len(experiment.steps)}] {step.name} ({step.kind})" + (" - resuming" if resume else ""))
            started = time.perf_counter()
            record = step.run(StepContext(folder, caches, outputs, resume, device))
            record["seconds"] = round(time.perf_counter() - started, 1)
            marker.write_text(json.dumps(record, indent=2))
        outputs[step.name] = Path(record["output"])
        results[step.name] = record
    summary = {"experiment": experiment.name, "paper": experiment.paper, "steps": results,
               "references": [_reference(reference, out) for reference in experiment.references]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _reference(reference: Reference, out: Path) -> dict:
    """The paper's figure beside this run's value for the same quantity (None if the step did not produce it)."""
    path = out / reference.step / "metrics.json"
    value = json.loads(path.read_text()) if path.exists() else None
    for part in reference.metric.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return {**reference.model_dump(), "ours": value}
