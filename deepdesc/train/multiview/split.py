"""Split by image into training and validation sets, and their match pairs (package docs, step 6)."""

from __future__ import annotations

import numpy as np

from .config import MultiviewSet, SplitSet, validation_views

__all__ = ["split_multiview"]


def _positive_pairs(starts: np.ndarray, counts: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``n`` pairs of different patches of one point (unique while possible, then repeated), and the unique count.

    Patches of a point are the consecutive rows ``starts[k] .. starts[k] + counts[k] - 1``.
    """
    pool = [np.stack(np.triu_indices(c, 1), axis=1) + s for s, c in zip(starts.tolist(), counts.tolist()) if c >= 2]
    if not pool:
        return np.zeros((0, 2), np.int64), 0
    allp = np.concatenate(pool)
    unique = len(allp)
    if unique >= n:
        chosen = allp[rng.choice(unique, n, replace=False)]
    else:
        chosen = np.concatenate([allp, allp[rng.choice(unique, n - unique, replace=True)]])
    flip = rng.random(len(chosen)) < 0.5
    chosen[flip] = chosen[flip][:, ::-1]
    return chosen[rng.permutation(len(chosen))], unique


class _Rows:
    """The patches of one split as they are collected: parallel lists and a (view, detection) -> row index."""

    def __init__(self) -> None:
        self.view: list[int] = []
        self.det: list[int] = []
        self.pid: list[int] = []
        self.kind: list[int] = []
        self.track: list[int] = []
        self.index: dict[tuple[int, int], int] = {}
        self.points = 0

    def new_point(self) -> int:
        self.points += 1
        return self.points - 1

    def add(self, v: int, d: int, pid: int, kind: int, track: int) -> int:
        self.index[(v, d)] = len(self.view)
        for lst, value in ((self.view, v), (self.det, d), (self.pid, pid), (self.kind, kind), (self.track, track)):
            lst.append(value)
        return len(self.view) - 1

    def single(self, v: int, d: int, kind: int) -> int:
        """The row of detection d of view v, added as a point of its own when new."""
        if (v, d) in self.index:
            return self.index[(v, d)]
        return self.add(v, d, self.new_point(), kind, -1)


def split_multiview(mv: MultiviewSet) -> dict[str, SplitSet]:
    """The training and validation sets of ``mv`` (module docs, step 6): ``{"train": ..., "val": ...}`` (a split
    without patches is left out)."""
    conf = mv.config
    rng = np.random.default_rng([conf.seed, 2])
    views = mv.views
    is_val_view = validation_views(mv.num_views, conf.val_every)
    obs = mv.observations
    track_val = mv.track_val
    out: dict[str, SplitSet] = {}
    for name, want_val in (("train", False), ("val", True)):
        view_ok = is_val_view == want_val
        rows = _Rows()
        starts, counts = [], []
        for t in np.flatnonzero(track_val == want_val):
            seen = np.flatnonzero((obs[t] >= 0) & view_ok)
            if seen.size < 2:
                continue
            starts.append(len(rows.view))
            counts.append(seen.size)
            pid = rows.new_point()
            for v in seen:
                rows.add(int(v), int(obs[t, v]), pid, 0, int(t))
        num_tracks = rows.points
        for v, d in mv.distractors.tolist():
            if view_ok[v]:
                rows.single(v, d, 1)
        hard_pairs = []
        for t, v, w, c, _ in mv.hard_negatives.tolist():
            if not (view_ok[v] and view_ok[w]) or track_val[t] != want_val:
                continue
            anchor = rows.index.get((v, int(obs[t, v])))
            if anchor is None:
                continue
            if (w, c) in rows.index:
                neg = rows.index[(w, c)]
            elif views.site_owner[w][views.site[w][c]] < 0:
                neg = rows.single(w, c, 2)
            else:
                continue  # a detection of a track not written in this split
            if rows.pid[neg] != rows.pid[anchor]:
                hard_pairs.append((anchor, neg))
        rows_view, rows_det, rows_pid, rows_kind, rows_track = rows.view, rows.det, rows.pid, rows.kind, rows.track
        n = len(rows_view)
        if n == 0:
            continue
        point_ids = np.array(rows_pid, np.int64)
        starts_a, counts_a = np.array(starts, np.int64), np.array(counts, np.int64)
        available = int((counts_a * (counts_a - 1) // 2).sum())
        n_pairs = min(conf.pairs, 2 * available)  # half positive, no positive pair twice
        if n_pairs < 2:
            continue
        half = n_pairs // 2
        pos, unique = _positive_pairs(starts_a, counts_a, half, rng)
        hard = np.array(hard_pairs, np.int64).reshape(-1, 2)
        if len(hard) > half:
            hard = hard[rng.choice(len(hard), half, replace=False)]
        n_random = 2 * half - len(pos) - len(hard)
        rand = np.zeros((0, 2), np.int64)
        if n > 1 and point_ids.max() > 0:
            chunks, have = [], 0
            while have < n_random:
                a, b = rng.integers(0, n, (2, 2 * (n_random - have) + 16))
                ok = point_ids[a] != point_ids[b]
                chunks.append(np.stack([a[ok], b[ok]], axis=1))
                have += int(ok.sum())
            rand = np.concatenate(chunks)[:n_random] if chunks else rand
        table = np.concatenate(
            [
                np.c_[pos, np.zeros(len(pos), np.int64)],
                np.c_[hard, np.ones(len(hard), np.int64)],
                np.c_[rand, np.zeros(len(rand), np.int64)],
            ]
        )
        table = table[rng.permutation(len(table))]
        out[name] = SplitSet(
            name,
            np.array(rows_view, np.int64),
            np.array(rows_det, np.int64),
            point_ids,
            np.array(rows_kind, np.int64),
            np.array(rows_track, np.int64),
            table,
            unique,
            num_tracks,
            len(hard),
        )
    return out
