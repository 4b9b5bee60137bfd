"""Fast inference for the networks (:class:`~deepdesc.nn.cnn3.DeepDescNet`, :class:`~deepdesc.nn.compact.CompactNet`,
:class:`~deepdesc.nn.tfeat.TFeatNet`): same descriptors, less time.

:class:`FastDescriber` prepares a model once and then describes batches of raw 0..255 patches::

    fast = FastDescriber(model)                  # float32, max abs difference ~1e-6 vs model(x)
    desc = fast(x)                               # (B, 1, 64, 64) float32 -> (B, 128) float32

What makes it faster than ``model(x)`` on a CPU (measured by ``bench/bench_describe.py``):

* Small chunks (``batch_size`` 32 on CPU for CNN3): the first layer's maps of a 512-patch batch are
  220 MB, so every element-wise op streams from DRAM; 32 patches (14 MB) stay in cache. The compact
  net's maps are 8x smaller per patch: chunks of 128.
* Chunks in parallel on a pool of ``torch.get_num_threads()`` Python threads, each running its
  ops single-threaded (ATen releases the GIL), instead of every op split over OpenMP threads:
  as fast on idle cores, and 4-5x faster when another process competes for a core (with ~30
  small parallel regions per chunk, each OpenMP barrier then waits for a descheduled thread).
* channels-last (NHWC) layout end to end: oneDNN's convolutions and ``avg_pool2d`` are much
  faster on NHWC here (conv2 ~220 vs ~160 GFLOP/s, 2x2 pooling ~9x).
* ``tanh(y) = 2 * sigmoid(2 y) - 1``: ATen's sigmoid kernel is ~6x faster than its tanh on this
  CPU; the factor 2 is folded (exactly) into the convolution weights, and the L2 pooling of
  ``tanh`` becomes ``2 * sqrt(sum((s - 1/2)^2))`` over each window with ``s = sigmoid(2 y)``.
  All in place, on buffers the pipeline owns.
* The 2x2 average pooling of the compact net's and TFeat's 64x64 input as four strided adds (the same
  values as ``avg_pool2d``, whose kernel is slow on single-channel maps: ~3x here).
* The compact net's ReLUs fused into its convolutions (a oneDNN post-op: the values are the same, the
  map is written once), ~7 %.
* Subtractive normalisation as one channel sum plus a single-channel 5x5 convolution (its
  kernel is the same for every channel), divided by a precomputed border coefficient.

``precision``: ``"fp32"`` (default, exact to float rounding), ``"bf16"`` (CPU: conv2 and conv3
in bfloat16, the rest in float32) or ``"fp16"`` (CUDA: the whole network in half precision).

The prepared network is pluggable (:func:`prepare_net`): :class:`PreparedNet` for CNN3 (above),
:class:`PreparedCompactNet` for the compact network (BatchNorm folded exactly into the convolutions,
ReLU in place, channels-last; ``bf16``/``fp16`` run every convolution in that type), :class:`PreparedTFeatNet`
for TFeat (max pooling before the first tanh, which is exact and 4x fewer tanh; channels-last with the linear
layer's weights permuted to match; ``bf16``/``fp16`` as for the compact net). The chunking and threading of
:class:`FastDescriber` are the same for all.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref

import torch
import torch.nn.functional as F

from ..utils import thread_pool
from .base import PATCH_SIZE, DescriptorNet
from .cnn3 import DeepDescNet
from .compact import POOLED_SIZE, CompactNet
from .layers import (
    border_coefficient,
    fold_batch_norm,
    normalize_patches,
    shared_kernel,
    subtractive_norm,
    tanh_l2_pool,
)
from .tfeat import MAP_SIZE, TFeatNet

__all__ = [
    "FastDescriber",
    "PRECISIONS",
    "PreparedCompactNet",
    "PreparedNet",
    "PreparedTFeatNet",
    "chunk_bounds",
    "default_batch_size",
    "fast_describer",
    "prepare_net",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_CL = torch.channels_last
# The network classes with a prepared path (a subclass that overrides forward has none).
_FAMILIES: tuple[type[DescriptorNet], ...] = (DeepDescNet, CompactNet, TFeatNet)
_KNOWN = ", ".join(f.__name__ for f in _FAMILIES)


def default_batch_size(device: torch.device | str, model: DescriptorNet | None = None) -> int:
    """Patches per forward pass (chunk): large on CUDA; on CPU small for CNN3 (cache-resident maps), larger for the
    compact net, whose maps are 8x smaller per patch and which runs ~8 % faster in chunks of 128 than of 32
    (``bench/bench_chunks.py``)."""
    if torch.device(device).type == "cuda":
        return 1024
    return 128 if isinstance(model, CompactNet) else 32


def _check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (half precision is slow on CPU); use 'bf16' or 'fp32'")
    if precision == "bf16" and device.type == "cpu" and not _cpu_has_bf16():
        raise ValueError(
            "precision 'bf16' needs a CPU with AVX-512 BF16 or AMX (it is emulated, hence slow, otherwise)"
        )


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older torch without the probe
        return True


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``size`` covering ``n`` patches, except that a last chunk of
    one patch joins the one before: oneDNN computes a batch of one with other rounding (~1e-6), so without this
    a patch's descriptor would depend on where the chunks fall. With it, it does not (for calls of 2+ patches)."""
    bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _conv_relu_fused(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, stride, padding))`` as one oneDNN primitive (the ReLU applied as the
    convolution writes its output): one pass over the map instead of two. CPU, float32, NHWC."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, [padding, padding], [stride, stride], [1, 1], 1, "relu", [], ""
    )


_FUSED_OK: bool | None = None


def _fused_conv_relu_available() -> bool:
    """Whether :func:`_conv_relu_fused` runs here and gives eager ``conv2d`` + ``relu``'s values (it is a private
    operator of PyTorch's oneDNN build, used by ``torch.compile``; checked once on a small case, else not used)."""
    global _FUSED_OK
    if _FUSED_OK is None:
        try:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(2, 16, 8, 8, generator=gen).contiguous(memory_format=_CL)
            w = torch.randn(8, 16, 3, 3, generator=gen).contiguous(memory_format=_CL)
            b = torch.randn(8, generator=gen)
            got = _conv_relu_fused(x, w, b, 2, 1)
            _FUSED_OK = bool(torch.allclose(got, F.relu(F.conv2d(x, w, b, 2, 1)), atol=1e-5, rtol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            _FUSED_OK = False
    return _FUSED_OK


_WORKER = threading.local()
#: The smallest chunk that FastDescriber cuts to share a call's patches among its workers.
_MIN_SHARED_CHUNK = 16


def _init_worker() -> None:
    torch.set_num_threads(1)  # per thread: each worker runs its chunks single-threaded
    _WORKER.active = True


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide pool of ``workers`` threads with one intra-op thread each."""
    return thread_pool("deepdesc-fast", workers, _init_worker)


class PreparedNet(torch.nn.Module):
    """DeepDescNet's arithmetic with its constants prepared once. (B, 1, 64, 64) 0..255 -> (B, 128) float32.

    The layers are the functions of :mod:`deepdesc.nn.layers`; what differs from ``model.forward`` is
    prepared here, not re-implemented: border coefficients are constants for the fixed 64x64 input, the
    subtractive normalisation's kernel is shared across planes when it is (all Torch7 models), and
    optionally the convolutions run in ``conv_dtypes``, ``tanh`` goes through the sigmoid (``via_sigmoid``,
    the factor 2 folded exactly into the weights), ops run in place (``inplace``, inference only) and the
    maps are channels-last (``channels_last``). :class:`FastDescriber` and the ONNX export both use it.
    """

    def __init__(
        self,
        model: DeepDescNet,
        device: torch.device | str | None = None,
        conv_dtypes: tuple[torch.dtype, torch.dtype, torch.dtype] = (torch.float32,) * 3,
        act_dtype: torch.dtype = torch.float32,
        via_sigmoid: bool = False,
        inplace: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        device = torch.device(device) if device is not None else model.device
        self.conf = dict(model.conf)
        self.act_dtype = act_dtype
        self.via_sigmoid, self.inplace, self.channels_last = via_sigmoid, inplace, channels_last
        layout = _CL if channels_last else torch.contiguous_format
        factor = 2.0 if via_sigmoid else 1.0  # the conv computes 2y so that tanh(y) = 2 sigmoid(2y) - 1
        self.pools: list[tuple[int, float]] = []
        self.has_norm: list[bool] = []
        size = PATCH_SIZE
        stages = ((model.conv1, model.pool1, model.norm1), (model.conv2, model.pool2, model.norm2))
        stages += ((model.conv3, model.pool3, None),)
        with torch.no_grad():
            self.register_buffer("mean", model.mean.detach().to(device, torch.float32).clone())
            self.register_buffer("inv_std", (1.0 / model.std.detach().double()).float().to(device))
            for i, (conv, pool, norm) in enumerate(stages):
                weight = (conv.weight.detach() * factor).to(device=device, dtype=conv_dtypes[i])
                self.register_buffer(f"weight{i}", weight.contiguous(memory_format=layout))
                self.register_buffer(f"bias{i}", (conv.bias.detach() * factor).to(device=device, dtype=conv_dtypes[i]))
                self.pools.append((pool.kernel_size, float(pool.scale)))
                size = (size - conv.kernel_size[0] + 1) // pool.kernel_size
                self.has_norm.append(norm is not None)
                if norm is not None:
                    w = norm.weight.detach().to(device, torch.float32)
                    self.register_buffer(f"norm{i}", shared_kernel(w).to(act_dtype))
                    self.register_buffer(f"inv_coef{i}", (1.0 / border_coefficient(w, size, size)).to(act_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_patches(x.float(), self.conf["input_norm"], self.mean, self.inv_std)
        if self.channels_last:
            # NHWC strides (.contiguous(memory_format=channels_last) is a no-op for one channel, and
            # oneDNN would then produce NCHW maps).
            x = x.reshape(x.shape[0], PATCH_SIZE, PATCH_SIZE, 1).permute(0, 3, 1, 2)
        x = x.to(self.act_dtype)
        for i, (k, scale) in enumerate(self.pools):
            weight = getattr(self, f"weight{i}")
            y = F.conv2d(x.to(weight.dtype), weight, getattr(self, f"bias{i}"))
            y = tanh_l2_pool(y.to(self.act_dtype), k, scale, via_sigmoid=self.via_sigmoid, inplace=self.inplace)
            if self.has_norm[i]:
                y = subtractive_norm(y, getattr(self, f"norm{i}"), getattr(self, f"inv_coef{i}"), inplace=self.inplace)
            x = y
        x = x.flatten(1).float()
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x


def _avg_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` for (B, C, H, W) float maps with even H and W, bit for bit, in a third of the time.

    ATen's pooling kernel is slow on single-channel 64x64 maps; four strided views added in the same order
    and scaled by 1/4 give the same values.
    """
    b, c, h, w = x.shape
    v = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return (v[:, :, :, 0, :, 0] + v[:, :, :, 0, :, 1] + v[:, :, :, 1, :, 0] + v[:, :, :, 1, :, 1]).mul_(0.25)


def _pooled_patch_norm(x: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(normalize_patches(x, "patch"), 2)`` in a third of the time. (B, 1, 64, 64) -> (B, 1, 32, 32).

    The 2x2 average is linear, so the raw patch is pooled first and only a quarter of the values are
    normalised, with the mean and standard deviation of the full patch. The variance is two-pass
    (``sum((x - mean)^2)``): ATen's ``std`` kernel is several times slower on these small rows.
    """
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    var = (flat - mean).square_().sum(dim=1, keepdim=True).div_(flat.shape[1] - 1)
    shape = (x.shape[0], 1, 1, 1)
    return _avg_pool_2x2(x).sub_(mean.view(shape)).div_(var.sqrt_().add_(1.0).view(shape))


class _UniformPrecisionNet(torch.nn.Module):
    """What :class:`PreparedCompactNet` and :class:`PreparedTFeatNet` share: the network's conf, the compute
    ``dtype`` (all layers), the ``inplace`` / ``channels_last`` flags and the float32 input maps."""

    def _setup(
        self, model: DescriptorNet, device: torch.device | str | None, dtype: torch.dtype, inplace: bool, cl: bool
    ) -> tuple[torch.device, torch.memory_format]:
        """Sets those attributes and buffers; returns the device and the weights' memory format."""
        device = torch.device(device) if device is not None else model.device
        self.conf = dict(model.conf)
        self.dtype, self.inplace, self.channels_last = dtype, inplace, cl
        with torch.no_grad():
            self.register_buffer("mean", model.mean.detach().to(device, torch.float32).clone())
            self.register_buffer("inv_std", (1.0 / model.std.detach().double()).float().to(device))
        return device, (_CL if cl else torch.contiguous_format)

    def _pooled_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64) raw intensities -> the normalised, 2x2-average-pooled (B, 1, 32, 32) input in
        ``dtype`` (NHWC strides with ``channels_last``)."""
        x = x.float()
        if self.conf["input_norm"] == "patch":
            x = _pooled_patch_norm(x)
        else:
            x = _avg_pool_2x2(normalize_patches(x, self.conf["input_norm"], self.mean, self.inv_std))
        if self.channels_last:  # NHWC strides for one channel (see PreparedNet.forward)
            x = x.reshape(x.shape[0], POOLED_SIZE, POOLED_SIZE, 1).permute(0, 3, 1, 2)
        return x.to(self.dtype)


class PreparedCompactNet(_UniformPrecisionNet):
    """CompactNet's eval-mode arithmetic, prepared once. (B, 1, 64, 64) 0..255 -> (B, 128) float32.

    Each BatchNorm is folded into the convolution before it (:func:`~deepdesc.nn.layers.fold_batch_norm`,
    float64 then float32), dropout is the identity, so the network is 7 convolutions with biases and 6
    ReLUs. ``dtype``: the convolutions' and activations' type (input normalisation and pooling stay
    float32). ``inplace``: ReLU in place (inference only). ``channels_last``: NHWC maps. With both, in float32
    on a CPU, each ReLU is fused into its convolution (``fused``).
    :class:`FastDescriber` and the ONNX export both use it.
    """

    def __init__(
        self,
        model: CompactNet,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        inplace: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        device, layout = self._setup(model, device, dtype, inplace, channels_last)
        # inference in NHWC float32 on a CPU: each ReLU fused into its convolution (same values, ~7 % faster)
        self.fused = (
            inplace
            and channels_last
            and device.type == "cpu"
            and dtype == torch.float32
            and _fused_conv_relu_available()
        )
        self.geometry: list[tuple[int, int]] = []  # (stride, padding) of each convolution
        with torch.no_grad():
            for i, (conv, bn) in enumerate(model.layers()):
                weight, bias = fold_batch_norm(conv.weight, conv.bias, bn)
                self.register_buffer(f"weight{i}", weight.to(device, dtype).contiguous(memory_format=layout))
                self.register_buffer(f"bias{i}", bias.to(device, dtype))
                self.geometry.append((conv.stride[0], conv.padding[0]))

    _conv_relu = staticmethod(_conv_relu_fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pooled_input(x)
        last = len(self.geometry) - 1
        for i, (stride, padding) in enumerate(self.geometry):
            weight, bias = getattr(self, f"weight{i}"), getattr(self, f"bias{i}")
            if i == last:
                x = F.conv2d(x, weight, bias, stride, padding)
            elif self.fused:
                x = self._conv_relu(x, weight, bias, stride, padding)
            else:
                x = F.conv2d(x, weight, bias, stride, padding)
                x = x.relu_() if self.inplace else F.relu(x)
        x = x.flatten(1).float()
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x


class PreparedTFeatNet(_UniformPrecisionNet):
    """TFeatNet's arithmetic, prepared once. (B, 1, 64, 64) 0..255 -> (B, 128) float32.

    The same layers as ``TFeatNet.forward``, with the first max pooling before its tanh (tanh is
    increasing, so ``max(tanh(y)) = tanh(max(y))``: the same values from a quarter of the tanh work).
    ``dtype``: the convolutions', the linear layer's and the activations' type (input normalisation and
    average pooling stay float32). ``inplace``: tanh in place (inference only). ``channels_last``: NHWC
    maps, and the linear layer's weights permuted from (C, H, W) to (H, W, C) order so that the last map
    flattens without a copy. :class:`FastDescriber` and the ONNX export both use it.
    """

    def __init__(
        self,
        model: TFeatNet,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        inplace: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        device, layout = self._setup(model, device, dtype, inplace, channels_last)
        with torch.no_grad():
            for i, conv in enumerate((model.conv1, model.conv2)):
                weight = conv.weight.detach().to(device, dtype).contiguous(memory_format=layout)
                self.register_buffer(f"weight{i}", weight)
                self.register_buffer(f"bias{i}", conv.bias.detach().to(device, dtype).clone())
            fc = model.fc.weight.detach()  # (128, 4096), inputs in (C, H, W) order
            if channels_last:
                channels = model.conv2.out_channels
                fc = fc.view(-1, channels, MAP_SIZE, MAP_SIZE).permute(0, 2, 3, 1).reshape(fc.shape[0], -1)
            self.register_buffer("fc_weight", fc.to(device, dtype).contiguous())
            self.register_buffer("fc_bias", model.fc.bias.detach().to(device, dtype).clone())

    def _tanh(self, x: torch.Tensor) -> torch.Tensor:
        return x.tanh_() if self.inplace else torch.tanh(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pooled_input(x)
        x = self._tanh(F.max_pool2d(F.conv2d(x, self.weight0, self.bias0), 2))  # (B, 32, 13, 13)
        x = self._tanh(F.conv2d(x, self.weight1, self.bias1))  # (B, 64, 8, 8)
        # (B, 4096) in the order fc_weight expects: a view of NHWC maps when channels_last
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) if self.channels_last else x.flatten(1)
        x = self._tanh(F.linear(x, self.fc_weight, self.fc_bias)).float()  # (B, 128)
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x


def _prepared_family(model: DescriptorNet) -> type | None:
    """The network class whose prepared path computes ``model``'s forward, or None (no such path, or a
    subclass that overrides ``forward``)."""
    for family in _FAMILIES:
        if isinstance(model, family):
            return family if type(model).forward is family.forward else None
    return None


def prepare_net(
    model: DescriptorNet,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    optimized: bool = False,
) -> torch.nn.Module:
    """The prepared, eval-mode module of ``model`` (:class:`PreparedNet` for CNN3, :class:`PreparedCompactNet`
    for the compact net, :class:`PreparedTFeatNet` for TFeat) on ``device`` (default the model's), in ``precision``.

    ``optimized``: the inference-only forms (in place, channels-last, CNN3's sigmoid form of tanh on
    CPU) that :class:`FastDescriber` runs; without it, plain ops (the ONNX export). ``TypeError`` for a
    network without a prepared path.
    """
    device = torch.device(device) if device is not None else model.device
    if isinstance(model, DeepDescNet):
        # Activations: float32, except fp16 on CUDA. Convolutions: bf16 for conv2/conv3 on bf16.
        conv_dtypes = {
            "fp32": (torch.float32,) * 3,
            "bf16": (torch.float32, torch.bfloat16, torch.bfloat16),
            "fp16": (torch.float16,) * 3,
        }[precision]
        return PreparedNet(
            model,
            device,
            conv_dtypes,
            act_dtype=torch.float16 if precision == "fp16" else torch.float32,
            via_sigmoid=optimized and device.type != "cuda",  # on CUDA tanh is as cheap as sigmoid
            inplace=optimized,
            channels_last=optimized,
        )
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if isinstance(model, CompactNet):
        return PreparedCompactNet(model, device, dtype, inplace=optimized, channels_last=optimized)
    if isinstance(model, TFeatNet):
        return PreparedTFeatNet(model, device, dtype, inplace=optimized, channels_last=optimized)
    raise TypeError(f"no prepared inference path for {type(model).__name__}; known: {_KNOWN}")


class FastDescriber:
    """A prepared, inference-only copy of a network. (B, 1, 64, 64) 0..255 -> (B, D) float32.

    ``model``: a :class:`DeepDescNet`, :class:`CompactNet` or :class:`TFeatNet` (its weights are copied;
    later changes to it are not seen; eval-mode arithmetic whatever its mode). The prepared module is
    :func:`prepare_net`'s.
    ``precision``: ``"fp32"``, ``"bf16"`` (CPU with AVX-512 BF16/AMX) or ``"fp16"`` (CUDA).
    ``device``: where to run; default the model's device. ``batch_size``: patches per forward
    pass, default :func:`default_batch_size` (no larger than an equal share per worker). ``workers``: CPU
    threads that run chunks in parallel, each single-threaded; default ``torch.get_num_threads()`` at call
    time, 1 runs chunks one after the other with torch's intra-op threads. Input may be on any device; the
    output is on ``device``. No validation: use :func:`deepdesc.describe` for untrusted input.
    """

    def __init__(
        self,
        model: DescriptorNet,
        precision: str = "fp32",
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
    ):
        self.device = torch.device(device) if device is not None else model.device
        _check_precision(precision, self.device)
        self.precision = precision
        self.batch_size = None if batch_size is None else int(batch_size)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.workers = workers
        self._default_chunk = default_batch_size(self.device, model)
        self.conf = dict(model.conf)
        self.descriptor_size = model.descriptor_size
        self.net = prepare_net(model, self.device, precision, optimized=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One batch, no chunking. (B, 1, 64, 64) on ``device`` -> (B, D) float32."""
        return self.net(x.to(self.device, non_blocking=True))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"expected a (B, 1, {PATCH_SIZE}, {PATCH_SIZE}) tensor, got {tuple(x.shape)}")
        n = x.shape[0]
        workers = self.workers if self.workers is not None else torch.get_num_threads()
        parallel = self.device.type == "cpu" and workers >= 2 and not getattr(_WORKER, "active", False)
        bs = self.chunk_size(n, workers if parallel else 1)
        with torch.inference_mode():
            if n == 0:
                return torch.empty(0, self.descriptor_size, device=self.device)
            bounds = chunk_bounds(n, bs)
            if len(bounds) == 1:
                return self.forward(x)
            out = torch.empty(n, self.descriptor_size, dtype=torch.float32, device=self.device)
        if not parallel:
            for start, stop in bounds:
                self._run_chunk(x, out, start, stop)
            return out
        futures = [_pool(workers).submit(self._run_chunk, x, out, start, stop) for start, stop in bounds]
        concurrent.futures.wait(futures)
        for future in futures:
            future.result()  # re-raise a worker's exception
        return out

    def chunk_size(self, n: int, workers: int = 1) -> int:
        """Patches per forward pass for a call on ``n`` patches: ``batch_size`` if given, else
        :func:`default_batch_size`, shrunk so that each of ``workers`` threads gets a chunk, but not below
        ``_MIN_SHARED_CHUNK`` patches."""
        if self.batch_size is not None:
            return self.batch_size
        return min(self._default_chunk, max(_MIN_SHARED_CHUNK, -(-n // max(workers, 1))))

    def _run_chunk(self, x: torch.Tensor, out: torch.Tensor, start: int, stop: int) -> None:
        with torch.inference_mode():
            out[start:stop] = self.forward(x[start:stop])

    def __repr__(self) -> str:
        return (
            f"FastDescriber(precision={self.precision!r}, device={str(self.device)!r}, "
            f"batch_size={self.batch_size}, workers={self.workers})"
        )


_CACHE: weakref.WeakKeyDictionary[DescriptorNet, dict[tuple, tuple[tuple, FastDescriber]]] = weakref.WeakKeyDictionary()


def _state_key(model: DescriptorNet) -> tuple:
    """Changes when any weight or buffer is replaced or modified in place (optimizer steps, BatchNorm
    running statistics, load_state_dict)."""
    tensors = [*model.parameters(), *model.buffers()]
    extra = model.static_state()
    return (model.device, extra, repr(model.conf), tuple((t.data_ptr(), _version(t)) for t in tensors))


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor has no version counter
        return -1


def fast_describer(model: DescriptorNet, precision: str = "fp32", batch_size: int | None = None) -> FastDescriber:
    """The :class:`FastDescriber` of ``model`` on its device, cached until its weights change.

    A subclass that overrides ``forward`` (or a network without a prepared path) is returned as is (in
    float32): its own forward runs.
    """
    if _prepared_family(model) is None:
        if precision != "fp32":
            family = next((f.__name__ for f in _FAMILIES if isinstance(model, f)), None)
            problem = (
                f"{family}'s own forward; {type(model).__name__} overrides it"
                if family
                else (f"a network with a prepared path ({_KNOWN}), not {type(model).__name__}")
            )
            raise ValueError(f"precision {precision!r} needs {problem}")
        return model  # type: ignore[return-value]
    per_model = _CACHE.setdefault(model, {})
    key = (precision, batch_size)
    state = _state_key(model)
    hit = per_model.get(key)
    if hit is None or hit[0] != state:
        hit = (state, FastDescriber(model, precision, batch_size=batch_size))
        per_model[key] = hit
    return hit[1]
