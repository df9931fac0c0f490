"""Schemes and mappings are data: check every one of them the same way."""

from __future__ import annotations

import numpy as np
import pytest

from gapkit.errors import NoMappingError, UnknownSchemeError
from gapkit.schemes import find_mapper, get_scheme, mappings, scheme_names

ALL_SCHEMES = scheme_names()
ALL_MAPPINGS = sorted(mappings())


def test_the_issue_schemes_exist():
    for name in ["ibug68", "facesynthetics70", "wflw98", "cofw29", "aflw19", "mediapipe468", "dlib5"]:
        assert name in ALL_SCHEMES


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_flip_is_an_involution(name):
    s = get_scheme(name)
    flip = np.array(s.flip)
    assert (flip[flip] == np.arange(s.num_points)).all()


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_flip_swaps_right_and_left_names(name):
    s = get_scheme(name)
    for i, j in enumerate(s.flip):
        a, b = s.points[i], s.points[j]
        if "right" in a or "left" in a:
            assert a.replace("right", "@").replace("left", "right").replace("@", "left") == b, (a, b)
        elif name != "mediapipe468" and not a.startswith(("p", "contour")):
            assert i == j, f"{a} has no side but flips to {b}"


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_flip_maps_groups_and_normalisers_onto_their_mirror(name):
    s = get_scheme(name)
    flip = np.array(s.flip)
    for g, idx in s.groups.items():
        mirrored = set(flip[idx].tolist())
        twin = g.replace("right", "@").replace("left", "right").replace("@", "left")
        assert mirrored == set(s.groups[twin]), g
    for n in s.normalisers.values():
        if not n.bbox:
            assert set(flip[n.a].tolist()) == set(n.b)


@pytest.mark.parametrize("name", ALL_MAPPINGS)
def test_mapping_commutes_with_flip(name):
    """map(flip(p)) == flip(map(p)): catches a left/right slip anywhere in a mapping table."""
    m = mappings()[name]
    src, tgt = get_scheme(m.source), get_scheme(m.target)
    mapper = find_mapper(m.source, m.target, via=name)
    p = np.random.default_rng(0).uniform(0, 100, (src.num_points, 2))
    a = mapper(src.flip_points(p, 100.0))
    b = tgt.flip_points(mapper(p), 100.0)
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_flip_twice_restores_the_shape():
    """Indices come back exactly; coordinates to float64 rounding (W - x is not always representable)."""
    s = get_scheme("ibug68")
    p = np.random.default_rng(1).uniform(0, 640, (68, 2))
    p[:, 1] = np.arange(68)  # y tags each point: the permutation must come back exactly
    back = s.flip_points(s.flip_points(p, 640), 640)
    assert np.array_equal(back[:, 1], p[:, 1])
    np.testing.assert_allclose(back, p, rtol=0, atol=1e-9)


def test_chain_is_composed_and_nan_propagates():
    m = find_mapper("facesynthetics70", "ibug51")
    assert m.status == "composed" and "->" in m.name
    p = np.arange(140, dtype=float).reshape(70, 2)
    out = m(p)
    assert np.array_equal(out, p[17:68])
    p[20] = np.nan
    assert np.isnan(m(p)[3]).all() and not np.isnan(m(p)[4]).any()


def test_interpolated_wflw_mapping_mixes_points():
    m = find_mapper("wflw98", "ibug68", via="wflw98_to_ibug68_interp")
    p = np.zeros((98, 2))
    p[61], p[62] = (3.0, 6.0), (6.0, 12.0)
    p[34], p[41] = (10.0, 20.0), (99.0, 40.0)
    out = m(p)
    np.testing.assert_allclose(out[37], (4.0, 8.0))  # 2/3 * p61 + 1/3 * p62
    np.testing.assert_allclose(out[18], (10.0, 30.0))  # x of the upper brow, mean y
    assert find_mapper("wflw98", "ibug68").name == "wflw98_to_ibug68"  # plain index map by default


def test_visibility_follows_contributors():
    m = find_mapper("wflw98", "ibug68", via="wflw98_to_ibug68_interp")
    vis = np.ones(98, bool)
    vis[62] = False
    out = m.visibility(vis)
    assert not out[37] and not out[38] and out[36]


def test_unknown_and_missing_mappings_are_clear():
    with pytest.raises(UnknownSchemeError, match="unknown scheme 'nope'"):
        get_scheme("nope")
    with pytest.raises(NoMappingError, match="adapter"):
        find_mapper("ibug68", "wflw98")
    with pytest.raises(NoMappingError, match="goes wflw98"):
        find_mapper("ibug68", "dlib5", via="wflw98_to_ibug68")
