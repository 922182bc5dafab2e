"""Read one chest radiograph (PNG, JPEG or DICOM) into a float32 ``H x W`` array in [0, 1].

Every failure becomes a single :class:`CXRImageError` that names the file and the reason,
so a user never sees a traceback from deep inside Pillow or pydicom: a decoder's own
exception on a malformed file (a text ``Rows``, a damaged tag, a truncated stream) is
converted too, whatever its type.

Memory is bounded before decoding: the header's width x height must stay under
``max_pixels`` and its width x height x bytes per pixel under ``max_bytes``.
:func:`read_radiograph` can also decode smaller than stored (``max_side``): JPEGs are
decoded at a reduced DCT scale (Pillow's ``draft``) and every image is shrunk by a whole
factor (box filter) before any float conversion, and it reports the stored size, so
geometry stays in the file's own pixels. Intensities become float32, never float64 of
the full image.

Intensity conventions
---------------------
* PNG / JPEG: stored values divided by the maximum of their storage type (255 for 8-bit,
  65535 for 16-bit), so intensities stay comparable between images of one dataset.
  Colour images become luma (ITU-R BT.601 weights); an alpha channel is dropped;
  palette images are expanded through their palette first.
* DICOM: the modality LUT (RescaleSlope / RescaleIntercept, or a Modality LUT Sequence)
  is applied, then the VOI LUT or the window (WindowCenter / WindowWidth) when present,
  then the result is scaled to [0, 1] by its own minimum and maximum;
  ``MONOCHROME1`` images (bright = low attenuation) are inverted so that bone is bright
  as in every other file. Compressed transfer syntaxes decode through pydicom's pixel
  handlers (pylibjpeg for JPEG, JPEG-LS and JPEG 2000; RLE natively).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 64_000_000
"""Decompression-bomb cap: a large digital radiograph is ~4,300 x 3,500 = 15 M pixels."""

DEFAULT_MAX_BYTES = 256 * 2**20
"""Cap on the decoded pixel buffer (width x height x bytes per pixel): 64 M pixels of 8-bit RGBA."""

_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "RGB": 3, "YCbCr": 3}

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_SUFFIXES = DICOM_SUFFIXES | RASTER_SUFFIXES


class CXRImageError(ValueError):
    """An image file that cannot be turned into a radiograph; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = printable(reason)
        super().__init__(f"{printable(str(self.path))}: {self.reason}")


def printable(text: str) -> str:
    """``text`` as any UTF-8 writer takes it: bytes of a file name that are not UTF-8 (Python's
    surrogate escapes, e.g. ``bad\udcffname.png``) are spelt out as ``\udcff``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` has a DICOM suffix or carries the ``DICM`` preamble marker."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class Radiograph:
    """A decoded radiograph: ``image`` float32 H x W in [0, 1] (possibly smaller than stored), and the
    ``width`` x ``height`` it has in the file."""

    image: np.ndarray
    width: int
    height: int
    view: str = ""  # DICOM ViewPosition (PA, AP, LL, ...), "" when unknown


def read_radiograph(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> Radiograph:
    """Decode ``path`` (see the module docstring); with ``max_side``, shrink it by the largest whole
    factor that keeps its longer side at least ``max_side``.

    Raises :class:`CXRImageError` for a missing, empty, truncated, malformed or non-image file,
    a multi-frame volume, or one over ``max_pixels`` pixels or ``max_bytes`` decoded bytes.
    """
    path = Path(path)
    _check_file(path)
    with _as_image_error(path):
        radiograph = (_read_dicom if is_dicom(path) else _read_raster)(path, max_pixels, max_bytes, max_side)
    if not np.isfinite(radiograph.image).all():
        raise CXRImageError(path, "pixel values contain NaN or infinity")
    return radiograph


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to a float32 ``H x W`` array in [0, 1] at its stored size (:func:`read_radiograph`)."""
    return read_radiograph(path, max_pixels).image


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(width, height)`` of an image from its header, without decoding pixels."""
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        dataset = read_dicom_header(path)
        with _as_image_error(path):
            if "Rows" not in dataset or "Columns" not in dataset:
                raise CXRImageError(path, "DICOM header has no Rows/Columns")
            return int(dataset.Columns), int(dataset.Rows)
    from PIL import Image

    with _as_image_error(path), Image.open(path) as image:
        return image.size


@contextmanager
def _as_image_error(path: Path) -> Iterator[None]:
    """Any exception but ours (and running out of memory) becomes the CXRImageError of ``path``:
    a decoder's own failure on a malformed file is that file's error, whatever its type (and its
    warnings about what it repaired are not printed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    except (CXRImageError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise CXRImageError(path, f"unreadable image ({type(error).__name__}: {_first_line(error)})") from error


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CXRImageError(path, "file does not exist") from None
    except OSError as error:
        raise CXRImageError(path, f"cannot access file ({error.strerror})") from None
    if path.is_dir():
        raise CXRImageError(path, "is a directory, not an image file")
    if size == 0:
        raise CXRImageError(path, "file is empty (0 bytes)")


def _check_pixels(path: Path, width: int, height: int, max_pixels: int, bytes_per_pixel: int, max_bytes: int) -> None:
    if width <= 0 or height <= 0:
        raise CXRImageError(path, f"image has zero size ({width} x {height})")
    if width * height > max_pixels:
        raise CXRImageError(
            path,
            f"image of {width} x {height} = {width * height:,} pixels exceeds the cap of "
            f"{max_pixels:,} (possible decompression bomb; raise max_pixels if intended)",
        )
    if width * height * bytes_per_pixel > max_bytes:
        raise CXRImageError(path, f"image of {width} x {height} x {bytes_per_pixel} bytes per pixel exceeds the "
                                  f"decoding budget of {max_bytes:,} bytes")


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``H x W x 3`` (or more channels) array, in float32."""
    luma = rgb[..., 0].astype(np.float32) * np.float32(0.299)
    luma += rgb[..., 1] * np.float32(0.587)
    luma += rgb[..., 2] * np.float32(0.114)
    return luma


def _shrink_factor(width: int, height: int, max_side: int | None) -> int:
    """The largest whole factor that keeps the longer side at least ``max_side`` (1: keep the size)."""
    return max(1, max(width, height) // max_side) if max_side else 1


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


def _read_raster(path: Path, max_pixels: int, max_bytes: int, max_side: int | None) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                _check_pixels(path, width, height, max_pixels, _BYTES_PER_PIXEL.get(image.mode, 4), max_bytes)
                if getattr(image, "n_frames", 1) > 1:
                    raise CXRImageError(
                        path, f"has {image.n_frames} frames; expected a single 2-D radiograph"
                    )
                factor = _shrink_factor(width, height, max_side)
                if factor > 1 and image.format == "JPEG":  # decode at a reduced DCT scale, >= the size asked
                    image.draft(image.mode, (-(-width // factor), -(-height // factor)))
                image.load()
                return Radiograph(_raster_to_unit(path, image, max_side), width, height)
    except CXRImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise CXRImageError(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError:
        raise CXRImageError(path, "not a recognised image format (PNG, JPEG or DICOM)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CXRImageError(path, f"corrupt or truncated image ({error})") from error


def _raster_to_unit(path: Path, image, max_side: int | None) -> np.ndarray:  # noqa: ANN001 - a PIL image
    """A decoded Pillow image, shrunk for ``max_side``, as float32 in [0, 1] (colour becomes luma)."""
    if image.mode.startswith("I;16"):  # 16-bit grey: shrunk as uint16, never widened at full size
        return _shrunk(np.asarray(image).astype(np.uint16, copy=False), max_side).astype(np.float32) / np.float32(65535.0)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    factor = _shrink_factor(*image.size, max_side)
    if factor > 1:
        image = image.reduce(factor)
    mode = image.mode
    if mode in ("L", "LA"):
        return np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255.0)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        return _luma(np.asarray(image.convert("RGB"))) / np.float32(255.0)
    if mode == "I":
        array = np.asarray(image).astype(np.float32)
        if array.min() < 0 or array.max() > 65535:
            raise CXRImageError(path, f"integer pixel values outside 0..65535 (mode {mode})")
        return array / np.float32(65535.0)
    if mode == "F":
        return _min_max(path, np.asarray(image, dtype=np.float32))
    raise CXRImageError(path, f"unsupported pixel mode {mode!r}")


def _min_max(path: Path, array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if high <= low:
        raise CXRImageError(path, f"image has no contrast (every pixel equals {low:g})")
    return ((array - low) / (high - low)).astype(np.float32)


def read_dicom_header(path: str | os.PathLike):  # noqa: ANN201 - pydicom Dataset
    """The DICOM header of ``path`` without its pixel data, every element parsed; CXRImageError if unreadable."""
    path = Path(path)
    with _as_image_error(path):
        dataset = _dcmread(path, stop_before_pixels=True)
        for _ in dataset.iterall():  # elements parse lazily: a damaged one fails here, not in the caller
            pass
        return dataset


def _dcmread(path: Path, stop_before_pixels: bool = False):  # noqa: ANN202 - pydicom Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as error:
        raise CXRImageError(path, f"not a valid DICOM file ({error})") from error
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CXRImageError(path, f"unreadable DICOM ({type(error).__name__}: {error})") from error


def _read_dicom(path: Path, max_pixels: int, max_bytes: int, max_side: int | None) -> Radiograph:
    from pydicom.pixels import apply_modality_lut

    dataset = _dcmread(path)
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise CXRImageError(path, "DICOM has no pixel data (a report or structured document?)")
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    samples, bits = int(dataset.get("SamplesPerPixel", 1) or 1), int(dataset.get("BitsAllocated", 16) or 16)
    _check_pixels(path, columns, rows, max_pixels, samples * -(-bits // 8), max_bytes)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise CXRImageError(path, f"DICOM has {frames} frames; expected a single 2-D radiograph")
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        raise CXRImageError(
            path, f"cannot decode transfer syntax {syntax} ({error}); install a pydicom pixel "
            "handler for it (pylibjpeg-libjpeg, pylibjpeg-openjpeg or gdcm)"
        ) from error
    except (ValueError, AttributeError, KeyError, TypeError, EOFError, OSError) as error:
        raise CXRImageError(path, f"DICOM pixel data unreadable ({error})") from error
    pixels = _shrunk(pixels, max_side)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return Radiograph(_min_max(path, _luma(pixels)), columns, rows)
    if pixels.ndim != 2:
        raise CXRImageError(
            path, f"DICOM pixel array has shape {pixels.shape}; expected a 2-D radiograph"
        )
    try:
        image = _apply_voi(path, _modality_values(pixels, dataset, apply_modality_lut), dataset)
    except (ValueError, IndexError, TypeError, AttributeError) as error:
        raise CXRImageError(path, f"DICOM LUT/window attributes are invalid ({error})") from error
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return Radiograph(image.astype(np.float32), columns, rows, str(dataset.get("ViewPosition", "") or ""))


def _shrunk(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """A stored pixel array shrunk by :func:`_shrink_factor` (area averaging, in its own dtype)."""
    height, width = pixels.shape[:2]
    factor = _shrink_factor(width, height, max_side)
    if factor == 1:
        return pixels
    if pixels.dtype not in (np.uint8, np.uint16, np.int16, np.float32):  # what OpenCV's area resize takes
        pixels = pixels.astype(np.float32)
    return cv2.resize(pixels, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)


def _modality_values(pixels: np.ndarray, dataset, apply_modality_lut) -> np.ndarray:  # noqa: ANN001
    """Stored values through the modality LUT, in float32: the usual linear rescale done in place
    (pydicom's own goes through float64 at full size); a Modality LUT Sequence through pydicom."""
    if "ModalityLUTSequence" in dataset:
        return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float32)
    values = pixels.astype(np.float32)
    slope, intercept = float(dataset.get("RescaleSlope", 1) or 1), float(dataset.get("RescaleIntercept", 0) or 0)
    if slope != 1:
        values *= np.float32(slope)
    if intercept:
        values += np.float32(intercept)
    return values


def _apply_voi(path: Path, values: np.ndarray, dataset) -> np.ndarray:  # noqa: ANN001
    """Map modality values to [0, 1] by the VOI LUT, else the window, else min/max.

    A VOI LUT maps ``x`` to ``LUTData[clip(x - first_mapped, 0, entries - 1)]`` scaled by
    its output bit depth (PS3.3 C.11.2.1.1). Windowing follows PS3.3 C.11.2.1.2: LINEAR
    ``y = clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)``, LINEAR_EXACT
    ``y = clip((x - c) / w + 0.5, 0, 1)``, SIGMOID ``y = 1 / (1 + exp(-4 (x - c) / w))``;
    the first of several windows is used, as viewers do by default.
    """
    if "VOILUTSequence" in dataset:
        return _lookup_voi_lut(dataset.VOILUTSequence[0], values)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        center = float(_first(dataset.WindowCenter))
        width = float(_first(dataset.WindowWidth))
        function = str(dataset.get("VOILUTFunction", "LINEAR")).upper()
        if function == "SIGMOID":
            if width <= 0:
                raise ValueError(f"window width {width:g} must be positive")
            return np.float32(1.0) / (np.float32(1.0) + np.exp(np.float32(-4.0 / width) * (values - np.float32(center))))
        if function == "LINEAR_EXACT":
            if width <= 0:
                raise ValueError(f"window width {width:g} must be positive")
            return np.clip((values - center) / width + 0.5, 0.0, 1.0)
        if width < 1:
            raise ValueError(f"window width {width:g} must be >= 1 for LINEAR")
        if width == 1:
            return (values > center - 0.5).astype(np.float32)
        return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
    return _min_max(path, values)


def _lookup_voi_lut(item, values: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a VOI LUT item
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # PS3.3: 0 means 2^16 entries
    data = item.LUTData
    table = np.frombuffer(data, dtype="<u2" if bits > 8 else np.uint8) if isinstance(data, bytes) else np.asarray(data)
    if table.size < entries:
        raise ValueError(f"VOI LUT has {table.size} values, its descriptor promises {entries}")
    index = np.clip(np.rint(values) - first_mapped, 0, entries - 1).astype(np.int32)
    return table[index].astype(np.float32) / np.float32(2**bits - 1)


def _first(value):  # noqa: ANN001, ANN202 - a DICOM DS or a multi-valued DS
    """The first of a possibly multi-valued DICOM attribute."""
    try:
        return value[0]
    except (TypeError, IndexError):
        return value
