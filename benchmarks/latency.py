"""Inference latency like paper 003 Table 4: ms per image at 256 x 256, batch 1 and batch 32,
and parameter counts, in PyTorch as trained (eager), PyTorch as predict / evaluate / serve run
it (:func:`cxrlens.models.inference.inference_model`: batch norms folded, channels-last), the
same compiled (their ``--compile``) and ONNX Runtime, with PyTorch / ONNX Runtime ratios;
MultiRes overhead as a ratio to its standard backbone measured in the same run (paper 003:
1.09x for ResNet-50).

Every model is the deployed graph (:class:`cxrlens.infer.onnx_model.ExportedClassifier`:
probabilities, logits and CAM feature maps), 1-channel input, 14 findings, random weights
(latency does not depend on them). Each timing is the median over rounds after warm-up;
a round runs every model once in turn, so drifts of the machine do not bias one model.
Parameter counts are given for our 1-channel models and for 3-channel inputs, the count
paper 003 reports.

    python benchmarks/latency.py [--device cpu|cuda] [--out runs/bench/latency.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cxrlens.config import ModelConfig
from cxrlens.infer.onnx_model import ExportedClassifier, OnnxClassifier, write_onnx
from cxrlens.models import build_model, count_parameters
from cxrlens.models.inference import inference_model

MODELS = {
    "ResNet50": ModelConfig(backbone="resnet50"),
    "MultiRes-ResNet50": ModelConfig(arch="multires", backbone="resnet50", pooling="lse"),
    "EfficientNet-B4": ModelConfig(backbone="efficientnet_b4"),
    "MultiRes-EfficientNet-B4": ModelConfig(arch="multires", backbone="efficientnet_b4", pooling="lse"),
    "DenseNet121": ModelConfig(backbone="densenet121"),
}
RUNTIMES = ("eager", "torch", "compiled", "onnx")
"""eager: the model as trained; torch: :func:`cxrlens.models.inference.inference_model` (what predict, evaluate and
serve run); compiled: the same with ``compile=True`` (their ``--compile``); onnx: ONNX Runtime."""
MULTIRES_PAIRS = {"MultiRes-ResNet50": "ResNet50", "MultiRes-EfficientNet-B4": "EfficientNet-B4"}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, nargs="+", default=[10, 3],
                        help="timed rounds per batch size (each round runs every model once)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/latency.json"))
    return parser.parse_args()


def _interleaved_ms_per_image(runs: dict[str, Callable[[], object]], batch: int, rounds: int,
                              synchronize: Callable[[], None]) -> dict[str, float]:
    """Median ms per image of each run, timed in rounds that run every model once in turn, so that
    drifts of the machine (frequency, other load) hit all models alike and their ratios stay fair."""
    for run in runs.values():  # warm-up: allocator, kernel selection, ORT graph optimisation
        run()
        run()
    synchronize()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            tick = time.perf_counter()
            run()
            synchronize()
            timings[name].append(time.perf_counter() - tick)
    return {name: 1000 * statistics.median(values) / batch for name, values in timings.items()}


def main() -> None:
    args = _arguments()
    if len(args.rounds) != len(args.batches):
        raise SystemExit("give one --rounds value per --batches value")
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    rows: dict[str, dict] = {}
    deployed: dict[str, torch.nn.Module] = {}
    compiled: dict[str, torch.nn.Module] = {}
    eager: dict[str, torch.nn.Module] = {}
    sessions: dict[str, OnnxClassifier] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            config = MODELS[name].model_copy(update={"num_classes": 14})
            torch.manual_seed(0)
            model = build_model(config).eval()
            path = Path(scratch) / f"{name}.onnx"
            write_onnx(model, args.size, path, metadata={"model_config": config.model_dump(mode="json")})
            sessions[name] = OnnxClassifier(path, providers=providers)
            eager[name] = ExportedClassifier(model).to(device).eval()
            deployed[name] = ExportedClassifier(inference_model(model.to(device), args.size)).eval()
            compiled[name] = ExportedClassifier(inference_model(model, args.size, compile=True)).eval()
            rows[name] = {"params": count_parameters(model),
                          "params_3ch": count_parameters(build_model(config.model_copy(update={"in_chans": 3}))),
                          "onnx_providers": sessions[name].session.get_providers()}
        for batch, rounds in zip(args.batches, args.rounds):
            images = torch.randn(batch, 1, args.size, args.size, device=device)
            runs = {**{("eager", n): (lambda m=m: m(images)) for n, m in eager.items()},
                    **{("torch", n): (lambda m=m: m(images)) for n, m in deployed.items()},
                    **{("compiled", n): (lambda m=m: m(images)) for n, m in compiled.items()},
                    **{("onnx", n): (lambda s=s: s(images)) for n, s in sessions.items()}}
            with torch.inference_mode():
                ms = _interleaved_ms_per_image(runs, batch, rounds, synchronize)
            for (runtime, name), value in ms.items():
                rows[name][f"{runtime}_b{batch}_ms"] = value
            print(f"batch {batch}: " + "; ".join(f"{runtime} {name} {value:.1f}"
                                                 for (runtime, name), value in ms.items()), flush=True)
    overhead = {f"{multi} / {standard}": {key: rows[multi][key] / rows[standard][key]
                                          for key in rows[multi] if key.endswith("_ms")}
                for multi, standard in MULTIRES_PAIRS.items() if multi in rows and standard in rows}
    versus_onnx = {name: {f"{runtime}_b{batch}": row[f"{runtime}_b{batch}_ms"] / row[f"onnx_b{batch}_ms"]
                          for runtime in ("torch", "compiled") for batch in args.batches} for name, row in rows.items()}
    result = {"device": _describe(device), "size": args.size, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rounds": dict(zip(map(str, args.batches), args.rounds)), "models": rows,
              "multires_overhead": overhead, "paper_003_multires_resnet50_overhead": 1.09,
              "pytorch_over_onnx": versus_onnx}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(_markdown(result, args.batches))
    print(f"wrote {args.out}")


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def _markdown(result: dict, batches: list[int]) -> str:
    columns = [f"{runtime} b{batch}" for batch in batches for runtime in RUNTIMES]
    lines = [f"ms per image at {result['size']} px on {result['device']}", "",
             "| model | params (1-ch) | params (3-ch) | " + " | ".join(columns) + " |",
             "|---" * (3 + len(columns)) + "|"]
    for name, row in result["models"].items():
        cells = [f"{row[f'{runtime}_b{batch}_ms']:.1f}" for batch in batches for runtime in RUNTIMES]
        lines.append(f"| {name} | {row['params']:,} | {row['params_3ch']:,} | " + " | ".join(cells) + " |")
    for name, ratios in result["pytorch_over_onnx"].items():
        lines.append("")
        lines.append(f"{name}, PyTorch / ONNX Runtime: "
                     + ", ".join(f"{key} {value:.2f}x" for key, value in ratios.items()))
    for pair, ratios in result["multires_overhead"].items():
        lines.append("")
        lines.append(f"{pair}: " + ", ".join(f"{key[:-3]} {value:.2f}x" for key, value in ratios.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
