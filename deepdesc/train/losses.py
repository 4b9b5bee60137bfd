"""Training losses: the paper's hinge embedding loss with aggressive mining, and HardNet's triplet loss.

All functions take descriptors of corresponding patches ``anchors[i] <-> positives[i]``, shape (B, D);
every ``anchors[i], positives[j]`` with ``i != j`` is a non-corresponding pair.
"""

from __future__ import annotations

import torch

__all__ = [
    "hardest_in_batch_triplet_loss",
    "hinge_embedding_loss",
    "hinge_loss_on",
    "mined_hinge_loss",
    "pairwise_l2",
    "select_hardest_pairs",
    "top_fraction",
]

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


@torch.no_grad()
def select_hardest_pairs(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    margin: float = 4.0,
    positive_mining: int = 8,
    negative_mining: int = 8,
    num_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Stochastic sampling + aggressive mining (Simo-Serra et al. 2015), without gradients.

    The B corresponding pairs are the forwarded positives; ``num_negatives`` (default B) random
    non-corresponding pairs ``(anchors[i], positives[j]), i != j`` are the forwarded negatives. Returns the
    indices of the hardest ``B // positive_mining`` positives (P,), the hardest
    ``num_negatives // negative_mining`` negative pairs (Q, 2) (largest hinge loss), and statistics.
    """
    b = anchors.shape[0]
    if b < 2:
        raise ValueError("mined hinge loss needs at least 2 pairs per batch")
    num_negatives = b if num_negatives is None else num_negatives
    pos_d = (anchors - positives).pow(2).sum(1).add(_EPS).sqrt()
    i = torch.randint(0, b, (num_negatives,), generator=generator, device="cpu").to(anchors.device)
    shift = torch.randint(1, b, (num_negatives,), generator=generator, device="cpu").to(anchors.device)
    j = (i + shift) % b  # never equal to i
    neg_d = (anchors[i] - positives[j]).pow(2).sum(1).add(_EPS).sqrt()
    neg_loss = torch.relu(margin - neg_d)
    keep_p = top_fraction(pos_d, max(1, b // positive_mining))
    keep_n = top_fraction(neg_loss, max(1, num_negatives // negative_mining))
    stats = {
        "pos_dist": float(pos_d.mean()),
        "neg_dist": float(neg_d.mean()),
        "loss_all": float(torch.cat([pos_d, neg_loss]).mean()),
    }
    return keep_p, torch.stack([i[keep_n], j[keep_n]], dim=1), stats


def hinge_loss_on(
    anchors: torch.Tensor, positives: torch.Tensor, pos_pairs: torch.Tensor, neg_pairs: torch.Tensor, margin: float
) -> torch.Tensor:
    """Mean hinge embedding loss over corresponding ``pos_pairs`` (P, 2) and non-corresponding
    ``neg_pairs`` (Q, 2), each row an (anchor index, positive index)."""
    pos_d = (anchors[pos_pairs[:, 0]] - positives[pos_pairs[:, 1]]).pow(2).sum(1).add(_EPS).sqrt()
    neg_d = (anchors[neg_pairs[:, 0]] - positives[neg_pairs[:, 1]]).pow(2).sum(1).add(_EPS).sqrt()
    return torch.cat([pos_d, torch.relu(margin - neg_d)]).mean()


def mined_hinge_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    margin: float = 4.0,
    positive_mining: int = 8,
    negative_mining: int = 8,
    num_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge embedding loss over the mined pairs of :func:`select_hardest_pairs`; mining factors of 1
    disable mining. Returns the mean loss over the kept pairs and statistics."""
    pos_idx, neg_pairs, stats = select_hardest_pairs(
        anchors.detach(), positives.detach(), margin, positive_mining, negative_mining, num_negatives, generator
    )
    return hinge_loss_on(anchors, positives, torch.stack([pos_idx, pos_idx], 1), neg_pairs, margin), stats


def hardest_in_batch_triplet_loss(
    anchors: torch.Tensor, positives: torch.Tensor, margin: float = 1.0, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """HardNet (Mishchuk et al. 2017): for each pair, the closest non-matching descriptor in its row or
    column of the distance matrix is the negative; loss ``mean(relu(margin + d_pos - d_neg))``.

    ``valid`` (B,) bool marks real pairs; a row with ``valid = False`` holds a *distractor* (a detection with
    no counterpart) and another unrelated patch (e.g. a hard negative near its epipolar line): it has no
    positive term and only serves as a negative of every real pair, so positives are pulled closer than
    distractors are (what mutual-NN and ratio-test matching need to reject keypoints without a match).
    """
    b = anchors.shape[0]
    if b < 2:
        raise ValueError("hardest_in_batch_triplet_loss needs at least 2 pairs per batch")
    d = pairwise_l2(anchors, positives)
    pos = d.diagonal()
    off = d + torch.eye(b, device=d.device, dtype=d.dtype) * 1e6
    neg = torch.minimum(off.min(dim=1).values, off.min(dim=0).values)
    terms = torch.relu(margin + pos - neg)
    if valid is not None:
        valid = valid.to(device=d.device, dtype=torch.bool)
        if not valid.any():
            raise ValueError("hardest_in_batch_triplet_loss needs at least one valid pair per batch")
        terms, pos, neg = terms[valid], pos[valid], neg[valid]
    return terms.mean(), {"pos_dist": float(pos.detach().mean()), "neg_dist": float(neg.detach().mean())}


def global_orthogonal_regularization(anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Spread-out regulariser (Zhang et al., ICCV 2017, "Learning Spread-out Local Feature Descriptors").

    ``anchors``, ``positives``: (B, D) unit-norm descriptors where only ``(anchors[i], positives[i])`` may
    correspond. With ``s`` the dot products of the off-diagonal (non-matching) pairs, returns
    ``mean(s) ** 2 + relu(mean(s ** 2) - 1 / D)``, a scalar: zero when they are spread like independent
    uniform points on the sphere (mean 0, second moment 1/D), as far apart as matching allows.
    """
    b, dim = anchors.shape
    if b < 2:
        raise ValueError("global_orthogonal_regularization needs at least 2 pairs per batch")
    sims = anchors @ positives.T
    off = ~torch.eye(b, dtype=torch.bool, device=sims.device)
    s = sims[off]
    return s.mean() ** 2 + torch.relu((s * s).mean() - 1.0 / dim)
