"""Shared fixtures: the real sample data root (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlens.paths import find_data_root


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--data-root", default=None, help="sample data root (default $CXRLENS_DATA or ../shared/data)")


@pytest.fixture(scope="session")
def data_root(request: pytest.FixtureRequest) -> Path:
    root = find_data_root(request.config.getoption("--data-root"))
    if root is None:
        pytest.skip("no sample data root: pass --data-root or set CXRLENS_DATA (see ../shared/data/README.md)")
    return root


def _sample(data_root: Path, folder: str) -> Path:
    path = data_root / folder
    if not path.is_dir():
        pytest.skip(f"sample set {folder} is not under the data root {data_root}")
    return path


@pytest.fixture(scope="session")
def nih_bbox_root(data_root: Path) -> Path:
    return _sample(data_root, "nih-chestxray14-bbox")


@pytest.fixture(scope="session")
def nih_sample_root(data_root: Path) -> Path:
    return _sample(data_root, "nih-chestxray14-sample")


@pytest.fixture(scope="session")
def kermany_root(data_root: Path) -> Path:
    return _sample(data_root, "kermany-pneumonia")


@pytest.fixture(scope="session")
def cohen_root(data_root: Path) -> Path:
    return _sample(data_root, "covid-chestxray-dataset")
