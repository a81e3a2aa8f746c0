"""Shared training loops: plain supervised training, evaluation, DP-SGD (Opacus), and
the common student recipe for synthetic data. The teacher cache is in ``teachers.py``."""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..privacy import ledger as L
from . import precision

#: The fixed recipe with which the runner trains the common student on a generative method's data.
SYNTHETIC_STUDENT_RECIPE = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "min_steps": 600}


def _identity(it, **_):
    return it


def seeded_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False,
                  device: torch.device | str = "cpu"):
    """A DataLoader whose shuffling depends on ``seed`` only; batches are pinned for a GPU ``device``."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last,
                      pin_memory=precision.pin_memory(device))


def train_classifier(model: nn.Module, dataset: Dataset, *, epochs: int | None = None, batch_size: int = 64,
                     lr: float = 1e-3, device: torch.device | str = "cpu", seed: int = 0,
                     min_steps: int = 0, weight_decay: float = 0.0, progress: Callable = _identity,
                     desc: str = "train") -> nn.Module:
    """Adam on cross-entropy (soft labels allowed: a float label tensor of shape N x K).

    Runs ``epochs`` epochs, or more if needed to reach ``min_steps`` optimiser steps. Non-private
    (no DP mechanism inside), so its forward pass may run under bfloat16 autocast on a GPU
    (:mod:`benchmark.training.precision`).
    """
    model.to(device).train()
    loader = seeded_loader(dataset, batch_size, seed, device=device)
    steps_per_epoch = max(1, len(loader))
    epochs = max(epochs or 1, math.ceil(min_steps / steps_per_epoch))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in progress(range(epochs), desc=desc):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with precision.autocast(device):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device="cpu", batch_size: int = 1024) -> torch.Tensor:
    """Float32 logits (inference may run under bfloat16 autocast on a GPU; the cast back to float32
    happens before any caller clips, normalises or noises them)."""
    model.eval()
    with precision.autocast(device):
        outs = [model(images[i:i + batch_size].to(device, non_blocking=True)).float().cpu()
                for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def dataset_tensors(dataset: Dataset) -> tuple[torch.Tensor, ...]:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors
    items = [dataset[i] for i in range(len(dataset))]
    return tuple(torch.stack([torch.as_tensor(it[j]) for it in items]) for j in range(len(items[0])))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device="cpu") -> float:
    """Top-1 accuracy of ``model`` on a labelled dataset."""
    x, y = dataset_tensors(dataset)[:2]
    return float((predict_logits(model, x, device).argmax(1) == y).float().mean())


def train_on_synthetic(images: torch.Tensor, labels: torch.Tensor, build_student: Callable[[], nn.Module], *,
                       device="cpu", seed: int = 0, progress: Callable = _identity) -> nn.Module:
    """The runner's fixed recipe: a fresh common student trained on a method's synthetic data."""
    r = SYNTHETIC_STUDENT_RECIPE
    return train_classifier(build_student(), TensorDataset(images.float(), labels.long()), epochs=r["epochs"],
                            batch_size=r["batch_size"], lr=r["lr"], min_steps=r["min_steps"], device=device,
                            seed=seed, progress=progress, desc="student on synthetic")


def dp_sgd_train(model: nn.Module, dataset: Dataset, *, ledger: L.PrivacyLedger, epochs: int, batch_size: int,
                 lr: float, max_grad_norm: float, noise_multiplier: float | None = None,
                 optimizer: str = "sgd", momentum: float = 0.9, device="cpu", seed: int = 0,
                 progress: Callable = _identity, desc: str = "dp-sgd", checkpointer=None) -> nn.Module:
    """DP-SGD (Abadi et al., CCS 2016) with Opacus: Poisson sampling at rate q = B/N, per-example
    clipping to ``max_grad_norm``, Gaussian noise ``noise_multiplier * max_grad_norm``.

    If ``noise_multiplier`` is None it is calibrated so that the planned steps fit the ledger's
    remaining budget. Every optimiser step records one ``subsampled_gaussian`` event *before* the
    noisy update is applied, so an overspending step never happens.

    ``checkpointer`` (``ctx.checkpointer``; None locally): the loop saves at step boundaries when
    it is due and resumes from its last save -- model, optimiser, the Poisson sampler's generator,
    the global RNGs (Opacus draws its noise from torch's) and the ledger -- so an interrupted and
    resumed run ends with the same model and ledger as an uninterrupted one.
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    n = len(dataset)
    sample_rate = min(1.0, batch_size / n)
    steps_per_epoch = max(1, round(1 / sample_rate))
    total_steps = epochs * steps_per_epoch
    if noise_multiplier is None:
        noise_multiplier = L.calibrate_gaussian(ledger.target_epsilon, ledger.delta, total_steps, sample_rate,
                                                prior_events=ledger.events)
    if not ModuleValidator.is_valid(model):
        model = ModuleValidator.fix(model)
    model.to(device).train()
    opt_cls = {"sgd": lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum),
               "adam": lambda p: torch.optim.Adam(p, lr=lr)}[optimizer]
    opt = opt_cls(model.parameters())
    loader = seeded_loader(dataset, batch_size, seed, device=device)
    engine = PrivacyEngine(accountant="rdp")  # its accountant is unused: our ledger accounts
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # Opacus, harmless
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                                 noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                                 poisson_sampling=True)
    inner = model._module if hasattr(model, "_module") else model
    state = {"model": inner, "optimizer": opt, "sampler": loader.generator}  # the Poisson sampler's generator
    start, resumed_sampler = 0, None
    if checkpointer is not None:
        start = checkpointer.resume(ledger=ledger, **state) or 0
        if start:  # saved inside an epoch's iterator: its sampler state is restored after the iterator exists
            resumed_sampler = loader.generator.get_state()
    event = L.subsampled_gaussian(noise_multiplier, sample_rate, steps=1)
    first_epoch = start // steps_per_epoch
    for epoch in progress(range(first_epoch, epochs), total=epochs - first_epoch, desc=desc):
        batches = iter(loader)  # draws the loader's base seed from the sampler's generator
        i = 0
        if resumed_sampler is not None:  # continue the saved iterator: its sampler state, its remaining batches
            loader.generator.set_state(resumed_sampler)
            i, resumed_sampler = start % steps_per_epoch, None
            batches = itertools.islice(batches, max(0, len(loader) - i))
        while True:  # as `for i, batch in enumerate(loader): if i >= steps_per_epoch: break`
            if checkpointer is not None and i < steps_per_epoch:
                checkpointer.maybe_save(epoch * steps_per_epoch + i, ledger=ledger, **state)
            batch = next(batches, None)
            if batch is None or i >= steps_per_epoch:
                break
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            if len(x) > 0:
                nn.functional.cross_entropy(model(x), y).backward()
            ledger.record(event)
            opt.step()
            i += 1
    return inner.eval()
