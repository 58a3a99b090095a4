"""rel_frobenius and poison: a wrong or unwritten output must never pass."""

import math

import numpy as np
import pytest

from workloads.common.verify import poison, rel_frobenius


def test_identical_arrays_have_zero_error():
    ref = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    assert rel_frobenius(ref, ref) == 0.0


def test_relative_error_is_scaled_by_reference_norm():
    ref = np.full((4, 4), 2.0)
    out = ref.copy()
    out[0, 0] += 0.8
    assert rel_frobenius(out, ref) == pytest.approx(0.8 / 8.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_output_is_infinite_error(bad):
    ref = np.ones((3, 3))
    out = ref.copy()
    out[1, 2] = bad
    assert rel_frobenius(out, ref) == math.inf
    assert not rel_frobenius(out, ref) < 1e-2


def test_poisoned_output_never_passes():
    out = poison(np.zeros((8, 8), dtype=np.float32))
    assert np.isnan(out).all()
    assert rel_frobenius(out, np.ones((8, 8))) == math.inf


def test_poison_integers_and_reject_others():
    assert (poison(np.zeros(3, dtype=np.int32)) == np.iinfo(np.int32).max).all()
    with pytest.raises(TypeError):
        poison(np.zeros(3, dtype=bool))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        rel_frobenius(np.ones((2, 3)), np.ones((3, 2)))


def test_zero_reference_gives_absolute_error():
    assert rel_frobenius(np.full(4, 0.5), np.zeros(4)) == pytest.approx(1.0)
