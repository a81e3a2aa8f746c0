"""DAFL: Data-Free Learning of student networks (Chen et al., ICCV 2019).

Generator (teacher as fixed discriminator) minimises
    L_G = L_oh + alpha * L_a + beta * L_ie
(one-hot: CE of T(G(z)) against its argmax; activation: -mean |f_T| of the teacher's
penultimate features; information entropy: sum_c p_c log p_c of the batch-mean
prediction), alternating 1:1 with student steps on KD loss (KL to the teacher, T=1).
alpha = 0.1, beta = 5 are the paper's MNIST values (CIFAR: beta = 20 via grid override).
Non-private reference; ``dp_annotation=gaussian`` adds DPSD's Gaussian annotation.
"""
from benchmark.synthesis.preset import DataFreePreset


class DAFL(DataFreePreset):
    name = "dafl"
    family = "data-free-kd"
    needs = {"teacher"}
    privacy_unit = "none"
    citation = "Chen et al., ICCV 2019"
    mode = "generator"
    student_loss = "kl"
    hparams = {"w_oh": 1.0, "w_act": 0.1, "w_balance": 5.0, "g_steps": 1, "kd_steps": 1,
               "iterations": 250, "temperature": 1.0}
    tiny = {"iterations": 3}
