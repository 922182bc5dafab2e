"""``cxrlens run CONFIG [--smoke] [--check]``: open an experiment's datasets, check it, prepare its caches,
run its steps.

Everything a step writes goes to ``RUNS/<experiment>/<step>/``; prepared caches go to
``CACHE/`` and are shared between experiments (fingerprinted, never clobbered). Before any
cache is prepared, :func:`check_experiment` plans every step on the datasets' own lists
(:meth:`cxrlens.experiment.Step.plan`): empty splits, a model scored on classes it does
not predict, and above all an evaluation that would score images or patients its model
trained or validated on are refused here, not discovered after days of training.
Re-running resumes: a finished step (``step.json`` written) is skipped, an interrupted one
continues from its last checkpoint. ``--smoke`` runs the same graph tiny: sample sets stand
in for the full datasets, images are ``smoke.size`` px, backbones ``smoke.backbone`` with
random init, one short epoch per training step.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cxrlens.checkpoints import CheckpointError, load_checkpoint
from cxrlens.data.cache import CacheMismatchError, PreparedCache, prepare_cache_with_bar
from cxrlens.data.provenance import digest
from cxrlens.data.records import CXRDataset
from cxrlens.data.registry import open_dataset, open_sample
from cxrlens.data.roles import draw_splits
from cxrlens.data.tasks import binary_task
from cxrlens.devices import DEFAULT_DEVICE
from cxrlens.experiment import DataSpec, Experiment, PlanContext, Reference, StepContext, StepPlan
from cxrlens.folders import claim_folder
from cxrlens.paths import find_data_root
from cxrlens.tables import write_experiment_page
from cxrlens.tables.runs import lookup, step_metrics


class ExperimentCheckError(ValueError):
    """An experiment would fail or score its models' own training images; the plans say where."""

    def __init__(self, plans: list[StepPlan]) -> None:
        self.plans = plans
        problems = [problem for plan in plans for problem in plan.problems]
        super().__init__(f"{len(problems)} problem(s) before anything ran: " + " | ".join(problems))


def _cache_name(spec: DataSpec) -> str:
    roots = "+".join(Path(root).name for root in spec.roots) or "all"
    limit = f"-n{spec.limit}" if spec.limit else ""
    task = f"-{spec.task.positive}-vs-healthy{'-matched' + str(spec.task.seed) if spec.task.matched else ''}" \
        if spec.task else ""
    options = "".join(f"-{key}={value}" for key, value in sorted(spec.options.items()) if not isinstance(value, list))
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", f"{spec.dataset}-{roots}{options}{task}-{spec.size}-{spec.fit}{limit}")


def open_data(spec: DataSpec, data_root: str | Path | None = None) -> CXRDataset:
    """The dataset ``spec`` names (a sample set under ``data_root``), its task carved out, its ``limit`` drawn."""
    if spec.dataset == "sample":
        root = find_data_root(data_root)
        if root is None:
            raise FileNotFoundError("no sample data root: pass --data-root or set $CXRLENS_DATA")
        dataset = open_sample(root, spec.roots)
    else:
        dataset = open_dataset(spec.dataset, spec.roots, **spec.options)
    if spec.task is not None:
        dataset = binary_task(dataset, spec.task)
    if spec.limit and spec.limit < len(dataset.items):
        keep = sorted(np.random.default_rng(0).choice(len(dataset.items), spec.limit, replace=False))
        dataset = CXRDataset(dataset.classes, [dataset.items[i] for i in keep], dataset.problems, dataset.name,
                             roots=dataset.roots)
    return dataset


def check_experiment(experiment: Experiment, datasets: dict[str, CXRDataset],
                     decoded: dict[str, np.ndarray] | None = None) -> list[StepPlan]:
    """Every step's plan on the opened ``datasets`` (only the ``decoded`` images of each, once caches exist);
    :class:`ExperimentCheckError` when any plan has a problem."""
    context = PlanContext(items={key: dataset.items for key, dataset in datasets.items()},
                          classes={key: dataset.classes for key, dataset in datasets.items()}, decoded=decoded)
    plans = []
    for step in experiment.steps:
        with split_warnings() as notes:
            plan = step.plan(context)
        plan.notes += notes
        plans.append(plan)
    if any(plan.problems for plan in plans):
        raise ExperimentCheckError(plans)
    return plans


def run_experiment(experiment: Experiment, runs_root: str | Path = "runs", cache_root: str | Path = "cache",
                   data_root: str | Path | None = None, device: str = DEFAULT_DEVICE,
                   log: Callable[[str], None] = print) -> dict:
    """Run every step (skipping finished ones) on ``device``; returns and writes ``summary.json``."""
    out = Path(runs_root) / experiment.name
    datasets = {key: open_data(spec, data_root) for key, spec in experiment.data.items()}
    check_experiment(experiment, datasets)  # before anything is prepared
    claim_folder(out, "experiment", [root for dataset in datasets.values() for root in dataset.roots])
    caches = {}
    for key, spec in experiment.data.items():
        directory = Path(cache_root) / _cache_name(spec)
        try:
            prepare_cache_with_bar(datasets[key], directory, size=spec.size, fit=spec.fit)
        except CacheMismatchError as error:
            raise CacheMismatchError(f"{error} (cxrlens run never replaces a cache: remove that folder, or give "
                                     "--cache another place)") from None
        caches[key] = directory
    plans = check_experiment(experiment, datasets, {key: PreparedCache(directory).ready_indices()
                                                    for key, directory in caches.items()})
    (out / "plan.json").write_text(json.dumps([vars(plan) for plan in plans], indent=2))
    for plan in plans:
        for note in plan.notes:
            log(f"{plan.name}: {note}")
    planned = {plan.name: plan for plan in plans}
    results: dict[str, dict] = {}
    outputs: dict[str, Path] = {}
    for number, step in enumerate(experiment.steps, 1):
        folder = out / step.name
        marker = folder / "step.json"
        if marker.exists():
            record = json.loads(marker.read_text())
            _same_images(planned[step.name], record, folder)
            log(f"[{number}/{len(experiment.steps)}] {step.name}: done earlier, skipped")
        else:
            resume = (folder / "checkpoints" / "last.ckpt").exists()
            log(f"[{number}/{len(experiment.steps)}] {step.name} ({step.kind})" + (" - resuming" if resume else ""))
            started = time.perf_counter()
            with split_warnings():  # the plan's notes, printed above, said it
                record = step.run(StepContext(folder, caches, outputs, resume, device))
            record["seconds"] = round(time.perf_counter() - started, 1)
            marker.write_text(json.dumps(record, indent=2))
        outputs[step.name] = Path(record["output"])
        results[step.name] = record
    summary = {"experiment": experiment.name, "config": experiment.config_name, "paper": experiment.paper,
               "scale": experiment.scale, "scale_description": experiment.scale_description, "steps": results,
               "references": [_reference(reference, out) for reference in experiment.references]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        log(f"the paper's tables and figures: {write_experiment_page(out)}")
    except (OSError, ValueError) as error:  # the runs are done; a page that cannot be drawn must not undo that
        log(f"the experiment's page was not written: {error}")
    return summary


class _Collected(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def split_warnings() -> Iterator[list[str]]:
    """The lines the split code warns (:func:`cxrlens.data.roles.draw_splits`) while this block runs, collected instead
    of printed: a step's plan shows them once as notes, not again each time the step draws its splits."""
    logger, lines = logging.getLogger(draw_splits.__module__), []
    handler, propagate = _Collected(lines), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _same_images(plan: StepPlan, record: dict, folder: Path) -> None:
    """A step finished earlier is reused only if its model learned from what the config now selects."""
    if not plan.data:
        return
    try:
        trained = digest(load_checkpoint(record["output"]).provenance)
    except CheckpointError as error:
        raise ValueError(f"{folder}: finished earlier, but {error}; remove that folder to run the step again") from None
    if trained != plan.data:
        raise ValueError(f"{folder}: finished earlier on other images than the config now selects (a split, fraction "
                         "or seed changed, or images failed to decode); remove that folder to run the step again")


def _reference(reference: Reference, out: Path) -> dict:
    """The paper's figure beside this run's value for the same quantity (None if the step did not produce it)."""
    if reference.step is None or reference.metric is None:
        return {**reference.model_dump(), "ours": None}
    return {**reference.model_dump(), "ours": lookup(step_metrics(out, reference.step), reference.metric)}
