"""The App screenshots of the documentation, on simulated faces only, in a real browser.

Simulated synthetic faces are shown with three labellings: their own labels mapped to 68
points (``ground_truth``, green), the points of a detector trained on simulated real faces
(``predictions``, red), and their projected labels translated to human semantics by a label
adapter (``adapted``, blue). Headless Chromium is driven through chromedriver's WebDriver HTTP
API (no Python driver package needed); FiftyOne's one-time "Explore Enterprise" tooltip is
marked as seen in the page's localStorage before the screenshots, so nothing covers the grid.

    python docs/_scripts/app_screenshot.py [--out docs] [--port 5199]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

TOOLTIP_KEY = "fiftyone-enterprise-tooltip-seen"  # FiftyOne 1.22's App: the tooltip shows until this is set


def gapkit(*args: str, cwd: Path) -> None:
    subprocess.run([str(Path(sys.executable).parent / "gapkit"), *args], cwd=cwd, check=True)


def make_faces(work: Path) -> None:
    import gapkit as gk

    gapkit("sim", "shown", "--domain", "synthetic", "--n", "24", "--size", "256", "--seed", "5", cwd=work)
    gapkit("convert", "shown", "shown68.jsonl", "--scheme", "ibug68", cwd=work)
    gapkit("sim", "real", "--domain", "real", "--n", "300", "--seed", "1", cwd=work)
    gapkit("train", "real", "-o", "real.gkm", "--steps", "1500", cwd=work)
    gapkit("predict", "real.gkm", "shown68.jsonl", "-o", "pred.jsonl", cwd=work)
    pairs = gk.load(gk.simulate(work / "pairs", n=300, domain="synthetic", seed=2))
    gk.fit_adapter(pairs, gk.human_semantics(pairs)).save(work / "syn2human.gka")


class Browser:
    """One headless Chromium session through chromedriver's W3C WebDriver endpoints."""

    def __init__(self, port: int, width: int = 1600, height: int = 1000):
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait(self.base + "/status")
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def go(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def screenshot(self, path: Path) -> None:
        png = base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 88])

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()


def _wait(url: str, seconds: float = 180, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process serving {url} ended (exit {proc.returncode})") from None
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not answer in {seconds:.0f} s") from None
            time.sleep(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--port", type=int, default=5199)
    ap.add_argument("--zoom", type=int, default=9, help="FiftyOne's grid zoom, 0-10 (larger tiles when higher)")
    args = ap.parse_args()
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_faces(work)
        app = subprocess.Popen([str(Path(sys.executable).parent / "gapkit"), "app", "-i", "shown", "--scheme", "ibug68",
                                "--predictions", "pred.jsonl", "--adapter", "syn2human.gka", "--domain", "synthetic",
                                "--name", "gapkit-docs", "--port", str(args.port), "--embeddings", "none"],
                               cwd=work, start_new_session=True,
                               env=dict(os.environ, FIFTYONE_APP_GRID_ZOOM=str(args.zoom)))
        browser = None
        try:
            base = f"http://127.0.0.1:{args.port}"
            _wait(base, proc=app)
            browser = Browser(_free_port())
            browser.go(base)
            browser.run(f"window.localStorage.setItem('{TOOLTIP_KEY}', 'true')")
            for view, name in (("label-gap", "app_label_gap.jpg"), ("worst-nme", "app_worst_nme.jpg")):
                browser.go(f"{base}/datasets/gapkit-docs?view={view}")
                time.sleep(12)  # the grid's thumbnails and their overlays load after the page
                browser.screenshot(args.out / name)
                print(f"wrote {args.out / name}")
        finally:
            if browser is not None:
                browser.close()
            app.send_signal(signal.SIGINT)
            app.wait(timeout=60)


if __name__ == "__main__":
    main()
