"""Loss terms of the data-free synthesizer, and the forward hooks that feed them.

Every published data-free distillation method is a weighted sum of some of these
terms (see :data:`TERMS`); the presets in ``methods/`` only choose the weights.

Generator-side terms (minimised by the synthesizer; a *negative* sign means "maximise"):

- ``adv``: adversarial teacher-student disagreement, ``-D(T(x), S(x))`` with
  ``D`` one of :data:`ADVERSARIAL` (L1 on logits: DFAD; KL(T||S): ZSKT;
  Jensen-Shannon at temperature 3: DeepInversion's adaptive competition;
  KL masked to samples on which S and T agree: CMI).
- ``bn``: BatchNorm statistics matching (DeepInversion's R_feature):
  ``sum_l ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2``.
- ``oh``: one-hot confidence, cross-entropy of T(x) against its own argmax (DAFL)
  or against sampled target classes (DeepInversion, CMI).
- ``act``: activation, ``-mean |f_T(x)|`` of the teacher's penultimate features (DAFL).
- ``balance``: class balance = negative information entropy of the batch-mean
  prediction, ``sum_c p_c log p_c`` (DAFL).
- ``cr``: contrastive loss against a memory bank of earlier samples' features (CMI).
- ``tv`` and ``l2``: DeepInversion's image priors (total variation, L2 norm).

Student-side: :func:`kd_loss` (KL at temperature T, or L1 on logits for DFAD)
and :func:`attention_transfer_loss` (ZSKT).
"""
from __future__ import annotations

import random

import torch
import torch.nn as nn
import torch.nn.functional as F

TERMS = ("adv", "bn", "oh", "act", "balance", "cr", "tv", "l2")
ADVERSARIAL = ("l1", "kl", "js", "masked_kl")


# ------------------------------------------------------------------ hooks
class BNStatsHook:
    """Forward hook on a BatchNorm layer: the batch statistics of its input against its running ones.

    ``r_feature`` = ||mean(x) - running_mean||_2 + ||var(x) - running_var||_2 (biased variance over
    all axes but the channel), DeepInversion's feature-distribution regulariser for this layer.
    ``instance_mean`` = per-sample channel means of the input (CMI's feature for contrast).
    """

    def __init__(self, module: nn.modules.batchnorm._BatchNorm):
        self.module = module
        self.handle = module.register_forward_hook(self._hook)
        self.r_feature = None
        self.instance_mean = None

    def _hook(self, module, inputs, output):
        x = inputs[0]
        c = x.shape[1]
        per_channel = x.transpose(0, 1).reshape(c, -1)
        mean = per_channel.mean(dim=1)
        var = per_channel.var(dim=1, unbiased=False)
        self.r_feature = (torch.norm(module.running_mean - mean, 2)
                          + torch.norm(module.running_var - var, 2))
        self.instance_mean = x.reshape(x.shape[0], c, -1).mean(dim=2) if x.dim() > 2 else x

    def remove(self):
        self.handle.remove()


class PenultimateHook:
    """Records the input of a model's last ``nn.Linear`` layer (the features before the classifier)."""

    def __init__(self, model: nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no nn.Linear layer: no penultimate features for the activation loss")
        self.features = None
        self.handle = linears[-1].register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs):
        self.features = inputs[0]

    def remove(self):
        self.handle.remove()


class FeatureMapsHook:
    """Records, for each spatial resolution, the last 4-D activation a model produced at it.

    ZSKT computes attention maps "at the end of each group of blocks", i.e. where the
    resolution changes; for arbitrary teacher/student CNNs the last conv-type output at each
    resolution is that point, and it pairs teacher and student maps of equal size.
    """

    def __init__(self, model: nn.Module):
        self.maps: dict[tuple[int, int], torch.Tensor] = {}
        kinds = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh,
                 nn.SiLU, nn.GELU, nn.MaxPool2d, nn.AvgPool2d)
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, kinds)]

    def _hook(self, module, inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            self.maps[tuple(output.shape[-2:])] = output

    def clear(self):
        self.maps = {}

    def remove(self):
        for h in self.handles:
            h.remove()


def bn_hooks(model: nn.Module) -> list[BNStatsHook]:
    return [BNStatsHook(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ------------------------------------------------------------------ generator-side terms
def bn_statistics_loss(hooks: list[BNStatsHook]) -> torch.Tensor:
    """Sum of the per-layer BatchNorm statistic distances of the last forward pass."""
    if not hooks:
        raise ValueError("the BatchNorm-statistics loss needs a model with BatchNorm layers")
    return sum(h.r_feature for h in hooks)


def one_hot_loss(t_logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the outputs against ``targets``, or their own argmax (DAFL's L_oh)."""
    if targets is None:
        targets = t_logits.argmax(dim=1)
    return F.cross_entropy(t_logits, targets)


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL's L_a: minus the mean absolute activation of the penultimate features."""
    return -features.abs().mean()


def balance_loss(t_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information-entropy term: sum_c p_c log p_c of the batch-mean softmax (minimise)."""
    p = F.softmax(t_logits, dim=1).mean(dim=0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor, T: float = 1.0, reduction="batchmean"):
    """KL(softmax(p/T) || softmax(q/T))."""
    log_q = F.log_softmax(q_logits / T, dim=1)
    log_p = F.log_softmax(p_logits / T, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return kl.mean() if reduction == "batchmean" else kl


def js_divergence(a_logits: torch.Tensor, b_logits: torch.Tensor, T: float = 3.0) -> torch.Tensor:
    """Jensen-Shannon divergence between softmax(a/T) and softmax(b/T), batch mean."""
    p, q = F.softmax(a_logits / T, dim=1), F.softmax(b_logits / T, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12)
    kl_pm = (p * (p.clamp_min(1e-12).log() - m.log())).sum(dim=1)
    kl_qm = (q * (q.clamp_min(1e-12).log() - m.log())).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def adversarial_loss(kind: str, t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """Minus a teacher-student discrepancy: minimising it makes samples the student gets wrong."""
    if kind == "l1":  # DFAD: mean absolute difference of logits
        return -(t_logits - s_logits).abs().mean()
    if kind == "kl":  # ZSKT: KL(T || S)
        return -_kl(t_logits, s_logits)
    if kind == "js":  # DeepInversion ADI: R_compete = 1 - JS(p_T, p_S), temperature 3
        return 1.0 - js_divergence(t_logits, s_logits, T=3.0).clamp(0.0, 1.0)
    if kind == "masked_kl":  # CMI: KL on samples where S and T still agree (decision boundary)
        mask = (s_logits.argmax(1) == t_logits.argmax(1)).float()
        return -(_kl(t_logits, s_logits, reduction="none") * mask).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}; choose from {ADVERSARIAL}")


def total_variation_loss(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's R_TV (L2 form): norms of the differences of neighbouring pixels."""
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]
    dd1 = x[:, :, 1:, 1:] - x[:, :, :-1, :-1]
    dd2 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    return torch.norm(dh) + torch.norm(dw) + torch.norm(dd1) + torch.norm(dd2)


def l2_prior_loss(x: torch.Tensor) -> torch.Tensor:
    return torch.norm(x.reshape(x.shape[0], -1), dim=1).mean()


# ------------------------------------------------------------------ contrastive (CMI)
class ProjectionHead(nn.Module):
    """CMI's MLP head: features -> L2-normalised embedding for the contrastive loss."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_out))

    def forward(self, x):
        return F.normalize(self.net(x), dim=1)


class MemoryBank:
    """A ring buffer of (local, global) feature pairs of past synthetic samples (CMI's negatives)."""

    def __init__(self, size: int, dim: int):
        self.data = torch.zeros(size, dim)
        self.size, self.ptr, self.count = size, 0, 0

    def add(self, feats: torch.Tensor):
        feats = feats.detach().cpu()
        for row in feats:
            self.data[self.ptr] = row
            self.ptr = (self.ptr + 1) % self.size
            self.count = min(self.count + 1, self.size)

    def sample(self, k: int) -> torch.Tensor:
        if self.count == 0:
            return self.data[:0]
        idx = random.sample(range(self.count), min(k, self.count))
        return self.data[idx]


def contrastive_loss(head: ProjectionHead, local_feat: torch.Tensor, global_feat: torch.Tensor,
                     bank: MemoryBank, n_neg: int, temperature: float) -> torch.Tensor:
    """CMI's instance discrimination: each sample's local view must match its own global view
    against all other current samples and the memory bank's past ones (InfoNCE)."""
    b = local_feat.shape[0]
    cached = bank.sample(n_neg).to(local_feat.device)
    cached_local, cached_global = cached.chunk(2, dim=1)
    z = head(torch.cat([local_feat, cached_local, global_feat, cached_global], dim=0))
    z_local, z_global = z.chunk(2, dim=0)
    logits = z_local @ z_global.detach().T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    per = F.cross_entropy(logits, labels, reduction="none")
    if cached.shape[0] > 0:  # current batch and cached ones weighted equally, as CMI does
        return per[:b].mean() + per[b:].mean()
    return per.mean()


# ------------------------------------------------------------------ student-side terms
def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, kind: str = "kl", T: float = 1.0) -> torch.Tensor:
    """Distillation loss: KL(softmax(t/T) || softmax(s/T)) * T^2, or L1 on logits (DFAD)."""
    if kind == "l1":
        return (s_logits - t_logits).abs().mean()
    if kind == "kl":
        return _kl(t_logits, s_logits, T=T) * (T * T)
    raise ValueError(f"unknown distillation loss {kind!r}")


def soft_target_loss(s_logits: torch.Tensor, target_probs: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student against given target probabilities (noisy DP annotations)."""
    return -(target_probs * F.log_softmax(s_logits / T, dim=1)).sum(dim=1).mean() * (T * T)


def attention_map(fm: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: channel-mean of squared activations, L2-normalised."""
    return F.normalize(fm.pow(2).mean(dim=1).reshape(fm.shape[0], -1), dim=1)


def attention_transfer_loss(s_maps: dict, t_maps: dict) -> torch.Tensor:
    """ZSKT's AT term: sum over shared resolutions of the mean squared difference of attention maps
    (Zagoruyko & Komodakis' form, used by ZSKT with weight beta = 250)."""
    shared = sorted(set(s_maps) & set(t_maps), reverse=True)
    if not shared:
        raise ValueError("teacher and student share no feature-map resolution for attention transfer")
    return sum((attention_map(s_maps[k]) - attention_map(t_maps[k])).pow(2).mean() for k in shared)
