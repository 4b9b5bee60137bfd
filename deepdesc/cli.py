"""The ``deepdesc`` command line: argparse plus one library call per command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["build_parser", "main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from .hub.registry import describe_models

    print(describe_models())
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .hub.registry import convert_model

    extra = {}
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--meta expects KEY=VALUE, got {item!r}")
        extra[key] = value
    if args.input.endswith(".pt"):  # a training checkpoint: the trainer knows its format
        from .train import model_from_checkpoint

        model, _ = model_from_checkpoint(args.input)
    else:
        model = args.input
    print(f"wrote {args.output} ({convert_model(model, args.output, extra, half=args.half)})")
    return 0


def _cmd_describe_mat(args: argparse.Namespace) -> int:
    from .io.matlab import describe_mat

    n = describe_mat(args.input, args.output, model=args.model, layout=args.layout, version=args.mat_version)
    print(f"described {n} patches -> {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import parse_overrides, train

    summary = train(args.config, resume=args.resume, overrides=parse_overrides(args.set or []))
    print(json.dumps(summary))
    return 130 if summary["interrupted"] else 0


def _cmd_whiten(args: argparse.Namespace) -> int:
    from .train.whitening import whiten

    summary = whiten(
        args.model,
        args.config,
        args.output,
        power=args.power,
        shrinkage=args.shrinkage,
        num_pairs=args.pairs,
        seed=args.seed,
        half=args.half,
    )
    print(json.dumps(summary))
    return 0


def _extractor_conf(args: argparse.Namespace) -> dict:
    """The extract conf of the extractor options: ``--model sift|rootsift`` selects OpenCV SIFT."""
    conf: dict = {"max_keypoints": args.max_keypoints, "upright": args.upright, "region_scale": args.region_scale}
    if getattr(args, "resize_max", None) is not None:
        conf["resize_max"] = args.resize_max
    if getattr(args, "unit_norm", False):
        conf["unit_norm"] = True
    if args.model in ("sift", "rootsift"):
        return {"extractor": "sift", "root": args.model == "rootsift", **conf}
    return {"extractor": "deepdesc", "model": args.model, "blur_sigma": args.blur_sigma, "device": args.device, **conf}


def _cmd_describe(args: argparse.Namespace) -> int:
    from . import extract

    summary = extract.main(
        _extractor_conf(args),
        args.images,
        args.output,
        overwrite=args.overwrite,
        as_half=args.half,
        strict=args.strict,
        **_engine_kwargs(args),
    )
    print(summary)
    return 1 if summary.skipped else 0


def _cmd_match(args: argparse.Namespace) -> int:
    from .extract import make_extractor
    from .features.image import read_image, resize_max_side
    from .match import check_conf, match_images

    check_conf({"ratio": args.ratio, "geometry": args.geometry, "threshold_px": args.threshold})
    if args.output:
        from .viz import check_picture_path

        check_picture_path(args.output)  # before any matching
    extractor = make_extractor(_extractor_conf(args))
    result = match_images(
        extractor,
        args.image1,
        args.image2,
        ratio=args.ratio,
        geometry=args.geometry,
        threshold_px=args.threshold,
    )
    ratio = "" if args.ratio is None else f", ratio < {args.ratio}"
    print(f"keypoints: {len(result.features0)} / {len(result.features1)}")
    print(f"matches: {len(result.matches)} (mutual nearest neighbours{ratio})")
    print(f"inliers: {result.num_inliers} ({args.geometry}, {args.threshold:g} px)")
    if result.model is not None:
        print(f"{args.geometry}:\n{np.array2string(result.model, precision=6, suppress_small=True)}")
    if not result.reliable:
        print(
            f"warning: verification failed or is unreliable ({result.num_inliers} inliers of {len(result.matches)} "
            "matches): the images may not show the same scene",
            file=sys.stderr,
        )
    if args.output:
        from .viz import plot_matches

        images, kpts = [], []
        for path, feats in ((args.image1, result.features0), (args.image2, result.features1)):
            image, (sx, sy) = resize_max_side(read_image(path, "rgb"), 2000)  # the picture at most 2000 px wide
            images.append(image)
            kpts.append((feats.keypoints + 0.5) * np.array([sx, sy], np.float32) - 0.5)  # the frame of the picture
        plot_matches(*images, *kpts, result.matches, result.inliers, path=args.output)
        print(f"wrote {args.output}")
    if args.save_matches:
        print(f"wrote {result.save_npz(args.save_matches)}")
    return 0


def _cmd_colmap(args: argparse.Namespace) -> int:
    from .reconstruct import write_database

    stats = write_database(
        _extractor_conf(args), args.image_dir, args.database, ratio=args.ratio, overwrite=args.overwrite
    )
    print(f"wrote {args.database}: {stats}")
    return 1 if stats.skipped else 0  # as describe: a skipped image is a failure the caller should see


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from .reconstruct import main as reconstruct

    summary = reconstruct(
        args.image_dir,
        args.output,
        extract_conf=_extractor_conf(args),
        match_conf={"mutual": True, "ratio": args.ratio, "geometry": None},
        pairs=args.pairs,
        single_camera=args.single_camera,
        camera_model=args.camera_model,
        text=args.text,
        overwrite=args.overwrite,
        mapper_threads=args.mapper_threads,
        **_engine_kwargs(args),
    )
    print(summary)
    return 1 if summary.skipped else 0


def _engine_kwargs(args: argparse.Namespace) -> dict:
    """``engine`` and, for Ray, its options, from ``--engine/--workers/--gpus-per-worker/--address/--unit-size``."""
    if args.engine == "local":
        for flag, value in (
            ("--workers", args.workers),
            ("--gpus-per-worker", args.gpus_per_worker),
            ("--address", args.address),
            ("--unit-size", args.unit_size),
        ):
            if value is not None:
                raise ValueError(f"{flag} needs --engine ray")
        return {}
    options = {
        "workers": args.workers,
        "gpus_per_worker": args.gpus_per_worker,
        "address": args.address,
        "unit_size": args.unit_size,
    }
    return {"engine": args.engine, **{k: v for k, v in options.items() if v is not None}}


def _cmd_match_pairs(args: argparse.Namespace) -> int:
    from . import match
    from .io.h5 import list_images

    names = list_images(args.features)
    pairs = match.parse_pairs_option(args.pairs, names)
    conf = {"mutual": True, "ratio": args.ratio, "geometry": args.geometry, "threshold_px": args.threshold}
    out = match.main(conf, pairs, args.features, args.output, overwrite=args.overwrite, **_engine_kwargs(args))
    print(f"matched {len(pairs)} pairs of {len(names)} images -> {out}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .engine.verify import verify_file
    from .features.image import list_images
    from .match import read_pairs

    images = [n for n, _ in list_images(args.images)] if args.images else None
    pairs = read_pairs(args.pairs) if args.pairs else None
    report = verify_file(args.file, images=images, pairs=pairs)
    print(report)
    return 0 if report.ok else 1


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from . import evaluate

    _, table = evaluate.main(
        args.dataset,
        args.model,
        args.output,
        protocols=args.protocol.split(","),
        num_keypoints=args.num_keypoints,
        region_scale=args.region_scale,
        blur_sigma=args.blur_sigma,
        scene_keypoints=args.scene_keypoints,
        max_gap=args.max_gap,
        orders=args.orders,
        precision=args.precision,
    )
    print(table)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .hub.registry import load_model
    from .nn.export import export_onnx

    print(f"wrote {export_onnx(load_model(args.model, device='cpu'), args.output, opset=args.opset)}")
    return 0


def _cmd_make_patches(args: argparse.Namespace) -> int:
    from .train.multiview import MultiviewConfig, make_patches, summary_markdown

    options = {"max_keypoints": args.max_keypoints, "val_every": args.val_every, "pairs": args.pairs}
    options["pairing"] = args.pairing
    for key in ("region_scale", "blur_sigma"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    summary = make_patches(
        args.scene, args.output, MultiviewConfig(**options), colmap=args.colmap, overwrite=args.overwrite
    )
    print(summary_markdown(summary), end="")
    if "val" in summary["splits"]:
        print(f"wrote {args.output} (training set), {args.output}/val (validation set), summary.json")
    else:
        print(f"wrote {args.output} (training set) and summary.json; no validation set: {summary['no_validation']}")
        print(f"(a multiview:{args.output} training source needs {args.output}/val for its validation pairs)")
    return 0


def _cmd_phototour_groups(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .datasets.phototour import list_sheets, write_info
    from .datasets.phototour_groups import group_statistics, recover_groups

    output = Path(args.output) if args.output else Path(args.folder) / "info.txt"
    folder_output = args.output is not None and output.suffix.lower() != ".txt"
    target = output / "info.txt" if folder_output else output
    if target.exists() and not args.overwrite:  # before any work
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    data, ids = recover_groups(
        args.folder, args.method, args.threshold, bridge=not args.no_bridge, min_size=args.min_size, model=args.model
    )
    links = list_sheets(data.root) if folder_output and output.resolve() != data.root.resolve() else None
    write_info(target, ids, overwrite=args.overwrite, link_sheets=links)
    print(json.dumps(group_statistics(ids)))
    print(f"wrote {target}" + (f" (and links to the sheets: phototour:{output})" if links else ""))
    return 0


def _add_extractor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="registry name, .t7/.safetensors path, or sift/rootsift (OpenCV)"
    )
    parser.add_argument("--max-keypoints", type=int, default=2000)
    parser.add_argument(
        "--resize-max",
        type=int,
        help="downscale images whose longer side exceeds this many pixels before detection and description "
        "(e.g. 1600 as hloc, 3200 as COLMAP); keypoints stay in the original's pixels. Default: full size",
    )
    parser.add_argument("--upright", action="store_true", help="ignore keypoint orientation")
    parser.add_argument("--region-scale", type=float, help="patch side / keypoint size (default: the model's)")
    parser.add_argument("--blur-sigma", type=float, help="extra patch smoothing in px (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="local: this process; ray: a Ray cluster"
    )
    parser.add_argument("--workers", type=int, help="Ray actors (default: as many as the cluster's CPUs or GPUs fit)")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray actor (default 0: CPU)")
    parser.add_argument("--address", help="Ray cluster to join, e.g. auto (default: start a local one)")
    parser.add_argument(
        "--unit-size", type=int, help="images (describe) or pairs (matching) per Ray unit (default 32 / 512)"
    )


def _add_model_arg(parser: argparse.ArgumentParser, default: str = "default") -> None:
    parser.add_argument("--model", default=default, help="registry name (deepdesc models) or .t7/.safetensors path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepdesc", description="DeepDesc learned local feature descriptors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the named pretrained models, their cache status and licences")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("convert", help="convert an original Torch7 model or a training checkpoint to safetensors")
    p.add_argument(
        "input", help="CNN3_*.t7 file of the original release, a deepdesc train checkpoint (.pt) or .safetensors model"
    )
    p.add_argument("output", help="output .safetensors file")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata to record in the file (repeat)")
    p.add_argument("--half", action="store_true", help="store float16 tensors (half the size; loaded as float32)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("describe-mat", help="describe patches from a MATLAB .mat file (successor of desc.lua)")
    p.add_argument("input", help=".mat file with variable 'patches' (64x64x1xN or 64x64xN, 0..255)")
    p.add_argument("output", help=".mat file to write variable 'x' (128xN) to")
    _add_model_arg(p)
    p.add_argument(
        "--layout",
        choices=["original", "image"],
        default="original",
        help="original: as desc.lua/mattorch (each patch transposed); image: patches as MATLAB displays them",
    )
    p.add_argument(
        "--mat-version",
        choices=["5", "7.3"],
        default=None,
        help="MAT-file version of the output: 5 (v5/v7, MATLAB's save -v7) or 7.3 (HDF5, save -v7.3); "
        "MATLAB and Octave load both (default: the input's version)",
    )
    p.set_defaults(func=_cmd_describe_mat)

    p = sub.add_parser("describe", help="detect and describe images into an hloc-style HDF5 file (resumable)")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="features .h5 file; images already in it are skipped")
    p.add_argument("--half", action="store_true", help="store descriptors as float16")
    p.add_argument("--overwrite", action="store_true", help="describe images already in the file again")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: skip it)")
    p.add_argument("--unit-norm", action="store_true", help="L2-normalise descriptors (for hloc's matchers)")
    _add_extractor_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser("match", help="match two images and verify the matches geometrically")
    p.add_argument("image1")
    p.add_argument("image2")
    p.add_argument("-o", "--output", help="PNG picture of the matches (inliers green, outliers red)")
    p.add_argument("--save-matches", help=".npz file with keypoints, matches, distances and the inlier mask")
    p.add_argument("--ratio", type=float, help="Lowe's ratio test threshold on top of mutual nearest neighbours")
    p.add_argument("--geometry", choices=["homography", "fundamental"], default="homography")
    p.add_argument("--threshold", type=float, default=3.0, help="inlier threshold in px")
    _add_extractor_args(p)
    p.set_defaults(func=_cmd_match)

    p = sub.add_parser("colmap", help="write features and verified matches of a folder into a COLMAP database")
    p.add_argument("image_dir")
    p.add_argument("--database", required=True, help="COLMAP database file to create")
    p.add_argument("--ratio", type=float, default=None, help="Lowe's ratio test in (0, 1] on top of mutual NN")
    p.add_argument("--overwrite", action="store_true", help="replace an existing database file")
    _add_extractor_args(p)
    p.set_defaults(func=_cmd_colmap)

    p = sub.add_parser("reconstruct", help="features, matching, verification and incremental mapping (pycolmap)")
    p.add_argument("image_dir", help="folder of images (searched recursively)")
    p.add_argument(
        "-o", "--output", required=True, help="folder for features.h5, pairs.txt, matches.h5, database, sparse/"
    )
    p.add_argument("--pairs", default="exhaustive", help="exhaustive, sequential:K, or an hloc pairs file")
    p.add_argument("--ratio", type=float, default=None, help="Lowe's ratio test on top of mutual nearest neighbours")
    p.add_argument("--single-camera", action="store_true", help="all images share one camera")
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model")
    p.add_argument("--text", action="store_true", help="also write the model as text files")
    p.add_argument(
        "--mapper-threads",
        type=int,
        help="threads of incremental mapping (default: all); 1 gives the same model on every run",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start features and matches again, and replace a database.db, pairs.txt or sparse/N model that "
        "reconstruct did not write (other files are kept)",
    )
    _add_extractor_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("match-pairs", help="match image pairs of a features file into an hloc matches file")
    p.add_argument("features", help="features .h5 file (deepdesc describe)")
    p.add_argument("-o", "--output", required=True, help="matches .h5 file; pairs already in it are skipped")
    p.add_argument("--pairs", default="exhaustive", help="exhaustive, sequential:K, or an hloc pairs file")
    p.add_argument("--ratio", type=float, default=None, help="Lowe's ratio test on top of mutual nearest neighbours")
    p.add_argument("--geometry", choices=["fundamental", "homography"], default=None, help="keep only inliers")
    p.add_argument("--threshold", type=float, default=1.0, help="inlier threshold in px (with --geometry)")
    p.add_argument("--overwrite", action="store_true", help="match pairs already in the file again")
    _add_engine_args(p)
    p.set_defaults(func=_cmd_match_pairs)

    p = sub.add_parser("verify", help="check a features or matches .h5 file; exit 1 listing what is wrong")
    p.add_argument("file", help="features or matches .h5 file")
    p.add_argument("--images", nargs="+", help="image files or folders whose every image the features must hold")
    p.add_argument("--pairs", help="hloc pairs file whose every pair the matches must hold")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("evaluate", help="benchmark models and SIFT/RootSIFT; writes results.md/json and plots")
    p.add_argument(
        "--dataset",
        action="append",
        required=True,
        help="KIND:PATH with KIND oxford, hpatches-seq (a sequence folder or a folder of them), "
        "phototour (Brown layout), hpatches (patch release), strecha (a scene with images/ and cameras/, "
        "or a folder of them) or colmap (a folder with images/ and sparse/0)",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="model name/path, sift or rootsift (on patch data sets: SIFT of the whole patch); NAME@R: region R; "
        "LABEL=SPEC: report it as LABEL (models sharing a file name are told apart by their folders) (repeat)",
    )
    p.add_argument("-o", "--output", default="eval", help="output folder")
    p.add_argument("--protocol", default="patch,homography", help="patch, homography or both (comma separated)")
    p.add_argument("--num-keypoints", type=int, default=1000, help="keypoints of the patch protocol")
    p.add_argument("--scene-keypoints", type=int, default=2000, help="DoG keypoints per image on 3D scenes")
    p.add_argument("--max-gap", type=int, default=3, help="3D scenes: pairs (i, j) with 1 <= j - i <= max-gap")
    p.add_argument("--orders", type=int, default=5, help="3D scenes: match orders RANSAC is run on per pair")
    p.add_argument("--region-scale", type=float)
    p.add_argument("--blur-sigma", type=float)
    p.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), help="the networks' arithmetic (default fp32; bf16: CPU)"
    )
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export a model for use without Python")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    _add_model_arg(p)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("make-patches", help="multi-view training patches (PhotoTour layout) from a scene with cameras")
    p.add_argument("scene", help="Strecha scene folder (images/, cameras/), or with --colmap the model's image folder")
    p.add_argument("-o", "--output", required=True, help="output folder: training set; DIR/val: validation set")
    p.add_argument("--colmap", metavar="MODEL_DIR", help="COLMAP model (cameras/images/points3D .bin or .txt)")
    p.add_argument("--max-keypoints", type=int, default=4000, help="DoG keypoints per view")
    p.add_argument("--val-every", type=int, default=4, help="every N-th view is a validation view (0: none)")
    p.add_argument("--region-scale", type=float, help="patch side / keypoint size (default: the library's)")
    p.add_argument("--blur-sigma", type=float, help="extra patch smoothing in px (default: the library's)")
    p.add_argument("--pairs", type=int, default=100_000, help="pairs per m50 match file (half positive)")
    p.add_argument(
        "--pairing",
        choices=("nearest", "covisibility"),
        default="nearest",
        help="views that seed tracks together: nearest camera centres facing the same way, or covisibility "
        "(frustum overlap at a baseline of 3-45 deg); neither depends on the file order",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the patch sets of an existing output (other files stay)"
    )
    p.set_defaults(func=_cmd_make_patches)

    p = sub.add_parser(
        "phototour-groups", help="infer the 3D-point groups of a PhotoTour (Brown) folder and write its info.txt"
    )
    p.add_argument("folder", help="folder of patchesNNNN.bmp sheets, each point's patches consecutive (Brown)")
    p.add_argument("--method", choices=["rootsift", "deepdesc"], default="rootsift", help="patch descriptor")
    p.add_argument("--threshold", type=float, help="link distance starting a new point (default: the method's)")
    p.add_argument("--no-bridge", action="store_true", help="compare only neighbours, not also i with i+2")
    p.add_argument("--min-size", type=int, default=2, help="fewest patches per point (Brown: 2)")
    p.add_argument("--model", default=None, help="--method deepdesc: registry name or model path (default model)")
    p.add_argument(
        "-o",
        "--output",
        help="info file (*.txt), or a folder: FOLDER/info.txt plus links to the sheets "
        "(a complete set for phototour:FOLDER); default FOLDER_OF_SHEETS/info.txt",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing info.txt")
    p.set_defaults(func=_cmd_phototour_groups)

    p = sub.add_parser("train", help="train a descriptor (see deepdesc/train/ and configs/)")
    p.add_argument("--config", help="TOML or YAML config: preset = 'paper'|'hardnet' plus overriding tables")
    p.add_argument("--resume", action="store_true", help="continue the run in run.out_dir from last.pt")
    p.add_argument(
        "--set", action="append", metavar="TABLE.KEY=VALUE", help="override a config value, e.g. optim.lr=0.001"
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "whiten", help="fold a whitening learned on training pairs into a compact model's last layer (no run-time cost)"
    )
    _add_model_arg(p)
    p.add_argument("--config", required=True, help="training config whose data.sources give the pairs")
    p.add_argument("-o", "--output", required=True, help="the whitened model (.safetensors)")
    p.add_argument("--power", type=float, default=1.0, help="0: only centre, 1: whiten fully (default)")
    p.add_argument("--shrinkage", type=float, default=0.0, help="pull the covariance towards the identity, 0..1")
    p.add_argument("--pairs", type=int, default=50_000, help="training pairs to fit on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store float16 tensors (half the file)")
    p.set_defaults(func=_cmd_whiten)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)  # the library's log lines, e.g. skipped images
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, RuntimeError, OSError, ArithmeticError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"deepdesc {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
