"""Downstream CXR classifiers: torchvision backbones adapted to 1-channel, small images, and a small CNN.

``build_classifier(arch, num_outputs, in_channels=1, image_size=..., pretrained=False)`` returns a
:class:`CXRClassifier`: a fixed input normalization, a backbone and a linear head producing one
logit per output (multi-label: one sigmoid per label; multi-class: a softmax over the outputs).

Architectures (``CLASSIFIER_ARCHS``):

=================== ==================================================================================
``small_cnn``       VGG-like: a 3x3 conv-BN-ReLU stem (32 channels), then 3 stages of 2x2 max-pool +
                    two 3x3 conv-BN-ReLU (64, 128, 256 channels), global average pool, dropout 0.2,
                    linear; 1.2 M parameters. For the ``smoke``/``cpu`` profiles at 32-64 px (total
                    stride 8: a 64 px image ends at 8x8).
``densenet121``     CheXNet's backbone (Rajpurkar 2017).
``resnet18``,       He 2016.
``resnet50``
``inception_v3``    Szegedy 2016 (Rajaraman 2024's classifier); built without the auxiliary head.
``efficientnet_b0`` Tan & Le 2019 (Schaudt 2023).
``convnext_tiny``   Liu 2022 (Khosravi 2024, Schaudt 2023).
=================== ==================================================================================

Adaptations, applied identically with and without ImageNet weights (so a pretrained and a scratch
model have the same architecture):

1. **One input channel.** The first convolution is rebuilt with ``in_channels`` inputs. With ImageNet
   weights its kernel is summed over the RGB axis (for ``in_channels=1``): the response of the RGB
   network to a gray image copied into three channels (up to ImageNet's per-channel normalization,
   which point 3 replaces by one gray mean and std); for other ``in_channels`` the mean RGB kernel
   is repeated and rescaled by ``3 / in_channels``.
2. **Small images** (``image_size < SMALL_IMAGE_SIZE`` = 128): torchvision's stems divide the image
   by 4 (stride-2 conv + stride-2 pool, or ConvNeXt's 4x4 patchify) before the first stage, which at
   32-64 px leaves 1x1-2x2 maps at the last stage. The stem's downsampling is removed instead, so the
   total stride is 8 (32 px -> 4x4, 64 px -> 8x8), as CIFAR-style ResNets do:

   * ResNet: ``conv1`` stride 2 -> 1, ``maxpool`` -> identity;
   * DenseNet-121: ``features.conv0`` stride 2 -> 1, ``features.pool0`` -> identity;
   * Inception-V3: ``Conv2d_1a_3x3`` stride 2 -> 1, ``maxpool1`` and ``maxpool2`` -> identity
     (its unpadded convolutions make the arithmetic differ: 32 px -> 5x5, 64 px -> 13x13 at
     ``Mixed_7c``);
   * EfficientNet-B0: stem conv stride 2 -> 1, first block of stage 2 (``features[2][0]``) stride
     2 -> 1;
   * ConvNeXt-Tiny: the 4x4 stride-4 patchify becomes a 4x4 stride-1 convolution with "same"
     zero padding (1 pixel before, 2 after).

   Kernel shapes are unchanged, so ImageNet weights load into the adapted networks as they are.
   At ``image_size >= 128`` the torchvision architectures are used unchanged (total stride 32).
3. **Input normalization**: images arrive in ``[0, 1]`` and are normalized with the gray-level
   ImageNet statistics (mean 0.449, std 0.226: the means of the RGB values) inside the model, so
   callers never normalize.
4. The ImageNet head is replaced by ``Linear(features, num_outputs)`` (ConvNeXt keeps its
   LayerNorm; EfficientNet keeps its dropout).

Pretrained weights are read from torch's hub cache (``$TORCH_HOME/hub/checkpoints``) with
``weights_only=True`` (no pickled code), downloading them first when the network allows. When they
cannot be had, :class:`PretrainedWeightsUnavailable` says which file to put where. There is no
silent fallback to random initialization.
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn as nn

SMALL_IMAGE_SIZE = 128  # below this, torchvision stems lose their downsampling (see module docstring)
GRAY_MEAN = 0.449  # mean of ImageNet's RGB means (0.485, 0.456, 0.406)
GRAY_STD = 0.226  # mean of ImageNet's RGB stds (0.229, 0.224, 0.225)


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were requested but could not be downloaded or found in the torch hub cache."""


class CXRClassifier(nn.Module):
    """Normalization + backbone with a ``num_outputs`` logit head. ``forward(x)`` takes images in
    ``[0, 1]`` of shape ``[B, in_channels, S, S]`` and returns logits ``[B, num_outputs]``.

    ``config`` holds what :func:`build_classifier` needs to rebuild the architecture; ``task`` and
    ``label_names`` are set by the training loop and saved with the weights.
    """

    def __init__(self, backbone: nn.Module, *, arch: str, num_outputs: int, in_channels: int, image_size: int,
                 pretrained: bool = False):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(GRAY_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(GRAY_STD), persistent=False)
        self.config = {"arch": arch, "num_outputs": int(num_outputs), "in_channels": int(in_channels),
                       "image_size": int(image_size), "pretrained": bool(pretrained)}
        self.task = "multilabel"
        self.label_names: tuple[str, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(
                f"{self.config['arch']} expects images [B, {self.config['in_channels']}, S, S], got {tuple(x.shape)}"
            )
        return self.backbone((x - self.mean) / self.std)

    def head(self) -> nn.Linear:
        """The final ``Linear`` layer (the head :func:`build_classifier` attached)."""
        return [m for m in self.backbone.modules() if isinstance(m, nn.Linear)][-1]

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The features the head sees, ``[B, D]`` (``head()(penultimate(x)) == forward(x)``): used as
        the study's own feature space for fidelity metrics (:mod:`cxrlib.fidelity`)."""
        captured = []
        handle = self.head().register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self(x)
        finally:
            handle.remove()
        return captured[-1]


# --- small CNN ------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A VGG-like CNN for 32-64 px on a CPU: a conv-BN-ReLU stem of ``widths[0]`` channels, then per
    further width a 2x2 max-pool and two 3x3 conv-BN-ReLU; global average pool, dropout, linear."""

    def __init__(self, in_channels: int = 1, num_outputs: int = 14, widths=(32, 64, 128, 256), dropout: float = 0.2):
        super().__init__()

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        layers = conv(in_channels, widths[0])
        for cin, cout in zip(widths[:-1], widths[1:]):
            # pool first so that the wide, late stages run on small maps (this is what keeps it fast)
            layers += [nn.MaxPool2d(2), *conv(cin, cout), *conv(cout, cout)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1], num_outputs)

    def forward(self, x):
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


# --- torchvision backbones ------------------------------------------------------------------------
def _tv():
    import torchvision.models as tvm

    return tvm


# arch -> (torchvision builder name, weights enum name, builder kwargs for the pretrained-compatible layout)
_TORCHVISION = {
    "densenet121": ("densenet121", "DenseNet121_Weights", {}),
    "resnet18": ("resnet18", "ResNet18_Weights", {}),
    "resnet50": ("resnet50", "ResNet50_Weights", {}),
    # aux_logits=True only so that ImageNet weights (which include the aux head) load; removed below
    "inception_v3": ("inception_v3", "Inception_V3_Weights", {"aux_logits": True, "init_weights": True, "transform_input": False}),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", {}),
    "convnext_tiny": ("convnext_tiny", "ConvNeXt_Tiny_Weights", {}),
}
CLASSIFIER_ARCHS: tuple[str, ...] = ("small_cnn", *_TORCHVISION)


def _new_conv(old: nn.Conv2d, in_channels: int, **changes) -> nn.Conv2d:
    """A copy of ``old`` with ``in_channels`` inputs (weights folded from RGB) and ``changes`` applied."""
    kw = dict(kernel_size=old.kernel_size, stride=old.stride, padding=old.padding, dilation=old.dilation,
              groups=old.groups, bias=old.bias is not None)
    kw.update(changes)
    new = nn.Conv2d(in_channels if old.in_channels == 3 else old.in_channels, old.out_channels, **kw)
    with torch.no_grad():
        if old.in_channels == 3 and in_channels != 3:
            w = old.weight.sum(dim=1, keepdim=True)  # gray copied into R, G, B == summed kernel
            new.weight.copy_(w.repeat(1, in_channels, 1, 1) / in_channels)
        else:
            new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    return new


def _set_stride(conv: nn.Conv2d, stride: int) -> None:
    conv.stride = (stride, stride)


def _adapt(arch: str, m: nn.Module, in_channels: int, small: bool, num_outputs: int) -> nn.Module:
    """Apply the 1-channel / small-image / new-head changes listed in the module docstring."""
    if arch.startswith("resnet"):
        m.conv1 = _new_conv(m.conv1, in_channels, stride=1 if small else 2)
        if small:
            m.maxpool = nn.Identity()
        m.fc = nn.Linear(m.fc.in_features, num_outputs)
    elif arch == "densenet121":
        m.features.conv0 = _new_conv(m.features.conv0, in_channels, stride=1 if small else 2)
        if small:
            m.features.pool0 = nn.Identity()
        m.classifier = nn.Linear(m.classifier.in_features, num_outputs)
    elif arch == "inception_v3":
        m.Conv2d_1a_3x3.conv = _new_conv(m.Conv2d_1a_3x3.conv, in_channels, stride=1 if small else 2)
        if small:
            m.maxpool1 = nn.Identity()
            m.maxpool2 = nn.Identity()
        m.AuxLogits = None  # the aux head needs >= 17x17 maps at Mixed_6e; not used for CXR training
        m.aux_logits = False
        m.fc = nn.Linear(m.fc.in_features, num_outputs)
    elif arch == "efficientnet_b0":
        m.features[0][0] = _new_conv(m.features[0][0], in_channels, stride=1 if small else 2)
        if small:
            _set_stride(m.features[2][0].block[1][0], 1)  # depthwise conv of the first stride-2 block
        m.classifier[-1] = nn.Linear(m.classifier[-1].in_features, num_outputs)
    elif arch == "convnext_tiny":
        if small:
            # "same" padding for the even 4x4 kernel (1 before, 2 after), explicit to avoid torch's
            # padding="same" copy warning
            conv = _new_conv(m.features[0][0], in_channels, stride=1, padding=0)
            m.features[0][0] = nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)), conv)
        else:
            m.features[0][0] = _new_conv(m.features[0][0], in_channels)
        m.classifier[-1] = nn.Linear(m.classifier[-1].in_features, num_outputs)
    else:  # pragma: no cover - guarded by build_classifier
        raise AssertionError(arch)
    return m


def _hub_checkpoint_path(url: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``arch`` from the torch hub cache (downloaded if possible),
    loaded with ``weights_only=True``. Raises :class:`PretrainedWeightsUnavailable` naming the file."""
    builder, enum_name, _ = _TORCHVISION[arch]
    weights = getattr(_tv(), enum_name).DEFAULT
    path = _hub_checkpoint_path(weights.url)
    try:
        # load_state_dict_from_url reads the cached file when present and only then downloads
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:  # URLError / OSError offline, RuntimeError on a bad hash, UnpicklingError
        raise PretrainedWeightsUnavailable(
            f"pretrained=True for arch={arch!r} needs torchvision's ImageNet weights {weights} "
            f"({weights.url}), which could not be loaded: {type(e).__name__}: {str(e)[:200]}. "
            f"Provide them offline by copying that file to {path} (torch's hub cache; set TORCH_HOME to "
            f"use another cache folder; on a machine with network, `python -c \"import torchvision; "
            f"torchvision.models.{builder}(weights='DEFAULT')\"` fills it), or use pretrained=False."
        ) from e
    if arch == "densenet121":
        # torchvision's DenseNet checkpoints use old key names ("norm.1"); same remap as torchvision's
        # densenet._load_state_dict, which we cannot call because it loads with weights_only=False.
        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
        state = {(pattern.sub(r"\1\2", k) if pattern.match(k) else k): v for k, v in state.items()}
    return state


def build_classifier(arch: str, num_outputs: int, *, in_channels: int = 1, image_size: int,
                     pretrained: bool = False) -> CXRClassifier:
    """Build a classifier for ``in_channels`` x ``image_size``² images with ``num_outputs`` logits.

    ``pretrained=True`` loads torchvision's ImageNet weights (not available for ``small_cnn``) or
    raises :class:`PretrainedWeightsUnavailable`; the head is always freshly initialized.
    Weight initialization draws from torch's global RNG: seed it (or use ``torch.random.fork_rng``).
    """
    # 1. check the arguments
    if arch not in CLASSIFIER_ARCHS:
        raise ValueError(f"unknown classifier arch {arch!r}; expected one of {list(CLASSIFIER_ARCHS)}")
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs must be a positive integer, got {num_outputs!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    min_size = 16 if arch == "small_cnn" else 32
    if not isinstance(image_size, int) or image_size < min_size:
        raise ValueError(f"image_size for arch {arch!r} must be an integer >= {min_size}, got {image_size!r}")
    if arch == "small_cnn":
        if pretrained:
            raise ValueError("arch='small_cnn' has no pretrained weights; use pretrained=False or a torchvision arch")
        net = SmallCNN(in_channels, num_outputs)
        return CXRClassifier(net, arch=arch, num_outputs=num_outputs, in_channels=in_channels, image_size=image_size)
    # 2. torchvision model in its ImageNet layout (so that pretrained weights load unchanged)
    builder, _, kwargs = _TORCHVISION[arch]
    net = getattr(_tv(), builder)(weights=None, **kwargs)
    if pretrained:
        net.load_state_dict(imagenet_state_dict(arch))
    # 3. 1 channel, small-image stem, new head
    net = _adapt(arch, net, in_channels, image_size < SMALL_IMAGE_SIZE, num_outputs)
    return CXRClassifier(net, arch=arch, num_outputs=num_outputs, in_channels=in_channels, image_size=image_size,
                         pretrained=pretrained)

