"""Image reading: formats, bit depths, DICOM conventions, and one clear error for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlens.data.io import CXRImageError, read_image, read_image_size
from synthetic import gradient, write_dicom


def _ramp_ok(image: np.ndarray, shape: tuple[int, int] = (32, 48)) -> None:
    assert image.dtype == np.float32 and image.shape == shape
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image[:, 0].mean() < 0.05 and image[:, -1].mean() > 0.95  # dark left, bright right


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("L", ".png"), ("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("L", ".jpg"), ("RGB", ".jpeg")],
)
def test_8bit_raster_modes(tmp_path: Path, mode: str, suffix: str) -> None:
    gray = Image.fromarray(gradient().astype(np.uint8), mode="L")
    image = gray.convert(mode) if mode != "P" else gray.convert("RGB").quantize(64)
    path = tmp_path / f"img{suffix}"
    image.save(path)
    _ramp_ok(read_image(path))


def test_16bit_png_keeps_full_precision(tmp_path: Path) -> None:
    pixels = gradient(high=65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    image = read_image(path)
    _ramp_ok(image)
    np.testing.assert_allclose(image, pixels / 65535.0, atol=1e-6)


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.fromarray(gradient().astype(np.uint8), mode="L").convert("RGB").quantize(16)
    image.info["transparency"] = 0
    path = tmp_path / "pal.png"
    image.save(path, transparency=0)
    _ramp_ok(read_image(path))


def test_dicom_monochrome2_plain_min_max(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", gradient(high=4095))
    _ramp_ok(read_image(path))


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "m1.dcm", gradient(high=4095), PhotometricInterpretation="MONOCHROME1")
    image = read_image(path)
    assert image[:, 0].mean() > 0.95 and image[:, -1].mean() < 0.05


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    # stored 0..4095, rescaled to -1024..3071 HU-like; window [0, 1000) keeps the middle third
    pixels = np.rint(gradient(high=4095))
    path = write_dicom(tmp_path / "w.dcm", pixels, RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=500, WindowWidth=1001)
    image = read_image(path)
    values = pixels - 1024
    expected = np.clip((values - (500 - 0.5)) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert (image == 0).any() and (image == 1).any()


def test_dicom_voi_lut_sequence(tmp_path: Path) -> None:
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    lut.add_new(0x00283006, "US", [int(v) for v in np.repeat(np.arange(256)[::-1], 16)])  # inverting LUT
    path = write_dicom(tmp_path / "lut.dcm", gradient(high=4095), VOILUTSequence=Sequence([lut]))
    image = read_image(path)
    assert image[:, 0].mean() > 0.95 and image[:, -1].mean() < 0.05


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"])  # RLE, JPEG 2000 lossless
def test_dicom_compressed_transfer_syntaxes(tmp_path: Path, syntax: str) -> None:
    pixels = np.rint(gradient(high=4095))
    try:
        path = write_dicom(tmp_path / "c.dcm", pixels, transfer_syntax=syntax)
    except (RuntimeError, NotImplementedError) as error:  # no encoder here; decoding is what we test
        pytest.skip(f"no encoder for {syntax}: {error}")
    np.testing.assert_allclose(read_image(path), pixels / 4095.0, atol=1e-6)


def test_real_sample_images_read(nih_bbox_root: Path, kermany_root: Path, cohen_root: Path) -> None:
    nih = next((nih_bbox_root / "images").glob("*.png"))
    image = read_image(nih)
    assert image.shape == (512, 512) and image.dtype == np.float32 and 0 <= image.min() < image.max() <= 1
    assert read_image_size(nih) == (512, 512)
    kermany = next((kermany_root / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg"))
    assert read_image(kermany).shape == (224, 224)
    for path in sorted((cohen_root / "images").iterdir())[:20]:
        image = read_image(path)
        assert image.ndim == 2 and max(image.shape) <= 512


# --- bad input: one CXRImageError naming the file and the reason -----------------------------


def _assert_error(path: Path, reason: str, **kwargs: object) -> None:
    with pytest.raises(CXRImageError) as caught:
        read_image(path, **kwargs)
    assert str(path) in str(caught.value) and reason in caught.value.reason
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.png", "does not exist")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_error(tmp_path / "empty.png", "empty")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is a text file, not a radiograph\n" * 10)
    _assert_error(tmp_path / "notes.png", "not a recognised image")


def test_truncated_png_and_jpeg(tmp_path: Path) -> None:
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"full{suffix}"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)).save(path)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        _assert_error(cut, "truncated")


def test_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    _assert_error(tmp_path / "folder.png", "directory")


def test_decompression_bomb_capped(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000)).save(path)  # 9 MP of zeros compresses to a few KB
    assert path.stat().st_size < 100_000
    _assert_error(path, "exceeds the cap", max_pixels=1_000_000)


def test_multi_frame_png_rejected(tmp_path: Path) -> None:
    frames = [Image.fromarray(gradient().astype(np.uint8) // (i + 1)) for i in range(3)]
    path = tmp_path / "anim.png"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    _assert_error(path, "3 frames")


def test_dicom_volume_rejected(tmp_path: Path) -> None:
    volume = np.stack([gradient(high=4095)] * 4)
    path = write_dicom(tmp_path / "vol.dcm", volume, NumberOfFrames=4)
    _assert_error(path, "4 frames")


def test_dicom_without_pixels(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "sr.dcm", gradient(high=4095))
    import pydicom

    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)
    _assert_error(path, "no pixel data")


def test_dicom_truncated_pixels(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "t.dcm", gradient(high=4095))
    path.write_bytes(path.read_bytes()[:-1000])
    _assert_error(path, "")


def test_garbage_with_dicom_suffix(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"\x00\x01garbage" * 50)
    _assert_error(tmp_path / "junk.dcm", "DICOM")


def test_constant_image_has_no_contrast(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "flat.dcm", np.full((16, 16), 100))
    _assert_error(path, "no contrast")
