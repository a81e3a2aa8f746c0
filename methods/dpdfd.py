"""DPDFD: differentially private data-free distillation (Liu et al., IJCAI 2023, arXiv 2304.12528).

Three players, alternating per iteration:
1. the generator makes a synthetic batch x = G(z) (b samples; no private data is read);
2. teacher and student see x; each sample's distillation-loss gradient w.r.t. the student's
   logits, g_i = softmax(S(x_i)) - softmax(T(x_i)) (KL(T||S), T = 1), is normalised to L2
   norm C and released with N(0, sigma^2 C^2) noise on each coordinate
   (:func:`benchmark.privacy.mechanisms.gaussian_annotation` over all classes: no top-k,
   no student prior); the student descends along the noisy logit gradients
   (backpropagated through S, averaged over the batch);
3. the generator is updated with the student as a fixed discriminator (the raw teacher never
   shapes G): DAFL-style one-hot + class-balance terms on S(G(z)) (the paper's exact
   generator loss is not in the text available to us: documented in docs/data-free.md).
Accounting: one Gaussian mechanism (sensitivity C: one synthetic sample's annotation differs,
the paper's adjacency) per student step; sigma calibrated by the ledger for
``iterations * kd_steps`` releases at the cell's (epsilon, delta).
"""
import torch

from benchmark import Method
from benchmark.models import Generator
from benchmark.privacy import ledger as L
from benchmark.privacy import mechanisms as M
from benchmark.synthesis.distill import save_sample_grid
from benchmark.synthesis.synthesizer import Synthesizer


class DPDFD(Method):
    name = "dpdfd"
    family = "dp-data-free"
    needs = {"teacher"}
    privacy_unit = "record"
    adjacency = "one synthetic sample's annotation differs per release (paper-style claim)"
    citation = "Liu et al., IJCAI 2023"
    hparams = {"iterations": 80, "kd_steps": 1, "batch_size": 256, "clip": 1.0, "lr_s": 5e-3,
               "lr_g": 1e-3, "g_steps": 1, "w_oh": 1.0, "w_balance": 5.0, "latent_dim": 64,
               "gen_channels": 32}
    tiny = {"iterations": 3, "batch_size": 32}

    def fit(self, ctx):
        hp, device = ctx.hparams, ctx.device
        teacher = ctx.teacher.eval().requires_grad_(False)
        student = ctx.build_student()
        G = Generator(ctx.input_shape, latent_dim=hp["latent_dim"], base_channels=hp["gen_channels"]).to(device)
        synth = Synthesizer(teacher=teacher, student=student, judge=student, input_shape=ctx.input_shape,
                            num_classes=ctx.num_classes, weights={"oh": hp["w_oh"], "balance": hp["w_balance"]},
                            mode="generator", generator=G, lr_g=hp["lr_g"], batch_size=hp["batch_size"],
                            g_steps=hp["g_steps"], device=device)
        opt_s = torch.optim.Adam(student.parameters(), lr=hp["lr_s"])
        releases = hp["iterations"] * hp["kd_steps"]
        sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=releases, prior_events=ctx.ledger.events)
        ctx.metrics["noise_multiplier"] = sigma
        all_classes = torch.arange(ctx.num_classes, device=device)
        for _ in ctx.progress(range(hp["iterations"]), desc="dpdfd"):
            for _k in range(hp["kd_steps"]):
                x, _z = synth.sample(hp["batch_size"])
                student.train()
                s_out = student(x)
                with torch.no_grad():  # per-sample logit gradient of KL(T || S)
                    g = torch.softmax(s_out, 1) - torch.softmax(teacher(x), 1)
                ctx.ledger.record(M.gaussian_annotation_event(sigma))
                noisy = M.gaussian_annotation(g, all_classes.expand(len(x), -1), clip_norm=hp["clip"],
                                              noise_multiplier=sigma)
                opt_s.zero_grad()
                s_out.backward(noisy / len(x))
                opt_s.step()
            synth.generator_step()
        synth.remove_hooks()
        save_sample_grid(ctx, synth.sample(64)[0])
        ctx.metrics["teacher_queries"] = releases * hp["batch_size"]
        student.eval()
        return student
