"""The ``deepdesc`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from .hub.registry import MODELS, cache_dir, cached

    print(f"cache: {cache_dir()}")
    print(f"{'name':<9} {'status':<14} {'trained on':<52} license")
    for info in MODELS.values():
        if info.url is None:
            status = "packaged" if cached(info.name) else "not yet trained"
        else:
            status = "cached" if cached(info.name) else "downloadable"
        print(f"{info.name:<9} {status:<14} {info.trained_on:<52} {info.license}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .hub.registry import MODELS
    from .hub.weights import load_safetensors, load_t7, save_safetensors

    extra = {}
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"deepdesc convert: --meta expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        extra[key] = value
    suffix = Path(args.input).suffix
    if suffix in (".pt", ".safetensors"):  # a deepdesc training checkpoint or model: re-labelled copy
        if suffix == ".pt":
            from .train.trainer import model_from_checkpoint

            model, _ = model_from_checkpoint(args.input)
        else:
            model = load_safetensors(args.input)
        save_safetensors(model, args.output, extra)
        print(f"wrote {args.output} ({extra.get('provenance', model.info.get('provenance', ''))})")
        return 0
    model = load_t7(args.input)
    meta = {"provenance": f"converted from {Path(args.input).name} by deepdesc convert"}
    known = {info.filename: info for info in MODELS.values()}
    info = known.get(Path(args.input).name)
    if info is not None:
        meta.update(name=info.name, training_data=info.trained_on, license=info.license, source_url=info.url or "")
    else:
        meta.update(training_data="unknown", license="unknown (check the source of the .t7 file)")
    save_safetensors(model, args.output, {**meta, **extra})
    print(f"wrote {args.output} ({meta['license']})")
    return 0


def _cmd_describe_mat(args: argparse.Namespace) -> int:
    from .io.matlab import describe_mat

    n = describe_mat(args.input, args.output, model=args.model, layout=args.layout)
    print(f"described {n} patches -> {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.trainer import parse_overrides, train

    summary = train(args.config, resume=args.resume, overrides=parse_overrides(args.set or []))
    print(json.dumps(summary))
    return 130 if summary["interrupted"] else 0


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


def list_images(inputs: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, path) for image files and the images found recursively in folders; a name is the path
    relative to the folder it was found in (the file name for a file argument)."""
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            found += [(p.relative_to(path).as_posix(), p) for p in files]
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise FileNotFoundError(f"{path}: no such image or folder")
    names = [n for n, _ in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs give the image name(s) {duplicates[:5]}; pass their common folder instead")
    return found


def _extractor(args: argparse.Namespace):
    from .features.extractor import DeepDesc

    return DeepDesc(
        model=args.model,
        max_keypoints=args.max_keypoints,
        upright=args.upright,
        region_scale=args.region_scale,
        blur_sigma=args.blur_sigma,
        device=args.device,
    )


def _cmd_describe(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from .io.h5 import has_image, write_features

    images = list_images(args.images)
    todo = [
        (n, p) for n, p in images if args.overwrite or not Path(args.output).exists() or not has_image(args.output, n)
    ]
    print(f"{len(images)} images, {len(images) - len(todo)} already in {args.output}")
    if not todo:
        return 0
    dd = _extractor(args)
    _ = dd.model  # load the network once, before the worker thread needs its config
    # decode, detect and cut patches of the next image in a thread while the network describes this one
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(dd.prepare, todo[0][1])
        for i, (name, _) in enumerate(tqdm(todo, desc="describe", unit="img")):
            prepared = pending.result()
            if i + 1 < len(todo):
                pending = pool.submit(dd.prepare, todo[i + 1][1])
            features = dd.finish(prepared)
            write_features(args.output, name, features.as_dict(), overwrite=args.overwrite, as_half=args.half)
    return 0


def _cmd_match(args: argparse.Namespace) -> int:
    from .features.keypoints import load_image
    from .matching.nearest_neighbor import match_descriptors
    from .matching.verify import estimate_fundamental, estimate_homography

    dd = _extractor(args)
    images = [load_image(p) for p in (args.image1, args.image2)]
    f1, f2 = (dd.extract(img) for img in images)
    matches, distances = match_descriptors(f1.descriptors, f2.descriptors, mutual=True, ratio=args.ratio)
    p1, p2 = f1.keypoints[matches[:, 0]], f2.keypoints[matches[:, 1]]
    estimate = estimate_homography if args.geometry == "homography" else estimate_fundamental
    model, inliers = estimate(p1, p2, threshold_px=args.threshold)
    print(f"keypoints: {len(f1)} / {len(f2)}")
    print(
        f"matches: {len(matches)} (mutual nearest neighbours{'' if args.ratio is None else f', ratio < {args.ratio}'})"
    )
    print(f"inliers: {int(inliers.sum())} ({args.geometry}, {args.threshold:g} px)")
    if model is not None:
        print(f"{args.geometry}:\n{np.array2string(model, precision=6, suppress_small=True)}")
    if args.output:
        import cv2

        from .viz import plot_matches

        color = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in (args.image1, args.image2)]
        plot_matches(*color, f1.keypoints, f2.keypoints, matches, inliers, path=args.output)
        print(f"wrote {args.output}")
    if args.save_matches:
        from .utils import atomic_path

        with atomic_path(args.save_matches) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                keypoints1=f1.keypoints,
                keypoints2=f2.keypoints,
                matches=matches,
                distances=distances,
                inliers=inliers,
                model=model if model is not None else np.full((3, 3), np.nan),
            )
        print(f"wrote {args.save_matches}")
    return 0


def _cmd_colmap(args: argparse.Namespace) -> int:
    from itertools import combinations

    from tqdm.auto import tqdm

    from .io.colmap import export_to_colmap
    from .matching.nearest_neighbor import match_descriptors
    from .matching.verify import estimate_fundamental

    dd = _extractor(args)
    images = list_images([args.image_dir])
    features = {}
    for name, path in tqdm(images, desc="describe", unit="img"):
        f = dd.extract(path)
        features[name] = {"keypoints": f.keypoints, "descriptors": f.descriptors, "image_size": f.image_size}
    matches, masks = {}, {}
    for a, b in tqdm(list(combinations(features, 2)), desc="match", unit="pair"):
        m, _ = match_descriptors(features[a]["descriptors"], features[b]["descriptors"], mutual=True, ratio=args.ratio)
        _, inliers = estimate_fundamental(features[a]["keypoints"][m[:, 0]], features[b]["keypoints"][m[:, 1]])
        matches[(a, b)], masks[(a, b)] = m, inliers
    export_to_colmap(
        args.database, args.image_dir, features, matches, verified=True, inlier_masks=masks, overwrite=args.overwrite
    )
    verified = sum(int(v.sum()) for v in masks.values())
    print(f"wrote {args.database}: {len(features)} images, {len(matches)} pairs, {verified} verified matches")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .eval.homography import Method, evaluate_sequences, format_table, plot_results
    from .utils import atomic_path

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    options = {"region_scale": args.region_scale, "blur_sigma": args.blur_sigma}
    methods = [Method.parse(m, **options) for m in args.model]
    report: dict = {"datasets": args.dataset, "methods": args.model}
    lines = [f"# deepdesc evaluate\n\ndatasets: {', '.join(args.dataset)}\n"]
    sequence_dirs: list[Path] = []
    for spec in args.dataset:
        kind, _, location = spec.partition(":")
        root = Path(location)
        if kind in ("oxford", "hpatches-seq", "sequences"):
            found = [root] if any(root.glob("H*")) else sorted(p for p in root.iterdir() if p.is_dir())
            sequence_dirs += found
        elif kind == "phototour":
            from .datasets.phototour import evaluate_phototour

            for m in args.model:
                result = evaluate_phototour(m, root)
                report.setdefault("phototour", {})[m] = result
                lines.append(f"phototour {root.name} {m}: FPR95 {result['fpr95']:.4f}, PR AUC {result['pr_auc']:.4f}")
        elif kind == "hpatches":
            from .datasets.hpatches import HPatches, matching_task

            data = HPatches(root)
            for m in args.model:
                result = matching_task(data.describe(m))
                report.setdefault("hpatches_matching", {})[m] = result
                scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("easy", "hard", "tough", "mean") if k in result)
                lines.append(f"HPatches matching mAP {m}: {scores}")
        else:
            raise ValueError(f"unknown dataset kind {kind!r}; use oxford:, hpatches-seq:, phototour: or hpatches:")
    if sequence_dirs:
        result = evaluate_sequences(
            sequence_dirs,
            methods,
            num_keypoints=args.num_keypoints,
            protocols=args.protocol.split(","),
            cache_dir=out / "cache",
        )
        report["sequences"] = result
        for metric in (
            "precision@1",
            "h_acc@1",
            "h_acc@3",
            "h_acc@5",
            "mma@3",
            "matching_score",
            "corner_error_median",
        ):
            if any(metric in v.get("[all]", {}) for v in result["summary"].values()):
                lines.append(f"\n{format_table(result['summary'], metric)}\n")
        plot_results(result["summary"], out)
    table = "\n".join(lines) + "\n"
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(table)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float))
    print(table)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .hub.registry import load_model
    from .nn.export import export_onnx

    path = export_onnx(load_model(args.model, device="cpu"), args.output, opset=args.opset)
    print(f"wrote {path}")
    return 0


def _add_extractor_args(parser: argparse.ArgumentParser) -> None:
    _add_model_arg(parser)
    parser.add_argument("--max-keypoints", type=int, default=2000)
    parser.add_argument("--upright", action="store_true", help="ignore keypoint orientation")
    parser.add_argument("--region-scale", type=float, help="patch side / keypoint size (default: library default)")
    parser.add_argument("--blur-sigma", type=float, help="extra patch smoothing in px (default: library default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


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
    p.set_defaults(func=_cmd_describe_mat)

    p = sub.add_parser("describe", help="detect and describe images into an hloc-style HDF5 file (resumable)")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="features .h5 file; images already in it are skipped")
    p.add_argument("--half", action="store_true", help="store descriptors as float16")
    p.add_argument("--overwrite", action="store_true", help="describe images already in the file again")
    _add_extractor_args(p)
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
    p.add_argument("--ratio", type=float, default=None)
    p.add_argument("--overwrite", action="store_true")
    _add_extractor_args(p)
    p.set_defaults(func=_cmd_colmap)

    p = sub.add_parser("evaluate", help="benchmark models and SIFT/RootSIFT; writes results.md/json and plots")
    p.add_argument(
        "--dataset",
        action="append",
        required=True,
        help="KIND:PATH with KIND oxford, hpatches-seq (a sequence folder or a folder of them), "
        "phototour (Brown layout) or hpatches (patch release)",
    )
    p.add_argument("--model", action="append", required=True, help="model name/path, sift or rootsift (repeat)")
    p.add_argument("-o", "--output", default="eval", help="output folder")
    p.add_argument("--protocol", default="patch,homography", help="patch, homography or both (comma separated)")
    p.add_argument("--num-keypoints", type=int, default=1000)
    p.add_argument("--region-scale", type=float)
    p.add_argument("--blur-sigma", type=float)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export a model for use without Python")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    _add_model_arg(p)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="train a descriptor (see deepdesc/train.py and configs/)")
    p.add_argument("--config", help="TOML or YAML config: preset = 'paper'|'hardnet' plus overriding tables")
    p.add_argument("--resume", action="store_true", help="continue the run in run.out_dir from last.pt")
    p.add_argument(
        "--set", action="append", metavar="TABLE.KEY=VALUE", help="override a config value, e.g. optim.lr=0.001"
    )
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, RuntimeError, OSError, ArithmeticError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"deepdesc {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
