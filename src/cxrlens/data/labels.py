"""One name per finding across datasets (label harmonisation, as TorchXRayVision's ``relabel_dataset``).

Each public dataset spells some findings its own way. :data:`SYNONYMS` maps a dataset's
name to the canonical one, which is NIH ChestX-ray14's where NIH has the finding:

========================  ==========================  =====================================
dataset name              canonical name              datasets
========================  ==========================  =====================================
Pleural Effusion          Effusion                    CheXpert (NIH: Effusion)
Infiltrate                Infiltration                NIH's box file (labels: Infiltration)
Covid-19, COVID19         COVID-19                    covid-chestxray-dataset, COVIDGR
========================  ==========================  =====================================

Findings with the same name in several datasets (Atelectasis, Cardiomegaly, Consolidation,
Edema, Pneumonia, Pneumothorax) need no entry. Deliberately *not* merged, because the
labels do not mean the same thing: CheXpert's "Lung Lesion" (a mass *or* a nodule, or
other lesions) and NIH's Mass and Nodule; CheXpert's "Lung Opacity" and NIH's Infiltration;
CheXpert's "Pleural Other" and NIH's Pleural_Thickening; "No Finding". A model and a
dataset are compared on the canonical names they share; :func:`match_classes` also lists
the ones that cannot be scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SYNONYMS: dict[str, str] = {
    "Pleural Effusion": "Effusion",
    "Infiltrate": "Infiltration",
    "Covid-19": "COVID-19",
    "COVID19": "COVID-19",
}


def canonical(name: str) -> str:
    """The canonical name of a dataset's finding name (itself when it has no synonym)."""
    return SYNONYMS.get(name, name)


@dataclass(frozen=True)
class ClassMatch:
    """Which model outputs score which dataset labels: ``pairs`` of (canonical name, model column,
    data column); ``model_only`` / ``data_only``: names (as each spells them) without a counterpart."""

    pairs: tuple[tuple[str, int, int], ...]
    model_only: tuple[str, ...]
    data_only: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.pairs]

    def model_column(self, name: str) -> int:
        return next(column for canonical_name, column, _ in self.pairs if canonical_name == canonical(name))


def match_classes(model: Sequence[str], data: Sequence[str]) -> ClassMatch:
    """Pair a model's classes with a dataset's through their canonical names, in the dataset's order."""
    model_columns = {canonical(name): column for column, name in enumerate(model)}
    pairs = tuple((canonical(name), model_columns[canonical(name)], column) for column, name in enumerate(data)
                  if canonical(name) in model_columns)
    shared = {name for name, _, _ in pairs}
    return ClassMatch(pairs, tuple(name for name in model if canonical(name) not in shared),
                      tuple(name for name in data if canonical(name) not in shared))
