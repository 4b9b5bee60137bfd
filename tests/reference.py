"""Independent float64 numpy reference of the original Torch7 CNN3 forward pass.

It reads the raw Torch7 tree (``read_t7``), not the PyTorch module, and follows the ``nn``
semantics literally: per-pixel (p - mean) / std, valid cross-correlation, Tanh, SpatialLPPooling as
Square -> SpatialAveragePooling (divide flag) -> MulConstant -> Sqrt, and
SpatialSubtractiveNormalization as in-bounds weighted sums across all planes divided by the
in-bounds kernel mass (what zero padding plus the ``coef`` correction compute).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def modules(container) -> list:
    mods = container["modules"]
    return [mods[k] for k in sorted(mods)]


def conv_valid(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(C, H, W) x (O, C, kh, kw) -> (O, H-kh+1, W-kw+1), cross-correlation like Torch7."""
    kh, kw = weight.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (C, H', W', kh, kw)
    return np.einsum("chwij,ocij->ohw", windows, weight) + bias[:, None, None]


def lp_pool(x: np.ndarray, module) -> np.ndarray:
    square, avg, mul, sqrt = modules(module)
    k = int(avg["kW"])
    c, h, w = x.shape
    h2, w2 = h // k, w // k
    blocks = (x * x)[:, : h2 * k, : w2 * k].reshape(c, h2, k, w2, k)
    pooled = blocks.sum(axis=(2, 4))
    if avg.get("divide", False):
        pooled = pooled / (k * k)
    return np.sqrt(pooled * mul["constant_scalar"] + sqrt["eps"])


def subtractive_norm(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``kernel`` (kh, kw) as stored (already divided by sum * nInputPlane)."""
    c, h, w = x.shape
    kh, kw = kernel.shape
    total = x.sum(axis=0)
    local = np.zeros((h, w))
    mass = np.zeros((h, w))
    for u in range(kh):
        for v in range(kw):
            du, dv = u - kh // 2, v - kw // 2
            # output pixels (i, j) whose neighbour (i + du, j + dv) lies inside the map
            i0, i1 = max(0, -du), min(h, h - du)
            j0, j1 = max(0, -dv), min(w, w - dv)
            local[i0:i1, j0:j1] += kernel[u, v] * total[i0 + du : i1 + du, j0 + dv : j1 + dv]
            mass[i0:i1, j0:j1] += kernel[u, v] * c
    return x - (local / mass)[None]


def reference_forward(tree: dict, patches: np.ndarray) -> np.ndarray:
    """(N, 64, 64) intensities -> (N, 128) float64 descriptors with the Torch7 model ``tree``."""
    layers = modules(tree["desc"])
    mean = tree["mean"][0].astype(np.float64)
    std = tree["std"][0].astype(np.float64)
    out = []
    for patch in patches.astype(np.float64):
        x = ((patch - mean) / std)[None]
        for layer in layers:
            name = layer.class_name
            if name == "nn.SpatialConvolution":
                x = conv_valid(x, layer["weight"].astype(np.float64), layer["bias"].astype(np.float64))
            elif name == "nn.Tanh":
                x = np.tanh(x)
            elif name == "nn.SpatialLPPooling":
                x = lp_pool(x, layer)
            elif name == "nn.SpatialSubtractiveNormalization":
                x = subtractive_norm(x, layer["kernel"].astype(np.float64))
            elif name == "nn.Reshape":
                x = x.reshape(-1)
            else:
                raise AssertionError(f"reference does not know {name}")
        out.append(x)
    return np.stack(out)
