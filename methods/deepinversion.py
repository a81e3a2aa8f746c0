"""DeepInversion with Adaptive DeepInversion's competition (Yin et al., CVPR 2020).

Pixels are optimised from noise (random jitter each step) to minimise
    CE(T(x), y) + a_tv R_TV(x) + a_l2 ||x||_2 + a_f sum_l ||mu_l(x) - mu_l||_2 + ||s2_l(x) - s2_l||_2
                + a_c (1 - JS(p_T(x), p_S(x)))
(target classes y sampled; R_feature matches the teacher's BatchNorm running statistics;
the ADI competition term seeks samples on which student and teacher disagree, JS at
temperature 3). Each optimised batch joins a pool; the student distils (KL, T=20) from the
teacher on pool batches. Non-private reference; ``dp_annotation=gaussian`` adds DPSD's
Gaussian annotation (the BN/one-hot terms then read the student, see docs/data-free.md).
"""
from benchmark.synthesis.preset import DataFreePreset


class DeepInversion(DataFreePreset):
    name = "deepinversion"
    family = "data-free-kd"
    needs = {"teacher"}
    privacy_unit = "none"
    citation = "Yin et al., CVPR 2020"
    mode = "inversion"
    adv_kind = "js"
    student_loss = "kl"
    hparams = {"w_oh": 1.0, "w_bn": 10.0, "w_adv": 1.0, "w_tv": 1e-4, "w_l2": 1e-5,
               "g_steps": 20, "lr_g": 0.05, "kd_steps": 20, "iterations": 12, "temperature": 20.0}
    tiny = {"iterations": 2, "g_steps": 3, "kd_steps": 2}
