"""The common student architecture trained non-privately on the private data."""
from benchmark import Method
from benchmark.training import train_classifier


class StudentReal(Method):
    """Non-private reference: the student network trained on the real private split (Adam, cross-entropy)."""

    name = "student-real"
    family = "reference"
    needs = {"private_data"}
    privacy_unit = "none"
    adjacency = "none"
    citation = "non-private reference"
    hparams = {"epochs": 20, "batch_size": 64, "lr": 1e-3, "min_steps": 1000}
    tiny = {"epochs": 1, "min_steps": 5}

    def fit(self, ctx):
        h = ctx.hparams
        return train_classifier(ctx.build_student(), ctx.private_data, epochs=h["epochs"], batch_size=h["batch_size"],
                                lr=h["lr"], min_steps=h["min_steps"], device=ctx.device, seed=ctx.seed,
                                progress=ctx.progress, desc="student-real")
