"""DP-SGD with tempered sigmoid activations: Papernot, Thakurta, Song, Chien & Erlingsson,
"Tempered sigmoid activations for deep learning with differential privacy", AAAI 2021.

Algorithm: DP-SGD (Abadi et al. 2016: Poisson sampling q = B/N, per-example clipping to C,
Gaussian noise sigma C, RDP accounting of the subsampled Gaussian, sigma calibrated to the budget)
on the common student whose activations are tempered sigmoids
    phi_{s,T,o}(x) = s / (1 + exp(-T x)) - o,
bounded activations that keep gradient norms (and so the clipping bias) small. The paper's
recommended member is s = 2, T = 2, o = 1, i.e. tanh (the default here).
"""
import torch
from torch import nn

from benchmark import Method
from benchmark.training import dp_sgd_train


class TemperedSigmoid(nn.Module):
    def __init__(self, scale: float, temperature: float, offset: float):
        super().__init__()
        self.scale, self.temperature, self.offset = scale, temperature, offset

    def forward(self, x):
        return self.scale * torch.sigmoid(self.temperature * x) - self.offset


def tempered(model: nn.Module, scale: float, temperature: float, offset: float) -> nn.Module:
    """Replace every activation of the (tanh-built) student by phi_{s,T,o}."""
    for name, child in model.named_children():
        if isinstance(child, (nn.Tanh, nn.ReLU)):
            setattr(model, name, TemperedSigmoid(scale, temperature, offset))
        else:
            tempered(child, scale, temperature, offset)
    return model


class DPSGDTanh(Method):
    """DP-SGD on the common student with tempered-sigmoid (default: tanh) activations."""

    name = "dp-sgd-tanh"
    family = "dp-training"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Papernot et al., AAAI 2021"
    # dp-sgd's schedule (the paper changes only the activation, at equal hyperparameters)
    hparams = {"epochs": 30, "batch_size": 256, "lr": 1.0, "momentum": 0.0, "max_grad_norm": 1.0,
               "optimizer": "sgd", "width": 16, "scale": 2.0, "temperature": 2.0, "offset": 1.0}
    tiny = {"epochs": 1}

    def fit(self, ctx):
        h = ctx.hparams
        model = tempered(ctx.build_student(activation="tanh", width=h["width"]), h["scale"], h["temperature"], h["offset"])
        return dp_sgd_train(model, ctx.private_data, ledger=ctx.ledger, epochs=h["epochs"], batch_size=h["batch_size"],
                            lr=h["lr"], momentum=h["momentum"], max_grad_norm=h["max_grad_norm"],
                            optimizer=h["optimizer"], device=ctx.device, seed=ctx.seed, progress=ctx.progress,
                            checkpointer=ctx.checkpointer)
