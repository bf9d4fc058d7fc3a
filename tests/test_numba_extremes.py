"""The Numba kernels over the whole float range, their serial variants, and
read-only installs.

* Every Numba kernel against an EXACT or 60-digit reference written here from
  the math (rationals, ``decimal``), on inputs and thresholds drawn from the
  whole range of the dtype: 0, the smallest subnormal, the smallest normal,
  1, max/4, max/2, max (and inf thresholds where the kernel contract allows
  them), float32 and float64.  Independent of both backends: at these scales
  the NumPy reference itself overflows in places (noted per test).
* OWL on both CPU backends: the zero pattern is decided exactly by both, so it
  must be identical, also on long vectors (the parallel paths) built so that
  |v| - w cancels.
* The long-run cases of the OWL defects as explicit parity examples (the
  parity test of test_backends.py draws from ``st.data()``, which cannot take
  an ``@example``).
* ``parallel=False`` gives the same result bit for bit and never starts
  numba's thread pool; the backend reads no environment variable.
* A read-only install (package directory and home not writable, no usable
  NUMBA_CACHE_DIR), run as an unprivileged user: import and every kernel work,
  with one warning.
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import shutil
import sys
import tempfile
import textwrap
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import _procs
import proxlib
from test_owl import exact_owl_fractions

pytestmark = pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="numba does not import here")

if "numba" in proxlib.available_backends():
    from proxlib.backends import numba_cpu as NB
from proxlib.backends import numpy_ref as REF

DTYPES = [np.float64, np.float32]
EPS = {np.float64: 2.0**-52, np.float32: 2.0**-23}
PREC = 80  # decimal digits of the 60-digit-class references


def _finfo(dtype):
    f = np.finfo(dtype)
    return float(f.smallest_subnormal), float(f.tiny), float(f.max)


def special_values(dtype):
    sub, tiny, big = _finfo(dtype)
    return [0.0, sub, 3 * sub, tiny, 1e-30, 0.5, 1.0, 3.0, big / 4, big / 2, big]


def magnitudes(dtype):
    """Non-negative floats of the dtype from the whole range."""
    sub, _, big = _finfo(dtype)
    return st.one_of(
        st.sampled_from(special_values(dtype)),
        st.floats(0.0, big, width=64 if dtype == np.float64 else 32, allow_subnormal=True),
    )


def signed(dtype):
    return st.tuples(magnitudes(dtype), st.booleans()).map(lambda t: -t[0] if t[1] else t[0])


@st.composite
def rows(draw, dtype, max_rows=3, max_cols=4):
    G = draw(st.integers(1, max_rows))
    m = draw(st.integers(1, max_cols))
    return draw(arrays(dtype, (G, m), elements=signed(dtype)))


def thresholds(draw, dtype, n, allow_inf=True):
    el = magnitudes(dtype)
    if allow_inf:
        el = st.one_of(el, st.just(np.inf))
    return draw(arrays(dtype, n, elements=el))


def tolerance(dtype, exact, scale, m):
    """|got - exact| allowed: m eps of the row's scale (sums over the row), two
    eps of the entry, and two units of the smallest subnormal (absolute spacing)."""
    sub, _, _ = _finfo(dtype)
    assert np.all(np.isfinite(scale)), "a tolerance must not be vacuous"
    return 8 * m * EPS[dtype] * scale + 2 * EPS[dtype] * np.abs(exact) + 2 * sub


def assert_close(got, exact, dtype, scale, m):
    got = np.asarray(got, dtype=np.float64)
    assert got.dtype == np.float64 and not np.isnan(got).any(), got
    err = np.abs(got - exact)
    tol = tolerance(dtype, exact, scale, m)
    assert np.all(err <= tol), (got, exact, err.max())


def D(x):
    return Decimal(float(x))


# ------------------------------------------------------------------ exact references


def exact_group_lasso(W, a):
    """x_r = w_r (1 - a_r/||w_r||)_+: the test ||w|| > a on exact squares, the
    factor in 80-digit decimals."""
    out = np.zeros(W.shape)
    with localcontext() as ctx:
        ctx.prec = PREC
        for r in range(W.shape[0]):
            if not np.isfinite(a[r]):
                continue
            if sum(Fraction(float(x)) ** 2 for x in W[r]) > Fraction(float(a[r])) ** 2:
                fac = 1 - D(a[r]) / sum(D(x) * D(x) for x in W[r]).sqrt()
                out[r] = [float(D(x) * fac) for x in W[r]]
    return out


def exact_growl(W, w):
    """Row norms in 80-digit decimals, their OWL prox in rationals, rows rescaled."""
    out = np.zeros(W.shape)
    with localcontext() as ctx:
        ctx.prec = PREC
        nrm = [sum(D(x) * D(x) for x in row).sqrt() for row in W]
        new = exact_owl_fractions(nrm, w)
        for r in range(W.shape[0]):
            if nrm[r] > 0:
                fac = Decimal(new[r].numerator) / Decimal(new[r].denominator) / nrm[r]
                out[r] = [float(D(x) * fac) for x in W[r]]
    return out


def exact_exclusive(W, b):
    """Per row, tau = b S_k / (1 + b k) for the consistent k, in rationals."""
    out = np.zeros(W.shape)
    for r in range(W.shape[0]):
        if b[r] == 0:
            out[r] = W[r]
        elif np.isfinite(b[r]):
            out[r] = R.exact_exclusive_row(W[r], Fraction(float(b[r])))
    return out


def exact_group_exclusive(W, a, b):
    """a ||x||_2 + b/2 ||x||_1^2 per row (_cvx.exact_group_exclusive_ab: x = 0
    iff ||w|| <= a on exact squares, else z (1 - a/||z||), z = (|w| - theta)_+
    with theta bisected in decimals); 0 where a or b is infinite."""
    out = np.zeros(W.shape)
    for r in range(W.shape[0]):
        if np.isfinite(a[r]) and np.isfinite(b[r]):
            out[r] = R.exact_group_exclusive_ab(W[r], float(a[r]), float(b[r]))
    return out


def exact_weighted_l1(v, w):
    return np.array([math.copysign(float(max(abs(Fraction(float(x))) - Fraction(float(t)), 0)), x) for x, t in zip(v, w)])


def exact_weighted_l2sq(v, w):
    return np.array([float(Fraction(float(x)) / (1 + 2 * Fraction(float(t)))) for x, t in zip(v, w)])


# ------------------------------------------------------------------ kernels over the whole range


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_group_lasso_whole_range(dtype, data):
    W = data.draw(rows(dtype))
    a = thresholds(data.draw, dtype, W.shape[0])
    got = NB.group_lasso(W, a, check_finite=True)  # a finite W never trips the fused check
    assert got.dtype == dtype
    scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True)
    assert_close(got, exact_group_lasso(W.astype(np.float64), a), dtype, scale, W.shape[1])


def test_group_lasso_issue_cases():
    # ||[1e308] * 4|| = 2e308 is not a float, the row is: it used to be rejected as
    # "NaN or Inf" (numba and the reference).  x = W (1 - 1/2e308) = W.
    W = np.full((1, 4), 1e308)
    with proxlib.use_backend("numba"):
        np.testing.assert_array_equal(proxlib.prox_group_lasso(W, 1.0), W)
    # a = [0, inf] (step * lam overflowed on a group of weight 0 and of weight 1):
    # the first row is unchanged, the second 0
    W = np.array([[3.0, -4.0], [1e300, 2.0]])
    a = np.array([0.0, np.inf])
    np.testing.assert_array_equal(NB.group_lasso(W, a), [[3.0, -4.0], [0.0, 0.0]])
    # ||w|| = 2.54e308 > a = max/4: factor 0.823...
    W = np.array([[-1.7976931348623157e308, -1.0, 1.7976931348623157e308, -0.0]])
    a = np.array([4.4942328371557893e307])
    assert_close(NB.group_lasso(W, a), exact_group_lasso(W, a), np.float64, np.abs(W).max(), 4)


def test_group_lasso_rows_whose_sum_of_squares_is_subnormal():
    """||[3, 4] 1e-161|| = 5e-161, whose square 2.5e-321 is subnormal (9
    significant bits): below 2^-600 the kernel sums the squares again
    scaled by a power of two.  A norm from the plain sum was 6e-6 off, and so
    was x = W (1 - a/||w||) = W / 2 for a = 2.5e-161."""
    W = np.array([[3e-161, -4e-161], [0.0, 5e-170]])
    a = np.array([2.5e-161, 2.5e-170])
    want = exact_group_lasso(W, a)
    np.testing.assert_allclose(want, W / 2, rtol=4 * EPS[np.float64])
    np.testing.assert_allclose(NB.group_lasso(W, a), want, rtol=4 * EPS[np.float64], atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_growl_whole_range(dtype, data):
    W = data.draw(rows(dtype, max_rows=4))
    w = np.sort(thresholds(data.draw, dtype, W.shape[0], allow_inf=False))[::-1].copy()
    got = NB.growl(W, w, check_finite=True)
    assert got.dtype == dtype
    # OWL of the row norms: an error of G m eps of the largest norm moves every row
    scale = max(np.abs(W.astype(np.float64)).max(), w.astype(np.float64).max())  # (|W| + w)/2, no overflow
    assert_close(got, exact_growl(W.astype(np.float64), w), dtype, scale, 2 * W.size)


def test_growl_issue_cases():
    # row norms 2e308 (tied): one block of mean ((2e308 - 1e308) + 2e308)/2 = 1.5e308
    W = np.full((2, 4), 1e308)
    np.testing.assert_allclose(NB.growl(W, np.array([1e308, 0.0])), np.full((2, 4), 7.5e307), rtol=4 * EPS[np.float64])
    # a tiny row next to a huge one keeps its own scale (it was zeroed)
    W = np.array([[1.7976931348623157e308, 1.0], [1e-30, 5e-324]])
    got = NB.growl(W, np.array([1.0, 0.0]))
    assert got[1, 0] == 1e-30 and got[1, 1] == 5e-324


def test_growl_common_scale_is_the_least_that_keeps_the_norms_below_2_1023():
    """The common scale S of the row norms (_growl_norms) is the least power of
    two with every norm / S < 2^1023: a norm of 1.7e308 (< 2^1024) takes S = 2,
    which keeps a subnormal row's scaled norm 1.5e-323 / 2 nonzero, so the row
    (weight 0, not pooled: its prox is itself) comes back as it is.  S = 4,
    one binade more, rounded that scaled norm to 0 and zeroed the row."""
    W = np.array([[1.7e308, 1.0], [1.5e-323, 0.0]])
    w = np.array([1.0, 0.0])
    for order in ("C", "F"):
        got = NB.growl(np.array(W, order=order), w, parallel=False)
        assert got[1, 0] == 1.5e-323 and got[1, 1] == 0.0, order
        np.testing.assert_allclose(got[0], W[0], rtol=4 * EPS[np.float64], atol=0)
    got = NB.growl_channels(np.ascontiguousarray(W.T).reshape(2, 2, 1), w)[:, :, 0].T
    assert got[1, 0] == 1.5e-323


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_exclusive_lasso_whole_range(dtype, data):
    W = data.draw(rows(dtype))
    b = thresholds(data.draw, dtype, W.shape[0])
    got = NB.exclusive_lasso(W, b)
    assert got.dtype == dtype
    scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True)
    assert_close(got, exact_exclusive(W.astype(np.float64), b), dtype, scale, W.shape[1])


def test_exclusive_lasso_huge_b():
    # b = max: tau = b S_2 / (1 + 2b) with both top entries at max: x = max/(1 + 2b)
    # = 0.5 for them (1 + 2b overflows; the reference returns 0 there)
    W = np.array([[-0.0, -2.2250738585072014e-308, -1.7976931348623157e308, 1.5e-323, 1.7976931348623157e308]])
    got = NB.exclusive_lasso(W, np.array([1.7976931348623157e308]))
    np.testing.assert_array_equal(got, [[0.0, 0.0, -0.5, 0.0, 0.5]])
    np.testing.assert_array_equal(NB.exclusive_lasso(W, np.array([0.0])), W)  # b = 0: unchanged, subnormals too


def test_exclusive_lasso_large_b_is_accurate_relative_to_the_output():
    """With b large the prox is small against the row (x -> max|w| / (1 + b k)):
    tau = b S_k / (1 + b k) is within ulps of max|w|.  The output is formed
    as (y - Y_k) + e, e = (Y_k - b F_k) / (1 + b k), with no cancellation, so
    it is accurate relative to itself; y - (Y_k - e) subtracted the rounded
    tau from y and lost about 14 of the 53 bits at b = 2^40, which a
    tolerance relative to the row's scale does not see."""
    W = np.array([[1.0, -0.5, 0.25], [-3.0, 3.0, 1.0], [0.7, 0.69, -0.1]])
    b = np.full(3, 2.0**40)
    exact = exact_exclusive(W, b)
    assert np.all(exact[:, 0] != 0)
    for kernel in (NB.exclusive_lasso, REF.exclusive_lasso):
        np.testing.assert_allclose(kernel(W, b), exact, rtol=8 * EPS[np.float64], atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_group_exclusive_whole_range(dtype, data):
    W = data.draw(rows(dtype, max_rows=2, max_cols=3))
    a = thresholds(data.draw, dtype, W.shape[0])
    b = thresholds(data.draw, dtype, W.shape[0])
    got = NB.group_exclusive(W, a, b)
    assert got.dtype == dtype
    scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True)
    assert_close(got, exact_group_exclusive(W.astype(np.float64), a, b), dtype, scale, W.shape[1])


def test_group_exclusive_rows_whose_cubes_overflow():
    # rows used unscaled (sum below 2^400) with ||w||^3 and a F^2 above the
    # float range: Newton's slope a F^2/||z||^3 was inf/inf = NaN, the search
    # fell back to secants from 0 and stopped with the whole row as support
    rng = np.random.default_rng(7)
    W = rng.standard_normal((3, 200)) * np.array([[4e106], [1e110], [3e115]])
    nrm = np.array([float(sum(Fraction(float(x)) ** 2 for x in row) ** 0.5) for row in W])
    a = nrm * np.array([0.33, 0.06, 0.8])
    b = np.array([2.55, 0.01, 40.0])
    got = NB.group_exclusive(W, a, b)
    scale = np.abs(W).max(axis=1, keepdims=True)
    assert_close(got, exact_group_exclusive(W, a, b), np.float64, scale, W.shape[1])
    assert_close(NB.group_exclusive(W, a, b, parallel=False), exact_group_exclusive(W, a, b), np.float64, scale, W.shape[1])


def test_group_exclusive_zero_weight_row_with_overflowed_step():
    # a = b = [0, inf]: the first row unchanged, the second 0
    W = np.array([[3.0, -4.0, 1e-300], [1e300, 2.0, 5e-324]])
    t = np.array([0.0, np.inf])
    np.testing.assert_array_equal(NB.group_exclusive(W, t, t), [[3.0, -4.0, 1e-300], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(NB.exclusive_lasso(W, t), [[3.0, -4.0, 1e-300], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_weighted_l1_and_l2sq_whole_range(dtype, data):
    v = data.draw(arrays(dtype, st.integers(1, 8), elements=signed(dtype)))
    w = thresholds(data.draw, dtype, v.size, allow_inf=False)
    v64 = v.astype(np.float64)
    assert_close(NB.weighted_l1(v, w), exact_weighted_l1(v64, w), dtype, 0.0, 1)
    # v / (1 + 2 w), one rounding in float64 and one to the dtype
    assert_close(NB.weighted_l2sq(v, w), exact_weighted_l2sq(v64, w), dtype, 0.0, 1)


def test_weighted_l2sq_where_one_plus_2w_overflows():
    v = np.array([-4.4942328371557893e307, 1.7976931348623157e308])
    w = np.array([8.988465674311579e307, 1.7976931348623157e308])
    np.testing.assert_array_equal(NB.weighted_l2sq(v, w), [-0.25, 0.5])  # 1 + 2w = inf gave -0, 0


@pytest.mark.parametrize("p", [0.0, 0.5, 2.0 / 3.0, 0.3, 0.9, 1.0])
@given(v=st.lists(signed(np.float64), min_size=1, max_size=4), lam=magnitudes(np.float64))
def test_lp_whole_range(p, v, lam):
    v = np.array(v)
    assume(lam > 0)
    if p not in (0.0, 1.0):
        # |v| next to the threshold decides between two far-apart answers by the
        # objectives' last bits; the 60-digit reference and float64 may differ there
        tau = (2 - p) / (2 * (1 - p)) * math.exp(math.log(2 * (1 - p)) / (2 - p) + math.log(lam) / (2 - p))
        R.not_near(v, tau, rel=1e-6)
    else:
        R.not_near(v, math.sqrt(2.0) * math.sqrt(lam) if p == 0.0 else lam, rel=1e-12)
    got = NB.lp(v, lam, p)
    exact = np.array([R.exact_lp_scalar(x, lam, p) for x in v])
    # Newton to the last bit: a few eps of |v| (first-order: x* is well conditioned
    # away from the threshold)
    np.testing.assert_allclose(got, exact, rtol=64 * EPS[np.float64], atol=2 * _finfo(np.float64)[0])


def test_lp_issue_cases():
    # p = 0: v^2/2 > lam keeps v; 2 lam overflowed to inf and zeroed everything
    v = np.array([1e200, -1e200, 1e100])
    np.testing.assert_array_equal(NB.lp(v, 1e308, 0.0), [1e200, -1e200, 0.0])
    with proxlib.use_backend("numba"):
        np.testing.assert_array_equal(proxlib.prox_lp(v, 1e308, 0.0), [1e200, -1e200, 0.0])
    # p = 0.3: tau's 2 lam (1 - p) overflowed to inf and zeroed v = 1e200, whose
    # objective lam v^0.3 = 1.7e368 is far below v^2/2 = 5e399
    np.testing.assert_allclose(NB.lp(np.array([1e200]), 1.7e308, 0.3), [R.exact_lp_scalar(1e200, 1.7e308, 0.3)], rtol=4 * EPS[np.float64])
    # a subnormal lam: Newton's lam p x^(p-1) formed as (lam p) x^(p-1) rounded lam p
    # = 1.35e-323 to 1.5e-323 (11%), and x was 3e-14 relative off (found by the long
    # profile); every backend runs the reference's formula
    v, lam = np.array([7.43708112964288e-283, -7.43708112964288e-283]), 1.5e-323
    exact = R.exact_lp_scalar(float(v[0]), lam, 0.9)
    np.testing.assert_allclose(NB.lp(v, lam, 0.9), [exact, -exact], rtol=4 * EPS[np.float64])
    with proxlib.use_backend("numpy"):
        np.testing.assert_allclose(proxlib.prox_lp(v, lam, 0.9), [exact, -exact], rtol=4 * EPS[np.float64])
    # p = 0 with 2 lam beyond the range: the threshold sqrt(2 lam) correctly rounded
    # (as lp_threshold and the reference form it), not sqrt(2) sqrt(lam), two roundings
    # an ulp off for about half of such lam; v one ulp either side of it and at it
    for lam in (1.0000000000000002 * 2.0**1022, 1.1 * 2.0**1022, 1.37 * 2.0**1023, 1.9 * 2.0**1023):
        tau = proxlib.lp_threshold(lam, 0.0)
        assert tau == 2.0 * math.sqrt(lam / 2.0)
        v = np.array([tau, -tau, np.nextafter(tau, np.inf), np.nextafter(tau, 0.0)])
        want = np.where(np.abs(v) <= tau, 0.0, v)
        np.testing.assert_array_equal(NB.lp(v, lam, 0.0), want)
        for backend in ("numpy", "numba"):
            with proxlib.use_backend(backend):
                np.testing.assert_array_equal(proxlib.prox_lp(v, lam, 0.0), want)


# ------------------------------------------------------------------ OWL


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_owl_whole_range_against_rationals(dtype, data):
    v = data.draw(arrays(dtype, st.integers(1, 8), elements=signed(dtype)))
    w = np.sort(thresholds(data.draw, dtype, v.size, allow_inf=False))[::-1].copy()
    v64, w64 = v.astype(np.float64), w.astype(np.float64)
    exact = R.exact_owl(v64, w64)
    scale = max(np.abs(v64).max(), w64.max())  # (max|v| + max w)/2 without overflowing
    for name, kernel in (("numba", NB.owl), ("numpy", REF.owl)):
        x = kernel(v, w)
        assert x.dtype == dtype, name
        assert_close(x, exact, dtype, scale, 2 * v.size)
        # zero pattern exact (an exact value below the dtype's smallest subnormal may round to 0)
        sub = _finfo(dtype)[0]
        assert np.all((x == 0) <= (np.abs(exact) < sub)), (name, x, exact)
        assert np.all((x != 0) <= (exact != 0)), (name, x, exact)


def test_owl_issue_cases():
    for backend in ("numba", "numpy"):
        with proxlib.use_backend(backend):
            # sums of 1e308 overflowed: numba gave inf
            np.testing.assert_array_equal(proxlib.prox_owl(np.full(3, 1e308), np.zeros(3)), np.full(3, 1e308))
            # z = [0.7e308, 1.7e308, 1.6e308] pools to one block of mean 4e308/3
            x = proxlib.prox_owl(np.array([1.7e308, 1.7e308, 1.6e308]), np.array([1e308, 0.0, 0.0]))
            mean = float((2 * Fraction(1.7e308) + Fraction(1.6e308) - Fraction(1e308)) / 3)
            np.testing.assert_allclose(x, np.full(3, mean), rtol=4 * EPS[np.float64])
            # an infinite threshold (step * w overflowed) gives 0
            np.testing.assert_array_equal(proxlib.prox_owl(np.array([1.0, -2.0]), np.array([1e300, 0.0]), 1e10), [0.0, -0.0])


# the long runs' OWL failures, as parity examples: (v, step * w)
OWL_EXAMPLES = [
    (np.array([1.0, 5.0, 3.66676101e-175]), np.array([6.0, 2.80259692e-45, 0.0])),  # support decided by rounding
    (np.full(3, 0.05), np.zeros(3)),  # a pooled mean left [min, max] of its block
    (np.array([2.10741609e-42]), np.array([2.10741609e-42])),  # float32 subnormals
    (np.full(12, 5.436249914654229), np.zeros(12)),  # ties split by scipy's pooling
    (np.array([0.8401534358238483] * 4 + [-0.8401534358238483] * 4), np.zeros(8)),
    # rounded z under-pooled: 0.5 + 0.5 + (1.7e38 - 1) - 1.7e38 has the exact mean 0
    (np.array([-1.1754944e-38, -1.0, 1e-30, 1.7014117e38, 1.7014117e38, 1.0]),
     np.array([3.4028235e38, 1.0, 0.5, 0.5, 1e-30, 0.0])),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(OWL_EXAMPLES)))
def test_owl_examples_numba_matches_reference(case, dtype):
    v, w = OWL_EXAMPLES[case]
    v, w = v.astype(dtype), w.astype(dtype)
    x = NB.owl(v, w)
    ref = REF.owl(v, w)
    exact = R.exact_owl(v.astype(np.float64), w.astype(np.float64))
    scale = max(np.abs(v.astype(np.float64)).max(), w.astype(np.float64).max())
    assert x.dtype == ref.dtype == dtype
    np.testing.assert_array_equal(x == 0, ref == 0)
    assert_close(x, exact, dtype, scale, 2 * v.size)
    assert_close(ref, exact, dtype, scale, 2 * v.size)
    assert np.all(np.abs(x) <= np.abs(v)) and np.all(x * v >= 0)


def _owl_block_verdicts(s, w, starts):
    """(serial verdict, parallel verdict, whether _owl_monotone changes
    nothing) for the blocks at ``starts`` over sorted magnitudes s."""
    nb = starts.size
    sc = NB._owl_scale(s, w)
    vals = np.empty(nb)
    ordered = NB._owl_values(s, w, sc, starts, 0, nb, nb, vals, False)
    for threads in (1, 2, 3):  # (each thread takes every threads-th range of blocks)
        vals_par = np.empty(nb)
        ordered_par = NB._owl_values_par(s, w, sc, starts, nb, vals_par, False, threads)
        np.testing.assert_array_equal(vals_par, vals)
    pooled_starts, pooled_vals = starts.copy(), vals.copy()
    nb2 = NB._owl_monotone(s, w, sc, pooled_starts, nb, pooled_vals)
    unchanged = nb2 == nb and np.array_equal(pooled_vals, vals)
    # owl's call (pava_means): where the blocks are as a PAVA leaves them
    # (sc = 1, adjacent singletons in order), vals holds the singletons' z and
    # only the pooled blocks (NaN here) are computed
    ends = np.r_[starts[1:], s.size]
    single = ends - starts == 1
    z = s[starts] - w[s.size - 1 - starts]
    pairs = single[:-1] & single[1:]
    if sc == 1.0 and not np.any(pairs & ((z[:-1] >= z[1:]) | (s[starts[1:] - 1] == s[starts[1:]]))):
        for par in (False, True):
            means = np.where(single, z, np.nan)
            if par:
                verdict = NB._owl_values_par(s, w, sc, starts, nb, means, True, 2)
            else:
                verdict = NB._owl_values(s, w, sc, starts, 0, nb, nb, means, True)
            np.testing.assert_array_equal(means, vals)
            assert verdict == ordered
    return ordered, ordered_par, unchanged


@given(st.data())
def test_owl_block_values_tell_whether_the_blocks_need_pooling_again(data):
    """_owl_values (serial, and in up to 64 ranges at once) returns whether
    its blocks are in order, and the long path skips _owl_monotone when they
    are: the verdict must be True exactly when _owl_monotone would change
    nothing.  Blocks drawn at random over sorted magnitudes with ties (some
    split by a block boundary) and non-increasing (or equal) weights, so that
    both verdicts occur, including where two ranges meet."""
    n = data.draw(st.integers(1, 300))
    pool = data.draw(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8))
    s = np.sort(np.array(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))))
    if data.draw(st.booleans()):
        w = np.sort(np.array(data.draw(st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n))))[::-1].copy()
    else:
        w = np.full(n, data.draw(st.floats(0.0, 10.0)))
    j0 = data.draw(st.integers(0, n - 1))
    inner = data.draw(st.sets(st.integers(j0 + 1, n - 1), max_size=n - j0 - 1)) if j0 + 1 < n else set()
    ordered, ordered_par, unchanged = _owl_block_verdicts(s, w, np.array(sorted({j0, *inner}), dtype=np.int64))
    assert ordered == ordered_par == unchanged


def _long_case(decrease_at_end):
    """40 magnitudes 1..40: 38 singletons in order, then a pooled pair whose
    value falls below them when the two largest weights are 100."""
    w = np.zeros(40)
    w[:2] = 100.0 if decrease_at_end else 0.0
    return np.arange(1.0, 41.0), w, list(range(39))


def _pair_first_case(decrease):
    """A pooled pair first, then 38 singletons in order; the first of them
    below the pair's value when decrease."""
    s = np.r_[1.0, 10.0, np.arange(11.0, 49.0)]
    w = np.zeros(40)
    w[:38] = 8.0 if decrease else 0.0
    return s, w, [0] + list(range(2, 40))


@pytest.mark.parametrize("s, w, starts, in_order", [
    (np.array([2.0, 3.0, 4.0]), np.array([4.0, 3.5, 0.0]), [0, 1], False),  # a singleton, then a pooled pair below it
    (np.array([2.0, 3.0, 4.0]), np.array([4.0, 0.0, 0.0]), [0, 2], False),  # a pooled pair, then a singleton below it
    (np.array([2.0, 3.0, 4.0, 5.0]), np.array([4.0, 4.0, 0.0, 0.0]), [0, 2], False),  # two pooled pairs, decreasing
    (np.array([2.0, 3.0, 4.0, 5.0]), np.zeros(4), [0, 2], True),
    (*_long_case(True), False),
    (*_long_case(False), True),
    (*_pair_first_case(True), False),
    (*_pair_first_case(False), True),
])
def test_owl_block_verdicts_pooled_next_to_singletons(s, w, starts, in_order):
    """Decreases on either side of a pooled block, also after and before a
    run of singletons longer than _owl_values's skip (every verdict of
    _owl_block_verdicts, owl's pava_means call included, agrees)."""
    assert _owl_block_verdicts(s, w, np.array(starts, dtype=np.int64)) == (in_order,) * 3


def _pava_merge_block_by_block(means, starts, nl, off, nr, n):
    """_owl_pava_merge without its early exit: every block of the second part
    taken through the pooling test (the loop as it was before the exit)."""
    means, starts = list(means), list(starts)
    stack = [[means[i], starts[i]] for i in range(nl)]
    top_sum = stack[-1][0] * float(starts[off] - stack[-1][1])
    for r in range(nr):
        cmean, cst = means[off + r], starts[off + r]
        en = starts[off + r + 1] if r + 1 < nr else n
        csum = cmean * float(en - cst)
        while stack and stack[-1][0] >= cmean:
            tmean, tst = stack.pop()
            csum += top_sum
            cst = tst
            cmean = min(max(csum / float(en - cst), cmean), tmean)
            if stack:
                top_sum = stack[-1][0] * float(cst - stack[-1][1])
        stack.append([cmean, cst])
        top_sum = csum
    return [m for m, _ in stack], [b for _, b in stack]


@given(st.data())
def test_owl_pava_merge_stops_where_nothing_pools(data):
    """The merge of two parts' PAVA blocks, which copies the second part's
    blocks from the first that pools with nothing on, gives the blocks and
    means of pooling them one by one: parts with ties, pooled and singleton
    blocks, a second part that pools with nothing, a little or all of the
    first (Hypothesis draws the magnitudes, thresholds and split)."""
    n = data.draw(st.integers(2, 300))
    pool = data.draw(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=n))
    s = np.sort(np.array(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))))
    w = np.ascontiguousarray(np.sort(np.array(data.draw(
        st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n))))[::-1] * data.draw(st.sampled_from([0.0, 0.1, 1.0, 3.0])))
    h = data.draw(st.integers(1, n - 1))
    means, starts = np.empty(n), np.empty(n, dtype=np.int64)
    nl = NB._owl_pava(s, w, 0, h, 1.0, means, starts)
    nr = NB._owl_pava(s, w, h, n, 1.0, means[h:], starts[h:])
    want_means, want_starts = _pava_merge_block_by_block(means, starts, nl, h, nr, n)
    nb = NB._owl_pava_merge(means, starts, nl, h, nr, n)
    assert nb == len(want_starts)
    np.testing.assert_array_equal(starts[:nb], want_starts)
    np.testing.assert_array_equal(means[:nb], want_means)


@given(st.data())
def test_owl_values_from_the_pava_means_match_the_full_pass(data):
    """_owl_values with ``pava_means`` (owl's call: it passes over runs of
    singleton blocks, whose PAVA means are their exact values when sc = 1)
    gives the values and the verdict of the full pass, on the blocks the
    PAVA makes (also split in halves and merged): magnitudes with ties,
    pooled and singleton blocks in every mix, runs of singletons longer and
    shorter than _owl_values's skip, and magnitudes large enough for sc < 1
    (where it makes the full pass)."""
    n = data.draw(st.integers(1, 400))
    scale = data.draw(st.sampled_from([1.0, 1e300]))
    pool = data.draw(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=n))
    s = np.sort(np.array(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)))) * scale
    if data.draw(st.booleans()):
        w = np.sort(np.array(data.draw(st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n))))[::-1] * scale
    else:
        w = np.linspace(data.draw(st.floats(0.0, 1.0)), 0.0, n) * scale  # mostly singletons
    w = np.ascontiguousarray(w)
    j0 = data.draw(st.integers(0, n - 1))
    split = data.draw(st.sampled_from([NB._OWL_SPLIT_PAVA, 2]))
    sc = NB._owl_scale(s, w)
    k = n - j0
    means, starts = np.empty(k), np.empty(k, dtype=np.int64)
    old = NB._OWL_SPLIT_PAVA
    NB._OWL_SPLIT_PAVA = split  # (a module global read by the Python-level _owl_pava_split)
    try:
        nb = NB._owl_pava_split(s, w, j0, sc, means, starts, data.draw(st.booleans()))
    finally:
        NB._OWL_SPLIT_PAVA = old
    full = means.copy()
    ordered_full = NB._owl_values(s, w, sc, starts, 0, nb, nb, full, False)
    skipped = means.copy()
    ordered = NB._owl_values(s, w, sc, starts, 0, nb, nb, skipped, True)
    skipped_par = means.copy()
    ordered_par = NB._owl_values_par(s, w, sc, starts, nb, skipped_par, True, data.draw(st.integers(1, 5)))
    np.testing.assert_array_equal(skipped[:nb], full[:nb])
    np.testing.assert_array_equal(skipped_par[:nb], full[:nb])
    assert ordered == ordered_par == ordered_full


@pytest.mark.parametrize("starts, in_order", [
    ([0, 2], False),  # values 2.5 <= 5, but the tie 5 | 5 is split
    ([0, 1], True),  # 0 <= 5, ties together
    ([1, 2], False),  # equal values 5, 5, the tie split
])
def test_owl_block_verdicts_on_a_split_tie(starts, in_order):
    s = np.array([0.0, 5.0, 5.0])
    assert _owl_block_verdicts(s, np.zeros(3), np.array(starts, dtype=np.int64)) == (in_order,) * 3


def test_owl_block_verdicts_on_a_decrease():
    # z = s - w (ascending positions pair with w reversed): [1 - 0, 2 - 1.5] = [1, 0.5]
    s = np.array([1.0, 2.0])
    assert _owl_block_verdicts(s, np.array([1.5, 0.0]), np.array([0, 1], dtype=np.int64)) == (False,) * 3
    assert _owl_block_verdicts(s, np.array([0.5, 0.0]), np.array([0, 1], dtype=np.int64)) == (True,) * 3


@pytest.mark.parametrize("n_below", [0, 3000], ids=["short", "long"])
def test_owl_pava_keeps_a_tie_apart_from_the_magnitude_an_ulp_above(n_below):
    """_owl_pava clamps a pooled mean between the two means it pools: three
    tied z = x pool to the rounded 3x/3, which is x + ulp for this x, and
    unclamped that pooled block then pooled with the next z = x + ulp (its
    mean >= the next's), which got x: zero weights (the identity) moved v
    by an ulp.  The exact-value passes after the PAVA cannot split an
    over-pooled block, so only the exact bits show it."""
    x = 1.9127555772777218
    assert (x + x + x) / 3.0 == np.nextafter(x, 2.0)  # the rounding that the clamp undoes
    below = np.linspace(0.1, 1.0, n_below)  # distinct smaller magnitudes: the long path past 2048
    v = np.concatenate([below, [x, -x, x, -np.nextafter(x, 2.0)]])
    for kernel in (NB.owl, REF.owl):
        np.testing.assert_array_equal(kernel(v, np.zeros(v.size)), v)


def test_owl_support_window_counts_the_low_parts_of_z():
    """_owl_support_exact's streaming sums add the low parts zl of z = |v| - w
    (TwoSum): here the high parts of z sum to P_7 = P_2 - 2^-51 + ..., below
    P_2 by far more than the window's margin, but with the zl the exact P_7
    exceeds P_2: the support is all 7 entries (their exact values about
    1e-17, far above the subnormals), not the first 2."""
    v = np.array([6.0, -5.0, 2.0 - 2.0**-52, 1.0 + 2.0**-51, -(1.0 + 2.0**-52), 2.0**-53, 2.0**-54])
    w = np.array([5.0, 3.0 + 2.0**-51, 3.0 + 2.0**-51, 1.0, 2.0**-53, 0.0, 0.0])
    exact = R.exact_owl(v, w)
    assert np.all(exact != 0)
    for kernel in (NB.owl, REF.owl):
        x = kernel(v, w)
        np.testing.assert_array_equal(x != 0, exact != 0)
        assert_close(x, exact, np.float64, 6.0, 2 * v.size)


def test_owl_support_window_starts_only_past_a_sure_maximum():
    """_owl_support_exact moves its window's start to l only where the
    compensated P_l exceeds the running maximum by more than their error
    bound (2T); the exact check then looks only past the start.  Here
    exactly P_8 = P_5 - 2^-105 (z_6 + z_7 + z_8 = -0.5 + (0.5 - 1e-30) +
    (1e-30 - 2^-105)), so the support is the first 5 entries, while the
    compensated sums put P_8 about 1e-30 above P_5 (well within 2T).  A start
    moved on any computed increase gave 8, and the entries past the true
    support came out nonzero."""
    v = np.array([2.0**53, -6.0, 4.0, 3.0 + 2.0**-51, -(3.0 + 2.0**-51), 1.0, 0.5, 1e-30])
    w = np.array([6.0, 3.0 + 2.0**-51, 3.0 + 2.0**-51, 2.0, 2.0 - 2.0**-52, 1.5, 1e-30, 2.0**-105])
    exact = R.exact_owl(v, w)
    np.testing.assert_array_equal(exact != 0, [True] * 5 + [False] * 3)
    for kernel in (NB.owl, REF.owl):
        x = kernel(v, w)
        np.testing.assert_array_equal(x != 0, exact != 0)
        assert_close(x, exact, np.float64, 2.0**53, 2 * v.size)


def _cancelling_owl(rng, n, dtype):
    """|v| with many ties, zeros and scales, and weights equal to the sorted
    magnitudes up to a few units in the last place: z = |v| - w is 0 or tiny and
    of either sign everywhere, so the support is decided by cancelling sums."""
    v = rng.standard_normal(n)
    v = np.where(rng.random(n) < 0.3, np.round(v * 4) / 4, v)
    v[rng.random(n) < 0.1] = 0.0
    v = v.astype(dtype)
    a = np.sort(np.abs(v))[::-1]
    w = a.astype(np.float64) * (1 + rng.integers(-3, 4, n) * float(EPS[dtype])) + rng.choice([0.0, 1e-30], n)
    w = np.maximum(np.sort(w)[::-1], 0).astype(dtype)
    w = np.maximum.accumulate(w[::-1])[::-1].copy()  # non-increasing after the cast
    return v, w


def _owl_matching_the_reference(v, w, dtype):
    """Numba's OWL of v, checked against the NumPy reference: the same zero
    pattern (both decide the support exactly), values within the rounding of
    the block means (n eps of the scale)."""
    x = NB.owl(v, w)
    ref = REF.owl(v, w)
    np.testing.assert_array_equal(x == 0, ref == 0)
    scale = float(np.abs(v).max()) + float(w.max())
    np.testing.assert_allclose(x.astype(np.float64), ref.astype(np.float64), rtol=0,
                               atol=4 * v.size * float(np.finfo(np.float64).eps) * scale + 2 * float(EPS[dtype]) * scale)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["cancelling", "gaussian", "sparse"])
def test_owl_long_vectors_same_exact_pattern_on_both_backends(kind, dtype):
    """n = 40000 >= the parallel threshold: the chunked support search, the
    parallel block values and the scatter back to input order.  Both backends decide the support
    exactly, so their zero patterns must be identical; values agree to the
    rounding of the block means (n eps of the scale)."""
    rng = np.random.default_rng(sum(map(ord, kind + np.dtype(dtype).name)))
    n = 40_000
    if kind == "cancelling":
        v, w = _cancelling_owl(rng, n, dtype)
    else:
        v = rng.standard_normal(n).astype(dtype)
        w = np.linspace(2.0 if kind == "sparse" else 1.0, 0.0, n).astype(dtype)
    x = _owl_matching_the_reference(v, w, dtype)
    assert np.all(np.abs(x) <= np.abs(v)) and np.all(x * v >= 0)
    np.testing.assert_array_equal(NB.owl(v, w, parallel=False), x)  # the serial variant, bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [65, 200, 1500, 2048])
def test_owl_short_vectors_decide_the_support_across_chunks(n, dtype):
    """_owl_small (n <= 2048) searches the support in chunks of 64 entries.
    Supports of K entries, K at, before, after a chunk's edge or n, with the
    prefix sums of z tied exactly after K over a few chunks (the FIRST
    maximiser wins), and cancelling sums, give the exact answer and the
    reference's zero pattern."""
    rng = np.random.default_rng(n)
    i = np.arange(n)
    w = (4.0 * n - 2.0 * i).astype(dtype)  # steps of 2 keep v = w + z sorted
    for K in sorted({10, 63, 64, 65, 128, n // 2, n - 1, n}):
        # z = 1 on the support, then -1/2, +1/2 pairs (P back to its maximum
        # after each pair) for up to 140 entries, then -1
        tied = (i >= K) & (i < K + 140) & (i < n - (n - K) % 2)
        z = np.where(i < K, 1.0, np.where(tied, np.where((i - K) % 2 == 0, -0.5, 0.5), -1.0))
        v = ((w.astype(np.float64) + z) * rng.choice([-1.0, 1.0], n)).astype(dtype)
        perm = rng.permutation(n)
        expected = np.where(i < K, np.sign(v), 0.0)[perm].astype(dtype)
        np.testing.assert_array_equal(NB.owl(v[perm], w), expected, err_msg=f"K = {K}")
    _owl_matching_the_reference(*_cancelling_owl(rng, n, dtype), dtype)


# ------------------------------------------------------------------ serial variants, no environment


def _large_calls(dtype):
    rng = np.random.default_rng(7)
    W = rng.standard_normal((64, 600)).astype(dtype)
    v = W.ravel()
    t = np.full(64, 0.5, dtype=dtype)
    wv = np.linspace(1, 0, v.size).astype(dtype)
    return {
        "owl": lambda **kw: NB.owl(v, wv, **kw),
        "growl": lambda **kw: NB.growl(W, np.linspace(3, 0, 64).astype(dtype), **kw),
        "group_lasso": lambda **kw: NB.group_lasso(W, t * 20, **kw),
        "exclusive_lasso": lambda **kw: NB.exclusive_lasso(W, t / 100, **kw),
        "group_exclusive": lambda **kw: NB.group_exclusive(W, t * 10, t / 100, **kw),
        "weighted_l1": lambda **kw: NB.weighted_l1(v, wv, **kw),
        "weighted_l2sq": lambda **kw: NB.weighted_l2sq(v, wv, **kw),
        "lp": lambda **kw: NB.lp(v, 0.3, 0.5, **kw),
        # the prox in a diagonal metric (the compiled ones)
        "weighted_l1_metric": lambda **kw: NB.weighted_l1_metric(v, np.abs(wv) + 0.5, wv.astype(np.float64), **kw),
        "weighted_l2sq_metric": lambda **kw: NB.weighted_l2sq_metric(v, np.abs(wv) + 0.5, wv.astype(np.float64), **kw),
        "group_lasso_metric": lambda **kw: NB.group_lasso_metric(W, np.abs(W) + 0.5, np.linspace(0.0, 30.0, 64), **kw),
        "exclusive_lasso_metric": lambda **kw: NB.exclusive_lasso_metric(W, np.abs(W) + 0.5, np.linspace(0.0, 0.05, 64), **kw),
        "group_exclusive_metric": lambda **kw: NB.group_exclusive_metric(W, np.abs(W) + 0.5, np.linspace(0.0, 15.0, 64), np.linspace(0.05, 0.0, 64), **kw),
        "lp_metric": lambda **kw: NB.lp_metric(v, np.abs(wv) + 0.5, 0.3, 0.5, **kw),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_variants_equal_parallel_ones(dtype):
    calls = _large_calls(dtype)
    from proxlib.backends import KERNELS, _metric_kernels

    # (every metric kernel is compiled: none is the array-API reference's, re-exported, without variants)
    reexported = {k for k in KERNELS if getattr(NB, k) is getattr(_metric_kernels, k, None)}
    assert not reexported
    assert set(calls) == set(KERNELS)
    for name, call in calls.items():
        np.testing.assert_array_equal(call(parallel=False), call(), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_metric_row_kernels_read_the_metric_in_float64_or_in_w_dtype(dtype, monkeypatch):
    """The metric row kernels take D as it is where it has W's dtype (a
    torch step's float32 metric of float32 weights: no float64 copy), else
    in float64 whatever dtype the caller passes it in, on each of their
    three routes: at most two compiled specialisations per dtype of W, not
    one per pair of dtypes.  (The compiled kernels are replaced by
    recorders: nothing is compiled.)"""
    seen = []

    def recorder(name):
        return lambda W, D, *rest: seen.append((name, W.dtype, D.dtype))

    for name in ("_metric_rows", "_metric_rows_par", "_metric_cols"):
        monkeypatch.setattr(NB, name, recorder(name))
    monkeypatch.setattr(NB, "_PAR_MIN", 16)
    W = np.ones((4, 8), dtype=dtype)
    for D in (W + 1.0, np.asfortranarray(W + 1.0), (W + 1.0).astype(np.float32)):
        for parallel in (False, True):
            NB.group_exclusive_metric(np.array(W, order="F" if D.flags.f_contiguous else "C"), D, 0.1, 0.1, parallel=parallel)
    assert {name for name, _, _ in seen} == {"_metric_rows", "_metric_rows_par", "_metric_cols"}
    assert all(w == dtype and d in (np.float64, dtype) for _, w, d in seen), seen
    assert any(d == np.float32 for _, _, d in seen) == (dtype == np.float32), seen


def test_serial_variants_never_start_numba_threads():
    """parallel=False is for callers that must not spawn numba's thread pool
    (a thread of a training loop): numba reports no threading layer until a
    parallel kernel has run."""
    code = textwrap.dedent(
        """
        import numba, numpy as np
        import proxlib.backends.numba_cpu as NB
        W = np.random.default_rng(0).standard_normal((64, 600))
        v, t, w = W.ravel(), np.full(64, 0.5), np.linspace(1, 0, W.size)
        NB.owl(v, w, parallel=False); NB.growl(W, np.linspace(3, 0, 64), parallel=False)
        NB.group_lasso(W, t * 20, parallel=False); NB.exclusive_lasso(W, t / 100, parallel=False)
        NB.group_exclusive(W, t * 10, t / 100, parallel=False); NB.weighted_l1(v, w, parallel=False)
        NB.weighted_l2sq(v, w, parallel=False); NB.lp(v, 0.3, 0.5, parallel=False)
        NB.weighted_l1_metric(v, w + 0.5, w, parallel=False); NB.weighted_l2sq_metric(v, w + 0.5, w, parallel=False)
        NB.group_lasso_metric(W, np.abs(W) + 0.5, t * 20, parallel=False)
        NB.exclusive_lasso_metric(W, np.abs(W) + 0.5, t / 100, parallel=False)
        NB.group_exclusive_metric(W, np.abs(W) + 0.5, t * 10, t / 100, parallel=False)
        NB.lp_metric(v, w + 0.5, 0.3, 0.5, parallel=False)
        try:
            print("started", numba.threading_layer())
        except ValueError:
            print("not started")
        NB.group_lasso(W, t * 20)
        print("started", numba.threading_layer())
        """
    )
    out = _procs.python(code, timeout=600, env={**os.environ, "PYTHONPATH": str(pathlib.Path(proxlib.__file__).parents[1])})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "not started" and lines[1].startswith("started"), out.stdout


def test_backend_reads_no_environment_variable():
    import ast

    tree = ast.parse(pathlib.Path(NB.__file__).read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not used & {"environ", "environb", "getenv", "getenvb", "putenv"}


# ------------------------------------------------------------------ read-only install


def _unprivileged_prefix():
    """A command prefix that runs a program without the right to write files it
    does not own: nothing when already unprivileged; as root, the user nobody
    (setpriv or runuser), else root without capabilities (file permissions then
    apply by their owner bits).  None where neither is possible."""
    if os.geteuid() != 0:
        return []
    probe = [sys.executable, "-c", "import numba"]
    candidates = []
    if shutil.which("setpriv"):
        candidates.append(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    if shutil.which("runuser"):
        candidates.append(["runuser", "-u", "nobody", "--"])
    if shutil.which("setpriv"):
        candidates.append(["setpriv", "--bounding-set=-all", "--inh-caps=-all"])
    for prefix in candidates:
        try:
            if _procs.run(prefix + probe, timeout=120).returncode == 0:
                return prefix
        except OSError:  # no such program
            continue
    return None


_READ_ONLY_CALLS = {
    # compiling a kernel without a cache takes seconds: the default run compiles two
    "few": """
        with proxlib.use_backend("numba"):
            x = proxlib.prox_weighted_l1(v, 1.0)
            G = proxlib.prox_group_lasso(W, 1.0)
        ok = abs(x[0] - 2.0) == 0 and abs(G[0, 0] - 2.4) < 1e-15
    """,
    "all": """
        with proxlib.use_backend("numba"):
            x = proxlib.prox_owl(v, np.array([3.0, 0.5, 0.0]))
            G = proxlib.prox_group_lasso(W, 1.0)
            NB.growl(W, np.array([1.0, 0.5])); NB.exclusive_lasso(W, np.array([0.5, 0.5]))
            NB.group_exclusive(W, np.array([0.5, 0.5]), np.array([0.5, 0.5]))
            NB.weighted_l1(v, v * 0 + 1); NB.weighted_l2sq(v, v * 0 + 1); NB.lp(v, 0.5, 0.5)
        ok = abs(x[0] - 2.5 / 3) < 1e-15 and abs(G[0, 0] - 2.4) < 1e-15
    """,
}


_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


@pytest.mark.parametrize("calls", ["few", pytest.param("all", marks=[pytest.mark.slow, pytest.mark.skipif(
    not _LONG, reason="compiles every kernel without a cache (a minute on 2 cores): the long profile runs it; "
    "test_every_kernel_is_compiled_with_the_shared_options checks every decorator statically")])])
def test_read_only_install_imports_and_runs_with_one_warning(calls):
    """Package directory and home read-only, NUMBA_CACHE_DIR unwritable, run by
    an unprivileged user: numba has no cache locator, and ``cache=True`` used to
    raise at import ("cannot cache function '_sumsq': no locator available"),
    which broke every operator on NumPy arrays.  Now: one warning, no caching,
    correct results, no file written.  ("few" compiles two kernels; "all",
    in the long profile, calls every operator: the other kernels take the same
    options, which the next test checks without compiling.)"""
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("cannot run a process without write access here (no setpriv/runuser that works)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="proxlib-ro-"))
    try:
        os.chmod(root, 0o755)
        pkg = root / "site"
        shutil.copytree(pathlib.Path(proxlib.__file__).parent, pkg / "proxlib",
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        home = root / "home"
        home.mkdir()
        for path in [home, *pkg.rglob("*"), pkg]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        code = textwrap.dedent(
            """
            import warnings
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                import numpy as np
                import proxlib
                assert "numba" in proxlib.available_backends(), proxlib.available_backends()
                from proxlib.backends import numba_cpu as NB
                W = np.array([[3.0, -4.0], [0.3, 0.4]])
                v = np.array([3.0, -1.0, 2.0])
            """
        ) + textwrap.indent(textwrap.dedent(_READ_ONLY_CALLS[calls]), "    ") + textwrap.dedent(
            """
            assert ok
            mine = [w for w in caught if "cannot cache" in str(w.message)]
            print(len(mine), NB._OPTS["cache"])
            """
        )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
               "XDG_CACHE_HOME": str(home / ".cache"), "NUMBA_CACHE_DIR": str(home / "numba-cache"),
               "PYTHONPATH": str(pkg), "PYTHONDONTWRITEBYTECODE": "1"}
        out = _procs.run(prefix + [sys.executable, "-c", code], env=env, cwd=str(root), timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split() == ["1", "False"], (out.stdout, out.stderr[-2000:])
        assert not list(pkg.rglob("*.nbi")) and not list(home.rglob("*")), "a cache file was written"
    finally:
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_every_kernel_is_compiled_with_the_shared_options():
    """Every Numba kernel of proxlib takes its options, ``cache`` among them,
    from ``numba_cpu._OPTS``: the read-only install (above) then compiles each
    without a cache, as it does the two it calls.  Statically: each
    ``nb.njit``/``nb.jit`` call in ``numba_cpu.py`` passes ``**_OPTS`` and no
    ``cache=`` of its own (but the probe of ``_caching_available``), each
    decorated function is decorated by one of those (or is an ``intrinsic``
    or ``overload``, compiled inside its caller), and no other module of the
    package compiles with Numba."""
    import ast

    pkg = pathlib.Path(proxlib.__file__).parent
    path = pathlib.Path(NB.__file__)
    tree = ast.parse(path.read_text())
    jit_names = {"njit", "jit", "vectorize", "guvectorize", "cfunc", "stencil", "generated_jit"}

    def is_jit_call(node):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("nb", "numba")
                and node.func.attr in jit_names)

    probe = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "_caching_available")
    in_probe = {id(n) for n in ast.walk(probe)}
    shared = set()
    calls = [n for n in ast.walk(tree) if is_jit_call(n)]
    assert len(calls) >= 4, "the decorators moved: update this test"
    for call in calls:
        where = f"{path.name}:{call.lineno}"
        if id(call) in in_probe:
            continue
        assert any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == "_OPTS" for k in call.keywords), where
        assert not any(k.arg == "cache" for k in call.keywords), where
    for node in tree.body:  # the module's decorators: names bound to such calls
        if isinstance(node, ast.Assign) and is_jit_call(node.value):
            shared |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    assert {"_jit", "_pjit", "_rjit", "_inline"} <= shared, shared
    kernels = 0
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or not fn.decorator_list:
            continue
        for dec in fn.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "?")
            assert name in shared | {"intrinsic", "overload"}, f"{path.name}:{fn.lineno} {fn.name} is decorated by {name}"
            kernels += name in shared
    assert kernels > 100, kernels
    others = [f for f in pkg.rglob("*.py") if f != path and re.search(r"\b(nb|numba)\.(n?jit|vectorize|guvectorize|cfunc)\b|from numba import", f.read_text())]
    assert not others, others


# ------------------------------------------------------------------ layouts and out=
# The training step runs the kernels in place on a parameter's memory, whose
# rows are often its columns ("channel" and "shape" groupings of a Linear
# weight: an F-contiguous rows view).  Those paths (column sums of squares,
# tiled transposes, one-array in-place loops) against the same exact
# references, and in place == into a new array, bit for bit.


def _row_cases(dtype, data):
    W = data.draw(rows(dtype, max_rows=5, max_cols=5).filter(lambda W: W.shape[0] > 1 and W.shape[1] > 1))
    G = W.shape[0]
    w = np.sort(thresholds(data.draw, dtype, G, allow_inf=False))[::-1].copy()
    a = thresholds(data.draw, dtype, G)
    b = thresholds(data.draw, dtype, G)
    W64 = W.astype(np.float64)
    return W, {
        "group_lasso": ((a,), exact_group_lasso(W64, a), 1),
        "growl": ((w,), exact_growl(W64, w), 2 * W.size),
        "exclusive_lasso": ((b,), exact_exclusive(W64, b), 1),
        "group_exclusive": ((a, b), exact_group_exclusive(W64, a, b), 1),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_row_kernels_on_columns_and_in_place(dtype, data):
    W, cases = _row_cases(dtype, data)
    for name, (args, exact, m_factor) in cases.items():
        kernel = getattr(NB, name)
        if name == "growl":
            scale = max(np.abs(W.astype(np.float64)).max(), args[0].astype(np.float64).max())
        else:
            scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True)
        m = W.shape[1] * m_factor
        for order in ("C", "F"):
            X = np.array(W, order=order)
            new = kernel(X, *args, parallel=False)
            assert new.dtype == dtype
            assert_close(new, exact, dtype, scale, m)
            into = np.empty_like(X)  # the same memory order as X
            assert kernel(X, *args, parallel=False, out=into) is into
            np.testing.assert_array_equal(into, new)
            kernel(X, *args, parallel=False, out=X)  # in place
            np.testing.assert_array_equal(X, new, err_msg=f"{name} in place, order {order}")


@st.composite
def _float32_columns(draw):
    """float32 columns (P x G) whose nonzero magnitudes span a drawn number of
    binades anywhere in the float32 range (subnormals included), with zeros."""
    P = draw(st.integers(1, 40))
    G = draw(st.integers(1, 6))
    A = np.zeros((P, G), dtype=np.float32)
    for g in range(G):
        span = draw(st.integers(0, 60))
        e0 = draw(st.integers(-149, 127 - span - 8))
        for i in range(P):
            if draw(st.integers(0, 4)) == 0:
                continue
            m = draw(st.integers(1, 2**24 - 1))
            e = draw(st.integers(e0, e0 + span))
            A[i, g] = np.float32(math.ldexp(m, e - 23)) * draw(st.sampled_from([1, -1]))
    return A


@given(A=_float32_columns())
def test_exclusive_support_sums_from_the_first_pass_are_the_second_pass_bit_for_bit(A):
    """float32 columns: where _support_sums_from_pass1 says its sums are exact,
    they equal _col_support_sums's bit for bit (so skipping that pass changes
    no result); where the exponent span is too wide it declines."""
    P, G = A.shape
    S = np.empty(G)
    mb = np.empty(G, dtype=np.int32)
    xb = np.empty(G, dtype=np.int32)
    nz = np.empty(G, dtype=np.int64)
    NB._col_pass1(A, S, None, mb, xb, nz)
    mags = np.abs(A.astype(np.float64))
    limit = 29 - math.ceil(math.log2(P))  # the widest exponent span of exact float64 sums
    for g in range(G):
        nonzero = mags[:, g][mags[:, g] > 0]
        assert nz[g] == nonzero.size and xb[g] == np.abs(A[:, g]).view(np.int32).max()
        exact_sum = math.fsum(nonzero)
        if nonzero.size:
            assert mb[g] == np.float32(nonzero.min()).view(np.int32)
            if max(int(xb[g]) >> 23, 1) - max(int(mb[g]) >> 23, 1) <= limit:
                assert S[g] == exact_sum
        assert abs(S[g] - exact_sum) <= P * 2.0**-52 * exact_sum  # (gamma_{P-1} with margin)
    Y = np.where(mb < 0x7F800000, mb.view(np.float32).astype(np.float64), -1.0)  # -1: no nonzero entry
    F1, k1 = np.full(G, np.nan), np.full(G, -1, dtype=np.int64)
    F2, k2 = np.empty(G), np.empty(G, dtype=np.int64)
    exact = NB._support_sums_from_pass1(S, Y, mb, xb, nz, P, F1, k1)
    NB._col_support_sums(A, np.maximum(Y, 0.0), F2, None, k2)
    spans = [max(int(x) >> 23, 1) - max(int(m) >> 23, 1) for x, m, y in zip(xb, mb, Y) if y > 0]
    assert exact == all(s <= limit for s in spans)
    if exact:
        np.testing.assert_array_equal(F1, F2)
        np.testing.assert_array_equal(k1, k2)
        for g in range(G):  # and both are the exact sums
            assert F1[g] == math.fsum(np.maximum(mags[:, g] - max(Y[g], 0.0), 0.0))


@pytest.mark.parametrize("gx", [False, True])
@given(A=_float32_columns(), data=st.data())
def test_support_sums_are_the_full_pass_bit_for_bit(gx, A, data):
    """_support_sums at the least magnitude Y_g above a drawn T_g (0, one of
    the column's magnitudes, or between) of each column gives the numbers
    of the full pass (_col_support_sums at Y_g floored at 0), bit for bit:
    F and k on the columns with an entry above T_g (the only ones read),
    D2 (group+exclusive) on all, whether F and k come from the first
    pass's sums (exact) with a pass of D2 alone, or from the full pass
    (float32 columns spanning too many binades, and float64)."""
    for A in (A, A.astype(np.float64) * data.draw(st.sampled_from([1.0, 2.0**600, 2.0**-600]))):
        P, G = A.shape
        mags = np.abs(A.astype(np.float64))
        T = np.array([data.draw(st.sampled_from([0.0, float(np.median(mags[:, g])), float(mags[:, g].max()),
                                                  float(np.nextafter(mags[:, g].min(), 1.0))])) for g in range(G)])
        S, nz = np.empty(G), np.empty(G, dtype=np.int64)
        mb = np.empty(G, dtype=np.int32 if A.dtype == np.float32 else np.int64)
        xb = np.empty(G, dtype=mb.dtype)
        NB._col_pass1(A, S, None, mb, xb, nz, T)
        inf_bits = np.array(np.inf, dtype=A.dtype).view(mb.dtype)
        Y = np.where(mb < inf_bits, mb.view(A.dtype).astype(np.float64), -1.0)
        F1, k1, F2, k2 = np.full(G, np.nan), np.full(G, -1, np.int64), np.empty(G), np.empty(G, np.int64)
        D1, D2 = (np.full(G, np.nan), np.empty(G)) if gx else (None, None)
        NB._support_sums(A, Y, S, mb, xb, nz, F1, D1, k1)
        NB._col_support_sums(A, np.maximum(Y, 0.0), F2, D2, k2)
        on = Y > 0
        np.testing.assert_array_equal(F1[on], F2[on])
        np.testing.assert_array_equal(k1[on], k2[on])
        if gx:
            np.testing.assert_array_equal(D1.view(np.int64), D2.view(np.int64))


@given(A=_float32_columns(), data=st.data())
def test_exclusive_row_search_pass_gives_the_support_and_its_exact_sums(A, data):
    """The exclusive row kernel's search pass at a point t (_ex_sums) gives
    k = #{y > t} and Y = min{y > t} exactly, which is what lets the search
    stop without a pass at its last step.  On float32 rows it sums the
    candidates, S(t), and gives F(t) = S(t) - k t, within the rounding of
    that sum, product and difference; where _float32_sums_exact accepts
    S(t) (as after the search), S(t) is exact and S(t) - k Y equals the
    support sums' own pass (_gx_sums at Y, which the kernel then skips)
    bit for bit.  float64 rows sum F(t) directly (S returned as -1).
    Likewise the first pass's sum S of the nonzero y (_abs_sum_min) for
    the fast path.  Rows whose magnitudes span up to 60 binades anywhere in
    the float32 range."""
    for x in A.T.copy():
        mags = np.abs(x.astype(np.float64))
        t = data.draw(st.sampled_from([0.0, *sorted(set(mags.tolist()))]))
        F, k, Y, St = NB._ex_sums(x, x.size, 1.0, 1.0, t, x[0])
        above = mags[mags > t]
        assert k == above.size
        assert Y == (above.min() if above.size else np.inf)
        exact_F = math.fsum(above - t)
        exact_S = math.fsum(above)
        assert abs(St - exact_S) <= x.size * 2.0**-52 * exact_S
        assert F >= 0.0 and abs(F - exact_F) <= (x.size + 2) * 2.0**-52 * (exact_S + k * t)
        if above.size and NB._float32_sums_exact(x, St, Y):
            assert Fraction(St) == sum(map(Fraction, above.tolist()))
            assert St - k * Y == NB._gx_sums(x, x.size, 1.0, 1.0, Y)[0]
        F64, k64, Y64, S64 = NB._ex_sums(mags, mags.size, 1.0, 1.0, t, mags[0])
        assert (k64, Y64, S64) == (k, Y, -1.0)
        assert abs(F64 - exact_F) <= x.size * 2.0**-52 * exact_F
        S, _, ymin, nnz = NB._abs_sum_min(x, None)
        nonzero = mags[mags > 0]
        assert (ymin, nnz) == ((nonzero.min() if nonzero.size else np.inf), nonzero.size)
        if not nonzero.size:
            assert not NB._float32_sums_exact(x, S, ymin)
            continue
        F2, _, k2 = NB._gx_sums(x, x.size, 1.0, 1.0, ymin)
        assert k2 == nnz
        if NB._float32_sums_exact(x, S, ymin):
            assert Fraction(S) == sum(map(Fraction, nonzero.tolist()))
            assert S - nnz * ymin == F2 == math.fsum(nonzero - ymin)
            assert Fraction(F2) == sum(Fraction(y) - Fraction(ymin) for y in nonzero.tolist())
        else:
            assert math.fsum(nonzero) >= 2.0**29 * ymin * (1 - 2.0**-40)
    assert not NB._float32_sums_exact(mags, 1.0, 1.0)  # never for float64 rows


@pytest.mark.parametrize("e, exact", [(28, True), (30, False)])
def test_exclusive_row_float32_sums_taken_only_where_exact(e, exact):
    """1 + 2^-23 and 2^e (1 + 2^-23): their sum needs e + 24 bits, so float64
    holds it for e = 28 (accepted, and S - k Y is the support sums' pass)
    and not for e = 30 (declined: S is rounded)."""
    small, large = 1.0 + 2.0**-23, 2.0**e * (1.0 + 2.0**-23)
    x = np.array([-large, 0.0, small], dtype=np.float32)
    S, _, Y, k = NB._abs_sum_min(x, None)
    assert (k, Y) == (2, small)
    assert NB._ex_sums(x, 3, 1.0, 1.0, 0.0, x[0])[1:3] == (2, small)
    assert (Fraction(S) == Fraction(small) + Fraction(large)) == exact
    assert NB._float32_sums_exact(x, S, Y) == exact
    if exact:
        assert S - k * Y == NB._gx_sums(x, 3, 1.0, 1.0, Y)[0] == large - small


def test_exclusive_row_float32_sums_bound_for_a_least_entry_near_its_next_power():
    """Y = 2 - 2^-23 (ulp 2^-23, just above Y 2^-24) and 2^30 (1 + 2^-23):
    S < 2^30 Y, yet the sum spans 2^30 to 2^-23 (54 bits) and is rounded in
    float64: declined (the proof's bound is S < 2^29 Y, from ulp_32(Y) >= Y 2^-24)."""
    small, large = 2.0 - 2.0**-23, 2.0**30 * (1.0 + 2.0**-23)
    x = np.array([large, 0.0, -small], dtype=np.float32)
    S, _, Y, k = NB._abs_sum_min(x, None)
    assert (k, Y) == (2, small) and S < 2.0**30 * Y
    assert Fraction(S) != Fraction(small) + Fraction(large)  # rounded
    assert not NB._float32_sums_exact(x, S, Y)


@st.composite
def _clustered_rows(draw):
    """float64 magnitudes in a few clusters: a centre anywhere in [2^-30, 2^30]
    and a spread from none to the centre's size, so that the search's last
    point may sit far below a support of nearly equal entries."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        centre = math.ldexp(1.0, draw(st.integers(-30, 30)))
        spread = draw(st.sampled_from([0.0, 2.0**-50, 2.0**-40, 2.0**-20, 2.0**-5, 1.0]))
        size = draw(st.integers(1, 12))
        offsets = draw(arrays(np.float64, size, elements=st.floats(0.0, 1.0)))
        parts.append(centre * (1.0 + spread * offsets))
    return np.concatenate(parts)


def _support_sums_after_the_search(y, b):
    """The exclusive row kernel's search on magnitudes y (_ex_newton), and
    whether F_k then comes from its last pass (_exclusive_core's test)."""
    Yk, k, n, in_buf, Ft, t, _ = NB._ex_newton(y, 1.0, 1.0, b, float(y.sum()), np.count_nonzero(y), np.empty(y.size))
    kd = k * (Yk - t)
    return Yk, k, Ft, t, Ft - kd, k > 0 and kd <= 0.5 * Ft


@given(y=_clustered_rows(), logb=st.floats(-12.0, 12.0))
def test_exclusive_support_sums_from_the_last_search_pass(y, logb):
    """float64 rows: the search's last pass, at t, gives F_t = sum (y - t)
    over the support {y > t}; where k (Y_k - t) <= F_t / 2,
    F_k = F_t - k (Y_k - t) is within (2k + 4) u F_k of the exact
    sum (y - Y_k) (u = 2^-53: F_t's sum, the product and the difference),
    which _exclusive_core then uses instead of a pass; the prox is the exact
    one within the row kernels' tolerance either way."""
    rng = np.random.default_rng(y.size)
    y = y[rng.permutation(y.size)]
    b = 2.0**logb / y.size
    Yk, k, Ft, t, Fk, from_search = _support_sums_after_the_search(y, b)
    support = y[y > t]
    assert k == support.size and Yk == support.min()
    exact_Fk = sum(Fraction(float(v)) - Fraction(float(Yk)) for v in support)
    if from_search:
        assert abs(Fraction(Fk) - exact_Fk) <= (2 * k + 4) * Fraction(2) ** -53 * exact_Fk
    W = (y * np.where(rng.random(y.size) < 0.5, -1.0, 1.0))[None, :]
    bb = np.array([b])
    got = NB.exclusive_lasso(W, bb, parallel=False)
    assert_close(got, exact_exclusive(W, bb), np.float64, np.abs(W).max(axis=1, keepdims=True), W.shape[1])


@given(y=_clustered_rows(), zeros=st.integers(0, 40), logb=st.floats(-12.0, 12.0))
def test_exclusive_search_starts_below_the_root_on_rows_with_zeros(y, zeros, logb):
    """The search's first point b S/(1 + b nnz) counts the nonzero entries
    only (phi's slope at 0+ is 1 + b nnz): on rows with zeros it lies above
    the b S/(1 + b m) it replaced and still below the exact threshold
    (within the rounding of S and of its three operations, where the
    support is every nonzero entry and the two coincide), and the prox is
    the exact one within the row kernels' tolerance."""
    rng = np.random.default_rng(y.size + zeros)
    y = np.r_[y, np.zeros(zeros)][rng.permutation(y.size + zeros)]
    m = y.size
    b = 2.0**logb / m
    total, _, _, nnz = NB._abs_sum_min(y, None)
    t0 = (b * total) / (1.0 + b * nnz)
    assert t0 >= (b * total) / (1.0 + b * m)
    tau = R.exact_exclusive_threshold(y, b)
    assert Fraction(t0) <= tau * (1 + Fraction(m + 8, 2**52))
    W = (y * np.where(rng.random(m) < 0.5, -1.0, 1.0))[None, :]
    bb = np.array([b])
    got = NB.exclusive_lasso(W, bb, parallel=False)
    assert_close(got, exact_exclusive(W, bb), np.float64, np.abs(W).max(axis=1, keepdims=True), m)


@given(A=_float32_columns(), logb=st.floats(-12.0, 12.0))
def test_exclusive_float32_support_sums_from_the_last_search_sum(A, logb):
    """float32 rows: the search's last pass, at t, sums the support
    {y > t} = {y >= Y_k} itself (S_t, _ex_sums); where _float32_sums_exact
    accepts it, S_t is exact and F_k = S_t - k Y_k is the support sums'
    own pass (_gx_sums at Y_k) bit for bit, which _exclusive_core then
    skips: the prox is what the pass gave (the exact one within the row
    kernels' tolerance).  Rows spanning up to 60 binades anywhere in the
    float32 range, b from 2^-12/m to 2^12/m (supports from every nonzero
    entry to one)."""
    for x in A.T.copy():
        mags = np.abs(x.astype(np.float64))
        if not mags.any():
            continue
        b = 2.0**logb / x.size
        total, _, _, nnz = NB._abs_sum_min(x, None)
        Yk, k, n, in_buf, Ft, t, St = NB._ex_newton(x, 1.0, 1.0, b, total, nnz, np.empty(x.size))
        support = mags[mags > t]
        assert k == support.size and Yk == (support.min() if k else np.inf)
        if k and NB._float32_sums_exact(x, St, Yk):
            assert Fraction(St) == sum(map(Fraction, support.tolist()))
            assert St - k * Yk == NB._gx_sums(x, x.size, 1.0, 1.0, Yk)[0]
        W = x[None, :]
        bb = np.array([b], dtype=np.float32)
        got = NB.exclusive_lasso(W, bb, parallel=False)
        scale = mags.max()
        assert_close(got, exact_exclusive(W.astype(np.float64), bb.astype(np.float64)), np.float32, scale, x.size)


def test_exclusive_support_sums_take_a_pass_where_the_last_point_is_far():
    """A support of 300 nearly equal entries (spread 2^-37) far above the
    search's last point: F_t is almost all k (Y_k - t), so F_k takes its
    own pass, and the prox is accurate relative to itself (F_t - k (Y_k - t)
    would have lost about 9 bits of F_k and 640 ulps of the output);
    Gaussian rows take F_k from the search's last pass."""
    y = np.r_[1.0 + np.arange(300) * 2.0**-45, np.full(50, 1e-3)]
    *_, from_search = _support_sums_after_the_search(y, 5.0)
    assert not from_search
    W, bb = y[None, :], np.array([5.0])
    exact = exact_exclusive(W, bb)
    assert np.all(exact[0, :300] > 0)
    np.testing.assert_allclose(NB.exclusive_lasso(W, bb, parallel=False), exact, rtol=8 * EPS[np.float64], atol=0.0)
    gauss = np.abs(np.random.default_rng(0).standard_normal(300))
    *_, from_search = _support_sums_after_the_search(gauss, 1 / 300)
    assert from_search
    W, bb = gauss[None, :], np.array([1 / 300])
    assert_close(NB.exclusive_lasso(W, bb, parallel=False), exact_exclusive(W, bb), np.float64, gauss.max(), gauss.size)


def test_exclusive_search_compaction_rule():
    """_worth_compacting on the search's states: (candidates k, those at the
    point before, row length m, b)."""
    m = 300
    assert not NB._worth_compacting(73, 83, m, 10 / m)  # Gaussian, b = 10/m: the last pass
    assert not NB._worth_compacting(29, 49, m, 50 / m)  # b = 50/m: one or two passes to go
    assert NB._worth_compacting(23, 57, m, 1e4 / m)  # one-entry support: halving at every step
    assert NB._worth_compacting(57, 122, m, 1e4 / m)  # b k = 1900 >= 64, under a quarter
    assert not NB._worth_compacting(76, 200, m, 1e4 / m)  # not under a quarter
    assert NB._worth_compacting(37, 74, m, 0.01)  # under an eighth, halved
    assert not NB._worth_compacting(37, 73, m, 0.01)  # under an eighth, not halved
    assert not NB._worth_compacting(38, 200, m, 0.01)  # halved, not under an eighth
    assert not NB._worth_compacting(60, 200, m, 1.0)  # under a quarter, b k = 60 < 64
    assert NB._worth_compacting(64, 200, m, 1.0)  # b k = 64


@pytest.mark.parametrize("m", [300, 4608])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exclusive_search_compacts_only_where_many_passes_remain(m, dtype):
    """The exclusive search (_ex_newton) compacts its candidates only before a
    pass that many passes follow (_worth_compacting): Gaussian rows with
    b = 10/m, whose search ends a pass or two after its candidates fall
    below a quarter of the row, never compact; one-entry supports (b =
    10^4/m), whose candidates halve at every step, do.  Either way the
    support is the exact one and the prox matches the exact one."""
    rng = np.random.default_rng(m)
    for b_m, compacts in ((10.0, False), (1e4, True)):
        for _ in range(5):
            x = rng.standard_normal(m).astype(dtype)
            mags = np.abs(x.astype(np.float64))
            b = b_m / m
            total, _, _, nnz = NB._abs_sum_min(x, None)
            Yk, k, n, in_buf, Ft, t, St = NB._ex_newton(x, 1.0, 1.0, b, total, nnz, np.empty(m))
            assert in_buf == compacts
            assert k == np.count_nonzero(mags > t) and Yk == mags[mags > t].min()
            tau = R.exact_exclusive_threshold(mags, b)
            assert k == sum(Fraction(v) > tau for v in mags.tolist())
            W, bb = x[None, :], np.array([b], dtype=dtype)
            assert_close(NB.exclusive_lasso(W, bb, parallel=False), exact_exclusive(W.astype(np.float64), bb.astype(np.float64)), dtype, mags.max(), m)


def test_exclusive_float32_columns_take_the_one_pass_sums_on_a_layer():
    """The 300 x 784 layer of the overhead benchmark, 'shape' rows: the
    exponent span of every column allows the shortcut, and the prox equals
    the one computed on the same data as C-contiguous rows (the row kernel,
    which always makes its passes) to float32 rounding."""
    rng = np.random.default_rng(5)
    W = np.asfortranarray((rng.standard_normal((784, 300)) / 28).astype(np.float32))
    A = W.T
    P, G = A.shape
    S, mb, xb, nz = np.empty(G), np.empty(G, np.int32), np.empty(G, np.int32), np.empty(G, np.int64)
    NB._col_pass1(A, S, None, mb, xb, nz)
    Y = mb.view(np.float32).astype(np.float64)
    assert NB._support_sums_from_pass1(S, Y, mb, xb, nz, P, np.empty(G), np.empty(G, np.int64))
    b = np.full(G, 1e-5, np.float32)  # (thresholds in the data's dtype, as proxlib's dispatch passes them)
    cols = NB.exclusive_lasso(W, b, parallel=False)
    rows = NB.exclusive_lasso(np.ascontiguousarray(W), b, parallel=False)
    np.testing.assert_allclose(cols, rows, rtol=2**-23, atol=0)
    assert np.count_nonzero(cols) < cols.size  # the prox did act


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernels_on_columns_of_a_large_layer(dtype):
    # the 784 x 300 layer of the overhead benchmark, its "channel" rows view
    # (F-contiguous), including columns whose plain sum of squares underflows
    # (float64: summed again, scaled) and a zero column
    rng = np.random.default_rng(3)
    base = (rng.standard_normal((300, 784)) / 28).astype(dtype)
    if dtype == np.float64:
        base[:, 5] *= 1e-200
        base[:, 6] = 0.0
    W = base.T
    G = W.shape[0]
    a = np.full(G, 0.05, dtype)
    if dtype == np.float64:
        a[5] *= 1e-200  # the tiny column keeps entries
    thr = {"group_lasso": (a,), "growl": (np.linspace(0.1, 0.0, G).astype(dtype),),
           "exclusive_lasso": (np.full(G, 1e-3, dtype),), "group_exclusive": (a * 0.4, np.full(G, 1e-3, dtype))}
    for name, args in thr.items():
        kernel = getattr(NB, name)
        ref = getattr(REF, name)(np.ascontiguousarray(W), *args)
        X = base.copy().T
        kernel(X, *args, parallel=False, out=X)
        scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True) if name != "growl" else np.abs(W).max()
        assert_close(X, ref.astype(np.float64), dtype, scale, W.shape[1] * (2 * G if name == "growl" else 1))
        if dtype == np.float64:
            assert np.all(X[6] == 0), name
            if name != "growl":  # (GrOWL's largest weights zero the tiny column)
                assert np.any(X[5] != 0), name


@given(
    st.sampled_from(DTYPES),
    st.integers(1, 11),
    st.integers(1, 9),
    st.integers(-60, 60),
    st.integers(0, 2**32 - 1),
)
def test_column_sums_of_squares_are_the_plain_sums_in_their_order_bit_for_bit(dtype, P, G, spread, seed):
    """_col_sumsq gives each column (a0^2 + a1^2) + (a2^2 + a3^2) added row
    block by row block, then the rest row by row, every operation rounded
    in float64: on float32 data it forms a0^2 + a1^2 as an fma (the squares
    are exact there, so the bits are the same), on float64 data as written
    (an fma there would change them; entries spread over 2*|spread| binades
    with full mantissas)."""
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((P, G)) * 2.0 ** rng.integers(-abs(spread), abs(spread) + 1, (P, G))).astype(dtype)
    got = np.empty(G)
    NB._col_sumsq(A, got)
    sq = np.square(A.astype(np.float64))
    want = np.zeros(G)
    i = 0
    while i + 4 <= P:
        want += (sq[i] + sq[i + 1]) + (sq[i + 2] + sq[i + 3])
        i += 4
    for i in range(i, P):
        want += sq[i]
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["columns", "channels"])
def test_norms_read_across_memory_take_zero_rows_without_a_second_look(dtype, layout):
    """The norms of rows read across memory (a Linear weight's columns, a
    convolution's channels): rows whose plain sum of squares leaves
    [2^-600, inf) get _row_norm's (q, s) exactly, zero rows (0, 1) without
    being read again; with many of them (more than 4: float64 finds the zero
    ones by one l1 pass) tiny rows whose squares all underflow (sum 0, not
    zero) are not taken for zero rows, nor huge or NaN ones."""
    rng = np.random.default_rng(11)
    G = 40
    A = rng.standard_normal((30, G)).astype(dtype)
    special = {0: 0.0, 1: -0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: np.nan}
    if dtype == np.float64:
        special.update({7: 1e-170, 8: 1e-300, 9: 1e200, 10: 5e-324})
    for g, v in special.items():
        A[:, g] = v if v != 1e-170 else 0.0
        if v == 1e-170:
            A[4, g] = -1e-170  # one tiny entry: its square underflows
    data = A if layout == "columns" else A.reshape(6, 5, G).transpose(0, 2, 1).copy()  # (O, C, K): channel c = data[:, c, :]
    q, s = np.empty(G), np.empty(G)
    (NB._col_norms if layout == "columns" else NB._mid_norms)(data, q, s)
    for g in range(G):
        row = data[:, g] if layout == "columns" else data[:, g, :].reshape(-1)
        want_q, want_s = NB._row_norm(np.ascontiguousarray(row))
        with np.errstate(over="ignore"):  # (the 1e200 column's plain sum overflows: it is only sorted out here)
            plain = float(np.sum(np.square(row.astype(np.float64))))
        if g in special or not (2.0**-600 <= plain < np.inf):
            if np.isnan(want_q):
                assert np.isnan(q[g]), g
            else:
                assert (q[g], s[g]) == (want_q, want_s), (g, q[g], want_q, s[g], want_s)
            if g in (7, 8, 10) and dtype == np.float64:
                assert q[g] > 0, g  # tiny, not zero
        else:
            assert s[g] == 1.0 and abs(q[g] - want_q) <= 4 * 2.0**-52 * want_q, g


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_elementwise_kernels_in_place(dtype, data):
    v = data.draw(arrays(dtype, st.integers(1, 40), elements=signed(dtype)))
    for w in (thresholds(data.draw, dtype, v.size, allow_inf=False), thresholds(data.draw, dtype, 1, allow_inf=False)):
        for name in ("weighted_l1", "weighted_l2sq"):
            kernel = getattr(NB, name)
            new = kernel(v, w, parallel=False)
            X = v.copy()
            assert kernel(X, w, parallel=False, out=X) is X
            np.testing.assert_array_equal(X, new, err_msg=name)
            np.testing.assert_array_equal(kernel(v, w, parallel=True), new, err_msg=name)


def test_out_must_match():
    W = np.ones((3, 4))
    with pytest.raises(ValueError, match="out must have"):
        NB.group_lasso(W, np.ones(3), out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="out must have"):
        NB.weighted_l1(W.reshape(-1), np.ones(1), out=np.empty(12, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_exclusive_rows_in_blocks_are_the_rows_one_by_one(dtype):
    """The group+exclusive row kernels find the shrink factors of a block
    of rows at once (_group_exclusive_rows, _group_exclusive_shrinks): each
    row of a matrix is, bit for bit, that row solved alone (one pending
    row: _group_exclusive_shrink), serially, in parallel (chunks of whole
    blocks) and in place, over rows that take the fast path, the search,
    scaling (tiny and huge magnitudes), a = 0 (the exclusive lasso), b = 0,
    ||w|| <= a (zero), zeros and NaN."""
    rng = np.random.default_rng(5)
    G, m = 150, 240  # (G m >= _PAR_MIN: the parallel kernel runs, in chunks of 37-38 rows)
    assert NB._parallel(np.empty((G, m)))
    W = rng.standard_normal((G, m)) * rng.uniform(0.5, 1.5, (G, 1))
    W[rng.random(W.shape) < 0.2] = 0.0
    W[10] *= 2.0**-1000 if dtype == np.float64 else 2.0**-120
    W[11] *= 2.0**1000 if dtype == np.float64 else 2.0**100
    W[12] = 0.0
    W[13, 3] = np.nan
    W = W.astype(dtype)
    with np.errstate(over="ignore"):  # (the huge row's norm: inf, then the largest float)
        norms = np.sqrt((W.astype(np.float64) ** 2).sum(axis=1))
        a = np.nan_to_num(norms) * rng.choice([0.0, 0.01, 0.3, 1.5], G)
    b = rng.choice([0.0, 1e-4, 1.0 / m, 10.0 / m, 1e3], G)
    a, b = a.astype(dtype), b.astype(dtype)
    alone = np.stack([NB.group_exclusive(W[r:r + 1], a[r:r + 1], b[r:r + 1], parallel=False)[0] for r in range(G)])
    assert ((alone != 0).sum(axis=1) > 0).sum() > G // 2  # (most rows keep a support)
    for parallel in (False, True):
        got = NB.group_exclusive(W, a, b, parallel=parallel)
        np.testing.assert_array_equal(got.view(np.uint8), alone.view(np.uint8), err_msg=f"parallel={parallel}")
    X = W.copy()
    NB.group_exclusive(X, a, b, parallel=False, out=X)
    np.testing.assert_array_equal(X.view(np.uint8), alone.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_large", [0, 5, 40])
def test_exclusive_operators_on_columns_fast_and_searched(dtype, n_large):
    # columns of a 300 x 64 base: small thresholds (support = every nonzero
    # entry: the three-pass column path), large ones on n_large columns (a
    # real search: gathered into rows; with 40 of 64 the whole matrix goes
    # through the transposed path), exact zeros, a column of zeros and a
    # column of one nonzero entry
    rng = np.random.default_rng(11)
    base = rng.standard_normal((300, 64)).astype(dtype)
    base[rng.random(base.shape) < 0.3] = 0.0
    base[:, 3] = 0.0
    base[:, 4] = 0.0
    base[7, 4] = -2.5
    W = base.T  # F-contiguous rows of length 300
    G = W.shape[0]
    b = np.full(G, 1e-5, dtype)
    a = np.full(G, 1e-3, dtype)
    large = rng.choice(G, n_large, replace=False)
    b[large] = 0.05
    a[large] = 2.0
    for name, args in (("exclusive_lasso", (b,)), ("group_exclusive", (a, b))):
        ref = getattr(REF, name)(np.ascontiguousarray(W), *args)
        X = base.copy().T
        getattr(NB, name)(X, *args, parallel=False, out=X)
        scale = np.abs(W.astype(np.float64)).max(axis=1, keepdims=True)
        assert_close(X, ref.astype(np.float64), dtype, np.maximum(scale, np.finfo(dtype).tiny), W.shape[1])
        np.testing.assert_array_equal(X == 0, ref == 0, err_msg=name)  # the same supports


@st.composite
def _training_columns(draw, dtype, rows=(2, 40)):
    """Columns (P x G, P in ``rows``) as a training step leaves them: entries of a common
    scale (within 9 binades), on some columns also tiny magnitudes revived
    from zero (what the prox zeroed and the gradient step moved), exact
    zeros; b per column from a training step's (tiny) to large (most
    entries off the support, several search rounds)."""
    P = draw(st.integers(*rows))
    G = draw(st.integers(1, 8))
    A = np.zeros((P, G), dtype=dtype)
    tiny_exp = st.integers(-60 if dtype == np.float64 else -40, -20)
    for g in range(G):
        revived = draw(st.booleans())
        for i in range(P):
            kind = draw(st.integers(0, 3))
            if kind == 0 or (kind == 1 and not revived):
                continue
            if kind == 1:
                e, m = draw(tiny_exp), draw(st.integers(1, 2**20))
            else:
                e, m = draw(st.integers(-6, 2)), draw(st.integers(2**19, 2**20))
            A[i, g] = dtype(math.ldexp(m, e - 20)) * draw(st.sampled_from([1, -1]))
    b = [math.ldexp(draw(st.floats(1.0, 2.0)), draw(st.sampled_from([-30, -12, -6, -4, -2, 0, 2]))) for _ in range(G)]
    return A, np.array(b).astype(dtype)


def _phi_exact(y, t, a, b):
    """phi(t) = t - b F(t) (1 - a/sqrt(Q(t)))_+ for magnitudes y (Fractions):
    exact for a = 0, else in 80-digit decimals (the square root)."""
    d = [v - t for v in y if v > t]
    F = sum(d, Fraction(0))
    if a == 0:
        return t - b * F
    Q = sum((x * x for x in d), Fraction(0))
    with localcontext() as ctx:
        ctx.prec = PREC
        if Q == 0:
            return Decimal(t.numerator) / Decimal(t.denominator)
        shrink = max(Decimal(0), 1 - Decimal(float(a)) / (Decimal(Q.numerator) / Decimal(Q.denominator)).sqrt())
        return (Decimal(t.numerator) / Decimal(t.denominator)
                - Decimal((b * F).numerator) / Decimal((b * F).denominator) * shrink)


@pytest.mark.parametrize("name", ["exclusive_lasso", "group_exclusive"])
@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_exclusive_columns_candidate_above_the_lower_bound(dtype, name, data):
    """Columns whose least magnitude lies below tau (a training step's
    revived entries): _tau_below is a lower bound (phi <= 0 there, from the
    nonzero entries and again from the entries above any lower bound), and
    so is group+exclusive's tighter _tau_below_at with _ratio_above's bound
    of F/sqrt(Q) from the sums of (y - T)_+ and its squares (at least
    _tau_below's; the search's bound), and the column path (candidate = the
    least magnitude above it, checked by phi, up to four rounds) gives the
    exact prox with the exact support."""
    A, b = data.draw(_training_columns(dtype))
    P, G = A.shape
    W64 = A.T.astype(np.float64)
    gx = name == "group_exclusive"
    norms = np.sqrt((W64 ** 2).sum(axis=1))
    a = (norms * np.array([data.draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.1, 0.5])) for _ in range(G)])).astype(dtype) if gx else np.zeros(G, dtype)
    for g in range(G):
        y = [abs(Fraction(float(x))) for x in W64[g]]
        ag, bg = float(a[g]), Fraction(float(b[g]))
        t_prev = Fraction(0)
        for _ in range(3):  # the first bound, then bounds from the entries above the last one
            above = [v for v in y if v > t_prev]
            if not above:
                break
            S = float(sum(above))  # (a rounded sum: the bound allows P eps of error)
            t = NB._tau_below(S, len(above), P, ag, float(b[g]))
            assert t >= 0 and _phi_exact(y, Fraction(t), ag, bg) <= 0
            if gx:  # (the sums of (y - T)_+ and its squares, rounded as a pass's)
                FT = float(sum((v - t_prev for v in above), Fraction(0)))
                QT = float(sum(((v - t_prev) ** 2 for v in above), Fraction(0)))
                r = NB._ratio_above(FT, QT, len(above), P)
                assert 0 < r <= math.sqrt(len(above))
                tighter = NB._tau_below_at(S, len(above), P, ag, float(b[g]), r)
                assert tighter >= t
                assert _phi_exact(y, Fraction(tighter), ag, bg) <= 0
                t = tighter
            if not Fraction(t) > t_prev:
                break
            t_prev = Fraction(t)
    if dtype == np.float32:
        # the search's support sums from its own sums (the float32 shortcut;
        # group+exclusive: F and k, with a pass of D2 alone) are those of the
        # support-sums pass, bit for bit, in every round
        S, mb, xb, nz = np.empty(G), np.empty(G, np.int32), np.empty(G, np.int32), np.empty(G, np.int64)
        NB._col_pass1(A, S, None, mb, xb, nz)
        Y0 = np.where(mb < 0x7F800000, mb.view(np.float32).astype(np.float64), -1.0)
        T0 = np.array([NB._tau_below(S[g], nz[g], P, float(a[g]), float(b[g])) if Y0[g] > 0 else np.inf for g in range(G)])
        T0 = np.where(Y0 > T0, np.inf, T0)
        results = []
        for shortcut in (xb, None):
            Y, T, F, k, D2 = Y0.copy(), T0.copy(), np.empty(G), np.empty(G, np.int64), np.zeros(G)
            scratch = (np.empty(G), np.empty(G)) if gx else (None, None)
            NB._exclusive_col_search(A, a, b, Y, T, F, D2 if gx else None, k, S, nz, mb, shortcut, *scratch)
            results.append((Y, F, k, D2.view(np.int64)))
        for got, want in zip(*results):
            np.testing.assert_array_equal(got[Y0 > 0], want[Y0 > 0])
    if gx:
        exact = exact_group_exclusive(W64, a.astype(np.float64), b.astype(np.float64))
        X = NB.group_exclusive(np.asfortranarray(A.T), a, b, parallel=False)
    else:
        exact = exact_exclusive(W64, b)
        X = NB.exclusive_lasso(np.asfortranarray(A.T), b, parallel=False)
    assert_close(X, exact, dtype, np.abs(W64).max(axis=1, keepdims=True), P)
    np.testing.assert_array_equal(X == 0, exact == 0)


@given(
    y=st.lists(st.floats(2.0**-30, 2.0**30), min_size=1, max_size=40),
    T_at=st.floats(0.0, 1.0),
    t_at=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
)
def test_ratio_above_bounds_the_ratio_at_every_higher_point(y, T_at, t_at):
    """_ratio_above(F(T), Q(T), n, P) r times 1 + 2^-50 (_tau_below_at's
    factor) >= F(t)/sqrt(Q(t)) at every t >= T where Q(t) > 0 (checked
    exactly in fractions: F(t)^2 <= (r (1 + 2^-50))^2 Q(t)), from the
    rounded sums of (y - T)_+ and its squares over the n magnitudes above
    T; and r is at most sqrt(n) (rounded: equal values, y = [1, 1, 1], need
    the factor).  The factor is what the kernel applies, not a tolerance:
    with the ratio formed as sqrt(F/Q) the test fails by far more."""
    ys = sorted(Fraction(v) for v in y)
    P = len(ys)
    T = Fraction(T_at) * ys[-1]  # somewhere in [0, max y]
    d = [v - T for v in ys if v > T]
    assume(d)
    r = NB._ratio_above(float(sum(d, Fraction(0))), float(sum((x * x for x in d), Fraction(0))), len(d), P)
    assert 0 < r <= math.sqrt(len(d))
    for u in t_at:
        t = T + Fraction(u) * (ys[-1] - T)
        F = sum((v - t for v in ys if v > t), Fraction(0))
        Q = sum(((v - t) ** 2 for v in ys if v > t), Fraction(0))
        if Q > 0:
            assert F * F <= (Fraction(r) * (1 + Fraction(1, 2**50))) ** 2 * Q


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 10])
def test_group_exclusive_columns_search_gaussian_columns(dtype, k):
    """Gaussian columns with a group part that shrinks (a = 0.3 sqrt(P),
    b = k/P: supports of about 76% and 44%, run.py's case), without hints.
    b = 1/P: the column search ends on every column (its bound with
    _ratio_above; with sqrt(n) in place of F/sqrt(Q) it stopped short of
    tau, and the whole matrix went to the row kernel).  b = 10/P: the bound
    needs 4-8 candidates, more than the search's four rounds, on most
    columns (the matrix goes to the row kernel: 0, nothing written).
    Either way the public call gives the exact prox."""
    rng = np.random.default_rng(7 + k)
    P, G = 300, 24
    W64 = (rng.standard_normal((G, P)) * rng.uniform(0.5, 1.5, size=(G, 1))).astype(dtype).astype(np.float64)
    a = np.full(G, 0.3 * math.sqrt(P), dtype)
    b = np.full(G, k / P, dtype)
    A = np.ascontiguousarray(W64.T.astype(dtype))
    out = np.full_like(A, np.nan)
    code = NB._exclusive_cols(A, a, b, out, NB._NO_HINTS)
    assert code == (1 if k == 1 else 0)
    assert np.isnan(out).all() == (code == 0)
    exact = exact_group_exclusive(W64, a.astype(np.float64), b.astype(np.float64))
    for X in ([out.T] if code else []) + [NB.group_exclusive(np.asfortranarray(A.T), a, b, parallel=False)]:
        assert_close(X, exact, dtype, np.abs(W64).max(axis=1, keepdims=True), P)
        np.testing.assert_array_equal(X == 0, exact == 0)


def _hint_values(draw, y, tau):
    """Hints for one column: none, fractions of an approximate threshold
    (good, a hair above it, far off), the column's own magnitudes (a tie
    with the hint: "above" is strict), and what must count as no hint."""
    pick = draw(st.integers(0, 4))
    if pick == 0 or tau <= 0:
        return draw(st.sampled_from([0.0, -1.0, math.nan, math.inf, 1e-300, 1e300]))
    if pick == 1:
        return tau * draw(st.sampled_from([0.5, 0.9, 1.0 - 2.0**-8, 1.0, 1.0 + 2.0**-20, 1.5]))
    if pick == 2 and len(y):
        return float(draw(st.sampled_from(sorted(set(y)))))
    return draw(st.floats(0.0, 2 * tau + 1e-300, allow_nan=False))


@pytest.mark.parametrize("rows", [(2, 40), (NB._SHIFTED_MIN_ROWS, NB._SHIFTED_MIN_ROWS + 8)])
@pytest.mark.parametrize("name", ["exclusive_lasso", "group_exclusive"])
@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_exclusive_columns_hints_never_change_the_prox(dtype, name, rows, data):
    """The column passes with per-column hints (a training step's guess of
    each threshold, kept between steps): whatever the hints (good, wrong,
    ties with an entry, NaN, negative, inf), the prox is the one without
    them, bit for bit in float32 (every sum exact), with the same support
    and within the exact reference's tolerance in float64 and in float32
    group+exclusive on columns of _SHIFTED_MIN_ROWS or more (a column the
    hint decides may be one the row kernel takes without it: another
    summation order; such columns take their support sums from the first
    pass's shifted sums, float32 group+exclusive from its plain sums, with
    the squares); and the hints left
    behind are lower bounds of each
    column's threshold (phi <= 0 there, exactly), > 0 where the column path
    decided the column, ready for the next call."""
    A, b = data.draw(_training_columns(dtype, rows))
    P, G = A.shape
    W = np.asfortranarray(A.T)  # rows of the kernel = columns of A
    W64 = A.T.astype(np.float64)
    gx = name == "group_exclusive"
    norms = np.sqrt((W64 ** 2).sum(axis=1))
    a = (norms * np.array([data.draw(st.sampled_from([0.0, 1e-3, 0.1])) for _ in range(G)])).astype(dtype) if gx else None
    args = (a, b) if gx else (b,)
    plain = getattr(NB, name)(W, *args, parallel=False)
    taus = np.abs(W64) - np.abs(plain.astype(np.float64))  # tau_g, roughly, on the support
    H = np.empty(G)
    for g in range(G):
        sup = plain[g] != 0
        tau = float(taus[g][sup].max()) if sup.any() and not gx else float(np.abs(W64[g]).max()) / 2
        H[g] = _hint_values(data.draw, np.abs(W64[g]), tau)
    hinted = getattr(NB, name)(W, *args, parallel=False, hint=H)
    np.testing.assert_array_equal(hinted == 0, plain == 0)
    if dtype == np.float32 and not (gx and P >= NB._SHIFTED_MIN_ROWS):
        np.testing.assert_array_equal(np.ascontiguousarray(hinted).view(np.uint32), np.ascontiguousarray(plain).view(np.uint32))
    else:
        exact = exact_group_exclusive(W64, a.astype(np.float64), b.astype(np.float64)) if gx else exact_exclusive(W64, b)
        assert_close(hinted, exact, dtype, np.abs(W64).max(axis=1, keepdims=True), P)
    if not NB._as_columns(W, W):  # (one column, or one entry: the row kernel, which takes no hint)
        return
    assert np.all(H >= 0) and np.all(np.isfinite(H))
    for g in range(G):
        if H[g] > 0:
            y = [abs(Fraction(float(x))) for x in W64[g]]
            assert _phi_exact(y, Fraction(H[g]), float(a[g]) if gx else 0.0, Fraction(float(b[g]))) <= 0


def _plain_sums_at(A, T):
    """float32 group+exclusive's support sums with hints T: the first pass
    above T with the squares (the bits pass), then _shifted_support_sums at
    T = 0 over its plain sums S, Q (the kernel's ``plain`` route):
    (verdict, Y, F, D2, k, S, mb, xb, nz), and the sums' exact values over
    {y > T_g} (Fractions)."""
    A = np.ascontiguousarray(A)
    P, G = A.shape
    S, Q = np.empty(G), np.empty(G)
    mb, xb, nz = np.empty(G, np.int32), np.empty(G, np.int32), np.empty(G, np.int64)
    F, D2, k = np.empty(G), np.empty(G), np.empty(G, np.int64)
    NB._col_pass1(A, S, Q, mb, xb, nz, T)
    Y = np.where(mb < 0x7F800000, mb.view(np.float32).astype(np.float64), -1.0)
    ok = NB._shifted_support_sums(Y, np.zeros(G), S, Q, nz, F, D2, k)
    exact = []
    for g in range(G):
        sup = [Fraction(float(y)) - Fraction(float(Y[g])) for y in np.abs(A[:, g].astype(np.float64)) if y > T[g]]
        exact.append((sum(sup, Fraction(0)), sum((d * d for d in sup), Fraction(0)), len(sup)))
    return ok, Y, F, D2, k, (S, mb, xb, nz), exact


@given(data=st.data())
def test_float32_plain_support_sums_are_the_support_sums_to_their_rounding(data):
    """float32 group+exclusive columns with hints take the support sums
    from the first pass's plain sums (S, Q over {y > T}, _shifted_support_sums
    at T = 0): where it accepts them, k is the support's size, F the
    direct pass's bits where _support_sums_from_pass1 proves its sums exact
    (and else within (P + 4) units of the exact F), D2 within twice the
    direct sum's bound, 2 (P + 4) units of the exact D2; where it refuses,
    some column's D2 = Q - Y (S + F) would cancel more than a third."""
    A, _ = data.draw(_training_columns(np.float32, (NB._SHIFTED_MIN_ROWS, NB._SHIFTED_MIN_ROWS + 8)))
    P, G = A.shape
    y = np.abs(A.astype(np.float64))
    T = np.array([float(np.sort(y[:, g])[data.draw(st.integers(0, P - 1))]) * data.draw(st.sampled_from([0.0, 0.5, 1.0 - 2.0**-8, 1.0]))
                  for g in range(G)])
    ok, Y, F, D2, k, (S, mb, xb, nz), exact = _plain_sums_at(A, T)
    eps = np.finfo(np.float64).eps
    if not ok:  # some column's sums cancel: 3 k Y > S or 3 Y (S + F) > Q, up to their rounding
        slack = 1 - 4 * (P + 4) * eps

        def cancels(g):
            Yg, (Fx, _, kx) = Fraction(float(Y[g])), exact[g]
            Sx = Fx + kx * Yg
            Qx = sum((Fraction(float(v)) ** 2 for v in y[:, g] if v > T[g]), Fraction(0))
            return kx > 1 and (3 * kx * Yg > Sx * slack or 3 * Yg * (Sx + Fx) > Qx * slack)

        assert any(Y[g] > 0 and cancels(g) for g in range(G))
        return
    Fe, ke = np.empty(G), np.empty(G, np.int64)
    proven = NB._support_sums_from_pass1(S, Y, mb, xb, nz, P, Fe, ke)
    Fd, kd = np.empty(G), np.empty(G, np.int64)
    NB._col_support_sums(np.ascontiguousarray(A), np.maximum(Y, 0.0), Fd, None, kd)
    for g in range(G):
        if not Y[g] > 0:
            continue
        Fx, Dx, kx = exact[g]
        assert k[g] == kx == kd[g]
        if proven:
            assert F[g] == Fd[g] == Fx
        assert abs(Fraction(float(F[g])) - Fx) <= (P + 4) * eps * Fx
        assert abs(Fraction(float(D2[g])) - Dx) <= 2 * (P + 4) * eps * Dx, (g, float(D2[g]), float(Dx))


def _shifted_sums_at(A, T, squares=True):
    """The first pass over A's columns above T with its shifted sums, then
    _shifted_support_sums at the least magnitudes above T (with D2, or
    without: the exclusive lasso's variant): (verdict, Y, F, D2, k), and
    the sums' exact values over {y > T_g} (Fractions).  A is passed in
    C order, as the library passes its columns (a column slice of a matrix
    would compile the pass again for a strided layout)."""
    A = np.ascontiguousarray(A)
    P, G = A.shape
    S, F1, Q1 = np.empty(G), np.empty(G), np.empty(G)
    mb, nz = np.empty(G, np.int64), np.empty(G, np.int64)
    F, D2, k = np.empty(G), np.empty(G), np.empty(G, np.int64)
    if squares:
        NB._col_pass1(A, S, None, mb, None, nz, T, F1, Q1)
    else:
        NB._col_pass1(A, S, None, mb, None, nz, T, F1, None)
    Y = np.where(nz > 0, mb.view(np.float64), -1.0)
    if squares:
        ok = NB._shifted_support_sums(Y, T.copy(), F1, Q1, nz, F, D2, k)
    else:
        ok = NB._shifted_support_sums(Y, T.copy(), F1, None, nz, F, None, k)
    exact = []
    for g in range(G):
        sup = [Fraction(float(y)) - Fraction(float(Y[g])) for y in np.abs(A[:, g]) if y > T[g]]
        exact.append((sum(sup, Fraction(0)), sum((d * d for d in sup), Fraction(0)), len(sup)))
    return ok, Y, F, D2, k, exact


@given(data=st.data())
def test_shifted_support_sums_are_the_support_sums_to_their_rounding(data):
    """The float64 column passes with hints take the support sums from the
    first pass's sums shifted by the hints (_shifted_support_sums, no pass
    of their own): where it accepts them, F, D2 and k are those of the
    support {y > T} = {y >= Y} to twice the direct sums' bound ((P + 4)
    units of each, P the column's length), checked against the exact sums;
    and the direct pass (_col_support_sums) agrees to the same bound."""
    A, _ = data.draw(_training_columns(np.float64))
    P, G = A.shape
    y = np.abs(A)
    T = np.array([float(np.sort(y[:, g])[data.draw(st.integers(0, P - 1))]) * data.draw(st.sampled_from([0.5, 1.0 - 2.0**-8, 1.0]))
                  for g in range(G)])
    ok, Y, F, D2, k, exact = _shifted_sums_at(A, T)
    assume(ok)
    Fd, Dd, kd = np.empty(G), np.empty(G), np.empty(G, np.int64)
    NB._col_support_sums(A, np.maximum(Y, 0.0), Fd, Dd, kd)
    eps = np.finfo(np.float64).eps
    for g in range(G):
        if not Y[g] > 0:
            continue
        Fx, Dx, kx = exact[g]
        assert k[g] == kx == kd[g]
        for got, direct, want in ((F[g], Fd[g], Fx), (D2[g], Dd[g], Dx)):
            for v, bound in ((got, 2 * (P + 4)), (direct, P + 4)):
                assert abs(Fraction(float(v)) - want) <= bound * eps * want, (g, v, float(want))


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_row_support_sums_from_a_lower_point_are_the_support_sums_to_their_rounding(dtype, data):
    """The group+exclusive row kernels' support sums (_gx_support_sums): from
    a pass's sums at a lower point t (the search's, or the first pass's at
    0) shifted to the support's least entry Y = min{y > t} where they cancel
    little, else from a pass at Y: either way k is the support's size and
    F = sum (y - Y), D2 = sum (y - Y)^2 within twice the direct sums' bound
    (2 (m + 4) units), checked against the exact sums; and the shifted sums
    are taken on a training step's rows (t = 0, Y the least magnitude)."""
    A, _ = data.draw(_training_columns(dtype, (1, 80)))
    x = np.ascontiguousarray(A[:, 0])
    y = np.abs(x.astype(np.float64))
    m = x.shape[0]
    t = float(np.sort(y)[data.draw(st.integers(0, m - 1))]) * data.draw(st.sampled_from([0.0, 0.5, 1.0 - 2.0**-8, 1.0]))
    Ft, Qt, kt, Y = NB._gx_pass(x, m, 1.0, 1.0, t)
    assume(kt > 0)
    F, D2, k = NB._gx_support_sums(x, m, 1.0, 1.0, Y, t, Ft, Qt, kt)
    sup = [Fraction(float(v)) - Fraction(float(Y)) for v in y if v > t]
    Fx, Dx = sum(sup, Fraction(0)), sum((d * d for d in sup), Fraction(0))
    eps = np.finfo(np.float64).eps
    assert k == len(sup) == kt
    for got, want in ((F, Fx), (D2, Dx)):
        assert abs(Fraction(float(got)) - want) <= 2 * (m + 4) * eps * want, (float(got), float(want))


def test_row_support_sums_of_a_training_row_take_no_pass():
    """On a training step's row (Gaussian magnitudes, t = 0, Y the least
    nonzero magnitude) the shifted sums are accepted: _unshifted_sums' tests
    pass, so _gx_support_sums gives their values, not a pass's."""
    x = np.random.default_rng(3).standard_normal(300)
    Ft, Qt, kt, Y = NB._gx_pass(x, 300, 1.0, 1.0, 0.0)
    F, D2, k = NB._gx_support_sums(x, 300, 1.0, 1.0, Y, 0.0, Ft, Qt, kt)
    d = Y
    assert (F, D2, k) == (Ft - kt * d, Qt - d * (Ft + (Ft - kt * d)), kt)
    Fp, Dp, kp = NB._gx_sums(x, 300, 1.0, 1.0, Y)
    assert kp == k and abs(F - Fp) <= 1e-13 * Fp and abs(D2 - Dp) <= 1e-13 * Dp


def test_shifted_support_sums_refuse_the_cancelling_ones():
    """A column whose support is clustered just above its least entry Y,
    far above the hint T: F1 = sum (y - T) is about k (Y - T), so F =
    F1 - k (Y - T) cancels (as would D2): _shifted_support_sums refuses
    it, and the kernel takes the direct pass (the prox is the one without
    hints, the exact reference's to its tolerance); a column whose support
    spreads well above Y - T is accepted."""
    P = 64
    spread = 1.0 + np.arange(P) * 2.0**-30  # a cluster 2^-24 wide above 1
    wide = 1.0 + np.arange(P) / P  # spread over [1, 2)
    A = np.stack([spread, wide], axis=1)
    T = np.array([0.5, 0.99])
    for squares in (True, False):
        ok, *_ = _shifted_sums_at(A[:, :1], T[:1], squares)
        assert not ok
        ok, Y, F, D2, k, exact = _shifted_sums_at(A[:, 1:], T[1:], squares)
        assert ok and k[0] == P
    b = np.array([1e-9, 1e-9])
    for gx in (False, True):
        a = np.array([1e-6, 1e-6])
        thr = (a, b) if gx else (b,)
        kernel = NB.group_exclusive if gx else NB.exclusive_lasso
        W = np.asfortranarray(A.T)
        plain = kernel(W, *thr, parallel=False)
        H = T.copy()
        hinted = kernel(W, *thr, parallel=False, hint=H)
        np.testing.assert_array_equal(hinted == 0, plain == 0)
        exact_x = exact_group_exclusive(A.T, a, b) if gx else exact_exclusive(A.T, b)
        assert_close(hinted, exact_x, np.float64, np.abs(A.T).max(axis=1, keepdims=True), P)


@pytest.mark.parametrize("gx", [False, True])
def test_exclusive_columns_float64_hints_take_the_support_sums_from_the_first_pass(gx):
    """A float64 layer in the training state, solved with the hints of a
    first call: every column's hint proves itself and its shifted sums are
    accepted (_shifted_support_sums: no pass for the support sums, which is
    what makes the hinted call faster), and the prox keeps the zeros of the
    call without hints and the exact reference's values to its tolerance."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((300, 96)) / 20
    dead = rng.random(base.shape) < 0.3
    base[dead] = rng.standard_normal(dead.sum()) * 1e-7
    W = np.asfortranarray(base.T)
    b = np.full(96, 1e-3)
    a = np.full(96, 1e-3)
    thr = (a, b) if gx else (b,)
    kernel = NB.group_exclusive if gx else NB.exclusive_lasso
    plain = kernel(W, *thr, parallel=False)
    H = np.zeros(96)
    kernel(W, *thr, parallel=False, hint=H)
    assert np.all(H > 0)
    ok, Y, *_ = _shifted_sums_at(base, H.copy())
    assert ok and np.all(Y > 0)
    again = kernel(W, *thr, parallel=False, hint=H)
    np.testing.assert_array_equal(again == 0, plain == 0)
    exact = exact_group_exclusive(base.T, a, b) if gx else exact_exclusive(base.T, b)
    assert_close(again, exact, np.float64, np.abs(base.T).max(axis=1, keepdims=True), 300)


def test_float32_group_exclusive_hints_take_the_support_sums_from_the_first_pass():
    """float32 group+exclusive on a layer in the training state, with the
    hints of a first call: every hint proves itself and the plain sums of
    the first pass are accepted (no pass for D2, which is what makes the
    hinted call faster), and the prox keeps the zeros of the call without
    hints and the exact reference's values to its tolerance."""
    rng = np.random.default_rng(11)
    base = (rng.standard_normal((300, 96)) / 20).astype(np.float32)
    dead = rng.random(base.shape) < 0.3
    base[dead] = (rng.standard_normal(dead.sum()) * 1e-7).astype(np.float32)
    W = np.asfortranarray(base.T)
    a, b = np.full(96, 1e-3, np.float32), np.full(96, 1e-3, np.float32)
    plain = NB.group_exclusive(W, a, b, parallel=False)
    H = np.zeros(96)
    NB.group_exclusive(W, a, b, parallel=False, hint=H)
    assert np.all(H > 0)
    ok, Y, *_ = _plain_sums_at(base, H.copy())
    assert ok and np.all(Y > 0)
    again = NB.group_exclusive(W, a, b, parallel=False, hint=H)
    np.testing.assert_array_equal(again == 0, plain == 0)
    W64 = base.T.astype(np.float64)
    exact = exact_group_exclusive(W64, a.astype(np.float64), b.astype(np.float64))
    assert_close(again, exact, np.float32, np.abs(W64).max(axis=1, keepdims=True), 300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_exclusive_columns_hinted_everywhere_still_zero_the_small_columns(dtype):
    """Group+exclusive with a positive hint on every column (the first pass
    then sums no squares: a hint that proves itself proves ||w|| > a) on a
    layer where some columns have ||w|| <= a: their hints prove nothing, the
    pass runs again with the squares, and those columns are zeroed, as
    without hints (solved as if ||w|| > a, they would get a shrink factor
    near the least subnormal, nonzero in float64); the prox is the one
    without hints, bit for bit in float32, the same zeros and within the
    reference's tolerance in float64."""
    rng = np.random.default_rng(5)
    P, G = 40, 16
    A = rng.standard_normal((P, G)).astype(dtype)
    small = [3, 8, 13]  # (their a above their norm)
    W = np.asfortranarray(A.T)
    W64 = A.T.astype(np.float64)
    norms = np.sqrt((W64 ** 2).sum(axis=1))
    a = np.full(G, 0.2 * np.median(norms))
    a[small] = 1.5 * norms[small]
    a = a.astype(dtype)
    b = np.full(G, 0.01).astype(dtype)
    plain = NB.group_exclusive(W, a, b, parallel=False)
    assert NB._as_columns(W, W) and np.all(plain[small] == 0) and np.all(np.delete(plain, small, axis=0).any(axis=1))
    H = np.zeros(G)
    NB.group_exclusive(W, a, b, parallel=False, hint=H)
    assert np.count_nonzero(H) >= G - len(small) - 4  # (the column passes decided most columns)
    H[H == 0] = 1e-3 * np.abs(W64).max()  # (the others get a hint too: every column has one)
    hinted = NB.group_exclusive(W, a, b, parallel=False, hint=H)
    np.testing.assert_array_equal(hinted == 0, plain == 0)
    if dtype == np.float32:
        np.testing.assert_array_equal(np.ascontiguousarray(hinted).view(np.uint32), np.ascontiguousarray(plain).view(np.uint32))
    else:
        exact = exact_group_exclusive(W64, a.astype(np.float64), b.astype(np.float64))
        assert_close(hinted, exact, dtype, np.abs(W64).max(axis=1, keepdims=True), P)


def test_exclusive_columns_hints_float32_wide_support_within_rounding():
    """A float32 column whose support spans 2^5-2^29 (its sums not exact)
    with a threshold just below its least entry, next to a column the
    search leaves to the row kernel (so without hints the whole matrix goes
    to the row kernels, with them to the column passes): the hints change
    no zero and keep the values within the exact reference's tolerance;
    the bits may differ (the summation orders differ), as the docstrings of
    _exclusive_cols and _check_hint say (they promised the same bits)."""
    rng = np.random.default_rng(1)
    moved = 0
    for _ in range(40):
        P = int(rng.integers(8, 64))
        nbig = int(rng.integers(1, P - 1))
        c0 = np.concatenate([rng.uniform(1, 2, nbig) * 2.0 ** int(rng.integers(5, 30)),
                             rng.uniform(1, 2, P - nbig) * 2.0**-12]).astype(np.float32)
        rng.shuffle(c0)
        y = np.abs(c0.astype(np.float64))
        tau = y.min() * (1 - 2.0 ** -int(rng.integers(10, 28)))
        c1 = (1 - 2.0 ** -(np.arange(P) % 24) * rng.uniform(0.5, 1, P)).astype(np.float32)
        W = np.asfortranarray(np.stack([c0, c1]))
        b = np.array([tau / (y.sum() - P * tau), 1e4], dtype=np.float32)
        plain = NB.exclusive_lasso(W, b, parallel=False)
        if not (plain[0] != 0).all():
            continue
        H = np.array([0.99 * float(np.abs(W[g]).astype(np.float64)[plain[g] != 0].min()
                                   - np.abs(plain[g]).astype(np.float64)[plain[g] != 0].min()) for g in range(2)])
        hinted = NB.exclusive_lasso(W, b, parallel=False, hint=H)
        np.testing.assert_array_equal(hinted == 0, plain == 0)
        W64 = W.astype(np.float64)
        assert_close(hinted, exact_exclusive(W64, b.astype(np.float64)), np.float32, np.abs(W64).max(axis=1, keepdims=True), P)
        moved += not np.array_equal(hinted, plain)
    assert moved  # (the case the docstrings now describe does occur)


def test_exclusive_columns_hints_decide_a_training_layer_and_stay_good():
    """A layer in the training state solved twice with the hints of the
    first call: the second call's hints prove themselves on every column
    (the candidate pass is skipped) and the prox is the same."""
    rng = np.random.default_rng(11)
    base = (rng.standard_normal((300, 96)) / 20).astype(np.float32)
    dead = rng.random(base.shape) < 0.3
    base[dead] = (rng.standard_normal(dead.sum()) * 1e-7).astype(np.float32)
    W = np.asfortranarray(base.T)
    b = np.full(96, 1e-3, dtype=np.float32)
    H = np.zeros(96)
    first = NB.exclusive_lasso(W, b, parallel=False, hint=H)
    assert np.all(H > 0)  # every column decided by the column path
    S, mb, nz = np.empty(96), np.empty(96, np.int32), np.empty(96, np.int64)
    NB._col_pass1(base, S, None, mb, None, nz, H)
    proved = [0 < H[g] <= NB._tau_below(S[g], nz[g], 300, 0.0, float(b[g])) for g in range(96)]
    assert all(proved)
    again = NB.exclusive_lasso(W, b, parallel=False, hint=H)
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gx", [False, True])
def test_exclusive_columns_take_zero_columns_themselves(dtype, gx):
    """Zero columns (signed zeros included), a third of a layer's: the column
    passes write them (their prox is 0) instead of giving them to the row
    kernel, so they do not count against the quarter above which the whole
    matrix goes to the row kernels (_exclusive_cols returns 1, not 0); with
    hints (training: the columns stay zero), theirs are cleared and the
    others still prove themselves.  The prox equals the row kernels' on a
    C-contiguous copy: float32 bit for bit (these columns span a few
    binades, so their sums are exact; a support spanning more than about
    2^29 may differ in the last bit: _exclusive_cols), float64 within their
    rounding (at the row's scale) with the same zeros."""
    rng = np.random.default_rng(12)
    P, G = 200, 60
    base = (rng.standard_normal((P, G)) / 20).astype(dtype)
    zero = rng.random(G) < 1 / 3
    zero[:3] = True
    base[:, zero] = 0.0
    base[::2, 1] = -0.0
    a = np.full(G, 2e-3, dtype)
    b = np.full(G, 1e-3, dtype)
    thr = (a, b) if gx else (b,)
    kernel = NB.group_exclusive if gx else NB.exclusive_lasso
    rows = np.ascontiguousarray(base.T)
    want = kernel(rows, *thr, parallel=False)
    assert 4 * zero.sum() > G
    out = np.empty_like(base)
    assert NB._exclusive_cols(base, a if gx else None, b, out, NB._NO_HINTS) == 1
    H = np.zeros(G)
    for call in range(3):
        W = np.asfortranarray(base.T)
        got = kernel(W, *thr, parallel=False, hint=H)
        for X in (out.T, got):
            np.testing.assert_array_equal(X == 0, want == 0)
            if dtype == np.float32:
                np.testing.assert_array_equal(X, want)
            else:  # (the row kernel's rounding, at each row's scale)
                assert_close(X, want, dtype, np.abs(rows).max(axis=1, keepdims=True), P)
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(rows[zero]))
        assert np.all(H[~zero] > 0) and np.all(H[zero] == 0), call  # (a zero column has no threshold to guess)


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_exclusive_columns_zero_the_columns_below_a_themselves(dtype):
    """Group+exclusive columns with ||w|| <= a (in training: columns the
    group part zeroed, back from zero, tiny, at every step), a third of a
    layer's: the column passes zero them (their prox is 0, decided by the
    row kernel's rule) instead of giving them to the row kernel, where more
    than a quarter sent the whole matrix to the row kernels (_exclusive_cols
    returned 0) and the hints of every column were lost.  The prox equals
    the row kernels' on a C-contiguous copy (float32 bit for bit, float64
    within their rounding, the same zeros and signs)."""
    rng = np.random.default_rng(13)
    P, G = 200, 60
    base = (rng.standard_normal((P, G)) / 20).astype(dtype)
    small = rng.random(G) < 1 / 3
    small[:3] = True
    base[:, small] *= dtype(1e-3)  # ||w|| about 7e-4, a = 2e-3 below
    base[::2, 0] = -base[::2, 0]
    a = np.full(G, 2e-3, dtype)
    b = np.full(G, 1e-3, dtype)
    rows = np.ascontiguousarray(base.T)
    want = NB.group_exclusive(rows, a, b, parallel=False)
    assert 4 * small.sum() > G and np.all(want[small] == 0) and np.all(want[~small].any(axis=1))
    out = np.empty_like(base)
    assert NB._exclusive_cols(base, a, b, out, NB._NO_HINTS) == 1
    H = np.zeros(G)
    for call in range(3):
        W = np.asfortranarray(base.T)
        got = NB.group_exclusive(W, a, b, parallel=False, hint=H)
        for X in (out.T, got):
            np.testing.assert_array_equal(X == 0, want == 0)
            np.testing.assert_array_equal(np.signbit(X), np.signbit(want))
            if dtype == np.float32:
                np.testing.assert_array_equal(X, want)
            else:
                assert_close(X, want, dtype, np.abs(rows).max(axis=1, keepdims=True), P)
        assert np.all(H[~small] > 0) and np.all(H[small] == 0), call  # (the others' hints kept)


def _optional_typed_variants():
    """The compiled variants of the Numba backend's kernels that take an
    argument typed Optional (an array or None decided at run time, e.g.
    ``D2 if gx else None``): their ``is not None`` tests stay inside the
    loops and stop them vectorising (one such pass ran 14 times slower)."""
    from numba.core import types
    from numba.core.registry import CPUDispatcher

    return [(name, str(sig)) for name, f in vars(NB).items() if isinstance(f, CPUDispatcher)
            for sig in f.signatures if any(isinstance(t, types.Optional) for t in sig)]


_COMPILED_CALLEES = """
import json, sys
import numpy as np
from numba.core import event
seen = []

class Record(event.Listener):
    def on_start(self, e):
        pass

    def on_end(self, e):
        seen.append([e.data["dispatcher"].py_func.__name__, [str(t) for t in e.data["args"]]])

event.register("numba:compile", Record())
from proxlib.backends import numba_cpu as NB
dtype, gx = sys.argv[1], sys.argv[2] == "gx"
A = np.asfortranarray(np.random.default_rng(0).standard_normal((40, 16)).astype(dtype))
b = np.full(40, 1e-2, dtype)
for hint in (None, np.zeros(40)):  # (without hints, then with: every branch a training step takes)
    if gx:
        NB.group_exclusive(A, b, b, parallel=False, hint=hint)
    else:
        NB.exclusive_lasso(A, b, parallel=False, hint=hint)
print(json.dumps(seen))
"""


@pytest.mark.slow
@pytest.mark.skipif(not _LONG, reason="compiles a column kernel without a cache (20-40 s on 2 cores): the long profile runs it")
@pytest.mark.parametrize("dtype, gx", [("float32", True), ("float32", False), ("float64", True)])
def test_exclusive_column_kernels_compile_only_their_own_operator_and_dtype(tmp_path, dtype, gx):
    """Each column kernel (_make_exclusive_cols) compiles the callees of its
    operator and dtype alone: no exclusive-lasso variant (D2 or fac None)
    for group+exclusive and no group+exclusive one (D2 an array) for the
    exclusive lasso, no shifted sums for the float32 exclusive lasso
    (float32 group+exclusive takes its first pass's plain sums through
    _shifted_support_sums at T = 0), and float32 row kernels
    over float32 rows only (no float64 scaled copy).  Each of these was
    compiled before 2026-12-07 and cost 4-20 s of a first call."""
    import json

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(pathlib.Path(proxlib.__file__).parents[1])}
    out = _procs.run([sys.executable, "-c", _COMPILED_CALLEES, dtype, "gx" if gx else "ex"], timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    names = {name for name, _ in seen}
    assert "_exclusive_cols_kernel" in names and "_col_support_out" in names  # (the recorder sees the callees)
    # float32 group+exclusive's hinted support sums from its first pass's plain sums
    assert ("_shifted_support_sums" in names) == (gx or dtype == "float64"), names
    for name, args in seen:
        if name in ("_col_support_out", "_exclusive_col_search", "_support_sums", "_support_sums_or_shifted"):
            fac_or_D2 = {"_col_support_out": 3, "_exclusive_col_search": 6, "_support_sums": 7, "_support_sums_or_shifted": 7}[name]
            assert (args[fac_or_D2] != "none") == gx, (name, args)
        if dtype == "float32" and not gx:
            assert name != "_shifted_support_sums", args
        if dtype == "float32":
            if name in ("_exclusive_core", "_group_exclusive_core"):
                assert args[1].startswith("array(float32"), (name, args)  # (the passes' source: the row itself)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gx", [False, True])
def test_exclusive_columns_with_hints_compile_no_optional_arguments(dtype, gx):
    """A layer in the training state solved with the hints of a first call
    (the route that tests the hinted candidates with a support-sums pass:
    float64, or group+exclusive) passes every optional array as an array
    or as None, never as an Optional: each pass is a variant with its
    branches pruned by type (see _optional_typed_variants)."""
    rng = np.random.default_rng(13)
    base = (rng.uniform(-1.0, 1.0, (300, 96)) / 28).astype(dtype)
    W = np.asfortranarray(base.T)
    b = np.full(96, 1e-4, dtype)
    thr = (np.full(96, 1e-4, dtype), b) if gx else (b,)
    kernel = NB.group_exclusive if gx else NB.exclusive_lasso
    H = np.zeros(96)
    first = kernel(W, *thr, parallel=False, hint=H)
    assert np.all(H > 0)
    again = kernel(W, *thr, parallel=False, hint=H)
    np.testing.assert_array_equal(again == 0, first == 0)
    assert _optional_typed_variants() == []


def test_exclusive_hint_must_fit():
    W = np.asfortranarray(np.ones((4, 3)))
    with pytest.raises(ValueError, match="hint"):
        NB.exclusive_lasso(W, np.ones(4), hint=np.zeros(3))
    with pytest.raises(ValueError, match="hint"):
        NB.group_exclusive(W, np.ones(4), np.ones(4), hint=np.zeros(4, dtype=np.float32))


def test_exclusive_columns_in_the_training_state_stay_columns():
    """A layer after training steps: the prox zeroed entries, the gradient
    step revived them tiny, so on most columns the least magnitude is below
    tau (the fast path's test fails for certain).  The column path still
    solves it (candidates above lower bounds of tau, no transposed fallback):
    the exact prox, the row kernel's support."""
    rng = np.random.default_rng(7)
    base = (rng.standard_normal((300, 64)) / 20).astype(np.float32)
    dead = rng.random(base.shape) < 0.3
    base[dead] = (rng.standard_normal(dead.sum()) * 1e-7).astype(np.float32)
    A = base  # P = 300 x G = 64 columns
    G = A.shape[1]
    b32 = np.full(G, 1e-3, np.float32)  # (the kernel's thresholds are in A's dtype, as the library passes them)
    b = b32.astype(np.float64)
    S, mb, nz = np.empty(G), np.empty(G, np.int32), np.empty(G, np.int64)
    NB._col_pass1(A, S, None, mb, None, nz)
    ymin = mb.view(np.float32).astype(np.float64)
    certain = [not NB._support_may_be_all(ymin[g], S[g], nz[g], 300, 0.0, b[g]) for g in range(G)]
    assert sum(certain) > G // 2  # the old column path gave up here
    out = np.empty_like(A)
    assert NB._exclusive_cols(A, None, b32, out, NB._NO_HINTS)
    exact = exact_exclusive(A.T.astype(np.float64), b).T
    assert_close(out, exact, np.float32, np.abs(A.astype(np.float64)).max(axis=0), A.shape[0])
    np.testing.assert_array_equal(out == 0, exact == 0)
    rows = NB.exclusive_lasso(np.ascontiguousarray(A.T), b32, parallel=False).T
    np.testing.assert_array_equal(out == 0, rows == 0)
    assert np.count_nonzero(out) < np.count_nonzero(A)


@given(data=st.data())
def test_search_free_pretest_never_refuses_a_full_support(data):
    # _support_may_be_all only skips the search-free pass where phi(min) <= 0
    # for certain: on rows whose solution keeps every nonzero entry it must
    # say True (otherwise the fast path would silently never run)
    # (and the first pass's statistics are right: sums, the least nonzero
    # magnitude through the bits of either width, the count)
    m = data.draw(st.integers(1, 60))
    width = data.draw(st.sampled_from([32, 64]))
    W = data.draw(arrays(f"float{width}", m, elements=st.floats(-1e3, 1e3, allow_subnormal=False, width=width)))
    assume(np.any(W != 0))
    b = data.draw(st.floats(1e-12, 1.0))
    a = data.draw(st.sampled_from([0.0, 1e-9, 1e-3, 0.1]))
    y = np.abs(W.astype(np.float64))
    S, Q, ymin, nnz = NB._abs_sum_min(W, True)
    assert S == y.sum() or abs(S - y.sum()) <= m * 2.0**-52 * y.sum()
    assert Q == (y * y).sum() or abs(Q - (y * y).sum()) <= (m + 1) * 2.0**-52 * (y * y).sum()
    assert ymin == y[y > 0].min() and nnz == np.count_nonzero(W)
    # the exclusive lasso's variant without the squares: the same other sums, bit for bit
    assert NB._abs_sum_min(W, None) == (S, 0.0, ymin, nnz)
    W = W.astype(np.float64)
    ref = REF.group_exclusive(W[None, :], np.array([a]), np.array([b]))[0] if a else REF.exclusive_lasso(W[None, :], np.array([b]))[0]
    if np.count_nonzero(ref) == nnz:
        assert NB._support_may_be_all(ymin, S, nnz, m, a, b)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("name", ["group_lasso", "growl"])
def test_fused_check_raises_before_writing_in_place(name, order):
    # the fused NaN/Inf check of the row-norm kernels comes from the norms,
    # before the output pass: in place, a rejected input is left as it was
    W = np.array(np.arange(24.0).reshape(4, 6), order=order)
    W[2, 3] = np.nan
    before = W.copy()
    with pytest.raises(ValueError):
        getattr(NB, name)(W, np.linspace(1.0, 0.0, 4), check_finite=True, parallel=False, out=W)
    np.testing.assert_array_equal(W, before)


# ------------------------------------------------------------------ a convolution's channel rows
# W.reshape(O, C, K) of a C-contiguous convolution weight: row c = W[:, c, :]
# (no 2-D view gives these rows).  The *_channels kernels read them in memory
# order, in place, with the row kernels' arithmetic in their order.


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_channel_row_kernels_are_the_row_kernels_bit_for_bit(dtype, data):
    O, C, K = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 11))
    W3 = data.draw(arrays(dtype, (O, C, K), elements=signed(dtype)))
    rows = np.ascontiguousarray(np.moveaxis(W3, 1, 0).reshape(C, -1))  # row c = W3[:, c, :] in order

    def as_rows(X3):
        return np.moveaxis(X3, 1, 0).reshape(C, -1)

    a = thresholds(data.draw, dtype, C)
    w = np.sort(thresholds(data.draw, dtype, C, allow_inf=False))[::-1].copy()
    for name, args in (("group_lasso", (a,)), ("growl", (w,))):
        want = getattr(NB, name)(rows, *args, parallel=False)
        got = getattr(NB, name + "_channels")(W3, *args)
        np.testing.assert_array_equal(as_rows(got), want, err_msg=name)
        X3 = W3.copy()
        assert getattr(NB, name + "_channels")(X3, *args, out=X3) is X3  # in place
        np.testing.assert_array_equal(X3, got, err_msg=name)


def test_growl_routes_agree_on_an_unchecked_nan_row():
    """check_finite=False with a NaN row: GrOWL's result is unspecified
    across backends, but Numba's routes (rows, rows that are columns, a
    convolution's channel rows, small and large G) still give the row
    kernel's result (the channel rows bit for bit, as promised; the columns
    up to their sums' order): the column and channel routes' rescaling
    factors (_rescale_factors) take 0 where the scaled norm is not > 0, as
    the row route does (a factor 1 there left the NaN row as it was)."""
    rng = np.random.default_rng(11)
    for G in (6, NB._OWL_SMALL + 3):
        W = rng.standard_normal((G, 5))
        W[2, 1] = np.nan
        w = np.linspace(2.0, 0.0, G)
        with np.errstate(all="ignore"):
            want = NB.growl(W, w, parallel=False)
            cols = NB.growl(np.asfortranarray(W), w, parallel=False)
            W3 = np.ascontiguousarray(W.T).reshape(5, G, 1)  # channel row c = W3[:, c, 0] = W[c]
            chan = NB.growl_channels(W3, w)[:, :, 0].T
        assert np.isnan(want[2, 1]) and np.all(want[2, [0, 2, 3, 4]] == 0.0)
        np.testing.assert_array_equal(cols[2], want[2], err_msg=f"columns, G={G}")
        np.testing.assert_allclose(cols, want, rtol=1e-14, atol=0, err_msg=f"columns, G={G}")  # (sums reordered)
        np.testing.assert_array_equal(chan, want, err_msg=f"channels, G={G}")


@pytest.mark.parametrize("name", ["group_lasso", "growl"])
def test_channel_row_kernels_check_before_writing_in_place(name):
    W3 = np.arange(60.0).reshape(3, 4, 5)
    W3[1, 2, 3] = np.inf
    before = W3.copy()
    with pytest.raises(ValueError):
        getattr(NB, name + "_channels")(W3, np.linspace(1.0, 0.0, 4), check_finite=True, out=W3)
    np.testing.assert_array_equal(W3, before)


@pytest.mark.parametrize("name", ["exclusive_lasso", "group_exclusive"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("n_bad", [1, 9])
def test_exclusive_fused_check_on_every_route(name, order, n_bad):
    """The exclusive operators' fused check (from the row sums of their first
    pass) on rows (C) and on rows that are columns (F: the column passes, a
    few bad columns to the row kernel, many to the whole-matrix fallback):
    NonFiniteInput; in place, raised before anything is written; with
    check_finite=False the bad rows come back as they are."""
    from proxlib.backends import NonFiniteInput

    rng = np.random.default_rng(5)
    W = np.asarray(rng.standard_normal((24, 40)), order=order)
    bad_rows = rng.choice(24, n_bad, replace=False)
    W[bad_rows, rng.integers(0, 40, n_bad)] = np.nan
    W[bad_rows[0], 0] = np.inf
    args = (np.full(24, 0.05), np.full(24, 0.02)) if name == "group_exclusive" else (np.full(24, 0.02),)
    kernel = getattr(NB, name)
    with pytest.raises(NonFiniteInput):
        kernel(W, *args, check_finite=True)
    X = W.copy(order="K")
    with pytest.raises(NonFiniteInput):
        kernel(X, *args, check_finite=True, out=X)
    np.testing.assert_array_equal(X, W)  # nothing written
    Y = kernel(W, *args)  # unchecked: the bad rows pass through, the others are solved
    np.testing.assert_array_equal(Y[bad_rows], W[bad_rows])
    good = np.setdiff1d(np.arange(24), bad_rows)
    # (more than a quarter of the columns to the row kernel: the whole matrix as rows)
    route = "C" if order == "F" and 4 * n_bad > 24 else order
    np.testing.assert_array_equal(Y[good], kernel(np.asarray(W[good], order=route), *(t[good] for t in args)))


@pytest.mark.parametrize("name", ["exclusive_lasso", "group_exclusive"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_exclusive_fused_check_in_place_sees_one_bad_entry_last_in_memory(name, order, bad):
    """In place, the check before writing (_check_first, _finite_2d) reads
    every entry: a lone Inf (whose bits are inf's, not above them as a
    NaN's) or NaN as the last entry in memory order (the last row of the
    2-D array it reads, on either route) raises before anything is written."""
    from proxlib.backends import NonFiniteInput

    W = np.asarray(np.random.default_rng(6).standard_normal((8, 12)), order=order)
    W[-1, -1] = bad
    args = (np.full(8, 0.05), np.full(8, 0.02)) if name == "group_exclusive" else (np.full(8, 0.02),)
    X = W.copy(order="K")
    with pytest.raises(NonFiniteInput):
        getattr(NB, name)(X, *args, check_finite=True, parallel=False, out=X)
    np.testing.assert_array_equal(X, W)  # nothing written


@pytest.mark.parametrize("name", ["exclusive_lasso", "group_exclusive"])
def test_exclusive_row_kernels_tell_an_inf_from_an_overflowing_sum(name):
    """Row kernels (not in place: no check before writing): a row holding
    an Inf and no NaN, and a finite row whose sum overflows, both have an
    infinite first-pass sum, so a pass decides (_row_finite): the Inf row
    raises NonFiniteInput under check_finite and is returned as it is
    without; the finite row is solved (x ~ 1e308 / (1 + 2 b 1e308) each)."""
    from proxlib.backends import NonFiniteInput

    W = np.array([[np.inf, 1.0, 2.0], [1e308, 1e308, 3.0]])
    args = (np.full(2, 0.05), np.full(2, 0.1)) if name == "group_exclusive" else (np.full(2, 0.1),)
    kernel = getattr(NB, name)
    with pytest.raises(NonFiniteInput):
        kernel(W, *args, check_finite=True, parallel=False)
    X = kernel(W, *args, parallel=False)
    np.testing.assert_array_equal(X[0], W[0])
    assert np.all(np.isfinite(X[1])) and X[1, 0] == X[1, 1] > 1e307 and X[1, 2] == 0.0
    np.testing.assert_array_equal(kernel(W[1:], *(t[1:] for t in args), check_finite=True, parallel=False), X[1:])


_positive = st.floats(min_value=2.0**-1074, max_value=2.0**1000, allow_nan=False, allow_infinity=False)


@given(
    st.lists(st.tuples(_positive, _positive, _positive, st.integers(1, 5000), _positive, _positive, st.floats(0.0, 1.0)),
             min_size=1, max_size=40),
    st.data(),
)
def test_group_exclusive_shrinks_of_many_columns_are_the_scalar_shrinks_bit_for_bit(cols, data):
    """_group_exclusive_shrinks (every column's Newton steps taken a round at
    a time) gives each column the bits of _group_exclusive_shrink on it,
    over the whole float range (the slope overflows, brackets that cannot
    shrink, roots near 0 found by geometric middles), D2 zero or not, and
    for the columns it is given only (the others keep their entries)."""
    a, b, r, k, F, D2, zero_d2 = (np.array(c) for c in zip(*cols))
    D2 = np.where(zero_d2 < 0.2, 0.0, D2)
    G = len(cols)
    chosen = np.array(sorted(data.draw(st.sets(st.integers(0, G - 1)), label="columns")), dtype=np.int64)
    c = np.full(G, -1.0)
    NB._group_exclusive_shrinks(a, b, r, k.astype(np.int64), F, D2, chosen, c)
    for g in range(G):
        want = NB._group_exclusive_shrink(a[g], b[g], r[g], int(k[g]), F[g], D2[g]) if g in chosen else -1.0
        assert np.float64(c[g]).view(np.int64) == np.float64(want).view(np.int64), (g, c[g], want)


def _exact_phi_positive(y, t_exact, a, b):
    """Whether phi(t) = t - b F(t) (1 - a/sqrt(Q(t)))_+ > 0 exactly (F, Q
    over the y > t, in rationals; the square root compared squared)."""
    t = Fraction(t_exact)
    d = [Fraction(v) - t for v in y if Fraction(v) > t]
    F = sum(d, Fraction(0))
    Q = sum((x * x for x in d), Fraction(0))
    a, b = Fraction(a), Fraction(b)
    if a > 0 and Q <= a * a:
        return t > 0
    bF = b * F
    if a == 0 or bF <= t:
        return t - bF > 0
    return (bF - t) ** 2 * Q < (bF * a) ** 2  # b F (1 - a/sqrt(Q)) < t


@given(
    st.lists(st.floats(min_value=2.0**-60, max_value=2.0**60), min_size=1, max_size=30),
    st.integers(0, 40), st.floats(0.0, 1.0), st.floats(2.0**-20, 2.0**20),
    st.sampled_from([0.0, 2.0**-52, -(2.0**-52), 2.0**-45, -(2.0**-45), 2.0**-40, -(2.0**-40), 1e-9, -1e-9, 0.5]),
    st.sampled_from(["entry", "below entry", "between", "zero"]),
)
def test_gx_root_below_is_a_certificate(y, pick, a_frac, b_any, tilt, where):
    """_gx_root_below (the group+exclusive search's early end) says yes
    only where phi(mu) > 0 holds exactly, mu = min{y > t}, from the pass's
    sums at t (_gx_pass; its minimum is _min_above's); rows
    with ties, and b chosen so that phi(mu) lies within a relative tilt of
    0 (both signs), where the bound's margins decide."""
    y = np.array(y)
    ys = np.unique(y)
    j = pick % len(ys)
    t = {"entry": ys[j], "below entry": ys[j] * (1 - 2.0**-40), "between": (ys[j] + ys[j + 1]) / 2 if j + 1 < len(ys) else ys[j] / 2,
         "zero": 0.0}[where]
    F, Q, k, mu = NB._gx_pass(y, y.shape[0], 1.0, 1.0, t)
    assert k == np.count_nonzero(y > t)
    assert mu == NB._min_above(y, y.shape[0], 1.0, 1.0, t)
    if not mu < np.inf:
        return
    # a as a fraction of ||y - mu|| over the candidates, b putting phi(mu) near 0
    dm = np.maximum(y[y > t] - mu, 0.0)
    Fm, Qm = float(dm.sum()), float(np.sqrt((dm * dm).sum()))
    a = a_frac * Qm
    shrink = 1.0 - a / Qm if Qm > 0 else 0.0
    b = mu / (Fm * shrink) * (1.0 + tilt) if Fm * shrink > 0 else b_any
    if not (np.isfinite(b) and b > 0):
        b = b_any
    for a_ in (0.0, a):
        if NB._gx_root_below(mu, t, F, Q, k, a_, b, y.shape[0]):
            assert _exact_phi_positive(y, mu, a_, b), (mu, t, a_, b)


def _eight_lane_sumsq(x) -> float:
    """_sumsq's order, in Python floats (IEEE double, no fused multiply-add):
    lane l sums x[l]^2, x[l + 8]^2, ... below the last multiple of 8, lane 0
    then takes the rest, and the lanes combine as ((0 + 1) + (2 + 3)) +
    ((4 + 5) + (6 + 7))."""
    v = [float(a) for a in x]
    m8 = len(v) - len(v) % 8
    s = [0.0] * 8
    for j in range(m8):
        s[j % 8] += v[j] * v[j]
    for j in range(m8, len(v)):
        s[0] += v[j] * v[j]
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def _rows_for_sumsq(dt, moderate):
    elements = st.floats(-4, 4, width=np.finfo(dt).bits) if moderate else st.floats(width=np.finfo(dt).bits)
    return arrays(dt, st.integers(0, 70), elements=elements)


@pytest.mark.parametrize("moderate", [True, False], ids=["moderate", "whole-range"])
@given(data=st.data())
def test_sumsq_vector_lanes_keep_the_scalar_order(moderate, data):
    """_sumsq of a contiguous row runs in LLVM vector code
    (_lane_sums_of_squares) and of a strided or unaligned one in the scalar
    loop: both
    are the eight-lane sum bit for bit (the order _mid_sumsq reproduces for
    a convolution's channels), over the whole float range, NaN and inf
    included, every length around the multiples of 8.  (Moderate values
    too: where one huge square dominates, a changed order rarely shows.)"""
    x = data.draw(st.sampled_from(DTYPES).flatmap(lambda dt: _rows_for_sumsq(dt, moderate)))
    want = _eight_lane_sumsq(x)
    strided = np.empty(2 * x.shape[0], dtype=x.dtype)[::2]
    strided[...] = x
    unaligned = np.frombuffer(b"\0" + x.tobytes(), dtype=x.dtype, count=x.shape[0], offset=1)  # (the scalar loop too)
    for row in (np.ascontiguousarray(x), strided, unaligned):
        got = NB._sumsq(row)
        assert (math.isnan(got) and math.isnan(want)) or got == want, (row.flags.c_contiguous, got, want)


@given(data=st.data())
def test_transpose8_copies_each_block_transposed(data):
    """_transpose8 (the column tiles' 8 x 8 blocks: LLVM vector shuffles on
    C-contiguous aligned arrays, the scalar loops on others) writes
    dst[di + c, dj + r] = src[si + r, sj + c], r, c < 8, bit for bit (NaN
    payloads, signed zeros, subnormals), at any offsets, and nothing else
    of dst."""
    import numba

    dt = data.draw(st.sampled_from(DTYPES), label="dtype")
    rows, cols = data.draw(st.integers(8, 14), label="rows"), data.draw(st.integers(8, 14), label="cols")
    bits = np.dtype(f"u{np.dtype(dt).itemsize}")
    src = data.draw(arrays(bits, (rows, cols)), label="src bits").view(dt)  # (every bit pattern)
    si, sj = data.draw(st.integers(0, rows - 8), label="si"), data.draw(st.integers(0, cols - 8), label="sj")
    di, dj = data.draw(st.integers(0, cols - 8), label="di"), data.draw(st.integers(0, rows - 8), label="dj")
    kernel = numba.njit(lambda s, si, sj, d, di, dj: NB._transpose8(s, si, sj, d, di, dj))
    want = np.full((cols, rows), 7, dtype=dt)
    want[di:di + 8, dj:dj + 8] = src[si:si + 8, sj:sj + 8].T
    strided = np.empty((rows, 2 * cols), dtype=dt)[:, ::2]  # (the scalar loops)
    strided[...] = src
    for s in (src, strided):
        got = np.full((cols, rows), 7, dtype=dt)
        kernel(s, si, sj, got, di, dj)
        np.testing.assert_array_equal(got.view(bits), want.view(bits))
    assert NB._blocks_apply(numba.typeof(src), numba.typeof(want))
    assert not NB._blocks_apply(numba.typeof(strided), numba.typeof(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mid_sumsq_is_the_eight_lane_sum_of_each_channel_bit_for_bit(dtype):
    """_mid_sumsq (a convolution's channel rows A3[:, c, :], in memory order)
    feeds each row's entries past its last multiple of 8 into lane 0, as
    _sumsq does: moderate values (where the order of the sums shows in the
    last bits) and row lengths O K around the multiples of 8."""
    rng = np.random.default_rng(3)
    for O, K in ((3, 3), (5, 3), (7, 9), (2, 13), (11, 5)):
        A3 = rng.uniform(-4.0, 4.0, (O, 6, K)).astype(dtype)
        q = np.empty(6)
        NB._mid_sumsq(A3, q)
        for c in range(6):
            assert q[c] == _eight_lane_sumsq(A3[:, c, :].ravel()), (O, K, c, q[c])


def _pass1_outputs(fn, A, T, with_q):
    G = A.shape[1]
    S, Q = np.empty(G), np.empty(G)
    mb, xb = np.zeros(G, np.int32), np.zeros(G, np.int32)
    nz = np.zeros(G, np.int64)
    fn(A, S, Q if with_q else None, mb, xb, nz, T)
    return (S, Q, mb, xb, nz) if with_q else (S, mb, xb, nz)


def _f32_neighbours(f):
    f = np.float32(f)
    return [f, np.nextafter(f, np.float32(0)), np.nextafter(f, np.float32(np.inf))]


@pytest.mark.parametrize("with_q", [False, True])
def test_col_pass1_on_float32_bits_matches_the_float64_comparisons(with_q):
    """_col_pass1 on float32 compares bits against the largest float32 <= T_g
    (_col_pass1_bits); the float64 pass compares |a| <= T_g.  Thresholds
    that are float32 numbers, float64 numbers just below and above them,
    below the least subnormal, 0, negative, NaN, inf and beyond the float32
    range, against columns holding the float32 neighbours of each threshold,
    zeros of both signs, NaN and inf: the same sums, counts, minima and
    maxima, bit for bit."""
    rng = np.random.default_rng(7)
    ts = []
    for f in (1e-3, 1.5, 2.0**-126, 2.0**-149, 3.0e38, 7.0):
        f64 = float(np.float32(f))
        ts += [f64, math.nextafter(f64, 0.0), math.nextafter(f64, math.inf)]
    ts += [0.0, -1.0, math.nan, math.inf, 1e300, 1e-46, 2.0**-150]
    cols = []
    for t in ts:
        base = [0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, -2.0**-149]
        if math.isfinite(t) and 0 < abs(t) < 3.4e38:
            base += [float(v) for v in _f32_neighbours(t)] + [-float(v) for v in _f32_neighbours(t)]
        cols.append(base)
    P = 4 * (max(len(c) for c in cols) // 4) + 7  # (not a multiple of 4: the tail rows too)
    assert P % 4 == 3
    A = np.zeros((P, len(ts)), dtype=np.float32)
    for g, c in enumerate(cols):
        A[: len(c), g] = rng.permutation(np.array(c, dtype=np.float32))
        A[-3:, g] = A[: 3, g]  # (the tail rows: values of the column too)
    T = np.array(ts)
    got = _pass1_outputs(NB._col_pass1, A, T, with_q)
    want = _pass1_outputs(NB._col_pass1_floats, A, T, with_q)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    random = (rng.standard_normal((37, 50)) * 10.0 ** rng.uniform(-30, 30, 50)).astype(np.float32)
    for T in (None, np.abs(random[0]).astype(np.float64) * 1.0000001, np.abs(random[1]).astype(np.float64)):
        for x, y in zip(_pass1_outputs(NB._col_pass1, random, T, with_q), _pass1_outputs(NB._col_pass1_floats, random, T, with_q)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("negative_e", [False, True])
@pytest.mark.parametrize("with_fac", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_col_support_out_is_its_formula_bit_for_bit(dtype, negative_e, with_fac, in_place):
    """out_ig = sign(A_ig) ((|A_ig| - Y_g) + e_g)_+ fac_g on |A_ig| >= Y_g, else
    sign(A_ig) 0, whichever loop runs: the lean ones (every e_g >= 0: no
    test of u > 0) and the general one (some e_g < 0: entries at Y_g then
    have u < 0 and must come out as signed zeros, not as -|u|)."""
    rng = np.random.default_rng(3)
    P, G = 11, 9
    A = (rng.standard_normal((P, G)) * 10.0 ** rng.uniform(-3, 3, G)).astype(dtype)
    A[2] = -0.0
    A[5, :] = 0.0
    Y = np.abs(A[rng.integers(0, P, G), np.arange(G)]).astype(np.float64)  # an entry of each column at Y_g
    Y[0] = np.inf  # (a column written elsewhere: all signed zeros here)
    e = np.abs(rng.standard_normal(G)) * Y * 1e-3
    e[0] = 0.0
    if negative_e:
        e[1::2] = -Y[1::2] * 1e-6
    fac = rng.uniform(0.5, 1.0, G) if with_fac else None
    mag = np.abs(A.astype(np.float64))
    u = (mag - Y) + e
    keep = (mag >= Y) & (u > 0)
    want = (np.copysign(np.where(keep, u, 0.0) * (1.0 if fac is None else fac), A.astype(np.float64))).astype(dtype)
    out = A.copy() if in_place else np.full_like(A, np.nan)
    src = out if in_place else A
    NB._col_support_out(src, Y, e, fac, out)
    np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("e_sign", [1.0, -1.0])
@pytest.mark.parametrize("in_place", [False, True])
def test_row_support_out_is_its_formula_bit_for_bit(dtype, e_sign, in_place):
    """The row kernels' output, o_j = sign(x_j) ((|x_j| - Yk) + e)_+ fac on
    |x_j| >= Yk, else sign(x_j) 0, through the lean loop (e >= 0) and the
    general one (e < 0: the entries at Yk are signed zeros)."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(23) * 3.0).astype(dtype)
    x[[3, 4]] = [0.0, -0.0]
    Yk = float(abs(x[7]))
    e, fac = e_sign * Yk * 1e-6, 0.75
    mag = np.abs(x.astype(np.float64))
    u = (mag - Yk) + e
    want = np.copysign(np.where((mag >= Yk) & (u > 0), u, 0.0) * fac, x.astype(np.float64)).astype(dtype)
    o = x.copy() if in_place else np.full_like(x, np.nan)
    NB._support_out(o if in_place else x, 1.0, 1.0, Yk, e, fac, o)
    np.testing.assert_array_equal(o.view(np.uint8), want.view(np.uint8))


# ------------------------------------------------------------------ row extrema by their bits


def _with_specials(dtype, finite):
    """Signed floats of the whole range; with ``finite`` False also +-inf and NaN."""
    el = signed(dtype)
    return el if finite else st.one_of(el, st.sampled_from([np.inf, -np.inf, np.nan]))


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_row_extrema_by_bits_are_numpys(dtype, data):
    """_absmax and _gl_metric_mu (integer extrema of the values' bits) give
    NumPy's float extrema on rows without NaN, over the whole range, -0 and
    empty rows included (max|x| = 0 there; (max, min) = (-inf, inf); a
    zero extremum as +0): _gl_metric_mu's of the quotients Mu = a / Dn it
    forms (a > 0 of the whole range, Dn = |x|: zeros give inf, quotients
    overflow and underflow), NumPy's bit for bit.  The metric rows' first pass, _metric_row_read,
    copies w and d to float64, says whether both are finite (NaN and +-inf
    of either sign in either), and where they are gives NumPy's max |w|,
    max d and min d; _scale_metric_row scales by the powers of two the
    kernel takes from them and gives max |Dn V| of the scaled rows."""
    m = data.draw(st.integers(0, 40))
    x = data.draw(arrays(dtype, m, elements=_with_specials(dtype, True)))
    x64 = x.astype(np.float64)
    absmax = NB._absmax(x)
    assert absmax == (np.abs(x64).max() if m else 0.0)
    a_s = data.draw(st.floats(min_value=5e-324, max_value=1.7e308), label="a_s")
    Dn, Mu = np.abs(x64), np.full(m, 7.0)
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        want_mu = a_s / Dn
    hi, lo = NB._gl_metric_mu(Dn, a_s, Mu)
    np.testing.assert_array_equal(Mu.view(np.uint64), want_mu.view(np.uint64))
    want = (want_mu.max(), want_mu.min()) if m else (-np.inf, np.inf)
    for got, w in zip((hi, lo), want):
        assert got == w and not (got == 0 and math.copysign(1.0, got) < 0)
    finite = data.draw(st.booleans())
    w = data.draw(arrays(dtype, m, elements=_with_specials(dtype, finite)))
    d = data.draw(arrays(dtype, m, elements=_with_specials(dtype, finite)))
    X, Dn = np.full(m, 7.0), np.full(m, 7.0)
    ok, wmax, dmax, dmin = NB._metric_row_read(w, d, X, Dn)
    np.testing.assert_array_equal(X.view(np.uint64), w.astype(np.float64).view(np.uint64))
    np.testing.assert_array_equal(Dn.view(np.uint64), d.astype(np.float64).view(np.uint64))
    assert ok == bool(np.isfinite(w).all() and np.isfinite(d).all())
    if not ok:
        return
    assert (wmax, dmax, dmin) == ((np.abs(X).max(), Dn.max(), Dn.min()) if m else (0.0, -np.inf, np.inf))
    sv, sd = NB._pow2_scale(wmax), NB._pow2_scale(dmax)  # (as the kernel scales: no overflow)
    V = np.full(m, 7.0)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # (0 inf: see below)
        want_V, want_D = np.abs(X) / sv, Dn / sd
        pmax = NB._scale_metric_row(X, Dn, sv, sd, V)
        np.testing.assert_array_equal(V, want_V)
        np.testing.assert_array_equal(Dn, want_D)
        # (a metric with negative entries, which no caller passes, may overflow
        # when scaled: then the product 0 inf is NaN, and so is the maximum)
        np.testing.assert_equal(pmax, np.abs(want_V * want_D).max() if m else 0.0)


def test_row_extrema_by_bits_take_a_zero_as_plus_zero():
    """-0 and +0 are one value: _gl_metric_mu returns +0 where the extremum
    of its quotients a / Dn is a zero, whichever signs they hold (a float
    min or max would return whichever zero it met first): quotients that
    underflow, -0 from an unchecked metric's negative entry."""
    a, big = 1e-300, 1e300  # (a / +-big: +-0)
    for row, want in (([-big, 1.0], (1e-300, 0.0)), ([big, -big, a / 2], (2.0, 0.0)), ([-a, -big], (0.0, -1.0)),
                      ([-big], (0.0, 0.0)), ([-big, big], (0.0, 0.0))):
        got = NB._gl_metric_mu(np.array(row), a, np.empty(len(row)))
        assert got == want, (row, got)
        assert [math.copysign(1.0, g) for g in got] == [math.copysign(1.0, w) for w in want], (row, got)
    assert math.copysign(1.0, NB._absmax(np.array([-0.0, -0.0]))) == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, -np.nan])
@pytest.mark.parametrize("in_d", [False, True])
def test_metric_row_read_finds_each_non_finite_entry(dtype, bad, in_d):
    """One NaN or infinity of either sign, in w or in d, at any place of a
    row of the whole range's extremes, makes the row not finite."""
    big = float(np.finfo(dtype).max)
    for m in (1, 5, 33):
        for place in range(m):
            w = np.array([big, -big, 0.0, -0.0, 1.0] * 7, dtype=dtype)[:m]
            d = w[::-1].copy()
            (d if in_d else w)[place] = bad
            X, Dn = np.empty(m), np.empty(m)
            assert not NB._metric_row_read(w, d, X, Dn)[0]
            (d if in_d else w)[place] = -big if bad < 0 else big
            assert NB._metric_row_read(w, d, X, Dn)[0]


def test_expansion_never_writes_past_its_buffer():
    """_exp_add on NaN and Inf terms (unchecked input): TwoSum's error terms
    are then NaN, never zero, and no compression shortens the expansion; it
    must still stay within _EXP_LEN - 8 terms (it once grew past its buffer
    and corrupted the heap: ``prox_owl`` of Inf entries with
    ``check_finite=False`` aborted the process).  The buffer here is longer
    than _EXP_LEN, with sentinels past it.  Finite terms keep the exact sum."""
    L = NB._EXP_LEN
    for terms in ([np.inf, -np.inf], [np.nan], [1.0, np.inf, 1e-300, -np.inf, np.nan]):
        e = np.full(L + 64, 7.0)
        ne = 0
        for i in range(3 * L):
            ne = NB._exp_add(e, ne, terms[i % len(terms)] * (1.0 + i))
            assert ne <= L - 8
        np.testing.assert_array_equal(e[L - 7:], 7.0)
        assert np.isnan(NB._exp_approx(e, ne))
    e = np.zeros(L)
    ne = 0
    xs = [1e300, 1.0, -1e300, 2.0**-1074, 3.0, 1e-20] * 40
    for x in xs:
        ne = NB._exp_add(e, ne, x)
    assert Fraction(float(sum(Fraction(t) for t in e[:ne]))) == Fraction(float(sum(Fraction(x) for x in xs)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_owl_of_non_finite_entries_unchecked_returns(dtype):
    """``check_finite=False`` on NaN or Inf entries: the result is unspecified
    (documented), but the call returns an array of the input's shape and
    dtype, on the one-call path (n <= 2048) and the long one, serial and
    parallel.  In a child process: the bug this guards against aborted the
    interpreter."""
    code = textwrap.dedent(
        f"""
        import numpy as np, proxlib
        from proxlib.backends import numba_cpu as NB
        for n in (100, 5000, 300000):
            for fill in ("inf", "nan", "mixed"):
                v = np.random.default_rng(n).standard_normal(n).astype("{dtype}")
                if fill == "inf":
                    v[:] = np.inf
                    v[1::2] *= -1
                elif fill == "nan":
                    v[::3] = np.nan
                else:
                    v[::7] = np.inf
                w = np.linspace(1.0, 0.0, n)
                x = proxlib.prox_owl(v, w, check_finite=False)
                assert x.shape == v.shape and x.dtype == v.dtype
                if n > NB._OWL_SMALL:
                    for par in (False, True):
                        assert NB.owl(v, w, parallel=par).shape == v.shape
        print("returned")
        """
    )
    out = _procs.python(code, timeout=600, env={**os.environ, "PYTHONPATH": str(pathlib.Path(proxlib.__file__).parents[1])})
    assert out.returncode == 0 and out.stdout.strip() == "returned", out.stderr[-2000:]
