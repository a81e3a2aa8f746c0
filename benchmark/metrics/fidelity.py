"""FID-style fidelity of synthetic images (Heusel et al., NeurIPS 2017).

The Frechet distance between Gaussians fitted to features of synthetic and reference
images: ||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)).

``fid_eval_net``: features are the input of the last ``nn.Linear`` layer (the
penultimate activations) of ``feature_net``, a classifier available offline; the
benchmark passes its evaluation network (see docs/generative.md). Values are only
comparable between runs that used the same feature network.

``fid_inception``: the standard FID with torchvision's Inception-v3 (pool3, 2048-d),
computed only when its weights are already in the local torch hub cache (nothing is
downloaded); images are resized to 299x299 and grey images repeated to 3 channels.
torchvision's ImageNet weights are not the TF-FID weights, so this is close to, not
identical with, published FIDs.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn


def _sqrtm(m: np.ndarray) -> np.ndarray:
    out = linalg.sqrtm(m)
    return out[0] if isinstance(out, tuple) else out


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(max(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean), 0.0))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def _last_linear(net: nn.Module) -> nn.Linear | None:
    last = None
    for m in net.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


@torch.no_grad()
def penultimate_features(net: nn.Module, images: torch.Tensor, device, batch_size: int = 500) -> np.ndarray:
    """Inputs of ``net``'s last linear layer (its logits if it has none), as float64 array."""
    layer, store = _last_linear(net), []
    hook = layer.register_forward_hook(lambda m, inp, out: store.append(inp[0].flatten(1).cpu())) if layer else None
    was_training = net.training
    net.eval()
    outs = []
    try:
        for i in range(0, len(images), batch_size):
            out = net(images[i:i + batch_size].to(device).float())
            if layer is None:
                outs.append(out.flatten(1).cpu())
    finally:
        if hook is not None:
            hook.remove()
        net.train(was_training)
    feats = torch.cat(store if layer is not None else outs)
    return feats.double().numpy()


def _local_inception_weights() -> str | None:
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    hits = sorted(glob.glob(os.path.join(hub, "inception_v3_google-*.pth")))
    return hits[0] if hits else None


@torch.no_grad()
def _inception_features(images: torch.Tensor, device, weights_path: str, batch_size: int = 100) -> np.ndarray:
    from torchvision.models import inception_v3
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    net.fc = nn.Identity()
    net.eval().to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(net((x - mean) / std).cpu())
    return torch.cat(out).double().numpy()


def fidelity_metrics(synthetic_images: torch.Tensor, reference_images: torch.Tensor, feature_net: nn.Module,
                     device=None, max_images: int = 5000, inception: bool = True) -> dict:
    """Fidelity of ``synthetic_images`` to ``reference_images`` (both N x C x H x W in [0, 1]).

    Returns ``{"fid_eval_net": float, "fid_eval_net_dim": int, "fid_images": int}`` plus
    ``"fid_inception"`` when local Inception-v3 weights exist (and ``inception`` is true).
    At most ``max_images`` of each set are used (the first ones); both sets need >= 2 images.
    """
    device = torch.device(device) if device is not None else next(feature_net.parameters()).device
    syn, ref = synthetic_images[:max_images], reference_images[:max_images]
    if len(syn) < 2 or len(ref) < 2:
        raise ValueError("fidelity_metrics needs at least 2 synthetic and 2 reference images")
    fs = penultimate_features(feature_net, syn, device)
    fr = penultimate_features(feature_net, ref, device)
    out = {"fid_eval_net": fid_from_features(fs, fr), "fid_eval_net_dim": int(fs.shape[1]),
           "fid_images": int(min(len(syn), len(ref)))}
    weights = _local_inception_weights() if inception else None
    if weights is not None:
        out["fid_inception"] = fid_from_features(_inception_features(syn, device, weights),
                                                 _inception_features(ref, device, weights))
    return out
