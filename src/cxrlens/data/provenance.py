"""Record which images of a prepared cache a model learned from (:class:`cxrlens.checkpoints.DataProvenance`),
and find where an evaluation would score them again (:func:`overlap`).

An image's id is :func:`cxrlens.data.records.image_id` (patient, folder and file name: the
same wherever the dataset was unpacked); ids and patient ids are stored hashed
(:func:`hashed`), so a checkpoint can be checked against any cache's images without
carrying their names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrlens.checkpoints import DataProvenance
from cxrlens.data.cache import PreparedCache
from cxrlens.data.records import CXRItem


def hashed(values: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated 16-hex-digit SHA-256 prefixes of ``values``."""
    return sorted({hashlib.sha256(value.encode()).hexdigest()[:16] for value in values})


def role_hashes(items: Sequence[CXRItem], roles: Mapping[str, Sequence[int]]
                ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(role -> hashed image ids, role -> hashed patient ids) of the items at each role's indices."""
    return ({role: hashed(items[int(i)].image_id for i in indices) for role, indices in roles.items()},
            {role: hashed(items[int(i)].patient_id for i in indices) for role, indices in roles.items()})


def data_provenance(cache: PreparedCache, roles: Mapping[str, Sequence[int]],
                    split: Mapping[str, str | float | int | bool | None]) -> DataProvenance:
    """The provenance of ``roles`` (e.g. ``{"train": indices, "val": indices}``) of ``cache``."""
    images, patients = role_hashes(cache.items(), roles)
    return DataProvenance(cache=str(cache.directory), dataset=str(cache.index.get("dataset", "")),
                          fingerprint=str(cache.index.get("fingerprint", "")), split=dict(split), images=images,
                          patients=patients)


SUPERVISED_ROLES: tuple[str, ...] = ("train", "val", "refine", "cam-loss")
"""Roles whose labels or boxes the model learned from; ``pretrain`` images lent only their pixels."""


@dataclass(frozen=True)
class Overlap:
    """How many of ``total`` evaluated images (``total_patients`` patients) a role of the model's data also held:
    ``images`` by image id, ``patients`` by patient, ``either`` images whose id or patient it held."""

    role: str
    images: int
    patients: int
    either: int
    total: int
    total_patients: int

    @property
    def supervised(self) -> bool:
        return self.role in SUPERVISED_ROLES

    def to_dict(self) -> dict:
        return {"images": self.images, "patients": self.patients, "either": self.either, "of_images": self.total,
                "of_patients": self.total_patients, "supervised": self.supervised}


def overlap(provenance: Sequence[DataProvenance], items: Sequence[CXRItem], indices: Sequence[int]) -> list[Overlap]:
    """Per role of the model's data (merged over its datasets), the evaluated images it held, by id or patient."""
    ids = [hashed([items[int(i)].image_id])[0] for i in indices]
    patients = [hashed([items[int(i)].patient_id])[0] for i in indices]
    roles: dict[str, tuple[set[str], set[str]]] = {}
    for entry in provenance:
        for role in {*entry.images, *entry.patients}:
            known_ids, known_patients = roles.setdefault(role, (set(), set()))
            known_ids.update(entry.images.get(role, ()))
            known_patients.update(entry.patients.get(role, ()))
    found = []
    for role, (known_ids, known_patients) in sorted(roles.items()):
        hit_patients = {patient for patient in patients if patient in known_patients}
        either = sum(1 for image, patient in zip(ids, patients) if image in known_ids or patient in known_patients)
        found.append(Overlap(role, sum(1 for image in ids if image in known_ids), len(hit_patients), either,
                             len(ids), len(set(patients))))
    return found



class TrainOverlapError(ValueError):
    """The evaluated images or patients were used to train the checkpoint."""


def refuse_training_overlap(provenance: Sequence[DataProvenance], items: Sequence[CXRItem], indices: Sequence[int],
                            source: str, checkpoint: str | Path, allow: bool = False) -> list[Overlap]:
    """The evaluated images' overlap with the checkpoint's data; :class:`TrainOverlapError` when a supervised role
    (training, validation, refinement, CAM-loss boxes) holds any of them or their patients, unless ``allow``."""
    found = overlap(provenance, items, indices)
    supervised = [entry for entry in found if entry.supervised and entry.either]
    if supervised and not allow:
        images = max(entry.either for entry in supervised)
        patients = max(entry.patients for entry in supervised)
        roles = ", ".join(entry.role for entry in supervised)
        raise TrainOverlapError(
            f"{source}: {images} of {len(indices)} images ({patients} patients) in this split were used to train "
            f"{checkpoint} ({roles}); evaluate on other patients (e.g. the official test list), or pass "
            "--allow-train-overlap to score them anyway (the report will say so)")
    return found
