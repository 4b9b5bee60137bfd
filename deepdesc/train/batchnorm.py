"""Re-estimate a trained network's BatchNorm statistics on training batches ("precise BN").

During training a BatchNorm keeps an exponential average of recent batch statistics, measured with dropout active
and with weights that were still moving. An average of several runs' weights (a model soup) holds the average of
their statistics, which are not the statistics of the averaged network. :func:`recalibrate_batch_norm` replaces them
by the plain average over ``batches`` of the batch statistics of the network as it is now, with dropout off (as at
inference) unless ``dropout`` is set.

    pairs = PairBatches(*build_sources(conf, "train"), ...)   # or any iterable of (B, 1, 64, 64) tensors
    model = recalibrate_batch_norm(model, (torch.cat([a, p]) for a, p, _ in batches))
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["recalibrate_batch_norm"]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor], dropout: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) whose BatchNorm running means and variances are the averages over
    ``batches`` ((B, 1, 64, 64) float patches, B >= 2) of each batch's statistics. Weights are unchanged.
    Raises ``ValueError`` if the model has no BatchNorm or no batch is given."""
    out = copy.deepcopy(model)
    norms = [m for m in out.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer to recalibrate")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    out.train()
    if not dropout:
        for m in out.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
    count = 0
    for batch in batches:
        if batch.ndim != 4 or batch.shape[0] < 2:
            raise ValueError(f"expected batches (B, 1, 64, 64) with B >= 2, got shape {tuple(batch.shape)}")
        out(batch)
        count += 1
    if count == 0:
        raise ValueError("no batch given: BatchNorm statistics need at least one")
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return out.eval()
