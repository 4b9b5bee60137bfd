"""Training losses: the paper's hinge embedding loss with aggressive mining, and HardNet's triplet loss.

All functions take descriptors of corresponding patches ``anchors[i] <-> positives[i]``, shape (B, D);
every ``anchors[i], positives[j]`` with ``i != j`` is a non-corresponding pair.
"""

from __future__ import annotations

import torch

__all__ = ["hinge_embedding_loss", "mined_hinge_loss", "hardest_in_batch_triplet_loss", "pairwise_l2", "top_fraction"]

_EPS = 1e-8


def pairwise_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, D), (M, D) -> (B, M) Euclidean distances (differentiable at 0 thanks to a small epsilon)."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return torch.sqrt(sq.clamp_min(0.0) + _EPS)


def hinge_embedding_loss(distances: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-pair loss of the paper: ``d`` for corresponding pairs, ``max(0, margin - d)`` otherwise. (N,) -> (N,)."""
    labels = labels.bool()
    return torch.where(labels, distances, torch.relu(margin - distances))


def top_fraction(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` largest entries of ``losses`` (N,) -> (keep,); all when keep >= N."""
    keep = min(int(keep), losses.numel())
    return torch.topk(losses.detach(), keep, sorted=False).indices


def mined_hinge_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    margin: float = 4.0,
    positive_mining: int = 8,
    negative_mining: int = 8,
    num_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge embedding loss with stochastic sampling and aggressive mining (Simo-Serra et al. 2015).

    The B corresponding pairs are the forwarded positives; ``num_negatives`` (default B) random
    non-corresponding pairs ``(anchors[i], positives[j]), i != j`` are the forwarded negatives. Only the
    hardest ``B // positive_mining`` positives and ``num_negatives // negative_mining`` negatives
    (largest loss) are back-propagated; mining factors of 1 disable mining. Returns the mean loss over
    the kept pairs and statistics (mean positive / negative distance, loss before mining).
    """
    b = anchors.shape[0]
    if b < 2:
        raise ValueError("mined_hinge_loss needs at least 2 pairs per batch")
    num_negatives = b if num_negatives is None else num_negatives
    pos_d = (anchors - positives).pow(2).sum(1).add(_EPS).sqrt()
    i = torch.randint(0, b, (num_negatives,), generator=generator, device="cpu").to(anchors.device)
    shift = torch.randint(1, b, (num_negatives,), generator=generator, device="cpu").to(anchors.device)
    j = (i + shift) % b  # never equal to i
    neg_d = (anchors[i] - positives[j]).pow(2).sum(1).add(_EPS).sqrt()
    pos_loss = pos_d
    neg_loss = torch.relu(margin - neg_d)
    keep_p = top_fraction(pos_loss, max(1, b // positive_mining))
    keep_n = top_fraction(neg_loss, max(1, num_negatives // negative_mining))
    kept = torch.cat([pos_loss[keep_p], neg_loss[keep_n]])
    stats = {
        "pos_dist": float(pos_d.detach().mean()),
        "neg_dist": float(neg_d.detach().mean()),
        "loss_all": float(torch.cat([pos_loss, neg_loss]).detach().mean()),
    }
    return kept.mean(), stats


def hardest_in_batch_triplet_loss(
    anchors: torch.Tensor, positives: torch.Tensor, margin: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """HardNet (Mishchuk et al. 2017): for each pair, the closest non-matching descriptor in its row or
    column of the distance matrix is the negative; loss ``mean(relu(margin + d_pos - d_neg))``."""
    b = anchors.shape[0]
    if b < 2:
        raise ValueError("hardest_in_batch_triplet_loss needs at least 2 pairs per batch")
    d = pairwise_l2(anchors, positives)
    pos = d.diagonal()
    off = d + torch.eye(b, device=d.device, dtype=d.dtype) * 1e6
    neg = torch.minimum(off.min(dim=1).values, off.min(dim=0).values)
    loss = torch.relu(margin + pos - neg).mean()
    return loss, {"pos_dist": float(pos.detach().mean()), "neg_dist": float(neg.detach().mean())}
