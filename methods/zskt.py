"""ZSKT: Zero-shot Knowledge Transfer via adversarial belief matching (Micaelli & Storkey, NeurIPS 2019).

Generator maximises KL(T(x) || S(x)) on x = G(z) (n_g = 1 step); the student then takes
n_s = 10 steps minimising KL(T || S) + beta * sum_l ||a_S^l - a_T^l||^2, the attention
transfer term on the spatial attention maps (channel-mean of squared activations,
L2-normalised) at the end of each resolution group. The paper's beta = 250 is for 32x32
inputs; the squared difference is averaged over map positions, so its weight scales with
1/(H*W): the digits (8x8) default is beta = 16 (250 * 64/1024; 250 via grid override at 32x32).
Non-private reference; ``dp_annotation=gaussian`` adds DPSD's Gaussian annotation
(the AT term, which reads teacher activations, is then off).
"""
from benchmark.synthesis.preset import DataFreePreset


class ZSKT(DataFreePreset):
    name = "zskt"
    family = "data-free-kd"
    needs = {"teacher"}
    privacy_unit = "none"
    citation = "Micaelli & Storkey, NeurIPS 2019"
    mode = "generator"
    adv_kind = "kl"
    student_loss = "kl"
    at_weight_key = "at_beta"
    hparams = {"w_adv": 1.0, "at_beta": 16.0, "g_steps": 1, "kd_steps": 10, "iterations": 50,
               "temperature": 1.0}
    tiny = {"iterations": 2, "kd_steps": 2}
