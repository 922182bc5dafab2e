"""``docs/deviations.md``: every place cxrlens does not do exactly what a paper did, in one generated table.

Three sources, so the table cannot drift from what runs:

* :data:`LIBRARY_DEVIATIONS` - choices made in the code for every experiment (each names
  the module that makes it);
* every config field whose description says the paper does not give its value
  ("not given in paper 001") - the default is our choice;
* the ``deviations:`` of every experiment config under ``configs/``.

``make docs`` (``python -m cxrlens.deviations docs/deviations.md``) writes the file; a
test fails when the committed file differs from what this module generates.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from cxrlens import config
from cxrlens.experiment import load_experiment
from cxrlens.paths import bundled_configs


@dataclass(frozen=True)
class LibraryDeviation:
    paper: str
    topic: str
    theirs: str
    ours: str
    why: str
    where: str


LIBRARY_DEVIATIONS: tuple[LibraryDeviation, ...] = (
    LibraryDeviation(
        "000", "CAM loss ReLU", "eq. 2 + 6: sigmoid of the ReLU'd Grad-CAM against the box mask",
        "no ReLU before the sigmoid (cam_relu: false; true gives the literal form)",
        "after a ReLU the sigmoid is at least 0.5, pixels outside the boxes can never score below log 2 and the loss "
        "stalls (measured flat at 0.693 over 20 steps on the real boxed images, 0.69 -> 0.42 without)",
        "cxrlens.train.cam_loss"),
    LibraryDeviation(
        "000", "box threshold", "'threshold pixels having a value less than 127 in the Grad-CAM output'",
        "each Grad-CAM min-max scaled to 0..255, pixels at or above 127 kept, OpenCV outer contours, bounding "
        "rectangles", "the paper does not say how its Grad-CAM reaches 0..255; min-max is what its code base "
        "(pytorch-grad-cam) does", "cxrlens.explain.boxes"),
    LibraryDeviation(
        "000", "dataset mean and std", "'normalized with the dataset mean and standard deviation'",
        "mean and std of the training images' pixels, measured on at most 2,000 of them drawn with the seed "
        "(intensity_stats: training-images)", "2,000 images pin the mean and std to the third decimal; the paper "
        "does not say which images it measured", "cxrlens.data.preprocess"),
    LibraryDeviation(
        "000", "fine-tuning affine", "'random affine transformations with values similar to those of the target "
        "network and p = 0.5'", "the BYOL target view's affine (rotation +-15 degrees, shift 15 %, scale 0.85-1.15) "
        "with p = 0.5", "the paper gives no values for its target network", "cxrlens.data.transforms"),
    LibraryDeviation(
        "all", "classification threshold", "accuracy, sensitivity, specificity and F1 without a stated threshold",
        "probability 0.5, beside AUROC and AUPRC, with paired bootstrap 95 % CIs",
        "a fixed threshold picked on no test image", "cxrlens.evaluate.classification"),
    LibraryDeviation(
        "all", "resizing", "1024 x 1024 NIH images downsampled (paper 004: with skimage; others silent)",
        "OpenCV area resampling of the whole image to the square cache side (squash; pad optional)",
        "area resampling is the standard anti-aliased downsampling; the papers do not say more",
        "cxrlens.data.preprocess"),
    LibraryDeviation(
        "all", "ImageNet weights on radiographs", "3-channel ImageNet networks fed the grey image three times "
        "(paper 003: 256 x 256 x 3 with ImageNet's per-channel mean and std)",
        "1-channel input: the first layer's ImageNet weights summed over RGB (timm / torchvision adaptation); paper "
        "003's configs normalise with ImageNet's grey mean 0.449 and std 0.226",
        "the same function on a grey image with a third of the first layer's work", "cxrlens.models.backbones"),
    LibraryDeviation(
        "003", "box threshold Q", "'a constant threshold Q = 0.7' on heatmaps scaled to [0, 1]",
        "pixels at or above 0.7 x the map's maximum (box_rule: relative)",
        "the same pixels for a map whose minimum is 0, as ReLU'd class maps are; defined for any map",
        "cxrlens.explain.boxes"),
)
"""Choices the code makes for every experiment of a paper."""

_SILENT = re.compile(r"\s*\((?:k )?not (?:given|in) (?:in )?paper (\d{3})(?:; ([^()]*))?\)")


def silent_defaults() -> list[LibraryDeviation]:
    """Config fields whose value the paper does not give: our default is the choice."""
    rows = []
    for name in sorted(vars(config)):
        section = getattr(config, name)
        if not (isinstance(section, type) and issubclass(section, BaseModel) and section.__module__ == config.__name__):
            continue
        for field, info in section.model_fields.items():
            description = info.description or ""
            found = _SILENT.search(description)
            if found:
                what = _SILENT.sub("", description)
                rows.append(LibraryDeviation(found.group(1), f"{section.__name__}.{field}", "not given",
                                             f"{what}: {info.default!r}", found.group(2) or "the paper is silent",
                                             "cxrlens.config"))
    return rows


def render(configs: Iterable[Path]) -> str:
    """The markdown of docs/deviations.md."""
    lines = ["# Deviations from the papers", "",
             "Generated by `make docs` (`python -m cxrlens.deviations docs/deviations.md`) from the code and the "
             "configs under `configs/`; a test fails when this file is out of date. Everything not listed here "
             "follows the paper; the papers' protocols themselves (official split lists, held-out boxes, validation "
             "shares, tasks) are config fields, documented in each config file.", "",
             "## Everywhere (the code)", "",
             "| paper | what | the paper | cxrlens | why | where |", "|---|---|---|---|---|---|"]
    for row in [*LIBRARY_DEVIATIONS, *silent_defaults()]:
        lines.append(f"| {row.paper} | {_cell(row.topic)} | {_cell(row.theirs)} | {_cell(row.ours)} | "
                     f"{_cell(row.why)} | `{row.where}` |")
    lines += ["", "## Per experiment (`configs/*.yaml`)", "",
              "| paper | config | what | the paper | cxrlens | why |", "|---|---|---|---|---|---|"]
    for path in sorted(configs):
        experiment = load_experiment(path)
        for deviation in experiment.deviations:
            lines.append(f"| {experiment.paper} | `{path.name}` | {_cell(deviation.topic)} | {_cell(deviation.paper)} | "
                         f"{_cell(deviation.ours)} | {_cell(deviation.why)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


if __name__ == "__main__":
    page = render(bundled_configs())
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(page)
    else:
        sys.stdout.write(page)
