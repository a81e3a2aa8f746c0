"""DPGAN: differentially private (Wasserstein) GAN.

Xie, Lin, Wang, Wang & Zhou, "Differentially Private Generative Adversarial Network",
arXiv:1802.06739, 2018.

Mechanism (Algorithm 1): a WGAN whose critic is trained with noisy gradients: for each of
n_critic critic iterations per generator iteration, a batch of real records is sampled,
the gradient of D(x_i) - D(G(z_i)) is computed, Gaussian noise N(0, sigma^2 c_g^2) is added,
the RMSProp step is taken and the weights are clipped to [-c_p, c_p]. The paper bounds the
per-example gradient norm c_g through weight clipping; like Opacus-based
reimplementations we enforce the bound by clipping each example's (real, fake) pair
gradient to c_g = ``clip`` directly. Real records are Poisson-sampled (q = B/N); each
critic step is one subsampled Gaussian release (moments/RDP accountant). The generator
(here class-conditional, as the benchmark asks) is post-processing of the critic.
"""
import torch

from benchmark import Method
from benchmark.models.generative import ConditionalDiscriminator, ConditionalGenerator
from benchmark.privacy import ledger as L
from benchmark.training.gan import (
    PerSampleGrads,
    dp_discriminator_step,
    generate_synthetic,
    poisson_indices,
    private_tensors,
    random_labels,
    wgan_critic_loss,
)


class DPGAN(Method):
    """DPGAN (Xie et al., 2018): WGAN with a DP-SGD critic (per-pair clipping, Gaussian noise, weight clipping)."""
    name = "dp-gan"
    family = "dp-generative"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Xie, Lin, Wang, Wang & Zhou, arXiv 2018"
    hparams = {
        "iterations": 150,       # generator iterations
        "n_critic": 3,           # critic iterations per generator iteration (n_d)
        "batch_size": 64,        # expected Poisson batch m
        "clip": 1.0,             # per-example gradient bound c_g
        "weight_clip": 0.05,     # c_p
        "lr_d": 2e-3,
        "lr_g": 2e-3,
        "latent_dim": 16,
        "width": 32,
        "num_synthetic": 2000,
    }
    tiny = {"iterations": 2, "n_critic": 2, "batch_size": 8, "width": 8, "num_synthetic": 200}

    def fit(self, ctx):
        hp, dev, K = ctx.hparams, ctx.device, ctx.num_classes
        x_all, y_all = private_tensors(ctx.private_data, dev)
        n, B = len(x_all), hp["batch_size"]
        q = min(1.0, B / n)
        steps = hp["iterations"] * hp["n_critic"]
        sigma = L.calibrate_gaussian(ctx.epsilon, ctx.delta, steps=steps, sample_rate=q) if ctx.private else 0.0
        ctx.metrics["noise_multiplier"] = sigma

        G = ConditionalGenerator(hp["latent_dim"], K, ctx.input_shape, hp["width"]).to(dev)
        D = PerSampleGrads(ConditionalDiscriminator(ctx.input_shape, K, hp["width"]).to(dev))
        opt_g = torch.optim.RMSprop(G.parameters(), lr=hp["lr_g"])
        opt_d = torch.optim.RMSprop(D.params, lr=hp["lr_d"])
        for _ in ctx.progress(range(hp["iterations"]), desc="dp-gan"):
            for _ in range(hp["n_critic"]):
                idx = poisson_indices(n, q, dev)
                x, y = x_all[idx], y_all[idx]
                with torch.no_grad():
                    fake = G.sample(y)          # one fake per real record, same label
                if ctx.private:
                    ctx.ledger.record(L.subsampled_gaussian(sigma, q, steps=1))
                dp_discriminator_step(D, opt_d, (x, y), (fake, y),
                                      real_loss=lambda o: wgan_critic_loss(o, True),
                                      fake_loss=lambda o: wgan_critic_loss(o, False),
                                      clip=hp["clip"], noise_multiplier=sigma, expected_batch=q * n, separate=False)
                with torch.no_grad():
                    for p in D.params:
                        p.clamp_(-hp["weight_clip"], hp["weight_clip"])
            y_g = random_labels(B, K, dev)
            loss_g = -D(G.sample(y_g), y_g).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        G.eval()
        return generate_synthetic(G.sample, hp["num_synthetic"], K, dev)
