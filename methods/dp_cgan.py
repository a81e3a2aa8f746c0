"""DP-CGAN: differentially private conditional GAN.

Torkzadehmahani, Kairouz & Paten, "DP-CGAN: Differentially Private Synthetic Data and
Label Generation", CVPR Workshops 2019.

Mechanism: a conditional GAN whose discriminator is trained with DP-SGD, the new
clipping-and-perturbation strategy being that the per-example gradients of the real
loss and of the fake loss are clipped to C *separately* (and each sum noised) before
they are added. Real records are Poisson-sampled with rate q = B/N; only the real part
touches private data (fake labels are drawn uniformly, independently of the data), so
each discriminator step is one subsampled Gaussian release with noise multiplier sigma,
composed with the RDP accountant. The generator only sees the discriminator.
"""
import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.training.gan import (
    PerSampleGrads,
    bce_loss,
    dp_discriminator_step,
    generate_synthetic,
    poisson_indices,
    private_tensors,
    random_labels,
)


class DPCGAN(Method):
    """DP-CGAN (Torkzadehmahani et al., CVPR-W 2019): DP-SGD discriminator, real/fake gradients clipped separately."""
    name = "dp-cgan"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Torkzadehmahani, Kairouz & Paten, CVPR-W 2019"
    hparams = {
        "iterations": 300,       # generator steps (one discriminator step each)
        "batch_size": 64,        # expected Poisson batch B (q = B/N)
        "clip": 1.0,
        "lr_d": 2e-3,
        "lr_g": 2e-3,
        "latent_dim": 16,
        "width": 32,
        "num_synthetic": 2000,
    }
    tiny = {"iterations": 3, "batch_size": 8, "width": 8, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        n, B, T = len(x_all), hp["batch_size"], hp["iterations"]
        q = min(1.0, B / n)
        sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=T, sample_rate=q) if ctx.private else 0.0
        ctx.metrics["noise_multiplier"] = sigma

        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        D = PerSampleGrads(ConditionalDiscriminator(ctx.input_shape, K, hp["width"]).to(dev))
        opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr_g"], betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.params, lr=hp["lr_d"], betas=(0.5, 0.999))
        for _ in ctx.progress(range(T), desc="dp-cgan"):
            # discriminator: DP-SGD, real and fake gradients clipped separately
            idx = poisson_indices(n, q, dev)
            y_fake = random_labels(B, K, dev)
            with torch.no_grad():
                fake = G.sample(y_fake)
            if ctx.private:
                ctx.ledger.record(L.subsampled_gaussian(sigma, q, steps=1))
            dp_discriminator_step(D, opt_d, (x_all[idx], y_all[idx]), (fake, y_fake),
                                  real_loss=lambda o: bce_loss(o, True), fake_loss=lambda o: bce_loss(o, False),
                                  clip=hp["clip"], noise_multiplier=sigma, expected_batch=q * n, separate=True)
            # generator: non-saturating loss against the (private) discriminator
            y_g = random_labels(B, K, dev)
            loss_g = bce_loss(D(G.sample(y_g), y_g), True).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
