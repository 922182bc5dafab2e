"""Experiments: named datasets and a chain of steps, run by ``cxrlens run CONFIG [--smoke]``.

An experiment YAML (``configs/``) names its datasets (reader + folders + cache size) and
lists steps, each a typed config of one command: ``pretrain``, ``train`` (supervised,
or fine-tuning when it names a pretraining step as ``encoder``), ``linear-eval``,
``refine`` and ``evaluate`` (which also writes the HTML report). Steps refer to earlier
steps by name. Everything a step writes goes to ``RUNS/<experiment>/<step>/``; prepared
caches go to ``CACHE/`` and are shared between experiments (fingerprinted, never
clobbered).

Re-running resumes: a finished step (``step.json`` written) is skipped, an interrupted
one continues from its last checkpoint. ``--smoke`` runs the same graph tiny: sample
sets stand in for the full datasets, images are ``smoke.size`` px, backbones
``smoke.backbone`` with random init, one short epoch per training step.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field

from cxrlens.config import (LinearEvalConfig, ModelConfig, PretrainConfig, RefineConfig, Strict, TrainConfig,
                            load_yaml)
from cxrlens.data.cache import prepare_cache_with_bar
from cxrlens.data.records import CXRDataset
from cxrlens.data.registry import open_dataset, open_sample


class DataSpec(Strict):
    """A dataset and how it is cached."""

    dataset: str = Field(description="reader (nih, chexpert, kermany, cohen, folder) or 'sample'")
    roots: list[str] = Field(default_factory=list, description="dataset folders; for 'sample' the sample set names")
    size: int = Field(256, ge=16, description="cache side in pixels (papers: 256; paper 004: 512)")
    fit: Literal["squash", "pad"] = "squash"
    limit: int | None = Field(None, ge=1, description="use a seeded random subset of this many images (smoke runs)")
    options: dict[str, str | float | int | bool | list[str]] = Field(
        default_factory=dict, description="reader options, e.g. chexpert uncertain: zeros; folder csv, label_columns")
    smoke: list[str] = Field(default_factory=lambda: ["nih-sample"],
                             description="sample sets standing in for this dataset under --smoke")


class PretrainStep(Strict):
    kind: Literal["pretrain"]
    name: str
    data: list[str] = Field(description="dataset keys whose images (labels unused) are pooled")
    config: PretrainConfig = Field(default_factory=PretrainConfig)


class TrainStep(Strict):
    kind: Literal["train"]
    name: str
    data: str
    encoder: str | None = Field(None, description="a pretrain step to fine-tune from (None: supervised baseline)")
    freeze: Literal["none", "last-blocks", "all"] = "none"
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    label_fraction: float = Field(1.0, gt=0, le=1)
    official_splits: bool = True


class LinearEvalStep(Strict):
    kind: Literal["linear-eval"]
    name: str
    data: str
    encoder: str | None = Field(None, description="a pretrain step (None: random-init baseline of 'backbone')")
    backbone: str = "resnet50"
    config: LinearEvalConfig = Field(default_factory=LinearEvalConfig)


class RefineStep(Strict):
    kind: Literal["refine"]
    name: str
    data: str
    checkpoint: str = Field(description="a train step whose classifier the PCM refines")
    config: RefineConfig = Field(default_factory=RefineConfig)
    official_splits: bool = True


class EvaluateStep(Strict):
    kind: Literal["evaluate"]
    name: str
    data: str
    checkpoint: str = Field(description="a train or refine step")
    split: Literal["train", "val", "test", "all"] = "test"
    cam: Literal["cam", "gradcam", "gradcampp", "scorecam"] = "gradcam"
    box_rule: Literal["relative", "absolute"] = "relative"
    threshold: float = Field(0.7, description="Q of the relative rule (paper 003: 0.7) or 0..255 level (paper 000: 127)")
    refine: bool = False
    official_splits: bool = True
    bootstrap: int = Field(1000, ge=0)
    max_boxed_images: int | None = Field(None, ge=1, description="localize only the first N boxed images (quick runs)")


Step = Annotated[Union[PretrainStep, TrainStep, LinearEvalStep, RefineStep, EvaluateStep], Field(discriminator="kind")]


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


class Reference(Strict):
    """A paper's figure, and where the same quantity lands in this experiment's results."""

    table: str = Field(description="e.g. 'paper 003 Table 2, MultiRes-ResNet50 (with PCM), mean Lacc T=0.1'")
    value: str
    step: str
    metric: str = Field(description="path into the step's metrics.json, e.g. localization/model/mean/acc@0.1")


class Experiment(Strict):
    name: str
    paper: str
    description: str
    data: dict[str, DataSpec]
    steps: list[Step]
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    references: list[Reference] = Field(default_factory=list)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML; step references are checked before anything runs."""
    experiment = Experiment.model_validate(load_yaml(path))
    seen: dict[str, str] = {}
    for step in experiment.steps:
        if step.name in seen:
            raise ValueError(f"{path}: step name {step.name!r} is used twice")
        for key in ([step.data] if isinstance(step.data, str) else step.data):
            if key not in experiment.data:
                raise ValueError(f"{path}: step {step.name!r} uses unknown data {key!r}")
        wanted = {"encoder": "pretrain", "checkpoint": "train|refine"}
        for field, kinds in wanted.items():
            target = getattr(step, field, None)
            if target is not None and seen.get(target) not in kinds.split("|"):
                raise ValueError(f"{path}: step {step.name!r} needs {field} = an earlier {kinds} step, not {target!r}")
        seen[step.name] = step.kind
    return experiment


def smoke_version(experiment: Experiment) -> Experiment:
    """The same graph, tiny: sample data, small images, small random-init backbones, short epochs."""
    s = experiment.smoke
    data = {key: spec.model_copy(update={"dataset": "sample", "roots": spec.smoke, "size": s.size, "options": {},
                                         "limit": s.max_images})
            for key, spec in experiment.data.items()}

    def train(config: TrainConfig) -> TrainConfig:
        return config.model_copy(update={"epochs": s.epochs, "max_steps_per_epoch": s.max_steps_per_epoch,
                                         "batch_size": s.batch_size, "accumulate": 1, "num_workers": 0,
                                         "keep_every": None, "early_stopping": None})

    def model(config: ModelConfig) -> ModelConfig:
        return config.model_copy(update={"backbone": s.backbone, "weights": None, "dense_width": 16,
                                         "dense_layers": 1, "dense_growth": 8})

    steps = []
    for step in experiment.steps:
        if isinstance(step, PretrainStep):
            config = step.config.model_copy(update={"encoder": model(step.config.encoder),
                                                    "train": train(step.config.train),
                                                    "boxed_per_batch": min(step.config.boxed_per_batch, 2),
                                                    "fraction": max(step.config.fraction, 0.1)})  # >= one batch
            steps.append(step.model_copy(update={"config": config}))
        elif isinstance(step, TrainStep):
            steps.append(step.model_copy(update={"model": model(step.model), "train": train(step.train),
                                                 "official_splits": False}))
        elif isinstance(step, LinearEvalStep):
            config = step.config.model_copy(update={"bootstrap": s.bootstrap, "folds": 2, "fractions": (1.0,),
                                                    "c_grid": (0.1, 1.0), "max_iter": 300})
            steps.append(step.model_copy(update={"config": config, "backbone": s.backbone}))
        elif isinstance(step, RefineStep):
            config = step.config.model_copy(update={"train": train(step.config.train)})
            steps.append(step.model_copy(update={"config": config, "official_splits": False}))
        else:  # sample sets may sit in one official split: draw the test split by patient, as training did
            steps.append(step.model_copy(update={"bootstrap": s.bootstrap, "official_splits": False,
                                                 "max_boxed_images": s.max_boxed_images}))
    return experiment.model_copy(update={"name": experiment.name + "-smoke", "data": data, "steps": steps})


def _cache_name(spec: DataSpec) -> str:
    roots = "+".join(Path(root).name for root in spec.roots) or "all"
    limit = f"-n{spec.limit}" if spec.limit else ""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{spec.dataset}-{roots}-{spec.size}-{spec.fit}{limit}")


def _with_device(config: TrainConfig, device: str | None) -> TrainConfig:
    return config.model_copy(update={"accelerator": device}) if device else config


def run_experiment(experiment: Experiment, runs_root: str | Path = "runs", cache_root: str | Path = "cache",
                   data_root: str | Path | None = None, device: str | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Run every step (skipping finished ones); returns and writes ``summary.json`` in the experiment folder."""
    from cxrlens.paths import find_data_root

    out = Path(runs_root) / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    root = find_data_root(data_root) if any(spec.dataset == "sample" for spec in experiment.data.values()) else None
    caches = {}
    for key, spec in experiment.data.items():
        if spec.dataset == "sample":
            if root is None:
                raise FileNotFoundError("no sample data root: pass --data-root or set $CXRLENS_DATA")
            dataset = open_sample(root, spec.roots)
        else:
            dataset = open_dataset(spec.dataset, spec.roots, **spec.options)
        if spec.limit and spec.limit < len(dataset.items):
            keep = sorted(np.random.default_rng(0).choice(len(dataset.items), spec.limit, replace=False))
            dataset = CXRDataset(dataset.classes, [dataset.items[i] for i in keep], dataset.problems, dataset.name)
        directory = Path(cache_root) / _cache_name(spec)
        prepare_cache_with_bar(dataset, directory, size=spec.size, fit=spec.fit)
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
            record = _run_step(step, folder, caches, outputs, resume, device)
            record["seconds"] = round(time.perf_counter() - started, 1)
            marker.write_text(json.dumps(record, indent=2))
        outputs[step.name] = Path(record["output"])
        results[step.name] = record
    summary = {"experiment": experiment.name, "paper": experiment.paper, "steps": results,
               "references": [_reference(reference, out) for reference in experiment.references]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_step(step: Step, folder: Path, caches: dict[str, Path], outputs: dict[str, Path], resume: bool,
              device: str | None) -> dict:
    if isinstance(step, PretrainStep):
        from cxrlens.ssl.pretrain import pretrain

        config = step.config.model_copy(update={"train": _with_device(step.config.train, device)})
        result = pretrain([caches[key] for key in step.data], folder, config, resume=resume, overwrite=not resume)
        return {"kind": step.kind, "output": result["encoder"], "final_loss": result["history"][-1]["train_loss"]}
    if isinstance(step, TrainStep):
        from cxrlens.train.finetune import finetune
        from cxrlens.train.supervised import train_supervised

        options = {"fraction": step.label_fraction, "use_official_splits": step.official_splits, "resume": resume,
                   "overwrite": not resume}
        train = _with_device(step.train, device)
        if step.encoder:
            result = finetune(caches[step.data], folder, outputs[step.encoder], step.model, train, step.freeze, **options)
        else:
            result = train_supervised(caches[step.data], folder, step.model, train, **options)
        return {"kind": step.kind, "output": str(folder / "checkpoints" / "best.ckpt"),
                "best_val_mean_auroc": result["best_val_mean_auroc"], "best_epoch": result["best_epoch"]}
    if isinstance(step, LinearEvalStep):
        from cxrlens.evaluate.linear_probe import run_linear_eval

        encoder = outputs[step.encoder] if step.encoder else None
        payload = run_linear_eval(caches[step.data], folder, encoder, step.config, backbone=step.backbone,
                                  device=device or "cpu", overwrite=True)
        return {"kind": step.kind, "output": str(folder / "metrics.json"), "mean_auc": payload["mean_auc"]}
    if isinstance(step, RefineStep):
        from cxrlens.train.seam import train_pcm

        config = step.config.model_copy(update={"train": _with_device(step.config.train, device)})
        result = train_pcm(outputs[step.checkpoint], caches[step.data], folder, config,
                           use_official_splits=step.official_splits, resume=resume, overwrite=not resume)
        return {"kind": step.kind, "output": result["refined"]}
    from cxrlens.evaluate.evaluation import evaluate_checkpoint
    from cxrlens.evaluate.localization import BoxRule
    from cxrlens.evaluate.report import write_report

    payload = evaluate_checkpoint(outputs[step.checkpoint], caches[step.data], folder, step.split, step.cam,
                                  BoxRule(step.box_rule, step.threshold), step.bootstrap, use_official_splits=step.official_splits,
                                  device=device or "cpu", refine=step.refine, max_boxed_images=step.max_boxed_images,
                                  overwrite=True)
    page = write_report(folder)
    localization = payload["localization"]
    return {"kind": step.kind, "output": str(folder / "metrics.json"), "report": str(page),
            "classification_mean": payload["classification_mean"],
            "localization": localization["comparison"] if localization else None}


def _reference(reference: Reference, out: Path) -> dict:
    """The paper's figure beside this run's value for the same quantity (None if the step did not produce it)."""
    path = out / reference.step / "metrics.json"
    value = json.loads(path.read_text()) if path.exists() else None
    for part in reference.metric.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return {**reference.model_dump(), "ours": value}
