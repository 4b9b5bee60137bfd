"""Real multi-view training patches from a scene with cameras, written in the PhotoTour (Brown) layout.

``deepdesc make-patches SCENE -o DIR`` (:func:`make_patches`) turns a scene with known cameras (a Strecha folder,
ground truth; or a COLMAP model, pseudo ground truth) into labelled patches that teach what synthetic warps
cannot: real viewpoint changes of non-planar structure, occlusion, lighting, and the noise of a detector run
independently in every view. Everything is geometric; no descriptor decides what matches.

Method (:class:`MultiviewConfig` holds every threshold; pixels are image pixels):

1. **Detect** DoG keypoints in every view (:func:`~deepdesc.features.keypoints.detect_keypoints`,
   ``max_keypoints`` strongest, oriented) and keep those whose patch region (``region_scale`` x size, rotated)
   lies inside the image, so every patch is real image content. OpenCV reports a location with several dominant
   orientations as several keypoints; such siblings are one *site*: a site belongs to at most one track.
2. **Seed**: every view is paired with ``seed_neighbours`` other views (:mod:`.pairing`, ``pairing``): ``nearest``,
   its nearest camera centres among views whose optical axes differ by at most ``max_pair_angle``; or
   ``covisibility``, the views that see most of what it sees (frustum overlap at the depth where the optical axes
   meet, at least ``min_overlap`` both ways) at a baseline of ``min_pair_angle`` to ``max_pair_angle``, whatever
   the file order (``nearest``, the default, does not use the order either). For each detection of view i, every
   detection of view j within ``epipolar_px`` of its epipolar line (ground-truth F) is a candidate; candidates are
   triangulated and kept when the point is in front of both cameras, reprojects within ``max_reproj_px`` in both,
   its rays meet at ``min_triangulation_angle`` or more, and the detection in j agrees with the one in i
   transferred through the point: size within a factor ``2 ** max_log2_scale`` and orientation within
   ``max_angle_deg`` (the transfer assumes the surface is fronto-parallel to the reference camera at the point's
   depth).
3. **Verify** each candidate in every other view whose ray to the point is within ``max_link_angle`` of a seed's:
   project it, transfer the keypoint, and snap to a detection within ``snap_px`` with consistent size and
   orientation. A candidate needs detections in ``min_views`` views (the two seeds included); for one detection
   of view i the best supported candidate wins, and a tie makes the detection ambiguous (dropped). Candidates
   are accepted greedily, best supported first, only if none of their sites is already taken, which merges the
   seeds of one point found from several pairs.
4. **Refine and extend**: tracks are re-triangulated from all their detections (linear, depth-weighted); detections
   reprojecting beyond ``max_reproj_px`` are dropped. Then every track is reprojected into **every** view (all
   baselines) where it is not yet observed; it must be in front of the camera, inside the image and not occluded,
   i.e. no track observed in that view within about ``occlusion_cell`` px (a coarse depth map: minimum depth per
   cell, 3x3 cells) is closer by more than ``occlusion_depth`` (relative); the keypoint is transferred from the
   observing view with the most similar viewing direction (at most ``max_link_angle`` away) and snapped as in 3.
   (``extend_passes`` passes, each followed by re-triangulation). Wide baselines are reached through chains of
   views: at the end a track keeps its largest set of detections linked by rays at most ``max_link_angle`` apart,
   and tracks with fewer than ``min_views`` detections are dropped. A patch uses the detection's own position,
   size and orientation: training sees real detector noise, not the reprojection. (Geometry alone also accepts
   the rare T-junction of an occluding edge with background texture that slides along the epipolar lines: a
   phantom point whose patches look alike.)
5. **Distractors**: free sites (no track) with no track of positive depth projecting within ``distractor_px``;
   up to ``max_distractors_per_view`` per view, each its own 3D point id (a single-patch point, a negative).
   **Hard negatives**: for ``hard_negatives_per_track`` random pairs of views (v, w) of a track (views of the
   track's split, step 6), the detection of
   w within ``hard_epipolar_px`` of the epipolar line of the track's detection in v, at least ``hard_min_px``
   from the track's projection, with a size within ``2 ** max_log2_scale`` of the track's own detection there,
   nearest to the projection: what a matcher restricted to the epipolar line would confuse. Its patch is added
   (as a single-patch point when it belongs to no track) and the pair goes into the match file as a negative
   (at most half of a match file's negatives are hard ones).
6. **Split by image**: views ``i % val_every == val_every - 1`` are validation views (by file index: spread
   along a walk, a scattered subset of an unordered capture). A track with detections in at least two validation
   views goes to the validation set with probability ``val_share`` (seeded), otherwise to
   training; a track keeps only its detections in its split's views, and needs two of them. So validation
   patches come only from validation views, training patches only from training views, and no 3D point (track)
   has patches in both. Distractors and hard negatives follow their views.

Output of :func:`make_patches` (written into a temporary folder beside ``DIR`` first; ``DIR`` must not be, hold or
lie inside the scene or model it reads; ``--overwrite`` replaces only the files listed here, in ``DIR`` and
``DIR/val``, and leaves any other file there alone):
``DIR/`` the training set and ``DIR/val/`` the validation set, each in the PhotoTour layout
(:func:`~deepdesc.datasets.phototour.write_phototour`: ``patchesNNNN.bmp``, ``info.txt`` = 3D point id and
view index, ``interest.txt`` = view index, x, y, orientation in radians (OpenCV's angle, y down), keypoint size
(OpenCV diameter, pixels), and ``m50_{n}_{n}_0.txt`` with ``n`` pairs, half positive, ``n = pairs`` (default
100000, the name the PhotoTour evaluation reads by default) or twice the number of distinct positive pairs when
fewer: positives are distinct pairs of detections of one track, negatives the hard negatives (last column 1)
plus random pairs of different points (distractors included)); ``images.txt`` (view index, image name, split);
``summary.json`` / ``summary.md``. Without validation tracks (``val_every = 0``, fewer than two validation views,
or no track seen in two of them) no ``DIR/val`` is written and the summary says why (``no_validation``).
Patches of one track are consecutive; point ids are tracks first, then single-patch points. ``phototour:DIR``
training sources and :func:`~deepdesc.eval.phototour.evaluate_phototour` read the sets as they are (note that a
``phototour:`` source holds out every 10th 3D point of its folder for its own validation pairs).
"""

from __future__ import annotations

from .config import MultiviewConfig, MultiviewSet, SplitSet, validation_views
from .geometry import symmetric_epipolar_error
from .pairing import seed_pairs
from .split import split_multiview
from .summary import summarize, summary_markdown
from .tracks import build_multiview, detect_views
from .writing import cut_patches, load_scene, make_patches, write_multiview

__all__ = [
    "MultiviewConfig",
    "MultiviewSet",
    "SplitSet",
    "build_multiview",
    "cut_patches",
    "detect_views",
    "load_scene",
    "make_patches",
    "seed_pairs",
    "split_multiview",
    "summarize",
    "summary_markdown",
    "symmetric_epipolar_error",
    "validation_views",
    "write_multiview",
]
