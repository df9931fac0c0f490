"""The GPU path, measured in one short run (sized for about 8 minutes on one GPU, not yet run on one; seconds with --tiny).

On simulated faces (nothing to download), on ``--device``:
- training steps/s of the compact net and resnet18 at 128 and 256 px, AMP (float16, CUDA only)
  on and off, channels-last on and off, on one batch already on the device (the model's ceiling);
- whether the data pipeline keeps up: the real trainer (``gapkit.train.train``, crops in memory,
  augmentation in a thread or in DataLoader workers) in steps/s against that ceiling, with the
  GPU's utilisation sampled while it runs where NVML answers;
- the label adapter's fit (shape stage) and the image refiner's fit (CNN), in seconds;
- prediction: faces/s of the model in torch on the device and of its ONNX export in
  onnxruntime on the CPU.
Writes ``gpu_check.json`` and ``gpu_check.md`` (the table the README shows) under ``--out``.

    python benchmarks/gpu_check.py --out runs/gpu-check
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu-check   # the tests run this
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from gapkit.adapt import FitConfig, LabelAdapter
from gapkit.devices import resolve_device, set_threads
from gapkit.formats.manifest import read_manifest
from gapkit.refine import RefineConfig
from gapkit.refine import fit as fit_refiner
from gapkit.schemes import get_scheme
from gapkit.sim import SimConfig, generate
from gapkit.train import FaceCrops, Source, TrainConfig, train
from gapkit.train.detector import crop_points, trained_detector
from gapkit.train.trainer import batch_loss

FULL = {"sizes": [128, 256], "batch": 64, "steps": 30, "warmup": 5, "faces": 512, "image": 256, "width": 32,
        "loader_steps": 60, "workers": [0, 4], "refine_steps": 300, "refine_size": 160, "adapter_steps": 2500,
        "predict_faces": 1024}
TINY = {"sizes": [32], "batch": 4, "steps": 2, "warmup": 1, "faces": 12, "image": 64, "width": 8,
        "loader_steps": 3, "workers": [0], "refine_steps": 2, "refine_size": 32, "adapter_steps": 5,
        "predict_faces": 8}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _faces(root: Path, p: dict) -> tuple[list, dict[int, FaceCrops]]:
    """Simulated synthetic faces (their 70 projected points and, as labels, their human 68),
    and their crops at each size."""
    generate(root, SimConfig(domain="synthetic", n=p["faces"], size=p["image"], seed=7), workers=2)
    recs = [r for r in read_manifest(root / "manifest.jsonl") if not hasattr(r, "reason")]
    human = [r.model_copy(update={"scheme": "ibug68", "points": r.attributes["human68"]}) for r in recs]
    return recs, {size: FaceCrops(human, size) for size in p["sizes"]}


def step_rate(device: str, backbone: str, size: int, amp: bool, channels_last: bool, p: dict) -> float:
    """Training steps/s on one batch already on the device (the trainer's loss, optimiser and AMP)."""
    import torch

    from gapkit.train.model import LandmarkNet

    cfg = TrainConfig(size=size, width=p["width"], backbone=backbone, amp=amp, channels_last=channels_last,
                      loader_workers=1, heatmap_loss=0.5)
    scheme = get_scheme("ibug68")
    net = LandmarkNet(68, cfg.width, backbone).to(device).train()
    net = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.startswith("cuda"))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (p["batch"], 3, size, size)).astype(np.float32)).to(device)
    pts = torch.from_numpy(rng.uniform(0.3 * size, 0.7 * size, (p["batch"], 68, 2)))
    for i in range(p["warmup"] + p["steps"]):
        if i == p["warmup"]:
            _sync(device)
            t = time.perf_counter()
        loss = batch_loss(net, x, pts, cfg, scheme, device)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return p["steps"] / (time.perf_counter() - t)


class _Utilisation:
    """The GPU's utilisation (%) sampled every 0.2 s while in the block (None where NVML is absent)."""

    def __init__(self, device: str):
        self.device, self.samples, self.stop = device, [], threading.Event()

    def _run(self) -> None:
        import torch

        while not self.stop.wait(0.2):
            try:
                self.samples.append(torch.cuda.utilization())
            except Exception:  # no pynvml, or a driver that does not say
                return

    def __enter__(self):
        if self.device.startswith("cuda"):
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def loader_rate(device: str, crops: FaceCrops, workers: int, p: dict) -> dict:
    """The real trainer's steps/s (timed after its first steps) and the GPU's utilisation meanwhile."""
    cfg = TrainConfig(steps=p["warmup"] + p["loader_steps"], batch_size=p["batch"], size=crops.size,
                      width=p["width"], device=device, loader_workers=workers, checkpoint_every=10**6)
    marks: dict[int, float] = {}
    with _Utilisation(device) as util:
        train([Source(crops)], cfg, progress=lambda s, n, loss: marks.setdefault(s, time.perf_counter()))
    last = max(marks)
    return {"steps_per_s": (last - p["warmup"]) / (marks[last] - marks[p["warmup"]]), "gpu_util_pct": util.mean}


def adapter_fit_s(device: str, recs: list, p: dict) -> float:
    src = np.stack([r.points for r in recs])
    tgt = np.stack([r.attributes["human68"] for r in recs])
    t = time.perf_counter()
    LabelAdapter("facesynthetics70", "ibug68").fit(src, tgt, FitConfig(device=device, max_steps=p["adapter_steps"],
                                                                     head="mlp", patience=10**6))
    return time.perf_counter() - t


def refiner_fit_s(device: str, recs: list, p: dict) -> float:
    tgt = np.stack([np.asarray(r.attributes["human68"], float) for r in recs])
    init = tgt + np.random.default_rng(1).normal(0, 1.5, tgt.shape)
    cfg = RefineConfig(method="cnn", steps=p["refine_steps"], size=p["refine_size"], small_data=0, device=device)
    scheme = get_scheme("ibug68")
    t = time.perf_counter()
    fit_refiner([r.image for r in recs], init, tgt, tgt.mean(0), scheme, scheme.default_normaliser, cfg, device)
    return time.perf_counter() - t


def predict_rates(device: str, crops: FaceCrops, p: dict) -> dict:
    """Faces/s of a (briefly trained) model: torch on the device, its ONNX export on the CPU."""
    from gapkit.train.onnx import OnnxDetector, export_onnx

    cfg = TrainConfig(steps=2, batch_size=p["batch"], size=crops.size, width=p["width"], device=device)
    det = trained_detector(train([Source(crops)], cfg), cfg, [Source(crops)]).to(device)
    faces = crops.images[np.arange(p["predict_faces"]) % len(crops)]
    out = {"torch_" + device.split(":")[0]: _faces_per_s(det, faces, p["batch"], device)}
    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxDetector(export_onnx(det.to("cpu"), Path(tmp) / "m.onnx"))
        out["onnxruntime_cpu"] = _faces_per_s(onnx, faces, p["batch"], "cpu")
    return out


def _faces_per_s(model, faces: np.ndarray, batch: int, device: str) -> float:
    crop_points(model, faces[:batch], flip=False)  # warm-up
    _sync(device)
    t = time.perf_counter()
    for i in range(0, len(faces), batch):
        crop_points(model, faces[i:i + batch], flip=False)
    _sync(device)
    return len(faces) / (time.perf_counter() - t)


def _table(res: dict) -> str:
    lines = [f"GPU check on {res['device_name']} (`{res['command']}`)", "",
             "| backbone | px | AMP | channels-last | steps/s (batch on device) |", "|---|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['size']} | {'on' if r['amp'] else 'off'} | "
              f"{'on' if r['channels_last'] else 'off'} | {r['steps_per_s']:.1f} |" for r in res["train"]]
    lines += ["", "| loader | px | steps/s (real trainer) | of the on-device ceiling | GPU utilisation |",
              "|---|---|---|---|---|"]
    for r in res["loader"]:
        util = f"{r['gpu_util_pct']:.0f}%" if r["gpu_util_pct"] is not None else "n/a"
        lines.append(f"| {r['workers']} workers | {r['size']} | {r['steps_per_s']:.1f} | {r['share']:.0%} | {util} |")
    lines += ["", f"label adapter fit (shape, MLP, {res['sizes']['adapter_steps']} steps): {res['adapter_fit_s']:.1f} s; "
              f"image refiner fit (CNN, {res['sizes']['refine_steps']} steps): {res['refiner_fit_s']:.1f} s",
              "", "prediction, faces/s: " + ", ".join(f"{k} {v:.0f}" for k, v in res["predict"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (the point of this check), or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: proves the script runs end to end")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/gpu-check")
    a = ap.parse_args()
    set_threads(a.threads)
    device = resolve_device(a.device)
    p = TINY if a.tiny else FULL
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = {"device": device, "device_name": _device_name(device), "sizes": p,
           "command": f"python benchmarks/gpu_check.py --device {a.device}{' --tiny' if a.tiny else ''}", "train": []}
    for backbone in ("compact", "resnet18"):
        for size in p["sizes"]:
            for amp in (False, True):
                for cl in (True, False):
                    res["train"].append({"backbone": backbone, "size": size, "amp": amp, "channels_last": cl,
                                         "steps_per_s": step_rate(device, backbone, size, amp, cl, p)})
                    print(res["train"][-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        recs, crops = _faces(Path(tmp) / "faces", p)
        ceiling = {r["size"]: r["steps_per_s"] for r in res["train"]
                   if r["backbone"] == "compact" and r["amp"] and r["channels_last"]}
        res["loader"] = []
        for size in p["sizes"]:
            for w in p["workers"]:
                r = loader_rate(device, crops[size], w, p) | {"size": size, "workers": w}
                res["loader"].append(r | {"share": r["steps_per_s"] / ceiling[size]})
                print(res["loader"][-1], flush=True)
        res["adapter_fit_s"] = adapter_fit_s(device, recs, p)
        res["refiner_fit_s"] = refiner_fit_s(device, recs, p)
        res["predict"] = predict_rates(device, crops[min(p["sizes"])], p)
    res["wall_s"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    (out / "gpu_check.md").write_text(_table(res))
    print(_table(res))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({res['wall_s']:.0f} s)")


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    import torch

    return f"CPU ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
