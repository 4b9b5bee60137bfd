"""The ``deepdesc`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from .registry import MODELS, cache_dir, cached

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
    from .registry import MODELS
    from .weights import load_t7, save_safetensors

    model = load_t7(args.input)
    meta = {"provenance": f"converted from {Path(args.input).name} by deepdesc convert"}
    known = {info.filename: info for info in MODELS.values()}
    info = known.get(Path(args.input).name)
    if info is not None:
        meta.update(name=info.name, training_data=info.trained_on, license=info.license, source_url=info.url or "")
    else:
        meta.update(training_data="unknown", license="unknown (check the source of the .t7 file)")
    save_safetensors(model, args.output, meta)
    print(f"wrote {args.output} ({meta['license']})")
    return 0


def _cmd_describe_mat(args: argparse.Namespace) -> int:
    from .matlab import describe_mat

    n = describe_mat(args.input, args.output, model=args.model, layout=args.layout)
    print(f"described {n} patches -> {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    summary = train(args.config, resume=args.resume)
    print(json.dumps(summary))
    return 130 if summary["interrupted"] else 0


def _add_model_arg(parser: argparse.ArgumentParser, default: str = "default") -> None:
    parser.add_argument("--model", default=default, help="registry name (deepdesc models) or .t7/.safetensors path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepdesc", description="DeepDesc learned local feature descriptors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the named pretrained models, their cache status and licences")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("convert", help="convert an original Torch7 model to safetensors")
    p.add_argument("input", help="CNN3_*.t7 file of the original release")
    p.add_argument("output", help="output .safetensors file")
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

    p = sub.add_parser("train", help="train a descriptor (see deepdesc/train.py and configs/)")
    p.add_argument("--config", help="TOML config: preset = 'paper'|'hardnet' plus overriding tables")
    p.add_argument("--resume", action="store_true", help="continue the run in run.out_dir from last.pt")
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
