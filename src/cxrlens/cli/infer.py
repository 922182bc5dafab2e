"""CLI commands that use a trained classifier on new radiographs: ``predict``, ``export``, ``serve``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from cxrlens.cli._common import (DEVICE, MAX_PIXELS, BoxRuleName, CamMethod, Compile, Device, MaxPixels, Threshold,
                                 cli_errors, console, print_error)
from cxrlens.data.io import IMAGE_SUFFIXES, CXRImageError, is_dicom, printable
from cxrlens.explain import BoxRule
from cxrlens.folders import check_folder, claim_folder

if TYPE_CHECKING:
    from cxrlens.infer.predictor import Prediction, Predictor

app = typer.Typer()

Checkpoint = Annotated[Path, typer.Argument(help="Classifier checkpoint (best.ckpt of train-supervised / finetune, "
                                                 "refined.ckpt of refine).")]
Refine = Annotated[str, typer.Option(help="none | pcm (the checkpoint's PCM from cxrlens refine)")]
Runtime = Annotated[str, typer.Option(help="auto | torch | onnx (ONNX Runtime on the export of cxrlens export --onnx); "
                                           "auto times one batch in both where an export is at hand and runs the "
                                           "faster")]
OnnxPath = Annotated[Optional[Path], typer.Option("--onnx", help="ONNX export (default: CKPT with .onnx).")]


def _predictor(checkpoint: Path, cam: str, refine: str, runtime: str, onnx: Path | None, device: str,
               box_rule: str, threshold: float | None, max_pixels: int, batch_size: int,
               display_side: int, compile: bool):  # noqa: ANN202
    from cxrlens.infer.predictor import Predictor

    if refine not in ("none", "pcm"):
        raise ValueError(f"--refine must be none or pcm, not {refine!r}")
    rule = BoxRule.from_option(box_rule, threshold)
    return Predictor(checkpoint, cam, refine == "pcm", runtime, onnx, device, rule, max_pixels, batch_size,
                     display_side, compile)


def _image_files(inputs: list[Path]) -> list[Path]:
    """The inputs, with every folder replaced by the images in it (recursively, sorted)."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{path}: folder holds no PNG, JPEG or DICOM files")
            files += found
        else:
            files.append(path)
    return files


@app.command()
def predict(
    checkpoint: Checkpoint,
    images: Annotated[list[Path], typer.Argument(help="PNG / JPEG / DICOM files (any size, 8 or 16 bit) or folders.")],
    out: Annotated[Path, typer.Option(help="Folder for IMAGE.json, IMAGE-FINDING.png overlays, predictions.csv.")] = Path("predictions"),
    cam: CamMethod = "gradcam",
    refine: Refine = "none",
    top: Annotated[int, typer.Option(help="Overlays for this many most probable findings.", min=0)] = 3,
    finding: Annotated[Optional[list[str]], typer.Option(help="Overlay these findings instead of the top ones (repeatable).")] = None,
    runtime: Runtime = "auto",
    onnx: OnnxPath = None,
    device: Device = DEVICE,
    compile: Compile = False,
    box_rule: BoxRuleName = "relative",
    threshold: Threshold = None,
    max_side: Annotated[int, typer.Option(help="Longest side of the overlay pictures.", min=16)] = 1024,
    max_pixels: MaxPixels = MAX_PIXELS,
    batch_size: Annotated[int, typer.Option(help="Images read and predicted per forward pass.", min=1)] = 8,
    overwrite: Annotated[bool, typer.Option(help="Replace predictions already in --out.")] = False,
    dicom_out: Annotated[bool, typer.Option(help="For DICOM inputs also write IMAGE-sc-FINDING.dcm (Secondary "
                                                 "Capture of each overlay) and IMAGE-sr.dcm (TID 1500 report: "
                                                 "probabilities, calls, boxes) into the source's study.")] = False,
) -> None:
    """Per-finding probabilities, heatmap overlays and predicted boxes (original pixels) for each image."""
    from cxrlens.infer.outputs import (assign_stems, clear_earlier, clear_written, refuse_other_table,
                                       refuse_overwrite, write_prediction, write_probability_table)

    failures = without_dicom = 0
    with cli_errors():
        if dicom_out:
            import highdicom  # noqa: F401 - a missing [dicom-out] extra fails here, before any work
        predictor = _predictor(checkpoint, cam, refine, runtime, onnx, device, box_rule, threshold, max_pixels,
                               batch_size, max_side, compile)
        unknown = [name for name in finding or [] if name not in predictor.classes]
        if unknown:
            raise ValueError(f"--finding {unknown[0]!r} is not one of the model's findings: {', '.join(predictor.classes)}")
        inputs = [*images, checkpoint, *([onnx] if onnx else [])]
        check_folder(out, "predictions", inputs)
        files = _image_files(images)
        stems = assign_stems(out, [str(path) for path in files])
        if overwrite:
            refuse_other_table(out, predictor.classes)
        else:
            refuse_overwrite(out, stems, predictor.classes)
        claim_folder(out, "predictions", inputs)
        about = {"checkpoint": str(checkpoint), "cam": predictor.method, "runtime": predictor.runtime,
                 "runtime_reason": predictor.runtime_reason,
                 "box_rule": {"rule": predictor.rule.rule, "threshold": predictor.rule.threshold}}
        table = Table(title=f"{checkpoint.name}: {predictor.method} ({predictor.runtime}: {predictor.runtime_reason})")
        for column in ("image", "top findings", "boxes"):
            table.add_column(column)
        rows = []
        for (path, result), stem in zip(predictor.predict_files(files), stems):
            if isinstance(result, CXRImageError):
                print_error(str(result))
                failures += 1
                continue
            for warning in result.warnings:
                console.print(f"{printable(path.name)}: {warning}", style="yellow", markup=False, highlight=False)
            shown = finding or [name for name, _ in result.ranked()[:top]]
            clear_earlier(out, stem)
            written = _write_dicom_out(result, path, out, stem, shown, predictor, checkpoint, max_side) \
                if dicom_out else {}
            without_dicom += written is None
            try:
                write_prediction(result, out, stem, shown, {**about, **({"dicom": written} if written else {})}, top,
                                 max_side)
            except BaseException:  # no JSON lists the DICOM files: they would outlive any --overwrite
                clear_written(out, written or {}, stem)
                raise
            rows.append((result.source, result.probabilities, [name for name in predictor.classes if result.positive(name)]))
            table.add_row(path.name, ", ".join(f"{name} {p:.2f}" for name, p in result.ranked()[:top]),
                          str(sum(len(result.boxes[name]) for name in shown)))
        write_probability_table(out, rows, predictor.classes)
    console.print(table)
    typer.echo(f"{len(rows)} image(s) predicted into {out}" + (f"; {failures} could not be read" if failures else "")
               + (f"; {without_dicom} without their DICOM out" if without_dicom else ""))
    if failures or without_dicom:
        raise typer.Exit(code=2)


def _write_dicom_out(result: Prediction, path: Path, out: Path, stem: str, shown: list[str], predictor: Predictor,
                     checkpoint: Path, max_side: int) -> dict | None:
    """The DICOM files of ``--dicom-out`` for one input: {} for a non-DICOM input, None when they could not be
    written (both said in one line that names no header value: an error's text may quote one)."""
    from cxrlens.infer.dicom_out import DicomOutError, source_header, write_dicom_out

    if not is_dicom(path):
        console.print(f"{printable(path.name)}: not a DICOM file; --dicom-out writes DICOM for DICOM inputs only",
                      style="yellow", markup=False, highlight=False)
        return {}
    try:
        header = source_header(path)
        return write_dicom_out(result, header, out, stem, shown, predictor.method, str(checkpoint),
                               predictor.fingerprint, max_side)
    except DicomOutError as error:  # names the file and the keyword or finding, never a value
        print_error(str(error))
    except Exception as error:  # noqa: BLE001 - highdicom's and pydicom's messages may quote identifiers
        print_error(f"{printable(str(path))}: DICOM out not written ({type(error).__name__} while building or "
                    "writing it)")
    return None


@app.command()
def export(
    checkpoint: Checkpoint,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write an ONNX model (probabilities, logits, CAM feature maps).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: CKPT with .onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.", min=17)] = 18,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export.")] = False,
) -> None:
    """Export a classifier for deployment and check it against PyTorch (max abs difference per output)."""
    from cxrlens.infer.onnx_model import export_onnx

    with cli_errors():
        if not onnx:
            raise ValueError("choose a format: --onnx")
        result = export_onnx(checkpoint, out, opset, overwrite)
    worst = max(result["max_abs_diff"].values())
    typer.echo(f"wrote {result['path']} (opset {opset}) and its model card {result['card']}; "
               "max |ONNX Runtime - PyTorch| "
               + ", ".join(f"{name} {value:.1e}" for name, value in result["max_abs_diff"].items()))
    if worst >= 1e-4:
        print_error(f"{result['path']}: ONNX Runtime differs from PyTorch by {worst:.1e} (> 1e-4)")
        raise typer.Exit(code=2)


@app.command()
def serve(
    checkpoint: Checkpoint,
    host: Annotated[str, typer.Option(help="Interface to listen on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    cam: CamMethod = "gradcam",
    refine: Refine = "none",
    runtime: Runtime = "auto",
    onnx: OnnxPath = None,
    device: Device = DEVICE,
    compile: Compile = False,
    box_rule: BoxRuleName = "relative",
    threshold: Threshold = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload (MiB).", min=0.001)] = 32.0,
    max_pixels: MaxPixels = MAX_PIXELS,
    max_pending: Annotated[int, typer.Option(help="Requests in progress before new ones get 429.", min=1)] = 16,
    body_timeout: Annotated[float, typer.Option(help="Seconds an upload may take before 408.", min=0.1)] = 30.0,
    max_connections: Annotated[int, typer.Option(help="Open connections before new ones get 503.", min=1)] = 64,
) -> None:
    """A web page and a JSON API (POST /v1/predict, docs at /docs) for one checkpoint."""
    with cli_errors():
        import uvicorn

        from cxrlens.serve.app import create_app
        from cxrlens.serve.limits import ServeLimits
        from cxrlens.serve.server import server_config

        limits = ServeLimits(max_upload_bytes=int(max_upload_mb * 2**20), max_pending=max_pending,
                             body_timeout=body_timeout, max_connections=max_connections)
        predictor = _predictor(checkpoint, cam, refine, runtime, onnx, device, box_rule, threshold, max_pixels, 1,
                               limits.picture_side, compile)
        application = create_app(predictor, limits)
    console.print(f"serving {checkpoint} on http://{host}:{port}/ (API docs at /docs); Ctrl+C stops")
    uvicorn.Server(server_config(application, host, port)).run()
