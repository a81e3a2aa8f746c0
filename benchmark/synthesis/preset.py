"""Base class of the data-free distillation presets in ``methods/`` (dafl, zskt, dfad, deepinversion, cmi).

A preset states its paper's loss weights (``w_<term>`` hyperparameters, see
:data:`benchmark.synthesis.losses.TERMS`), its adversarial discrepancy, its synthesis
mode and its student loss; everything else is :func:`benchmark.synthesis.distill.data_free_distill`.
"""
from __future__ import annotations

from typing import ClassVar

from ..method import Method
from .distill import COMMON_HPARAMS, data_free_distill
from .losses import TERMS


class DataFreePreset(Method):
    family = "data-free-kd"
    needs = {"teacher"}
    privacy_unit = "none"
    adjacency = "none (non-private reference); with dp_annotation: one synthetic sample's annotation per release"
    hparams = {**COMMON_HPARAMS, **{f"w_{t}": 0.0 for t in TERMS}}

    mode: ClassVar[str] = "generator"      # generator | inversion | reset_generator
    adv_kind: ClassVar[str] = "l1"         # see losses.ADVERSARIAL
    student_loss: ClassVar[str] = "kl"     # kl (temperature hparam) | l1
    at_weight_key: ClassVar[str | None] = None

    def effective_privacy_unit(self) -> str:
        """'record' (paper-style claim) when the DP annotation step is on, else 'none'."""
        return "record" if self.config.get("dp_annotation", "none") != "none" else "none"

    def loss_weights(self) -> dict:
        return {t: float(self.config[f"w_{t}"]) for t in TERMS}

    def fit(self, ctx):
        at = float(ctx.hparams[self.at_weight_key]) if self.at_weight_key else 0.0
        return data_free_distill(ctx, weights={t: float(ctx.hparams[f"w_{t}"]) for t in TERMS},
                                 adv_kind=self.adv_kind, mode=self.mode, student_loss=self.student_loss,
                                 at_weight=at)
