"""dpsd-bench: an open benchmark for privacy-preserving model transcription.

``from benchmark import Method, SyntheticData`` is all a method file needs besides torch.
Heavy modules are imported lazily so that ``python -m benchmark list`` stays fast.
"""
__version__ = "0.1.0"

__all__ = ["Method", "Context", "SyntheticData"]


def __getattr__(name):
    if name in __all__:
        from . import method
        return getattr(method, name)
    raise AttributeError(name)
