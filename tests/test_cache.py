"""The crop cache (memory-mapped, keyed by content, shared by processes) and the DataLoader path
of the trainer (batches from worker processes, the same for any number of workers, resumable)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from gapkit.augment import Augment
from gapkit.errors import GapkitError
from gapkit.faceset import load
from gapkit.sim import SimConfig, generate
from gapkit.train import FaceCrops, Source, TrainConfig, train
from gapkit.train.data import StepBatches, _draws


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("cache")
    return load(generate(root / "real", SimConfig(domain="real", n=40, size=64, seed=2), workers=1))[0].records


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "meta.json").is_file())


def test_cached_crops_are_the_decoded_crops_built_once(faces, tmp_path):
    plain = FaceCrops(faces, 32)
    cached = FaceCrops(faces, 32, cache=tmp_path)
    assert isinstance(cached.images, np.memmap) and not cached.images.flags.writeable
    assert np.array_equal(np.asarray(cached.images), plain.images) and np.allclose(cached.points, plain.points)
    [entry] = _entries(tmp_path)
    stamp = (entry / "images.npy").stat().st_mtime_ns
    again = FaceCrops(faces, 32, cache=tmp_path)
    assert (entry / "images.npy").stat().st_mtime_ns == stamp and again.cache_file == cached.cache_file
    FaceCrops(faces, 48, cache=tmp_path)  # other settings: another entry
    assert len(_entries(tmp_path)) == 2


def test_the_key_follows_the_image_bytes_and_the_boxes(faces, tmp_path):
    root = tmp_path / "c"
    copies = []
    for r in faces[:6]:
        dst = tmp_path / Path(r.image).name
        shutil.copy(r.image, dst)
        copies.append(r.model_copy(update={"image": str(dst)}))
    FaceCrops(copies, 32, cache=root)
    Path(copies[0].image).write_bytes(Path(faces[7].image).read_bytes())  # same name, other pixels
    changed = FaceCrops(copies, 32, cache=root)
    assert len(_entries(root)) == 2 and not np.array_equal(changed.images[0], FaceCrops(faces[:1], 32).images[0])
    moved = [copies[0].model_copy(update={"bbox": (1.0, 2.0, 30.0, 30.0)})] + copies[1:]
    FaceCrops(moved, 32, cache=root)
    assert len(_entries(root)) == 3


def test_a_cached_set_travels_as_its_file_name(faces, tmp_path):
    cached = FaceCrops(faces, 32, cache=tmp_path)
    blob = pickle.dumps(cached)
    in_memory = len(pickle.dumps(FaceCrops(faces, 32)))
    assert len(blob) < in_memory - 0.9 * cached.images.nbytes  # everything but its pixels
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap) and np.array_equal(back.images, cached.images)


def test_a_missing_image_stops_the_build_and_leaves_no_entry(faces, tmp_path):
    bad = list(faces[:5]) + [faces[5].model_copy(update={"image": str(tmp_path / "gone.jpg")})]
    with pytest.raises(GapkitError, match="gone.jpg"):
        FaceCrops(bad, 32, cache=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def _build(args) -> str:
    faces, root = args
    return str(FaceCrops(faces, 32, cache=root).cache_file)


def test_processes_building_one_entry_at_once_share_it(faces, tmp_path):
    with mp.get_context("fork").Pool(2) as pool:
        made = pool.map(_build, [(faces, tmp_path)] * 2)
    assert made[0] == made[1] and len(_entries(tmp_path)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_step_batches_are_a_function_of_the_step_alone(faces):
    crops = FaceCrops(faces, 32)
    ds = StepBatches([Source(crops, 0.5), Source(crops.subset(range(10)), 0.5)], 8, 20, Augment(), seed=3)
    x5, p5 = ds[5]
    ds[2], ds[11]
    x5b, p5b = ds[5]
    assert x5.shape == (8, 3, 32, 32) and np.array_equal(x5.numpy(), x5b.numpy()) and np.array_equal(p5, p5b)
    # without replacement within an epoch: 40 faces, 4 a step, so 10 steps see each face once
    seen = np.concatenate([_draws(40, 4, s, [3, 0, 1, 0]) for s in range(10)])
    assert sorted(seen.tolist()) == list(range(40))


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loader_workers_give_the_same_model_for_any_count_and_resume(faces, tmp_path):
    import torch

    crops = FaceCrops(faces, 32, cache=tmp_path / "c")
    cfg = TrainConfig(steps=12, batch_size=8, size=32, width=4, loader_workers=1, flip_test=False)
    one = _weights(train([Source(crops)], cfg))
    two = _weights(train([Source(crops)], cfg.model_copy(update={"loader_workers": 2})))
    assert all(torch.equal(one[k], two[k]) for k in one)

    def stop(step, n, loss):
        if step == 7:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.ckpt"
    c2 = cfg.model_copy(update={"loader_workers": 2, "checkpoint_every": 3})
    with pytest.raises(KeyboardInterrupt):
        train([Source(crops)], c2, checkpoint=ckpt, progress=stop)
    resumed = _weights(train([Source(crops)], c2, checkpoint=ckpt))
    assert all(torch.allclose(one[k].float(), resumed[k].float(), atol=1e-6) for k in one)
