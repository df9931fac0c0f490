"""benchmarks/gpu_check.py runs end to end on the CPU at tiny sizes, so the script a GPU session
runs once is known to work before a device is lent; its JSON and table hold every section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--threads", "2",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["device"] == "cpu" and doc["wall_s"] > 0
    # 2 backbones x 1 size x AMP on/off x channels-last on/off, each a positive rate
    assert len(doc["train"]) == 8 and all(r["steps_per_s"] > 0 for r in doc["train"])
    assert {r["backbone"] for r in doc["train"]} == {"compact", "resnet18"}
    assert doc["loader"] and all(r["steps_per_s"] > 0 and r["share"] > 0 for r in doc["loader"])
    assert doc["adapter_fit_s"] > 0 and doc["refiner_fit_s"] > 0
    assert set(doc["predict"]) == {"torch_cpu", "onnxruntime_cpu"} and min(doc["predict"].values()) > 0
    table = (out / "gpu_check.md").read_text()
    assert "| resnet18 | 32 | on | off |" in table and "onnxruntime_cpu" in table
