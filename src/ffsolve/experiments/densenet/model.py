"""DenseNet-BC (Huang et al., 2017) whose dense blocks can update all their layers in one call.

The modules and parameter names follow torchvision's ``densenet.py`` (``features.denseblock1.
denselayer1.norm1.weight`` ...), so torchvision's ImageNet checkpoints load as they are.

Inside a dense block, layer l reads the concatenation of the block input and the outputs of
layers 0..l-1: the block is a lower-triangular system over its layers. :func:`parallel_layers`
evaluates K consecutive layers of a block *at once* from a guess of their outputs (one Jacobi
step), with a fixed number of tensor operations whatever K is:

* BN1-ReLU of every layer is an affine map per channel; stacked per layer and zero-padded past
  each layer's own input width, it is one broadcast over the shared concatenated features;
* the K 1×1 convolutions are one batched matrix product with weights zero-padded (masked) past
  each layer's input width (triangular: layer l never sees outputs >= l);
* BN2-ReLU is again a broadcast, and the K 3×3 convolutions are one grouped convolution.

Batch norm is folded with its running statistics, so the batched step is for inference (eval
mode) only; training uses the ordinary layer-by-layer forward pass.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ffsolve.data import DataError
from ffsolve.kit import CheckpointError


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1×1 (bottleneck to ``bn_size * growth_rate``) then BN-ReLU-Conv3×3."""

    def __init__(self, in_features: int, growth_rate: int, bn_size: int):
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_features, width, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, features: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.norm1(features)))
        return self.conv2(self.relu2(self.norm2(out)))


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; layer l sees the block input and layers 0..l-1."""

    def __init__(self, num_layers: int, in_features: int, bn_size: int, growth_rate: int):
        super().__init__()
        self.num_layers = num_layers
        self.in_features = in_features
        self.growth_rate = growth_rate
        self.bn_size = bn_size
        for i in range(num_layers):
            layer = _DenseLayer(in_features + i * growth_rate, growth_rate, bn_size)
            self.add_module(f"denselayer{i + 1}", layer)

    @property
    def out_features(self) -> int:
        return self.in_features + self.num_layers * self.growth_rate

    def forward(self, x: Tensor) -> Tensor:
        """The ordinary forward pass: one layer after the other (one Gauss-Seidel sweep)."""
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1×1 (compression) then 2×2 average pooling between dense blocks."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC.

    Args:
        growth_rate: channels each dense layer adds (k in the paper).
        block_config: dense layers per block; DenseNet-201 is (6, 12, 48, 32).
        num_init_features: channels after the stem.
        bn_size: bottleneck width factor (the 1×1 conv outputs ``bn_size * growth_rate``).
        compression: channel factor of each transition (0.5 is the "C" of DenseNet-BC).
        num_classes: classifier outputs.
        in_channels: image channels (1 for MNIST, 3 for ImageNet).
        stem: ``"imagenet"`` (7×7 stride-2 conv + 3×3 stride-2 max pool, torchvision's) or
            ``"small"`` (one 3×3 conv of stride ``stem_stride``, for 28×28 digits).
        stem_stride: stride of the small stem's convolution.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 48, 32),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        stem_stride: int = 1,
    ):
        super().__init__()
        if stem == "imagenet":
            layers = [
                ("conv0", nn.Conv2d(in_channels, num_init_features, 7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU()),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        elif stem == "small":
            layers = [
                ("conv0", nn.Conv2d(in_channels, num_init_features, 3, stride=stem_stride, padding=1, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU()),
            ]
        else:
            raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
        self.features = nn.Sequential(OrderedDict(layers))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, channels, bn_size, growth_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_features
            if i != len(block_config) - 1:
                reduced = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", _Transition(channels, reduced))
                channels = reduced
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        # torchvision's initialisation, so random-weight (speed-only) runs look like its models.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """The ordinary forward pass (the ``sequential`` baseline)."""
        return self.head(self.features(x), normed=True)

    # -- pieces the layer-parallel solvers put together ----------------------------------------
    def stem(self, x: Tensor) -> Tensor:
        """Everything before the first dense block."""
        for name, module in self.features.named_children():
            if name.startswith("denseblock"):
                break
            x = module(x)
        return x

    def dense_blocks(self) -> list[_DenseBlock]:
        return [m for m in self.features.children() if isinstance(m, _DenseBlock)]

    def transitions(self) -> list[_Transition]:
        return [m for m in self.features.children() if isinstance(m, _Transition)]

    def head(self, features: Tensor, normed: bool = False) -> Tensor:
        """norm5 (unless already applied), ReLU, global average pool, classifier."""
        if not normed:
            features = self.features.norm5(features)
        out = F.adaptive_avg_pool2d(F.relu(features), 1)
        return self.classifier(torch.flatten(out, 1))

    @property
    def num_dense_layers(self) -> int:
        return sum(block.num_layers for block in self.dense_blocks())


# ------------------------------------------------------------------------------------------------
# All layers of a block in one call
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedLayers:
    """Layers ``first..first+K-1`` of one dense block, stacked for :func:`parallel_layers`.

    ``in_width`` is the channel count of the features before layer ``first`` (block input plus
    the outputs of layers < ``first``); layer ``first + j`` reads ``in_width + j * growth``.
    """

    first: int
    count: int
    in_width: int
    growth: int
    scale1: Tensor  # (K, C) folded BN1 scale, zero past each layer's input width
    shift1: Tensor  # (K, C)
    weight1: Tensor  # (K, bn_width, C) 1×1 conv weights, zero (masked) past each input width
    scale2: Tensor  # (K, bn_width)
    shift2: Tensor  # (K, bn_width)
    weight2: Tensor  # (K * growth, bn_width, 3, 3) grouped 3×3 conv weights


def _fold(norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return scale, norm.bias - norm.running_mean * scale


@torch.no_grad()
def pack_layers(block: _DenseBlock, first: int = 0, count: int | None = None) -> PackedLayers:
    """Stack layers ``first..first+count-1`` of ``block`` (eval-mode BN folded)."""
    count = block.num_layers - first if count is None else count
    if not (0 <= first and count >= 1 and first + count <= block.num_layers):
        raise ValueError(
            f"layers {first}..{first + count - 1} are not inside a block of {block.num_layers}"
        )
    if block.training:
        raise ValueError("pack_layers folds batch-norm running statistics: call model.eval() first")
    layers = list(block.values())[first: first + count]
    g = block.growth_rate
    in_width = block.in_features + first * g
    width = in_width + (count - 1) * g  # channels the last layer of the group reads
    ref = layers[0].conv1.weight
    bn_width = ref.shape[0]
    scale1 = ref.new_zeros(count, width)
    shift1 = ref.new_zeros(count, width)
    weight1 = ref.new_zeros(count, bn_width, width)
    scale2 = ref.new_zeros(count, bn_width)
    shift2 = ref.new_zeros(count, bn_width)
    for j, layer in enumerate(layers):
        c = in_width + j * g
        scale1[j, :c], shift1[j, :c] = _fold(layer.norm1)
        weight1[j, :, :c] = layer.conv1.weight[:, :, 0, 0]
        scale2[j], shift2[j] = _fold(layer.norm2)
    weight2 = torch.cat([layer.conv2.weight for layer in layers], 0).contiguous()
    return PackedLayers(first, count, in_width, g, scale1, shift1, weight1, scale2, shift2, weight2)


def parallel_layers(packed: PackedLayers, prefix: Tensor, states: Tensor) -> Tensor:
    """One Jacobi step of K consecutive dense layers, all in one batched call.

    Args:
        packed: the K layers (:func:`pack_layers`).
        prefix: ``(N, in_width, H, W)``: the block input and the outputs of the layers before
            ``packed.first``, concatenated (held fixed).
        states: ``(K, N, growth, H, W)``: the current guess of the K layers' outputs.

    Returns:
        ``(K, N, growth, H, W)``: output j computed from ``prefix`` and ``states[:j]`` only, so the
        map ``states -> output`` is triangular along axis 0 (exactly: masked entries are
        multiplied by exact zeros, which never changes a floating-point sum).
    """
    count, n, g, h, w = states.shape
    # Only the first K-1 guesses are read by anyone (the last layer's output feeds no layer here).
    guesses = states[: count - 1].permute(1, 0, 2, 3, 4).reshape(n, (count - 1) * g, h, w)
    features = torch.cat([prefix, guesses], 1)  # (N, C, H, W)
    width = features.shape[1]
    # Channels first so that both 1×1 stages are plain batched matrix products over N*H*W pixels.
    flat = features.transpose(0, 1).reshape(1, width, n * h * w)
    # The per-layer BN-ReLU over (K, C, P) is the costliest part on a CPU (memory-bound), so it is
    # one fused multiply-add and an in-place ReLU rather than three passes.
    z = torch.addcmul(packed.shift1.unsqueeze(-1), flat, packed.scale1.unsqueeze(-1)).relu_()
    y = torch.bmm(packed.weight1, z)  # (K, bn_width, P)
    y = torch.addcmul(packed.shift2.unsqueeze(-1), y, packed.scale2.unsqueeze(-1)).relu_()
    bn_width = y.shape[1]
    y = y.view(count, bn_width, n, h, w).permute(2, 0, 1, 3, 4).reshape(n, count * bn_width, h, w)
    out = F.conv2d(y, packed.weight2, padding=1, groups=count)  # (N, K*growth, H, W)
    return out.view(n, count, g, h, w).transpose(0, 1)


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------

DENSENET201 = {"growth_rate": 32, "block_config": (6, 12, 48, 32), "num_init_features": 64, "bn_size": 4}
TORCHVISION_DENSENET201_URL = "https://download.pytorch.org/models/densenet201-c1103571.pth"
# torchvision's released .pth files predate its module renaming: "norm.1" is now "norm1".
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def densenet201(num_classes: int = 1000) -> DenseNet:
    return DenseNet(**DENSENET201, num_classes=num_classes)


def remap_torchvision_keys(state_dict: dict) -> dict:
    """Rename the old-style keys of torchvision's DenseNet checkpoints (``norm.1`` -> ``norm1``)."""
    out = {}
    for key, value in state_dict.items():
        match = _OLD_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def load_state(model: nn.Module, state_dict: dict, source: str) -> nn.Module:
    """Load ``state_dict`` strictly; a mismatch names the source and the first offending keys."""
    state_dict = remap_torchvision_keys(state_dict)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"weights in {source} do not fit this DenseNet: {err}") from None
    if missing or unexpected:
        raise ValueError(
            f"weights in {source} do not fit this DenseNet: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    return model


def save_checkpoint(model: DenseNet, path: str, metadata: dict) -> None:
    """The model's weights and the constructor arguments that rebuild it (``metadata``)."""
    import io

    from ffsolve.kit import write_bytes

    buffer = io.BytesIO()
    torch.save({"config": dict(metadata), "state_dict": model.state_dict()}, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str, map_location="cpu") -> DenseNet:
    """A model written by :func:`save_checkpoint`, in eval mode."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise CheckpointError(f"{path} is not a checkpoint written by ffsolve.experiments.densenet.model.save_checkpoint")
    model = DenseNet(**blob["config"])
    return load_state(model, blob["state_dict"], path).eval()


def load_densenet201_pretrained(weights_file: str | None, download: bool, cache_dir: str):
    """DenseNet-201 with torchvision's ImageNet weights, from ``weights_file`` or a download."""
    model = densenet201()
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise DataError(
                f"densenet.weights_file is {weights_file!r}, which is not a file; "
                "point it at torchvision's densenet201-c1103571.pth"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        return load_state(model, state, str(path)).eval()
    if not download:
        raise DataError(
            "DenseNet-201 needs ImageNet weights: set densenet.weights_file to a local "
            "copy of torchvision's densenet201-c1103571.pth, or set densenet.download "
            "to true on a machine with network access"
        )
    try:
        state = torch.hub.load_state_dict_from_url(
            TORCHVISION_DENSENET201_URL, model_dir=cache_dir, map_location="cpu", check_hash=True,
            progress=False,
        )
    except Exception as err:
        raise DataError(
            f"could not download {TORCHVISION_DENSENET201_URL} ({type(err).__name__}: {err}); "
            "download it elsewhere and set densenet.weights_file to its path"
        ) from err
    return load_state(model, state, TORCHVISION_DENSENET201_URL).eval()


def random_densenet201(seed: int) -> DenseNet:
    """DenseNet-201 with torchvision's random initialisation from ``seed`` (speed only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return densenet201().eval()
