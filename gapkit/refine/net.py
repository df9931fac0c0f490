"""The refinement CNN (torch). Imported only by :mod:`gapkit.refine.cnn`, when a CNN is built:
``import gapkit.refine`` does not import torch.

Feature maps are computed once (strides 2, 4 and 8); for every point, features sampled on
small windows around its current position, with a pooled summary of the whole face, feed a
per-point head that predicts an offset. ``stages`` such steps run in cascade, each starting
where the last stopped. The heads start at zero, so an untrained net returns its input points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gapkit.refine.config import HIDDEN
from gapkit.train.model import Block


class RefineNet(nn.Module):
    def __init__(self, k: int, w: int, win: int, stages: int) -> None:
        super().__init__()
        self.stages = stages
        self.stem = nn.Sequential(
            nn.Conv2d(3, w // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(w // 2), nn.ReLU(inplace=True),
            nn.Conv2d(w // 2, w // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(w // 2), nn.ReLU(inplace=True))
        self.fine = nn.Sequential(
            nn.Conv2d(w // 2, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            Block(w, w, 1), Block(w, w, 1))
        self.coarse = nn.Sequential(Block(w, 2 * w, 2), Block(2 * w, 2 * w, 1))
        r = (torch.arange(win, dtype=torch.float32) - (win - 1) / 2) * 4.0
        gy, gx = torch.meshgrid(r, r, indexing="ij")
        self.register_buffer("window", torch.stack([gx.flatten(), gy.flatten()], -1))
        n_in = (w // 2) * win * win + w * win * win + 2 * w + 2 * w
        self.hidden = nn.ModuleList([nn.Linear(n_in, HIDDEN) for _ in range(stages)])
        self.embed = nn.Parameter(torch.zeros(stages, k, HIDDEN))
        # Zero output heads: training starts exactly at the shape adapter's points.
        self.out_w = nn.Parameter(torch.zeros(stages, k, HIDDEN, 2))
        self.out_b = nn.Parameter(torch.zeros(stages, k, 2))

    @staticmethod
    def sample(fmap, pts, stride: int):
        """Bilinear features (B, C, P) at crop-pixel points (B, P, 2)."""
        h, wd = fmap.shape[-2:]
        u = (pts - (stride - 1) / 2) / stride  # crop px -> feature-map px (centres on integers)
        g = torch.stack([(2 * u[..., 0] + 1) / wd - 1, (2 * u[..., 1] + 1) / h - 1], -1)
        return F.grid_sample(fmap, g[:, :, None, :], align_corners=False, padding_mode="border")[..., 0]

    def windowed(self, fmap, q, stride: int, spacing: float):
        b, kk, _ = q.shape
        a = self.sample(fmap, (q[:, :, None, :] + spacing * self.window).reshape(b, -1, 2), stride)
        return a.reshape(b, fmap.shape[1], kk, -1).permute(0, 2, 1, 3).reshape(b, kk, -1)

    def forward(self, x, init):
        f2 = self.stem(x)
        f4 = self.fine(f2)
        f8 = self.coarse(f4)
        b, kk, _ = init.shape
        face = f8.mean((2, 3))[:, None, :].expand(b, kk, -1)  # what the whole face looks like
        p, outs = init, []
        for s in range(self.stages):
            q = p.detach()  # each stage reads features where the last one stopped, as a cascade does
            feats = [self.windowed(f2, q, 2, 0.5), self.windowed(f4, q, 4, 1.0),
                     self.sample(f8, q, 8).permute(0, 2, 1), face]
            h = F.gelu(self.hidden[s](torch.cat(feats, -1)) + self.embed[s])
            p = p + torch.einsum("bkh,kho->bko", h, self.out_w[s]) + self.out_b[s]
            outs.append(p)
        return outs
