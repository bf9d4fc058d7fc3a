"""Every public operator over the whole finite float range, on every CPU backend.

Inputs, weights, ``step`` and ``lam`` anywhere from the smallest subnormal to
the largest finite value: products such as ``step * lam * c`` may leave the
float range although every factor is finite, row norms may exceed the largest
float (four entries of 1e308), and thresholds may be far beyond the data.
Each case runs on the NumPy reference, on numba (when it imports) and on torch
CPU tensors (``torch.as_tensor``), and is compared with

* an exact answer (rationals or 60-digit decimals, from ``_cvx``) for the
  cases listed in the issue that found them; and
* the same problem at a moderate scale (Hypothesis): by power-of-two scaling,
  ``prox(2^k v; t 2^(k d)) = 2^k prox(v; t)`` where d is the threshold's degree
  of homogeneity (1 for the norms, 0 for the scale-free parameters of the
  exclusive lasso and weighted l2^2, 2 - p for lp), with the threshold's power
  of two split at random between step, lam and the weights so that their
  products overflow or underflow on the way.

Tolerances: a few units in the last place relative to the data (the norms,
OWL), to the result plus the row's threshold (the exclusive lasso and the
thesis step, |x| = |w| - tau: no formula keeps an entry just above tau
accurate relative to itself) or to the result itself (weighted l2^2, lp),
plus the dtype's subnormal spacing times 2^j where data are scaled by 2^j
beyond the range.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import _cvx as R
import proxlib

BACKENDS = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")),
    pytest.param("torch", marks=pytest.mark.skipif("torch" not in proxlib.available_backends(), reason="no torch")),
]
FMAX = float(np.finfo(np.float64).max)
SUB = {np.float64: 2.0**-1074, np.float32: 2.0**-149}
EPS = {np.float64: 2.0**-52, np.float32: 2.0**-23}


def on(backend, fn, *arrays, **kw):
    """``fn(*arrays, **kw)`` on ``backend`` (torch: the arrays as CPU tensors),
    as a NumPy array; checks the result's type, dtype and shape."""
    if backend == "torch":
        import torch

        args = [torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in arrays]
        kw = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        out = fn(*args, **kw)
        assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
        out = out.numpy()
    else:
        with proxlib.use_backend(backend):
            out = fn(*arrays, **kw)
        assert isinstance(out, np.ndarray)
    assert out.dtype == arrays[0].dtype and out.shape == arrays[0].shape
    return out


def close(got, ref, *, scale, dtype, rtol_ulps=16, atol=0.0):
    """|got - ref| <= rtol_ulps eps scale + atol + 2 subnormal spacings (elementwise scale allowed)."""
    dtype = np.dtype(dtype).type
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert np.all(np.isfinite(got)), got
    tol = rtol_ulps * EPS[dtype] * np.asarray(scale, dtype=np.float64) + atol + 2 * SUB[dtype]
    bad = np.abs(got - ref) > tol
    assert not np.any(bad), f"got {got[bad]}, expected {ref[bad]} (tol {np.broadcast_to(tol, got.shape)[bad]})"


# ------------------------------------------------------------ exact references


def _prec():
    return localcontext(prec=80)


def exact_group_lasso(W, A):
    """Rows of W times (1 - A_r / ||w_r||)_+ in 80-digit decimals (A_r exact Fractions)."""
    out = np.zeros_like(W, dtype=np.float64)
    with _prec():
        for r, row in enumerate(np.atleast_2d(W)):
            w = [Decimal(float(x)) for x in row]
            nrm = sum(x * x for x in w).sqrt()
            a = Decimal(A[r].numerator) / Decimal(A[r].denominator)
            if nrm > a:
                f = 1 - a / nrm
                out[r] = [float(x * f) for x in w]
    return out


def exact_growl(W, T):
    """GrOWL prox with exact thresholds T (Fractions), in 80-digit decimals."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    with _prec():
        rows = [[Decimal(float(x)) for x in row] for row in W]
        norms = [sum(x * x for x in row).sqrt() for row in rows]
        order = sorted(range(len(rows)), key=lambda r: -norms[r])
        fit = R.pava_nonincreasing_clipped([norms[r] - Decimal(T[k].numerator) / Decimal(T[k].denominator) for k, r in enumerate(order)])
        out = np.zeros_like(W)
        for k, r in enumerate(order):
            if norms[r] > 0:
                out[r] = [float(x * fit[k] / norms[r]) for x in rows[r]]
    return out


def frac(*factors):
    out = Fraction(1)
    for f in factors:
        out *= Fraction(float(f))
    return out


def dec(*factors):
    out = Decimal(1)
    with _prec():
        for f in factors:
            out *= Decimal(float(f))
    return out


# ------------------------------------------------- the cases that found the bugs


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_lasso_row_norm_beyond_float64_is_not_rejected(backend):
    # ||w|| = 2e308: "W contains NaN or Inf" before; exact: W (1 - 1 / 2e308)
    W = np.full((1, 4), 1e308)
    np.testing.assert_array_equal(on(backend, proxlib.prox_group_lasso, W, 1.0), W)
    W = np.array([[1e308, -1e308, 1e308, 1e308], [3.0, 4.0, 0.0, 0.0]])
    got = on(backend, proxlib.prox_group_lasso, W, 1e308, step=1.5)  # a = 1.5e308 < ||w_0|| = 2e308
    close(got, exact_group_lasso(W, [frac(1e308, 1.5)] * 2), scale=1e308, dtype=np.float64)
    assert got[0, 0] == pytest.approx(0.25e308, rel=1e-15) and not np.any(got[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_growl_row_norms_beyond_float64(backend):
    W = np.array([[1e308, 1e308, 1e308, 1e308], [1.5e308, -1.5e308, 1.5e308, 1.5e308], [1.0, 2.0, 2.0, 0.0]])
    w = np.array([1e308, 5e307, 0.0])
    got = on(backend, proxlib.prox_growl, W, w, step=2.0)  # thresholds 2e308 and 1e308: beyond float64
    close(got, exact_growl(W, [frac(x, 2.0) for x in w]), scale=3e308, dtype=np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_owl_thresholds_beyond_float64(backend):
    # step * w_1 = 2e308 overflows, but |v| sums to 4.5e308: the exact prox is 0.8333e308 each
    v = np.array([1.5e308, -1.5e308, 1.5e308])
    w = np.array([1e308, 0.0, 0.0])
    got = on(backend, proxlib.prox_owl, v, w, step=2.0)
    close(got, R.exact_owl(v, [frac(x, 2.0) for x in w]), scale=1.5e308, dtype=np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_subnormal_scalar_part_keeps_its_bits_against_large_weights(backend):
    # step * lam = (1 + 2^-20) 2^-1060 is subnormal as a float (14 bits): it is
    # applied to the weights 2^1000 from its mantissa and exponent, so the
    # threshold is (1 + 2^-20) 2^-60, not 2^-60
    W = np.array([[3 * 2.0**-60, 0.0], [1.0, 0.0]])
    c = np.array([2.0**1000, 0.0])
    got = on(backend, proxlib.prox_group_lasso, W, 1 + 2.0**-20, 2.0**-1060, group_weights=c)
    close(got, [[(2 - 2.0**-20) * 2.0**-60, 0.0], [1.0, 0.0]], scale=np.abs(W), dtype=np.float64, rtol_ulps=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lp_with_lam_near_the_largest_float(backend):
    # tau = sqrt(2e308) = 1.4e154: 2 lam overflowed and everything was zeroed
    v = np.array([1e200, -1e160, 1e150, 0.0])
    np.testing.assert_array_equal(on(backend, proxlib.prox_lp, v, 1e308, 0.0), [1e200, -1e160, 0.0, 0.0])
    for p in (0.5, 0.3, 0.9):
        got = on(backend, proxlib.prox_lp, v, 1e308, p)
        close(got, R.exact_lp(v, 1e308, p), scale=np.abs(v), dtype=np.float64, rtol_ulps=8)


def test_finite_data_whose_pairwise_sum_is_nan_give_no_warning():
    # the finite check sums the data: NumPy's pairwise sum of these finite
    # entries meets inf + (-inf) and warned "invalid value encountered in reduce"
    import warnings

    v = np.array([1e308, 1e308, -1e308, -1e308] * 2)
    for dtype in (np.float64, np.float32):
        a = v if dtype == np.float64 else np.array([3e38, 3e38, -3e38, -3e38] * 2, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(proxlib.prox_weighted_l1(a, 0.0), a)
        with pytest.raises(ValueError, match="v contains NaN or Inf"):
            proxlib.prox_weighted_l1(np.append(a, np.inf), 1.0)


def test_lp_threshold_over_the_whole_range():
    assert proxlib.lp_threshold(1e308, 0) == 2 * math.sqrt(0.5e308)  # correctly rounded sqrt(2e308)
    assert proxlib.lp_threshold(FMAX, 0) == 2 * math.sqrt(FMAX / 2)
    assert proxlib.lp_threshold(5e-324, 0) == math.sqrt(1e-323)
    assert proxlib.lp_threshold(FMAX, 1.0) == FMAX and proxlib.lp_threshold(0.0, 0.5) == 0.0
    with _prec():
        for lam in (5e-324, 1e-300, 1e-10, 1.0, 3.7e5, 1e300, FMAX):
            for p in (0.0, 1e-300, 0.25, 0.5, 2 / 3, 0.9, 1 - 2.0**-40):
                P = Decimal(p)
                exact = (2 - P) / (2 * (1 - P)) * ((2 * Decimal(lam) * (1 - P)).ln() / (2 - P)).exp()
                got = proxlib.lp_threshold(lam, p)
                assert math.isfinite(got)
                tol = Decimal(8 * 2.0**-52) * exact + Decimal(2.0**-1074)  # a subnormal tau: its spacing
                assert abs(Decimal(got) - exact) <= tol, (lam, p, got, exact)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "call",
    [
        lambda W, c: proxlib.prox_group_lasso(W, 1e300, 1e300, group_weights=c),
        lambda W, c: proxlib.prox_exclusive_lasso(W, 1e300, 1e300, group_weights=c),
        lambda W, c: proxlib.prox_group_exclusive(W, 1e300, 0.5, 1e300, group_weights=c),
        lambda W, c: proxlib.prox_exclusive_lasso_thesis(W, 1e300, 1e300, group_weights=c),
        lambda W, c: proxlib.prox_group_exclusive_sequential(W, 1e300, 0.5, 1e300, group_weights=c),
        lambda W, c: proxlib.prox_group_exclusive_sequential(
            W, 1e300, 0.5, 1e300, group_weights=c, exclusive_step="exact"
        ),
    ],
    ids=["group", "exclusive", "group_exclusive", "thesis", "sequential", "sequential_exact"],
)
def test_a_row_with_group_weight_zero_is_unchanged_when_step_times_lam_overflows(backend, call):
    # step * lam = 1e600: 0 * inf made NaN (sequential) or zeroed the row
    W = np.array([[1.0, -2.0, 0.5], [3.0, 4.0, -1.0], [1e300, 1e-300, 0.0]])
    c = np.array([0.0, 1.0, 0.0])
    got = on(backend, call, W, c)
    np.testing.assert_array_equal(got[[0, 2]], W[[0, 2]])
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got[1]) <= 4.0 / 1e300)  # 0 (group) or |w|_(1) / (1 + b) (exclusive)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclusive_lasso_with_a_threshold_beyond_float64(backend):
    # b = 2^1100: only the largest entries of each group survive, as |w|_(1) / (1 + b k)
    W = np.array([[2.0**1000, 2.0**999, 1.0], [-(2.0**1020), 2.0**1020, 3.0], [1e-300, 0.0, 1e-310]])
    got = on(backend, proxlib.prox_exclusive_lasso, W, 2.0**500, step=2.0**600)
    ref = np.array([R.exact_exclusive_row(row, Fraction(2) ** 1100) for row in W])
    close(got, ref, scale=np.abs(ref), dtype=np.float64)
    assert got[0, 0] == pytest.approx(2.0**-100) and got[1, 1] == pytest.approx(2.0**-81)
    # b = 1e308 (finite, 1 + b k overflows for k = 2) and b = 1e-320 (subnormal factors)
    for lam, step, c in [(1e308, 1.0, 1.0), (1e-300, 1e-20, 1e300), (1e-160, 1e-160, 1e-4)]:
        got = on(backend, proxlib.prox_exclusive_lasso, W, lam, step=step, group_weights=np.full(3, c))
        ref = np.array([R.exact_exclusive_row(row, frac(lam, step, c)) for row in W])
        close(got, ref, scale=np.abs(ref), dtype=np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@given(W=R.matrices(3, 8), b=st.one_of(st.sampled_from([0.25, 0.5, 1.0, 4.5]), st.floats(1e-3, 1e3)))
@example(W=np.array([[2.0, 1.5, 0.0, 0.0, 9.96875]]), b=0.25)  # (numba; found by the long profile)
def test_exclusive_is_accurate_relative_to_its_threshold(backend, W, b):
    """|x_i| = (|w_i| - Y_k) + e on the support, e = (Y_k - b F_k)/(1 + b k),
    with Y_k the support's least magnitude and F_k = sum (|w_i| - Y_k) over
    it, a sum of k non-negative terms.  Its rounding, (2k + 4) u F_k at most
    where a backend derives F_k from a sum over a larger set (numba, from
    Newton's last pass), moves e by at most (2k + 4) u b F_k/(1 + b k) <=
    (k + 2) eps tau (eps = 2 u), and forming |x_i| adds about eps |x_i|: so
    |dx_i| <= (k + 2) eps (|x_i| + tau).  Not
    relative to |x_i| alone: an entry just above tau is ill-conditioned
    relative to itself, and the NumPy reference misses that bound too
    (Gaussian rows, m <= 5, b <= 4.5: up to 46 m eps of |x_i|).  At the
    example numba's x_0 was 170 ulps of itself (0.3 ulp of tau) from the
    exact 2^-7/1.5, which the NumPy reference hits exactly."""
    got = on(backend, proxlib.prox_exclusive_lasso, W, b)
    for x, w in zip(got, W):
        exact = R.exact_exclusive_row(w, b)
        tau = R.exact_exclusive_threshold(w, b)
        tau = 0.0 if tau is None else float(tau)
        k = np.count_nonzero(exact)
        tol = (k + 2) * EPS[np.float64] * (np.abs(exact) + tau) + 2 * SUB[np.float64]
        assert np.all(np.abs(x - exact) <= tol), (x, exact, tau)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mu", [0.25, 0.5, 1 - 2.0**-30])
def test_group_exclusive_with_huge_scale_free_parameter(backend, mu):
    # b = step lam mu from 1e100 to beyond float64; the root c ~ 1/b was out of
    # reach of the bisection (results off by a factor 2 for b >= 1e100)
    W = np.array([[1.5e308, 1.5e308, -1.5e308, 1.5e308], [3e300, 1e300, -2e300, 0.0], [1.5, 1.5, 1.5, 1.5]])
    for lam, step in [(1e308, 2.0), (1e300, 1e10), (1e150, 1e150), (1e300, 1e300)]:
        got = on(backend, proxlib.prox_group_exclusive, W, lam, mu, step=step)
        ref = np.array([R.exact_group_exclusive_row(row, dec(lam), mu, dec(step)) for row in W])
        close(got, ref, scale=np.abs(ref), dtype=np.float64, rtol_ulps=64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unchecked_non_finite_rows_keep_their_scale_when_the_scale_free_parameter_saturates(backend, dtype):
    # b = 1e300 > 2^900 is solved by saturation (the result times 2^-E): a row
    # holding NaN or Inf (check_finite=False) came back as 2^-97 times itself
    # ([6.3e-30, nan, 3.2e-30]) instead of as it is
    W = np.array([[1.0, np.nan, 0.5], [3.0, -np.inf, 1.0], [2.0, 1.0, -1.0]], dtype=dtype)
    for call in [
        lambda W: proxlib.prox_exclusive_lasso(W, 1e300, check_finite=False),
        lambda W: proxlib.prox_group_exclusive(W, 1e300, 1 - 2.0**-30, check_finite=False),
    ]:
        got = on(backend, call, W)
        np.testing.assert_array_equal(got[:2], W[:2])
        assert np.all(np.abs(got[2]) <= 2.0 / 1e300)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weighted_l2sq_with_a_threshold_beyond_the_dtype(backend, dtype):
    big = float(np.finfo(dtype).max) / 2
    v = np.array([big, -1.0, 1e-30, 0.0], dtype=dtype)
    for w, step in [(1e300, 1e300), (1e20, 1e20), (FMAX, 1.0), (1e-300, 1e-300)]:
        got = on(backend, proxlib.prox_weighted_l2sq, v, w, step=step)
        ref = [float(Fraction(float(x)) / (1 + 2 * frac(w, step))) for x in v]
        close(got, ref, scale=np.abs(ref), dtype=dtype, rtol_ulps=4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float32_thresholds_beyond_float32_are_solved_in_float64(backend, dtype):
    # step * lam = 1e40 does not fit float32: |w|_(1) / (1 + b) = 0.03 is the exact answer
    W = np.array([[3e38, 1e38, 0.0], [1.0, 2.0, 3.0]], dtype=dtype)
    got = on(backend, proxlib.prox_exclusive_lasso, W, 1e20, step=1e20)
    ref = np.array([R.exact_exclusive_row(row, Fraction(10) ** 40) for row in W.astype(np.float64)])
    close(got, ref, scale=np.abs(ref), dtype=dtype)
    got = on(backend, proxlib.prox_group_lasso, W, 1e20, step=1e18)  # a = 1e38 < ||w_0||
    close(got, exact_group_lasso(W.astype(np.float64), [frac(1e20, 1e18)] * 2), scale=3e38, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lp_with_lam_times_step_beyond_float64(backend):
    tiny, huge = 2.0**-1050, 2.0**1000
    v = np.array([2.0**-1074, -(2.0**-1040), 2.0**-1049, 1e-300, 1e308, 0.0])
    for lam, step in [(tiny, tiny), (huge, huge), (1e-200, 1e-200), (FMAX, FMAX)]:
        for p in (0.0, 0.5, 0.3, 1.0):
            got = on(backend, proxlib.prox_lp, v, lam, p, step=step)
            ref = R.exact_lp(v, dec(lam, step), p)
            close(got, ref, scale=np.abs(ref), dtype=np.float64, rtol_ulps=8)


def test_group_exclusive_sequential_gives_no_nan_at_the_largest_floats():
    W = np.full((2, 4), 1e308)
    for variant in ("thesis", "exact"):
        X = proxlib.prox_group_exclusive_sequential(W, 1.0, 0.5, exclusive_step=variant)
        assert np.all(np.isfinite(X))
    # the thesis step: threshold 0.5 ||w||_1 = 2e308 > |w| (no overflow to NaN/inf on the way)
    np.testing.assert_array_equal(proxlib.prox_exclusive_lasso_thesis(W, 0.5), 0 * W)
    X = proxlib.prox_exclusive_lasso_thesis(W, 1e-10)
    np.testing.assert_allclose(X, W * (1 - 4e-10), rtol=4e-16)


# ------------------------------------------- scale equivariance at every scale

_OPS = {
    # name: (degree in the data, call(v, step, lam, c) with thresholds step * lam * c,
    #        number of factors (3: step, lam, group weights c; 2: step, lam * c or lam))
    "group_lasso": (1, lambda W, s, lam, c: proxlib.prox_group_lasso(W, lam, s, group_weights=c), 3),
    "group_exclusive_mu0": (1, lambda W, s, lam, c: proxlib.prox_group_exclusive(W, lam, 0.0, s, group_weights=c), 3),
    "weighted_l1": (1, lambda v, s, lam, c: proxlib.prox_weighted_l1(v, lam * c, s), 2),
    "owl": (1, lambda v, s, lam, c: proxlib.prox_owl(v, lam * np.sort(c)[::-1], s), 2),
    "growl": (1, lambda W, s, lam, c: proxlib.prox_growl(W, lam * np.sort(c)[::-1], s), 2),
    "exclusive": (0, lambda W, s, lam, c: proxlib.prox_exclusive_lasso(W, lam, s, group_weights=c), 3),
    "group_exclusive_mu1": (0, lambda W, s, lam, c: proxlib.prox_group_exclusive(W, lam, 1.0, s, group_weights=c), 3),
    "thesis": (0, lambda W, s, lam, c: proxlib.prox_exclusive_lasso_thesis(W, lam, s, group_weights=c), 3),
    "weighted_l2sq": (0, lambda v, s, lam, c: proxlib.prox_weighted_l2sq(v, lam * c, s), 2),
    "lp0": ("p0", lambda v, s, lam, c: proxlib.prox_lp(v, lam, 0.0, s), 2),
    "lp_half": ("p0.5", lambda v, s, lam, c: proxlib.prox_lp(v, lam, 0.5, s), 2),
    "lp1": ("p1", lambda v, s, lam, c: proxlib.prox_lp(v, lam, 1.0, s), 2),
}
# the scale-free operators that subtract a threshold from |w| on the support:
# their results are accurate relative to the result plus the threshold, not
# to the result alone (see test_exclusive_is_accurate_relative_to_its_threshold)
_THRESHOLDED = {"exclusive", "group_exclusive_mu1", "thesis"}
# every public prox_* is covered here or by the cases above
_COVERED = {"prox_group_lasso", "prox_group_exclusive", "prox_weighted_l1", "prox_owl", "prox_growl",
            "prox_exclusive_lasso", "prox_exclusive_lasso_thesis", "prox_weighted_l2sq", "prox_lp",
            "prox_group_exclusive_sequential"}  # fmt: skip


def _row_threshold(W, X):
    """Each row's threshold tau, read off a thresholded result X = sign(W) (|W| - tau)_+:
    max_i (|w_i| - |x_i|) (tau on the support, |w_i| <= tau off it)."""
    shrink = np.abs(np.asarray(W, dtype=np.float64)) - np.abs(np.asarray(X, dtype=np.float64))
    return shrink.max(axis=-1, keepdims=True, initial=0.0)


def test_every_public_prox_is_covered():
    assert {n for n in proxlib.__all__ if n.startswith("prox_")} == _COVERED


def _threshold_exponent(degree, k):
    """The power of two by which the thresholds scale when the data scale by 2^k."""
    if degree == 1:
        return k
    if degree == 0:
        return 0
    p = float(degree[1:])
    return int(round(k * (2 - p)))  # k is even for p = 1/2: exact


@st.composite
def scaled_problems(draw, op, dtype):
    degree, _, n_factors = _OPS[op]
    flat = op in ("weighted_l1", "weighted_l2sq", "owl") or op.startswith("lp")
    G = 1 if flat else draw(st.integers(1, 4))
    m = draw(st.integers(1, 5))
    W = draw(R.matrices(G, m, min_rows=G, min_cols=m))
    if flat:
        W = W.reshape(-1)
    n_c = W.size if op in ("owl", "weighted_l1", "weighted_l2sq") else G
    c = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]), min_size=n_c, max_size=n_c)))
    step0 = draw(st.sampled_from([0.5, 1.0, 1.5]))
    lam0 = draw(st.sampled_from([0.25, 1.0, 3.0]))
    if dtype == np.float64:
        k = draw(st.sampled_from([-1060, -1030, -1000, -600, 0, 600, 1000, 1018]))
        if degree == "p0":
            k = max(k, -1070)  # lam = 2^(2k) stays within a product of two floats
    else:
        k = draw(st.sampled_from([-140, -120, -60, 0, 60, 120, 124]))
    if degree == "p0.5":
        k -= k % 2
    K = _threshold_exponent(degree, k)
    # split 2^K over the factors (each kept a normal float64), their partial
    # products free to overflow or underflow
    lo, hi = -1070, 1020  # the factors (O(1) numbers times 2^k_i) stay exact, subnormal at worst
    k1 = draw(st.integers(max(lo, K - (n_factors - 1) * hi), min(hi, K - (n_factors - 1) * lo)))
    rest = K - k1
    k2 = max(lo, min(hi, rest)) if n_factors == 3 else rest
    k3 = rest - k2
    return W, c, step0, lam0, k, (k1, k2, k3)


@pytest.mark.long_examples(100)  # x 72 parametrisations
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op", sorted(_OPS))
@given(data=st.data())
def test_scale_equivariance_over_the_whole_range(op, dtype, backend, data):
    W, c, step0, lam0, k, (k1, k2, k3) = data.draw(scaled_problems(op, dtype))
    degree, call, _ = _OPS[op]
    Wk = np.ldexp(W, k).astype(dtype)  # subnormal data are rounded here, once
    W0 = np.ldexp(Wk.astype(np.float64), -k)  # the same data at scale 1, exactly (float64)
    with proxlib.use_backend("numpy"):
        ref = call(W0, step0, lam0, c)
    got = on(backend, call, Wk, math.ldexp(step0, k1), math.ldexp(lam0, k2), np.ldexp(c, k3))
    expected = np.ldexp(ref, k)
    data_k = np.abs(Wk.astype(np.float64))
    m = W.shape[-1] if W.ndim else 1
    if op in ("owl", "growl"):  # one coupled problem: relative to the data, times its size
        scale, ulps = data_k.max(initial=0.0), 16 * W.size
    elif degree == 1:  # rows (entries) independent: relative to the row's data
        scale, ulps = (data_k.max(axis=-1, keepdims=True) if W.ndim > 1 else data_k), 16 * m
    elif op in _THRESHOLDED:  # |x| = |w| - tau: relative to the result plus the row's threshold
        scale, ulps = np.abs(expected) + np.ldexp(_row_threshold(W0, ref), k), 16 * m
    else:  # weighted l2^2 and lp: relative to the result itself
        scale, ulps = np.abs(expected), 16 * m
    j = math.ceil(math.log2(max(W.size, 1))) + 2  # bits the beyond-range path may shift out
    close(got, expected, scale=scale, dtype=dtype, rtol_ulps=ulps, atol=2.0**j * SUB[dtype])


# ------------------------------------------------------------------ re-weighting


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_reweighting_over_the_whole_range(lib):
    """omega and the weights are formed in float64 and rounded once; a value
    whose exact result exceeds the dtype's range raises (naming it)."""

    def arr(x, dtype):
        a = np.array(x, dtype=dtype)
        if lib == "torch":
            torch = pytest.importorskip("torch")
            return torch.as_tensor(a)
        return a

    def np_(a):
        return a.numpy() if hasattr(a, "numpy") else a

    theta = arr([1e308, -3.0, 0.0, 5e-324], np.float64)
    r = proxlib.reweight_l2(theta, 1.0)  # theta^2 overflowed before; hypot does not
    np.testing.assert_array_equal(np_(r.omega), [1e308, math.hypot(3.0, 1.0), 1.0, 1.0])
    np.testing.assert_allclose(np_(r.weights), [0.0, 0.1, 1.0, 1.0], rtol=4 * 2**-52)  # 1e-616 rounds to 0
    r = proxlib.reweight_l1(theta, 1e-300)
    np.testing.assert_array_equal(np_(r.omega), [1e308, 3.0, 1e-300, 1e-300])
    np.testing.assert_allclose(np_(r.weights), [1e-308, 1 / 3, 1e300, 1e300], rtol=2**-52)
    r = proxlib.reweight_focuss(arr([1e154, -1e-200, 0.0], np.float64), 0.0, 1e-300)
    np.testing.assert_allclose(np_(r.omega), [1e308, 1e-300, 1e-300], rtol=2**-51)
    # float32 theta with a tau below float32's range: omega = |theta| + tau rounds to theta
    r = proxlib.reweight_l1(arr([3e38, 1.0], np.float32), 1e-40)
    assert np_(r.omega).dtype == np.float32
    np.testing.assert_allclose(np_(r.weights), [1 / 3e38, 1.0], rtol=2**-23)
    for call, what in [
        (lambda: proxlib.reweight_l1(arr([0.0], np.float32), 1e-46), "1/(|theta| + tau)"),
        (lambda: proxlib.reweight_l1(arr([1.7e308], np.float64), 1.7e308), "omega"),
        (lambda: proxlib.reweight_l2(arr([0.0], np.float64), 1e-320), "1/(theta^2 + tau)"),
        (lambda: proxlib.reweight_l2(arr([0.0], np.float32), 1e-50), "1/(theta^2 + tau)"),
        (lambda: proxlib.reweight_focuss(arr([1e308], np.float64), 0.0, 1.0), "omega"),
        (lambda: proxlib.reweight_focuss(arr([3e38], np.float32), 1.0, 1e38), "omega"),
    ]:
        with pytest.raises(ValueError, match=r"not representable in float(32|64)") as info:
            call()
        assert what in str(info.value)


@pytest.mark.parametrize("group_weights", [None, "sqrt", np.array([0.5, 3.0, 1.0, 2.0])])
@pytest.mark.parametrize("groups", [None, np.array([0, 0, 1, 2, 2, 2, 3, 3])])
def test_row_layouts_know_their_largest_group_weight_where_the_setting_says_it(group_weights, groups):
    """A row penalty's layout carries c_top, the largest group weight, where
    the setting alone says it (None: 1; "sqrt" on rows of one size), so the
    range logic neither reduces c nor reads it from a device; then it is
    exactly max(c), and the thresholds' terms carry it; otherwise None (c is
    read).  The prox is the same bits either way, also where the step
    takes the thresholds beyond the kernels' range (the log of the largest
    threshold decides it)."""
    from proxlib import _range, _registry

    x = np.random.default_rng(2).standard_normal((4, 8)) if groups is None else np.random.default_rng(2).standard_normal(8)
    for pen in (proxlib.GroupLasso(0.3, groups=groups, group_weights=group_weights),
                proxlib.ExclusiveLasso(0.3, groups=groups, group_weights=group_weights),
                proxlib.GroupExclusive(0.3, 0.5, groups=groups, group_weights=group_weights)):
        layout = _registry.layout_of(pen, x)
        ragged = layout.rows.ragged
        known = group_weights is None or (isinstance(group_weights, str) and not ragged)
        assert (layout.c_top is not None) == known
        if known:
            assert layout.c_top == float(np.max(layout.c))
        assert all(t.top == layout.c_top for t in _range.terms(pen, layout))
        for step in (1.0, 1e300):
            got = pen.prox(x, step)
            unknown = _registry.Layout(data=layout.data, restore=layout.restore, shape=layout.shape, rows=layout.rows, c=layout.c)
            kernel = getattr(proxlib._dispatch.backend_for(layout.data), pen.kernel)  # (the backend pen.prox takes)
            want = layout.restore(_range.solve(pen, unknown, step, kernel, _plain_run(pen)))
            np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(want).view(np.uint8))


def _plain_run(pen):
    def run(kernel, data, thr):
        return kernel(data, *thr, *pen.fixed())
    return run
