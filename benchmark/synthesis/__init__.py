"""The data-free synthesizer (one component, loss terms switched by weights) and its distillation loop.

- :mod:`.losses`: the loss terms and the hooks that feed them;
- :mod:`.synthesizer`: :class:`Synthesizer` (generator / pixel inversion / reset-generator modes);
- :mod:`.distill`: :func:`data_free_distill`, the round loop, with the optional DP annotation step;
- :mod:`.preset`: :class:`DataFreePreset`, the base of the presets in ``methods/``.
"""
from .losses import TERMS  # noqa: F401
