"""The teacher itself, scored on eval: the upper bound every transcription is compared with."""
from benchmark import Method


class Teacher(Method):
    """The non-private teacher (trained on the private split with the teacher recipe; cached)."""

    name = "teacher"
    family = "reference"
    needs = {"teacher"}
    privacy_unit = "none"
    adjacency = "none"
    citation = "non-private reference"
    hparams = {}

    def fit(self, ctx):
        return ctx.teacher
