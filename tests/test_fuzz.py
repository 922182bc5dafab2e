"""Fuzzing the image reader: mutations of real PNG / JPEG / DICOM files (bit flips, truncations,
overwritten runs, inserted junk, edited DICOM tags) either decode to a radiograph or raise
``CXRImageError`` naming the file, and nothing else, through every reading entry point.

The suite runs a bounded, derandomised number of examples; ``make fuzz`` (or
``CXRLENS_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py``) runs a long, random one.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxrlens.data.io import CXRImageError, read_dicom_header, read_image, read_image_size, read_radiograph
from synthetic import write_dicom

LONG = int(os.environ.get("CXRLENS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LONG or 60, deadline=None, derandomize=not LONG, database=None,
                suppress_health_check=list(HealthCheck))

# DICOM elements worth breaking: geometry, pixel description, LUTs, and the pixel data's own header
TAGS = [0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280102,
        0x00280103, 0x00281050, 0x00281051, 0x00281052, 0x00281053, 0x00281056, 0x00283010, 0x00100020]
VRS = ["US", "IS", "DS", "CS", "LO", "SQ", "OB", "UN"]


@pytest.fixture(scope="module")
def seeds(nih_bbox_root: Path, oblong_radiograph: Path) -> dict[str, bytes]:
    """Real radiographs as the fuzzer's starting files: 8-bit PNG, 16-bit PNG, JPEG and DICOM (small copies)."""
    with Image.open(sorted((nih_bbox_root / "images").glob("*.png"))[0]) as opened:
        nih = opened.convert("L").resize((96, 96))
    deep = io.BytesIO()
    Image.fromarray(np.asarray(nih, dtype=np.uint16) * 257).save(deep, format="PNG")
    eight, jpeg = io.BytesIO(), io.BytesIO()
    nih.save(eight, format="PNG")
    with Image.open(oblong_radiograph) as opened:
        opened.convert("RGB").resize((80, 64)).save(jpeg, format="JPEG")
    with tempfile.TemporaryDirectory() as folder:
        dicom = write_dicom(Path(folder) / "seed.dcm", np.asarray(nih, dtype=np.uint16) * 16, WindowCenter=2000,
                            WindowWidth=3000).read_bytes()
    return {".png": eight.getvalue(), "-16.png": deep.getvalue(), ".jpg": jpeg.getvalue(), ".dcm": dicom}


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[suffix])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "overwrite", "insert", "dicom-tag"]))
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[where:]
        elif kind == "overwrite":
            junk = draw(st.binary(min_size=1, max_size=64))
            data[where:where + len(junk)] = junk
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "dicom-tag" and suffix == ".dcm":
            data = bytearray(_edit_tag(bytes(data), draw(st.sampled_from(TAGS)), draw(st.sampled_from(VRS)),
                                       draw(st.binary(max_size=12))))
    return suffix, bytes(data)


def _edit_tag(data: bytes, tag: int, vr: str, value: bytes) -> bytes:
    """``data`` with element ``tag`` replaced by raw ``value`` under ``vr`` (no validation: malformed on purpose)."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        value += b" " * (len(value) % 2)
        dataset._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)  # noqa: SLF001
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=False)
        return out.getvalue()
    except Exception:  # noqa: BLE001 - an earlier mutation already broke the file beyond pydicom's writer
        return data


def _check(path: Path) -> None:
    """Every reading entry point: a radiograph, or CXRImageError naming the file (any other exception fails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom and Pillow warn about what they repair
        for read in (read_image, lambda p: read_radiograph(p, max_side=32).image):
            try:
                image = read(path)
            except CXRImageError as error:
                assert str(path) in str(error)
                continue
            assert image.dtype == np.float32 and image.ndim == 2 and image.size
            assert np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1
        for header in (read_image_size, read_dicom_header):
            try:
                header(path)
            except CXRImageError as error:
                assert str(path) in str(error)


def test_seeds_are_readable(seeds: dict[str, bytes], tmp_path: Path) -> None:
    for suffix, data in seeds.items():
        path = tmp_path / f"seed{suffix}"
        path.write_bytes(data)
        assert read_image(path).shape[0] >= 64


def test_mutated_radiographs_decode_or_fail_cleanly(seeds: dict[str, bytes]) -> None:
    @FUZZ
    @given(case=mutated(seeds))
    def run(case: tuple[str, bytes]) -> None:
        suffix, data = case
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"mutant{suffix}"
            path.write_bytes(data)
            _check(path)

    run()
