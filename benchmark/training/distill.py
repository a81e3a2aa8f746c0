"""Pieces of private synthetic distillation shared by DPSD's variants (and reusable by the
DP data-free baselines): a memory of released annotations, student regression on them, and
the generator's loss against the student only (post-processing of released outputs)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..models import map_in_chunks


def centred(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(dim=1, keepdim=True)


def _pad_columns(t: torch.Tensor, width: int, value) -> torch.Tensor:
    return F.pad(t, (0, width - t.shape[1]), value=value)


class AnnotationMemory:
    """Released (synthetic image, support, noisy annotation) triples. Training on them again is
    post-processing: it costs no privacy. Keeps the most recent ``capacity`` samples. Releases
    with supports of different sizes (the full class set, then the student's top-k) are padded
    to the widest: support -1 marks an entry that was not released."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.images: torch.Tensor | None = None
        self.support: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None

    def add(self, images: torch.Tensor, support: torch.Tensor, targets: torch.Tensor) -> None:
        if self.support is not None and support.shape[1] != self.support.shape[1]:
            width = max(support.shape[1], self.support.shape[1])
            self.support, support = (_pad_columns(t, width, -1) for t in (self.support, support))
            self.targets, targets = (_pad_columns(t, width, 0.0) for t in (self.targets, targets))
        parts = [(self.images, images), (self.support, support), (self.targets, targets)]
        merged = [new.detach() if old is None else torch.cat([old, new.detach()])[-self.capacity:] for old, new in parts]
        self.images, self.support, self.targets = merged

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def state_dict(self) -> dict:  # for checkpoints (benchmark.runner.checkpoint)
        return {"images": self.images, "support": self.support, "targets": self.targets}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.support, self.targets = state["images"], state["support"], state["targets"]

    def batches(self, batch_size: int, steps: int, generator: torch.Generator | None = None):
        n = len(self)
        for _ in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=generator).to(self.images.device)
            yield self.images[idx], self.support[idx], self.targets[idx]


def annotation_regression_loss(student_logits: torch.Tensor, support: torch.Tensor, targets: torch.Tensor,
                               kind: str = "mse", padded: bool | None = None) -> torch.Tensor:
    """Student loss on released annotations over each sample's support.

    ``mse``: squared error between the student's centred logits and the noisy normalised teacher
    logits (an unbiased target, so zero-mean noise averages out); ``kl``: cross-entropy to the
    softmax of the noisy annotation (a noisy soft label).
    Support entries of -1 (padding in ``AnnotationMemory``) were not released and are left out;
    ``padded=False`` skips that check (needed under ``torch.func.vmap``, which cannot branch on data).
    """
    released = support >= 0
    if padded is None:
        padded = not bool(released.all())
    if not padded:
        picked = centred(student_logits.gather(1, support))
    else:
        picked = student_logits.gather(1, support.clamp(min=0)).masked_fill(~released, 0.0)
        picked = (picked - picked.sum(1, keepdim=True) / released.sum(1, keepdim=True)).masked_fill(~released, 0.0)
    if kind == "mse":
        return F.mse_loss(picked, targets, reduction="none").sum(1).mean()  # padding: 0 against 0
    if kind == "kl":
        hidden = -1e4  # softmax weight 0 on entries that were not released
        target_probs = F.softmax(targets.masked_fill(~released, hidden), 1)
        return torch.sum(-target_probs * F.log_softmax(picked.masked_fill(~released, hidden), 1), dim=1).mean()
    raise ValueError(f"unknown student loss {kind!r} (mse or kl)")


def label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(student_logits, labels)


def generator_loss(student_logits: torch.Tensor, *, disagreement: torch.Tensor | None, w_adv: float,
                   w_onehot: float, w_balance: float, w_entropy: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Generator objective against the student only (never the raw teacher):
    - adversarial: maximise the student's disagreement with the released annotation (hard samples);
    - one-hot (DAFL): the student should be confident on generated samples;
    - balance (DAFL information entropy): the batch-mean prediction should cover all classes;
    - entropy (optional hard-sample term): maximise the student's per-sample predictive entropy,
      i.e. seek inputs the student is unsure about (opposes one-hot; use one or the other).
    """
    probs = F.softmax(student_logits, 1)
    sample_entropy = -(probs * F.log_softmax(student_logits, 1)).sum(1).mean()
    onehot = F.cross_entropy(student_logits, student_logits.argmax(1))
    mean_p = probs.mean(0)
    balance = (mean_p * torch.log(mean_p + 1e-8)).sum()  # negative entropy: minimise to balance
    adv = -disagreement if disagreement is not None else torch.zeros((), device=student_logits.device)
    loss = w_adv * adv + w_onehot * onehot + w_balance * balance - w_entropy * sample_entropy
    return loss, {"adv": float(adv.detach()), "onehot": float(onehot.detach()), "balance": float(balance.detach()),
                  "entropy": float(sample_entropy.detach())}


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def train_student_on_memory(student: nn.Module, optimizer, memory: AnnotationMemory, loss_fn, *, steps: int,
                            batch_size: int, rng: torch.Generator | None = None, anneal: bool = False) -> None:
    """``steps`` student updates on minibatches of everything released so far (post-processing).
    ``anneal``: decay the learning rate to zero over the steps (cosine), for a final consolidation
    once nothing more will be released."""
    student.train()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if anneal and steps > 0 else None
    for xb, sb, ab in memory.batches(batch_size, steps, rng):
        loss = loss_fn(student(xb), sb, ab)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def train_generator_against_student(generator: nn.Module, student: nn.Module, optimizer, z,
                                    disagreement_fn, *, steps: int, w_adv: float, w_onehot: float,
                                    w_balance: float, w_entropy: float = 0.0, fresh_batch: int | None = None) -> dict:
    """Generator steps using the student only: ``disagreement_fn(student_logits)`` compares the
    student with already-released annotations (post-processing); the teacher is never called.
    ``z``: the latent batch of the released annotations, or a callable drawing a fresh batch per
    step. With ``fresh_batch`` set and ``w_adv`` = 0 nothing ties the steps to the released
    samples, so each step draws ``fresh_batch`` new latents instead."""
    if fresh_batch is not None and w_adv == 0:
        disagreement_fn = None
        z = lambda: generator.sample_latent(fresh_batch, next(generator.parameters()).device)  # noqa: E731
    set_requires_grad(student, False)
    student.eval()
    parts: dict = {}
    for _ in range(steps):
        logits = student(generator(z() if callable(z) else z))
        disagreement = disagreement_fn(logits) if disagreement_fn is not None else None
        loss, parts = generator_loss(logits, disagreement=disagreement, w_adv=w_adv,
                                     w_onehot=w_onehot, w_balance=w_balance, w_entropy=w_entropy)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    set_requires_grad(student, True)
    return parts


@torch.no_grad()
def release_synthetic(ctx, generator: nn.Module, student: nn.Module, n: int) -> None:
    """Hand the runner ``n`` generator samples labelled by the private student (post-processing of
    private outputs: no privacy cost); it trains a fresh classifier on them and reports
    ``synthetic_downstream_accuracy``."""
    from ..method import SyntheticData
    if n <= 0:
        return
    generator.eval()
    student.eval()
    images = torch.cat([generator(generator.sample_latent(min(512, n - i), ctx.device)) for i in range(0, n, 512)])
    labels = torch.cat([student(images[i:i + 512]).argmax(1) for i in range(0, n, 512)])
    ctx.synthetic_release = SyntheticData(images.cpu(), labels.cpu())


def make_generator_and_optimisers(ctx, student: nn.Module, h: dict):
    """DPSD's generator (``latent``: ``prior`` = structured-noise latent with a residual network,
    ``gaussian`` = DCGAN-style from N(0, I)) and the Adam optimisers of student and generator."""
    from ..models import Generator, PriorGenerator
    latent = h.get("latent", "gaussian")
    if latent == "prior":  # structured-noise latent image + residual network (models.PriorGenerator)
        gen = PriorGenerator(ctx.input_shape, base_channels=h["generator_width"]).to(ctx.device)
    elif latent == "gaussian":
        gen = Generator(ctx.input_shape, latent_dim=h["latent_dim"], base_channels=h["generator_width"]).to(ctx.device)
    else:
        raise ValueError(f"unknown latent {latent!r} (prior or gaussian)")
    opt_s = torch.optim.Adam(student.parameters(), lr=h["lr_student"])
    opt_g = torch.optim.Adam(gen.parameters(), lr=h["lr_generator"], betas=(0.5, 0.999))
    return gen, opt_s, opt_g


@torch.no_grad()
def synthesize_and_query(generator: nn.Module, models, n: int, device, chunk: int = 2048):
    """A synthetic batch of ``n`` samples and each model's logits on it, computed in chunks (a
    release batch can be tens of thousands of samples). Returns (latent, images, [logits per model])."""
    z = generator.sample_latent(n, device)
    images = map_in_chunks(generator, z, chunk)
    return z, images, [map_in_chunks(m, images, chunk) for m in models]
