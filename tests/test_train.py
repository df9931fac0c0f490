"""The trainer: flip-aware augmentation, learning (overfit 8 faces), checkpoint resume, and a
resnet18 from training to ONNX."""

from __future__ import annotations

import numpy as np
import pytest

from gapkit.augment import augment, to_tensor_batch
from gapkit.faceset import load
from gapkit.metrics import nme
from gapkit.schemes import get_scheme
from gapkit.sim import SimConfig, generate
from gapkit.train import Augment, FaceCrops, Source, TrainConfig, predict, train

IBUG = get_scheme("ibug68")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "real"
    generate(out, SimConfig(domain="real", n=16, size=96, seed=7), workers=1)
    return load(out / "manifest.jsonl")[0].records


def only_flip() -> Augment:
    a = Augment.none()
    a.flip = 1.0
    return a


def test_flip_mirrors_points_and_swaps_left_and_right(faces):
    crops = FaceCrops(faces[:1], size=64)
    img, pts = crops.images[0], crops.points[0]
    flip = np.array(IBUG.flip)
    img2, pts2 = augment(img, pts, only_flip(), flip, np.random.default_rng(0))
    np.testing.assert_array_equal(img2, img[:, ::-1])
    # Point i of the flipped face is the mirror of its partner flip[i].
    np.testing.assert_allclose(pts2[:, 0], 63 - pts[flip, 0], atol=1e-9)
    np.testing.assert_allclose(pts2[:, 1], pts[flip, 1], atol=1e-9)
    assert pts2[36, 0] < pts2[45, 0]  # the subject's right eye corner stays on the image left
    img3, pts3 = augment(img2, pts2, only_flip(), flip, np.random.default_rng(0))
    np.testing.assert_array_equal(img3, img)
    np.testing.assert_allclose(pts3, pts, atol=1e-9)


def test_geometric_augmentation_keeps_every_point(faces):
    crops = FaceCrops(faces[:4], size=64)
    aug = Augment(scale=0.5, rotate=45, shift=0.4, flip=0.5)
    rng = np.random.default_rng(1)
    outside = 0
    for i in range(4):
        for _ in range(10):
            _, p = augment(crops.images[i], crops.points[i], aug, np.array(IBUG.flip), rng)
            assert p.shape == (68, 2) and np.isfinite(p).all()
            outside += int(((p < 0) | (p > 63)).any())
    assert outside > 0  # some left the crop, and were kept


def test_crops_map_back_to_image_pixels(faces):
    crops = FaceCrops(faces[:3], size=64)
    back = crops.to_image(np.arange(3), crops.points)
    np.testing.assert_allclose(back, np.stack([r.points for r in faces[:3]]), atol=1e-9)


def test_a_tiny_run_overfits_eight_faces(faces):
    crops = FaceCrops(faces[:8], size=64)
    gt = np.stack([r.points for r in faces[:8]])
    cfg = TrainConfig(steps=160, batch_size=8, width=8, lr=5e-3, augment=Augment.none(), warmup=5)
    before = 100 * nme(predict(train([Source(crops)], TrainConfig(steps=1, batch_size=8, width=8)), crops), gt,
                       IBUG).mean()
    after = 100 * nme(predict(train([Source(crops)], cfg), crops), gt, IBUG).mean()
    assert after < 6.0 and after < before / 4, (before, after)


def test_resume_from_a_checkpoint_gives_the_same_model(faces, tmp_path):
    import torch

    crops = FaceCrops(faces[:8], size=48)
    cfg = TrainConfig(steps=10, batch_size=4, width=4, checkpoint_every=5, seed=3)
    whole = train([Source(crops)], cfg)

    def stop_after_six(step, total, loss):
        if step == 6:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train([Source(crops)], cfg, checkpoint=ckpt, progress=stop_after_six)
    assert torch.load(ckpt, weights_only=False)["step"] == 5
    resumed = train([Source(crops)], cfg, checkpoint=ckpt)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)


def test_unreadable_image_is_named(faces, tmp_path):
    bad = faces[0].model_copy(update={"image": str(tmp_path / "gone.jpg")})
    with pytest.raises(Exception, match="gone.jpg: missing or unreadable image"):
        FaceCrops([bad], size=32)


def test_flip_test_averages_a_prediction_with_its_mirror(faces):
    """predict(flip=True) is the mean of the plain prediction and the mirrored crop's, mapped
    back with the flip permutation; a flip-symmetric model's two predictions agree."""
    import torch

    crops = FaceCrops(faces[:4], size=48)
    model = train([Source(crops)], TrainConfig(steps=2, batch_size=4, width=4))
    plain, both = predict(model, crops), predict(model, crops, flip=True)
    x = to_tensor_batch(crops.images)
    with torch.inference_mode():
        q = model(x.flip(-1)).numpy()[:, IBUG.flip]
    q[..., 0] = 47 - q[..., 0]
    np.testing.assert_allclose(both, (plain + crops.to_image(np.arange(4), q)) / 2, atol=1e-4)
    assert not np.allclose(both, plain)


def test_heatmap_term_pulls_heatmaps_towards_the_label():
    """The DSNT term is ~0 for a heatmap that is the target Gaussian and large for one that
    puts its mass elsewhere with the same mean."""
    import torch

    from gapkit.train.trainer import _heatmap_loss

    xs = ys = torch.arange(16, dtype=torch.float32) * 4 + 1.5
    y = torch.tensor([[[30.0, 30.0]]])
    mask = torch.ones(1, 1)
    g = torch.exp(-0.5 * ((xs[None, :] - 30) / 4) ** 2) * torch.exp(-0.5 * ((ys[:, None] - 30) / 4) ** 2)
    good = (g / g.sum())[None, None]
    split = torch.zeros(1, 1, 16, 16)
    split[0, 0, 7, 0] = split[0, 0, 7, 15] = 0.5  # two far peaks, mean near the label row
    assert _heatmap_loss(good, (xs, ys), y, mask) < 1e-6
    assert _heatmap_loss(split, (xs, ys), y, mask) > 0.5


def test_a_resnet_trains_saves_loads_predicts_and_exports(faces, tmp_path):
    """The tiny resnet18 path a GPU user takes first, end to end on CPU: nothing skips it."""
    from gapkit.train.detector import Detector, crop_points, trained_detector
    from gapkit.train.onnx import OnnxDetector, export_onnx

    crops = FaceCrops(faces[:4], size=32)
    cfg = TrainConfig(steps=3, batch_size=4, size=32, backbone="resnet18")
    model = trained_detector(train([Source(crops)], cfg), cfg, [Source(crops)])
    before = crop_points(model, crops.images)
    back = Detector.load(model.save(tmp_path / "r.gkm"), scheme="ibug68")
    assert back.meta.backbone == "resnet18" and before.shape == (4, 68, 2) and np.isfinite(before).all()
    assert np.array_equal(crop_points(back, crops.images), before)
    onnx_model = OnnxDetector(export_onnx(back, tmp_path / "r.onnx"), scheme="ibug68")
    assert np.abs(crop_points(onnx_model, crops.images) - before).max() < 1e-3  # crop pixels


def test_an_unknown_backbone_is_a_config_error():
    from gapkit.errors import ConfigError
    from gapkit.train.model import LandmarkNet

    with pytest.raises(ConfigError, match="unknown backbone 'vgg'"):
        LandmarkNet(68, backbone="vgg")
    with pytest.raises(ConfigError, match="backbone"):
        TrainConfig(backbone="vgg")


def test_a_time_budget_ends_the_run(faces):
    import time

    crops = FaceCrops(faces[:4], size=32)
    steps: list[int] = []
    t = time.perf_counter()
    train([Source(crops)], TrainConfig(steps=100_000, batch_size=4, width=4, budget_s=1.0, warmup=1),
          progress=lambda s, n, loss: steps.append(s))
    took = time.perf_counter() - t
    assert 1.0 <= took < 10 and 1 < len(steps) < 100_000
