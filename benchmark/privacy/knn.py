"""Private-kNN's pieces (Zhu, Yu, Chandraker & Wang, "Private-kNN: Practical differential privacy
for computer vision", CVPR 2020): a privacy-free feature space and subsampled kNN voting.

Features: Histograms of Oriented Gradients, the paper's first-iteration feature extractor. HOG
is a fixed function of one image (no training, no statistics of any dataset), so computing it
on private and public images costs no privacy. Implemented here in torch (Dalal & Triggs 2005:
centred [-1, 0, 1] gradients, unsigned orientations in ``bins`` bins with linear interpolation,
cell histograms weighted by gradient magnitude, 2x2-cell blocks with L2-Hys normalisation);
multi-channel images take the channel with the largest gradient magnitude per pixel.

Voting: for each query, every private record is kept independently with probability gamma
(Poisson subsampling); the k nearest kept records (Euclidean distance in feature space) vote
their labels. Adding or removing one private record changes the histogram of one query by at
most one moved vote (L2 sensitivity sqrt 2, max-count sensitivity 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def hog(images: torch.Tensor, cell: int | None = None, bins: int = 9, block: int = 2,
        clip: float = 0.2) -> torch.Tensor:
    """HOG descriptors (B, D) of images (B, C, H, W) in [0, 1]. ``cell`` defaults to max(2, H // 7)."""
    x = images.float()
    b, c, h, w = x.shape
    cell = cell or max(2, h // 7)
    gx = F.pad(x, (1, 1, 0, 0), mode="replicate")
    gx = gx[..., 2:] - gx[..., :-2]
    gy = F.pad(x, (0, 0, 1, 1), mode="replicate")
    gy = gy[..., 2:, :] - gy[..., :-2, :]
    mag = torch.sqrt(gx**2 + gy**2)
    if c > 1:  # strongest channel per pixel
        idx = mag.argmax(1, keepdim=True)
        gx, gy, mag = gx.gather(1, idx), gy.gather(1, idx), mag.gather(1, idx)
    ang = torch.remainder(torch.atan2(gy, gx), math.pi)  # unsigned orientation in [0, pi)
    pos = ang / (math.pi / bins) - 0.5
    lo = torch.floor(pos)
    frac = pos - lo
    lo_bin = torch.remainder(lo, bins).long()
    hi_bin = torch.remainder(lo + 1, bins).long()
    hist = torch.zeros(b, bins, h, w)
    hist.scatter_add_(1, lo_bin, mag * (1 - frac))
    hist.scatter_add_(1, hi_bin, mag * frac)
    ch, cw = h // cell, w // cell
    hist = hist[..., : ch * cell, : cw * cell]
    cells = hist.reshape(b, bins, ch, cell, cw, cell).sum((3, 5))  # (B, bins, ch, cw)
    blk = min(block, ch, cw)
    blocks = cells.unfold(2, blk, 1).unfold(3, blk, 1)  # (B, bins, nbh, nbw, blk, blk)
    blocks = blocks.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, bins * blk * blk)
    eps = 1e-6
    blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps)
    blocks = torch.clamp(blocks, max=clip)
    blocks = blocks / torch.sqrt((blocks**2).sum(-1, keepdim=True) + eps)
    return blocks.reshape(b, -1)


def features(images: torch.Tensor, kind: str = "hog") -> torch.Tensor:
    """Privacy-free features: "hog" (default) or "pixels" (flattened raw pixels)."""
    if kind == "hog":
        return hog(images)
    if kind == "pixels":
        return images.reshape(len(images), -1).float()
    raise ValueError(f"unknown kNN feature space {kind!r}; expected 'hog' or 'pixels'")


@torch.no_grad()
def subsampled_knn_votes(query_feats: torch.Tensor, private_feats: torch.Tensor, private_labels: torch.Tensor,
                         num_classes: int, k: int, gamma: float, generator: torch.Generator,
                         batch: int = 256) -> torch.Tensor:
    """Vote histograms (Q, num_classes): per query, a fresh Poisson subsample (rate gamma) of the
    private set, and the labels of its k nearest members (fewer if the subsample is smaller)."""
    n = len(private_feats)
    out = torch.zeros(len(query_feats), num_classes, dtype=torch.long)
    pf = private_feats.float()
    pn = (pf**2).sum(1)
    for s in range(0, len(query_feats), batch):
        q = query_feats[s:s + batch].float()
        d2 = (q**2).sum(1, keepdim=True) - 2 * q @ pf.T + pn  # squared distances (B, N)
        keep = torch.rand(len(q), n, generator=generator) < gamma
        d2 = torch.where(keep, d2, torch.full_like(d2, math.inf))
        kk = min(k, n)
        dist, idx = torch.topk(d2, kk, dim=1, largest=False)
        valid = torch.isfinite(dist)
        lab = private_labels[idx]
        out[s:s + batch] = F.one_hot(lab, num_classes).mul(valid.unsqueeze(-1)).sum(1)
    return out
