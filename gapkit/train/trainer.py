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
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field, PositiveInt, field_validator

from gapkit.augment import Augment, to_tensor_batch
from gapkit.devices import bf16_native, resolve_device
from gapkit.errors import ConfigError, ModelError
from gapkit.metrics import normaliser
from gapkit.refine.config import RefineConfig
from gapkit.settings import Settings
from gapkit.train.backbones import check_backbone
from gapkit.train.data import FaceCrops, Source, StepBatches, batches
from gapkit.train.detector import merge_flipped

# The second stage's refiner settings where they differ from RefineConfig's (the label adapter's):
# stage 1's own training predictions are closer to the labels than its predictions of new faces,
# so the starts get more jitter (1.5 px, measured with own starts on the 300-W pool's validation
# split; with out-of-fold starts 1.5 and 0.8 tied there).
SECOND_STAGE_REFINER = {"jitter": 1.5}


class TwoStage(Settings):
    """The detector's second stage (:mod:`gapkit.train.two_stage`): an image refiner trained to
    move first-stage predictions of the training faces to their labels."""

    # where the refiner's training starts come from: "own": stage 1's predictions of its own
    # training faces, the refiner's jitter standing in for the larger errors of new faces (no
    # extra models); "out_of_fold": each fold predicted by a stage-1 model trained without it;
    # "auto": own from ``own_from`` training faces, else out_of_fold. On the 300-W pool's
    # validation split, own beat out_of_fold at equal time with 1,475 faces, while with 226
    # stage 1 knew its own faces too well for the refiner to learn anything from them.
    starts: Literal["auto", "own", "out_of_fold"] = "auto"
    own_from: int = Field(1000, ge=0)
    folds: int = Field(2, ge=2)  # out_of_fold only
    # out_of_fold only: each fold model's steps (and budget_s) as a share of stage 1's; the folds
    # only show the refiner what stage 1's errors look like, and cost fold_share x folds of its time
    fold_share: float = Field(0.5, gt=0, le=1)
    refiner: RefineConfig = Field(default_factory=lambda: RefineConfig(**SECOND_STAGE_REFINER))

    @field_validator("refiner", mode="before")
    @classmethod
    def _second_stage_defaults(cls, value: object) -> object:
        """A refiner given as a table (TOML, --refine options) gets SECOND_STAGE_REFINER beneath its keys."""
        return SECOND_STAGE_REFINER | value if isinstance(value, dict) else value


class TrainConfig(Settings):
    """The detector's training settings; the benchmark nests them as its ``[train]`` table."""

    steps: PositiveInt = 400
    batch_size: PositiveInt = 32
    size: PositiveInt = 128    # crop side in pixels
    margin: float = Field(1.3, gt=0)  # crop side over the face box's larger side
    width: PositiveInt = 32
    # a name of gapkit.train.backbones.BACKBONES (resnet*: torchvision's ResNets, in plain torch)
    backbone: Annotated[str, AfterValidator(check_backbone)] = "compact"
    lr: float = Field(4e-3, gt=0)
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    device: str = "auto"
    # mixed precision where the device computes it natively: float16 (with a grad scaler) on
    # CUDA, bfloat16 on a CPU with AVX512-BF16 or AMX; elsewhere float32. Prediction stays float32.
    amp: bool = True
    channels_last: bool = True  # the net and its input in NHWC memory (faster convolutions where supported)
    heatmap_loss: float = Field(0.5, ge=0)  # weight of the heatmap-shape term (see _heatmap_loss)
    flip_test: bool = True     # at prediction, average with the mirrored crop (see predict)
    # Wall-clock budget: the run ends when it is spent (or at ``steps``), and the cosine decay
    # follows the larger of the step and time fractions. Such a run is not step-for-step
    # reproducible; the benchmark against ERT uses it to train in no more time than ERT.
    budget_s: float | None = Field(None, gt=0)
    checkpoint_every: PositiveInt = 100
    # 0: batches are built in a thread beside the training loop; N > 0: by N worker processes of a
    # torch DataLoader (another random stream; for large or memory-mapped sets, and GPUs).
    loader_workers: int = Field(0, ge=0)
    augment: Augment = Field(default_factory=Augment)
    # a second stage that reads the image around stage 1's points (None: one stage)
    refine: TwoStage | None = None


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist  # deferred: `import gapkit.train` stays torch-free

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
    d = normaliser(points, scheme)
    ok = np.isfinite(d) & (d > 0)
    return d if ok.all() else np.where(ok, d, normaliser(points, scheme, "bbox"))


def _heatmap_loss(prob, centres, y, mask):
    """Jensen-Shannon divergence between each point's heatmap and a Gaussian (sigma: one cell)
    at its label (the DSNT regulariser): the soft-argmax alone lets a heatmap be any shape
    with the right mean, and a compact one trains faster and fails less."""
    import torch  # deferred: `import gapkit.train` stays torch-free

    xs, ys = centres
    sigma = float(xs[1] - xs[0]) if len(xs) > 1 else 1.0
    gx = torch.exp(-0.5 * ((xs[None, None] - y[..., :1]) / sigma) ** 2)          # (B, K, W)
    gy = torch.exp(-0.5 * ((ys[None, None] - y[..., 1:]) / sigma) ** 2)          # (B, K, H)
    g = gy[..., :, None] * gx[..., None, :]
    g = g / g.sum((-2, -1), keepdim=True).clamp(min=1e-12)
    m = 0.5 * (prob + g)
    eps = 1e-12

    def kl(a, b):
        return (a * ((a + eps).log() - (b + eps).log())).sum((-2, -1))

    js = 0.5 * kl(prob, m) + 0.5 * kl(g, m)                                          # (B, K)
    return ((js * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def train(sources: Sequence[Source], cfg: TrainConfig, init: dict | None = None, checkpoint: Path | None = None,
          progress: Callable[[int, int, float], None] | None = None, tag: str = ""):
    """Train a new (or ``init``-weighted) LandmarkNet on the mix of ``sources``; returns the model
    (on CPU, eval mode). With ``checkpoint``, state is saved every ``checkpoint_every`` steps and
    a run that finds one continues from it, if it was saved under the same ``tag`` (a caller's
    digest of its data and settings); one of another tag is refused."""
    import torch  # deferred: `import gapkit.train` stays torch-free

    from gapkit.train.model import LandmarkNet  # deferred: imports torch at the top

    clock = {"t0": time.perf_counter(), "frac": 0.0}  # the budget covers the whole call, set-up included
    rank, world = _dist()
    device = _device(cfg, rank, world)
    torch.manual_seed(cfg.seed)
    scheme = sources[0].crops.scheme
    model = LandmarkNet(scheme.num_points, cfg.width, cfg.backbone)
    if init is not None:
        model.load_state_dict(init)
    model.to(device, memory_format=_memory_format(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # a plain float (not a NumPy scalar), so the checkpoint loads with weights_only=True

    def factor(s: int) -> float:
        frac = max(min(s, cfg.steps) / cfg.steps, clock["frac"])
        return float(min(1.0, (s + 1) / max(cfg.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    scaler = torch.amp.GradScaler("cuda", enabled=_amp(cfg, device))
    state = {"model": model, "opt": opt, "sched": sched}
    start = _resume(checkpoint, tag, state, device) if checkpoint is not None and checkpoint.is_file() else 0
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None)
    net.train()
    for step, (imgs, pts) in enumerate(_batch_stream(sources, cfg, start, rank, world, device), start=start):
        loss = batch_loss(net, imgs, pts, cfg, scheme, device)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if cfg.budget_s:
            clock["frac"] = (time.perf_counter() - clock["t0"]) / cfg.budget_s
        sched.step()
        if progress and rank == 0:
            progress(step + 1, cfg.steps, float(loss.detach()))
        if checkpoint is not None and rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            _save_checkpoint(checkpoint, state, step + 1, cfg, tag)
        if clock["frac"] >= 1:
            break
    model.eval().cpu().to(memory_format=torch.contiguous_format)
    return model


def _device(cfg: TrainConfig, rank: int, world: int) -> str:
    """The device this process trains on (its own GPU under torchrun)."""
    if cfg.budget_s and world > 1:
        raise ConfigError("budget_s is for single-process runs: under torchrun the ranks would stop at different steps")
    device = resolve_device(cfg.device)
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    return device


def _resume(checkpoint: Path, tag: str, state: dict, device: str) -> int:
    """Load the model, optimiser and schedule of ``state`` from ``checkpoint``; returns its step."""
    import torch  # deferred: `import gapkit.train` stays torch-free

    try:
        saved = torch.load(checkpoint, map_location=device, weights_only=True)  # tensors and plain types only
    except Exception as exc:
        raise ModelError(f"{checkpoint}: not a readable checkpoint ({str(exc).splitlines()[0][:200]}); "
                         "remove it to start afresh") from None
    if saved.get("tag", "") != tag:
        raise ConfigError(f"{checkpoint} is the checkpoint of another run (other data or settings); "
                          "remove it to start afresh")
    for key, obj in state.items():
        obj.load_state_dict(saved[key])
    return saved["step"]


def _save_checkpoint(checkpoint: Path, state: dict, step: int, cfg: TrainConfig, tag: str) -> None:
    import torch  # deferred: `import gapkit.train` stays torch-free

    tmp = checkpoint.with_suffix(".tmp")
    torch.save({k: obj.state_dict() for k, obj in state.items()} | {"step": step, "config": cfg.model_dump(),
                                                                     "tag": tag}, tmp)
    os.replace(tmp, checkpoint)


def _batch_stream(sources: Sequence[Source], cfg: TrainConfig, start: int, rank: int, world: int, device: str):
    """The training batches from step ``start`` on. Each step's batch depends only on (seed,
    step), so a resumed run sees the batches it would have."""
    if cfg.loader_workers:
        from torch.utils.data import DataLoader  # deferred: `import gapkit.train` stays torch-free

        ds = StepBatches(sources, cfg.batch_size, cfg.steps, cfg.augment, cfg.seed, rank, world)
        return iter(DataLoader(ds, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.loader_workers,
                               prefetch_factor=4, pin_memory=device.startswith("cuda")))
    stream = batches(sources, cfg.batch_size, cfg.steps, cfg.augment, cfg.seed, rank, world)
    for _ in range(start):
        next(stream)
    return _prefetch(stream)


def _memory_format(cfg: TrainConfig):
    import torch  # deferred: `import gapkit.train` stays torch-free

    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _amp(cfg: TrainConfig, device: str) -> bool:
    return cfg.amp and device.startswith("cuda")  # float16 and its grad scaler: CUDA only


def _autocast(cfg: TrainConfig, device: str):
    """The training forward pass's autocast: see ``TrainConfig.amp``."""
    import torch  # deferred: `import gapkit.train` stays torch-free

    if _amp(cfg, device):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    native = cfg.amp and device == "cpu" and bf16_native(device)
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=native)


def batch_loss(net, imgs, pts, cfg: TrainConfig, scheme, device: str):
    """One batch's loss, as :func:`train` computes it: the points' error over the inter-ocular
    distance (missing points left out), plus the heatmap term. ``imgs`` (B, S, S, 3) uint8 or,
    with ``cfg.loader_workers``, a (B, 3, S, S) tensor."""
    import torch  # deferred: `import gapkit.train` stays torch-free

    x = imgs if cfg.loader_workers else to_tensor_batch(imgs)
    x = x.to(device, non_blocking=True).contiguous(memory_format=_memory_format(cfg))
    pts = pts.numpy() if cfg.loader_workers else pts
    y = torch.from_numpy(np.nan_to_num(pts)).float().to(device)
    mask = torch.from_numpy(~np.isnan(pts).any(-1)).float().to(device)
    iod = torch.from_numpy(_iod_pixels(pts, scheme)).float().to(device)
    with _autocast(cfg, device):
        pred, prob, centres = net(x, with_heatmaps=True)
    err = torch.linalg.vector_norm(pred.float() - y, dim=-1) * mask
    loss = (err.sum(1) / mask.sum(1).clamp(min=1) / iod).mean()
    if cfg.heatmap_loss:
        loss = loss + cfg.heatmap_loss * _heatmap_loss(prob.float(), centres, y, mask)
    return loss


def predict(model, crops: FaceCrops, batch_size: int = 128, device: str = "cpu", flip: bool = False) -> np.ndarray:
    """Landmarks (N, K, 2) in original image pixels for every crop. With ``flip``, each crop is
    also run mirrored (points relabelled left <-> right) and the two predictions averaged."""
    import torch  # deferred: `import gapkit.train` stays torch-free

    model = model.to(resolve_device(device)).eval()
    out = np.empty(crops.points.shape[:1] + (model.num_points, 2))
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = to_tensor_batch(crops.images[i:i + batch_size]).to(next(model.parameters()).device)
            p = model(x).float().cpu().numpy()
            if flip:
                p = merge_flipped(p, model(x.flip(-1)).float().cpu().numpy(), crops.scheme.flip, x.shape[-1])
            out[i:i + batch_size] = p
    model.cpu()
    return crops.to_image(np.arange(len(crops)), out)


def throughput(model, size: int, batch_size: int = 32, steps: int = 10, device: str = "cpu", amp: bool = False) -> float:
    """Training steps per second on random data (for the benchmark scripts); ``amp`` as
    ``TrainConfig.amp`` decides it for the device."""
    import torch  # deferred: `import gapkit.train` stays torch-free

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
        with _autocast(TrainConfig(amp=amp), device):
            pred = model(x)
        loss = (pred.float() - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)
