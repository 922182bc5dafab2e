"""Record which images of a prepared cache a model learned from (:class:`cxrlens.checkpoints.DataProvenance`).

An image's id is :func:`cxrlens.data.records.image_id` (patient, folder and file name: the
same wherever the dataset was unpacked); ids and patient ids are stored hashed
(:func:`hashed`), so a checkpoint can be checked against any cache's images without
carrying their names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from cxrlens.checkpoints import DataProvenance
from cxrlens.data.cache import PreparedCache
from cxrlens.data.records import image_id


def hashed(values: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated 16-hex-digit SHA-256 prefixes of ``values``."""
    return sorted({hashlib.sha256(value.encode()).hexdigest()[:16] for value in values})


def data_provenance(cache: PreparedCache, roles: Mapping[str, Sequence[int]],
                    split: Mapping[str, str | float | int | bool | None]) -> DataProvenance:
    """The provenance of ``roles`` (e.g. ``{"train": indices, "val": indices}``) of ``cache``."""
    records = cache.records
    return DataProvenance(
        cache=str(cache.directory), dataset=str(cache.index.get("dataset", "")),
        fingerprint=str(cache.index.get("fingerprint", "")), split=dict(split),
        images={role: hashed(image_id(records[int(i)]["path"], records[int(i)]["patient_id"]) for i in indices)
                for role, indices in roles.items()},
        patients={role: hashed(records[int(i)]["patient_id"] for i in indices) for role, indices in roles.items()})
