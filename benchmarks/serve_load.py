"""Load test of ``cxrlens serve`` on loopback: N uploads of real radiographs from K concurrent
clients against a checkpoint; prints statuses, throughput and latency percentiles.

With ``--hostile``: ``cxrlens serve`` in its own process gets, for ``--seconds``, a mix of
valid uploads, malformed files, oversize declarations, stalled bodies and bodies without a
length from K clients (:mod:`cxrlens.serve.hostile`); prints the statuses per kind, p50 /
p99 latency, the server's peak resident memory and the connections left open.

    python benchmarks/serve_load.py CKPT [--data-root DIR] [--requests 200] [--clients 8] [--cam gradcam]
    python benchmarks/serve_load.py CKPT --hostile [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxrlens.infer.predictor import Predictor
from cxrlens.paths import find_data_root
from cxrlens.serve.app import create_app
from cxrlens.serve.hostile import run_hostile_test, serving
from cxrlens.serve.limits import ServeLimits
from cxrlens.serve.loadtest import run_load_test
from cxrlens.serve.server import background_server


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
    parser.add_argument("--hostile", action="store_true", help="the hostile mix against a server process")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the hostile mix")
    args = parser.parse_args()
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("no sample data root: pass --data-root or set CXRLENS_DATA")
    images = sorted((root / "nih-chestxray14-bbox" / "images").glob("*.png"))[:args.images]
    if args.hostile:
        with serving(args.checkpoint, "--cam", args.cam, "--runtime", args.runtime, "--device", args.device,
                     "--body-timeout", "5") as (url, process):
            report = run_hostile_test(url, process, images, args.seconds, args.clients, stall_seconds=5)
        print(json.dumps({"checkpoint": str(args.checkpoint), "hostile": True, **report.summary()}, indent=2))
        return
    predictor = Predictor(args.checkpoint, args.cam, runtime=args.runtime, device=args.device)
    with background_server(create_app(predictor, ServeLimits(max_pending=max(16, 2 * args.clients)))) as url:
        report = run_load_test(url, images, args.requests, args.clients)
    print(json.dumps({"checkpoint": str(args.checkpoint), "cam": args.cam, "runtime": args.runtime,
                      **report.summary()}, indent=2))


if __name__ == "__main__":
    main()
