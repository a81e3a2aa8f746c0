"""DFAD: Data-Free Adversarial Distillation (Fang et al., arXiv 1912.11006, 2019).

Min-max game on the mean absolute error between teacher and student logits:
the generator maximises ||T(G(z)) - S(G(z))||_1 (one step), the student minimises it
(5 steps per generator step). Non-private reference; ``dp_annotation=gaussian`` adds
DPSD's Gaussian annotation.
"""
from benchmark.synthesis.preset import DataFreePreset


class DFAD(DataFreePreset):
    name = "dfad"
    family = "data-free-kd"
    needs = {"teacher"}
    privacy_unit = "none"
    citation = "Fang et al., arXiv 2019"
    mode = "generator"
    adv_kind = "l1"
    student_loss = "l1"
    hparams = {"w_adv": 1.0, "g_steps": 1, "kd_steps": 5, "iterations": 100}
    tiny = {"iterations": 3, "kd_steps": 2}
