"""arena.testing.assert_close holds every reference to the ratio at its own scale: no absolute escape by default.

Run: python -m pytest -q tests/test_testing.py
"""

from __future__ import annotations

import pytest
import torch

from arena.testing import assert_close


@pytest.mark.parametrize("scale", [1e-7, 1.0, 1e7], ids=["1e-7", "1", "1e7"])
def test_the_ratio_applies_at_every_scale(scale):
    ref = torch.randn(50, dtype=torch.float64) * scale
    assert_close("within", ref, ref * (1 + 1e-5), 1e-4)
    with pytest.raises(AssertionError, match="relative RMS error 1 > 0.0001"):
        assert_close("100 % error", ref, 2 * ref, 1e-4)  # the old 1e-6 floor let this pass at scale 1e-7
    with pytest.raises(AssertionError, match="relative RMS error 1 > 0.0001"):
        assert_close("zero result", ref, torch.zeros_like(ref), 1e-4)


def test_an_all_zero_reference_needs_an_all_zero_result_or_a_floor():
    ref = torch.zeros(10)
    assert_close("both zero", ref, torch.zeros(10), 1e-4)
    noise = torch.full((10,), 1e-9)
    with pytest.raises(AssertionError, match="relative RMS error inf"):
        assert_close("noise", ref, noise, 1e-4)  # once: an absolute RMS of 1e-9 compared with the ratio
    assert_close("noise under a floor", ref, noise, 1e-4, atol=1e-8)


def test_the_floor_only_covers_a_reference_below_it():
    """The floor is for references ~0 at the caller's scale; one above it is held to the ratio."""
    ref = torch.full((10,), 1e-7, dtype=torch.float64)
    assert_close("~0 reference, ~0 result", ref, 3 * ref, 1e-4, atol=1e-6)
    with pytest.raises(AssertionError, match="floor atol 1e-07"):
        assert_close("reference above the floor", 10 * ref, 20 * ref, 1e-4, atol=1e-7)
    with pytest.raises(AssertionError):
        assert_close("result off the floor", ref, ref + 1e-5, 1e-4, atol=1e-6)


def test_shape_and_non_finite_results_fail():
    with pytest.raises(AssertionError, match=r"shape \(3,\) != reference \(2,\)"):
        assert_close("shape", torch.zeros(2), torch.zeros(3), 1.0)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("nan", torch.ones(3), torch.tensor([1.0, float("nan"), 1.0]), 1.0, atol=1e9)
