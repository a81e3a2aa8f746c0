"""PATE-GAN: a GAN whose discriminator is a student of PATE-aggregated teacher discriminators.

Jordon, Yoon & van der Schaar, "PATE-GAN: Generating Synthetic Data with Differential
Privacy Guarantees", ICLR 2019.

Mechanism (Algorithm 1): the private data are split into k disjoint shards, each with a
teacher discriminator trained (non-privately; teachers are never released) to tell its
shard from generated samples. A student discriminator is trained only on *generated*
samples labelled real/fake by the PATE mechanism: the teachers' 2-bin vote histogram plus
Lap(1/lambda) noise on each bin, argmax (LNMax). The generator is trained against the
student. Only the noisy labels touch private data; their cost is PATE's data-dependent
moments accountant (Papernot et al. 2017, as in the paper), computed by
``benchmark.privacy.pate`` and recorded before the labels are used, once per generator
iteration for all the student's queries of that iteration. Teachers are warmed up for
``teacher_warmup`` steps before the first query (untrained teachers disagree, and
disagreement is what the data-dependent bound charges for). As in the paper, training stops
when the next iteration's queries would exceed the budget (or after ``iterations``).
The data-dependent epsilon is not itself sanitised (no smooth sensitivity), as in the paper.
"""
import numpy as np
import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.privacy import pate
from benchmark.training.gan import (
    DiscriminatorEnsemble,
    bce_loss,
    disjoint_shards,
    generate_synthetic,
    private_tensors,
    random_labels,
)


class PATEGAN(Method):
    """PATE-GAN (Jordon et al., ICLR 2019): teacher discriminators, LNMax-labelled student discriminator."""
    name = "pate-gan"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Jordon, Yoon & van der Schaar, ICLR 2019"
    hparams = {
        "num_teachers": 30,       # k
        "gamma": 0.5,             # lambda: Laplace noise Lap(1/lambda) on each vote count
        "iterations": 100,        # at most this many generator iterations (the budget may stop earlier)
        "teacher_warmup": 50,     # teacher steps before the first query (teachers are internal: no cost)
        "teacher_steps": 1,       # n_T
        "student_steps": 1,       # n_S
        "batch_size": 32,
        "lr_t": 1e-3,
        "lr_s": 1e-3,
        "lr_g": 1e-3,
        "latent_dim": 16,
        "width": 16,
        "num_synthetic": 2000,
    }
    tiny = {"num_teachers": 4, "iterations": 2, "num_synthetic": 200, "batch_size": 4, "student_steps": 1, "gamma": 0.05}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        k, B, gamma = hp["num_teachers"], hp["batch_size"], hp["gamma"]
        rng = np.random.default_rng(ctx.seed)
        shards = [s.to(dev) for s in disjoint_shards(len(x_all), k, ctx.seed)]
        make_d = lambda: ConditionalDiscriminator(ctx.input_shape, K, hp["width"]).to(dev)  # noqa: E731
        teachers = DiscriminatorEnsemble(make_d, [x_all[s] for s in shards], [y_all[s] for s in shards], hp["lr_t"])
        S, G = make_d(), ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        opt_s = torch.optim.Adam(S.parameters(), lr=hp["lr_s"], betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr_g"], betas=(0.5, 0.999))
        queries = done = 0
        for _ in range(hp["teacher_warmup"]):
            teachers.train_step(G.sample, B)
        for _ in ctx.progress(range(hp["iterations"]), desc="pate-gan"):
            # 1. teacher discriminators on their shards vs generated samples
            for _ in range(hp["teacher_steps"]):
                teachers.train_step(G.sample, B)
            # 2. PATE labels for the student's generated samples (one ledger event per iteration)
            with torch.no_grad():
                y_q = random_labels(B * hp["student_steps"], K, dev)
                u = G.sample(y_q)
                real_votes = teachers.votes(u, y_q).cpu().numpy()
            hist = np.stack([k - real_votes, real_votes], axis=1)      # [fake, real] counts
            if ctx.private:
                rdp = pate.lnmax_release_rdp(hist, gamma, L.ORDERS).sum(axis=0)
                event = L.pate_data_dependent(L.ORDERS, rdp, aggregator="LNMax", queries=len(hist),
                                              note=pate.NOT_PRIVATE_NOTE)
                if not ctx.ledger.remaining_ok([event]):
                    break
                ctx.ledger.record(event)
            labels = torch.as_tensor(pate.lnmax(hist, gamma, rng), device=dev).float()
            queries += len(hist)
            # 3. student discriminator on the PATE-labelled generated samples
            for j in range(hp["student_steps"]):
                sl = slice(j * B, (j + 1) * B)
                out = S(u[sl], y_q[sl])
                loss_s = torch.nn.functional.binary_cross_entropy_with_logits(out, labels[sl])
                opt_s.zero_grad(set_to_none=True)
                loss_s.backward()
                opt_s.step()
            # 4. generator against the student
            y_g = random_labels(B, K, dev)
            loss_g = bce_loss(S(G.sample(y_g), y_g), True).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            done += 1
        ctx.metrics.update(teacher_queries=queries, generator_iterations=done)
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
