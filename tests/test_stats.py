"""Intervals checked against values worked out by hand."""

import math

from stratarl.stats import mean_interval, newcombe_difference, wilson


def test_wilson_by_hand():
    # 5/10, z=1.96: centre = (0.5 + 1.9208/10)/(1 + 3.8415/10) = 0.5; half = 1.96*sqrt(0.025 + 0.0009604)/1.38415
    iv = wilson(5, 10)
    half = 1.959964 * math.sqrt(0.025 + 3.841459 / 400) / (1 + 3.841459 / 10)
    assert math.isclose(iv.value, 0.5) and math.isclose(iv.low, 0.5 - half, rel_tol=1e-5)
    assert math.isclose(iv.high, 0.5 + half, rel_tol=1e-5)
    assert wilson(0, 20).low == 0.0 and 0.16 < wilson(0, 20).high < 0.17  # 0/20 -> [0, 16.1%]
    assert wilson(0, 0).high == 1.0


def test_newcombe_difference_excludes_zero_only_when_clear():
    assert newcombe_difference(20, 200, 60, 200).low > 0  # 10% -> 30%
    assert newcombe_difference(50, 100, 55, 100).low < 0  # 50% -> 55%: not clear


def test_mean_interval_t():
    iv = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(2)=4.303 -> half = 4.303/sqrt(3)
    assert math.isclose(iv.high - iv.value, 4.303 / math.sqrt(3), rel_tol=1e-6)
    assert mean_interval([0.4]).low == 0.4
