"""PATE accounting (benchmark/privacy/pate.py): data-independent and data-dependent RDP bounds."""
import math

import numpy as np
import pytest
from scipy import stats

from benchmark.privacy import pate as P

ORDERS = np.array([1.5, 2.0, 3.0, 5.0, 8.0, 16.0, 32.0, 64.0])


def _bern_renyi(lp, lq, a):
    """Renyi divergence D_a(Bern(p) || Bern(q)), from (log p, log(1-p)) and (log q, log(1-q))."""
    return float(np.logaddexp(a * lp[0] + (1 - a) * lq[0], a * lp[1] + (1 - a) * lq[1]) / (a - 1))


def _bern_sf(x):
    """(log Pr[Z > x], log Pr[Z <= x]) for a standard normal Z."""
    return (stats.norm.logsf(x), stats.norm.logcdf(x))


def test_gnmax_data_independent_is_alpha_over_sigma_squared():
    for sigma in (0.5, 3.0, 40.0):
        np.testing.assert_allclose(P.rdp_gnmax_data_independent(sigma, ORDERS), ORDERS / sigma**2)
    # Theorem 6 never applies when q is large: a tied histogram falls back to the data-independent bound
    np.testing.assert_allclose(P.rdp_gnmax([10, 10, 0], 5.0, ORDERS), ORDERS / 25.0)


def test_threshold_data_independent_is_alpha_over_two_sigma_squared():
    np.testing.assert_allclose(P.rdp_threshold_data_independent(4.0, ORDERS), ORDERS / 32.0)
    # max vote exactly at the threshold: q = 1/2, only the data-independent bound is valid
    np.testing.assert_allclose(P.rdp_threshold(50, 50, 4.0, ORDERS), ORDERS / 32.0)


def test_logq_gnmax_matches_prop7_by_hand():
    votes, sigma = [30, 12, 5, 3], 4.0
    q = sum(0.5 * math.erfc((30 - n) / (2 * sigma)) for n in (12, 5, 3))
    assert P.logq_gnmax(votes, sigma) == pytest.approx(math.log(q), rel=1e-10)


def test_logq_gnmax_bounds_monte_carlo_error_rate():
    rng = np.random.default_rng(0)
    votes, sigma = np.array([20, 14, 6, 0]), 5.0
    labels = P.gnmax(np.tile(votes, (200_000, 1)), sigma, rng)
    assert np.mean(labels != 0) <= math.exp(P.logq_gnmax(votes, sigma))


def test_gnmax_data_dependent_matches_theorem6_by_hand():
    votes, sigma, lam = [95, 3, 2], 10.0, 8.0
    q = sum(0.5 * math.erfc((95 - n) / (2 * sigma)) for n in (3, 2))
    mu2 = sigma * math.sqrt(math.log(1 / q))
    mu1 = mu2 + 1
    e1, e2 = mu1 / sigma**2, mu2 / sigma**2
    assert lam <= mu1 and q <= math.exp((mu2 - 1) * e2) / (mu1 / (mu1 - 1) * mu2 / (mu2 - 1))**mu2
    A = (1 - q) / (1 - (q * math.exp(e2))**((mu2 - 1) / mu2))
    B = math.exp(e1) / q**(1 / (mu1 - 1))
    hand = math.log((1 - q) * A**(lam - 1) + q * B**(lam - 1)) / (lam - 1)
    got = P.rdp_gnmax(votes, sigma, [lam])[0]
    assert got == pytest.approx(min(hand, lam / sigma**2), rel=1e-9)
    assert got < 0.2 * lam / sigma**2  # a clear consensus is much cheaper than the worst case


def test_lnmax_matches_pate2017_theorem3_by_hand():
    votes, gamma, lam = [40, 5, 3, 2], 0.5, 4.0
    eps = 2 * gamma
    q = sum((2 + gamma * (40 - n)) / (4 * math.exp(gamma * (40 - n))) for n in (5, 3, 2))
    order = lam - 1
    alpha = math.log((1 - q) * ((1 - q) / (1 - math.exp(eps) * q))**order + q * math.exp(eps * order))
    hand = min(alpha / order, eps, lam * eps**2 / 2)
    assert P.rdp_lnmax(votes, gamma, [lam])[0] == pytest.approx(hand, rel=1e-9)
    assert hand < lam * eps**2 / 2 / 10
    # non-integer order uses the next integer moment
    assert P.rdp_lnmax(votes, gamma, [3.3])[0] == pytest.approx(P.rdp_lnmax(votes, gamma, [4.0])[0])


@pytest.mark.parametrize("sigma", [2.0, 8.0, 30.0])
def test_data_dependent_never_exceeds_data_independent(sigma):
    rng = np.random.default_rng(1)
    for _ in range(200):
        votes = rng.multinomial(100, rng.dirichlet(np.full(5, 0.3)))
        dd = P.rdp_gnmax(votes, sigma, ORDERS)
        assert np.all(dd <= ORDERS / sigma**2 + 1e-12) and np.all(dd >= 0)
        th = P.rdp_threshold(votes.max(), 70, sigma, ORDERS)
        assert np.all(th <= ORDERS / (2 * sigma**2) + 1e-12) and np.all(th >= 0)
        ln = P.rdp_lnmax(votes, 1 / sigma, ORDERS)
        assert np.all(ln <= P.rdp_pure_dp(2 / sigma, ORDERS) + 1e-12) and np.all(ln >= 0)


@pytest.mark.parametrize("gap,sigma", [(10, 3.0), (30, 6.0), (60, 10.0), (4, 2.0)])
def test_gnmax_bound_upper_bounds_exact_divergence_two_classes(gap, sigma):
    """Two classes: GNMax's output is a Bernoulli with p = Phi(gap / (sqrt(2) sigma)); a neighbour moves
    one vote (gap +- 2). The data-dependent bound must dominate the exact Renyi divergence."""
    p = _bern_sf(-gap / (math.sqrt(2) * sigma))
    bound = P.rdp_gnmax([50 + gap / 2, 50 - gap / 2], sigma, ORDERS)
    for g2 in (gap - 2, gap + 2):
        p2 = _bern_sf(-g2 / (math.sqrt(2) * sigma))
        for a, b in zip(ORDERS, bound):
            assert _bern_renyi(p, p2, a) <= b + 1e-12


@pytest.mark.parametrize("m", [0, 20, 45, 60, 100])
def test_threshold_bound_upper_bounds_exact_divergence(m):
    T, s1 = 50.0, 6.0
    bound = P.rdp_threshold(m, T, s1, ORDERS)
    p = _bern_sf((T - m) / s1)
    for m2 in (m - 1, m + 1):
        p2 = _bern_sf((T - m2) / s1)
        for a, b in zip(ORDERS, bound):
            assert _bern_renyi(p, p2, a) <= b + 1e-12


def test_confident_gnmax_charges_gnmax_only_for_answered_queries():
    votes = np.array([[90, 5, 5], [40, 35, 25], [98, 1, 1]])
    answered = np.array([True, False, True])
    T, s1, s2 = 60.0, 10.0, 5.0
    rdp = P.confident_gnmax_release_rdp(votes, answered, T, s1, s2, ORDERS)
    np.testing.assert_allclose(rdp[1], P.rdp_threshold(40, T, s1, ORDERS))
    np.testing.assert_allclose(rdp[0], P.rdp_threshold(90, T, s1, ORDERS) + P.rdp_gnmax(votes[0], s2, ORDERS))
    assert np.all(rdp[2] > 0)


def test_largest_affordable_prefix():
    per = np.ones((10, 2))
    assert P.largest_affordable_prefix(per, lambda r: r[0] <= 3.5) == 3
    assert P.largest_affordable_prefix(per, lambda r: True) == 10
    assert P.largest_affordable_prefix(per, lambda r: False) == 0


def test_aggregators_follow_consensus_and_noise():
    rng = np.random.default_rng(0)
    votes = np.array([[0, 100, 0]] * 50)
    assert np.all(P.lnmax(votes, 1.0, rng) == 1) and np.all(P.gnmax(votes, 5.0, rng) == 1)
    assert P.confident_screen(votes, 60, 5.0, rng).all()
    assert not P.confident_screen(votes, 200, 5.0, rng).any()
    noisy = P.gnmax(np.zeros((2000, 4)), 1.0, rng)
    assert len(np.unique(noisy)) == 4


def _lap_diff_logs(gap, b):
    """(log Pr[out = top], log Pr[out != top]) of 2-class LNMax with Lap(b) noise and vote gap >= 0."""
    lq = math.log(0.5) - gap / b + math.log1p(gap / (2 * b))
    return (math.log1p(-math.exp(lq)), lq)


@pytest.mark.parametrize("gap,gamma", [(10, 0.5), (20, 0.5), (40, 0.2), (6, 1.0)])
def test_lnmax_bound_upper_bounds_exact_divergence_two_classes(gap, gamma):
    orders = np.array([2.0, 3.0, 5.0, 9.0, 17.0, 33.0])
    bound = P.rdp_lnmax([50 + gap / 2, 50 - gap / 2], gamma, orders)
    assert bound[0] < P.rdp_pure_dp(2 * gamma, orders)[0]  # the data-dependent bound is in use
    p = _lap_diff_logs(gap, 1 / gamma)
    for g2 in (gap - 2, gap + 2):
        p2 = _lap_diff_logs(g2, 1 / gamma)
        for a, b in zip(orders, bound):
            assert _bern_renyi(p, p2, a) <= b + 1e-12
