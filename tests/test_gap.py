"""Gap reports: pose from landmarks, pose-matched label gap, visual gap, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gapkit.cli.main import app
from gapkit.faceset import load
from gapkit.formats.manifest import write_manifest
from gapkit.gap.label import label_gap
from gapkit.gap.visual import domain_auc, face_crops, handcrafted_features
from gapkit.pose import angles_from_rotation, estimate_pose, records_pose
from gapkit.schemes import find_mapper, get_scheme
from gapkit.sim import SimConfig, generate

IBUG = get_scheme("ibug68")


@pytest.fixture(scope="module")
def sim_sets(tmp_path_factory) -> dict[str, list]:
    """Simulated real faces, and synthetic faces with and without the label gap (64 px, small)."""
    root = tmp_path_factory.mktemp("gapsim")
    out = {}
    for key, cfg in {"real": SimConfig(domain="real", n=240, size=64, seed=3),
                     "synthetic": SimConfig(domain="synthetic", n=240, size=64, seed=4),
                     "synthetic_no_label_gap": SimConfig(domain="synthetic", n=240, size=64, seed=4, label_gap=0.0)}.items():
        manifest = generate(root / key, cfg, workers=2)
        out[key] = load(manifest)[0].records
    return out


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (35, -10, 5), (-50, 20, -15), (10, 25, 30)])
def test_angles_round_trip_the_simulator_convention(yaw, pitch, roll):
    from gapkit.face3d import rotation

    # The simulator's head frame has z towards the camera; solvePnP's is right-handed.
    r = rotation(yaw, pitch, roll) @ np.diag([1.0, 1.0, -1.0])
    assert angles_from_rotation(r) == pytest.approx((yaw, pitch, roll), abs=1e-6)


def test_pose_from_landmarks_follows_the_true_pose(sim_sets):
    recs = sim_sets["real"]
    est = records_pose(recs)
    true = np.array([[r.attributes[k] for k in ("yaw", "pitch", "roll")] for r in recs])
    err = np.abs(est - true)
    assert not np.isnan(est).any()
    assert np.median(err[:, 0]) < 5 and np.median(err[:, 1]) < 6 and np.median(err[:, 2]) < 2
    assert np.corrcoef(est[:, 0], true[:, 0])[0, 1] > 0.95


def test_pose_of_a_mirrored_face_is_mirrored(sim_sets):
    r = sim_sets["real"][0]
    mirrored = IBUG.flip_points(r.points, r.width)
    a, b = estimate_pose(np.stack([r.points, mirrored]), "ibug68", r.width, r.height)
    assert b[0] == pytest.approx(-a[0], abs=1.0) and b[2] == pytest.approx(-a[2], abs=1.0)


def test_pose_needs_a_scheme_that_reaches_ibug68():
    from gapkit.errors import GapkitError

    with pytest.raises(GapkitError, match="dlib5 has no mapping"):
        estimate_pose(np.zeros((1, 5, 2)), "dlib5", 100, 100)


def _shapes(recs) -> np.ndarray:
    return np.stack([r.points for r in recs])


def test_label_gap_is_about_zero_without_a_label_gap_and_large_with_one(sim_sets):
    real = sim_sets["real"]
    to68 = find_mapper("facesynthetics70", "ibug68")
    pose_b = records_pose(real)
    gaps = {}
    for key in ("synthetic", "synthetic_no_label_gap"):
        syn = sim_sets[key]
        gaps[key] = label_gap(to68(_shapes(syn)), _shapes(real), IBUG, records_pose(syn), pose_b)
    with_gap, without = gaps["synthetic"], gaps["synthetic_no_label_gap"]
    assert without.mean_pct < 0.8 and without.mean_pct < 1.5 * without.noise_floor  # at the noise floor
    assert with_gap.mean_pct > 2.5 * without.mean_pct and with_gap.mean_pct > 3 * with_gap.noise_floor
    assert with_gap.ci95[0] > without.ci95[1]
    for g in (with_gap, without):  # the reported estimate is the bias-corrected one, inside its own CI
        assert g.ci95[0] <= g.estimate_pct <= g.ci95[1] and g.estimate_pct <= g.mean_pct
    assert max(with_gap.groups, key=with_gap.groups.get) == "jaw"
    # Pose matching is what takes the pose mix out: the unmatched difference is far larger.
    assert without.raw_mean_pct > 2 * without.mean_pct
    assert with_gap.matched_share > 0.9


def _true_offsets(syn, reference) -> np.ndarray:
    """(N, 68, 2) what the simulator put in: each synthetic face's mapped labels against the human
    labels of the same face, in the report's frame (% of the normaliser)."""
    from gapkit.gap.label import aligned_shapes, alignment_weights

    w = alignment_weights(IBUG)
    mapped = find_mapper("facesynthetics70", "ibug68")(_shapes(syn))
    human = np.stack([np.asarray(r.attributes["human68"]) for r in syn])
    return 100 * (aligned_shapes(mapped, reference, w) - aligned_shapes(human, reference, w))


def _length(d: np.ndarray) -> float:
    return float(np.linalg.norm(np.nanmean(d, 0), axis=1).mean())


def test_each_pose_weighting_recovers_its_own_true_value(sim_sets):
    from gapkit.gap.label import pose_matches

    syn, real = sim_sets["synthetic"], sim_sets["real"]
    pa, pb = records_pose(syn), records_pose(real)
    g = label_gap(find_mapper("facesynthetics70", "ibug68")(_shapes(syn)), _shapes(real), IBUG, pa, pb)
    truth = _true_offsets(syn, g.reference)
    b_rows, a_rows, w = pose_matches(pa, pb)          # B's mix: the truth at each real face's pose
    true_b = _length(np.einsum("nj,njkd->nkd", w, truth[a_rows]))
    true_a = _length(truth[pose_matches(pb, pa)[0]])  # A's mix: the synthetic faces that real covers
    lo_b, hi_b = g.by_mix["B"]["ci95_pct"]
    lo_a, hi_a = g.by_mix["A"]["ci95_pct"]
    assert lo_b <= true_b <= hi_b and lo_a <= true_a <= hi_a, (true_b, (lo_b, hi_b), true_a, (lo_a, hi_a))
    assert true_a > true_b + 0.3 and lo_a > hi_b  # the weighting matters here, and is told apart
    assert g.estimate_pct == g.by_mix["B"]["estimate_pct"] and g.weighting == "B"
    bins = {(r["yaw_from"], r["yaw_to"]): r for r in g.pose_bins}
    frontal, profile = bins[(-10.0, 10.0)]["B"], bins[(-90.0, -30.0)]["B"]
    assert profile["ci95_pct"][0] > frontal["ci95_pct"][1]  # the simulated gap grows with yaw


def test_shape_modes_carry_no_yaw_once_pose_is_removed(sim_sets):
    from sklearn.decomposition import PCA

    from gapkit.gap.label import aligned_shapes

    syn, real = sim_sets["synthetic"], sim_sets["real"]
    pa, pb = records_pose(syn), records_pose(real)
    a = find_mapper("facesynthetics70", "ibug68")(_shapes(syn))
    g = label_gap(a, _shapes(real), IBUG, pa, pb)
    assert g.modes and all(m["pose_removed"] and abs(m["yaw_r"]) < 0.2 for m in g.modes)
    # without removing it, the leading mode of the same shapes is yaw
    flat = np.concatenate([aligned_shapes(a, g.reference), aligned_shapes(_shapes(real), g.reference)])
    z = PCA(3).fit_transform(np.nan_to_num(flat.reshape(len(flat), -1)))
    yaw = np.r_[pa[:, 0], pb[:, 0]]
    assert max(abs(np.corrcoef(z[:, j], yaw)[0, 1]) for j in range(3)) > 0.8


def test_the_noise_measure_ranks_noisy_photos_above_clean_renders(sim_sets, tmp_path):
    from sklearn.metrics import roc_auc_score

    from gapkit.gap.visual import image_stats

    def noise(recs) -> np.ndarray:
        return np.array([image_stats(c)[3] for c in face_crops(recs)[0]])

    real = noise(sim_sets["real"][:80])
    looks_real = load(generate(tmp_path / "vg0", SimConfig(domain="synthetic", n=80, size=64, seed=4,
                                                             visual_gap=0.0), workers=1))[0].records

    def auc(syn: np.ndarray) -> float:  # P(a real face reads noisier than a synthetic one)
        return roc_auc_score(np.r_[np.zeros(len(syn)), np.ones(len(real))], np.r_[syn, real])

    assert auc(noise(sim_sets["synthetic"][:80])) > 0.9     # --visual-gap 1: only the real side has noise
    assert 0.35 < auc(noise(looks_real)) < 0.65             # --visual-gap 0: both do


def test_a_known_offset_is_recovered_where_it_was_put(sim_sets):
    real = sim_sets["real"]
    b = _shapes(real)
    a = b.copy()
    iod = np.linalg.norm(b[:, 45] - b[:, 36], axis=1)
    a[:, 8, 1] += 0.10 * iod  # the chin 10% of the inter-ocular distance lower
    pose = records_pose(real)
    g = label_gap(a, b, IBUG, pose, pose)
    assert g.offsets[8, 1] == pytest.approx(10.0, abs=1.5)
    assert abs(g.offsets[8, 0]) < 2.5  # faces are rolled, so "down" in the image is not quite down in the frame
    assert np.median(np.delete(g.magnitude, 8)) < 1.0
    assert g.to_dict()["largest_points"][0] == 8


def test_visual_gap_separates_domains_but_not_halves_of_one(sim_sets):
    ca, _, _ = face_crops(sim_sets["synthetic"])
    cb, _, _ = face_crops(sim_sets["real"])
    fa, fb = handcrafted_features(ca), handcrafted_features(cb)
    assert domain_auc(fa, fb) > 0.9
    assert domain_auc(fb[::2], fb[1::2]) < 0.7


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_gap_report_cli_writes_numbers_and_figures(sim_sets, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(sim_sets["synthetic"][:120], a)
    write_manifest(sim_sets["real"][:120], b)
    out = tmp_path / "report"
    res = _cli("gap", "report", "--a", str(a), "--b", str(b), "-o", str(out), "--name-a", "syn", "--name-b", "real")
    assert res.exit_code == 0, res.output
    for name in ("report.md", "gap.json", "label_gap.png", "label_gap_points.png", "label_modes.png",
                 "label_gap_pose_bins.png", "pose_gap.png", "visual_gap.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "gap.json").read_text())  # strict JSON: no NaN
    assert data["a"]["n"] == 120 and data["b"]["scheme"] == "ibug68"
    lg = data["label_gap"]["mapped"]
    assert len(lg["per_point_pct"]) == 68
    assert lg["groups_pct"]["jaw"] > 2 * lg["groups_pct"]["right_eye"]  # the simulated gap is on jaw and brows
    assert data["visual_gap"]["domain_auc"] > 0.9
    assert set(data["pose_gap"]["angles"]) == {"yaw", "pitch", "roll"}
    md = (out / "report.md").read_text()
    assert "## Label gap" in md and "weighted by real's pose mix" in md and "under syn's pose mix" in md
    assert "| -10° to 10° |" in md  # the per-yaw-bin table
    top = lg["largest_points"][0]
    assert lg["largest_point_names"][0] == IBUG.points[top] and f"{IBUG.points[top]} (#{top})" in md
    assert "real's" in res.output and "syn's" in res.output  # the table names both weightings
    # No silent overwrite.
    again = _cli("gap", "report", "--a", str(a), "--b", str(b), "-o", str(out))
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_gap_report_names_missing_images_and_keeps_going(sim_sets, tmp_path):
    recs = [r.model_copy() for r in sim_sets["real"][:60]]
    recs[3] = recs[3].model_copy(update={"image": str(tmp_path / "gone.jpg")})
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    recs[7] = recs[7].model_copy(update={"image": str(broken)})
    b = tmp_path / "b.jsonl"
    write_manifest(recs, b)
    a = tmp_path / "a.jsonl"
    write_manifest(sim_sets["synthetic"][:60], a)
    res = _cli("gap", "report", "--a", str(a), "--b", str(b), "-o", str(tmp_path / "r"))
    assert res.exit_code == 1
    assert "gone.jpg" in res.output and "missing" in res.output
    assert "broken.jpg" in res.output and "cannot be decoded" in res.output
    data = json.loads((tmp_path / "r" / "gap.json").read_text())
    assert data["b"]["n"] == 60 and data["visual_gap"]["n_b"] == 58  # label gap keeps them, visual leaves 2 out
    assert len(data["problems"]) == 2


def test_adapter_closes_the_label_gap_in_the_report(sim_sets, tmp_path):
    from gapkit.adapt import FitConfig, LabelAdapter

    syn = sim_sets["synthetic"]
    src = _shapes(syn[:160])
    tgt = np.stack([np.asarray(r.attributes["human68"]) for r in syn[:160]])
    adapter = LabelAdapter("facesynthetics70", "ibug68")
    adapter.fit(src, tgt, FitConfig(head="linear", device="cpu"))
    adapter.save(tmp_path / "syn2human.gka")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(syn[160:], a)
    write_manifest(sim_sets["real"], b)
    res = _cli("gap", "report", "--a", str(a), "--b", str(b), "-o", str(tmp_path / "r"), "--adapter",
               str(tmp_path / "syn2human.gka"), "--no-visual")
    assert res.exit_code == 0, res.output
    lg = json.loads((tmp_path / "r" / "gap.json").read_text())["label_gap"]
    assert set(lg) == {"before", "after adapter"}
    assert lg["after adapter"]["mean_pct"] < 0.6 * lg["before"]["mean_pct"]
    assert lg["after adapter"]["groups_pct"]["jaw"] < 0.5 * lg["before"]["groups_pct"]["jaw"]


def test_a_new_measure_is_one_class_and_its_registration(sim_sets, tmp_path):
    """A registered measure adds its numbers to gap.json, its figure, its report section and its
    table rows, after the built-in ones, and leaves theirs as they were."""
    from gapkit.gap import (
        MEASURES,
        GapMeasure,
        GapOptions,
        Measured,
        gap_report,
        register_measure,
        table_rows,
    )
    from gapkit.gap.figures import plt, write_png

    class Count(GapMeasure):
        key = "count_gap"

        def measure(self, ctx):
            numbers = {"difference": len(ctx.a) - len(ctx.b)}

            def draw(out):
                fig, ax = plt().subplots()
                ax.bar([0, 1], [len(ctx.a), len(ctx.b)])
                return [write_png(out / "count_gap.png", fig)]

            return Measured(numbers, draw)

        def section(self, s):
            return ["## Count gap", "", f"{s['count_gap']['difference']} more faces in {s['a']['name']}.", ""]

        def rows(self, s):
            return [("count", "faces of A less faces of B", str(s["count_gap"]["difference"]))]

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(sim_sets["synthetic"][:70], a)
    write_manifest(sim_sets["real"][:60], b)
    opts = GapOptions(visual=False)
    plain = gap_report(a, b, tmp_path / "plain", options=opts)
    register_measure(Count())
    try:
        res = gap_report(a, b, tmp_path / "r", options=opts)
        rows = table_rows(res.summary)
    finally:
        MEASURES.pop("count_gap")
    data = json.loads((tmp_path / "r" / "gap.json").read_text())
    assert list(data) == ["a", "b", "adapter", "label_gap", "pose_gap", "count_gap", "problems"]
    assert data["count_gap"] == {"difference": 10}
    assert data["label_gap"] == json.loads((tmp_path / "plain" / "gap.json").read_text())["label_gap"]
    assert res.files[-3] == tmp_path / "r" / "count_gap.png" and res.files[-3].stat().st_size > 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert md == (tmp_path / "plain" / "report.md").read_text() + "## Count gap\n\n10 more faces in A.\n\n"
    assert rows[-1] == ("count", "faces of A less faces of B", "10") and rows[:-1] == table_rows(plain.summary)


@pytest.mark.realdata
def test_facesynthetics_against_300w_differs_most_on_the_jaw(shared: Path, tmp_path):
    res = _cli("gap", "report", "--a", str(shared / "facesynthetics"), "--b", str(shared / "300w"), "-o",
               str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "gap.json").read_text())
    lg = data["label_gap"]["mapped"]
    assert max(lg["groups_pct"], key=lg["groups_pct"].get) == "jaw"
    assert all(p in range(17) for p in lg["largest_points"][:5])
    assert data["a"]["n"] == 100 and data["b"]["n"] == 450
    assert not math.isnan(data["visual_gap"]["domain_auc"])


def test_backbone_features_come_from_a_saved_detector(sim_sets, tmp_path):
    import torch

    from gapkit.gap.visual import backbone_features
    from gapkit.train.detector import Detector, ModelMeta, TrainSet
    from gapkit.train.model import LandmarkNet

    torch.manual_seed(0)
    net = LandmarkNet(68, width=8)
    meta = ModelMeta(scheme="ibug68", num_points=68, backbone="compact", width=8, size=64, margin=1.3,
                     train_set=TrainSet(n=0, digest=""))
    Detector(net, meta).save(tmp_path / "m.gkm")
    crops, _, _ = face_crops(sim_sets["real"][:20])
    feats = backbone_features(crops, tmp_path / "m.gkm")
    assert feats.shape == (20, 32) and np.isfinite(feats).all()
    with torch.no_grad():
        from gapkit.augment import to_tensor_batch
        want = net.eval().features(to_tensor_batch(crops[:3])).numpy()
    assert np.allclose(feats[:3], want, atol=1e-5)
    (tmp_path / "bad.gkm").write_bytes(b"nonsense")
    from gapkit.errors import GapkitError

    with pytest.raises(GapkitError, match="bad.gkm: not a readable gapkit model file"):
        backbone_features(crops, tmp_path / "bad.gkm")
