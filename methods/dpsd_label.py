"""DPSD, label-sensitive mode: Liu et al., IEEE TPAMI 2026 (arXiv 2601.19090), with the selective
randomized response of Liu et al., MMSP 2022 (arXiv 2409.12384) and RR-with-prior of Ghazi et al.,
NeurIPS 2021.

Per iteration: the generator makes x = G(z); the teacher's label argmax T(x_i) is released by
randomized response, over all classes or (``student_prior``) restricted to the top-k classes of the
private student's prediction (RR-with-prior; a true label outside the support is replaced by a
uniform support member);
the student trains with cross-entropy on all labels released so far (post-processing); the
generator is updated against the student only. After the last release the student takes
``final_steps`` more steps on every released label with a cosine-decayed learning rate
(post-processing, as in ``dpsd``). With ``student_prior`` on, k follows a schedule: the full label
set while the student is still untrained, then ``k`` (as LP-2ST earns its prior in stages). On
digits it is off by default: validation accuracy says a student trained on one release's noisy
labels is not yet good enough for its top-3 to hold the teacher's label (docs/dpsd.md, item 12).
Accounting: in each iteration at most one sample's label differs, so one iteration is an
epsilon_q-DP release (``randomized_response`` event); T iterations compose in the ledger (RDP and
basic composition, whichever is smaller); epsilon_q is calibrated from the target epsilon.
"""
import torch
from torch.nn import functional as F

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.privacy.mechanisms import prior_support, rr_with_prior
from benchmark.training.distill import (
    AnnotationMemory,
    make_generator_and_optimisers,
    release_synthetic,
    synthesize_and_query,
    train_generator_against_student,
    train_student_on_memory,
)


class DPSDLabel(Method):
    """DPSD (label-sensitive mode): RR (optionally with the student's top-k as prior) on the teacher's
    labels of synthetic samples."""

    name = "dpsd-label"
    family = "dpsd"
    needs = {"teacher"}
    privacy_unit = "label"
    adjacency = "one synthetic sample's teacher label changed per release (paper-style; see README)"
    citation = "Liu et al., IEEE TPAMI 2026 (arXiv 2601.19090); Liu et al., MMSP 2022"
    hparams = {
        # digits defaults: the same schedule and generator as dpsd (docs/dpsd.md)
        "iterations": 3, "batch_size": 100000, "student_steps": 1000, "student_batch": 256, "final_steps": 3000,
        "generator_steps": 200, "generator_batch": 512, "latent": "prior",
        "k": 3, "full_support_iterations": 1, "student_prior": False, "epsilon_per_release": None,
        "memory": 1000000, "lr_student": 1e-3, "lr_generator": 1e-3, "latent_dim": 64, "generator_width": 32,
        "w_adv": 0.0, "w_onehot": 0.0, "w_balance": 5.0, "w_entropy": 0.0,
        "downstream_samples": 2000,  # generator samples labelled by the private student, scored downstream
    }
    tiny = {"iterations": 2, "batch_size": 64, "student_steps": 3, "final_steps": 2, "generator_steps": 1,
            "generator_batch": 32, "full_support_iterations": 1, "downstream_samples": 100}

    def fit(self, ctx):
        h = ctx.hparams
        student, teacher = ctx.build_student(), ctx.teacher
        gen, opt_s, opt_g = make_generator_and_optimisers(ctx, student, h)
        eps_q = h["epsilon_per_release"]
        if eps_q is None and ctx.private:  # largest per-release epsilon whose T-fold composition fits
            eps_q = 1.0 / L.calibrate_noise(lambda s: [L.randomized_response(1.0 / s, h["iterations"])],
                                            ctx.epsilon, ctx.delta)
        ctx.metrics.update(epsilon_per_release=eps_q)
        memory = AnnotationMemory(h["memory"])
        rng = torch.Generator().manual_seed(ctx.seed)
        rr_rng = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 1)
        queries = 0

        def cross_entropy(logits, _support, labels):
            return F.cross_entropy(logits, labels)

        for it in ctx.progress(range(h["iterations"]), desc="dpsd-label"):
            z, x, (s_logits, t_logits) = synthesize_and_query(gen, [student, teacher], h["batch_size"], ctx.device)
            t_labels = t_logits.argmax(1)
            queries += len(x)
            support = prior_support(s_logits, h["k"], earned=h["student_prior"] and it >= h["full_support_iterations"])
            ctx.ledger.record(L.randomized_response(eps_q))
            labels = rr_with_prior(t_labels, support, eps_q, generator=rr_rng)
            memory.add(x, labels.unsqueeze(1), labels)  # the support is not needed again: CE on labels
            train_student_on_memory(student, opt_s, memory, cross_entropy, steps=h["student_steps"],
                                    batch_size=h["student_batch"], rng=rng)
            train_generator_against_student(gen, student, opt_g, z, lambda lg, y=labels: F.cross_entropy(lg, y),
                                            steps=h["generator_steps"], w_adv=h["w_adv"], w_onehot=h["w_onehot"],
                                            w_balance=h["w_balance"], w_entropy=h["w_entropy"],
                                            fresh_batch=h["generator_batch"])
        train_student_on_memory(student, opt_s, memory, cross_entropy, steps=h["final_steps"],
                                batch_size=h["student_batch"], rng=rng, anneal=True)  # consolidation: no release
        ctx.metrics.update(teacher_queries=queries, iterations=h["iterations"])
        release_synthetic(ctx, gen, student, h["downstream_samples"])
        return student.eval()
