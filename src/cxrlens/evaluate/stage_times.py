"""Where an evaluation's time goes: wall seconds per stage, written to ``metrics.json`` as ``seconds``.

``with stages("forward"): ...`` adds the block's wall time to that stage; a stage entered
twice accumulates. ``total`` is measured by the caller around everything, so the stages
and what is left (``other``) add up to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimes:
    """Wall seconds per named stage of one job."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def summary(self) -> dict[str, float]:
        """Each stage, ``other`` (the rest) and ``total`` since this object was made, in seconds (3 decimals)."""
        total = time.perf_counter() - self._started
        other = max(0.0, total - sum(self.seconds.values()))
        return {**{stage: round(value, 3) for stage, value in self.seconds.items()}, "other": round(other, 3),
                "total": round(total, 3)}
