"""torch.hub entry points: ``torch.hub.load("<owner>/deepdesc", "deepdesc", weights="default")``.

The weights are chosen by ``weights=`` (alias ``name=``): ``model`` is torch.hub.load's own argument (the entry
point's name), so ``torch.hub.load(..., model="split1")`` cannot reach the entry point.
"""

dependencies = ["torch", "numpy", "safetensors", "cv2", "h5py", "tqdm"]


def deepdesc(
    pretrained: bool = True,
    weights: str | None = None,
    input_range: float = 1.0,
    *,
    name: str | None = None,
    model: str | None = None,
):
    """DeepDesc patch descriptor (:class:`deepdesc.features.descriptor.DeepDescDescriptor`).

    (B, 1, 64, 64) patches in 0..``input_range`` (1.0, kornia's convention, or 255.0) -> (B, 128).
    ``weights``: ``"default"`` (packaged, MIT), ``"split1"``..``"split4"`` (original, CC BY-NC-SA, downloaded) or a
    ``.t7``/``.safetensors`` path; ``name`` is an alias, and ``model`` too when this function is called directly.
    ``pretrained=False``: the same architecture with random weights.
    """
    from deepdesc.features.descriptor import DeepDescDescriptor
    from deepdesc.hub.registry import load_model
    from deepdesc.nn.factory import build_net

    given = {k: v for k, v in (("weights", weights), ("name", name), ("model", model)) if v is not None}
    if len(set(given.values())) > 1:
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ValueError(f"deepdesc hub entry point: {shown} disagree; pass the weights once, as weights=NAME_OR_PATH")
    net = load_model(next(iter(given.values()), "default"), device="cpu")
    if not pretrained:
        net = build_net(net.conf).eval()
    return DeepDescDescriptor(net, input_range=input_range)
