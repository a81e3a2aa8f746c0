"""A deliberately BROKEN "DP" method, for testing the privacy audit only.

It trains the common student on the private data with no clipping and no noise,
then records a single Gaussian release with an enormous noise multiplier on the
ledger, so the run *claims* a tiny epsilon (about 0.005 at delta = 1e-5) while
the released model is as leaky as a non-private one. The membership-inference
audit (benchmark/privacy/audit.py) must flag it (``violates_claim: true``).

Never in ``methods/``: it is loaded only with ``BENCHMARK_METHODS_PATH=tests/plugins``.
"""
from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.training import train_classifier


class BrokenDP(Method):
    """Non-private training that records a (false) near-zero privacy cost."""

    name = "broken-dp"
    family = "dp-training"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "test fixture (deliberately not DP)"
    hparams = {"epochs": 60, "batch_size": 64, "lr": 1e-3, "min_steps": 1200, "claimed_noise_multiplier": 1000.0}

    def fit(self, ctx):
        h = ctx.hparams
        model = train_classifier(ctx.build_student(), ctx.private_data, epochs=h["epochs"],
                                 batch_size=h["batch_size"], lr=h["lr"], min_steps=h["min_steps"],
                                 device=ctx.device, seed=ctx.seed, progress=ctx.progress, desc="broken-dp")
        # The lie: one Gaussian release "with" sigma = 1000 x sensitivity, although no noise was added.
        ctx.ledger.record(L.gaussian(noise_multiplier=h["claimed_noise_multiplier"], steps=1))
        return model
