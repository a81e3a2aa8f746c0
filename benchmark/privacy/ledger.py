"""The privacy ledger: the one place where privacy is accounted.

Methods *record events* (mechanisms they ran, in the vocabulary of the protocol,
section 4); the ledger composes them with Renyi DP (Mironov, CSF 2017) using
Opacus' RDP analysis, converts to (epsilon, delta) with Opacus' conversion
(Balle et al., AISTATS 2020), and refuses an event that would take the run over
its target epsilon. Calibration (the smallest noise that fits a budget) lives
here too, so every method calibrates against the same accountant that audits it.

Events are plain dicts, so a result file's ``ledger`` list can be recomputed by
anyone with :func:`epsilon_from_events`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np

ACCOUNTANT = "rdp"
#: Renyi orders on which every event is evaluated (Opacus' default grid plus large orders).
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 128, 256, 512])

MECHANISMS = ("gaussian", "subsampled_gaussian", "laplace", "randomized_response",
              "pate_data_dependent", "rdp_curve")


class PrivacyBudgetExceeded(RuntimeError):
    """Raised when recording an event would take epsilon over the run's target."""


# ---------------------------------------------------------------- event constructors
def gaussian(noise_multiplier: float, steps: int = 1) -> dict:
    """Gaussian mechanism, noise std = noise_multiplier * L2 sensitivity."""
    return {"mechanism": "gaussian", "noise_multiplier": float(noise_multiplier), "steps": int(steps)}


def subsampled_gaussian(noise_multiplier: float, sample_rate: float, steps: int = 1) -> dict:
    """Poisson-subsampled Gaussian mechanism (one DP-SGD step per unit of ``steps``)."""
    return {"mechanism": "subsampled_gaussian", "noise_multiplier": float(noise_multiplier),
            "sample_rate": float(sample_rate), "steps": int(steps)}


def laplace(scale_over_sensitivity: float, steps: int = 1) -> dict:
    """Laplace mechanism with scale b = scale_over_sensitivity * L1 sensitivity."""
    return {"mechanism": "laplace", "scale_over_sensitivity": float(scale_over_sensitivity), "steps": int(steps)}


def randomized_response(epsilon: float, steps: int = 1) -> dict:
    """An epsilon-DP randomized-response release (pure DP), ``steps`` times."""
    return {"mechanism": "randomized_response", "epsilon": float(epsilon), "steps": int(steps)}


def pate_data_dependent(orders: Sequence[float], rdp: Sequence[float], **notes) -> dict:
    """Per-order RDP of a whole PATE-style release, computed from the votes (data-dependent)."""
    return {"mechanism": "pate_data_dependent", "orders": [float(o) for o in orders],
            "rdp": [float(r) for r in rdp], **notes}


def rdp_curve(orders: Sequence[float], rdp: Sequence[float], **notes) -> dict:
    """Any mechanism whose RDP curve is known in closed form."""
    return {"mechanism": "rdp_curve", "orders": [float(o) for o in orders], "rdp": [float(r) for r in rdp], **notes}


# ---------------------------------------------------------------- RDP of one event
def _laplace_rdp(lam: float, orders: np.ndarray) -> np.ndarray:
    """RDP of the Laplace mechanism with scale/sensitivity ``lam`` (Mironov 2017, Table II)."""
    a = orders
    log_terms = np.logaddexp(np.log(a / (2 * a - 1)) + (a - 1) / lam, np.log((a - 1) / (2 * a - 1)) - a / lam)
    return np.minimum(log_terms / (a - 1), 1.0 / lam)


def _interpolate_upper(event_orders: Sequence[float], event_rdp: Sequence[float], orders: np.ndarray) -> np.ndarray:
    """Upper-bound an RDP curve given on other orders: RDP is non-decreasing in the order,
    so the value at the next larger given order bounds the value at ``alpha``."""
    eo = np.asarray(event_orders, dtype=float)
    er = np.asarray(event_rdp, dtype=float)
    idx = np.argsort(eo)
    eo, er = eo[idx], np.maximum.accumulate(er[idx])
    pos = np.searchsorted(eo, orders, side="left")
    out = np.full(len(orders), np.inf)
    ok = pos < len(eo)
    out[ok] = er[pos[ok]]
    return out


def rdp_of_event(event: dict, orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP (per order) of one event, all its ``steps`` included."""
    orders_arr = np.asarray(orders, dtype=float)
    mech = event.get("mechanism")
    steps = int(event.get("steps", 1))
    if mech == "gaussian":
        sigma = event["noise_multiplier"]
        if sigma <= 0:
            return np.full(len(orders_arr), np.inf)
        return steps * orders_arr / (2 * sigma**2)
    if mech == "subsampled_gaussian":
        from opacus.accountants.analysis.rdp import compute_rdp  # lazy: importing opacus costs seconds
        return np.asarray(compute_rdp(q=event["sample_rate"], noise_multiplier=event["noise_multiplier"],
                                      steps=steps, orders=list(orders_arr)))
    if mech == "laplace":
        return steps * _laplace_rdp(event["scale_over_sensitivity"], orders_arr)
    if mech == "randomized_response":
        eps = event["epsilon"]
        # pure eps-DP implies (eps^2/2)-zCDP (Bun & Steinke 2016), and RDP <= eps at every order
        return steps * np.minimum(eps, orders_arr * eps**2 / 2)
    if mech in ("pate_data_dependent", "rdp_curve"):
        return steps * _interpolate_upper(event["orders"], event["rdp"], orders_arr)
    raise ValueError(f"unknown privacy mechanism {mech!r}; expected one of {', '.join(MECHANISMS)}")


def pure_epsilon_of_event(event: dict) -> float | None:
    """Pure-DP epsilon of an event if it is pure (basic composition over its steps), else None."""
    mech = event.get("mechanism")
    steps = int(event.get("steps", 1))
    if mech == "randomized_response":
        return steps * event["epsilon"]
    if mech == "laplace":
        return steps / event["scale_over_sensitivity"]
    return None


def _validate(event: dict) -> None:
    if not isinstance(event, dict) or event.get("mechanism") not in MECHANISMS:
        raise ValueError(f"not a ledger event: {event!r}")
    if int(event.get("steps", 1)) < 0:
        raise ValueError(f"negative steps in ledger event {event!r}")


# ---------------------------------------------------------------- composition
def epsilon_from_rdp(rdp: np.ndarray, delta: float, orders: Sequence[float] = ORDERS) -> float:
    if np.all(rdp == 0):
        return 0.0
    with warnings.catch_warnings():  # "optimal order is the largest alpha" during calibration searches
        warnings.simplefilter("ignore", UserWarning)
        from opacus.accountants.analysis.rdp import get_privacy_spent
        eps, _ = get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    return float(eps)


def epsilon_from_events(events: Iterable[dict], delta: float) -> float:
    """Recompute epsilon at ``delta`` from a list of ledger events (as stored in a result)."""
    events = list(events)
    total = np.zeros(len(ORDERS))
    pure, all_pure = 0.0, True
    per_step: dict[str, np.ndarray] = {}  # RDP composes additively: one curve per distinct event
    for ev in events:
        _validate(ev)
        key = repr(sorted((k, v) for k, v in ev.items() if k != "steps"))
        if key not in per_step:
            per_step[key] = rdp_of_event({**ev, "steps": 1})
        total = total + per_step[key] * int(ev.get("steps", 1))
        p = pure_epsilon_of_event(ev)
        if p is None:
            all_pure = False
        else:
            pure += p
    eps = epsilon_from_rdp(total, delta)
    if all_pure and events:
        eps = min(eps, pure)
    return eps


class PrivacyLedger:
    """Collects a run's privacy events and guards its budget.

    ``record`` merges an event into the previous one when only ``steps`` differ,
    so recording once per optimisation step stays cheap.
    """

    def __init__(self, target_epsilon: float = math.inf, delta: float = 1e-5):
        self.target_epsilon = float(target_epsilon)
        self.delta = float(delta)
        self.events: list[dict] = []
        self._rdp = np.zeros(len(ORDERS))
        self._pure = 0.0
        self._all_pure = True
        self._cache: dict[str, np.ndarray] = {}

    def _event_rdp(self, event: dict) -> np.ndarray:
        key = repr(sorted((k, v) for k, v in event.items() if k != "steps"))
        if key not in self._cache:
            self._cache[key] = rdp_of_event({**event, "steps": 1})
        return self._cache[key] * int(event.get("steps", 1))

    def _epsilon_with(self, rdp: np.ndarray, pure: float, all_pure: bool, delta: float, any_events: bool) -> float:
        eps = epsilon_from_rdp(rdp, delta)
        if all_pure and any_events:
            eps = min(eps, pure)
        return eps

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far, at ``delta`` (default: the run's delta)."""
        return self._epsilon_with(self._rdp, self._pure, self._all_pure,
                                  self.delta if delta is None else delta, bool(self.events))

    def epsilon_if(self, events: Iterable[dict]) -> float:
        """Epsilon the run would have after also recording ``events`` (nothing is recorded)."""
        rdp, pure, all_pure, n = self._rdp.copy(), self._pure, self._all_pure, len(self.events)
        for ev in events:
            _validate(ev)
            rdp = rdp + self._event_rdp(ev)
            p = pure_epsilon_of_event(ev)
            all_pure, pure, n = all_pure and p is not None, pure + (p or 0.0), n + 1
        return self._epsilon_with(rdp, pure, all_pure, self.delta, n > 0)

    def record(self, event: dict) -> None:
        """Record a release. Raises PrivacyBudgetExceeded (recording nothing) if it would overspend."""
        _validate(event)
        rdp = self._rdp + self._event_rdp(event)
        p = pure_epsilon_of_event(event)
        pure, all_pure = self._pure + (p or 0.0), self._all_pure and p is not None
        eps = self._epsilon_with(rdp, pure, all_pure, self.delta, True)
        if eps > self.target_epsilon * (1 + 1e-9):
            raise PrivacyBudgetExceeded(
                f"recording {event} would raise epsilon to {eps:.4g} > target {self.target_epsilon:g} "
                f"(delta={self.delta:g}); the run stops here")
        self._rdp, self._pure, self._all_pure = rdp, pure, all_pure
        last = self.events[-1] if self.events else None
        if last is not None and {k: v for k, v in last.items() if k != "steps"} == \
                {k: v for k, v in event.items() if k != "steps"}:
            last["steps"] = int(last.get("steps", 1)) + int(event.get("steps", 1))
        else:
            self.events.append(dict(event))

    def remaining_ok(self, events: Iterable[dict]) -> bool:
        return self.epsilon_if(events) <= self.target_epsilon * (1 + 1e-9)

    # checkpointing (preemption): the ledger is plain data
    def state_dict(self) -> dict:
        return {"target_epsilon": self.target_epsilon, "delta": self.delta, "events": [dict(e) for e in self.events]}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(state["target_epsilon"], state["delta"])
        for ev in state["events"]:
            self.record(ev)


# ---------------------------------------------------------------- calibration
def calibrate_noise(make_events: Callable[[float], list[dict]], target_epsilon: float, delta: float,
                    prior_events: Iterable[dict] = (), sigma_min: float = 1e-3, sigma_max: float = 1e6,
                    rel_tol: float = 1e-3) -> float:
    """Smallest noise parameter s (up to rel_tol) with epsilon(prior + make_events(s)) <= target.

    ``make_events`` maps a noise parameter to the events a method plans to record; epsilon must
    decrease as the noise grows. Raises ValueError if even ``sigma_max`` overspends.
    """
    prior = list(prior_events)
    if not math.isfinite(target_epsilon):
        raise ValueError("calibration needs a finite target epsilon")

    def eps(s: float) -> float:
        return epsilon_from_events(prior + make_events(s), delta)

    # bracket [lo, hi] around the answer by doubling/halving from 1, then bisect on the log scale
    lo = hi = 1.0
    if eps(hi) <= target_epsilon:
        while lo > sigma_min and eps(lo) <= target_epsilon:
            hi, lo = lo, lo / 2
        if lo <= sigma_min:
            return hi
    else:
        while eps(hi) > target_epsilon:
            if hi >= sigma_max:
                raise ValueError(f"no noise level up to {sigma_max:g} reaches epsilon {target_epsilon:g} "
                                 f"at delta {delta:g}")
            lo, hi = hi, hi * 2
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_gaussian(target_epsilon: float, delta: float, steps: int, sample_rate: float = 1.0,
                       prior_events: Iterable[dict] = ()) -> float:
    """Noise multiplier for ``steps`` (subsampled) Gaussian releases to fit ``target_epsilon``."""
    if sample_rate >= 1.0:
        return calibrate_noise(lambda s: [gaussian(s, steps)], target_epsilon, delta, prior_events)
    return calibrate_noise(lambda s: [subsampled_gaussian(s, sample_rate, steps)], target_epsilon, delta, prior_events)
