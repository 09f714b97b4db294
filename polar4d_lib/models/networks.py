"""The 9 network variants: 3 encoders (the paper's custom CNN, ResNet, VGG) × 3 heads (cls, reg, proto).

Every network maps one-channel patterns ``(B, 1, size, size)`` (preprocessed: centred, cropped, scaled) to

- ``cls``: 8 class logits (cross-entropy);
- ``reg``: a 2-vector in [−1, 1]² (tanh) fitted to (cos θ, sin θ) of the class angle, decoded by atan2;
- ``proto``: a 128-d embedding (prototype training, cosine-nearest class mean at inference).

The encoders are followed by the same 512-unit layer (Linear → ReLU, optional dropout). ResNet and VGG
come from ``torchvision.models`` with ``weights=None``: they are trained from scratch (no ImageNet weights
can be downloaded offline, unlike the paper), their first convolution takes one channel, the ImageNet
classifier is dropped (VGG: never built) and a global average pool makes any input size ≥ 32 px work.
"""

from __future__ import annotations

import torch
from torch import nn

from polar4d_lib import conventions
from polar4d_lib._torchvision_compat import import_torchvision

ENCODERS: tuple[str, ...] = ("cnn", "resnet", "vgg")
HEADS: tuple[str, ...] = ("cls", "reg", "proto")
RESNET_DEPTHS: tuple[int, ...] = (18, 34, 50)
VGG_DEPTHS: tuple[int, ...] = (11, 13, 16)
VGG_CONFIGS: dict[int, str] = {11: "A", 13: "B", 16: "D"}  # torchvision.models.vgg.cfgs keys
#: Depth used when none is given (the CPU profiles'; ``paper`` uses ResNet-50 / VGG-16).
DEFAULT_DEPTH: dict[str, int | None] = {"cnn": None, "resnet": 18, "vgg": 11}
HIDDEN_UNITS = 512
EMBEDDING_DIM = 128
HEAD_OUTPUTS: dict[str, int] = {"cls": conventions.N_CLASSES, "reg": 2, "proto": EMBEDDING_DIM}


def custom_cnn(size: int = 64, channels: int = 1) -> tuple[nn.Sequential, int]:
    """The paper's CNN: 3×3 convolutions with 16, 32, 64 channels (no padding) and ReLU, a 2×2 max-pool
    after the second and the third, flattened. Returns the encoder and its number of output features for
    ``size × size`` inputs (64 px → 64·14·14 = 12 544). ``channels``: input channels (1: one pattern; more:
    a stack of patterns of one specimen, e.g. one per probe position in a cell)."""
    side = ((size - 4) // 2 - 2) // 2
    if side < 1:
        raise ValueError(f"the custom CNN needs patterns of at least 10 px, got {size}; use a larger crop size")
    if not (isinstance(channels, int) and channels >= 1):
        raise ValueError(f"the custom CNN takes a whole number ≥ 1 of input channels, got {channels!r}")
    encoder = nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=3), nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    return encoder, 64 * side * side


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """torchvision's initialisation of ResNet and VGG convolutions (Kaiming normal, fan-out, zero bias)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """A freshly initialised copy of ``conv`` that takes a single input channel."""
    return _init_conv(nn.Conv2d(1, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                                padding=conv.padding, bias=conv.bias is not None))


def resnet(depth: int = 18) -> tuple[nn.Sequential, int]:
    """torchvision ResNet-``depth`` (18, 34, 50) from scratch, 1-channel stem, without its classifier:
    global average pool and flatten. Returns the encoder and its feature count (512 or 2048)."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth {depth} is not available; use one of {RESNET_DEPTHS}")
    import_torchvision()
    from torchvision import models

    net = getattr(models, f"resnet{depth}")(weights=None)
    net.conv1 = _one_channel(net.conv1)
    n_features = net.fc.in_features
    encoder = nn.Sequential(*(child for name, child in net.named_children() if name != "fc"), nn.Flatten())
    return encoder, n_features


def vgg(depth: int = 11) -> tuple[nn.Sequential, int]:
    """torchvision VGG-``depth`` (11, 13, 16) from scratch, 1-channel first convolution, its ImageNet
    classifier replaced by a global average pool and flatten. Returns the encoder and 512 features."""
    if depth not in VGG_DEPTHS:
        raise ValueError(f"VGG depth {depth} is not available; use one of {VGG_DEPTHS}")
    import_torchvision()
    from torchvision.models import vgg as tv_vgg

    # torchvision's own layer list of vgg11/13/16 (configurations A, B, D) without building its ImageNet
    # classifier (120 M parameters that would be thrown away), initialised as torchvision.models.VGG does.
    features = tv_vgg.make_layers(tv_vgg.cfgs[VGG_CONFIGS[depth]], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            _init_conv(module)
    features[0] = _one_channel(features[0])
    encoder = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return encoder, features[-3].out_channels


def make_encoder(encoder: str, depth: int | None = None, size: int = 64) -> tuple[nn.Sequential, int]:
    """Encoder ``encoder`` ('cnn', 'resnet', 'vgg') at ``depth`` (None: the default) for ``size`` px inputs."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; use one of {ENCODERS}")
    depth = DEFAULT_DEPTH[encoder] if depth is None else depth
    if encoder == "cnn":
        if depth is not None:
            raise ValueError(f"the custom CNN has a fixed depth; got depth={depth}, pass None")
        return custom_cnn(size)
    return resnet(depth) if encoder == "resnet" else vgg(depth)


def make_head(head: str) -> nn.Module:
    """The output layer on the 512 hidden units: 'cls' → 8 logits, 'reg' → tanh 2-vector, 'proto' → 128-d."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; use one of {HEADS}")
    linear = nn.Linear(HIDDEN_UNITS, HEAD_OUTPUTS[head])
    return nn.Sequential(linear, nn.Tanh()) if head == "reg" else linear


class PolarNet(nn.Module):
    """Per-pixel standardisation → encoder → 512-unit layer (Linear, ReLU, dropout) → head.

    The standardisation ``(x − mean) / std`` uses fixed buffers (identity until
    :meth:`set_input_statistics` is called with training statistics); they travel in the state dict."""

    def __init__(self, encoder: nn.Module, n_features: int, head: str, dropout: float = 0.0, size: int = 64,
                 channels: int = 1) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.head_kind = head
        self.register_buffer("input_mean", torch.zeros(1, channels, size, size))
        self.register_buffer("input_std", torch.ones(1, channels, size, size))
        self.encoder = encoder
        self.hidden = nn.Sequential(nn.Linear(n_features, HIDDEN_UNITS), nn.ReLU(), nn.Dropout(dropout))
        self.head = make_head(head)

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-pixel mean and spread (size × size, or channels × size × size) of the training inputs."""
        self.input_mean.copy_(mean.reshape(self.input_mean.shape))
        self.input_std.copy_(std.reshape(self.input_std.shape))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512 hidden units (B, 512)."""
        return self.hidden(self.encoder((x - self.input_mean) / self.input_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_network(encoder: str, depth: int | None, head: str, size: int = 64, dropout: float = 0.0,
                  channels: int = 1) -> PolarNet:
    """One of the 9 variants: ``encoder`` in ENCODERS (``depth`` None = DEFAULT_DEPTH), ``head`` in HEADS,
    for ``size × size`` inputs of ``channels`` channels (more than one: the custom CNN only). Weights come
    from torch's global RNG (seed it first)."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; use one of {HEADS}")
    if channels != 1 and encoder != "cnn":
        raise ValueError(f"only the custom CNN takes {channels} input channels; {encoder} takes one")
    module, n_features = custom_cnn(size, channels) if channels != 1 else make_encoder(encoder, depth, size)
    return PolarNet(module, n_features, head, dropout, size, channels)
