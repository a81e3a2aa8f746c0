"""G-PATE: a generator trained through privately aggregated gradients of teacher discriminators.

Long, Wang, Yang, Kailkhura, Zhang, Gunter & Li, "G-PATE: Scalable Differentially Private Data
Generator via Private Aggregation of Teacher Discriminators", NeurIPS 2021.

Mechanism (the paper's training loop and private gradient aggregator):
  1. the private data are split into N disjoint shards, one teacher discriminator each, trained
     (non-privately; teachers are never released) on its shard against generated samples;
  2. per generator step, for a batch of generated samples x_j = G(z_j, y_j) (labels uniform),
     every teacher t gives g_tj = -d loss_G(D_t(x_j, y_j)) / d x_j;
  3. per sample: a fresh Gaussian random projection P_j (D x d), each teacher's P_j^T g_tj is
     clipped to [-c, c] and discretised into ``nbins`` bins; every projected dimension is a query
     whose teacher votes are aggregated with Confident-GNMax (answered iff the top count + N(0,
     sigma_thresh^2) >= threshold * N, then argmax of the counts + N(0, sigma^2)); an answered
     dimension takes its bin's centre, an unanswered one 0; the result v_j is projected back, P_j v_j;
  4. the generator regresses onto the updated images: loss = sum_j ||G(z_j, y_j) - (x_j + P_j v_j)||^2.

Accounting: B * d Confident-GNMax queries per step, their RDP composed. ``accounting =
"data-dependent"`` (the paper's): Papernot et al. 2018's data-dependent bounds (Theorem 6; threshold
step on the top count, GNMax on the histogram) from ``benchmark.privacy.pate``, one
``pate_data_dependent`` event per step, recorded before the aggregate is used; that epsilon is not
itself DP (no smooth sensitivity), as in the paper. ``"data-independent"``: per query a ``gaussian``
event with noise multiplier sigma_thresh (top count, sensitivity 1), per answered query one with
sigma / sqrt(2) (histogram, sensitivity sqrt 2). Noise is fixed; as in the paper, training stops
when the next step would exceed the budget (or after ``iterations``).
"""
import numpy as np
import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.privacy import pate
from benchmark.training.gan import disjoint_shards, generate_synthetic, private_tensors, random_labels
from benchmark.training.teacher_discriminators import (
    ConfidentGNMaxCost,
    TeacherDiscriminators,
    bin_centres,
    bin_votes,
    confident_gnmax,
    discretise,
    gaussian_random_projection,
)

# event orders: a compact grid (one event per step is stored in the result); the ledger upper-bounds
# the curve on its own orders by monotonicity
EVENT_ORDERS = [1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64,
                80, 128, 256, 512]


class GPATE(Method):
    """G-PATE (Long et al., NeurIPS 2021): teacher discriminators, projected + discretised image
    gradients aggregated per dimension with Confident-GNMax."""
    name = "g-pate"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Long et al., NeurIPS 2021"
    hparams = {
        "num_teachers": 50,       # N
        "iterations": 60,         # generator steps at most (the budget may stop earlier)
        "batch_size": 16,         # generated samples per step (B)
        "teacher_batch_size": 8,  # records per teacher step
        "teacher_steps": 1,       # teacher steps per generator step
        "teacher_warmup": 30,     # teacher steps before the first aggregation (teachers are internal: no cost)
        "proj_dim": 10,           # d (paper: pca_dim 10)
        "nbins": 10,
        "clip": 1e-4,             # c (paper: step_size 1e-4)
        "threshold": 0.8,         # T as a fraction of N (paper: 0.5)
        "sigma_thresh": 25.0,     # sigma_1 on the top count (8 affords one step at eps 10 on digits; 25: four)
        "sigma": 20.0,            # sigma_2 on the histogram
        "accounting": "data-dependent",
        "lr_t": 1e-3,
        "lr_g": 3e-3,
        "latent_dim": 16,
        "width": 16,
        "width_d": 8,
        "num_synthetic": 2000,
    }
    tiny = {"num_teachers": 6, "iterations": 3, "batch_size": 4, "teacher_warmup": 1, "proj_dim": 3,
            "sigma_thresh": 30.0, "sigma": 20.0, "width": 8, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        N, B, d, nbins = hp["num_teachers"], hp["batch_size"], hp["proj_dim"], hp["nbins"]
        threshold = hp["threshold"] * N
        shards = [s.to(dev) for s in disjoint_shards(len(x_all), N, ctx.seed)]
        teachers = TeacherDiscriminators(lambda: ConditionalDiscriminator(ctx.input_shape, K, hp["width_d"]).to(dev),
                                         x_all, y_all, shards, hp["lr_t"])
        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr_g"], betas=(0.5, 0.999))
        cost = ConfidentGNMaxCost(threshold, hp["sigma_thresh"], hp["sigma"], EVENT_ORDERS,
                                  data_dependent=hp["accounting"] == "data-dependent")
        centres = bin_centres(hp["clip"], nbins).to(dev)
        asked = answered_total = steps = 0
        for _ in range(hp["teacher_warmup"]):
            teachers.train_step(G.sample, hp["teacher_batch_size"])
        for _ in ctx.progress(range(hp["iterations"]), desc="g-pate"):
            for _ in range(hp["teacher_steps"]):
                teachers.train_step(G.sample, hp["teacher_batch_size"])
            labels = random_labels(B, K, dev)
            x = G.sample(labels)
            grads = teachers.image_gradients(x, labels)                         # [N, B, D]
            proj = gaussian_random_projection(B, grads.shape[2], d, device=dev)  # [B, D, d]
            projected = torch.einsum("nbd,bde->nbe", grads, proj).reshape(N, B * d)
            votes = bin_votes(discretise(projected, hp["clip"], nbins), nbins)  # [B*d, nbins]
            answered, answer = confident_gnmax(votes, threshold, hp["sigma_thresh"], hp["sigma"])
            if ctx.private:
                events = self._events(cost, votes, answered)
                if not ctx.ledger.remaining_ok(events):
                    break
                for event in events:
                    ctx.ledger.record(event)
            v = torch.where(answered, centres[answer], torch.zeros_like(centres[answer])).view(B, d)
            target = (x + torch.einsum("be,bde->bd", v, proj).view_as(x)).detach()
            loss_g = ((x - target) ** 2).sum()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            asked, answered_total, steps = asked + len(votes), answered_total + int(answered.sum()), steps + 1
        ctx.metrics.update(teacher_queries=asked, queries_answered=answered_total, generator_iterations=steps)
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)

    @staticmethod
    def _events(cost: ConfidentGNMaxCost, votes, answered) -> list[dict]:
        """The ledger events of one step's B * d Confident-GNMax queries."""
        n_answered = int(answered.sum())
        if cost.data_dependent:
            return [L.pate_data_dependent(EVENT_ORDERS, cost.rdp(votes, answered), aggregator="Confident-GNMax",
                                          queries=len(votes), answered=n_answered, note=pate.NOT_PRIVATE_NOTE)]
        return [L.gaussian(cost.s1, steps=len(votes))] + ([L.gaussian(cost.s2 / np.sqrt(2), steps=n_answered)]
                                                          if n_answered else [])
