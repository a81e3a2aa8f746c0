"""DP-SGD: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016.

Algorithm: for each step, sample a lot by Poisson sampling with rate q = B/N; compute
per-example gradients; clip each to L2 norm C; sum, add N(0, sigma^2 C^2 I), divide by the
expected lot size; take an SGD step. Accounting: T steps of the subsampled Gaussian
mechanism, composed with RDP; sigma is calibrated so that T steps meet the target epsilon.
"""
from benchmark import Method
from benchmark.training import dp_sgd_train


class DPSGD(Method):
    """DP-SGD on the common student (Opacus, Poisson sampling, RDP accounting in the ledger)."""

    name = "dp-sgd"
    family = "dp-training"
    needs = {"private_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Abadi et al., CCS 2016"
    # digits defaults, chosen from the private split's size and the accounting only (never on eval):
    # large lots lower sigma/B, a narrow student (width 16) lowers the noise norm.
    hparams = {"epochs": 30, "batch_size": 256, "lr": 1.0, "momentum": 0.0, "max_grad_norm": 1.0,
               "optimizer": "sgd", "activation": "relu", "width": 16}
    tiny = {"epochs": 1}

    def fit(self, ctx):
        h = ctx.hparams
        model = ctx.build_student(activation=h["activation"], width=h["width"])
        return dp_sgd_train(model, ctx.private_data, ledger=ctx.ledger, epochs=h["epochs"], batch_size=h["batch_size"],
                            lr=h["lr"], momentum=h["momentum"], max_grad_norm=h["max_grad_norm"],
                            optimizer=h["optimizer"], device=ctx.device, seed=ctx.seed, progress=ctx.progress,
                            checkpointer=ctx.checkpointer)
