"""Distractors and hard negatives (package docs, step 5)."""

from __future__ import annotations

import numpy as np

from ...datasets.scenes import fundamental_matrix
from .config import MultiviewConfig
from .geometry import Grid, Views, epipolar_lines

__all__ = ["find_distractors", "find_hard_negatives"]


def find_distractors(views: Views, X: np.ndarray, conf: MultiviewConfig, rng: np.random.Generator) -> np.ndarray:
    rows = []
    for v in range(views.n):
        kp = views.kp[v]
        if len(kp) == 0:
            continue
        free = views.site_owner[v][views.site[v]] < 0
        _, first_of_site = np.unique(views.site[v], return_index=True)
        one = np.zeros(len(kp), bool)
        one[first_of_site] = True
        uv, depth = views.project(v, X) if len(X) else (np.zeros((0, 2)), np.zeros(0))
        near = np.zeros(len(kp), bool)
        front = uv[(depth > 0) & views.inside(v, uv, -conf.distractor_px)]
        if len(front):
            idx, _ = Grid(front, conf.distractor_px).query(kp[:, :2])
            near = (idx >= 0).any(axis=1)
        cand = np.flatnonzero(free & one & ~near)
        if cand.size > conf.max_distractors_per_view:
            cand = np.sort(rng.choice(cand, conf.max_distractors_per_view, replace=False))
        rows += [(v, int(d)) for d in cand]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def find_hard_negatives(
    views: Views,
    X: np.ndarray,
    obs: np.ndarray,
    conf: MultiviewConfig,
    rng: np.random.Generator,
    is_val_view: np.ndarray,
    track_val: np.ndarray,
) -> np.ndarray:
    """(H, 5) track, view v, view w, negative detection in w, distance (px) to the projection (module docs, 5).

    v and w are views of the track's own split, so that the split keeps the pair.
    """
    rows = []
    fundamentals: dict[tuple[int, int], np.ndarray] = {}
    for t in range(len(X)):
        seen = np.flatnonzero((obs[t] >= 0) & (is_val_view == track_val[t]))
        if seen.size < 2:
            continue
        for _ in range(conf.hard_negatives_per_track):
            v, w = (int(x) for x in rng.choice(seen, 2, replace=False))
            kp_w = views.kp[w]
            anchor = views.kp[v][obs[t, v]]
            if (v, w) not in fundamentals:
                fundamentals[(v, w)] = fundamental_matrix(views.cams[v], views.cams[w])
            F = fundamentals[(v, w)]
            line = epipolar_lines(F, anchor[None, :2])[0]
            d_line = np.abs(kp_w[:, :2] @ line[:2] + line[2])
            uv, _ = views.project(w, X[t : t + 1])
            d_true = np.hypot(*(kp_w[:, :2] - uv[0]).T)
            own = kp_w[obs[t, w]]
            with np.errstate(divide="ignore"):
                similar = np.abs(np.log2(kp_w[:, 2] / own[2])) <= conf.max_log2_scale
            owner = views.site_owner[w][views.site[w]]
            other = np.maximum(owner, 0)
            # a free detection, or the very detection of another track of the same split: both get written
            written = (owner < 0) | ((obs[other, w] == np.arange(len(kp_w))) & (track_val[other] == track_val[t]))
            ok = (d_line <= conf.hard_epipolar_px) & (d_true >= conf.hard_min_px) & similar & (owner != t) & written
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                continue
            c = int(cand[np.argmin(d_true[cand])])
            rows.append((t, v, w, c, int(round(float(d_true[c])))))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)
