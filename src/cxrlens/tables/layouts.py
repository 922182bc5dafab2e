"""The shape of every table and figure of the five papers: their rows, columns and units as printed.

A :class:`TableLayout` is a paper's table as it prints it (label, caption, rows, columns, whether
its numbers are percentages). Its cells are filled by the ``references`` of the experiment
configs (:class:`cxrlens.experiment.Reference`: table, row, column, the paper's value exactly as
printed, and the step and metric of ours), so one table may gather several experiments (paper
000's Table II has a column per config). ``source="text"`` marks numbers the paper gives only
in its running text (``quote`` is that sentence, and the test of the references checks each
value against it); ``source="none"`` a table of ours only, for what the paper shows only as pictures or
leaves out. A :class:`FigureLayout` names a figure and the steps whose outputs draw it
(:mod:`cxrlens.tables.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FigureKind = Literal["pr-iso-f1", "cam-grid", "accuracy-by-epoch", "tsne", "probe-gradcam"]


@dataclass(frozen=True)
class TableLayout:
    """One table of a paper, in its own layout."""

    paper: str
    label: str
    caption: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    percent: bool = False
    """The paper prints percentages (ours, in [0, 1], are shown x 100)."""
    source: Literal["table", "text", "none"] = "table"
    """Where the paper gives these numbers: a printed table, its running text, or nowhere (ours only: what it shows
    only as pictures, or thresholds it leaves out)."""
    quote: str = ""
    """For ``source="text"``: the paper's sentence that gives the numbers."""


@dataclass(frozen=True)
class Panel:
    """One panel (or curve) of a figure: a step of a bundled experiment, and its title."""

    experiment: str
    step: str
    title: str


@dataclass(frozen=True)
class FigureLayout:
    """One figure of a paper: its label, caption, how it is drawn and from which steps."""

    paper: str
    label: str
    caption: str
    kind: FigureKind
    panels: tuple[Panel, ...]


_MODELS_000 = ("Baseline", "XRV (SOTA)", "XRV + CAM Loss", "SSL + FT", "SSL + CAM Loss + FT (ours)")
_CAM_METHODS = ("CAM", "Grad-CAM", "Grad-CAM++", "Score-CAM")
_BOXED_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                   "Pneumothorax")
_METHODS_003 = ("Standard ResNet50", "MultiRes-ResNet50", "MultiRes-ResNet50 (with PCM)", "Standard EfficientNetB4",
                "MultiRes-EfficientNetB4", "MultiRes-EfficientNetB4 (with PCM)")
_NIH_14 = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
           "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural thickening", "Hernia")
_NIH_14_004 = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Nodule", "Mass", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural thickening", "Hernia")
_METRICS_002 = ("ACC", "AUC", "SEN", "SPE", "F1")

TABLES: tuple[TableLayout, ...] = (
    TableLayout("000", "Table II", "Multi-label classification AUROC on CheXpert test set (values in parenthesis "
                "represent the number of samples positive for the class)",
                ("No Finding (38)", "Enlarged Cardiomediastinum (109)", "Cardiomegaly (68)", "Lung Opacity (126)",
                 "Lung Lesion (1)", "Edema (45)", "Consolidation (33)", "Pneumonia (8)", "Atelectasis (80)",
                 "Pneumothorax (8)", "Pleural Effusion (67)", "Pleural Other (1)", "Fracture (0)",
                 "Support Devices (107)", "Average AUROC"), _MODELS_000),
    TableLayout("000", "Table III", "Multi-label classification AUROC on NIH CXR test set, classes common with "
                "CheXpert (values in parenthesis represent the number of samples positive for the class)",
                ("Atelectasis (3279)", "Cardiomegaly (1069)", "Consolidation (1815)", "Edema (925)",
                 "Pneumonia (555)", "Effusion (4658)", "Pneumothorax (2665)", "Average AUROC"), _MODELS_000),
    TableLayout("000", "IoU (text)", "Average IoU of Grad-CAM boxes with the radiologists' boxes, NIH CXR test set "
                "(Sec. IV, Fig. 4)", ("Average IoU",), ("XRV (SOTA)", "SSL + CAM Loss + FT (ours)"), source="text",
                quote="the XRV model achieves an average IoU of 0.61 compared to our SSL + CAM Loss + FT model's "
                      "score of 0.92"),
    TableLayout("000", "AP (text)", "Average precision on the CheXpert test set (Fig. 5); ours: the mean of the "
                "findings' average precisions (Fig. 5's legend: micro-averaged over findings)", ("Average precision",),
                _MODELS_000, source="text",
                quote="The SSL + CAM Loss + FT model achieves the greatest AP score (0.68)"),
    TableLayout("000", "Fig. 3 (IoU)", "CAM methods compared on one model: IoU with the radiologists' boxes per "
                "finding (the paper compares them only as pictures, Fig. 3)", (*_BOXED_FINDINGS, "Mean"),
                _CAM_METHODS, source="none"),
    TableLayout("001", "Accuracy (text)", "Normal vs pneumonia accuracy per backbone and downstream set (Sec. 5)",
                ("Supervised transfer learning, ResNet50", "Supervised transfer learning, ResNet101",
                 "Self-supervised (SimCLR), ResNet50", "Self-supervised (SimCLR), ResNet101"),
                ("Cell dataset", "NIH dataset"), percent=True, source="text",
                quote="The models ResNet50 and ResNet101 trained using supervised mechanism produced an accuracy of "
                      "82% and 86% on cell dataset and for the NIH dataset it was 85% and 90%. But, the models "
                      "trained using self-supervised learning produced even better accuracy on both datasets with "
                      "91% and 94% on cell and 86% and 92% on NIH"),
    TableLayout("002", "Table III", "Prediction performance of the proposed approach on four CXR datasets, by "
                "fraction of the pretext dataset (linear evaluation)", ("Cell", "C19-Cohen", "COVIDGR",
                                                                        "ChestX-ray-14"),
                (*(f"{fraction} {metric}" for fraction in ("1%", "10%", "100%") for metric in _METRICS_002),
                 "Published result ACC/AUC"), percent=True),
    TableLayout("003", "Table 1", "Classification AUCs of all 14 diseases in the Chest x-ray 14 test set",
                (*_NIH_14, "Mean"),
                ("Standard ResNet50 [1]", "Multi-resolution ResNet50 [19]", "Mobile-NetV2 [25]",
                 "Standard Resnet50 (our version)", "MultiRes-ResNet50 (ours)",
                 "Standard Efficient-netb4 (our version)", "MultiRes-EfficientNetB4 (ours)")),
    TableLayout("003", "Table 2", "Localization accuracies of the eight diseases which have bounding box "
                "annotations in the ChestX-ray14 test set, IoBB = 0.1", _METHODS_003, _BOXED_FINDINGS),
    TableLayout("003", "Table 2 (every T(IoBB))", "Localization accuracy, mean over the eight boxed findings, at every "
                "T(IoBB) (the paper prints T(IoBB) = 0.1 only)", _METHODS_003,
                tuple(f"T(IoBB) = {t}" for t in ("0.1", "0.25", "0.5", "0.75")), source="none"),
    TableLayout("003", "Table 3", "Average false positive numbers of the eight diseases which have bounding box "
                "annotations in the ChestX-ray14 test set (T(IoBB) = 0.1)", _METHODS_003, _BOXED_FINDINGS),
    TableLayout("003", "Table 4", "Inference times for various models (paper: one 256 x 256 x 3 image on a P100)",
                ("Standard ResNet50", "MultiRes-ResNet50", "Standard EfficientNetB4", "MultiRes-EfficientNetB4"),
                ("Inference time (ms)", "Number of parameters")),
    TableLayout("004", "Table 2", "Localization accuracy at T(IoBB) = 0.5 by binarization threshold tau, for three "
                "choices of r0 on three abnormalities ([3] gives one value per abnormality, tau unspecified; the paper "
                "prints it under the first tau)", ("r0 = 0", "r0 = 5", "r0 = 10", "[3]"),
                ("Pneumonia tau = 0.1", "Pneumonia tau = 0.4", "Nodule tau = 0.4", "Nodule tau = 0.8",
                 "Infiltration tau = 0.1", "Infiltration tau = 0.8")),
    TableLayout("004", "Table 3", "Abnormality classification (AUC) and localization (continuous DICE) on 14 "
                "abnormalities on NIH Chest X-ray test set", (*_NIH_14_004, "A.V.G."),
                ("AUC [3]", "AUC r0 = 0", "AUC r0 = 5", "AUC r0 = 10", "DICE r0 = 0", "DICE r0 = 5",
                 "DICE r0 = 10")),
)

FIGURES: tuple[FigureLayout, ...] = (
    FigureLayout("000", "Fig. 3", "Comparison of CAM outputs on the same NIH test images, radiologists' boxes in red",
                 "cam-grid", tuple(Panel("paper000-cam-methods", step, title) for step, title in
                                   zip(("cam", "gradcam", "gradcampp", "scorecam"), _CAM_METHODS))),
    FigureLayout("000", "Fig. 5", "Precision-recall curves of each model on the CheXpert test set (micro-averaged "
                 "over findings), with iso-F1 curves", "pr-iso-f1",
                 (Panel("paper000-baseline", "chexpert-test", "Baseline"),
                  Panel("paper000-xrv", "xrv-chexpert-test", "XRV (SOTA)"),
                  Panel("paper000-xrv", "xrv-camloss-chexpert-test", "XRV + CAM Loss"),
                  Panel("paper000-ssl-ft", "chexpert-test", "SSL + FT"),
                  Panel("paper000-ssl-camloss-ft", "chexpert-test", "SSL + CAM Loss + FT (ours)"))),
    FigureLayout("002", "Fig. 2", "Linear-evaluation accuracy per pretraining epoch on (b) Cell and (c) COVIDGR",
                 "accuracy-by-epoch", (Panel("paper002-simclr-linear", "linear-cell-100pct", "(b) Cell"),
                                       Panel("paper002-simclr-linear", "linear-covidgr-100pct", "(c) COVIDGR"))),
    FigureLayout("002", "Fig. 3", "t-SNE of the features of models from the 10th, 25th, 50th and 100th pretraining "
                 "epochs, Cell and COVIDGR", "tsne",
                 (Panel("paper002-simclr-linear", "linear-cell-100pct", "Cell"),
                  Panel("paper002-simclr-linear", "linear-covidgr-100pct", "COVIDGR"))),
    FigureLayout("002", "Fig. 4", "Grad-CAM of 6 Cell images of patients with pneumonia that the model calls "
                 "pneumonia", "probe-gradcam", (Panel("paper002-simclr-linear", "linear-cell-100pct", "Cell"),)),
)


def paper_tables(paper: str) -> list[TableLayout]:
    """The tables of ``paper`` ('003'), in the paper's order."""
    return [table for table in TABLES if table.paper == paper]


def paper_figures(paper: str) -> list[FigureLayout]:
    """The figures of ``paper`` drawn from its runs."""
    return [figure for figure in FIGURES if figure.paper == paper]
