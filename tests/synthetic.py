"""Tiny synthetic files for unit tests (real images are used through the data root)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def gradient(height: int = 32, width: int = 48, high: int = 255) -> np.ndarray:
    """A horizontal ramp 0..high, so orientation and polarity are checkable."""
    row = np.linspace(0, high, width)
    return np.tile(row, (height, 1))


def write_dicom(path: Path, pixels: np.ndarray, transfer_syntax: str | None = None, **attributes: object) -> Path:
    """A minimal valid single-frame CR DICOM holding ``pixels`` (uint16 unless given)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
    from pydicom import Dataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID = "P001"
    dataset.Modality = "CR"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    for key, value in attributes.items():
        setattr(dataset, key, value)
    dataset.PixelData = np.ascontiguousarray(np.rint(pixels).astype(np.uint16)).tobytes()
    if transfer_syntax is not None:
        dataset.compress(transfer_syntax, encoding_plugin="pylibjpeg" if "1.2.840.10008.1.2.4" in transfer_syntax else "")
    dataset.save_as(path, enforce_file_format=True)
    return path


def with_raw_element(path: Path, tag: int, vr: str, value: bytes) -> Path:
    """Rewrite the DICOM at ``path`` with element ``tag`` replaced by raw ``value`` under ``vr``, unvalidated
    (a malformed file on purpose: a text ``Rows``, a ``NumberOfFrames`` of "ab", ...)."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    dataset = pydicom.dcmread(path)
    value += b" " * (len(value) % 2)
    dataset._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)  # noqa: SLF001
    dataset.save_as(path, enforce_file_format=True)
    return path
