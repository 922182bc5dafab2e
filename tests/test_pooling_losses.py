"""Pooling against float64 direct formulas and their limits; losses against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxrlens.models.pooling import GlobalAvgPool, LSELBAPool, LSEPool, lse_pool
from cxrlens.train.losses import dynamic_weighted_bce, multilabel_soft_margin, positive_weighted_bce, positive_weights


def _direct_lse(maps: np.ndarray, r: float) -> np.ndarray:
    """(1/r) log(mean exp(r x)) in float64 without any shifting."""
    return np.log(np.exp(r * maps.astype(np.float64)).mean(axis=(-2, -1))) / r


@pytest.mark.parametrize("r", [0.5, 1.0, 5.0, 10.0, 30.0])
def test_lse_matches_direct_float64(r: float) -> None:
    maps = torch.rand(3, 4, 7, 9, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(lse_pool(maps, r).numpy(), _direct_lse(maps.numpy(), r), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(LSEPool(r)(maps).numpy(), _direct_lse(maps.numpy(), r), rtol=1e-5, atol=1e-6)
    # a fixed r >= 1 takes the fused logsumexp, a learned (tensor) r the shifted expm1 form: both right on maps the
    # size of MultiRes-ResNet-50's at 256 px (the fused one more so: float32 sums 4,096 expm1 terms in the other)
    large = torch.randn(2, 8, 64, 64, generator=torch.Generator().manual_seed(1)).relu()
    reference = _direct_lse(large.numpy(), r)
    np.testing.assert_allclose(lse_pool(large, r).numpy(), reference, rtol=1e-6 if r >= 1 else 3e-5, atol=1e-6)
    np.testing.assert_allclose(lse_pool(large, torch.tensor([r])).numpy(), reference, rtol=3e-5, atol=1e-6)


def test_lse_stays_finite_under_bf16_autocast() -> None:
    """Under bf16 autocast (the quickstart's CPU training) the mean of expm1 rounds to -1 for peaked maps and log1p
    gives -inf (the NaN loss the quickstart first hit); the pooling computes in float32."""
    maps = torch.full((2, 3, 32, 32), -40.0)
    maps[..., 0, 0] = 40.0  # one hot pixel, the rest far below it
    maps.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = LSEPool(10.0)(maps.bfloat16())
    assert pooled.dtype == torch.float32 and torch.isfinite(pooled).all()
    pooled.sum().backward()
    assert torch.isfinite(maps.grad).all()
    reference = lse_pool(maps.detach().double(), 10.0)
    assert torch.allclose(pooled.double(), reference, atol=0.05)


def test_lse_lba_limits_and_probability_preservation() -> None:
    pool = LSELBAPool(r0=5.0, beta=0.0)
    assert pool.r.item() == pytest.approx(6.0)
    zeros, ones = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    torch.testing.assert_close(pool(zeros), torch.zeros(2, 3))
    torch.testing.assert_close(pool(ones), torch.ones(2, 3))
    probabilities = torch.sigmoid(torch.randn(4, 14, 16, 16) * 4)
    pooled = pool(probabilities)
    assert (pooled >= 0).all() and (pooled <= 1).all()
    assert (pooled >= probabilities.mean(dim=(-2, -1)) - 1e-6).all() and (pooled <= probabilities.amax(dim=(-2, -1)) + 1e-6).all()
    np.testing.assert_allclose(pooled.detach().numpy(), _direct_lse(probabilities.numpy(), 6.0), rtol=1e-5, atol=1e-6)
    sharp = LSELBAPool(r0=0.0, beta=math.log(2000.0))  # r -> large approaches max, stays finite
    assert torch.isfinite(sharp(probabilities)).all()
    torch.testing.assert_close(sharp(probabilities), probabilities.amax(dim=(-2, -1)), atol=5e-3, rtol=0)
    mild = LSELBAPool(r0=0.0, beta=math.log(1e-4))  # r -> 0 approaches the mean
    torch.testing.assert_close(mild(probabilities), probabilities.mean(dim=(-2, -1)), atol=1e-4, rtol=0)


def test_lse_lba_beta_learns_and_per_class() -> None:
    pool = LSELBAPool(r0=0.0, num_channels=3, per_class=True)
    maps = torch.rand(2, 3, 4, 4)
    pool(maps).sum().backward()
    assert pool.beta.grad is not None and pool.beta.grad.shape == (3,) and torch.isfinite(pool.beta.grad).all()
    direct = np.stack([_direct_lse(maps[:, c].numpy(), float(pool.r.detach()[c])) for c in range(3)], axis=1)
    np.testing.assert_allclose(pool(maps).detach().numpy(), direct, rtol=1e-5)
    torch.testing.assert_close(GlobalAvgPool()(maps), maps.mean(dim=(-2, -1)))


def test_dynamic_weighted_bce_by_hand() -> None:
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 1.5], [0.1, -0.2]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits).double()
    y = targets.double()
    positives, negatives = y.sum(0), (1 - y).sum(0)  # class 0: 2/2; class 1: 1/3
    beta_p, beta_n = 4 / positives, 4 / negatives
    expected = (-(beta_p * y * torch.log(p)) - beta_n * (1 - y) * torch.log(1 - p)).sum() / 4
    assert dynamic_weighted_bce(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dynamic_bce_safe_without_positives_or_negatives() -> None:
    logits = torch.randn(5, 3, requires_grad=True)
    targets = torch.tensor([[0.0, 1.0, 1.0]] * 5)  # class 0 has no positives, classes 1-2 no negatives
    loss = dynamic_weighted_bce(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    mask = torch.zeros(5, 3, dtype=torch.bool)
    assert dynamic_weighted_bce(logits, targets, mask).item() == 0.0  # nothing known, nothing learned


def test_masked_entries_do_not_contribute() -> None:
    logits, targets = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[:, 2] = False
    changed = targets.clone()
    changed[:, 2] = 1 - changed[:, 2]
    for loss in (dynamic_weighted_bce, multilabel_soft_margin, positive_weighted_bce):
        assert loss(logits, targets, mask).item() == pytest.approx(loss(logits, changed, mask).item())


def test_soft_margin_and_positive_weights_match_torch() -> None:
    logits, targets = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    expected = torch.nn.MultiLabelSoftMarginLoss()(logits, targets)
    assert multilabel_soft_margin(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], dtype=np.float32)
    weights = positive_weights(labels, np.ones_like(labels, dtype=bool))
    torch.testing.assert_close(weights, torch.tensor([3.0, 3.0]))
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=weights)(logits[:4, :2], torch.from_numpy(labels))
    assert positive_weighted_bce(logits[:4, :2], torch.from_numpy(labels), None, weights).item() == pytest.approx(reference.item())
