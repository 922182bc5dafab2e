"""``cxrlens card CKPT``: a Hugging Face-style model card (YAML front matter + Markdown) for a classifier.

What the card says comes only from files: the checkpoint (architecture, parameter count,
input, normalisation, classes, operating thresholds and the rule that chose them, the data
provenance of every image it trained or validated on), its run folder's ``config.yaml`` when
the checkpoint sits in ``RUN/checkpoints/`` (the training settings and where they ran), and
the evaluations given (``metrics.json`` of ``cxrlens evaluate``: metrics with their 95 %
CIs beside the raw-pixel floor and, for boxes, beside the location prior, with the verdict
of each claim). Nothing is looked up or assumed: where a fact is missing the card says it
is unknown. The front matter's ``model-index`` carries each evaluation's mean AUROC so that
model hubs can index it; the limitations are derived from the same facts (training size,
input size, CPU training, claims not shown, no external evaluation).

``cxrlens evaluate`` writes the card of the evaluated checkpoint with that evaluation into
its run folder (``model_card.md``, linked from the report), and ``cxrlens export --onnx``
ships the checkpoint's card beside the ONNX file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from cxrlens import __version__
from cxrlens.checkpoints import ClassifierCheckpoint
from cxrlens.models import count_parameters
from cxrlens.models.loading import load_classifier

CARD_NAME = "model_card.md"
_CLAIM_STATUS = {"not shown": "its 95 % CI includes zero", "worse": "its 95 % CI is below zero"}
INTENDED_USE = (
    "Research on chest X-ray classification and on how well heatmaps locate findings: comparing methods, "
    "reproducing papers, and studying failure modes. Every output is a research output.")
OUT_OF_SCOPE = (
    "Diagnosis, triage, screening or any other clinical decision about a patient. This model is not a medical "
    "device, has not been validated prospectively or on data from other hospitals, and its heatmaps show where the "
    "network looked, not where a finding is.")


@dataclass(frozen=True)
class Evaluation:
    """One ``cxrlens evaluate`` folder's ``metrics.json`` and where it is."""

    folder: Path
    metrics: dict

    @classmethod
    def read(cls, folder: str | Path) -> Evaluation:
        path = Path(folder) / "metrics.json"
        try:
            return cls(Path(folder), json.loads(path.read_text()))
        except OSError as error:
            raise ValueError(f"{path}: cannot be read ({error.strerror}); is {folder} a cxrlens evaluation?") from None
        except ValueError:
            raise ValueError(f"{path}: not valid JSON; is {folder} a finished cxrlens evaluation?") from None


def model_card(checkpoint: str | Path, evaluations: Sequence[Evaluation] = (),
               weights_file: str | Path | None = None) -> str:
    """The card of ``checkpoint`` (a classifier checkpoint, or ``xrv:<name>`` with its ``weights_file``) with
    ``evaluations`` (see the module docstring)."""
    loaded = load_classifier(checkpoint, weights_file)
    run_config = _run_config(checkpoint)
    state = loaded.checkpoint
    sections = [
        _front_matter(checkpoint, state, evaluations),
        f"# Model card: {Path(str(checkpoint)).name}\n\nWritten by cxrlens {__version__} from the checkpoint"
        + (", its run folder's config.yaml" if run_config else "")
        + (f" and {len(evaluations)} evaluation(s)" if evaluations else "") + ". Every number below is read from "
        "those files.",
        _details(loaded.model, state, checkpoint),
        _training_data(state),
        _training_procedure(run_config),
        *(_evaluation(evaluation) for evaluation in evaluations),
        _validation(state) if not evaluations else "",
        _thresholds(state),
        f"## Intended use\n\n{INTENDED_USE}\n\n### Out of scope\n\n{OUT_OF_SCOPE}",
        _limitations(state, run_config, evaluations),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def write_model_card(checkpoint: str | Path, out: str | Path, evaluations: Sequence[Evaluation] = (),
                     weights_file: str | Path | None = None) -> Path:
    """Write :func:`model_card` to ``out`` and return it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(model_card(checkpoint, evaluations, weights_file), errors="backslashreplace")
    return out


def default_card_path(path: str | Path) -> Path:
    """``best.ckpt`` or ``best.onnx`` -> ``best.card.md`` beside it."""
    return Path(path).with_suffix(".card.md")


def _run_config(checkpoint: str | Path) -> dict:
    """The training run's ``config.yaml`` when ``checkpoint`` sits in ``RUN/checkpoints/``, else ``{}``."""
    if str(checkpoint).startswith("xrv:"):
        return {}
    path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _datasets(state: ClassifierCheckpoint) -> list[str]:
    return sorted({entry.dataset for entry in state.provenance})


def _front_matter(checkpoint: str | Path, state: ClassifierCheckpoint, evaluations: Sequence[Evaluation]) -> str:
    results = []
    for evaluation in evaluations:
        metrics = evaluation.metrics
        values = [{"type": "roc_auc", "name": "mean AUROC", "value": round(metrics["classification_mean"]["auc"], 4)}]
        floor = (metrics.get("floor") or {}).get("mean")
        if floor:
            values.append({"type": "roc_auc", "name": "mean AUROC of the raw-pixel floor",
                           "value": round(floor["floor"], 4)})
        results.append({"task": {"type": "image-classification", "name": "multi-label chest X-ray findings"},
                        "dataset": {"name": Path(metrics["cache"]).name, "type": "chest-x-ray",
                                    "split": metrics["split"]},
                        "metrics": values})
    matter = {"library_name": "cxrlens", "pipeline_tag": "image-classification", "license": "other",
              "tags": ["chest-x-ray", "radiology", "multi-label-classification", "explainability", "cxrlens"],
              "datasets": _datasets(state), "metrics": ["roc_auc"],
              "model-index": [{"name": Path(str(checkpoint)).name, "results": results}]}
    return "---\n" + yaml.safe_dump(matter, sort_keys=False, allow_unicode=True) + "---"


def _details(model: object, state: ClassifierCheckpoint, checkpoint: str | Path) -> str:
    network = state.network
    rows = [("Architecture", f"{network.arch}, backbone {network.backbone}, pooling {network.pooling}, head "
                             f"{network.head}"),
            ("Parameters", f"{count_parameters(model):,}"),
            ("Input", f"{network.in_chans} channel(s), {state.input.size} x {state.input.size} px, images fitted by "
                      f"{state.input.fit}"),
            ("Normalisation", f"mean {state.normalisation.mean:.4f}, std {state.normalisation.std:.4f}"),
            ("Findings", f"{len(state.classes)}: {', '.join(state.classes)}"),
            ("Checkpoint", f"{checkpoint}, taken after epoch {state.epoch}")]
    if state.origin:
        rows.append(("Starting weights", state.origin))
    return "## Model details\n\n" + _table(("", ""), rows)


def _training_data(state: ClassifierCheckpoint) -> str:
    if not state.provenance:
        return ("## Training data\n\nUnknown: the checkpoint records no images (weights trained outside cxrlens"
                + (f": {state.origin}" if state.origin else "") + ").")
    rows = []
    for entry in state.provenance:
        for role in sorted(entry.images):
            rows.append((entry.dataset, role, f"{len(entry.images[role]):,}",
                         f"{len(entry.patients.get(role, [])):,}", f"`{entry.cache}`",
                         ", ".join(f"{key} {value}" for key, value in entry.split.items() if value is not None)))
    return ("## Training data\n\nEvery image the weights saw, by role (images and patients are recorded as hashed "
            "ids, so an evaluation can refuse the ones a model trained on).\n\n"
            + _table(("dataset", "role", "images", "patients", "prepared cache", "split"), rows))


def _training_procedure(run_config: dict) -> str:
    if not run_config:
        return "## Training procedure\n\nUnknown: no run folder config.yaml next to the checkpoint."
    shown = {key: run_config[key] for key in ("model", "train", "split", "label_fraction", "trained_on")
             if key in run_config}
    return ("## Training procedure\n\nThe run's settings (its `config.yaml`):\n\n```yaml\n"
            + yaml.safe_dump(shown, sort_keys=False) + "```")


def _ci(entry: dict) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _evaluation(evaluation: Evaluation) -> str:
    metrics = evaluation.metrics
    floor = metrics.get("floor") or {}
    lines = [f"## Evaluation: {Path(metrics['cache']).name}, {metrics['split']} split",
             f"{metrics['images']:,} images of `{metrics['cache']}` (folder `{evaluation.folder}`); 95 % CIs from "
             "bootstraps over whole patients. The raw-pixel floor is a class-balanced logistic regression "
             "on 32 x 32 pixels fitted on the model's own training images: a model that does not beat it has not "
             "shown it learned the findings."]
    claims = metrics.get("verdict", [])
    if claims:
        lines.append(_table(("claim", "status", "difference [95 % CI]"),
                            [(claim["claim"], claim["status"] + (f" ({claim['untested']})" if claim.get("untested")
                                                                 else ""),
                              _ci(claim["difference"]) if claim.get("difference") else "-") for claim in claims]))
    findings = floor.get("findings", {})
    rows = []
    for name, entry in metrics["classification"].items():
        if "skipped" in entry:
            rows.append((name, f"skipped: {entry['skipped']}", "", "", "", ""))
            continue
        beside = findings.get(name)
        rows.append((name, _ci(entry["auc"]), f"{beside['floor']:.3f}" if beside else "-",
                     _ci(beside["difference"]) if beside else "-", f"{entry['threshold']:.3f}",
                     f"{entry['sen']['value']:.3f} / {entry['spe']['value']:.3f}"))
    if floor.get("mean"):
        mean = floor["mean"]
        rows.append(("**mean**", f"{mean['model']:.3f}", f"{mean['floor']:.3f}", _ci(mean["difference"]), "", ""))
    lines.append(_table(("finding", "AUROC [95 % CI]", "floor AUROC", "model - floor", "threshold",
                         "sensitivity / specificity"), rows))
    if "skipped" in floor:
        lines.append(f"Raw-pixel floor: not fitted ({floor['skipped']}).")
    localization = metrics.get("localization") or {}
    comparison = localization.get("comparison")
    if comparison:
        lines.append(f"Heatmaps ({metrics['cam']}) against the radiologists' boxes, beside the image-blind location "
                     "prior (the mean training box mask):")
        lines.append(_table(("metric", "model", "location prior", "model - prior"),
                            [(name, _ci(entry["model"]), _ci(entry["prior"]), _ci(entry["difference"]))
                             for name, entry in comparison.items() if name in ("iou", "acc@0.1", "acc@0.5", "dice")]))
    return "\n\n".join(lines)


def _validation(state: ClassifierCheckpoint) -> str:
    if not state.metrics:
        return "## Evaluation\n\nNone given (`cxrlens card CKPT --evaluation RUN` adds an evaluation's results)."
    return ("## Evaluation\n\nNo held-out evaluation given; the checkpoint's own validation metrics (the split it "
            "was chosen on, so optimistic):\n\n"
            + _table(("metric", "value"), [(name, f"{value:.4f}") for name, value in state.metrics.items()]))


def _thresholds(state: ClassifierCheckpoint) -> str:
    rule = state.threshold_rule or "none chosen: every finding uses 0.5"
    rows = [(name, f"{state.threshold(name):.3f}") for name in state.classes]
    return f"## Operating thresholds\n\nChosen on the validation split by: {rule}.\n\n" + _table(("finding", "threshold"),
                                                                                                 rows)


def _limitations(state: ClassifierCheckpoint, run_config: dict, evaluations: Sequence[Evaluation]) -> str:
    notes = []
    trained = sum(len(entry.images.get("train", ())) for entry in state.provenance)
    if trained:
        where = run_config.get("trained_on", "")
        notes.append(f"Trained on {trained:,} images at {state.input.size} px"
                     + (" on a CPU" if where.startswith("cpu") else (f" on {where}" if where else ""))
                     + "; the papers it implements train on tens of thousands of images at 224-512 px, so its "
                       "numbers are not theirs.")
    for evaluation in evaluations:
        for claim in evaluation.metrics.get("verdict", []):
            if claim["status"] != "pass":
                notes.append(f"{Path(evaluation.metrics['cache']).name}: \"{claim['claim']}\" was "
                             f"{claim['status']} ({_CLAIM_STATUS.get(claim['status'], claim.get('untested', ''))}).")
    if not evaluations:
        notes.append("No held-out evaluation is part of this card.")
    notes.append("Evaluated only on data from the same public sources it was trained on; no external or "
                 "prospective validation.")
    notes.append("Labels of public chest X-ray sets are mined from reports by NLP and are noisy; boxes exist for "
                 "few images and findings.")
    return "## Limitations\n\n" + "\n".join(f"- {note}" for note in notes)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: object) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
