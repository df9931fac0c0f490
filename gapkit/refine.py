"""Image refinement of adapted landmarks: the label adapter's second, image-aware stage.

A map from shapes to shapes cannot see where the source detector was locally wrong. The
refiner reads the image. Each face is warped into a frame where its adapted shape sits on the
target mean shape: an S x S crop, points in 0-based crop pixels (x, y), pixel centres on
integers. A small CNN computes feature maps once (strides 2, 4 and 8); for every point,
features sampled on small windows around its current position, with a pooled summary of
the whole face, feed a per-point head that predicts an offset. Three such steps run in
cascade, each starting where the last stopped.
The heads start at zero, so an untrained refiner returns the shape adapter's answer. The CNN
runs in bfloat16 autocast where the device computes bf16 natively (``RefineConfig.amp``).

That CNN needs hundreds of faces. Below ``small_data`` pairs the default (``method="auto"``)
fits the descriptor cascade of :mod:`gapkit.cascade` instead; from there it trains both and keeps
the one that does better on held-out faces. Either is kept only where it beats shape-only.

Training triples are (image, initial points, target points). The initial points should be
out-of-fold shape-adapter predictions (``LabelAdapter.fit_images`` makes them), so that the
refiner learns from errors the adapter makes on faces it has not seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from gapkit.align import procrustes
from gapkit.errors import AdapterError, Problem
from gapkit.schemes import LandmarkScheme
from gapkit.settings import Settings

HIDDEN = 128
FACE_FILL = 0.62  # share of the crop side the reference shape's larger extent fills


class RefineConfig(Settings):
    method: Literal["auto", "cnn", "cascade"] = "auto"  # auto: cascade below small_data, else the better one
    size: int = 160  # CNN crop side (px); at equal fit time 160 px / 2,000 steps beat 128 px / 2,500
    width: int = 32  # channels of the stride-4 map (the stride-8 map has twice as many)
    stages: int = 3
    window: int = 3  # window x window samples, 4 crop px apart, on the stride-4 map (2 px on stride 2)
    steps: int = 2000  # at most; fewer on small data (see ``epochs``)
    epochs: int = 500  # steps = min(steps, max(200, epochs * pairs / batch_size))
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    rotate: float = 8.0  # +- degrees of the augmentation's frame perturbation
    scale: float = 0.06
    shift: float = 0.03
    jitter: float = 0.8  # px: extra random error put on the initial points while training
    flip_test: bool = True
    folds: int = 3  # below ``small_data`` pairs, k-fold CV decides whether the refiner is kept
    small_data: int = 200
    val_frac: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # the CNN in bfloat16 autocast where the device computes it natively (see bf16_native)
    cascade_size: int = 160  # the descriptor cascade's crop side (px)
    cascade_cells: tuple[float, ...] = (6.0, 3.0)  # descriptor cell sizes (crop px)
    cascade_stages: int = 3
    cascade_samples: int = 2000  # about this many training starts: faces, mirrors and jittered copies
    cascade_jitter: float = 1.0  # px
    cascade_strengths: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # ridge strengths tried by CV


@dataclass
class RefineReport:
    used: bool
    n_pairs: int
    how: str  # how shape-only and refined were compared: "3-fold cv" or "10% held out"
    shape_nme_pct: float
    refined_nme_pct: float
    steps: int
    method: str = "cnn"  # the refiner kept, or the best one tried when none is kept
    candidates: dict[str, float] = field(default_factory=dict)  # validation NME % of each method tried
    fit_s: float = 0.0
    problems: list[Problem] = field(default_factory=list)


def reference_frame(mean_target: np.ndarray, size: int) -> np.ndarray:
    """(K, 2) crop positions of the target mean shape: centred, larger extent FACE_FILL * size."""
    ref = np.asarray(mean_target, float)
    lo, hi = np.nanmin(ref, axis=0), np.nanmax(ref, axis=0)
    s = FACE_FILL * size / float(np.max(hi - lo))
    return (ref - (lo + hi) / 2) * s + (size - 1) / 2


def frame_matrices(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N, 2, 3) image -> crop affine matrices that put each (K, 2) shape on ``ref``."""
    return procrustes(np.asarray(points, float), ref).matrix[:, :2, :]


def to_frame(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2, 3) matrices applied to (N, K, 2) points."""
    return np.einsum("nij,nkj->nki", m[:, :, :2], pts) + m[:, None, :, 2]


def from_frame(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    inv = np.stack([cv2.invertAffineTransform(x) for x in m])
    return to_frame(inv, pts)


def read_crops(images: list[str], frames: list[tuple[np.ndarray, int]], ids: list[str] | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], dict[int, Problem]]:
    """For each frame (matrices (N, 2, 3), side S), (N, S, S, 3) uint8 BGR crops, each image read
    once for all frames; and {face index: problem} for faces whose image is missing or
    unreadable (their crops stay black)."""
    out = [np.zeros((len(images), size, size, 3), np.uint8) for _, size in frames]
    problems: dict[int, Problem] = {}
    last, img = None, None
    for i, path in enumerate(images):
        if path != last:
            img = cv2.imread(path, cv2.IMREAD_COLOR) if path else None
            last = path
        if img is None:
            why = "missing image" if not path or not _exists(path) else "unreadable image"
            problems[i] = Problem(path=path, line=None, reason=f"{why} (face {ids[i] if ids else i})")
        else:
            for crops, (matrices, size) in zip(out, frames, strict=True):
                m = matrices[i]
                flags = cv2.INTER_AREA if abs(np.linalg.det(m[:, :2])) < 1 else cv2.INTER_LINEAR
                crops[i] = cv2.warpAffine(img, m, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        if progress:
            progress(1)
    return out, problems


def _exists(path: str) -> bool:
    return Path(path).is_file()


def build_net(k: int, cfg: RefineConfig):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from gapkit.train.model import Block

    w, win, stages = cfg.width, cfg.window, cfg.stages

    class RefineNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
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
            for s in range(stages):
                q = p.detach()  # each stage reads features where the last one stopped, as a cascade does
                feats = [self.windowed(f2, q, 2, 0.5), self.windowed(f4, q, 4, 1.0),
                         self.sample(f8, q, 8).permute(0, 2, 1), face]
                h = F.gelu(self.hidden[s](torch.cat(feats, -1)) + self.embed[s])
                p = p + torch.einsum("bkh,kho->bko", h, self.out_w[s]) + self.out_b[s]
                outs.append(p)
            return outs

    return RefineNet()


def _tensor(images: np.ndarray, device: str):
    from gapkit.train.data import to_tensor_batch

    return to_tensor_batch(images).to(device)


def mirror(images: np.ndarray, pts: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, S, S[, 3]) mirrored left-right and their points (N, K, 2) relabelled."""
    return np.ascontiguousarray(images[:, :, ::-1]), mirror_points(pts, flip, images.shape[2])


def mirror_points(pts: np.ndarray, flip: np.ndarray, size: int) -> np.ndarray:
    """Crop points (N, K, 2) mirrored in an S-wide crop (x -> S - 1 - x: pixel centres on
    integers) and relabelled by the scheme's flip permutation."""
    q = pts[:, flip].copy()
    q[..., 0] = size - 1 - q[..., 0]
    return q


def train_net(images: np.ndarray, init: np.ndarray, target: np.ndarray, scheme: LandmarkScheme,
              cfg: RefineConfig, device: str, progress: Callable[[int, int], None] | None = None):
    """Train a refiner on crops (N, S, S, 3), initial and target crop points (N, K, 2). NaN targets
    are left out of the loss. Returns the network in eval mode."""
    import torch

    from gapkit.train.data import Augment, augment

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    k = init.shape[1]
    net = build_net(k, cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    aug = Augment(rotate=cfg.rotate, scale=cfg.scale, shift=cfg.shift)
    flip = np.array(scheme.flip)
    both = np.concatenate([flip, flip + k])
    n, bs = len(images), cfg.batch_size
    order: list[int] = []
    net.train()
    for step in range(cfg.steps):
        imgs = np.empty((bs, cfg.size, cfg.size, 3), np.uint8)
        pts = np.empty((bs, 2 * k, 2))
        for j in range(bs):
            if not order:
                order = rng.permutation(n).tolist()
            i = order.pop()
            imgs[j], pts[j] = augment(images[i], np.concatenate([init[i], target[i]]), aug, both, rng)
        p0, p1 = pts[:, :k], pts[:, k:]
        # Initial points a little worse than the adapter's: the refiner must not trust them blindly.
        p0 = p0 + rng.normal(0, cfg.jitter, (bs, 1, 2)) * 0.5 + rng.normal(0, cfg.jitter, (bs, k, 2)) * 0.5
        mask = torch.from_numpy((~np.isnan(p1).any(-1)).astype(np.float32)).to(device)
        y = torch.from_numpy(np.nan_to_num(p1).astype(np.float32)).to(device)
        with _autocast(device, cfg.amp):
            outs = net(_tensor(imgs, device), torch.from_numpy(p0.astype(np.float32)).to(device))
        loss = 0.0
        for s, out in enumerate(outs):
            d = torch.sqrt(((out.float() - y) ** 2).sum(-1) + 1e-6)
            loss = loss + (0.5 if s < len(outs) - 1 else 1.0) * (d * mask).sum() / mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step + 1, cfg.steps)
    return net.eval()


def _autocast(device: str, amp: bool):
    """bfloat16 autocast for the CNN where ``amp`` is on and the device computes it natively."""
    import torch

    from gapkit.devices import bf16_native

    on = amp and bf16_native(device)
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=on)


def run_net(net, images: np.ndarray, init: np.ndarray, flip: np.ndarray | None, device: str,
            batch_size: int = 64, amp: bool = False) -> np.ndarray:
    """Refined crop points (N, K, 2); with ``flip`` (the scheme's permutation), the mean of the
    crop and its mirror image."""
    import torch

    out = np.empty_like(init, dtype=float)
    with torch.inference_mode(), _autocast(device, amp):
        for i in range(0, len(images), batch_size):
            x, p = images[i:i + batch_size], init[i:i + batch_size]
            r = net(_tensor(x, device), torch.from_numpy(p.astype(np.float32)).to(device))[-1].cpu().numpy()
            if flip is not None:
                mx, mp = mirror(x, p, flip)
                q = net(_tensor(mx, device), torch.from_numpy(mp.astype(np.float32)).to(device))[-1].cpu().numpy()
                _, q = mirror(mx, q, flip)
                r = (r + q) / 2
            out[i:i + batch_size] = r
    return out


def _crop_nme(pred: np.ndarray, target: np.ndarray, scheme: LandmarkScheme, normaliser: str) -> np.ndarray:
    from gapkit.metrics import nme

    return 100 * nme(pred, target, scheme, normaliser)


def _grey(crops: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in crops])


def crop_size(method: str, cfg: RefineConfig) -> int:
    return cfg.cascade_size if method == "cascade" else cfg.size


def fit(images: list[str], init: np.ndarray, target: np.ndarray, mean_target: np.ndarray, scheme: LandmarkScheme,
        normaliser: str, cfg: RefineConfig, device: str, ids: list[str] | None = None,
        progress: Callable[[int, int], None] | None = None) -> tuple[Refiner | None, RefineReport]:
    """Train a refiner on faces ``images[i]`` with initial and target image points (N, K, 2), and
    keep it only where it beats the initial points on faces it did not see: k-fold CV below
    ``cfg.small_data`` faces (then a final fit on all), else one held-out ``cfg.val_frac``. With
    ``method="auto"`` that is the descriptor cascade alone below ``small_data``, and from there
    both kinds, the better one on the held-out faces kept (a CNN as trained without them, a
    cascade refitted on all). Faces whose image cannot be read are left out and reported."""
    from gapkit import cascade

    n_all = len(images)
    if cfg.method == "auto":
        methods = ["cascade"] if n_all < cfg.small_data else ["cascade", "cnn"]
    else:
        methods = [cfg.method]
    refs = [reference_frame(mean_target, crop_size(m, cfg)) for m in methods]
    mats = [frame_matrices(init, ref) for ref in refs]
    crops, bad = read_crops(images, [(mat, crop_size(m, cfg)) for m, mat in zip(methods, mats, strict=True)], ids)
    ok = np.setdiff1d(np.arange(n_all), list(bad))
    if len(ok) < 10:
        raise AdapterError(f"only {len(ok)} of {n_all} pairs have a readable image; an image refinement needs 10")
    views = {m: (ref, _grey(c[ok]) if m == "cascade" else c[ok], to_frame(mat[ok], init[ok]),
                 to_frame(mat[ok], target[ok]))
             for m, ref, mat, c in zip(methods, refs, mats, crops, strict=True)}
    n = len(ok)
    cfg = cfg.model_copy(update={"steps": min(cfg.steps, max(200, math.ceil(cfg.epochs * n / cfg.batch_size)))})
    rng = np.random.default_rng(cfg.seed + 7)
    small = n < cfg.small_data
    if small:
        how = f"{cfg.folds}-fold cv"
        splits = [np.sort(v) for v in np.array_split(rng.permutation(n), cfg.folds)]
    else:
        how = f"{cfg.val_frac:.0%} held out"
        splits = [np.sort(rng.permutation(n)[:max(1, int(round(cfg.val_frac * n)))])]
    # Progress in work units: a CNN step is one, a cascade stage about as long as 25 steps.
    unit = {"cnn": cfg.steps, "cascade": 25 * cfg.cascade_stages}
    total = sum(unit[m] * (len(splits) + (1 if small or m == "cascade" else 0)) for m in methods)
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if progress:
            progress(done[0], total)

    flip = np.array(scheme.flip)

    def train(m: str, idx: np.ndarray):
        _, crops, p0, p1 = views[m]
        if m == "cnn":
            before = done[0]
            net = train_net(crops[idx], p0[idx], p1[idx], scheme, cfg, device,
                            lambda i, _t: tick(before + i - done[0]))
            return state_arrays(net), net
        state = cascade.train_cascade(
            crops[idx], p0[idx], p1[idx], flip, cells=cfg.cascade_cells, stages=cfg.cascade_stages,
            samples=cfg.cascade_samples, jitter=cfg.cascade_jitter, strengths=cfg.cascade_strengths,
            seed=cfg.seed, progress=lambda k: tick(25 * k))
        return state, None

    def run(m: str, model, idx: np.ndarray) -> np.ndarray:
        _, crops, p0, _ = views[m]
        test_flip = flip if cfg.flip_test else None
        if m == "cnn":
            return run_net(model[1], crops[idx], p0[idx], test_flip, device, amp=cfg.amp)
        return cascade.run_cascade(model[0], crops[idx], p0[idx], cfg.cascade_cells, test_flip)

    shape_err = np.concatenate([_crop_nme(views[methods[0]][2][v], views[methods[0]][3][v], scheme, normaliser)
                                for v in splits])
    scores, kept_models = {}, {}
    for m in methods:
        errs = []
        for val in splits:
            model = train(m, np.setdiff1d(np.arange(n), val))
            errs.append(_crop_nme(run(m, model, val), views[m][3][val], scheme, normaliser))
            kept_models[m] = model
        scores[m] = float(np.nanmean(np.concatenate(errs)))
    s = float(np.nanmean(shape_err))
    best = min(scores, key=scores.get)
    rep = RefineReport(used=scores[best] < s, n_pairs=n, how=how, shape_nme_pct=s, refined_nme_pct=scores[best],
                       steps=cfg.steps, method=best, candidates={k: round(v, 4) for k, v in scores.items()},
                       problems=list(bad.values()))
    if not rep.used:
        return None, rep
    state = kept_models[best][0]
    if small or best == "cascade":
        state = train(best, np.arange(n))[0]
    return Refiner(cfg, views[best][0], scheme, state, best), rep


def state_arrays(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


class Refiner:
    """A trained image refiner: its settings, kind ("cnn" or "cascade"), reference frame (K, 2)
    crop px and weights."""

    def __init__(self, cfg: RefineConfig, ref: np.ndarray, scheme: LandmarkScheme, state: dict[str, np.ndarray],
                 method: str = "cnn"):
        self.cfg, self.ref, self.scheme, self.state = cfg, np.asarray(ref, float), scheme, state
        self.method = method
        self._net = None
        self._device = "cpu"

    def check(self) -> None:
        """Raise ValueError unless the weights fit the settings (a CNN is built here)."""
        from gapkit import cascade

        if self.method == "cnn":
            self.net  # noqa: B018
        elif self.method == "cascade":
            cascade.check_state(self.state, self.scheme.num_points, self.cfg.cascade_cells, self.cfg.cascade_stages)
        else:
            raise ValueError(f"unknown refiner kind {self.method!r}")

    @property
    def net(self):
        """The CNN, built from the weights on first use; a state that does not fit raises ValueError."""
        if self._net is None:
            import torch

            net = build_net(self.scheme.num_points, self.cfg)
            try:
                net.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
            except RuntimeError as exc:
                raise ValueError(f"refiner weights do not fit its settings ({str(exc).splitlines()[0]})") from None
            self._net = net.eval().to(self._device)
        return self._net

    def to(self, device: str) -> Refiner:
        self._device = device
        if self._net is not None:
            self._net = self._net.to(device)
        return self

    def _run(self, crops: np.ndarray, pts: np.ndarray) -> np.ndarray:
        from gapkit import cascade

        flip = np.array(self.scheme.flip) if self.cfg.flip_test else None
        if self.method == "cascade":
            return cascade.run_cascade(self.state, _grey(crops), pts, self.cfg.cascade_cells, flip)
        return run_net(self.net, crops, pts, flip, self._device, amp=self.cfg.amp)

    def __call__(self, images: list[str], init: np.ndarray, ids: list[str] | None = None, chunk: int = 256,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
        """Refined image points (N, K, 2) from the adapted ``init`` (N, K, 2) of faces in ``images``,
        which faces were refined (N,) bool, and the problems: a face whose image cannot be read
        keeps ``init``."""
        init = np.asarray(init, float)
        out = init.copy()
        refined = np.zeros(len(init), bool)
        problems: list[Problem] = []
        size = crop_size(self.method, self.cfg)
        for i in range(0, len(init), chunk):
            part = init[i:i + chunk]
            m = frame_matrices(part, self.ref)
            (crops,), bad = read_crops(images[i:i + chunk], [(m, size)], ids[i:i + chunk] if ids else None)
            ok = np.ones(len(part), bool)
            ok[list(bad)] = False
            problems += bad.values()
            if ok.any():
                out[i:i + chunk][ok] = from_frame(m[ok], self._run(crops[ok], to_frame(m[ok], part[ok])))
            refined[i:i + chunk] = ok
            if progress:
                progress(len(part))
        return out, refined, problems
