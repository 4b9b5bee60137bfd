"""torch.hub entry points: ``torch.hub.load("<owner>/deepdesc", "deepdesc", pretrained=True)``."""

dependencies = ["torch", "numpy", "safetensors", "cv2", "h5py", "tqdm"]


def deepdesc(pretrained: bool = True, model: str = "default", input_range: float = 1.0):
    """DeepDesc patch descriptor (:class:`deepdesc.features.descriptor.DeepDescDescriptor`).

    (B, 1, 64, 64) patches in 0..``input_range`` (1.0, kornia's convention, or 255.0) -> (B, 128).
    ``model``: ``"default"`` (packaged, MIT) or ``"split1"``..``"split4"`` (original, CC BY-NC-SA, downloaded).
    ``pretrained=False``: the same architecture with random weights.
    """
    from deepdesc.features.descriptor import DeepDescDescriptor
    from deepdesc.hub.registry import load_model
    from deepdesc.nn.factory import build_net

    net = load_model(model, device="cpu")
    if not pretrained:
        net = build_net(net.conf).eval()
    return DeepDescDescriptor(net, input_range=input_range)
