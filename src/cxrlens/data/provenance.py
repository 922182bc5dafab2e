"""Record which images of a prepared cache a model learned from (:class:`cxrlens.checkpoints.DataProvenance`),
and find where an evaluation would score them again (:func:`overlap`).

An image is known by :func:`image_key` (its reader, patient, folder and file name: the same
wherever the dataset was unpacked or cached) and a patient by :attr:`CXRItem.patient` (reader
and patient id: numeric ids of two datasets never meet); both are stored hashed
(:func:`hashed`), so a checkpoint can be checked against any cache's images without
carrying their names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrlens.checkpoints import DataProvenance
from cxrlens.data.cache import PreparedCache
from cxrlens.data.records import CXRItem


def key_hash(value: str) -> str:
    """The 16-hex-digit SHA-256 prefix of one id: what provenance stores in place of the id."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def hashed(values: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated hashes (:func:`key_hash`) of ``values``."""
    return sorted({key_hash(value) for value in values})


def image_key(item: CXRItem) -> str:
    """``reader:patient/folder/file``: the same wherever the dataset was unpacked or however it was cached."""
    return f"{item.meta.get('source', '')}:{item.image_id}"


def role_hashes(items: Sequence[CXRItem], roles: Mapping[str, Sequence[int]]
                ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(role -> hashed image keys, role -> hashed patient keys) of the items at each role's indices."""
    return ({role: hashed(image_key(items[int(i)]) for i in indices) for role, indices in roles.items()},
            {role: hashed(items[int(i)].patient for i in indices) for role, indices in roles.items()})


def digest(provenance: Sequence[DataProvenance]) -> str:
    """One hash of every role's image and patient hashes (what a model learned from, wherever it was cached)."""
    body = sorted((role, tuple(entry.images.get(role, ())), tuple(entry.patients.get(role, ())))
                  for entry in provenance for role in {*entry.images, *entry.patients})
    return hashlib.sha256(repr(body).encode()).hexdigest()[:16]


def describe_roles(items: Sequence[CXRItem], roles: Mapping[str, Sequence[int]],
                   split: Mapping[str, str | float | int | bool | None], cache: str = "", dataset: str = "",
                   fingerprint: str = "") -> DataProvenance:
    """The provenance of ``roles`` (e.g. ``{"train": indices, "val": indices}``) of ``items``."""
    images, patients = role_hashes(items, roles)
    keys = sorted({items[int(i)].meta["pseudonym_key"] for indices in roles.values() for i in indices
                   if "pseudonym_key" in items[int(i)].meta})
    return DataProvenance(cache=cache, dataset=dataset, fingerprint=fingerprint, split=dict(split), images=images,
                          patients=patients, pseudonym_keys=keys)


def data_provenance(cache: PreparedCache, roles: Mapping[str, Sequence[int]],
                    split: Mapping[str, str | float | int | bool | None]) -> DataProvenance:
    """The provenance of ``roles`` of ``cache``."""
    return describe_roles(cache.items(), roles, split, str(cache.directory), str(cache.index.get("dataset", "")),
                          str(cache.index.get("fingerprint", "")))


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
    """Per role of the model's data (merged over its datasets), the evaluated images it held, by id or patient.

    DICOM patients pseudonymised under another machine's key cannot be compared: a ValueError says so."""
    return _role_overlaps(provenance, *_scored_keys(provenance, items, indices))


def _scored_keys(provenance: Sequence[DataProvenance], items: Sequence[CXRItem], indices: Sequence[int]
                 ) -> tuple[list[str], list[str]]:
    """The hashed image and patient keys of the evaluated images, once their patients are known to be comparable."""
    trained_keys = {key for entry in provenance for key in entry.pseudonym_keys}
    scored_keys = {items[int(i)].meta["pseudonym_key"] for i in indices if "pseudonym_key" in items[int(i)].meta}
    if trained_keys and scored_keys - trained_keys:
        raise ValueError(f"the model's DICOM patients were pseudonymised with key {', '.join(sorted(trained_keys))} "
                         f"and these with {', '.join(sorted(scored_keys - trained_keys))}, so whether they are the same "
                         "patients cannot be told; prepare both on one machine, or copy its patient.key "
                         "($CXRLENS_HOME) here first")
    return ([key_hash(image_key(items[int(i)])) for i in indices], [key_hash(items[int(i)].patient) for i in indices])


def _role_overlaps(provenance: Sequence[DataProvenance], ids: list[str], patients: list[str]) -> list[Overlap]:
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
                            source: str, checkpoint: str | Path, allow: bool = False,
                            released: Collection[str] = frozenset()) -> list[Overlap]:
    """The evaluated images' overlap with the checkpoint's data; :class:`TrainOverlapError` when a supervised role
    (training, validation, refinement, CAM-loss boxes) holds any of them or their patients, unless ``allow``.

    ``released``: patients the dataset's official lists themselves put on both sides, kept by ``splits: official``
    (Kermany's recurring personN ids); sharing one of them is reported, not refused, while an image the model trained
    on always is."""
    ids, patients = _scored_keys(provenance, items, indices)
    found = _role_overlaps(provenance, ids, patients)
    supervised = [entry.role for entry in found if entry.supervised and entry.either]
    if supervised and not allow:
        known_ids = {h for entry in provenance for role in supervised for h in entry.images.get(role, ())}
        known_patients = {h for entry in provenance for role in supervised for h in entry.patients.get(role, ())}
        excused = set(hashed(released))
        leaked = [(image, patient) for image, patient in zip(ids, patients)
                  if image in known_ids or (patient in known_patients and patient not in excused)]
        if leaked:
            trained_with = sorted({f"splits {entry.split['splits']}, drop_shared {entry.split.get('drop_shared')}"
                                   for entry in provenance if entry.split.get("splits")})
            advice = (f"score with the split settings it was trained with ({'; '.join(trained_with)}) or on other "
                      "patients" if trained_with else "evaluate on other patients (e.g. the official test list)")
            raise TrainOverlapError(
                f"{source}: {len(leaked)} of {len(indices)} images ({len({patient for _, patient in leaked})} "
                f"patients) in this split were used to train {checkpoint} ({', '.join(supervised)}); {advice}, or "
                "pass --allow-train-overlap to score them anyway (the report will say so)")
    return found
