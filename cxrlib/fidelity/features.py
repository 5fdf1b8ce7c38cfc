"""Feature spaces for the fidelity metrics: one small interface, three extractors.

``extract_features(extractor, images, batch_size, device) -> np.ndarray [N, D]`` with ``images``
uint8 ``[N, 1, S, S]`` (0..255) or float ``[N, 1, S, S]`` in ``[0, 1]`` (the :class:`CXRDataset`
conventions). ``extractor`` is a :class:`FeatureExtractor`, or any trained torch classifier (then its
penultimate features are used, see :class:`PenultimateFeatures`).

============ ======================================================================================
``study``    (default, no download) the penultimate layer of a CXR classifier the study trained on
             the *real training split*: :func:`study_extractor(classifier) <study_extractor>`.
             Features that know what a CXR finding looks like at the study's image size.
``xrv``      torchxrayvision's DenseNet-121 (``densenet121-res224-all``), 1024-d pooled features,
             the "FXD" of the CXR literature: :func:`xrv_extractor(weights=...) <xrv_extractor>`.
``inception`` Inception-v3 pool3 (2048-d) as in torchmetrics' FID ("FID" proper; an ImageNet
             network, so a weak judge of radiographs): :func:`inception_extractor(weights=...)`.
============ ======================================================================================

Pretrained weights cannot be downloaded where this project is built, and a pretrained network is
never silently replaced by another: requesting ``xrv`` or ``inception`` without their weights
raises :class:`FeatureWeightsUnavailable`, which names the missing file and how to provide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils import resolve_device, tqdm

EXTRACTOR_NAMES = ("study", "xrv", "inception")

# Where the pretrained weights come from (for the error messages; nothing is downloaded).
XRV_WEIGHTS_NAME = "densenet121-res224-all"
XRV_WEIGHTS_URL = (
    "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
)
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"


class FeatureWeightsUnavailable(RuntimeError):
    """A pretrained feature extractor was requested but its weights (or package) are not available."""


@dataclass(frozen=True)
class FeatureExtractor:
    """A named feature network: ``net`` maps float images ``[B, 1, S, S]`` in ``[0, 1]`` to ``[B, D]``.

    ``name`` is recorded in results tables (FD in one feature space is not comparable to another).
    """

    name: str
    net: nn.Module


class PenultimateFeatures(nn.Module):
    """The penultimate features of a trained classifier: the input of its classification head.

    How the features are found (documented rule, no guessing per architecture):

    1. if the classifier has a method ``penultimate(x)``, its output is used;
    2. otherwise the input of the classifier's **last** ``nn.Linear`` (in ``modules()`` order, which
       is the head for torchvision's ResNet ``fc``, DenseNet/EfficientNet/ConvNeXt ``classifier``
       and a small CNN ending in a linear layer) is captured with a forward pre-hook while the
       classifier runs, and flattened to ``[B, D]``.

    A classifier with neither is an error naming its class.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self._head = None
        if not callable(getattr(classifier, "penultimate", None)):
            linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError(
                    f"{type(classifier).__name__} has no nn.Linear head and no penultimate(x) method: "
                    "cannot tell which layer is penultimate. Add a penultimate(x) method returning [B, D]."
                )
            self._head = linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._head is None:
            return self.classifier.penultimate(x).flatten(1)
        captured = []
        handle = self._head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.classifier(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"the head {self._head} of {type(self.classifier).__name__} ran {len(captured)} times "
                "in one forward pass; define penultimate(x) on the classifier instead"
            )
        return captured[0].flatten(1)


def study_extractor(classifier: nn.Module, name: str = "study") -> FeatureExtractor:
    """The default feature space: penultimate features of a classifier trained on the real training split.

    ``classifier`` takes float images ``[B, 1, S, S]`` in ``[0, 1]`` (the study's classifiers,
    ``cxrlib.models.classifiers.build_classifier``, do their own input normalisation).
    """
    return FeatureExtractor(name, PenultimateFeatures(classifier))


class _XRVFeatures(nn.Module):
    """torchxrayvision DenseNet-121 pooled features (1024-d) on its expected input.

    torchxrayvision expects 1-channel images scaled to ``[-1024, 1024]`` at 224 x 224."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return self.model.features2(x * 2048.0 - 1024.0)


def xrv_extractor(weights: str | os.PathLike | None = None) -> FeatureExtractor:
    """torchxrayvision DenseNet-121 (``densenet121-res224-all``) features, the "FXD" feature space.

    ``weights``: a **safetensors** file holding that model's ``state_dict``. torchxrayvision
    publishes its weights as pickled whole models; cxrlib does not unpickle files (issue 7), so
    convert once on a machine where you trust the download::

        python -c "import torchxrayvision as xrv; from safetensors.torch import save_file; \\
          save_file(xrv.models.DenseNet(weights='densenet121-res224-all').state_dict(), 'xrv-densenet121-res224-all.safetensors')"

    The path can also come from the environment variable ``CXR_XRV_WEIGHTS``.
    """
    weights = weights or os.environ.get("CXR_XRV_WEIGHTS")
    if not weights:
        raise FeatureWeightsUnavailable(
            f"extractor 'xrv' needs torchxrayvision's {XRV_WEIGHTS_NAME} weights, which are not bundled and "
            "cannot be downloaded here. Download them on a machine with internet access "
            f"({XRV_WEIGHTS_URL}), convert them to safetensors (see cxrlib.fidelity.xrv_extractor's "
            "docstring) and pass weights='path/to/xrv-densenet121-res224-all.safetensors' or set CXR_XRV_WEIGHTS. "
            "Or use extractor='study' (no download)."
        )
    path = Path(weights)
    if not path.is_file():
        raise FeatureWeightsUnavailable(f"extractor 'xrv': weights file {str(path)!r} does not exist")
    import torchxrayvision as xrv

    from ..io import load_tensors

    model = xrv.models.DenseNet(weights=None, num_classes=18)
    model.load_state_dict(load_tensors(path))
    return FeatureExtractor("xrv", _XRVFeatures(model.eval()))


class _InceptionFeatures(nn.Module):
    """torchmetrics' FID network (torch-fidelity's Inception-v3 port), pool3 features (2048-d).

    Grey images are repeated to 3 channels and given as uint8, as torchmetrics' FID expects; the
    network resizes to 299 x 299 itself."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.net(x8).reshape(len(x), -1)


def inception_extractor(weights: str | os.PathLike | None = None) -> FeatureExtractor:
    """Inception-v3 pool3 features exactly as torchmetrics' ``FrechetInceptionDistance`` computes them.

    Needs the package ``torch-fidelity`` (not in cxrlib's lock: ``pip install torch-fidelity``) and
    its weights file ``weights-inception-2015-12-05-6726825d.pth`` (a plain state dict), passed as
    ``weights=`` or through the environment variable ``CXR_INCEPTION_WEIGHTS``. Nothing is downloaded.
    """
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as e:  # pragma: no cover - torchmetrics is a hard dependency
        raise FeatureWeightsUnavailable(f"extractor 'inception' needs torchmetrics' image extras: {e}") from e
    if not _TORCH_FIDELITY_AVAILABLE:
        raise FeatureWeightsUnavailable(
            "extractor 'inception' (FID) needs the package torch-fidelity, which cxrlib does not install: "
            "run `pip install torch-fidelity`, then pass weights='path/to/"
            f"{INCEPTION_WEIGHTS_FILE}' (download from {INCEPTION_WEIGHTS_URL}). "
            "Or use extractor='study' (no download)."
        )
    weights = weights or os.environ.get("CXR_INCEPTION_WEIGHTS")
    if not weights:
        raise FeatureWeightsUnavailable(
            f"extractor 'inception' (FID) needs the Inception-v3 weights file {INCEPTION_WEIGHTS_FILE}, which "
            f"cannot be downloaded here. Download it ({INCEPTION_WEIGHTS_URL}) and pass weights='path/to/"
            f"{INCEPTION_WEIGHTS_FILE}' or set CXR_INCEPTION_WEIGHTS. Or use extractor='study' (no download)."
        )
    path = Path(weights)
    if not path.is_file():
        raise FeatureWeightsUnavailable(f"extractor 'inception': weights file {str(path)!r} does not exist")
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path))
    return FeatureExtractor("inception", _InceptionFeatures(net))


def get_extractor(name: str, *, classifier: nn.Module | None = None, weights: str | os.PathLike | None = None) -> FeatureExtractor:
    """Build an extractor from its notebook-parameter name (``study``, ``xrv``, ``inception``)."""
    if name == "study":
        if classifier is None:
            raise ValueError(
                "extractor 'study' needs classifier=<a classifier trained on the real training split> "
                "(cxrlib.classify.train_classifier)"
            )
        return study_extractor(classifier)
    if name == "xrv":
        return xrv_extractor(weights)
    if name == "inception":
        return inception_extractor(weights)
    raise ValueError(f"unknown feature extractor {name!r}; expected one of {list(EXTRACTOR_NAMES)}")


def as_float_images(images, where: str = "images") -> torch.Tensor:
    """Validate ``[N, 1, S, S]`` uint8 (0..255) or float in [0, 1]; return float32 in [0, 1] (CPU)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{where}: expected shape [N, 1, S, S], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not torch.is_floating_point(x):
        raise ValueError(f"{where}: expected uint8 or float images, got dtype {x.dtype}")
    if len(x) and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise ValueError(
            f"{where}: float images must lie in [0, 1]; got range [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    return x.float().clamp(0, 1)


@torch.no_grad()
def extract_features(extractor, images, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Features ``float64 [N, D]`` of ``images`` (uint8 ``[N,1,S,S]`` or float in [0, 1]).

    ``extractor``: a :class:`FeatureExtractor`, or a trained classifier ``nn.Module`` (its
    penultimate features, :class:`PenultimateFeatures`). The network runs in eval mode (batch norm
    and dropout frozen, so a feature never depends on its batch) and its train/eval state is restored.
    """
    if isinstance(extractor, nn.Module) and not isinstance(extractor, FeatureExtractor):
        extractor = study_extractor(extractor, name=type(extractor).__name__)
    if not isinstance(extractor, FeatureExtractor):
        raise TypeError(f"extractor must be a FeatureExtractor or a torch nn.Module, got {type(extractor).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    x_all = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    net = extractor.net
    was_training = net.training
    net.eval()
    try:
        net.to(dev)
        out = []
        for start in tqdm(range(0, len(x_all), batch_size), desc=f"features ({extractor.name})", unit="batch"):
            xb = as_float_images(x_all[start : start + batch_size]).to(dev)
            out.append(net(xb).double().cpu())
    finally:
        net.train(was_training)
    if not out:
        raise ValueError("extract_features: no images given")
    return torch.cat(out).numpy()
