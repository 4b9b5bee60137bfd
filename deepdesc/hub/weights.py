"""Model files: import of the original Torch7 models and the project's safetensors format.

A safetensors file holds a network's state dict (:class:`~deepdesc.nn.cnn3.DeepDescNet`,
:class:`~deepdesc.nn.compact.CompactNet` or :class:`~deepdesc.nn.tfeat.TFeatNet`, by the config's ``arch``)
plus string metadata: ``format`` (``deepdesc``), ``config`` (JSON of the model conf), ``lp_scales`` (CNN3
only), ``normalisation``, ``provenance``, ``training_data`` and ``license``. Both readers are safe: no
code runs, and nothing a file merely claims is allocated. :func:`load_safetensors` reads the
header (bounded), checks the architecture metadata's types and bounds, and checks every tensor's
declared dtype, shape and byte range against what that architecture implies, all before it reads
a tensor or builds the network; then the weights must be finite.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelFormatError, T7FormatError
from ..nn.base import PATCH_SIZE, DescriptorNet
from ..nn.cnn3 import DeepDescNet
from ..nn.compact import conv_layout
from ..nn.factory import ARCHS, DEFAULT_ARCH
from ..nn.layers import INPUT_NORMS
from ..nn.tfeat import tfeat_shapes
from ..utils import atomic_path
from .t7 import TorchObject, read_t7

__all__ = ["ModelFormatError", "load_safetensors", "load_t7", "save_safetensors"]

FORMAT_TAG = "deepdesc"

# Bounds on what a safetensors model file may claim (DeepDesc models are about 1 MB).
MAX_HEADER_BYTES = 16 * 2**20
MAX_FILE_BYTES = 2**31
MAX_CHANNELS = 4096
MAX_KERNEL = PATCH_SIZE
MAX_WIDTH = MAX_CHANNELS // 4  # a compact net's widest layers have 4 x width channels
_FLOAT_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
_COUNTER = "num_batches_tracked"  # BatchNorm's int64 scalar, the one integer tensor


def _seq(obj: Any) -> list:
    """The ``modules`` list of a Torch7 container, in order."""
    modules = obj.get("modules") if isinstance(obj, TorchObject) else None
    if not isinstance(modules, dict) or not all(isinstance(k, float) for k in modules):
        raise KeyError("container without a modules list")
    return [modules[k] for k in sorted(modules)]


def _num(module: TorchObject, key: str) -> float:
    value = module.get(key)
    if not isinstance(value, float):
        raise KeyError(f"{module.class_name} has no number '{key}'")
    return value


def _array(module: TorchObject, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    value = module.get(key)
    if not isinstance(value, np.ndarray) or value.shape != shape:
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise KeyError(f"{module.class_name}.{key} should be {shape}, got {got}")
    if not np.isfinite(value).all():
        raise KeyError(f"{module.class_name}.{key} holds NaN or inf")
    return torch.from_numpy(value.astype(np.float32))


def _expect(module: Any, class_name: str) -> TorchObject:
    if not isinstance(module, TorchObject) or module.class_name != class_name:
        got = module.class_name if isinstance(module, TorchObject) else type(module).__name__
        raise KeyError(f"expected {class_name}, found {got}")
    return module


def _load_conv(module: Any, conv: torch.nn.Conv2d) -> None:
    m = _expect(module, "nn.SpatialConvolution")
    cout, cin, kh, kw = conv.weight.shape
    geometry = {k: _num(m, k) for k in ("nInputPlane", "nOutputPlane", "kW", "kH", "dW", "dH")}
    expected = {"nInputPlane": cin, "nOutputPlane": cout, "kW": kw, "kH": kh, "dW": 1, "dH": 1}
    pads = (m.get("padW", 0.0), m.get("padH", 0.0))
    if geometry != expected or pads != (0.0, 0.0):
        raise KeyError(f"SpatialConvolution {geometry} pad {pads}, expected {expected} pad (0, 0)")
    weight = m.get("weight")
    if isinstance(weight, np.ndarray) and weight.shape == (cout, cin * kh * kw):
        weight = weight.reshape(cout, cin, kh, kw)  # older nn stored 2-D weights
        m.fields["weight"] = weight
    conv.weight.data.copy_(_array(m, "weight", (cout, cin, kh, kw)))
    conv.bias.data.copy_(_array(m, "bias", (cout,)))


def _load_lppool(module: Any, pool: Any) -> None:
    m = _expect(module, "nn.SpatialLPPooling")
    k = pool.kernel_size
    parts = _seq(m)
    if len(parts) != 4:
        raise KeyError(f"SpatialLPPooling with {len(parts)} modules, expected 4")
    square, avg, mul, sqrt = parts
    _expect(square, "nn.Square")
    _expect(avg, "nn.SpatialAveragePooling")
    geometry = tuple(_num(avg, key) for key in ("kW", "kH", "dW", "dH"))
    if geometry != (k, k, k, k) or avg.get("padW", 0.0) or avg.get("padH", 0.0) or avg.get("ceil_mode"):
        raise KeyError(f"SpatialAveragePooling {geometry}, expected non-overlapping {k}x{k}")
    # Saved models without 'divide' predate it: their average pooling summed the window.
    divide = avg.get("divide", False)
    scale = _num(_expect(mul, "nn.MulConstant"), "constant_scalar")
    if _num(_expect(sqrt, "nn.Sqrt"), "eps") != 0.0:
        raise KeyError("nn.Sqrt with a non-zero eps is not supported")
    pool.scale = scale if divide else scale * k * k


def _load_subnorm(module: Any, norm: Any) -> None:
    m = _expect(module, "nn.SpatialSubtractiveNormalization")
    channels = norm.weight.shape[1]
    if _num(m, "nInputPlane") != channels:
        raise KeyError(f"SpatialSubtractiveNormalization over {_num(m, 'nInputPlane')} planes, expected {channels}")
    parts = _seq(_expect(m.get("meanestimator"), "nn.Sequential"))
    if len(parts) != 3:
        raise KeyError(f"mean estimator with {len(parts)} modules, expected 3")
    pad, conv, replicate = parts
    _expect(pad, "nn.SpatialZeroPadding")
    _expect(replicate, "nn.Replicate")
    kh, kw = norm.weight.shape[2:]
    pads = tuple(_num(pad, key) for key in ("pad_l", "pad_r", "pad_t", "pad_b"))
    if pads != (kw // 2, kw // 2, kh // 2, kh // 2):
        raise KeyError(f"SpatialZeroPadding {pads} does not match a {kh}x{kw} kernel")
    weight = _array(_expect(conv, "nn.SpatialConvolution"), "weight", (1, channels, kh, kw))
    if conv.get("bias") is not None and np.any(conv["bias"] != 0):
        raise KeyError("subtractive normalisation mean estimator with a non-zero bias")
    if abs(float(weight.double().sum()) - 1.0) > 1e-4:
        raise KeyError(f"subtractive normalisation kernel sums to {float(weight.sum())}, expected 1")
    norm.weight.copy_(weight)


def load_t7(path: str | os.PathLike) -> DeepDescNet:
    """Load an original DeepDesc Torch7 model (``CNN3_*.t7``) into a :class:`DeepDescNet`.

    The file must hold a table ``{desc=nn.Sequential, mean=1x64x64, std=1x64x64}`` with the
    CNN3 structure; every module type, geometry and tensor shape is checked.
    """
    path = Path(path)
    try:
        tree = read_t7(path)
    except T7FormatError as exc:
        raise ModelFormatError(str(exc)) from None
    try:
        if not isinstance(tree, dict) or not {"desc", "mean", "std"} <= set(tree):
            raise KeyError("top level should be a table with 'desc', 'mean' and 'std'")
        layers = _seq(_expect(tree["desc"], "nn.Sequential"))
        names = [m.class_name if isinstance(m, TorchObject) else type(m).__name__ for m in layers]
        expected = ["nn.SpatialConvolution", "nn.Tanh", "nn.SpatialLPPooling", "nn.SpatialSubtractiveNormalization"] * 2
        expected += ["nn.SpatialConvolution", "nn.Tanh", "nn.SpatialLPPooling", "nn.Reshape"]
        if names != expected:
            raise KeyError(f"network is {names}, expected the CNN3 layout {expected}")
        # The original models have one fixed architecture: the network is the default CNN3
        # (about 1 MB), and every tensor of the file must match its shapes exactly.
        model = DeepDescNet()
        with torch.no_grad():
            _load_conv(layers[0], model.conv1)
            _load_lppool(layers[2], model.pool1)
            _load_subnorm(layers[3], model.norm1)
            _load_conv(layers[4], model.conv2)
            _load_lppool(layers[6], model.pool2)
            _load_subnorm(layers[7], model.norm2)
            _load_conv(layers[8], model.conv3)
            _load_lppool(layers[10], model.pool3)
            reshape = layers[11]
            size = reshape.get("size")
            if not isinstance(size, np.ndarray) or size.tolist() != [model.descriptor_size]:
                raise KeyError(f"nn.Reshape to {size}, expected [{model.descriptor_size}]")
            mean = tree["mean"]
            std = tree["std"]
            for key, value in (("mean", mean), ("std", std)):
                if not isinstance(value, np.ndarray) or value.shape != (1, 64, 64):
                    got = getattr(value, "shape", type(value).__name__)
                    raise KeyError(f"'{key}' should be a 1x64x64 tensor, got {got}")
            if not np.isfinite(mean).all() or not (np.isfinite(std).all() and (std > 0).all()):
                raise KeyError("'mean'/'std' maps hold NaN/inf or a non-positive std")
            model.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            model.std.copy_(torch.from_numpy(std.astype(np.float32)))
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        problem = exc.args[0] if exc.args else type(exc).__name__
        raise ModelFormatError(f"{path}: unexpected model structure: {problem}") from None
    model.info = {"source": path.name, "normalisation": "pixel mean/std maps (original)"}
    return model.eval()


def save_safetensors(
    model: DescriptorNet, path: str | os.PathLike, metadata: dict[str, str] | None = None, half: bool = False
) -> None:
    """Write ``model`` to ``path`` (atomically) as safetensors with its config and ``metadata``.

    ``half`` stores the floating-point tensors as float16 (half the file; loading casts them back to float32).
    """
    from safetensors.torch import save_file

    meta = {**model.info, **(metadata or {})}
    meta.update({"format": FORMAT_TAG, "config": json.dumps(model.conf)})
    meta.pop("lp_scales", None)
    if isinstance(model, DeepDescNet):
        meta["lp_scales"] = json.dumps([model.pool1.scale, model.pool2.scale, model.pool3.scale])
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})


def _show(value: Any, limit: int = 80) -> str:
    """``value`` as JSON, shortened to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A JSON number that is a finite float (huge integers are not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


class _Header:
    """A safetensors file's parsed header: string metadata and tensor entries, sizes checked."""

    def __init__(self, path: Path, metadata: dict[str, str], entries: dict[str, dict], data_bytes: int):
        self.path = path
        self.metadata = metadata
        self.entries = entries  # name -> {"dtype": str, "shape": [int], "data_offsets": [int, int]}
        self.data_bytes = data_bytes  # bytes after the header

    def fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {problem}")


def _read_header(path: Path) -> _Header:
    """Parse and structurally check the header of safetensors file ``path`` (reads only the header)."""

    def fail(problem: str) -> ModelFormatError:
        return ModelFormatError(f"{path}: {problem}")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise fail(f"not a safetensors file: too short ({size} bytes; expected an 8-byte header length first)")
            if size > MAX_FILE_BYTES:
                raise fail(f"file of {size} bytes is too large for a DeepDesc model (limit {MAX_FILE_BYTES})")
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER_BYTES:
                raise fail(
                    f"not a safetensors file, or a corrupt one: header of {n} bytes "
                    f"(expected at most {MAX_HEADER_BYTES})"
                )
            if n > size - 8:
                raise fail(f"truncated: header of {n} bytes, but only {size - 8} bytes follow its length")
            raw = f.read(n)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file not found") from None
    except OSError as exc:
        raise fail(f"cannot read the file ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("not a safetensors file: its header is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise fail(f"not a safetensors file: its header is not valid JSON ({problem})") from None
    if not isinstance(header, dict):
        raise fail(f"not a safetensors file: its header is {_show(header, 40)}, expected a JSON object")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail(f"'__metadata__' is {_show(metadata)}; expected a JSON object of strings")
    for name, entry in header.items():
        where = f"tensor '{name}'"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise fail(f"{where}: header entry {_show(entry)}; expected an object with dtype, shape, data_offsets")
        if not isinstance(entry["dtype"], str):
            raise fail(f'{where}: dtype {_show(entry["dtype"])}; expected a safetensors dtype name such as "F32"')
        shape = entry["shape"]
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_int(d) and d >= 0 for d in shape)):
            raise fail(f"{where}: shape {_show(shape)}; expected a list of at most 8 non-negative integers")
        offsets = entry["data_offsets"]
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise fail(f"{where}: data_offsets {_show(offsets)}; expected [begin, end] with 0 <= begin <= end")
    return _Header(path, metadata, header, size - 8 - n)


def _check_config(h: _Header) -> dict[str, Any]:
    """The model conf of the metadata, with defaults for keys older files lack; types and bounds checked."""
    if "config" not in h.metadata:
        raise h.fail("metadata has no 'config'; expected the model's architecture as a JSON object")
    try:
        conf = json.loads(h.metadata["config"])
    except (ValueError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise h.fail(
            f"metadata 'config' is not valid JSON ({problem}); expected a JSON object of model settings"
        ) from None
    if not isinstance(conf, dict):
        raise h.fail(f"metadata 'config' is {_show(conf)}; expected a JSON object of model settings")
    arch = conf.get("arch", DEFAULT_ARCH)  # files from before "arch" existed are CNN3 ones
    if not isinstance(arch, str) or arch not in ARCHS:
        known = " or ".join(json.dumps(a) for a in ARCHS)
        raise h.fail(f"metadata 'config': 'arch' is {_show(arch)}; expected {known}")
    defaults = ARCHS[arch].default_conf
    unknown = sorted(set(conf) - set(defaults))
    if unknown:
        raise h.fail(
            f"metadata 'config' has unknown keys {unknown} for arch {json.dumps(arch)}; "
            f"expected only {', '.join(sorted(defaults))}"
        )
    conf = {**copy.deepcopy(defaults), **conf}

    def bad(key: str, expected: str) -> ModelFormatError:
        return h.fail(f"metadata 'config': '{key}' is {_show(conf[key])}; expected {expected}")

    if not isinstance(conf["input_norm"], str) or conf["input_norm"] not in INPUT_NORMS:
        raise bad("input_norm", " or ".join(json.dumps(m) for m in INPUT_NORMS))
    if not isinstance(conf["l2_normalize"], bool):
        raise bad("l2_normalize", "true or false")
    scale, sigma = conf["region_scale"], conf["blur_sigma"]
    if scale is not None and not (_is_number(scale) and scale > 0):
        raise bad("region_scale", "null or a positive finite number")
    if sigma is not None and not (_is_number(sigma) and sigma >= 0):
        raise bad("blur_sigma", "null or a finite number >= 0")
    if arch == "compact":
        if not (_is_int(conf["width"]) and 1 <= conf["width"] <= MAX_WIDTH):
            raise bad("width", f"an integer in 1..{MAX_WIDTH}")
        if not (_is_number(conf["dropout"]) and 0 <= conf["dropout"] < 1):
            raise bad("dropout", "a number in [0, 1)")
        return conf
    if arch == "tfeat":  # fixed layer sizes: nothing else to check
        return conf
    for key, top in (("channels", MAX_CHANNELS), ("kernel_sizes", MAX_KERNEL), ("pool_sizes", MAX_KERNEL)):
        value = conf[key]
        if not (isinstance(value, list) and len(value) == 3 and all(_is_int(v) and 1 <= v <= top for v in value)):
            raise bad(key, f"a list of 3 integers in 1..{top}")
    k = conf["norm_kernel_size"]
    if not (_is_int(k) and 1 <= k < MAX_KERNEL and k % 2 == 1):
        raise bad("norm_kernel_size", f"an odd integer in 1..{MAX_KERNEL - 1}")
    kernels, pools = conf["kernel_sizes"], conf["pool_sizes"]
    layers = f"kernel_sizes {kernels} with pool_sizes {pools}"
    example = "e.g. kernel_sizes [7, 6, 5] with pool_sizes [2, 3, 4]"
    size = PATCH_SIZE
    for i, (k, p) in enumerate(zip(kernels, pools), 1):
        if size - k + 1 < p:
            raise h.fail(
                f"metadata 'config': {layers} do not fit a {PATCH_SIZE}x{PATCH_SIZE} patch (layer {i}: a {k}x{k} "
                f"convolution then {p}x{p} pooling of a {size}x{size} map); expected sizes that reduce "
                f"{PATCH_SIZE}x{PATCH_SIZE} to 1x1, {example}"
            )
        size = (size - k + 1) // p
    if size != 1:
        raise h.fail(
            f"metadata 'config': {layers} reduce a {PATCH_SIZE}x{PATCH_SIZE} patch to {size}x{size}; "
            f"expected 1x1, {example}"
        )
    return conf


def _check_scales(h: _Header, conf: dict[str, Any]) -> list[float] | None:
    if "lp_scales" not in h.metadata:
        return None
    if conf["arch"] != "cnn3":
        raise h.fail(
            f"metadata 'lp_scales' is set, but arch {json.dumps(conf['arch'])} has no LP pooling; "
            'expected it only with arch "cnn3"'
        )
    try:
        scales = json.loads(h.metadata["lp_scales"])
    except (ValueError, RecursionError):
        scales = h.metadata["lp_scales"]
    if not (isinstance(scales, list) and len(scales) == 3 and all(_is_number(s) and s > 0 for s in scales)):
        raise h.fail(f"metadata 'lp_scales' is {_show(scales)}; expected a JSON list of 3 positive finite numbers")
    return [float(s) for s in scales]


def _expected_shapes(conf: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of the network ``conf`` describes, computed without building it."""
    p = PATCH_SIZE
    if conf.get("arch", DEFAULT_ARCH) == "compact":
        shapes: dict[str, tuple[int, ...]] = {"mean": (1, p, p), "std": (1, p, p)}
        for i, (cin, cout, k, _, _) in enumerate(conv_layout(conf["width"]), 1):
            shapes[f"conv{i}.weight"] = (cout, cin, k, k)
            shapes.update({f"bn{i}.running_mean": (cout,), f"bn{i}.running_var": (cout,), f"bn{i}.{_COUNTER}": ()})
        return shapes
    if conf.get("arch", DEFAULT_ARCH) == "tfeat":
        return {"mean": (1, p, p), "std": (1, p, p), **tfeat_shapes()}
    c1, c2, c3 = conf["channels"]
    k1, k2, k3 = conf["kernel_sizes"]
    n = conf["norm_kernel_size"]
    return {
        "mean": (1, p, p),
        "std": (1, p, p),
        "conv1.weight": (c1, 1, k1, k1),
        "conv1.bias": (c1,),
        "norm1.weight": (1, c1, n, n),
        "conv2.weight": (c2, c1, k2, k2),
        "conv2.bias": (c2,),
        "norm2.weight": (1, c2, n, n),
        "conv3.weight": (c3, c2, k3, k3),
        "conv3.bias": (c3,),
    }


def _check_tensors(h: _Header, conf: dict[str, Any]) -> None:
    """Every tensor the architecture needs, and nothing else, with its shape and packed byte range."""
    expected = _expected_shapes(conf)
    missing, extra = sorted(set(expected) - set(h.entries)), sorted(set(h.entries) - set(expected))
    if missing or extra:
        raise h.fail(
            f"tensors do not match the metadata config: missing {missing}, unexpected {extra}; "
            f"expected exactly {sorted(expected)}"
        )
    keys = {"compact": ("width",), "tfeat": ()}.get(conf["arch"], ("channels", "kernel_sizes", "norm_kernel_size"))
    arch = ", ".join(f"{key} {conf[key]}" for key in ("arch", *keys))
    spans = []
    for name in sorted(expected):
        entry = h.entries[name]
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        if name.endswith(_COUNTER):
            if dtype != "I64":
                raise h.fail(f"tensor '{name}' has dtype {dtype}; expected I64 (BatchNorm's batch counter)")
            itemsize = 8
        elif dtype not in _FLOAT_ITEMSIZE:
            raise h.fail(f"tensor '{name}' has dtype {dtype}; expected F32 (or F16, BF16, F64)")
        else:
            itemsize = _FLOAT_ITEMSIZE[dtype]
        if shape != expected[name]:
            raise h.fail(
                f"tensor '{name}' has shape {shape}, but the metadata config ({arch}) implies {expected[name]}"
            )
        nbytes = math.prod(shape) * itemsize
        if end - begin != nbytes:
            raise h.fail(
                f"tensor '{name}': data_offsets [{begin}, {end}] hold {end - begin} bytes; "
                f"expected {nbytes} bytes for shape {shape} {dtype}"
            )
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise h.fail(f"tensor '{n1}' bytes [{b1}, {e1}] overlap tensor '{n0}' bytes [{b0}, {e0}]")
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise h.fail(f"data bytes [{position}, {begin}) before tensor '{name}' belong to no tensor")
        position = end
    if position > h.data_bytes:
        raise h.fail(f"truncated: the tensors need {position} bytes of data, but only {h.data_bytes} follow the header")
    if position < h.data_bytes:
        raise h.fail(f"{h.data_bytes - position} bytes after the last tensor; expected the file to end there")


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, from its header alone.

    Raises :class:`FileNotFoundError` if there is no file, :class:`ModelFormatError` (naming the
    file) if its header is not a well-formed, bounded safetensors header.
    """
    return dict(_read_header(Path(path)).metadata)


def load_safetensors(path: str | os.PathLike) -> DescriptorNet:
    """Load a model written by :func:`save_safetensors`.

    Raises :class:`ModelFormatError`, naming the file and the offending key or tensor, when the
    header, the architecture metadata or a tensor's dtype, shape, byte range or values (NaN, inf)
    are not what a DeepDesc model can be; these checks precede any allocation the file asks for.
    """
    from safetensors.torch import load_file

    path = Path(path)
    h = _read_header(path)
    if h.metadata.get("format") != FORMAT_TAG:
        raise h.fail(f"safetensors file without deepdesc metadata (format={h.metadata.get('format')!r})")
    conf = _check_config(h)
    scales = _check_scales(h, conf)
    _check_tensors(h, conf)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise h.fail(f"not a readable safetensors file ({exc})") from None
    for name in sorted(tensors):
        if not torch.isfinite(tensors[name]).all():
            raise h.fail(f"tensor '{name}' holds NaN or inf; expected finite values")
    if conf["input_norm"] == "pixel" and not (tensors["std"] > 0).all():
        raise h.fail("tensor 'std' has values <= 0; expected a positive per-pixel std map for input_norm \"pixel\"")
    for name in sorted(tensors):
        if name.endswith(("running_var", _COUNTER)) and not (tensors[name] >= 0).all():
            raise h.fail(f"tensor '{name}' has negative values; expected values >= 0")
    try:
        model = ARCHS[conf["arch"]](conf)
        model.load_state_dict(tensors)
    except (ValueError, RuntimeError) as exc:  # not expected after the checks above
        raise h.fail(f"cannot build the model its metadata describes ({exc})") from None
    if scales is not None and isinstance(model, DeepDescNet):
        model.pool1.scale, model.pool2.scale, model.pool3.scale = scales
    model.info = {k: v for k, v in h.metadata.items() if k not in ("format", "config", "lp_scales")}
    return model.eval()
