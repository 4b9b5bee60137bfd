"""Seed pairing of make-patches by camera geometry (deepdesc.train.multiview.pairing) on synthetic cameras."""

from __future__ import annotations

import numpy as np
import pytest

from deepdesc.datasets.scenes import Camera, Scene
from deepdesc.train.multiview import MultiviewConfig
from deepdesc.train.multiview.geometry import Views
from deepdesc.train.multiview.pairing import axis_depths, covisibility_pairs, frustum_overlap, pair_views, seed_pairs

WIDTH, HEIGHT, FOCAL = 640, 480, 600.0
K = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1.0]])


def _look(center: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """World-to-camera rotation of a camera looking along ``direction`` (y down, world y up)."""
    z = direction / np.linalg.norm(direction)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def _views(centers: list[np.ndarray], directions: list[np.ndarray]) -> Views:
    cams = [Camera.from_center(K, _look(c, d), c, WIDTH, HEIGHT) for c, d in zip(centers, directions)]
    names = [f"{k:04d}.jpg" for k in range(len(cams))]
    scene = Scene("synthetic", ".", names, names, cams)
    return Views(scene, [np.zeros((0, 5), np.float32)] * len(cams))


def _ring(n: int, radius: float, inward: bool = True, seed: int = 0) -> tuple[Views, np.ndarray]:
    """``n`` views on a ring around the origin (a little height jitter), listed in shuffled order; returns the
    views and each listed view's position on the ring."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    centers, directions = [], []
    for k in order:
        a = 2 * np.pi * k / n
        c = np.array([radius * np.cos(a), rng.uniform(-0.2, 0.2), radius * np.sin(a)])
        centers.append(c)
        directions.append(-c if inward else c)
    return _views(centers, directions), order


def _ring_neighbours(order: np.ndarray) -> set[tuple[int, int]]:
    n = len(order)
    where = np.argsort(order)  # ring position -> listed index
    return {tuple(sorted((int(where[k]), int(where[(k + 1) % n])))) for k in range(n)}


def test_covisibility_finds_ring_neighbours_in_shuffled_order():
    views, order = _ring(24, 5.0)
    assert abs(np.nanmedian(axis_depths(views)) - 5.0) < 0.1  # the views look at the centre
    pairs, info = covisibility_pairs(views, 2, 3.0, 45.0, 0.25)
    assert set(pairs) == _ring_neighbours(order)  # 15 deg apart; the next ones (30 deg) overlap less
    assert all(abs(b - 15.0) < 1.0 and o > 0.5 for o, b in info.values())
    # listed order plays no part: the same ring in another order pairs the same cameras
    views2, order2 = _ring(24, 5.0, seed=1)
    pairs2, _ = covisibility_pairs(views2, 2, 3.0, 45.0, 0.25)
    assert {tuple(sorted((int(order2[i]), int(order2[j])))) for i, j in pairs2} == {
        tuple(sorted((int(order[i]), int(order[j])))) for i, j in pairs
    }


def test_covisibility_skips_near_views_that_look_elsewhere_and_close_ups():
    views, order = _ring(24, 5.0)
    n = views.n
    c0 = views.C[0]
    # beside view 0 (0.1 away), turned 40 deg: its nearest centre, but it sees other things at a tiny baseline
    turn = np.array([[np.cos(0.7), 0, np.sin(0.7)], [0, 1, 0], [-np.sin(0.7), 0, np.cos(0.7)]])
    beside = c0 + np.array([0.0, 0.1, 0.0])
    # a close-up of the object from view 0's direction (3x nearer): little of its wide neighbours' images
    close = c0 / 3.0
    centers = [views.C[k] for k in range(n)] + [beside, close]
    directions = [views.R[k, 2] for k in range(n)] + [turn @ -c0, -c0]
    both = _views(centers, directions)
    near = seed_pairs(both, 2, 45.0)
    assert (0, n) in near  # nearest centres pair view 0 with the turned view: a baseline of about 1 deg
    pairs, info = covisibility_pairs(both, 2, 3.0, 45.0, 0.25)
    assert (0, n) not in pairs and (0, n + 1) not in pairs
    assert {p for p in pairs if max(p) < n} == _ring_neighbours(order)  # the ring keeps its neighbours
    assert all(3.0 <= b <= 45.0 and o >= 0.25 for o, b in info.values())
    # the close-up sees about 1/9 of what a ring neighbour at 15 deg sees: their symmetric overlap is small
    ring = int(np.argsort(order)[(order[0] + 1) % n])
    assert frustum_overlap(both, n + 1, ring, 5.0 / 3.0) > 0.9 and frustum_overlap(both, ring, n + 1, 5.0) < 0.2
    assert not any(n + 1 in p for p in pairs)


def test_pair_views_reports_the_pairing():
    inward, order = _ring(24, 5.0)
    method, pairs, stats = pair_views(inward, MultiviewConfig(seed_neighbours=2))
    assert method == "nearest" and pairs == seed_pairs(inward, 2, 45.0)  # the default
    method, pairs, stats = pair_views(inward, MultiviewConfig(seed_neighbours=2, pairing="covisibility"))
    assert method == "covisibility" and set(pairs) == _ring_neighbours(order)
    assert stats["views_without_seed_pair"] == 0 and stats["seed_baseline_deg_median"] == pytest.approx(15, abs=1)
    # views looking outwards (from the middle of a courtyard) see nothing in common: no covisible partner, reported
    outward, _ = _ring(24, 5.0, inward=False)
    method, pairs, stats = pair_views(outward, MultiviewConfig(seed_neighbours=2, pairing="covisibility"))
    assert pairs == [] and stats["views_without_seed_pair"] == 24
    with pytest.raises(ValueError, match="pairing must be one of nearest, covisibility"):
        MultiviewConfig(pairing="by-index")
    with pytest.raises(ValueError, match="min_pair_angle"):
        MultiviewConfig(min_pair_angle=50.0)
