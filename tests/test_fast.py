"""FastDescriber: the same descriptors as DeepDescNet.forward, on random and real patches."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdesc.nn.cnn3 import DeepDescNet
from deepdesc.nn.compact import CompactNet
from deepdesc.nn.fast import FastDescriber, default_batch_size

from .conftest import require_shared

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _bf16_ok() -> bool:
    try:
        FastDescriber(DeepDescNet(), "bf16")
    except ValueError:
        return False
    return True


def oxford_pairs(sequence: str = "bikes", n: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    """64x64 crops around SIFT keypoints of img1 and their ground-truth projections in img2."""
    folder = require_shared("data", "eval", "oxford", sequence)
    ext = ".pgm" if sequence == "boat" else ".ppm"
    im1 = cv2.imread(str(folder / f"img1{ext}"), cv2.IMREAD_GRAYSCALE)
    im2 = cv2.imread(str(folder / f"img2{ext}"), cv2.IMREAD_GRAYSCALE)
    H = np.loadtxt(folder / "H1to2p")
    pts = np.array([k.pt for k in cv2.SIFT_create(nfeatures=2000).detect(im1)], np.float64)
    proj = cv2.perspectiveTransform(pts[None], H)[0]
    inside = np.all((pts > 40) & (pts < np.array(im1.shape[::-1]) - 40), axis=1)
    inside &= np.all((proj > 40) & (proj < np.array(im2.shape[::-1]) - 40), axis=1)
    idx = np.random.default_rng(0).permutation(np.flatnonzero(inside))[:n]

    def crops(im, points):
        patches = np.stack([cv2.getRectSubPix(im, (64, 64), (float(x), float(y))) for x, y in points])
        return torch.from_numpy(patches[:, None].astype(np.float32))

    return crops(im1, pts[idx]), crops(im2, proj[idx])


def precision_at_1(d1: torch.Tensor, d2: torch.Tensor) -> float:
    return float((torch.cdist(d1.double(), d2.double()).argmin(1) == torch.arange(len(d1))).double().mean())


@pytest.fixture(scope="module")
def real_pairs():
    return oxford_pairs("bikes")


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return DeepDescNet().eval()


def _reference(model: DeepDescNet, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def test_fp32_matches_model_on_real_patches(split4_model, real_pairs):
    fast = FastDescriber(split4_model)
    for x in real_pairs:
        out = fast(x)
        assert out.shape == (len(x), 128) and out.dtype == torch.float32
        assert (out - _reference(split4_model, x)).abs().max() <= 1e-4


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_fp32_matches_model_on_random_patches_any_chunking(random_model, batch_size):
    x = torch.rand(45, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    out = FastDescriber(random_model, batch_size=batch_size)(x)
    assert (out - _reference(random_model, x)).abs().max() <= 1e-4


def test_extreme_inputs_and_empty_batch(split4_model):
    fast = FastDescriber(split4_model)
    x = torch.stack([torch.zeros(1, 64, 64), torch.full((1, 64, 64), 255.0), torch.rand(1, 64, 64) * 255])
    x[2, 0, ::2] = 0  # high contrast stripes
    out = fast(x)
    assert torch.isfinite(out).all()
    assert (out - _reference(split4_model, x)).abs().max() <= 1e-4
    assert fast(torch.empty(0, 1, 64, 64)).shape == (0, 128)


@pytest.mark.parametrize(
    "conf",
    [
        {"input_norm": "patch", "l2_normalize": True},
        {"channels": [8, 16, 24]},
    ],
)
def test_other_configurations(conf):
    torch.manual_seed(2)
    model = DeepDescNet(conf).eval()
    with torch.no_grad():  # per-plane subtractive-norm kernels: the general (unshared) path
        model.norm1.weight.mul_(torch.linspace(0.5, 1.5, model.norm1.weight.shape[1]).view(1, -1, 1, 1))
    model.pool2.scale = 5.0  # an old-style stored LP scale that is not k*k
    x = torch.rand(9, 1, 64, 64) * 255
    out = FastDescriber(model, batch_size=4)(x)
    assert out.shape == (9, model.descriptor_size)
    assert (out - _reference(model, x)).abs().max() <= 1e-4


def test_weights_are_copied_and_model_untouched(random_model):
    before = {k: v.clone() for k, v in random_model.state_dict().items()}
    fast = FastDescriber(random_model)
    x = torch.rand(3, 1, 64, 64) * 255
    fast(x)
    after = random_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_arguments(random_model):
    with pytest.raises(ValueError, match="precision"):
        FastDescriber(random_model, precision="int4")
    with pytest.raises(ValueError, match="CUDA"):
        FastDescriber(random_model, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        FastDescriber(random_model, batch_size=-1)
    with pytest.raises(ValueError, match="64, 64"):
        FastDescriber(random_model)(torch.zeros(2, 64, 64))
    assert default_batch_size("cpu") < default_batch_size("cuda")


def test_default_chunks_per_network_and_shared_among_workers(random_model):
    """CNN3 in chunks of 32 on CPU, the compact net in chunks of 128; without an explicit batch_size a call is
    cut so that every worker thread gets a chunk, and the descriptors do not depend on the cut."""
    compact = CompactNet().eval()
    assert default_batch_size("cpu", random_model) == default_batch_size("cpu") == 32
    assert default_batch_size("cpu", compact) == 128 and default_batch_size("cuda", compact) == 1024
    fast = FastDescriber(compact)
    assert fast.chunk_size(2000, workers=2) == 128 and fast.chunk_size(150, workers=2) == 75
    assert fast.chunk_size(20, workers=2) == 16 and fast.chunk_size(2000) == 128  # no tiny chunks
    assert FastDescriber(compact, batch_size=16).chunk_size(150, workers=2) == 16
    x = torch.rand(150, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = compact(x)
    shared = FastDescriber(compact, workers=2)(x)
    for workers in (1, 2, 3):
        out = FastDescriber(compact, workers=workers)(x)
        assert (out - expected).abs().max() <= 1e-5
    for part in (2, 17, 33):  # a call of a few patches: the same values as within the larger call
        assert torch.equal(FastDescriber(compact, workers=2)(x[-part:]), shared[-part:])


@functools.cache
def _chunking_case() -> tuple[CompactNet, torch.Tensor]:
    return CompactNet().eval(), torch.rand(70, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 255


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 70), size=st.integers(2, 80), workers=st.sampled_from([1, 2, 3]))
def test_descriptors_do_not_depend_on_the_chunking(n, size, workers):
    """chunk_bounds covers every patch once, in order, with no lone last chunk; so a call's descriptors equal
    those of one forward pass over all of its patches, however it is cut (chunks of 2+) and shared among threads."""
    from deepdesc.nn.fast import chunk_bounds

    bounds = chunk_bounds(n, size)
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(1 < stop - start <= size + 1 for start, stop in bounds)
    model, x = _chunking_case()
    cut = FastDescriber(model, batch_size=size, workers=workers)
    assert torch.equal(cut(x[:n]), cut.forward(x[:n]))  # forward: one pass, no chunking


@pytest.mark.skipif(not _bf16_ok(), reason="CPU without native bfloat16")
def test_bf16_close_and_keeps_matching_precision(split4_model, real_pairs):
    """bf16 (CPU) convolutions: small descriptor error, nearest-neighbour matching unchanged."""
    fast = FastDescriber(split4_model, "bf16")
    p1, p2 = real_pairs
    ref1, ref2 = _reference(split4_model, p1), _reference(split4_model, p2)
    d1, d2 = fast(p1), fast(p2)
    assert d1.dtype == torch.float32
    scale = ref1.abs().max()
    assert (d1 - ref1).abs().max() <= 0.02 * scale  # measured ~0.012 of 3.8
    assert abs(precision_at_1(d1, d2) - precision_at_1(ref1, ref2)) <= 0.02


@cuda
def test_cuda_fp32_and_fp16(split4_model, real_pairs):
    model = split4_model
    p1, p2 = real_pairs
    ref1, ref2 = _reference(model, p1), _reference(model, p2)
    gpu = torch.device("cuda")
    fast32 = FastDescriber(model, "fp32", device=gpu)
    out = fast32(p1.to(gpu))
    assert out.device.type == "cuda"
    assert (out.cpu() - ref1).abs().max() <= 1e-3  # TF32 may be enabled by the user
    fast16 = FastDescriber(model, "fp16", device=gpu)
    d1, d2 = fast16(p1), fast16(p2)  # CPU input is moved
    assert (d1.cpu() - ref1).abs().max() <= 0.05 * ref1.abs().max()
    assert abs(precision_at_1(d1.cpu(), d2.cpu()) - precision_at_1(ref1, ref2)) <= 0.02


def test_fast_describer_cache_follows_weight_changes():
    from deepdesc.nn.fast import fast_describer

    torch.manual_seed(3)
    model = DeepDescNet().eval()
    x = torch.rand(4, 1, 64, 64) * 255
    first = fast_describer(model)
    assert fast_describer(model) is first
    assert fast_describer(model, batch_size=8) is not first
    with torch.no_grad():
        model.conv2.weight.mul_(0.5)  # in place, as an optimizer step
    second = fast_describer(model)
    assert second is not first
    assert (second(x) - _reference(model, x)).abs().max() <= 1e-4
    model.load_state_dict(DeepDescNet().state_dict())
    assert fast_describer(model) is not second


def test_fast_describer_respects_an_overridden_forward():
    from deepdesc.nn.fast import fast_describer

    class Doubled(DeepDescNet):
        def forward(self, x):
            return 2 * super().forward(x)

    model = Doubled().eval()
    assert fast_describer(model) is model
    with pytest.raises(ValueError, match="overrides"):
        fast_describer(model, "bf16")


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_worker_threads_give_the_same_descriptors(random_model, workers):
    threads = torch.get_num_threads()
    x = torch.rand(70, 1, 64, 64, generator=torch.Generator().manual_seed(4)) * 255
    out = FastDescriber(random_model, batch_size=16, workers=workers)(x)
    assert (out - _reference(random_model, x)).abs().max() <= 1e-4
    assert torch.get_num_threads() == threads  # workers set their own thread count only


def test_pooled_patch_norm_matches_float64_reference():
    """The fast path pools the raw patch first and normalises with the full patch's statistics."""
    from deepdesc.nn.fast import _pooled_patch_norm
    from deepdesc.nn.layers import normalize_patches

    gen = torch.Generator().manual_seed(3)
    varied = torch.rand(8, 1, 64, 64, generator=gen) * 255
    low_contrast = 200 + torch.rand(4, 1, 64, 64, generator=gen) * 0.01  # std ~0.003 on a large mean
    constant = torch.full((2, 1, 64, 64), 37.0)
    x = torch.cat([varied, low_contrast, constant])
    expected = torch.nn.functional.avg_pool2d(normalize_patches(x.double(), "patch"), 2)
    got = _pooled_patch_norm(x)
    assert got.shape == (14, 1, 32, 32) and got.dtype == torch.float32
    # float32 rounding of a 2x2 sum near 800 is ~6e-5 / 4: the bound for the low-contrast patches
    assert torch.allclose(got[:8].double(), expected[:8], atol=1e-6, rtol=0)
    assert torch.allclose(got.double(), expected, atol=5e-5, rtol=0)
    assert torch.equal(got[-2:], torch.zeros(2, 1, 32, 32))


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 5),
    channels=st.integers(1, 3),
    half_h=st.integers(1, 40),
    half_w=st.integers(1, 40),
    scale=st.sampled_from([1e-3, 1.0, 255.0, 1e6]),
    seed=st.integers(0, 2**31 - 1),
    strided=st.booleans(),
)
def test_avg_pool_2x2_equals_avg_pool2d_bit_for_bit(batch, channels, half_h, half_w, scale, seed, strided):
    """The fast path's 2x2 pooling gives avg_pool2d's values exactly, for any even map and any strides."""
    from deepdesc.nn.fast import _avg_pool_2x2

    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, channels + 1, 2 * half_h, 2 * half_w, generator=gen) - 0.3) * scale
    x = x[:, 1:] if strided else x[:, 1:].contiguous()  # the slice is not contiguous
    assert torch.equal(_avg_pool_2x2(x), torch.nn.functional.avg_pool2d(x, 2))


def test_fused_relu_gives_the_unfused_values(monkeypatch):
    """The compact net's fast path fuses each ReLU into its convolution (oneDNN) on CPU float32; the pinned
    PyTorch has the operator, and the descriptors equal those of the plain convolution + ReLU."""
    from deepdesc.nn import fast

    assert fast._fused_conv_relu_available()
    gen = torch.Generator().manual_seed(4)
    model = CompactNet().eval()
    with torch.no_grad():  # BatchNorm statistics away from the identity, so that some ReLUs cut
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.rand(70, 1, 64, 64, generator=gen) * 255
    fused = FastDescriber(model)
    assert fused.net.fused
    got = fused(x)
    monkeypatch.setattr(fast, "_FUSED_OK", False)  # as where the operator is missing
    plain = FastDescriber(model)
    assert not plain.net.fused
    assert torch.equal(got, plain(x))
    with torch.no_grad():
        assert (got - model(x)).abs().max() <= 1e-5
