"""The fixed detector: a compact residual CNN with heatmap output and soft-argmax decoding.

Input (B, 3, S, S) in [-1, 1]; output (B, K, 2) crop-pixel (x, y), sub-pixel through the
expectation of a spatial softmax over K heatmaps at S/4 resolution (integral regression).
The same architecture serves every strategy; ``width`` scales the compact backbone, and
``backbone`` swaps it for a standard ResNet-18/34/50 (torchvision's architecture, built here in
plain torch with random weights: nothing downloads) for GPU users. Either feeds the same S/4
fusion, heatmap head and decoding. The names are registered in :mod:`gapkit.train.backbones`;
the functions that build them are :data:`BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from gapkit.train.backbones import BACKBONES, Backbone, check_backbone

__all__ = ["BACKBONES", "BUILDERS", "RESNETS", "BasicBlock", "Block", "Bottleneck", "LandmarkNet"]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = None if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)), inplace=True)


# stem, S/4, S/8 and S/16 stages, and the channels of the last three
Stages = tuple[nn.Module, nn.Module, nn.Module, nn.Module, tuple[int, int, int]]


def _compact(spec: Backbone, w: int) -> Stages:
    """gapkit's residual CNN, ``w`` channels after the stem."""
    stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
    s4 = nn.Sequential(Block(w, 2 * w, 2), Block(2 * w, 2 * w, 1))          # S/4
    s8 = nn.Sequential(Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w, 1))      # S/8
    s16 = nn.Sequential(Block(4 * w, 4 * w, 2), Block(4 * w, 4 * w, 1))     # S/16: face-wide context
    return stem, s4, s8, s16, (2 * w, 4 * w, 4 * w)


class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block (two 3x3 convolutions), its attribute names kept."""

    expansion = 1

    def __init__(self, cin: int, c: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)), inplace=True)


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (1x1, 3x3 with the stride, 1x1 to 4x), its attribute names kept."""

    expansion = 4

    def __init__(self, cin: int, c: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c * self.expansion)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)), inplace=True)


ResBlock = type[BasicBlock] | type[Bottleneck]
# each ResNet's block and its blocks in layer1..layer3 (layer4 and fc are not built)
RESNETS: dict[str, tuple[ResBlock, tuple[int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6)), "resnet50": (Bottleneck, (3, 4, 6))}


def _res_layer(block: ResBlock, cin: int, c: int, n: int, stride: int) -> nn.Sequential:
    """torchvision's ``_make_layer``: ``n`` blocks, the first one strided with a 1x1 projection."""
    cout = c * block.expansion
    down = None if stride == 1 and cin == cout else nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(block(cin, c, stride, down), *(block(cout, c, 1, None) for _ in range(n - 1)))


def _resnet(spec: Backbone, width: int) -> Stages:
    """torchvision's ResNet ``spec.name`` (random weights) as stem, layer1 (S/4), layer2 (S/8) and
    layer3 (S/16), in plain torch. The parameter names inside each stage are torchvision's, so a
    torchvision ResNet's state_dict maps one to one: conv1/bn1 -> stem.0/stem.1 and
    layer1/layer2/layer3 -> s4/s8/s16, the rest of each key unchanged."""
    block, (n1, n2, n3) = RESNETS[spec.name]
    e = block.expansion
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1))
    stages = (_res_layer(block, 64, 64, n1, 1), _res_layer(block, 64 * e, 128, n2, 2),
              _res_layer(block, 128 * e, 256, n3, 2))
    # torchvision's init (zero_init_residual off, its default); BatchNorm's own is already weight 1, bias 0
    for m in (stem, *stages):
        for conv in (c for c in m.modules() if isinstance(c, nn.Conv2d)):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return stem, *stages, (64 * e, 128 * e, 256 * e)


BUILDERS: dict[str, Callable[[Backbone, int], Stages]] = {"compact": _compact, "resnet": _resnet}


class LandmarkNet(nn.Module):
    def __init__(self, num_points: int, width: int = 32, backbone: str = "compact"):
        super().__init__()
        self.num_points, self.backbone = num_points, check_backbone(backbone)
        spec = BACKBONES[backbone]
        self.stem, self.s4, self.s8, self.s16, (c4, c8, c16) = BUILDERS[spec.builder](spec, width)
        self.lat8 = nn.Conv2d(c8, c4, 1)
        self.lat16 = nn.Conv2d(c16, c4, 1)
        self.fuse = nn.Sequential(nn.Conv2d(c4, c4, 3, 1, 1, bias=False), nn.BatchNorm2d(c4), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(c4, num_points, 1)
        self.log_beta = nn.Parameter(torch.tensor(1.0))  # learnt softmax sharpness

    def features(self, x):
        """Pooled backbone features (B, C) at S/16 (4 * width for the compact net): the visual-gap embedding."""
        return self.s16(self.s8(self.s4(self.stem(x)))).mean(dim=(2, 3))

    def heatmaps(self, x):
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        y = self.lat8(f8) + F.interpolate(self.lat16(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        y = f4 + F.interpolate(y, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse(y))

    def decode(self, x):
        """(points (B, K, 2) crop pixels, heatmap probabilities (B, K, H, W), cell centres (xs, ys))."""
        h = self.heatmaps(x)
        b, k, hh, ww = h.shape
        p = torch.softmax(h.flatten(2).float() * self.log_beta.exp(), dim=-1).view(b, k, hh, ww)
        stride = x.shape[-1] / ww
        # Heatmap cell j covers input pixels [j * stride, (j + 1) * stride): its centre is at
        # j * stride + (stride - 1) / 2 in 0-based pixel coordinates.
        xs = torch.arange(ww, device=x.device, dtype=p.dtype) * stride + (stride - 1) / 2
        ys = torch.arange(hh, device=x.device, dtype=p.dtype) * stride + (stride - 1) / 2
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1), p, (xs, ys)

    def forward(self, x, with_heatmaps: bool = False):
        # through forward (not decode) so DistributedDataParallel sees the call
        out = self.decode(x)
        return out if with_heatmaps else out[0]
