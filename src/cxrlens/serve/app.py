"""The FastAPI application of ``cxrlens serve``.

* ``GET /`` - the page: upload or drop a radiograph, see it, the findings table and, for
  the chosen finding, the heatmap overlay with its boxes;
* ``POST /v1/predict`` - multipart ``file`` (PNG / JPEG / DICOM) -> probabilities and boxes
  (source pixels) for every finding, with URLs of the overlays;
* ``GET /v1/predictions/{id}/image.png`` and ``.../overlay/{finding}.png`` - pictures of
  the most recent predictions (kept in a small in-memory LRU);
* ``GET /v1/model`` - what is served; ``/docs`` and ``/openapi.json`` - the API.

Hostile input never reaches the model: uploads over ``max_upload_bytes`` (by their
Content-Length, before the body is read) get 413, a body without a length 411; empty,
non-image, truncated or over-the-pixel-cap files and DICOMs without pixel data get 422
naming the file; more than ``max_pending`` requests in progress get 429 with Retry-After.
Every error is JSON ``{"detail": "..."}``. The model runs one request at a time.
"""

from __future__ import annotations

import io
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from cxrlens import __version__
from cxrlens.data.io import IMAGE_SUFFIXES, CXRImageError
from cxrlens.infer.predictor import Prediction, Predictor
from cxrlens.serve.limits import UploadSizeLimit


@dataclass(frozen=True)
class ServeLimits:
    """``max_upload_bytes``: largest request body; ``max_pending``: requests in progress before 429;
    ``kept``: predictions whose pictures stay available; ``picture_side``: longest side of pictures."""

    max_upload_bytes: int = 32 * 2**20
    max_pending: int = 16
    kept: int = 16
    picture_side: int = 1024


class BoxOut(BaseModel):
    x: float = Field(description="left edge, source-image pixels")
    y: float = Field(description="top edge, source-image pixels")
    w: float
    h: float


class FindingOut(BaseModel):
    finding: str
    probability: float = Field(ge=0, le=1)
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
    findings: list[FindingOut] = Field(description="every finding, most probable first")


class ModelOut(BaseModel):
    checkpoint: str
    classes: list[str]
    cam: str
    runtime: str
    input_size: int
    version: str


class ErrorOut(BaseModel):
    detail: str


ERRORS = {status: {"model": ErrorOut, "description": text} for status, text in (
    (411, "request without Content-Length"), (413, "upload larger than the server's limit"),
    (422, "not a readable radiograph (empty, not an image, truncated, too many pixels, DICOM without pixels)"),
    (429, "too many requests in progress; retry after the Retry-After seconds"))}


def create_app(predictor: Predictor, limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The application serving ``predictor`` (see the module docstring)."""
    app = FastAPI(title="cxrlens", version=__version__,
                  description="Chest X-ray findings with heatmaps and boxes from one classifier checkpoint.")
    app.add_middleware(UploadSizeLimit, max_bytes=limits.max_upload_bytes)
    page = resources.files("cxrlens.serve").joinpath("page.html").read_text()
    pending = threading.BoundedSemaphore(limits.max_pending)
    model_lock = threading.Lock()
    kept: OrderedDict[str, Prediction] = OrderedDict()
    kept_lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/v1/model", response_model=ModelOut)
    def model_info() -> ModelOut:
        return ModelOut(checkpoint=predictor.checkpoint.name, classes=predictor.classes, cam=predictor.method,
                        runtime=predictor.runtime, input_size=predictor.size, version=__version__)

    @app.post("/v1/predict", response_model=PredictionOut, responses=ERRORS)
    def predict(file: UploadFile = File(description="a chest radiograph: PNG, JPEG or DICOM")) -> PredictionOut:
        name = Path(file.filename or "upload").name
        if not pending.acquire(blocking=False):
            raise HTTPException(429, f"{limits.max_pending} requests already in progress; retry shortly",
                                headers={"Retry-After": "1"})
        try:
            image = _decode(predictor, file, name)
            with model_lock:
                prediction = predictor.predict([image], [name])[0]
        finally:
            pending.release()
        identifier = uuid.uuid4().hex
        with kept_lock:
            kept[identifier] = prediction.resized(limits.picture_side)
            while len(kept) > limits.kept:
                kept.popitem(last=False)
        base = f"/v1/predictions/{identifier}"
        findings = [FindingOut(finding=finding, probability=probability,
                               boxes=[BoxOut(x=b.x, y=b.y, w=b.w, h=b.h) for b in prediction.boxes_in_source(finding)],
                               overlay_url=f"{base}/overlay/{finding}.png")
                    for finding, probability in prediction.ranked()]
        return PredictionOut(id=identifier, filename=name, width=prediction.width, height=prediction.height,
                             cam=predictor.method, runtime=predictor.runtime, image_url=f"{base}/image.png",
                             findings=findings)

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


def _decode(predictor: Predictor, upload: UploadFile, name: str):  # noqa: ANN202 - numpy array
    """The upload as a radiograph array, or 422 naming it."""
    suffix = Path(name).suffix.lower()
    with tempfile.NamedTemporaryFile(suffix=suffix if suffix in IMAGE_SUFFIXES else "") as handle:
        data = upload.file.read()
        handle.write(data)
        handle.flush()
        try:
            return predictor.read(handle.name)
        except CXRImageError as error:
            raise HTTPException(422, f"{name}: {error.reason}") from None


def _png(picture: Image.Image) -> Response:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")
