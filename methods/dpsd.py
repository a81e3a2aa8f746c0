"""DPSD, data-sensitive mode: Liu, Ge, Wang, Li, Liu, "Privacy-Preserving Model Transcription with
Differentially Private Synthetic Distillation", IEEE TPAMI 2026 (arXiv 2601.19090).

Per iteration (shared/design/dpsd.md):
  1. the generator makes a synthetic batch x = G(z) of size b (``latent="prior"``: z is a
     data-independent structured-noise image and G adds a learned residual; models.PriorGenerator);
  2. private annotation: the teacher's signal on x is released only through the Gaussian
     mechanism on per-sample normalised vectors (norm C, noise sigma*C), restricted to the
     top-k classes of the (already private) student's prediction (the full class set for the
     first ``full_support_iterations``: an untrained student's top-k rarely holds the teacher's
     class, so the prior is earned first). Noise placement:
       - "annotation": each sample's centred top-k teacher logits, normalised to C, plus noise
         (one Gaussian release per iteration); the student regresses on these noisy
         annotations for ``student_steps`` steps, drawing from all annotations released so far
         (post-processing);
       - "gradient": each sample's gradient of the distillation loss w.r.t. the student's
         parameters, normalised to C, summed, plus noise (one release per student step);
  3. the student is updated with the noisy signal;
  4. the generator is updated against the student only (class balance of the student's
     predictions by default; optional hard-sample term w.r.t. the released annotation, DAFL one-hot,
     student entropy): post-processing, never the raw teacher.
After the last release the student takes ``final_steps`` more steps on everything released, with a
cosine-decayed learning rate (post-processing; annotation placement only: the gradient placement
keeps nothing it may reuse).
Synthetic samples cost no budget, so the defaults release few, very large batches: sigma grows
like the square root of the number of releases, while the noise averages out over samples.
Accounting: each release is a Gaussian mechanism with noise multiplier sigma (sensitivity C:
one synthetic sample's normalised vector added/removed); sigma is calibrated from the target
epsilon for the planned number of releases.
"""
import torch

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.privacy.mechanisms import gaussian_annotation, noisy_normalised_sum, prior_support
from benchmark.training.distill import (
    AnnotationMemory,
    annotation_regression_loss,
    centred,
    make_generator_and_optimisers,
    release_synthetic,
    synthesize_and_query,
    train_generator_against_student,
    train_student_on_memory,
)
from benchmark.training.persample import assign_flat_gradient, flatten_per_sample, per_sample_gradients


class DPSD(Method):
    """DPSD (data-sensitive mode): generator + Gaussian-annotated teacher + private student."""

    name = "dpsd"
    family = "dpsd"
    needs = {"teacher"}
    privacy_unit = "record"
    adjacency = "one synthetic sample's annotation added/removed per release (paper-style; see README)"
    citation = "Liu et al., IEEE TPAMI 2026 (arXiv 2601.19090)"
    hparams = {
        "noise_placement": "annotation",  # "annotation" (per-sample noisy labels) or "gradient" (student gradients)
        # digits defaults, chosen by validation_accuracy (public pool, never eval): docs/dpsd.md
        "iterations": 5, "batch_size": 100000, "student_steps": 1000, "student_batch": 256, "final_steps": 3000,
        "generator_steps": 200, "generator_batch": 512, "latent": "prior",
        "k": 5, "full_support_iterations": 1, "student_prior": True, "clip_norm": 4.0, "noise_multiplier": None,
        "student_loss": "mse", "memory": 1000000, "lr_student": 1e-3, "lr_generator": 1e-3,
        "latent_dim": 64, "generator_width": 32, "w_adv": 0.0, "w_onehot": 0.0, "w_balance": 5.0, "w_entropy": 0.0,
        "downstream_samples": 2000,  # generator samples labelled by the private student, scored downstream
    }
    tiny = {"iterations": 2, "batch_size": 64, "student_steps": 3, "final_steps": 2, "generator_steps": 1,
            "generator_batch": 32, "downstream_samples": 100}

    def fit(self, ctx):
        h = ctx.hparams
        student, teacher = ctx.build_student(), ctx.teacher
        gen, opt_s, opt_g = make_generator_and_optimisers(ctx, student, h)
        k = ctx.num_classes if not h["student_prior"] else min(h["k"], ctx.num_classes)
        per_iter_releases = 1 if h["noise_placement"] == "annotation" else h["student_steps"]
        releases = h["iterations"] * per_iter_releases
        sigma = h["noise_multiplier"] if h["noise_multiplier"] is not None else (
            L.calibrate_gaussian(ctx.epsilon, ctx.delta, releases) if ctx.private else 0.0)
        ctx.metrics.update(noise_multiplier=sigma, releases=releases, k=k)
        memory = AnnotationMemory(h["memory"])

        def loss(logits, support, annotation):
            return annotation_regression_loss(logits, support, annotation, h["student_loss"])

        rng = torch.Generator(device="cpu").manual_seed(ctx.seed)
        counters = {"queries": 0}
        state = dict(student=student, generator=gen, opt_student=opt_s, opt_generator=opt_g, memory=memory, sampler=rng)
        ck, start = ctx.checkpointer, 0
        if ck is not None:  # a requeued job continues from its last saved iteration
            start = ck.resume(ledger=ctx.ledger, extra=counters, **state) or 0
        for it in ctx.progress(range(start, h["iterations"]), desc="dpsd"):
            if ck is not None:
                ck.maybe_save(it, ledger=ctx.ledger, extra=counters, **state)
            z, x, (s_logits, t_logits) = synthesize_and_query(gen, [student, teacher], h["batch_size"], ctx.device)
            counters["queries"] += len(x)
            support = prior_support(s_logits, k, earned=it >= h["full_support_iterations"])
            if h["noise_placement"] == "annotation":
                ctx.ledger.record(L.gaussian(sigma))  # guard first: an overspending release never happens
                annotation = gaussian_annotation(t_logits, support, clip_norm=h["clip_norm"], noise_multiplier=sigma)
                memory.add(x, support, annotation)
                train_student_on_memory(student, opt_s, memory, loss, steps=h["student_steps"],
                                        batch_size=h["student_batch"], rng=rng)

                def disagreement(logits, support=support, released=annotation):
                    return ((centred(logits.gather(1, support)) - released) ** 2).sum(1).mean()
            else:
                clean = gaussian_annotation(t_logits, support, clip_norm=h["clip_norm"], noise_multiplier=0.0)
                self._student_dp_gradient(ctx, student, opt_s, x, support, clean, h, sigma)
                disagreement = None  # nothing per-sample was released: the generator sees the student only
            train_generator_against_student(gen, student, opt_g, z, disagreement, steps=h["generator_steps"],
                                            w_adv=h["w_adv"], w_onehot=h["w_onehot"], w_balance=h["w_balance"],
                                            w_entropy=h["w_entropy"], fresh_batch=h["generator_batch"])
        if h["noise_placement"] == "annotation":  # consolidation on everything released: post-processing
            train_student_on_memory(student, opt_s, memory, loss, steps=h["final_steps"],
                                    batch_size=h["student_batch"], rng=rng, anneal=True)
        ctx.metrics.update(teacher_queries=counters["queries"], iterations=h["iterations"])
        release_synthetic(ctx, gen, student, h["downstream_samples"])
        return student.eval()

    @staticmethod
    def _student_dp_gradient(ctx, student, opt, x, support, target, h, sigma):
        """Placement (a): per-sample gradients normalised to C, summed, Gaussian noise, averaged."""
        student.train()

        def loss_fn(out, packed):
            sup, tgt = packed[:, :support.shape[1]].long(), packed[:, support.shape[1]:]
            return annotation_regression_loss(out, sup, tgt, h["student_loss"], padded=False)

        packed = torch.cat([support.float(), target], dim=1)
        for _ in range(h["student_steps"]):
            idx = torch.randint(0, len(x), (min(h["student_batch"], len(x)),))
            grads = flatten_per_sample(per_sample_gradients(student, loss_fn, x[idx], packed[idx]))
            ctx.ledger.record(L.gaussian(sigma))
            noisy = noisy_normalised_sum(grads, clip_norm=h["clip_norm"], noise_multiplier=sigma) / len(idx)
            opt.zero_grad(set_to_none=True)
            assign_flat_gradient(student, noisy)
            opt.step()
