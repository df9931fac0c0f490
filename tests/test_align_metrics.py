from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from gapkit.align import align, generalised_procrustes, procrustes, procrustes_torch
from gapkit.metrics import (
    auc,
    ced,
    failure_rate,
    format_nme,
    group_errors,
    nme,
    normaliser,
    point_errors,
    summary,
)
from gapkit.schemes import get_scheme

RNG = np.random.default_rng(0)
IB = get_scheme("ibug68")


def shape():
    from fixtures.make_fixtures import face68

    return face68() * 100 + 200


@pytest.fixture(autouse=True)
def _path(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))


def skimage_fit(src, dst):
    if hasattr(SimilarityTransform, "from_estimate"):
        return SimilarityTransform.from_estimate(src, dst)
    t = SimilarityTransform()
    assert t.estimate(src, dst)
    return t


def test_procrustes_matches_skimage_to_1e9():
    src = shape() + RNG.normal(0, 2, (68, 2))
    dst = shape() @ np.array([[0.8, -0.6], [0.6, 0.8]]) * 1.7 + [10, -40] + RNG.normal(0, 3, (68, 2))
    ours = procrustes(src, dst)
    ref = skimage_fit(src, dst)
    np.testing.assert_allclose(ours.matrix[0], ref.params, atol=1e-9)


def test_never_mirrors_a_face():
    src = shape()
    mirrored = src * [-1, 1]
    tf = procrustes(src, mirrored)
    assert np.linalg.det(tf.rotation[0]) > 0
    assert np.abs(tf.apply(src[None])[0] - mirrored).max() > 10  # a rotation cannot fit a mirror image


@pytest.mark.parametrize("angle,scale,shift", [(0.0, 1.0, (0, 0)), (0.7, 2.5, (30, -7)), (-2.9, 0.3, (-100, 5))])
def test_alignment_is_invariant_to_similarity(angle, scale, shift):
    src, dst = shape() + RNG.normal(0, 2, (68, 2)), shape()
    c, s = np.cos(angle), np.sin(angle)
    moved = scale * src @ np.array([[c, -s], [s, c]]).T + shift
    a = align(src, dst)[0]
    b = align(moved, dst)[0]
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_transform_inverts_and_weights_skip_nan():
    src = RNG.normal(0, 50, (5, 68, 2))
    dst = shape()
    tf = procrustes(src, dst)
    np.testing.assert_allclose(tf.inverse().apply(tf.apply(src)), src, atol=1e-9)
    holes = src.copy()
    holes[:, :10] = np.nan
    w = np.ones(68)
    w[:10] = 0
    np.testing.assert_allclose(procrustes(holes, dst).matrix, procrustes(src, dst, w).matrix, atol=1e-12)
    with pytest.raises(ValueError, match="degenerate"):
        procrustes(np.zeros((68, 2)), dst)


def test_torch_matches_numpy():
    import torch

    src, dst = RNG.normal(0, 50, (4, 68, 2)), RNG.normal(0, 50, (4, 68, 2))
    s, r, t = procrustes_torch(torch.tensor(src), torch.tensor(dst))
    tf = procrustes(src, dst)
    np.testing.assert_allclose(s.numpy(), tf.scale, atol=1e-9)
    np.testing.assert_allclose(r.numpy(), tf.rotation, atol=1e-9)
    np.testing.assert_allclose(t.numpy(), tf.translation, atol=1e-9)


def test_gpa_recovers_the_mean_shape():
    base = shape()
    shapes = []
    for _ in range(20):
        a = RNG.uniform(-1, 1)
        c, s = np.cos(a), np.sin(a)
        shapes.append(RNG.uniform(0.5, 2) * base @ np.array([[c, -s], [s, c]]).T + RNG.uniform(-50, 50, 2))
    mean, tf = generalised_procrustes(np.array(shapes))
    ref = align(base, mean)[0][0]
    np.testing.assert_allclose(ref, mean, atol=1e-6)
    np.testing.assert_allclose(np.sqrt((mean ** 2).sum(1).mean()), 1.0)


def test_nme_by_hand():
    gt = np.zeros((68, 2))
    gt[36], gt[45] = (0, 0), (100, 0)  # inter-ocular distance 100
    pred = gt.copy()
    pred[0] = (3, 4)  # error 5 on one point of 68
    assert nme(pred, gt, IB, "inter_ocular")[0] == pytest.approx(5 / 100 / 68)
    vis = np.ones(68, bool)
    vis[1:] = False  # only point 0 scored
    assert nme(pred, gt, IB, "inter_ocular", visible=vis)[0] == pytest.approx(0.05)
    gt[36:42], gt[42:48] = (0, 0), (70, 0)
    assert normaliser(gt, IB, "inter_pupil")[0] == pytest.approx(70)
    box = np.array([[0, 0, 25, 16]])
    assert normaliser(gt, IB, "bbox", bbox=box)[0] == pytest.approx(20)


def test_fr_auc_ced_by_hand():
    nmes = np.array([0.01, 0.02, 0.05, 0.09])
    assert failure_rate(nmes, 0.08) == 0.25
    x, y = ced(nmes, 0.08)
    assert y[0] == 0 and y[-1] == 0.75 and y[np.searchsorted(x, 0.0199)] == 0.25
    # CED steps at 0.01, 0.02, 0.05: area = 0.25*(0.08-0.01) + 0.25*(0.08-0.02) + 0.25*(0.08-0.05) = 0.04
    assert auc(nmes, 0.08) == pytest.approx(0.04 / 0.08, abs=2e-3)
    assert auc(np.zeros(3)) == pytest.approx(1.0, abs=2e-3)


def test_group_errors_and_summary_name_the_normaliser():
    gt = shape()[None].repeat(3, 0)
    pred = gt.copy()
    pred[:, :17] += 5  # only the jaw is off
    errs = point_errors(pred, gt, IB)
    g = group_errors(errs, IB)
    assert g["jaw"] > 0 and g["left_eye"] == 0
    s = summary(pred, gt, IB)
    assert s["normaliser"] == "inter_ocular" and s["fr@0.08"] == 0.0
    assert format_nme(3.4123, "inter_ocular") == "NME(inter_ocular) 3.41%"
    with pytest.raises(ValueError, match="missing"):
        bad = pred.copy()
        bad[0, 3] = np.nan
        nme(bad, gt, IB)
