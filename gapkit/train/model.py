"""The fixed detector: a compact residual CNN with heatmap output and soft-argmax decoding.

Input (B, 3, S, S) in [-1, 1]; output (B, K, 2) crop-pixel (x, y), sub-pixel through the
expectation of a spatial softmax over K heatmaps at S/4 resolution (integral regression).
The same architecture serves every strategy; only ``width`` scales it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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


class LandmarkNet(nn.Module):
    def __init__(self, num_points: int, width: int = 32):
        super().__init__()
        w = width
        self.num_points = num_points
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.s4 = nn.Sequential(Block(w, 2 * w, 2), Block(2 * w, 2 * w, 1))          # S/4
        self.s8 = nn.Sequential(Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w, 1))      # S/8
        self.s16 = nn.Sequential(Block(4 * w, 4 * w, 2), Block(4 * w, 4 * w, 1))     # S/16: face-wide context
        self.lat8 = nn.Conv2d(4 * w, 2 * w, 1)
        self.lat16 = nn.Conv2d(4 * w, 2 * w, 1)
        self.fuse = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w),
                                  nn.ReLU(inplace=True))
        self.head = nn.Conv2d(2 * w, num_points, 1)
        self.log_beta = nn.Parameter(torch.tensor(1.0))  # learnt softmax sharpness

    def features(self, x):
        """Pooled backbone features (B, 4 * width): the visual-gap embedding."""
        return self.s16(self.s8(self.s4(self.stem(x)))).mean(dim=(2, 3))

    def heatmaps(self, x):
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        y = self.lat8(f8) + F.interpolate(self.lat16(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        y = f4 + F.interpolate(y, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse(y))

    def forward(self, x):
        h = self.heatmaps(x)
        b, k, hh, ww = h.shape
        p = torch.softmax(h.flatten(2).float() * self.log_beta.exp(), dim=-1).view(b, k, hh, ww)
        stride = x.shape[-1] / ww
        # Heatmap cell j covers input pixels [j * stride, (j + 1) * stride): its centre is at
        # j * stride + (stride - 1) / 2 in 0-based pixel coordinates.
        xs = torch.arange(ww, device=x.device, dtype=p.dtype) * stride + (stride - 1) / 2
        ys = torch.arange(hh, device=x.device, dtype=p.dtype) * stride + (stride - 1) / 2
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)
