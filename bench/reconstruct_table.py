"""Reconstruction of a scene with ground-truth cameras by several extractors: the README's 3D table.

Usage: ``python bench/reconstruct_table.py SCENE OUT_DIR --model sift --model rootsift --model default ...``
(SCENE in the Strecha layout: images/ and cameras/). Each model runs ``deepdesc reconstruct`` (exhaustive
pairs, mutual nearest neighbours, pycolmap incremental mapping) into ``OUT_DIR/<model>``; the table gives
registered images, 3D points, mean track length, mean reprojection error and the camera-centre error after a
similarity alignment to the ground truth (median, as a share of the scene's extent). ``--repeats N`` maps each
model N times from the same matches (pycolmap's mapper is not deterministic) and shows the run with the median
error, plus every run's. Writes OUT_DIR/table.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from deepdesc import reconstruct
from deepdesc.datasets.scenes import load_colmap_scene, load_strecha_scene
from deepdesc.eval.reconstruction import camera_center_errors


def _conf(model: str) -> dict:
    if model in ("sift", "rootsift"):
        return {"extractor": "sift", "root": model == "rootsift", "max_keypoints": 2000}
    return {"extractor": "deepdesc", "model": model, "max_keypoints": 2000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--repeats", type=int, default=1, help="mapping runs per model (the median run is shown)")
    args = parser.parse_args()
    gt = load_strecha_scene(args.scene)
    rows = {}
    for model in args.model:
        label = Path(model).stem if model.endswith((".t7", ".safetensors")) else model
        runs = []
        for _ in range(args.repeats):  # features and matches are reused; the database and mapping are redone
            summary = reconstruct.main(
                args.scene / "images", args.out / label, extract_conf=_conf(model), progress=False
            )
            err = camera_center_errors(load_colmap_scene(summary.model_path, args.scene / "images"), gt)
            runs.append((summary, 100 * err["median"] / err["extent"], 100 * err["max"] / err["extent"]))
        medians = [r[1] for r in runs]
        summary, _, max_pct = sorted(runs, key=lambda r: r[1])[len(runs) // 2]  # the median run
        rows[label] = {
            "registered": summary.registered_images,
            "images": summary.num_images,
            "points3d": summary.points3d,
            "track_length": summary.mean_track_length,
            "reprojection_px": summary.mean_reprojection_error,
            "center_error_median_pct": statistics.median(medians),
            "center_error_max_pct": max_pct,
            "center_error_median_pct_runs": medians,
        }
        print(label, rows[label], flush=True)
    header = "registered | 3D points | track length | reproj. error (px) | centre error median / max (% extent)"
    if args.repeats > 1:
        header += f" | median error, each of {args.repeats} runs"
    lines = [f"| {gt.name} | {header} |", "|---" * (6 + (args.repeats > 1)) + "|"]
    for model, r in rows.items():
        line = (
            f"| {model} | {r['registered']}/{r['images']} | {r['points3d']} | {r['track_length']:.2f} | "
            f"{r['reprojection_px']:.3f} | {r['center_error_median_pct']:.2f} / {r['center_error_max_pct']:.2f} |"
        )
        if args.repeats > 1:
            line += " " + ", ".join(f"{v:.2f}" for v in r["center_error_median_pct_runs"]) + " |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
