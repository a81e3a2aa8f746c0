"""CMI: Contrastive Model Inversion for data-free knowledge distillation (Fang et al., IJCAI 2021).

For each batch a freshly initialised generator and its latent codes are optimised to minimise
    a_bn L_BN + a_oh CE(T(x), y) + a_adv L_adv + a_cr L_cr
where L_adv = -KL(T || S) on samples where S and T still agree, and L_cr is an InfoNCE
loss: each sample's local view (random resized crop) must match its own global view
among the current batch and a memory bank of earlier samples, on features made of the
per-instance channel means at the teacher's BatchNorm inputs, through a projection head.
The best batch joins the pool (and its features the bank); the student distils
(KL, T=20) on pool batches. Weights 1 / 1 / 0.5 / 0.8 and cr_T 0.2 follow the paper's
CIFAR-10 script; the paper optimises each batch 200 steps at lr 1e-3, the digits default
30 steps at lr 1e-2 (chosen by validation accuracy within the 20 s budget). Non-private reference; ``dp_annotation=gaussian`` adds DPSD's Gaussian
annotation.
"""
from benchmark.synthesis.preset import DataFreePreset


class CMI(DataFreePreset):
    name = "cmi"
    family = "data-free-kd"
    needs = {"teacher"}
    privacy_unit = "none"
    citation = "Fang et al., IJCAI 2021"
    mode = "reset_generator"
    adv_kind = "masked_kl"
    student_loss = "kl"
    hparams = {"w_bn": 1.0, "w_oh": 1.0, "w_adv": 0.5, "w_cr": 0.8, "cr_temperature": 0.2,
               "n_neg": 512, "bank_size": 2048, "g_steps": 30, "lr_g": 1e-2, "kd_steps": 40,
               "iterations": 6, "temperature": 20.0}
    tiny = {"iterations": 2, "g_steps": 3, "kd_steps": 2, "n_neg": 32, "bank_size": 128}
