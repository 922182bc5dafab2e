"""The FastAPI application of ``cxrlens serve``.

* ``GET /`` - the page: upload or drop a radiograph, see it, the findings table and, for
  the chosen finding, the heatmap overlay with its boxes;
* ``POST /v1/predict`` - multipart ``file`` (PNG / JPEG / DICOM) -> probabilities and boxes
  (source pixels) for every finding, with URLs of the overlays;
* ``GET /v1/predictions/{id}/image.png`` and ``.../overlay/{finding}.png`` - pictures of
  the most recent predictions (kept in a small in-memory LRU);
* ``GET /v1/model`` - what is served; ``/docs`` and ``/openapi.json`` - the API.

Hostile input never reaches the model: uploads over ``max_upload_bytes`` (by their
Content-Length, before the body is read) get 413, a body without a length 411, a body
slower than ``body_timeout`` 408 (:mod:`cxrlens.serve.limits`); empty, non-image,
malformed, truncated or over-the-pixel-cap files and DICOMs without pixel data get 422
naming the uploaded file; more than ``max_pending`` requests in progress get 429 with
Retry-After. Every error is JSON ``{"detail": "..."}``.

Memory is bounded per request and in total: an upload is spooled to a temporary file,
and decoding (no larger than the model input and the pictures need,
:meth:`~cxrlens.infer.predictor.Predictor.read`) and prediction run one request at a
time in one worker thread, so at most one decoded radiograph is in memory beyond the
small kept copies (one thread also keeps the C allocator from holding a large arena per
request thread: 16 concurrent 64-megapixel uploads peaked at 4.4 GB with a lock across
threads, under 1 GB with the one worker).
"""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from cxrlens import __version__
from cxrlens.data.io import IMAGE_SUFFIXES, CXRImageError
from cxrlens.infer.predictor import Prediction, Predictor
from cxrlens.serve.limits import ServeLimits, UploadGuard


class BoxOut(BaseModel):
    x: float = Field(description="left edge, source-image pixels")
    y: float = Field(description="top edge, source-image pixels")
    w: float
    h: float


class FindingOut(BaseModel):
    finding: str
    probability: float = Field(ge=0, le=1)
    threshold: float = Field(description="the operating threshold the checkpoint chose on its validation split (0.5 "
                             "where it chose none)")
    positive: bool = Field(description="probability >= threshold")
    boxes: list[BoxOut] = Field(description="read off the heatmap, largest first, in source-image pixels")
    overlay_url: str


class PredictionOut(BaseModel):
    id: str
    filename: str
    width: int
    height: int
    cam: str
    runtime: str
    image_url: str
    warnings: list[str] = Field(description="why this input may not be one to trust the model on (out of distribution, "
                                "inverted, lateral, low contrast, clipped); empty when none")
    findings: list[FindingOut] = Field(description="every finding, most probable first")


class ModelOut(BaseModel):
    checkpoint: str
    classes: list[str]
    cam: str
    runtime: str
    runtime_reason: str = Field(description="why this runtime runs (asked for, or what auto measured or found)")
    input_size: int
    version: str


class ErrorOut(BaseModel):
    detail: str


ERRORS = {status: {"model": ErrorOut, "description": text} for status, text in (
    (408, "request body slower than the server's limit"), (411, "request without Content-Length"),
    (413, "upload larger than the server's limit"),
    (422, "not a readable radiograph (empty, not an image, truncated, too many pixels, DICOM without pixels)"),
    (429, "too many requests in progress; retry after the Retry-After seconds"))}


def create_app(predictor: Predictor, limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The application serving ``predictor`` (see the module docstring)."""
    app = FastAPI(title="cxrlens", version=__version__,
                  description="Chest X-ray findings with heatmaps and boxes from one classifier checkpoint.")
    app.add_middleware(UploadGuard, limits=limits)
    app.state.limits = limits
    page = resources.files("cxrlens.serve").joinpath("page.html").read_text()
    pending = threading.BoundedSemaphore(limits.max_pending)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxrlens-model")  # decodes and predicts
    kept: OrderedDict[str, Prediction] = OrderedDict()
    kept_lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/v1/model", response_model=ModelOut)
    def model_info() -> ModelOut:
        return ModelOut(checkpoint=predictor.checkpoint.name, classes=predictor.classes, cam=predictor.method,
                        runtime=predictor.runtime, runtime_reason=predictor.runtime_reason, input_size=predictor.size,
                        version=__version__)

    @app.post("/v1/predict", response_model=PredictionOut, responses=ERRORS)
    def predict(file: UploadFile = File(description="a chest radiograph: PNG, JPEG or DICOM")) -> PredictionOut:
        name = Path(file.filename or "upload").name
        if not pending.acquire(blocking=False):
            raise HTTPException(429, f"{limits.max_pending} requests already in progress; retry shortly",
                                headers={"Retry-After": "1"})
        try:
            with _spooled(file, name) as path:
                prediction = worker.submit(_predict, predictor, path, name).result()
        finally:
            pending.release()
        identifier = uuid.uuid4().hex
        with kept_lock:
            kept[identifier] = prediction.resized(limits.picture_side)
            while len(kept) > limits.kept:
                kept.popitem(last=False)
        base = f"/v1/predictions/{identifier}"
        findings = [FindingOut(finding=finding, probability=probability, threshold=prediction.thresholds[finding],
                               positive=prediction.positive(finding),
                               boxes=[BoxOut(x=b.x, y=b.y, w=b.w, h=b.h) for b in prediction.boxes_in_source(finding)],
                               overlay_url=f"{base}/overlay/{finding}.png")
                    for finding, probability in prediction.ranked()]
        return PredictionOut(id=identifier, filename=name, width=prediction.width, height=prediction.height,
                             cam=predictor.method, runtime=predictor.runtime, image_url=f"{base}/image.png",
                             warnings=list(prediction.warnings), findings=findings)

    def _kept(identifier: str) -> Prediction:
        with kept_lock:
            if identifier not in kept:
                raise HTTPException(404, f"prediction {identifier} is unknown or no longer kept; predict again")
            return kept[identifier]

    @app.get("/v1/predictions/{identifier}/image.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}})
    def radiograph(identifier: str) -> Response:
        prediction = _kept(identifier)
        return _png(Image.fromarray((prediction.image * 255).round().astype("uint8")))

    @app.get("/v1/predictions/{identifier}/overlay/{finding}.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}})
    def overlay(identifier: str, finding: str) -> Response:
        prediction = _kept(identifier)
        if finding not in prediction.heatmaps:
            raise HTTPException(404, f"unknown finding {finding!r}; the model predicts {', '.join(predictor.classes)}")
        return _png(Image.fromarray(prediction.overlay(finding, limits.picture_side)))

    return app


@contextmanager
def _spooled(upload: UploadFile, name: str) -> Iterator[Path]:
    """The upload in a temporary file with the uploaded file's suffix (it tells DICOM from PNG and JPEG)."""
    suffix = Path(name).suffix.lower()
    with tempfile.NamedTemporaryFile(suffix=suffix if suffix in IMAGE_SUFFIXES else "") as handle:
        shutil.copyfileobj(upload.file, handle)
        handle.flush()
        yield Path(handle.name)


def _predict(predictor: Predictor, path: Path, name: str) -> Prediction:
    """The uploaded radiograph's prediction, or 422 naming the uploaded file (never the server's temporary path)."""
    try:
        radiograph = predictor.read(path)
    except CXRImageError as error:
        raise HTTPException(422, f"{name}: {error.reason.replace(str(path), name)}") from None
    return predictor.predict([radiograph], [name])[0]


def _png(picture: Image.Image) -> Response:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")
