"""Make docs/report.png, the README's picture of a report, from SYNTHETIC phantoms only.

The sample radiographs must not be committed (nor anything derived from them), so this
script draws 600 chest-like phantoms in NIH ChestX-ray14's public layout (two dark
lungs, a bright mediastinum; a bright round "Mass" with its box in a third of them,
a large "Cardiomegaly" heart in another third), trains a small classifier on them,
evaluates it (AUROC and localization against the phantom boxes, next to the location
prior), renders the HTML report and screenshots it in headless Chromium.

    python docs/make_report_picture.py [--work runs/report-picture] [--out docs/report.png]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrlens.config import EvaluateConfig, ModelConfig, SplitConfig, TrainConfig
from cxrlens.data.cache import prepare_cache
from cxrlens.data.registry import open_dataset
from cxrlens.evaluate import evaluate
from cxrlens.evaluate.report import write_report
from cxrlens.train.supervised import train_supervised

SIZE = 256


def _phantom(rng: np.random.Generator, finding: str) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    image = 0.75 + 0.05 * rng.standard_normal((SIZE, SIZE))
    for centre in (80, 176):  # lungs
        image -= 0.45 * (((x - centre) / 45) ** 2 + ((y - 120) / 85) ** 2 < 1)
    heart = 32 if finding != "Cardiomegaly" else 52
    image += 0.2 * (((x - 135) / heart) ** 2 + ((y - 175) / (heart * 0.8)) ** 2 < 1)
    boxes = []
    if finding == "Mass":
        cx, cy, r = rng.uniform(60, 196), rng.uniform(70, 170), rng.uniform(8, 16)
        image += 0.5 * (((x - cx) ** 2 + (y - cy) ** 2) < r * r)
        boxes.append((cx - r - 2, cy - r - 2, 2 * r + 4, 2 * r + 4))
    if finding == "Cardiomegaly":
        boxes.append((135 - heart - 4, 175 - heart * 0.8 - 4, 2 * heart + 8, 1.6 * heart + 8))
    return np.clip(image, 0, 1), boxes


def make_phantoms(root: Path, count: int = 600, seed: int = 0) -> Path:
    """A synthetic tree in NIH ChestX-ray14's layout (images/, Data_Entry_2017.csv, BBox_List_2017.csv)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries, boxes = [], []
    for number in range(count):
        finding = ("No Finding", "Mass", "Cardiomegaly")[number % 3]
        name = f"{number:08d}_000.png"
        pixels, finding_boxes = _phantom(rng, finding)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(root / "images" / name)
        entries.append({"Image Index": name, "Finding Labels": finding, "Follow-up #": 0, "Patient ID": number,
                        "Patient Age": 50, "Patient Gender": "F", "View Position": "PA",
                        "OriginalImage[Width": SIZE, "Height]": SIZE, "OriginalImagePixelSpacing[x": 0.14, "y]": 0.14})
        for bx, by, bw, bh in finding_boxes:  # NIH boxes are in 1024-px coordinates
            scale = 1024 / SIZE
            boxes.append({"Image Index": name, "Finding Label": finding, "Bbox [x": bx * scale, "y": by * scale,
                          "w": bw * scale, "h]": bh * scale})
    pd.DataFrame(entries).to_csv(root / "Data_Entry_2017.csv", index=False)
    pd.DataFrame(boxes).to_csv(root / "BBox_List_2017.csv", index=False)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/report-picture"))
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    root = make_phantoms(args.work / "phantoms")
    cache = prepare_cache(open_dataset("nih", [root]), args.work / "cache", size=128)
    train = TrainConfig(epochs=8, batch_size=32, accumulate=1, lr=1e-3, loss="dynamic-bce", scheduler="none",
                        num_workers=0, accelerator="cpu", augment="none")
    train_supervised(cache.directory, args.work / "train", ModelConfig(backbone="resnet18"), train,
                     split=SplitConfig(splits="patient"))
    evaluation = args.work / "evaluate"
    evaluate(args.work / "train" / "checkpoints" / "best.ckpt", cache.directory, evaluation,
             EvaluateConfig(split="test", splits="patient", bootstrap=200, gallery=8), device="cpu")
    page = write_report(evaluation)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        view = browser.new_page(viewport={"width": 1100, "height": 800}, device_scale_factor=1)
        view.goto(page.resolve().as_uri())
        view.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
