"""``cxrlens serve``: the JSON API on real radiographs, hostile input answered with 4xx JSON, a
load test on loopback, and the page driven in headless Chromium."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from browser import CHROMIUM, launch_chromium
from cxrlens.checkpoints import ClassifierCheckpoint, load_checkpoint
from cxrlens.infer.predictor import Predictor
from cxrlens.serve.app import create_app
from cxrlens.serve.limits import ServeLimits
from cxrlens.serve.loadtest import run_load_test
from cxrlens.serve.server import background_server
from synthetic import write_dicom

LIMITS = ServeLimits(max_upload_bytes=2 * 2**20, max_pending=4)


@pytest.fixture(scope="module")
def predictor(tiny_classifier: Path) -> Predictor:
    return Predictor(tiny_classifier, max_pixels=2_000_000)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    return TestClient(create_app(predictor, LIMITS))


@pytest.fixture(scope="module")
def radiographs(nih_bbox_root: Path, oblong_radiograph: Path) -> list[Path]:
    """Three real radiographs: two NIH PNGs (512 px) and a non-square Cohen JPEG."""
    return [*sorted((nih_bbox_root / "images").glob("*.png"))[:2], oblong_radiograph]


def _upload(client: TestClient | httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/v1/predict", files={"file": (name, data)})


def test_predict_api_on_a_real_radiograph(client: TestClient, predictor: Predictor, radiographs: list[Path]) -> None:
    path = radiographs[2]
    response = _upload(client, path.name, path.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    width, height = Image.open(path).size
    assert (body["filename"], body["width"], body["height"], body["cam"]) == (path.name, width, height, "gradcam")
    probabilities = [finding["probability"] for finding in body["findings"]]
    assert len(probabilities) == 14 and probabilities == sorted(probabilities, reverse=True)
    thresholds = load_checkpoint(predictor.checkpoint, ClassifierCheckpoint).thresholds
    assert thresholds  # chosen on the validation split when the classifier was trained
    for finding in body["findings"]:  # the checkpoint's operating thresholds decide each call
        assert finding["threshold"] == pytest.approx(thresholds.get(finding["finding"], 0.5))
        assert finding["positive"] == (finding["probability"] >= finding["threshold"])
    for finding in body["findings"]:
        for box in finding["boxes"]:
            assert 0 <= box["x"] <= box["x"] + box["w"] <= width + 1e-6
            assert 0 <= box["y"] <= box["y"] + box["h"] <= height + 1e-6
    picture = Image.open(io.BytesIO(client.get(body["image_url"]).content))
    assert picture.size == (width, height)
    overlay = client.get(body["findings"][0]["overlay_url"])
    assert overlay.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(overlay.content)).size == (width, height)
    missing = client.get(body["image_url"].replace("image.png", "overlay/Unicorn.png"))
    assert missing.status_code == 404 and "Unicorn" in missing.json()["detail"]


def test_openapi_documents_the_predict_endpoint_and_its_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"200", "411", "413", "422", "429"} <= set(operation["responses"])
    assert "PredictionOut" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="findings"' in page.text and 'id="overlay"' in page.text


def test_hostile_uploads_get_4xx_json_and_the_server_stays_up(client: TestClient, radiographs: list[Path],
                                                               tmp_path: Path) -> None:
    real = radiographs[0].read_bytes()
    no_pixels = write_dicom(tmp_path / "report.dcm", np.zeros((4, 4)))
    import pydicom

    dataset = pydicom.dcmread(no_pixels)
    del dataset.PixelData
    dataset.save_as(no_pixels)
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, format="PNG")  # 4 M pixels in a few kB; the cap is 2 M
    cases = {
        "huge.png": (real + bytes(3 * 2**20), 413, "exceeds the limit"),
        "notes.png": (b"just some text, not a radiograph", 422, "not a recognised image"),
        "cut.png": (real[: len(real) // 3], 422, "truncated"),
        "empty.png": (b"", 422, "empty"),
        "report.dcm": (no_pixels.read_bytes(), 422, "no pixel data"),
        "bomb.png": (bomb.getvalue(), 422, "exceeds the cap"),
    }
    for name, (data, status, words) in cases.items():
        response = _upload(client, name, data)
        assert response.status_code == status, (name, response.text)
        detail = response.json()["detail"]
        assert words in detail, (name, detail)
        if status == 422:
            assert detail.startswith(name), detail
    assert client.post("/v1/predict").status_code == 422  # no file field
    chunked = client.post("/v1/predict", content=iter([b"--x\r\n", b"data"]),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["detail"]
    assert _upload(client, radiographs[0].name, real).status_code == 200
    pixels = np.asarray(Image.open(radiographs[0]).convert("L"), dtype=np.uint16) * 257
    dicom = write_dicom(tmp_path / "real.dcm", pixels, BitsStored=16, HighBit=15)
    answered = _upload(client, "real.dcm", dicom.read_bytes())
    assert answered.status_code == 200 and answered.json()["width"] == pixels.shape[1]


def test_requests_beyond_the_pending_limit_get_429(predictor: Predictor, radiographs: list[Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)
    original = predictor.predict

    def slow_predict(images, sources):  # noqa: ANN001, ANN202
        entered.release()
        release.wait(30)
        return original(images, sources)

    monkeypatch.setattr(predictor, "predict", slow_predict)
    data = radiographs[0].read_bytes()
    with background_server(create_app(predictor, ServeLimits(max_pending=1))) as url:
        with httpx.Client(base_url=url, timeout=60) as first, httpx.Client(base_url=url, timeout=60) as second:
            held = threading.Thread(target=lambda: _upload(first, "a.png", data))
            held.start()
            assert entered.acquire(timeout=30)
            refused = _upload(second, "b.png", data)
            release.set()
            held.join()
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "retry" in refused.json()["detail"]
            assert _upload(second, "c.png", data).status_code == 200


def test_load_200_requests_from_8_clients_without_server_errors(predictor: Predictor, radiographs: list[Path]) -> None:
    with background_server(create_app(predictor, ServeLimits(max_pending=16))) as url:
        report = run_load_test(url, radiographs, requests=200, clients=8)
    assert len(report.latencies_ms) == 200
    assert report.server_errors == 0 and report.statuses == {200: 200}, report.summary()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_in_headless_chromium_shows_findings_and_overlay(predictor: Predictor, radiographs: list[Path],
                                                              tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with background_server(create_app(predictor, LIMITS)) as url, playwright.sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.set_input_files("#file", str(radiographs[0]))
        page.wait_for_function("document.querySelectorAll('#findings tbody tr').length === 14", timeout=60_000)
        page.wait_for_function("document.getElementById('overlay').complete && "
                               "document.getElementById('overlay').naturalWidth > 0", timeout=60_000)
        first = page.get_attribute("#overlay", "src")
        rows = page.locator("#findings tbody tr")
        names = rows.locator("td:first-child").all_inner_texts()
        calls = rows.locator("td.call").all_inner_texts()
        rows.nth(3).click()
        page.wait_for_function(f"document.getElementById('overlay').src.endsWith('/overlay/{names[3]}.png') && "
                               "document.getElementById('overlay').naturalWidth > 0", timeout=60_000)
        radiograph_width = page.evaluate("document.getElementById('radiograph').naturalWidth")
        page.screenshot(path=str(tmp_path / "page.png"))
        page.set_input_files("#file", str(junk))
        page.wait_for_function("document.getElementById('status').className === 'error'", timeout=60_000)
        error = page.inner_text("#status")
        browser.close()
    assert first.endswith(f"/overlay/{names[0]}.png") and len(set(names)) == 14
    assert len(calls) == 14 and all(re.fullmatch(r"(positive|negative) \(\d+\.\d %\)", call) for call in calls)
    assert radiograph_width == Image.open(radiographs[0]).size[0]
    assert error.startswith("junk.png:") and "not a recognised image" in error


def test_serve_and_export_commands_refuse_bad_options_in_one_line(tiny_classifier: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxrlens.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["serve", str(tiny_classifier), "--refine", "pcm"])
    assert refused.exit_code == 2 and "has no PCM" in refused.output and "Traceback" not in refused.output
    missing = runner.invoke(app, ["serve", str(tmp_path / "nothing.ckpt")])
    assert missing.exit_code == 2 and "checkpoint does not exist" in missing.output
    no_format = runner.invoke(app, ["export", str(tiny_classifier)])
    assert no_format.exit_code == 2 and "--onnx" in no_format.output


def _raw(url: str, head: str, body: bytes, timeout: float = 10) -> tuple[bytes, float, bytes]:
    """Send ``head`` and ``body`` over a raw socket: (the answer's first bytes, seconds to them, what follows
    until the server closes)."""
    import socket
    import time

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        started = time.monotonic()
        connection.sendall(head.encode() + body)
        answer = connection.recv(4096)
        seconds = time.monotonic() - started
        rest = b""
        while chunk := connection.recv(4096):  # the server closes: recv returns b"" instead of timing out
            rest += chunk
    return answer, seconds, rest


def test_oversize_is_refused_from_the_headers_and_stalled_bodies_time_out(predictor: Predictor) -> None:
    head = ("POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            "Content-Length: {}\r\n\r\n")
    with background_server(create_app(predictor, ServeLimits(body_timeout=1.0, header_timeout=1.0))) as url:
        answer, seconds, _ = _raw(url, head.format(99_999_999_999), b"abc")  # declares 100 GB, sends 3 bytes
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower() and seconds < 5
        answer, seconds, _ = _raw(url, head.format(100_000), b"--x\r\n")  # a body that never arrives
        assert answer.startswith(b"HTTP/1.1 408") and 0.9 < seconds < 8
        answer, _, _ = _raw(url, head.format(10).replace("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n"),
                            b"4\r\nabcd\r\n")  # chunked: not held to its Content-Length, so refused
        assert answer.startswith(b"HTTP/1.1 411")
        for opening in ("", "POST /v1/pre"):  # silent, and half a request line: closed after the header timeout
            answer, seconds, _ = _raw(url, opening, b"")
            assert answer == b"" and 0.9 < seconds < 8
        assert httpx.get(f"{url}/v1/model").status_code == 200


def test_a_failed_upload_names_the_upload_never_a_server_path(client: TestClient, tmp_path: Path) -> None:
    flat = write_dicom(tmp_path / "flat.dcm", np.full((32, 32), 100, dtype=np.uint16))  # no contrast
    response = _upload(client, "flat.dcm", flat.read_bytes())
    assert response.status_code == 422 and response.json()["detail"].startswith("flat.dcm: ")
    assert "/tmp" not in response.json()["detail"] and "no contrast" in response.json()["detail"]


def test_sixteen_maximal_uploads_at_once_keep_memory_bounded(tiny_classifier: Path, tmp_path: Path) -> None:
    """16 concurrent 8000 x 8000 RGB PNGs (64 M pixels, the default cap) against ``cxrlens serve`` in its own
    process: all answered, and the server's peak resident memory stays under 2.5 GB (measured: 1.2 GB)."""
    from concurrent.futures import ThreadPoolExecutor

    from cxrlens.serve.hostile import _peak_rss_mb, serving

    ramp = np.linspace(0, 255, 8000, dtype=np.float32)
    rgb = np.empty((8000, 8000, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = ramp[None, :], ramp[:, None], 128
    big = tmp_path / "big.png"
    Image.fromarray(rgb).save(big, compress_level=1)
    del rgb
    data = big.read_bytes()
    with serving(tiny_classifier, "--device", "cpu", "--max-pending", "16") as (url, process):
        def upload(number: int) -> int:
            return httpx.post(f"{url}/v1/predict", files={"file": (f"big{number}.png", data)}, timeout=300).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(upload, range(16)))
        peak = _peak_rss_mb(process.pid)
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 1, statuses
    assert peak < 2500, f"server peak RSS {peak:.0f} MiB"


def test_hostile_mix_gets_only_the_expected_answers(tiny_classifier: Path, radiographs: list[Path]) -> None:
    from cxrlens.serve.hostile import EXPECTED, run_hostile_test, serving

    with serving(tiny_classifier, "--device", "cpu", "--body-timeout", "1", "--max-pending", "4") as (url, process):
        report = run_hostile_test(url, process, radiographs, seconds=4, clients=8, stall_seconds=1)
        assert process.poll() is None  # the server is still up
    assert report.unexpected() == {}, report.summary()
    assert set(report.statuses) == set(EXPECTED) and report.open_connections == 0, report.summary()
