"""The five strategies over an N_real x seed grid, resumable cell by cell.

Per seed: the real training pool is permuted once and the N_real subsets are its prefixes
(nested). One synthetic-only model is trained per seed on the synthetic labels mapped
deterministically into the target scheme. Per cell (N_real, seed):

1. ``real_only``: train on the N_real images.
2. ``label_adapt``: fit a LabelAdapter on (the synthetic model's predictions on the N_real
   images -> their labels) and apply it to that model's test predictions.
3. ``data_adapt``: pass the synthetic training labels through that adapter and train on them.
4. ``mix``: real and adapted synthetic in every batch, synthetic share alpha.
5. ``finetune``: the data_adapt model fine-tuned on the N_real images.

The adapter sees only the cell's N_real images (its own validation split is carved from
them); the test set is only ever predicted, never fitted, selected on or stopped on. Every
result row records its provenance: which sets, which ids, which labels, which init.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapkit.bench.config import STRATEGIES, BenchConfig, Grid, TrainSettings
from gapkit.errors import GapkitError, InputError
from gapkit.faceset import DataSource
from gapkit.files import atomic_write_text

Log = Callable[[str], None]


@dataclass
class Data:
    pool: object       # FaceCrops of the real training pool
    test: object       # FaceCrops of the real test set
    synthetic: object  # FaceCrops of the synthetic set, labels mapped to the target scheme
    test_points: np.ndarray


def _load(sets: list[DataSource], target: str, what: str, log: Log) -> list:
    from gapkit.faceset import load

    # a face with more than half of its points missing after mapping cannot be trained on
    faces, rep = load(sets, scheme=target, min_points=0.5)
    if rep.problems:
        log(f"{what}: skipped {rep.skipped} records (first: {rep.problems[0]})")
    if not len(faces):
        raise InputError(f"{what}: no usable records in {', '.join(str(d.path) for d in sets)}")
    return faces.records


def load_data(cfg: BenchConfig, log: Log = lambda s: None) -> Data:
    from gapkit.train import FaceCrops

    t = cfg.train
    pool = _load(cfg.real_train, cfg.target_scheme, "real_train", log)
    test = _load(cfg.real_test, cfg.target_scheme, "real_test", log)
    overlap = {r.image for r in pool} & {r.image for r in test}
    if overlap:
        raise GapkitError(f"{len(overlap)} images are in both real_train and real_test, e.g. {sorted(overlap)[0]}")
    syn = []
    for i, ds in enumerate(cfg.synthetic):
        syn += [r.model_copy(update={"id": f"s{i}/{r.id}"}) for r in _load([ds], cfg.target_scheme, f"synthetic[{i}]", log)]
    crops = [FaceCrops(x, t.size, t.margin) for x in (pool, test, syn)]
    return Data(*crops, test_points=np.stack([r.points for r in test]))


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _scores(pred: np.ndarray, gt: np.ndarray, scheme) -> dict:
    from gapkit.metrics import auc, failure_rate, nme

    per_face = nme(pred, gt, scheme, "inter_ocular")
    return {"nme_pct": float(100 * per_face.mean()), "fr@0.08": failure_rate(per_face, 0.08),
            "auc@0.08": auc(per_face, 0.08), "per_face_nme": [round(float(v), 6) for v in per_face]}


class Runner:
    """Runs the grid into ``out`` (cells/, models/), skipping cells already finished."""

    def __init__(self, cfg: BenchConfig, out: Path, log: Log = lambda s: None,
                 progress: Callable[[str, int, int], None] | None = None):
        self.cfg, self.out, self.log, self.progress = cfg, Path(out), log, progress
        saved = self.out / "config.json"
        now = cfg.model_dump_json(indent=1)
        # Finished cells are only reused by the configuration that made them.
        if saved.is_file() and saved.read_text() != now and any((self.out / "cells").glob("*.json")):
            raise GapkitError(f"{self.out} holds cells of another configuration (see its config.json); "
                              "use another --name, or --fresh to discard them")
        (self.out / "cells").mkdir(parents=True, exist_ok=True)
        (self.out / "models").mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, now, overwrite=True)

    # ---- bookkeeping ----------------------------------------------------------------
    @staticmethod
    def discard(out: Path) -> int:
        """Remove the finished cells and trained models a run wrote into ``out`` (for --fresh),
        and nothing else: other files in cells/ and models/ are the user's."""
        names = "|".join(map(re.escape, STRATEGIES))
        cell = re.compile(rf"^(?:{names})(?:_a[0-9.e+-]+)?_n\d+_s-?\d+\.json$")
        model = re.compile(rf"^(?:{names}|synthetic_mapped)(?:_a[0-9.e+-]+)?(?:_n\d+)?_s-?\d+\.(?:pt|ckpt|tmp)$")
        gone = 0
        for folder, pattern in ((out / "cells", cell), (out / "models", model)):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_file() and pattern.match(p.name):
                        p.unlink()
                        gone += 1
        return gone

    def _cell_path(self, strategy: str, n: int, seed: int, alpha: float | None) -> Path:
        a = f"_a{alpha:g}" if alpha is not None else ""
        return self.out / "cells" / f"{strategy}{a}_n{n}_s{seed}.json"

    def _done(self, *key) -> bool:
        return self._cell_path(*key).is_file()

    def _save(self, row: dict) -> None:
        atomic_write_text(self._cell_path(row["strategy"], row["n_real"], row["seed"], row["alpha"]),
                          json.dumps(row), overwrite=True)

    def _train(self, sources, seed: int, key: str, steps: int | None = None, init: dict | None = None,
               lr: float | None = None):
        import torch

        from gapkit.train import TrainConfig, train

        t: TrainSettings = self.cfg.train
        path = self.out / "models" / f"{key}.pt"
        if path.is_file():
            from gapkit.train.model import LandmarkNet

            model = LandmarkNet(sources[0].crops.scheme.num_points, t.width)
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        tc = TrainConfig(steps=steps or t.steps, batch_size=t.batch_size, lr=lr or t.lr, width=t.width, seed=seed,
                         device=t.device, checkpoint_every=max(50, (steps or t.steps) // 4))
        ckpt = self.out / "models" / f"{key}.ckpt"
        model = train(sources, tc, init=init, checkpoint=ckpt,
                      progress=(lambda s, n, loss: self.progress(key, s, n)) if self.progress else None)
        torch.save(model.state_dict(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        ckpt.unlink(missing_ok=True)
        return model

    # ---- the grid -------------------------------------------------------------------
    def n_values(self, pool_size: int) -> list[int]:
        out = []
        for n in self.cfg.grid.n_real:
            v = pool_size if n == "all" else int(n)
            if v > pool_size:
                self.log(f"n_real {v} is more than the {pool_size} real training images; using {pool_size}")
                v = pool_size
            if v not in out:
                out.append(v)
        return sorted(out)

    def run(self, data: Data) -> list[dict]:
        from gapkit.adapt import FitConfig, LabelAdapter
        from gapkit.schemes import get_scheme
        from gapkit.train import Source, predict

        g: Grid = self.cfg.grid
        want = set(g.strategies)
        scheme = get_scheme(self.cfg.target_scheme)
        ns = self.n_values(len(data.pool))
        pool_gt = data.pool.to_image(np.arange(len(data.pool)), data.pool.points)
        syn_gt = data.synthetic.to_image(np.arange(len(data.synthetic)), data.synthetic.points)
        test_ids = data.test.ids
        for seed in g.seeds:
            perm = np.random.default_rng(seed).permutation(len(data.pool))
            needs_syn = want & {"label_adapt", "data_adapt", "mix", "finetune"}
            syn_model = self._train([Source(data.synthetic)], seed, f"synthetic_mapped_s{seed}") if needs_syn else None
            syn_on_pool = predict(syn_model, data.pool) if syn_model is not None else None
            syn_on_test = predict(syn_model, data.test) if syn_model is not None else None
            for n in ns:
                idx = np.sort(perm[:n])
                ids = [data.pool.ids[i] for i in idx]
                real = Source(data.pool.subset(idx))
                base = {"n_real": n, "seed": seed, "test_set": "real_test", "test_n": len(test_ids),
                        "test_ids_sha": _digest(test_ids), "real_ids": ids}
                adapter = None
                if needs_syn:
                    t0 = time.perf_counter()
                    adapter = LabelAdapter(self.cfg.target_scheme, self.cfg.target_scheme)
                    fit = adapter.fit(syn_on_pool[idx], pool_gt[idx], FitConfig(seed=seed, device="cpu"),
                                      ids=ids)
                    adapter_info = {"adapter_train_ids": ids, "adapter_head": fit.head,
                                    "adapter_fit_s": round(time.perf_counter() - t0, 2)}
                if "real_only" in want and not self._done("real_only", n, seed, None):
                    self._cell("real_only", None, base, data, scheme, [real], f"real_only_n{n}_s{seed}",
                               train=[{"set": "real_train", "n": n, "labels": "real"}])
                if "label_adapt" in want and not self._done("label_adapt", n, seed, None):
                    t0 = time.perf_counter()
                    pred = adapter.predict(syn_on_test)
                    row = dict(base, strategy="label_adapt", alpha=None, **_scores(pred, data.test_points, scheme),
                               time_s=round(time.perf_counter() - t0, 2), init=None, **adapter_info,
                               train=[{"set": "synthetic", "n": len(data.synthetic), "labels": "mapped"}],
                               predictions="synthetic-only model, adapted by the cell's LabelAdapter")
                    self._save(row)
                adapted = None
                if want & {"data_adapt", "mix", "finetune"}:
                    adapted = Source(data.synthetic.with_points(adapter.predict(syn_gt)))
                da_key = f"data_adapt_n{n}_s{seed}"
                if "data_adapt" in want and not self._done("data_adapt", n, seed, None):
                    self._cell("data_adapt", None, base, data, scheme, [adapted], da_key,
                               train=[{"set": "synthetic", "n": len(data.synthetic), "labels": "adapted"}],
                               extra=adapter_info)
                if "finetune" in want and not self._done("finetune", n, seed, None):
                    # The data_adapt model (trained here if that strategy is not run, reloaded if it is).
                    init = self._train([adapted], seed, da_key).state_dict()
                    ft = self.cfg.train.finetune_steps or self.cfg.train.steps // 2
                    self._cell("finetune", None, base, data, scheme, [real], f"finetune_n{n}_s{seed}",
                               train=[{"set": "real_train", "n": n, "labels": "real"}],
                               extra=dict(adapter_info, init=f"{da_key} (pre-trained on adapted synthetic)"),
                               steps=ft, init=init, lr=self.cfg.train.lr / 2)
                if "mix" in want:
                    for a in g.alphas:
                        if self._done("mix", n, seed, a):
                            continue
                        mix = [Source(real.crops, 1 - a), Source(adapted.crops, a)]
                        self._cell("mix", a, base, data, scheme, mix, f"mix_a{a:g}_n{n}_s{seed}", extra=adapter_info,
                                   train=[{"set": "real_train", "n": n, "labels": "real", "share": 1 - a},
                                          {"set": "synthetic", "n": len(data.synthetic), "labels": "adapted",
                                           "share": a}])
        return collect(self.out)

    def _cell(self, strategy: str, alpha: float | None, base: dict, data: Data, scheme, sources: list, key: str,
              train: list[dict], extra: dict | None = None, **fit) -> None:
        """Train (or reload) one model, score it on the test set, save the row with its provenance."""
        from gapkit.train import predict

        t0 = time.perf_counter()
        model = self._train(sources, base["seed"], key, **fit)
        pred = predict(model, data.test)
        row = dict(base, strategy=strategy, alpha=alpha, **_scores(pred, data.test_points, scheme),
                   time_s=round(time.perf_counter() - t0, 2), train=train, **{"init": None, **(extra or {})})
        self._save(row)
        self.log(f"{strategy}{'' if alpha is None else f' a={alpha:g}'} n={row['n_real']} seed={row['seed']}: "
                 f"NME(inter_ocular) {row['nme_pct']:.2f}%")


def collect(out: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted((Path(out) / "cells").glob("*.json"))]
    return sorted(rows, key=lambda r: (r["strategy"], r["alpha"] or 0, r["n_real"], r["seed"]))
