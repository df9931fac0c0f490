"""The CNN refiner: learns from hundreds of faces.

Each face's crop feeds :class:`gapkit.refine.net.RefineNet`, which moves the points in a few
cascaded steps. Training augments the frame and jitters the initial points; the CNN runs in
bfloat16 autocast where the device computes bf16 natively (``RefineConfig.amp``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gapkit.augment import Augment, augment, to_tensor_batch
from gapkit.devices import bf16_native
from gapkit.refine.base import ImageRefiner
from gapkit.refine.config import RefineConfig
from gapkit.refine.frame import mirror
from gapkit.schemes import LandmarkScheme


def build_net(k: int, cfg: RefineConfig):
    """An untrained RefineNet for K points with ``cfg``'s width, window and stages."""
    from gapkit.refine.net import RefineNet  # imports torch, which `import gapkit.refine` must not

    return RefineNet(k, cfg.width, cfg.window, cfg.stages)


def _tensor(images: np.ndarray, device: str):
    return to_tensor_batch(images).to(device)


def _autocast(device: str, amp: bool):
    """bfloat16 autocast for the CNN where ``amp`` is on and the device computes it natively."""
    import torch  # deferred: gapkit.refine is imported without torch

    on = amp and bf16_native(device)
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=on)


def train_net(images: np.ndarray, init: np.ndarray, target: np.ndarray, scheme: LandmarkScheme,
              cfg: RefineConfig, device: str, progress: Callable[[int, int], None] | None = None):
    """Train a refiner on crops (N, S, S, 3), initial and target crop points (N, K, 2). NaN targets
    are left out of the loss. Returns the network in eval mode."""
    import torch  # deferred: gapkit.refine is imported without torch

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


def flip_averaged(step: Callable[[np.ndarray, np.ndarray], np.ndarray], images: np.ndarray, init: np.ndarray,
                  flip: np.ndarray | None, batch_size: int = 64) -> np.ndarray:
    """Refined crop points (N, K, 2) from ``step(crops, points) -> points``, run in batches; with
    ``flip`` (the scheme's permutation), the mean of each crop's answer and its mirror image's.
    The torch CNN and its ONNX graph both run through here."""
    out = np.empty_like(init, dtype=float)
    for i in range(0, len(images), batch_size):
        x, p = images[i:i + batch_size], init[i:i + batch_size]
        r = step(x, p)
        if flip is not None:
            mx, mp = mirror(x, p, flip)
            _, q = mirror(mx, step(mx, mp), flip)
            r = (r + q) / 2
        out[i:i + batch_size] = r
    return out


def run_net(net, images: np.ndarray, init: np.ndarray, flip: np.ndarray | None, device: str,
            batch_size: int = 64, amp: bool = False) -> np.ndarray:
    """Refined crop points (N, K, 2) by the torch CNN (see :func:`flip_averaged`)."""
    import torch  # deferred: gapkit.refine is imported without torch

    def step(x: np.ndarray, p: np.ndarray) -> np.ndarray:
        return net(_tensor(x, device), torch.from_numpy(p.astype(np.float32)).to(device))[-1].cpu().numpy()

    with torch.inference_mode(), _autocast(device, amp):
        return flip_averaged(step, images, init, flip, batch_size)


def state_arrays(net) -> dict[str, np.ndarray]:
    """A network's weights as named numpy arrays (copies, on the CPU)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


class CnnRefiner(ImageRefiner):
    """The CNN refiner; its network is built from the weights on first use."""

    name = "cnn"

    def __init__(self, cfg: RefineConfig, scheme: LandmarkScheme, state: dict[str, np.ndarray], net=None,
                 device: str = "cpu"):
        super().__init__(cfg, scheme, state)
        self._net, self._device = net, device

    @staticmethod
    def crop_size(cfg: RefineConfig) -> int:
        return cfg.size

    @staticmethod
    def work(cfg: RefineConfig) -> int:
        return cfg.steps

    @classmethod
    def train(cls, crops: np.ndarray, init: np.ndarray, target: np.ndarray, cfg: RefineConfig,
              scheme: LandmarkScheme, device: str, tick: Callable[[int], None]) -> CnnRefiner:
        done = [0]

        def progress(step: int, _total: int) -> None:
            tick(step - done[0])
            done[0] = step

        net = train_net(crops, init, target, scheme, cfg, device, progress)
        return cls(cfg, scheme, state_arrays(net), net, device)

    @property
    def net(self):
        """The CNN, built from the weights on first use; a state that does not fit raises ValueError."""
        if self._net is None:
            import torch  # deferred: gapkit.refine is imported without torch

            net = build_net(self.scheme.num_points, self.cfg)
            try:
                net.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
            except RuntimeError as exc:
                raise ValueError(f"refiner weights do not fit its settings ({str(exc).splitlines()[0]})") from None
            self._net = net.eval().to(self._device)
        return self._net

    def check(self) -> None:
        self.net  # noqa: B018  (building the CNN is the check)

    def to(self, device: str) -> CnnRefiner:
        self._device = device
        if self._net is not None:
            self._net = self._net.to(device)
        return self

    def run(self, crops: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return run_net(self.net, crops, pts, self.test_flip(), self._device, amp=self.cfg.amp)
