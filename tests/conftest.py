"""Shared fixtures: the real sample data root (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxrlens.paths import find_data_root


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' own CXRLENS_HOME (the pseudonym key), never the user's ~/.cxrlens."""
    home = tmp_path_factory.mktemp("cxrlens-home")
    os.environ["CXRLENS_HOME"] = str(home)
    return home


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


@pytest.fixture(scope="session")
def oblong_radiograph(cohen_root: Path) -> Path:
    """The first real Cohen JPEG that is not square (checks geometry mapped back to source pixels)."""
    from PIL import Image

    return next(path for path in sorted((cohen_root / "images").glob("*.jp*g")) if len(set(Image.open(path).size)) == 2)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """best.ckpt of a ResNet-18 trained 3 steps at 64 px on the real NIH sample's official train_val images (14
    findings), so every image of the boxed sample (all in the official test list) is held out."""
    from cxrlens.config import ModelConfig, TrainConfig
    from cxrlens.data.cache import prepare_cache
    from cxrlens.data.registry import open_sample
    from cxrlens.train.supervised import train_supervised

    work = tmp_path_factory.mktemp("tiny-classifier")
    sample = prepare_cache(open_sample(data_root, ["nih-sample"]), work / "sample", size=64, workers=2)
    train = TrainConfig(epochs=1, batch_size=16, accumulate=1, num_workers=0, accelerator="cpu", loss="bce",
                        max_steps_per_epoch=3, scheduler="none")
    train_supervised(sample.directory, work / "train", ModelConfig(backbone="resnet18"), train, show_progress=False)
    return work / "train" / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def xrv_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME whose TorchXRayVision cache holds DenseNet-121s with random weights under the published names
    ``densenet121-res224-all`` / ``-nih`` / ``-chex``, saved as TorchXRayVision saves them (pickled modules): the
    published files cannot be downloaded here. Use with ``monkeypatch.setenv("HOME", str(xrv_home))``."""
    import torch

    from cxrlens.models.xrv import published_model, torchxrayvision

    home = tmp_path_factory.mktemp("xrv-home")
    network = torchxrayvision().models.DenseNet(weights=None)
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():  # BatchNorm statistics that are not the identity, so a wrong layer shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    for name in ("densenet121-res224-all", "densenet121-res224-nih", "densenet121-res224-chex"):
        relative = published_model(name).cached_file.relative_to(Path.home())
        (home / relative).parent.mkdir(parents=True, exist_ok=True)
        torch.save(network, home / relative)
    return home


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker computes on its share of the cores (one each with ``-n 2`` on 2 cores): two
    workers with a thread per core each make OpenMP's spinning threads fight over the cores, which doubled the
    suite's time. Subprocesses (DDP tests) inherit the share through OMP_NUM_THREADS (one the user set is kept)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, len(os.sched_getaffinity(0)) // workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
