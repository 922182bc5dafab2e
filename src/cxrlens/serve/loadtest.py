"""A load test of ``POST /v1/predict``: N requests from K concurrent clients, statuses and latencies.

``python -m cxrlens.serve.loadtest http://127.0.0.1:8000 IMAGE... --requests 200 --clients 8`` (the defaults)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np


@dataclass(frozen=True)
class LoadReport:
    statuses: dict[int, int]        # HTTP status -> count (0: the connection failed)
    latencies_ms: list[float]
    seconds: float

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500 or status == 0)

    def summary(self) -> dict:
        latencies = np.asarray(self.latencies_ms)
        return {"requests": len(latencies), "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "server_errors": self.server_errors, "seconds": round(self.seconds, 2),
                "requests_per_second": round(len(latencies) / self.seconds, 2),
                **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 1) for q in (50, 90, 99)}}


def run_load_test(url: str, files: Sequence[Path], requests: int = 200, clients: int = 8,
                  timeout: float = 120.0) -> LoadReport:
    """Send ``requests`` uploads (cycling through ``files``) from ``clients`` threads, one connection each."""
    payloads = [(Path(path).name, Path(path).read_bytes()) for path in files]
    jobs = [payloads[i % len(payloads)] for i in range(requests)]

    def client(number: int) -> list[tuple[int, float]]:
        results = []
        with httpx.Client(base_url=url, timeout=timeout) as session:
            for name, data in jobs[number::clients]:
                started = time.perf_counter()
                try:
                    status = session.post("/v1/predict", files={"file": (name, data)}).status_code
                except httpx.HTTPError:
                    status = 0
                results.append((status, (time.perf_counter() - started) * 1000))
        return results

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [result for part in pool.map(client, range(clients)) for result in part]
    seconds = time.perf_counter() - started
    return LoadReport(dict(Counter(status for status, _ in outcomes)), [ms for _, ms in outcomes], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(run_load_test(args.url, args.images, args.requests, args.clients).summary(), indent=2))


if __name__ == "__main__":
    main()
