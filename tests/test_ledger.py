"""The privacy ledger against known values."""
import math

import numpy as np
import pytest

from benchmark.privacy import ledger as L


def test_gaussian_rdp_is_alpha_over_two_sigma_squared():
    orders = np.array(L.ORDERS)
    for sigma in (0.5, 1.0, 3.7):
        np.testing.assert_allclose(L.rdp_of_event(L.gaussian(sigma)), orders / (2 * sigma**2))
        np.testing.assert_allclose(L.rdp_of_event(L.gaussian(sigma, steps=7)), 7 * orders / (2 * sigma**2))


def test_subsampled_gaussian_with_rate_one_is_plain_gaussian():
    np.testing.assert_allclose(L.rdp_of_event(L.subsampled_gaussian(1.3, 1.0, 5)),
                               L.rdp_of_event(L.gaussian(1.3, 5)), rtol=1e-9)


def test_gaussian_epsilon_matches_closed_form_conversion():
    # one Gaussian release, sigma = 1: the classic RDP bound min_a a/2 + log(1/d)/(a-1) is an upper
    # bound on the ledger's (tighter, Balle et al.) conversion and close to it
    delta = 1e-5
    eps = L.epsilon_from_events([L.gaussian(1.0)], delta)
    classic = min(a / 2 + math.log(1 / delta) / (a - 1) for a in L.ORDERS)
    assert eps <= classic
    assert eps > 0.8 * classic


def test_dp_sgd_calibration_round_trips():
    for target, q, steps in ((1.0, 0.01, 1000), (10.0, 64 / 1197, 280), (0.2, 0.004, 5000)):
        sigma = L.calibrate_gaussian(target, 1e-5, steps, q)
        eps = L.epsilon_from_events([L.subsampled_gaussian(sigma, q, steps)], 1e-5)
        assert eps <= target
        assert eps > target * 0.995
        # a little less noise overspends
        assert L.epsilon_from_events([L.subsampled_gaussian(sigma * 0.99, q, steps)], 1e-5) > target


def test_dp_sgd_calibration_matches_opacus():
    from opacus.accountants.utils import get_noise_multiplier
    ours = L.calibrate_gaussian(3.0, 1e-5, 500, 0.02)
    theirs = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=0.02, steps=500,
                                  accountant="rdp", epsilon_tolerance=0.001)
    assert ours == pytest.approx(theirs, rel=0.02)


def test_randomized_response_and_laplace_are_pure():
    assert L.epsilon_from_events([L.randomized_response(2.0)], 1e-5) == pytest.approx(2.0)
    assert L.epsilon_from_events([L.randomized_response(0.5, steps=4)], 1e-5) <= 2.0
    assert L.epsilon_from_events([L.laplace(2.0)], 1e-5) == pytest.approx(0.5)


def test_laplace_rdp_matches_mironov_table():
    lam, a = 1.5, 3.0
    expected = 1 / (a - 1) * math.log(a / (2 * a - 1) * math.exp((a - 1) / lam) + (a - 1) / (2 * a - 1) * math.exp(-a / lam))
    got = L.rdp_of_event(L.laplace(lam), orders=[a])[0]
    assert got == pytest.approx(expected)


def test_rdp_curve_on_other_orders_is_upper_bounded():
    ev = L.rdp_curve(orders=[2, 4, 8], rdp=[0.1, 0.2, 0.4])
    r = L.rdp_of_event(ev, orders=[1.5, 2, 3, 8, 9])
    assert list(r[:4]) == [0.1, 0.1, 0.2, 0.4]
    assert math.isinf(r[4])


def test_ledger_merges_identical_events_and_guards_budget():
    ledger = L.PrivacyLedger(target_epsilon=1.0, delta=1e-5)
    sigma = L.calibrate_gaussian(1.0, 1e-5, 100, 0.01)
    for _ in range(100):
        ledger.record(L.subsampled_gaussian(sigma, 0.01))
    assert len(ledger.events) == 1 and ledger.events[0]["steps"] == 100
    assert ledger.epsilon() <= 1.0
    with pytest.raises(L.PrivacyBudgetExceeded):
        for _ in range(100):
            ledger.record(L.subsampled_gaussian(sigma, 0.01))
    assert ledger.epsilon() <= 1.0  # the refused event is not recorded
    assert L.epsilon_from_events(ledger.events, 1e-5) == pytest.approx(ledger.epsilon())


def test_ledger_state_round_trip():
    ledger = L.PrivacyLedger(5.0, 1e-5)
    ledger.record(L.gaussian(10.0, 3))
    ledger.record(L.randomized_response(0.1))
    other = L.PrivacyLedger()
    other.load_state_dict(ledger.state_dict())
    assert other.events == ledger.events and other.epsilon() == pytest.approx(ledger.epsilon())


def test_unknown_mechanism_rejected():
    with pytest.raises(ValueError):
        L.PrivacyLedger(1.0).record({"mechanism": "magic", "steps": 1})
