"""TorchXRayVision's published chest X-ray classifiers as cxrlens backbones (paper 000's "XRV (SOTA)").

TorchXRayVision (Cohen et al. 2022, paper 000 ref. [23]) publishes DenseNet-121s at 224 px
(``densenet121-res224-all``, ``-nih``, ``-chex``, ``-pc``, ``-rsna``, ``-mimic_nb``,
``-mimic_ch``) and a ResNet-50 at 512 px (``resnet50-res512-all``). The package builds the
networks and names their weights; this module

* finds the weights in TorchXRayVision's own cache folder (``~/.torchxrayvision/models_data/``,
  the file name of the release address) or a local file, and only when neither exists
  downloads them with TorchXRayVision's own download code; offline that fails in one line
  naming the file and where to put it (:class:`WeightsUnavailableError`);
* wraps each network as a backbone with timm's interface (four maps at strides 4 to 32; the
  last is what the network's own head pools: DenseNet's ``relu(norm5)``, ResNet's ``layer4``),
  so CAMs, the CAM loss and fine-tuning treat it as any other backbone, and returns its
  18-output head separately (:func:`xrv_head`);
* states its preprocessing: intensities in [-1024, 1024] are ``(x - 0.5) / (1 / 2048)`` of
  cxrlens's [0, 1] pixels (:data:`XRV_NORMALISATION`, exactly ``xrv.datasets.normalize(img,
  255)``), and its centre crop resized to the input resolution is ``fit="crop"``.

Outputs TorchXRayVision never trained (named ``''`` in its label list) are not kept: a
cxrlens model made from one has a head row only for each trained label, under its
canonical name, so they are never scored. Weights files are TorchXRayVision's pickled
modules, read as TorchXRayVision reads them (``torch.load(weights_only=False)``, in
:func:`cxrlens.checkpoints.read_published_weights`): load only files from TorchXRayVision's
releases or your own.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cxrlens.checkpoints import read_published_weights
from cxrlens.config import XRV_BACKBONES, Normalisation
from cxrlens.data.labels import canonical
from cxrlens.extras import install_line
from cxrlens.models.backbones import BACKBONES, WeightsUnavailableError

XRV_NORMALISATION = Normalisation(mean=0.5, std=1 / 2048)
"""[0, 1] pixels -> TorchXRayVision's [-1024, 1024]."""

_PUBLISHED_PREFIXES = ("densenet121-res224-", "resnet50-res512-")
_TRAINED_ON = {
    "all": "NIH ChestX-ray14, PadChest, CheXpert, MIMIC-CXR, Google (NIH images), OpenI and RSNA (NIH images)",
    "nih": "NIH ChestX-ray14", "chex": "CheXpert", "pc": "PadChest", "rsna": "RSNA Pneumonia (NIH images)",
    "mimic_nb": "MIMIC-CXR (NegBio labels)", "mimic_ch": "MIMIC-CXR (CheXpert labels)",
}


def torchxrayvision() -> ModuleType:
    """The ``torchxrayvision`` package, imported without its side effect on the process's warning filters."""
    try:
        with warnings.catch_warnings():  # its import switches every warning off, for every library
            import torchxrayvision as xrv
    except ImportError:
        raise WeightsUnavailableError(f"TorchXRayVision models need its package: {install_line('xrv')}") from None
    return xrv


@dataclass(frozen=True)
class PublishedModel:
    """What TorchXRayVision publishes about one weights name: where the file is, its 18 labels ('' = untrained),
    operating points and input resolution."""

    name: str
    url: str
    labels: tuple[str, ...]
    op_threshs: tuple[float, ...]
    resolution: int

    @property
    def origin(self) -> str:
        """Who trained it on what, as a checkpoint's ``origin``."""
        sets = _TRAINED_ON.get(self.name.rsplit("-", 1)[-1], "the datasets its name gives")
        return (f"TorchXRayVision {self.name}, trained by TorchXRayVision on {sets}; cxrlens does not know which "
                "images, so scores on those datasets may include its training images")

    @property
    def cached_file(self) -> Path:
        """Where TorchXRayVision keeps (and looks for) the weights file."""
        return Path(torchxrayvision().utils.get_cache_dir()).expanduser() / os.path.basename(self.url)

    def trained(self) -> list[tuple[int, str]]:
        """(output row, canonical name) of every label it was trained on."""
        return [(row, canonical(label)) for row, label in enumerate(self.labels) if label]

    def operating_points(self) -> dict[str, float]:
        """Its published per-label operating thresholds (probabilities), by canonical name."""
        return {name: self.op_threshs[row] for row, name in self.trained()
                if row < len(self.op_threshs) and math.isfinite(self.op_threshs[row])}


def published_models() -> dict[str, PublishedModel]:
    """Every TorchXRayVision classifier this cxrlens can load, by weights name."""
    urls = torchxrayvision().models.model_urls
    return {name: PublishedModel(name, entry["weights_url"], tuple(entry["labels"]),
                                 tuple(float(value) for value in entry.get("op_threshs", ())),
                                 int(entry.get("input_resolution", 224 if name.startswith("densenet") else 512)))
            for name, entry in urls.items() if name.startswith(_PUBLISHED_PREFIXES)}


def published_model(name: str) -> PublishedModel:
    models = published_models()
    if name not in models:
        raise ValueError(f"xrv:{name}: not a TorchXRayVision classifier; one of {', '.join(sorted(models))}")
    return models[name]


def weights_file(weights: str | os.PathLike) -> Path:
    """The file of ``weights``: a local file, or for a TorchXRayVision weights name its file in TorchXRayVision's cache,
    downloaded by TorchXRayVision's own code when missing."""
    model = published_models().get(str(weights))
    if model is None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"{path}: weights file does not exist")
        return path
    path = model.cached_file
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torchxrayvision().utils.download(model.url, str(path))
        except Exception as error:  # noqa: BLE001 - network, HTTP and file errors vary by backend
            raise WeightsUnavailableError(
                f"{path}: TorchXRayVision weights {model.name} are not there and could not be downloaded "
                f"({type(error).__name__}); download {model.url} to that path, or pass the file as the weights "
                "file (--weights-file)") from None
    return path


def xrv_head(weights: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The published head (18 x C weight, 18 bias) of ``weights`` (a name or a local file)."""
    path = weights_file(weights)
    state = read_published_weights(path)
    for prefix in ("classifier.", "fc."):
        if f"{prefix}weight" in state:
            return state[f"{prefix}weight"], state[f"{prefix}bias"]
    raise WeightsUnavailableError(f"{path}: has no classifier layer (classifier.* or fc.*)")


class XRVDenseNetFeatures(nn.Module):
    """TorchXRayVision's DenseNet-121 ``features``, tapped after dense blocks 1-3 and at ``relu(norm5)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torchxrayvision().models.DenseNet(weights=None).features
        self.num_features = 1024
        self.feature_info = [{"num_chs": channels, "reduction": 2 ** (level + 2), "module": f"features.{module}"}
                             for level, (channels, module) in enumerate(
                                 [(256, "denseblock1"), (512, "transition1"), (1024, "transition2"),
                                  (1024, "transition3")])]

    def forward_intermediates(self, images: torch.Tensor, indices: int = 4, intermediates_only: bool = False
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps = []
        x = images
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in ("denseblock1", "denseblock2", "denseblock3"):
                taps.append(x)
        final = F.relu(x)
        return final, [*taps, final]


class XRVResNetFeatures(nn.Module):
    """TorchXRayVision's ResNet-50 (torchvision's, 1-channel stem) without its head, tapped after each layer."""

    def __init__(self) -> None:
        super().__init__()
        network = torchvision.models.resnet50(weights=None)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1, self.relu, self.maxpool = network.bn1, network.relu, network.maxpool
        self.layer1, self.layer2 = network.layer1, network.layer2
        self.layer3, self.layer4 = network.layer3, network.layer4
        self.num_features = 2048
        self.feature_info = [{"num_chs": 256 * 2 ** level, "reduction": 2 ** (level + 2), "module": f"layer{level + 1}"}
                             for level in range(4)]

    def forward_intermediates(self, images: torch.Tensor, indices: int = 4, intermediates_only: bool = False
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        taps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            taps.append(x)
        return x, taps


_FEATURES = {XRV_BACKBONES["densenet121"]: XRVDenseNetFeatures, XRV_BACKBONES["resnet50"]: XRVResNetFeatures}


def _create(backbone: str, weights: str | os.PathLike | None, in_chans: int) -> nn.Module:
    if in_chans != 1:
        raise ValueError(f"{backbone}: TorchXRayVision networks take 1-channel images, not {in_chans}")
    network = _FEATURES[backbone]()
    if weights is not None:
        path = weights_file(weights)
        state = {key: value for key, value in read_published_weights(path).items()
                 if not key.startswith(("classifier.", "fc.")) and key != "op_threshs"}
        missing, unexpected = network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsUnavailableError(f"{path}: not {backbone} weights (missing {missing[:2]}, unexpected "
                                          f"{unexpected[:2]})")
    return network


for _backbone in _FEATURES:
    BACKBONES.add(_backbone, lambda weights, in_chans, name=_backbone: _create(name, weights, in_chans))
