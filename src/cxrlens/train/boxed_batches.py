"""Batches that always carry boxed images, for paper 000's CAM loss (in pretraining and in fine-tuning).

Paper 000 has boxes for about 1 % of the images, so random batches would rarely carry any;
:class:`BoxedBatchSampler` puts ``k`` of them in every batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class BoxedBatchSampler:
    """Batches of ``batch_size`` with exactly ``boxed_per_batch`` boxed positions, split across ranks.

    ``boxed`` flags the dataset positions that carry boxes. An epoch has as many batches as
    the whole dataset fills; both pools are cycled in reshuffled passes. The order derives from
    ``(seed, epoch)`` only, so every rank draws the same global plan and takes its share.
    """

    def __init__(self, boxed: np.ndarray, batch_size: int, boxed_per_batch: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        boxed = np.asarray(boxed, dtype=bool)
        if not 0 < boxed_per_batch <= batch_size:
            raise ValueError(f"boxed_per_batch must be in 1..batch_size ({batch_size}), not {boxed_per_batch}")
        if not boxed.any():
            raise ValueError("boxed_per_batch was asked for but no training image has a box")
        self.boxed_positions = np.flatnonzero(boxed)
        self.other_positions = np.flatnonzero(~boxed)
        self.batch_size = batch_size
        self.k = boxed_per_batch
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.boxed_positions) + len(self.other_positions)) // (self.batch_size * self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        generator = np.random.default_rng((self.seed, self.epoch))
        batches = len(self)
        other = self.batch_size - self.k
        # where every image has boxes, the rest of each batch is drawn from the boxed pool too
        other_pool = self.other_positions if len(self.other_positions) else self.boxed_positions
        boxed = _cycled(generator, self.boxed_positions, batches * self.num_replicas * self.k)
        others = _cycled(generator, other_pool, batches * self.num_replicas * other)
        for batch in range(batches):
            slot = batch * self.num_replicas + self.rank
            chosen = [*boxed[slot * self.k:(slot + 1) * self.k], *others[slot * other:(slot + 1) * other]]
            yield [int(position) for position in generator.permutation(chosen)]


def _cycled(generator: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` positions from ``pool``: whole reshuffled passes, as many as needed."""
    passes = max(1, -(-count // max(len(pool), 1)))
    return np.concatenate([generator.permutation(pool) for _ in range(passes)])[:count]
