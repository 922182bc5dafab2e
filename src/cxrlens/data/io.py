"""Read one chest radiograph (PNG, JPEG or DICOM) into a float32 ``H x W`` array in [0, 1].

Every failure becomes a single :class:`CXRImageError` that names the file and the reason,
so a user never sees a traceback from deep inside Pillow or pydicom.

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
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 64_000_000
"""Decompression-bomb cap: a large digital radiograph is ~4,300 x 3,500 = 15 M pixels."""

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_SUFFIXES = DICOM_SUFFIXES | RASTER_SUFFIXES


class CXRImageError(ValueError):
    """An image file that cannot be turned into a radiograph; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


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


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to a float32 ``H x W`` array in [0, 1] (see the module docstring).

    Raises :class:`CXRImageError` for a missing, empty, truncated or non-image file, a
    multi-frame volume, a file over ``max_pixels`` pixels, or an undecodable DICOM.
    """
    path = Path(path)
    _check_file(path)
    image = _read_dicom(path, max_pixels) if is_dicom(path) else _read_raster(path, max_pixels)
    if not np.isfinite(image).all():
        raise CXRImageError(path, "pixel values contain NaN or infinity")
    return image


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(width, height)`` of an image from its header, without decoding pixels."""
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        dataset = read_dicom_header(path)
        try:
            return int(dataset.Columns), int(dataset.Rows)
        except AttributeError as error:
            raise CXRImageError(path, "DICOM header has no Rows/Columns") from error
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise CXRImageError(path, f"not a readable image ({error})") from error


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


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise CXRImageError(path, f"image has zero size ({width} x {height})")
    if width * height > max_pixels:
        raise CXRImageError(
            path,
            f"image of {width} x {height} = {width * height:,} pixels exceeds the cap of "
            f"{max_pixels:,} (possible decompression bomb; raise max_pixels if intended)",
        )


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``H x W x 3`` array."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float64)
    return rgb[..., :3].astype(np.float64) @ weights


def _read_raster(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(path, image.width, image.height, max_pixels)
                if getattr(image, "n_frames", 1) > 1:
                    raise CXRImageError(
                        path, f"has {image.n_frames} frames; expected a single 2-D radiograph"
                    )
                image.load()
                return _raster_to_unit(path, image)
    except CXRImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise CXRImageError(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError:
        raise CXRImageError(path, "not a recognised image format (PNG, JPEG or DICOM)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CXRImageError(path, f"corrupt or truncated image ({error})") from error


def _raster_to_unit(path: Path, image) -> np.ndarray:  # noqa: ANN001 - a PIL image
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("1", "L", "LA"):
        array = np.asarray(image.convert("L"), dtype=np.float32)
        return array / 255.0
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        rgb = np.asarray(image.convert("RGB"))
        return (_luma(rgb) / 255.0).astype(np.float32)
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image).astype(np.float64)
        if array.min() < 0 or array.max() > 65535:
            raise CXRImageError(path, f"integer pixel values outside 0..65535 (mode {mode})")
        return (array / 65535.0).astype(np.float32)
    if mode == "F":
        return _min_max(path, np.asarray(image, dtype=np.float64))
    raise CXRImageError(path, f"unsupported pixel mode {mode!r}")


def _min_max(path: Path, array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if high <= low:
        raise CXRImageError(path, f"image has no contrast (every pixel equals {low:g})")
    return ((array - low) / (high - low)).astype(np.float32)


def read_dicom_header(path: str | os.PathLike):  # noqa: ANN201 - pydicom Dataset
    """The DICOM header of ``path`` without its pixel data; CXRImageError if unreadable."""
    return _dcmread(Path(path), stop_before_pixels=True)


def _dcmread(path: Path, stop_before_pixels: bool = False):  # noqa: ANN202 - pydicom Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as error:
        raise CXRImageError(path, f"not a valid DICOM file ({error})") from error
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CXRImageError(path, f"unreadable DICOM ({type(error).__name__}: {error})") from error


def _read_dicom(path: Path, max_pixels: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = _dcmread(path)
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise CXRImageError(path, "DICOM has no pixel data (a report or structured document?)")
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    _check_pixels(path, columns, rows, max_pixels)
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
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return _min_max(path, _luma(pixels))
    if pixels.ndim != 2:
        raise CXRImageError(
            path, f"DICOM pixel array has shape {pixels.shape}; expected a 2-D radiograph"
        )
    try:
        values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
        image = _apply_voi(path, values, dataset)
    except (ValueError, IndexError, TypeError, AttributeError) as error:
        raise CXRImageError(path, f"DICOM LUT/window attributes are invalid ({error})") from error
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return image.astype(np.float32)


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
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        if function == "LINEAR_EXACT":
            if width <= 0:
                raise ValueError(f"window width {width:g} must be positive")
            return np.clip((values - center) / width + 0.5, 0.0, 1.0)
        if width < 1:
            raise ValueError(f"window width {width:g} must be >= 1 for LINEAR")
        if width == 1:
            return (values > center - 0.5).astype(np.float64)
        return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
    return _min_max(path, values)


def _lookup_voi_lut(item, values: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a VOI LUT item
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # PS3.3: 0 means 2^16 entries
    data = item.LUTData
    table = np.frombuffer(data, dtype="<u2" if bits > 8 else np.uint8) if isinstance(data, bytes) else np.asarray(data)
    if table.size < entries:
        raise ValueError(f"VOI LUT has {table.size} values, its descriptor promises {entries}")
    index = np.clip(np.rint(values) - first_mapped, 0, entries - 1).astype(np.int64)
    return table[index].astype(np.float64) / float(2**bits - 1)


def _first(value):  # noqa: ANN001, ANN202 - a DICOM DS or a multi-valued DS
    """The first of a possibly multi-valued DICOM attribute."""
    try:
        return value[0]
    except (TypeError, IndexError):
        return value
