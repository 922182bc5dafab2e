"""A hostile load test of ``cxrlens serve``: for a bounded time, concurrent clients send a mix of
valid uploads, malformed files, oversize declarations, stalled bodies and bodies without a length,
against a server in its own process; the report gives the statuses per kind, latency
percentiles, the server's peak resident memory, and the connections still open at the end.

    python benchmarks/serve_load.py CKPT --hostile [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from cxrlens.serve.server import free_port

EXPECTED: dict[str, frozenset[int]] = {
    "valid": frozenset({200, 429}), "malformed": frozenset({422, 429}), "oversize": frozenset({413}),
    "stalled": frozenset({408}), "no-length": frozenset({411}),
}
"""What each kind of request must be answered with (429: the server is busy, as it should say)."""


@dataclass
class HostileReport:
    statuses: dict[str, Counter] = field(default_factory=dict)     # kind -> HTTP status -> count (0: no answer)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    open_connections: int = 0

    def unexpected(self) -> dict[str, dict[int, int]]:
        """Answers outside :data:`EXPECTED` (5xx and no answer included), per kind."""
        return {kind: {status: count for status, count in counts.items() if status not in EXPECTED[kind]}
                for kind, counts in self.statuses.items() if set(counts) - EXPECTED[kind]}

    def summary(self) -> dict:
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"requests": len(self.latencies_ms), "seconds": round(self.seconds, 1),
                "statuses": {kind: dict(sorted(counts.items())) for kind, counts in sorted(self.statuses.items())},
                "unexpected": self.unexpected(), "p50_ms": round(float(np.percentile(latencies, 50)), 1),
                "p99_ms": round(float(np.percentile(latencies, 99)), 1), "server_peak_rss_mb": round(self.peak_rss_mb),
                "open_connections_at_end": self.open_connections}


@contextmanager
def serving(checkpoint: str | Path, *options: str, start_timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``cxrlens serve CHECKPOINT OPTIONS`` in its own process on a free loopback port: (url, process)."""
    port = free_port()
    command = [sys.executable, "-c", "from cxrlens.cli import app; app()", "serve", str(checkpoint),
               "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"cxrlens serve exited: {process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/model", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("cxrlens serve did not start")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def run_hostile_test(url: str, process: subprocess.Popen, files: Sequence[Path], seconds: float = 60.0,
                     clients: int = 8, stall_seconds: float = 60.0, seed: int = 0) -> HostileReport:
    """``clients`` threads send random kinds of request (:data:`EXPECTED`) for ``seconds``; a stalled body
    is given ``stall_seconds`` to be refused. Connections still open are counted after a grace period."""
    payloads = [(Path(path).name, Path(path).read_bytes()) for path in files]
    host, port = url.removeprefix("http://").split(":")
    report = HostileReport()
    started = time.monotonic()

    def client(number: int) -> list[tuple[str, int, float]]:
        rng = random.Random(seed * 1000 + number)
        results = []
        with httpx.Client(base_url=url, timeout=stall_seconds + 30) as session:
            while time.monotonic() - started < seconds:
                kind = rng.choice(sorted(EXPECTED))
                begun = time.perf_counter()
                status = _send(kind, session, host, int(port), rng.choice(payloads), rng, stall_seconds)
                results.append((kind, status, (time.perf_counter() - begun) * 1000))
        return results

    with ThreadPoolExecutor(clients) as pool:
        outcomes = [result for part in pool.map(client, range(clients)) for result in part]
    report.seconds = time.monotonic() - started
    for kind, status, milliseconds in outcomes:
        report.statuses.setdefault(kind, Counter())[status] += 1
        report.latencies_ms.append(milliseconds)
    report.peak_rss_mb = _peak_rss_mb(process.pid)
    deadline = time.monotonic() + 15
    report.open_connections = _established(process.pid, int(port))
    while report.open_connections and time.monotonic() < deadline:  # keep-alive connections close when idle
        time.sleep(0.5)
        report.open_connections = _established(process.pid, int(port))
    return report


def _send(kind: str, session: httpx.Client, host: str, port: int, payload: tuple[str, bytes], rng: random.Random,
          stall_seconds: float) -> int:
    """One request of ``kind``; its HTTP status, or 0 when no answer came."""
    name, data = payload
    try:
        if kind == "valid":
            return session.post("/v1/predict", files={"file": (name, data)}).status_code
        if kind == "malformed":
            cut = data[: rng.randrange(16, max(17, len(data) // 2))] + bytes(rng.randrange(256) for _ in range(32))
            return session.post("/v1/predict", files={"file": (name, cut)}).status_code
        if kind == "no-length":
            return session.post("/v1/predict", content=iter([b"--x\r\n", b"data"]),
                                headers={"content-type": "multipart/form-data; boundary=x"}).status_code
        declared = 99_999_999_999 if kind == "oversize" else 100_000
        return _raw_post(host, port, declared, b"--x\r\n", stall_seconds + 10)
    except httpx.HTTPError:
        return 0


def _raw_post(host: str, port: int, declared: int, sent: bytes, timeout: float) -> int:
    """Declare a ``declared``-byte body, send only ``sent``, and wait for the answer's status (0: none)."""
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout) as connection:
        try:
            connection.sendall(head + sent)
            answer = connection.recv(256)
        except OSError:
            return 0
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _established(pid: int, port: int) -> int:
    """TCP connections the process holds in state ESTABLISHED on its listening ``port``."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = descriptor.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        for line in path.read_text().splitlines()[1:] if path.exists() else ():
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count
