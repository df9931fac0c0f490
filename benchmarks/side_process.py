"""Run a helper script in a side environment (dlib lives there, never beside gapkit): a JSON job
on its stdin, a JSON answer on its stdout, predictions as (N, K, 2) arrays."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np


def run_side(python: str, script: str, job: dict) -> dict:
    out = subprocess.run([python, str(Path(__file__).with_name(script))], input=json.dumps(job),
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    res["pred"] = np.asarray(res["pred"], float)
    return res
