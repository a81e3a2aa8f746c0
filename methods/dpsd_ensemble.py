"""DPSD-ensemble: the record-level variant of DPSD (shared/design/dpsd.md, "Be exact about the
privacy unit"), combining DPSD's synthetic distillation with PATE's disjoint teachers
(Papernot et al., ICLR 2017).

The private split is partitioned into M disjoint shards and one teacher is trained per shard. Each
synthetic sample is annotated with the *sum* of the M teachers' centred top-k logits, each
normalised to L2 norm C, plus N(0, sigma^2 C^2 I_k). One private record lives in one shard, so it
can change one teacher, which moves each sample's aggregate by at most 2C (one normalised vector
replaced by another). A batch of b samples is therefore a Gaussian mechanism with L2 sensitivity
2C*sqrt(b): recorded as ``gaussian(noise_multiplier=sigma/2, steps=b)`` per iteration, a genuine
record-level (add/remove) guarantee. The rest (student on released annotations, generator against
the student) is DPSD's loop.
"""
import torch

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.privacy.mechanisms import normalise_rows, topk_support
from benchmark.training.distill import (
    AnnotationMemory,
    annotation_regression_loss,
    centred,
    make_generator_and_optimisers,
    release_synthetic,
    train_generator_against_student,
    train_student_on_memory,
)


class DPSDEnsemble(Method):
    """DPSD with a disjoint-shard teacher ensemble: record-level DP for the teachers' training data."""

    name = "dpsd-ensemble"
    family = "dpsd"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one private training record (rigorous; disjoint teacher shards)"
    citation = "Liu et al., IEEE TPAMI 2026 (arXiv 2601.19090) + Papernot et al., ICLR 2017"
    hparams = {
        "teachers": 10, "teacher_steps": 150, "iterations": 10, "batch_size": 64, "student_steps": 50, "student_batch": 128,
        "generator_steps": 5, "k": 10, "clip_norm": 5.0, "noise_multiplier": None, "student_loss": "mse",
        "memory": 60000, "lr_student": 1e-3, "lr_generator": 1e-3, "latent_dim": 64, "generator_width": 32,
        "w_adv": 1.0, "w_onehot": 0.5, "w_balance": 5.0, "w_entropy": 0.0,
        "downstream_samples": 2000,  # generator samples labelled by the private student, scored downstream
    }
    tiny = {"teachers": 2, "teacher_steps": 5, "iterations": 2, "batch_size": 16, "student_steps": 3, "generator_steps": 1, "downstream_samples": 100}

    def fit(self, ctx):
        h = ctx.hparams
        teachers = self._shard_teachers(ctx, h["teachers"], h["teacher_steps"])
        student = ctx.build_student()
        gen, opt_s, opt_g = make_generator_and_optimisers(ctx, student, h)
        k, b = min(h["k"], ctx.num_classes), h["batch_size"]
        event = lambda s: [L.gaussian(s / 2, steps=b * h["iterations"])]  # noqa: E731 - sensitivity 2C per sample
        sigma = h["noise_multiplier"] if h["noise_multiplier"] is not None else \
            L.calibrate_noise(event, ctx.epsilon, ctx.delta)
        ctx.metrics.update(noise_multiplier=sigma, teachers=len(teachers))
        memory = AnnotationMemory(h["memory"])
        rng = torch.Generator().manual_seed(ctx.seed)
        for _ in ctx.progress(range(h["iterations"]), desc="dpsd-ensemble"):
            z = gen.sample_latent(b, ctx.device)
            with torch.no_grad():
                x = gen(z)
                support = topk_support(student(x), k)
                votes = sum(normalise_rows(centred(t(x).gather(1, support)), h["clip_norm"]) for t in teachers)
            ctx.ledger.record(L.gaussian(sigma / 2, steps=b))
            annotation = votes + sigma * h["clip_norm"] * torch.randn_like(votes)
            memory.add(x, support, annotation / len(teachers))
            train_student_on_memory(student, opt_s, memory,
                                    lambda lg, s, a: annotation_regression_loss(lg, s, a, h["student_loss"]),
                                    steps=h["student_steps"], batch_size=h["student_batch"], rng=rng)
            released = annotation / len(teachers)
            train_generator_against_student(
                gen, student, opt_g, z,
                lambda lg, s=support, a=released: ((centred(lg.gather(1, s)) - a) ** 2).sum(1).mean(),
                steps=h["generator_steps"], w_adv=h["w_adv"], w_onehot=h["w_onehot"], w_balance=h["w_balance"], w_entropy=h["w_entropy"])
        ctx.metrics.update(teacher_queries=b * h["iterations"] * len(teachers), iterations=h["iterations"])
        release_synthetic(ctx, gen, student, h["downstream_samples"])
        return student.eval()

    @staticmethod
    def _shard_teachers(ctx, m, steps):
        data = ctx.private_data
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(ctx.seed))
        x, y = data.tensors
        shards = order.chunk(m)
        return [ctx.train_teacher(torch.utils.data.TensorDataset(x[idx], y[idx]), tag=f"dpsd-shard-{i}-of-{m}-seed{ctx.seed}",
                                  min_steps=steps)
                for i, idx in enumerate(shards)]
