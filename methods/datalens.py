"""DataLens: a generator trained through compressed, noisily aggregated teacher-discriminator gradients.

Wang, Wu, Long, Rimanic, Zhang & Li, "DataLens: Scalable Privacy Preserving Training via Gradient
Compression and Aggregation", ACM CCS 2021.

Mechanism (the paper's training loop, TopkStoSignGrad compression and noisy thresholded aggregation):
  1. the private data are split into N disjoint shards, one teacher discriminator each, trained
     (non-privately; teachers are never released) on its shard against generated samples;
  2. per generator step, for a batch of generated samples x_j = G(z_j, y_j) (labels uniform),
     every teacher t gives g_tj = -d loss_G(D_t(x_j, y_j)) / d x_j;
  3. compression: each g_tj becomes a vector in {-1, 0, +1}^D with exactly k non-zeros, the top-k
     coordinates of |g_tj| with a stochastic sign (+1 with probability 1/2 + g_i / (2 b), b the
     row's largest |g_i| capped at ``clip``);
  4. aggregation per sample: s_j = sum_t v_tj + N(0, sigma^2 I); the update is alpha * sign where
     |s_j| > beta * N, 0 elsewhere;
  5. the generator regresses onto the updated images: loss = sum_j ||G(z_j, y_j) - (x_j + update_j)||^2.

Accounting (the paper's data-independent analysis): a teacher's k-sparse sign vector moves the sum by
at most 2 sqrt(k) in L2, so each sample's aggregation is a Gaussian mechanism with noise multiplier
sigma / (2 sqrt(k)); thresholding is post-processing. The B aggregations of a step are recorded as
one ``gaussian`` event with ``steps = B`` before they are used. Unlike the paper (fixed sigma, training
until the budget is spent), sigma is calibrated with the ledger's accountant so that the whole
schedule (iterations x B aggregations) ends just within the target epsilon.
"""
import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.training.gan import disjoint_shards, generate_synthetic, private_tensors, random_labels
from benchmark.training.teacher_discriminators import (
    TeacherDiscriminators,
    datalens_noise_multiplier,
    noisy_thresholded_sum,
    topk_stochastic_sign,
)


class DataLens(Method):
    """DataLens (Wang et al., CCS 2021): teacher discriminators, top-k stochastic sign compression,
    noisy thresholded vote aggregation."""
    name = "datalens"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Wang et al., CCS 2021"
    hparams = {
        "num_teachers": 50,       # N
        "iterations": 60,         # generator steps (sigma is calibrated for all of them)
        "batch_size": 16,         # generated samples per step (B)
        "teacher_batch_size": 8,  # records per teacher step
        "teacher_steps": 1,       # teacher steps per generator step (paper: d_step)
        "teacher_warmup": 30,     # teacher steps before the first aggregation (paper: pretrain_teacher)
        "topk": 8,                # k coordinates kept per teacher gradient (D = 64 on digits)
        "clip": 0.0,              # cap on b (0: b = the row's largest |g_i|, the paper's default)
        "beta": 0.3,              # vote threshold as a fraction of N (paper: 0.7 with N = 4000)
        "alpha": 0.003,           # size of the image update per agreed coordinate (paper: learning_rate)
        "lr_t": 1e-3,
        "lr_g": 3e-3,
        "latent_dim": 16,
        "width": 16,
        "width_d": 8,
        "num_synthetic": 2000,
    }
    tiny = {"num_teachers": 6, "iterations": 3, "batch_size": 4, "teacher_warmup": 1, "topk": 4, "width": 8,
            "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        N, B, T, k = hp["num_teachers"], hp["batch_size"], hp["iterations"], hp["topk"]
        if ctx.private:
            noise_multiplier = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=T * B)
            sigma = noise_multiplier * 2 * k ** 0.5
        else:
            noise_multiplier = sigma = 0.0
        ctx.metrics.update(noise_multiplier=noise_multiplier, vote_noise_std=sigma)
        shards = [s.to(dev) for s in disjoint_shards(len(x_all), N, ctx.seed)]
        teachers = TeacherDiscriminators(lambda: ConditionalDiscriminator(ctx.input_shape, K, hp["width_d"]).to(dev),
                                         x_all, y_all, shards, hp["lr_t"])
        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr_g"], betas=(0.5, 0.999))
        clip = hp["clip"] or None
        agreed = 0
        for _ in range(hp["teacher_warmup"]):
            teachers.train_step(G.sample, hp["teacher_batch_size"])
        for _ in ctx.progress(range(T), desc="datalens"):
            for _ in range(hp["teacher_steps"]):
                teachers.train_step(G.sample, hp["teacher_batch_size"])
            labels = random_labels(B, K, dev)
            x = G.sample(labels)
            grads = teachers.image_gradients(x, labels)                       # [N, B, D]
            votes = topk_stochastic_sign(grads.reshape(N * B, -1), k, clip).view_as(grads)
            if ctx.private:
                ctx.ledger.record(L.gaussian(datalens_noise_multiplier(sigma, k), steps=B))  # one per sample
            signs = torch.stack([noisy_thresholded_sum(votes[:, j], sigma, hp["beta"]) for j in range(B)])
            target = (x + hp["alpha"] * signs.view_as(x)).detach()
            loss_g = ((x - target) ** 2).sum()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            agreed += int(signs.abs().sum())
        ctx.metrics.update(generator_iterations=T, agreed_coordinates=agreed)
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
