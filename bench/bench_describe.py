"""Descriptor throughput: naive eager DeepDescNet vs describe() vs the fast path vs onnxruntime, and the
compact network (arch "compact") and TFeat (arch "tfeat") next to them.

Usage: ``.venv/bin/python bench/bench_describe.py [--patches 512] [--repeats 5] [--threads N]
[--device cpu|cuda] [--accuracy] [--compact-widths 16,32] [--tfeat] [--checks]``

All variants run in one process on the same random 0..255 patches, interleaved round by round
(so load from other processes hits them alike); the median patches/s over the rounds and the
ratio to the baseline (a: ``model(x)`` on the whole batch, float32 NCHW eager) are printed.
c2 is the fast path without its worker threads (chunks in turn, ops on torch's OpenMP threads).
Model: the original split4 weights from the shared folder, else a randomly initialised net.
``--compact-widths`` (default 16): compact nets of these widths (random weights: the cost does not depend
on them), timed eager and through the fast path (BN folded) in the same rounds; their speed relative to
CNN3's fast fp32 path is printed at the end; ``--tfeat`` adds the TFeat network the same way.
``--accuracy`` also reports, per precision, the max abs descriptor difference and the nearest-
neighbour precision@1 on corresponding patches of the Oxford sequences (img1 -> img2, crops
around SIFT keypoints of img1 and their ground-truth projections).
``--checks`` times only the input checks' share, with the packaged default model on numpy float32 patches as
``extract_patches`` returns them: describe() with the previous three passes over the values (isfinite, min,
max), describe() with its one min/max pass, and describe_extracted() (the image pipeline's path, no pass);
and the compact net's input step: per-patch normalisation then 2x2 pooling (before) against pooling the raw
patch first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import cpu_model, interleaved_times

from deepdesc.features.describe import describe, describe_extracted
from deepdesc.hub.registry import load_model as load_named_model
from deepdesc.nn.base import DescriptorNet
from deepdesc.nn.cnn3 import DeepDescNet
from deepdesc.nn.compact import CompactNet
from deepdesc.nn.fast import FastDescriber
from deepdesc.nn.layers import normalize_patches
from deepdesc.nn.tfeat import TFeatNet
from deepdesc.utils import shared_dir

SPLIT4 = "CNN3_p8_n8_split4_073000.t7"


def load_model() -> tuple[DeepDescNet, str]:
    path = shared_dir() / "models" / "deepdesc-release" / SPLIT4
    if path.exists():
        from deepdesc.hub.weights import load_t7

        return load_t7(path), SPLIT4
    torch.manual_seed(0)
    return DeepDescNet().eval(), "random init (shared model missing)"


def oxford_pairs(sequence: str, n: int = 300) -> tuple[np.ndarray, np.ndarray] | None:
    """64x64 crops around SIFT keypoints of img1 and their ground-truth projections in img2."""
    import cv2

    folder = shared_dir() / "data" / "eval" / "oxford" / sequence
    files = sorted(folder.glob("img1.*")), sorted(folder.glob("img2.*"))
    if not all(files) or not (folder / "H1to2p").exists():
        return None
    im1 = cv2.imread(str(files[0][0]), cv2.IMREAD_GRAYSCALE)
    im2 = cv2.imread(str(files[1][0]), cv2.IMREAD_GRAYSCALE)
    H = np.loadtxt(folder / "H1to2p")
    pts = np.array([k.pt for k in cv2.SIFT_create(nfeatures=3000).detect(im1)], np.float64)
    proj = cv2.perspectiveTransform(pts[None], H)[0]
    inside = np.all((pts > 40) & (pts < np.array(im1.shape[::-1]) - 40), axis=1)
    inside &= np.all((proj > 40) & (proj < np.array(im2.shape[::-1]) - 40), axis=1)
    idx = np.random.default_rng(0).permutation(np.flatnonzero(inside))[:n]

    def crops(im: np.ndarray, points: np.ndarray) -> np.ndarray:
        return np.stack([cv2.getRectSubPix(im, (64, 64), (float(x), float(y))) for x, y in points])[:, None]

    return crops(im1, pts[idx]).astype(np.float32), crops(im2, proj[idx]).astype(np.float32)


def precision_at_1(d1: torch.Tensor, d2: torch.Tensor) -> float:
    nearest = torch.cdist(d1.double(), d2.double()).argmin(dim=1)
    return float((nearest == torch.arange(len(d1), device=nearest.device)).double().mean())


def accuracy_report(model: DeepDescNet, variants: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> None:
    sequences = ("bikes", "boat", "graf", "leuven")
    pairs = {s: p for s in sequences if (p := oxford_pairs(s)) is not None}
    if not pairs:
        print("accuracy: Oxford sequences missing from the shared folder; skipped")
        return
    device = model.device
    print(f"\naccuracy: precision@1 (img1 -> img2, {sum(len(p[0]) for p in pairs.values())} pairs), max |d - d_fp32|")
    with torch.inference_mode():
        refs = {
            s: (model(torch.from_numpy(a).to(device)), model(torch.from_numpy(b).to(device)))
            for s, (a, b) in pairs.items()
        }
    names = ["model fp32", *variants]
    print(f"{'':22s}" + "".join(f"{s:>9s}" for s in pairs) + f"{'mean':>9s}{'max diff':>11s}")
    for name in names:
        p1s, diff = [], 0.0
        for s, (a, b) in pairs.items():
            if name == "model fp32":
                d1, d2 = refs[s]
            else:
                fn = variants[name]
                d1, d2 = fn(torch.from_numpy(a).to(device)), fn(torch.from_numpy(b).to(device))
                diff = max(diff, float((d1 - refs[s][0]).abs().max()), float((d2 - refs[s][1]).abs().max()))
            p1s.append(100 * precision_at_1(d1, d2))
        row = "".join(f"{p:9.1f}" for p in p1s)
        print(f"{name:22s}{row}{np.mean(p1s):9.2f}{diff:11.2e}")


def checks_report(n: int, repeats: int, device: torch.device) -> None:
    """Patches/s of describe() with the previous checks, with the current ones, and without (library-cut)."""
    model = load_named_model("default", device=str(device))
    x = np.random.default_rng(0).uniform(0, 255, (n, 64, 64)).astype(np.float32)

    def previous() -> object:  # what describe() did before: three passes over every value, then the network
        t = torch.from_numpy(x)
        if not bool(torch.isfinite(t).all()) or float(t.min()) < -1.0 or float(t.max()) > 256.0:
            raise ValueError("bad patches")
        return describe_extracted(x, model=model)

    fast = FastDescriber(model)
    normalise_then_pool = FastDescriber(model)
    net = normalise_then_pool.net  # the compact net's input as it was computed before: normalise, then pool

    def reference_input(p: torch.Tensor) -> torch.Tensor:
        p = F.avg_pool2d(normalize_patches(p.float(), net.conf["input_norm"], net.mean, net.inv_std), 2)
        return p.reshape(p.shape[0], *p.shape[2:], 1).permute(0, 3, 1, 2).to(net.dtype)

    net._pooled_input = reference_input
    xt = torch.from_numpy(x).unsqueeze(1)
    timed: dict[str, Callable[[], object]] = {
        "describe(), 3-pass checks (before)": previous,
        "describe(), 1-pass checks": lambda: describe(x, model=model),
        "describe_extracted(), no scan": lambda: describe_extracted(x, model=model),
        "network, normalise then pool (before)": lambda: normalise_then_pool(xt),
        "network, pool then normalise": lambda: fast(xt),
    }
    np.testing.assert_array_equal(describe(x, model=model), describe_extracted(x, model=model))
    difference = float((fast(xt) - normalise_then_pool(xt)).abs().max())
    for fn in timed.values():
        fn()
    times = interleaved_times(
        timed, repeats, (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    )
    print(f"\ndefault model ({model.info.get('name', '')}), {n} float32 patches, {repeats} rounds; median patches/s:")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:40s}{n / t:9.0f}")
    before, one, none, old_input, new_input = med.values()
    print(f"library path vs describe() before: x{before / none:.3f}; vs today's checks: x{one / none:.3f}")
    gain = old_input / new_input
    print(f"pool then normalise vs normalise then pool: x{gain:.3f} (max |difference| {difference:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--accuracy", action="store_true", help="also measure descriptor differences and precision@1")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--compact-widths", default="16", help="comma-separated compact net widths ('' for none)")
    parser.add_argument("--tfeat", action="store_true", help="also time the TFeat network")
    parser.add_argument("--checks", action="store_true", help="only time the input checks' share (module docs)")
    args = parser.parse_args()
    widths = [int(w) for w in args.compact_widths.split(",") if w.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.checks:
        print(f"cpu: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        checks_report(args.patches, args.repeats, device)
        return
    model, source = load_model()
    model = model.to(device).eval()
    print(f"cpu: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if cuda:
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"model: {source}; {args.patches} patches x {args.repeats} rounds on {device}")

    torch.manual_seed(0)
    x = (torch.rand(args.patches, 1, 64, 64) * 255).round().to(device)
    fast32 = FastDescriber(model, "fp32")
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    variants["fast fp32"] = fast32
    low = "fp16" if cuda else "bf16"
    try:
        variants[f"fast {low}"] = FastDescriber(model, low)
    except ValueError as exc:
        print(f"fast {low}: skipped ({exc})")

    def baseline() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    timed: dict[str, Callable[[], object]] = {
        "a) eager fp32 NCHW": baseline,
        "b) describe()": lambda: describe(x, model=model),
        **{f"{'cd'[i]}) {name}": (lambda f=f: f(x)) for i, (name, f) in enumerate(variants.items())},
    }
    if not cuda:  # the same chunks run one after the other, each op on torch's OpenMP threads
        omp = FastDescriber(model, "fp32", workers=1)
        timed["c2) fast fp32 1 worker"] = lambda: omp(x)
    others: dict[str, Callable[[], DescriptorNet]] = {
        f"compact{w}": (lambda w=w: CompactNet({"width": w})) for w in widths
    }
    if args.tfeat:
        others["tfeat"] = TFeatNet
    other_fast: dict[str, str] = {}
    for label, build in others.items():
        torch.manual_seed(0)
        net = build().to(device).eval()
        print(
            f"{label}: {sum(q.numel() for q in net.parameters()) / 1e6:.2f} M parameters, "
            f"{net.num_flops() / 1e6:.1f} MFLOP/patch (CNN3: {model.num_flops() / 1e6:.1f})"
        )

        def eager(net: DescriptorNet = net) -> torch.Tensor:
            with torch.inference_mode():
                return net(x)

        fast = FastDescriber(net, "fp32")
        timed[f"f) {label} eager"] = eager
        other_fast[label] = f"g) {label} fast fp32"
        timed[other_fast[label]] = lambda f=fast: f(x)
    tmp = tempfile.TemporaryDirectory()
    if not args.no_onnx and not cuda:
        try:
            from deepdesc.nn.export import OnnxDescriber, export_onnx

            onnx_path = export_onnx(model.cpu(), Path(tmp.name) / "deepdesc.onnx")
            ort = OnnxDescriber(onnx_path)
            x_np = x.cpu().numpy()
            timed["e) onnxruntime fp32"] = lambda: ort(x_np)
            variants["onnxruntime fp32"] = lambda t: torch.from_numpy(ort(t.cpu().numpy()))
        except ImportError as exc:
            print(f"onnxruntime: skipped ({exc})")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for fn in timed.values():  # warm-up: allocator, oneDNN primitive caches, cuDNN autotune
        fn()
        fn()
    times = interleaved_times(timed, args.repeats, sync)
    base = args.patches / statistics.median(times["a) eager fp32 NCHW"])
    print(f"\n{'variant':24s}{'patches/s':>11s}{'x base':>8s}   (median; best)")
    for name, ts in times.items():
        rate = args.patches / statistics.median(ts)
        print(f"{name:24s}{rate:11.0f}{rate / base:8.2f}   ({args.patches / min(ts):.0f})")
    if other_fast:
        cnn3 = statistics.median(times["c) fast fp32"])
        ratios = ", ".join(f"{k} x{cnn3 / statistics.median(times[name]):.2f}" for k, name in other_fast.items())
        print(f"\nfast fp32 vs CNN3 fast fp32 (patches/s ratio, median): {ratios}")
    if args.accuracy:
        accuracy_report(model, variants)
    tmp.cleanup()


if __name__ == "__main__":
    main()
