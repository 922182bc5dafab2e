"""Load test of ``cxrlens serve`` on loopback: N uploads of real radiographs from K concurrent
clients against a checkpoint; prints statuses, throughput and latency percentiles.

    python benchmarks/serve_load.py CKPT [--data-root DIR] [--requests 200] [--clients 8] [--cam gradcam]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxrlens.infer.predictor import Predictor
from cxrlens.paths import find_data_root
from cxrlens.serve.app import ServeLimits, create_app
from cxrlens.serve.background import background_server
from cxrlens.serve.loadtest import run_load_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--images", type=int, default=16, help="distinct real radiographs cycled through")
    parser.add_argument("--cam", default="gradcam")
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("no sample data root: pass --data-root or set CXRLENS_DATA")
    images = sorted((root / "nih-chestxray14-bbox" / "images").glob("*.png"))[:args.images]
    predictor = Predictor(args.checkpoint, args.cam, runtime=args.runtime, device=args.device)
    with background_server(create_app(predictor, ServeLimits(max_pending=max(16, 2 * args.clients)))) as url:
        report = run_load_test(url, images, args.requests, args.clients)
    print(json.dumps({"checkpoint": str(args.checkpoint), "cam": args.cam, "runtime": args.runtime,
                      **report.summary()}, indent=2))


if __name__ == "__main__":
    main()
