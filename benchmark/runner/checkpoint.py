"""Checkpoints of a running cell, for preemption and time limits (``ctx.checkpointer``).

A long method saves its state at step boundaries and, when it is started again (a Slurm
job requeued by submitit), continues from the last saved step::

    ck, start = ctx.checkpointer, 0
    if ck is not None:
        start = ck.resume(ledger=ctx.ledger, model=model, optimizer=opt, sampler=gen) or 0
    for step in range(start, steps):
        if ck is not None:
            ck.maybe_save(step, ledger=ctx.ledger, model=model, optimizer=opt, sampler=gen)
        ...  # one step: draw the batch, release (ledger.record), update

``maybe_save(step, ...)`` (or ``save_step``) is called *before* step ``step`` runs, so the state on disk always
means "steps 0..step-1 are done": the ledger holds exactly their events, the models and
optimizers their updates, and the RNG states (Python, NumPy, torch CPU and CUDA, plus any
``torch.Generator`` passed in) are those step ``step`` starts from. A resumed run therefore
redoes the lost steps with the same randomness and records each release exactly once, and
it ends with the same model and ledger as an uninterrupted run. Saving consumes no randomness.

Users: ``benchmark.training.dp_sgd_train`` (dp-sgd, dp-sgd-tanh, dp-scatternet), whose resumed
epoch continues the saved Poisson sampler, and the Slurm tests' plug-in. ``resume`` logs
"resumed from step N".

The low-level pair ``save(state: dict)`` / ``load() -> dict | None`` stores any dict, for
methods whose loop does not fit this pattern. Files are written atomically (temporary file + rename). Without a checkpointer (local runs)
``ctx.checkpointer`` is None and methods simply run from step 0.
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
log = logging.getLogger("benchmark")


def _state_of(obj) -> Any:
    if isinstance(obj, torch.Generator):
        return {"generator": obj.get_state()}
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}: pass modules, optimizers, schedulers, "
                    "torch.Generators or objects with state_dict()/load_state_dict()")


def _load_into(obj, state) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state["generator"])
    else:
        obj.load_state_dict(state)


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's state as tensors and plain values, so that checkpoints load with weights_only=True
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                      int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _accumulators(ledger) -> dict | None:
    """The ledger's running RDP sums. ``load_state_dict`` re-records the (merged) events, whose
    floating-point sums can differ from the step-by-step ones in the last bit; restoring the
    sums themselves makes a resumed run's epsilon_spent bit-identical to an uninterrupted run's."""
    if ledger is None or not hasattr(ledger, "_rdp"):
        return None
    return {"rdp": torch.from_numpy(np.array(ledger._rdp, copy=True)), "pure": ledger._pure,
            "all_pure": ledger._all_pure}


def _restore_accumulators(ledger, acc: dict | None) -> None:
    if acc is None or not hasattr(ledger, "_rdp"):
        return
    rdp = np.asarray(acc["rdp"], dtype=float).copy()
    if rdp.shape != ledger._rdp.shape or not np.allclose(rdp, ledger._rdp, rtol=1e-9, atol=1e-12):
        raise ValueError("checkpointed ledger sums do not match its events")
    ledger._rdp, ledger._pure, ledger._all_pure = rdp, acc["pure"], acc["all_pure"]


class Checkpointer:
    """Saves and restores one cell's training state at ``path``.

    ``interval_s``: ``maybe_save`` writes only when this many seconds passed since the last
    save (0: at every call).
    """

    def __init__(self, path: str | os.PathLike, interval_s: float = 300.0):
        self.path = Path(path)
        self.interval_s = float(interval_s)
        self._last = time.monotonic()
        self.saves = 0
        self.resumed_from: int | None = None

    # -- low level (docs/internals.md): any picklable dict of tensors and plain data
    def save(self, state: dict) -> Path:
        """Write ``state`` atomically (temporary file + rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format": FORMAT, "state": state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._last = time.monotonic()
        self.saves += 1
        return self.path

    def load(self) -> dict | None:
        """The last saved state, or None."""
        if not self.path.exists():
            return None
        blob = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"checkpoint {self.path} is not a format-{FORMAT} checkpoint")
        return blob["state"]

    # -- high level: a training loop's state at a step boundary
    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval_s

    def maybe_save(self, step: int, *, ledger=None, extra: dict | None = None, **objects) -> bool:
        """Save if ``interval_s`` has passed; call it at a step boundary, before step ``step``."""
        if not self.due():
            return False
        self.save_step(step, ledger=ledger, extra=extra, **objects)
        return True

    def save_step(self, step: int, *, ledger=None, extra: dict | None = None, **objects) -> Path:
        return self.save({"step": int(step), "rng": rng_state(),
                          "ledger": ledger.state_dict() if ledger is not None else None,
                          "ledger_accumulators": _accumulators(ledger),
                          "objects": {name: _state_of(obj) for name, obj in objects.items()},
                          "extra": extra or {}})

    def resume(self, *, ledger=None, extra: dict | None = None, **objects) -> int | None:
        """Restore the state saved by ``maybe_save``/``save_step`` into ``objects`` (same names),
        the RNGs and the ledger; returns the step to continue from, or None when there is no
        checkpoint. ``extra`` (a dict) is updated in place with what was saved as ``extra``."""
        state = self.load()
        if state is None:
            return None
        missing = set(objects) - set(state["objects"])
        if missing:
            raise KeyError(f"checkpoint {self.path} has no state for {', '.join(sorted(missing))}")
        for name, obj in objects.items():
            _load_into(obj, state["objects"][name])
        if ledger is not None and state["ledger"] is not None:
            ledger.load_state_dict(state["ledger"])
            _restore_accumulators(ledger, state.get("ledger_accumulators"))
        if extra is not None:
            extra.update(state["extra"])
        set_rng_state(state["rng"])
        self.resumed_from = state["step"]
        self._last = time.monotonic()
        log.info("resumed from step %d (checkpoint %s)", state["step"], self.path)
        return state["step"]

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
