"""Write docs/reproduction.md from CPU-scale runs of every paper: its tables (``cxrlens tables``) and the direction
of each of the papers' claims, tested paired on our runs.

The runs come first, one per config (about 30 minutes per paper on 2 cores; ``--run`` starts them):

    cxrlens run configs/<config>.yaml --profile cpu --runs RUNS --cache CACHE
    python benchmarks/reproduction_table.py --runs RUNS [--run] [--out docs/reproduction.md]

Each claim is "A > B" between two evaluations of the same images (one cache), tested with
:func:`cxrlens.evaluate.comparison.compare_evaluations` (paired bootstrap 95 % CIs, patients
resampled), or read from a step's own verdict rows (linear evaluation: pretrained > random
init). Its direction: better (CI above 0), worse (CI below 0) or not significant. Figures are
not copied into docs (they are drawn from the images): they are in ``RUNS/<run>/tables/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cxrlens.evaluate.comparison import compare_evaluations, evaluated_cache
from cxrlens.experiment import load_experiment
from cxrlens.paths import bundled_configs
from cxrlens.tables import write_tables

DIRECTIONS = {"pass": "better", "worse": "worse", "not shown": "not significant", "untested": "untested"}


@dataclass(frozen=True)
class PaperClaim:
    """A claim of a paper, what the paper found, and the two evaluations (config, step) that test it here."""

    paper: str
    claim: str
    paper_says: str
    model: tuple[str, str]
    baseline: tuple[str, str]


CLAIMS = (
    PaperClaim("000", "SSL + CAM Loss + FT > Baseline", "better: average AUROC 0.83 vs 0.71 (Table II), 0.86 vs 0.75 "
               "(Table III)", ("paper000-ssl-camloss-ft", "chexpert-test"), ("paper000-baseline", "chexpert-test")),
    PaperClaim("000", "SSL + FT > Baseline", "better: 0.79 vs 0.71 (Table II)", ("paper000-ssl-ft", "chexpert-test"),
               ("paper000-baseline", "chexpert-test")),
    PaperClaim("000", "SSL + CAM Loss + FT > SSL + FT", "better: average AUROC 0.86 vs 0.84 (Table III, NIH); the "
               "CAM loss sharpens the heatmaps (Fig. 4)", ("paper000-ssl-camloss-ft", "nih-test"), ("paper000-ssl-ft", "nih-test")),
    PaperClaim("000", "Grad-CAM > Grad-CAM++ (localization)", "Grad-CAM chosen for better localization (Sec. IV, "
               "no numbers)", ("paper000-cam-methods", "gradcam"), ("paper000-cam-methods", "gradcampp")),
    PaperClaim("000", "Grad-CAM > Score-CAM (localization)", "Grad-CAM chosen for better localization (Sec. IV)",
               ("paper000-cam-methods", "gradcam"), ("paper000-cam-methods", "scorecam")),
    PaperClaim("001", "SimCLR > supervised, Cell", "better: accuracy 91 % vs 82 % (ResNet50)",
               ("paper001-simclr-resnet50", "cell-simclr-test"), ("paper001-simclr-resnet50", "cell-imagenet-test")),
    PaperClaim("001", "SimCLR > supervised, NIH", "better: accuracy 86 % vs 85 % (ResNet50)",
               ("paper001-simclr-resnet50", "nih-simclr-test"), ("paper001-simclr-resnet50", "nih-imagenet-test")),
    PaperClaim("003", "MultiRes > standard", "better localization: Lacc T(IoBB)=0.1 higher in 5 of 8 findings "
               "(Table 2), AUC about equal (0.793 vs 0.796)", ("paper003-resnet50", "multires-eval"),
               ("paper003-resnet50", "standard-eval")),
    PaperClaim("003", "PCM-refined > unrefined (MultiRes)", "better: Lacc up in 5 classes, fewer false positives in 7 "
               "(Tables 2-3)", ("paper003-resnet50", "multires-pcm-eval"), ("paper003-resnet50", "multires-eval")),
    PaperClaim("004", "r0 = 5 > r0 = 0", "mixed: AUC 0.760 vs 0.761, DICE higher in 3 of 8 findings, equal in 1 (Table 3)",
               ("paper004-lse-lba", "lse-lba-r0-5-eval"), ("paper004-lse-lba", "lse-lba-r0-0-eval")),
    PaperClaim("004", "r0 = 10 > r0 = 0", "worse: AUC 0.754 vs 0.761, DICE higher in 1 of 8 findings (Table 3)",
               ("paper004-lse-lba", "lse-lba-r0-10-eval"), ("paper004-lse-lba", "lse-lba-r0-0-eval")),
)


def _difference(row: dict) -> str:
    d = row.get("difference")
    return "" if not d else f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _claim_rows(claim: PaperClaim, runs: Path, scale: str) -> list[str]:
    folders = [runs / f"{config}-{scale}" / step for config, step in (claim.model, claim.baseline)]
    if not all((folder / "metrics.json").is_file() for folder in folders):
        return [f"| {claim.claim} | {claim.paper_says} | not run | | |"]
    result = compare_evaluations(folders[0], folders[1], evaluated_cache(*folders), claim.claim)
    return [f"| {row['claim']} | {claim.paper_says} | {_difference(row) or row['untested']} | "
            f"{DIRECTIONS[row['status']]} | {result['images']} images |" for row in result["verdict"]]


def _linear_eval_rows(runs: Path, scale: str) -> list[str]:
    """Paper 002's probes against their floors: the verdict rows of each linear evaluation."""
    rows = []
    for folder in sorted((runs / f"paper002-simclr-linear-{scale}").glob("linear-*/metrics.json")):
        for row in json.loads(folder.read_text())["verdict"]:
            rows.append(f"| {folder.parent.name}: {row['claim']} | (not tested by the paper) | "
                        f"{_difference(row) or row['untested']} | {DIRECTIONS[row['status']]} | |")
    return rows


def _run_all(runs: Path, cache: Path, scale: str) -> None:
    for path in bundled_configs():
        if scale in load_experiment(path).profiles:
            subprocess.run([str(Path(sys.executable).parent / "cxrlens"), "run", str(path), "--profile", scale, "--runs",
                            str(runs), "--cache", str(cache)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--run", action="store_true", help="first run every config that has the profile")
    parser.add_argument("--out", type=Path, default=Path("docs/reproduction.md"))
    args = parser.parse_args()
    if args.run:
        _run_all(args.runs, args.cache, args.profile)
    lines = ["# Reproduction at CPU scale", "",
             f"Generated by `python benchmarks/reproduction_table.py --runs RUNS` after `cxrlens run configs/<config>.yaml "
             f"--profile {args.profile}` for every config that has that profile. These are **CPU-scale** results: each "
             "paper's experiment on the sample sets of the data root, on 2 CPU cores, with settings meant to learn (each "
             "run's settings are stated above its tables; where a model does not beat its floor, its floor rows and "
             "the claims say so). They are not the papers' full-scale numbers, which need the "
             "full datasets and a GPU (`cxrlens run configs/<config>.yaml`); they show which of the papers' claims "
             "hold in the same direction on small real data, with 95 % CIs.", "",
             "Figures (PR curves, CAM grids, accuracy per pretraining epoch, t-SNE, Grad-CAM) are drawn into each run's "
             "`tables/` folder and its `report.html`; they are not copied here (they show the images).", ""]
    claims: dict[str, list[str]] = {}
    for claim in CLAIMS:
        claims.setdefault(claim.paper, []).extend(_claim_rows(claim, args.runs, args.profile))
    claims.setdefault("002", []).extend(_linear_eval_rows(args.runs, args.profile))
    for paper in ("000", "001", "002", "003", "004"):
        runs = sorted(folder for folder in args.runs.glob(f"*-{args.profile}")
                      if (folder / "summary.json").is_file()
                      and json.loads((folder / "summary.json").read_text())["paper"] == paper)
        lines += [f"# Paper {paper}", ""]
        if not runs:
            lines += ["Not run at this scale.", ""]
            continue
        text, _ = write_tables(runs[0], "md")
        lines += [line.replace("## ", "### ", 1) if line.startswith("## ") else line
                  for line in text.splitlines()[2:] if not line.startswith("![")]
        lines += ["", f"## Paper {paper}: the claims, tested on these runs", "",
                  "| claim | paper | ours: A - B [95 % CI] | direction | on |", "|---|---|---|---|---|",
                  *claims.get(paper, []), ""]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
