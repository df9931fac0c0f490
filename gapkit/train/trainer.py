"""Train and run the detector: AdamW with cosine decay, AMP on CUDA, checkpoints and resume,
seeded; DistributedDataParallel when started by ``torchrun`` (WORLD_SIZE > 1), unchanged code.

The loss is the L1 point distance in crop pixels divided by the ground-truth inter-ocular
distance, so it is the NME the benchmark reports; missing (NaN) points are left out.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field, PositiveInt

from gapkit.devices import resolve_device
from gapkit.settings import Settings
from gapkit.train.data import Augment, FaceCrops, Source, batches, to_tensor_batch


class TrainConfig(Settings):
    """The detector's training settings; the benchmark nests them as its ``[train]`` table."""

    steps: PositiveInt = 400
    batch_size: PositiveInt = 32
    size: PositiveInt = 128    # crop side in pixels
    margin: float = Field(1.3, gt=0)  # crop side over the face box's larger side
    width: PositiveInt = 32
    lr: float = Field(4e-3, gt=0)
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    device: str = "auto"
    amp: bool = True           # on CUDA only
    checkpoint_every: PositiveInt = 100
    augment: Augment = Field(default_factory=Augment)


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if __import__("torch").cuda.is_available() else "gloo")
        return dist.get_rank(), world
    return 0, 1


def _prefetch(it: Iterator, depth: int = 3) -> Iterator:
    """Build batches in a thread (OpenCV releases the GIL) while the model trains. The thread
    stops when the consumer does, even on an exception."""
    q: queue.Queue = queue.Queue(depth)
    done, stop = object(), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in it:
                if not put(item):
                    return
        finally:
            put(done)

    threading.Thread(target=work, daemon=True).start()
    try:
        while (item := q.get()) is not done:
            yield item
    finally:
        stop.set()


def _iod_pixels(points: np.ndarray, scheme) -> np.ndarray:
    """Per-face loss normaliser: the inter-ocular distance, or the landmark box's sqrt(w * h)
    where the eye points are missing."""
    from gapkit.metrics import normaliser

    d = normaliser(points, scheme)
    ok = np.isfinite(d) & (d > 0)
    return d if ok.all() else np.where(ok, d, normaliser(points, scheme, "bbox"))


def train(sources: Sequence[Source], cfg: TrainConfig, init: dict | None = None, checkpoint: Path | None = None,
          progress: Callable[[int, int, float], None] | None = None):
    """Train a new (or ``init``-weighted) LandmarkNet on the mix of ``sources``; returns the model
    (on CPU, eval mode). With ``checkpoint``, state is saved every ``checkpoint_every`` steps and
    a run that finds one continues from it."""
    import torch

    from gapkit.train.model import LandmarkNet

    rank, world = _dist()
    device = resolve_device(cfg.device)
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    torch.manual_seed(cfg.seed)
    scheme = sources[0].crops.scheme
    model = LandmarkNet(scheme.num_points, cfg.width)
    if init is not None:
        model.load_state_dict(init)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # a plain float (not a NumPy scalar), so the checkpoint loads with weights_only=True
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(min(1.0, (s + 1) / max(cfg.warmup, 1))
                                              * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))))
    use_amp = cfg.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)  # tensors and plain types, never pickles
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None)
    # Each step's batch depends only on (seed, step): a resumed run sees the batches it would have.
    stream = batches(sources, cfg.batch_size, cfg.steps, cfg.augment, cfg.seed, rank, world)
    for _ in range(start):
        next(stream)
    net.train()
    loss_v = float("nan")
    for step, (imgs, pts) in enumerate(_prefetch(stream), start=start):
        x = to_tensor_batch(imgs).to(device, non_blocking=True)
        y = torch.from_numpy(np.nan_to_num(pts)).float().to(device)
        mask = torch.from_numpy(~np.isnan(pts).any(-1)).float().to(device)
        iod = torch.from_numpy(_iod_pixels(pts, scheme)).float().to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            pred = net(x)
        err = torch.linalg.vector_norm(pred.float() - y, dim=-1) * mask
        loss = (err.sum(1) / mask.sum(1).clamp(min=1) / iod).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_v = float(loss.detach())
        if progress and rank == 0:
            progress(step + 1, cfg.steps, loss_v)
        if checkpoint is not None and rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1, "config": cfg.model_dump()}, tmp)
            os.replace(tmp, checkpoint)
    model.eval().cpu()
    return model


def predict(model, crops: FaceCrops, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """Landmarks (N, K, 2) in original image pixels for every crop."""
    import torch

    model = model.to(resolve_device(device)).eval()
    out = np.empty(crops.points.shape[:1] + (model.num_points, 2))
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = to_tensor_batch(crops.images[i:i + batch_size]).to(next(model.parameters()).device)
            out[i:i + batch_size] = model(x).float().cpu().numpy()
    model.cpu()
    return crops.to_image(np.arange(len(crops)), out)


def throughput(model, size: int, batch_size: int = 32, steps: int = 10, device: str = "cpu") -> float:
    """Training steps per second on random data (for the benchmark script)."""
    import torch

    device = resolve_device(device)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, size, size, device=device)
    y = torch.rand(batch_size, model.num_points, 2, device=device) * size
    for i in range(steps + 2):
        if i == 2:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
        loss = (model(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)
