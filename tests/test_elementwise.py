"""Weighted l1, weighted squared l2, lp (0 <= p <= 1) and the re-weighting rules.

lp is non-convex for p < 1, so CVXPY cannot solve it; its ground truth is a
60-digit global minimiser per entry (``_cvx.exact_lp``) and a dense-grid global
search that needs no derivation at all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import proxlib

pytestmark = pytest.mark.usefixtures("numpy_backend")

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps
TINY32 = 4 * float(np.finfo(np.float32).smallest_subnormal)  # absolute spacing below 1.2e-38


@st.composite
def weighted_problems(draw, max_size=12):
    """v of shape (n,) or (r, c), weights a scalar, v's shape or a broadcastable row."""
    v = draw(st.one_of(R.vectors(1, max_size), R.matrices(3, 4)))
    kind = draw(st.sampled_from(["scalar", "full", "row"]))
    el = st.one_of(st.floats(0, 3, allow_subnormal=False), st.sampled_from([0.0, 1.0]))
    if kind == "scalar":
        w = draw(el)
    elif kind == "full" or v.ndim == 1:
        w = draw(arrays(np.float64, v.shape, elements=el))
    else:
        w = draw(arrays(np.float64, (1, v.shape[1]), elements=el))
    return v, w, draw(R.steps)


# --------------------------------------------------------------------------- weighted l1


@given(weighted_problems())
def test_weighted_l1_against_cvxpy(problem):
    v, w, step = problem
    x = proxlib.prox_weighted_l1(v, w, step)
    x_cvx = R.cvx_weighted_l1(v, w, step).reshape(v.shape)
    wb = np.broadcast_to(w, v.shape)
    f = R.objective(x, v, step, R.weighted_l1_value(x, wb))
    f_cvx = R.objective(x_cvx, v, step, R.weighted_l1_value(x_cvx, wb))
    R.assert_agrees_with_cvxpy(x, x_cvx, f, f_cvx, R.objective_slack(v, step, R.weighted_l1_value(v, wb), v.size))


@given(weighted_problems(max_size=40))
def test_weighted_l1_certificate(problem):
    # r = (v - x)/step in the subdifferential of sum w_i|x_i|:
    # r_i = w_i sign(x_i) where x_i != 0, |r_i| <= w_i where x_i = 0.
    v, w, step = problem
    x = proxlib.prox_weighted_l1(v, w, step)
    wb = np.broadcast_to(w, v.shape)
    r = (v - x) / step
    tol = 4 * EPS64 * (np.abs(v) / step + wb)  # two roundings: |v| - step w and v - x
    on = x != 0
    np.testing.assert_array_less(np.abs(r - wb * np.sign(x))[on], tol[on] + 1e-300)
    assert np.all(np.abs(r[~on]) <= wb[~on] + tol[~on])
    assert np.all(x * v >= 0)


@given(weighted_problems())
def test_weighted_l1_closed_form_and_sign(problem):
    v, w, step = problem
    x = proxlib.prox_weighted_l1(v, w, step)
    # the textbook soft threshold, computed here independently in float64
    ref = np.sign(v) * np.maximum(np.abs(v) - step * np.broadcast_to(w, v.shape), 0)
    np.testing.assert_allclose(x, ref, rtol=2 * EPS64, atol=0)
    np.testing.assert_array_equal(proxlib.prox_weighted_l1(-v, w, step), -x)


# --------------------------------------------------------------------------- weighted l2^2


@given(weighted_problems())
def test_weighted_l2sq_against_cvxpy_and_certificate(problem):
    v, w, step = problem
    x = proxlib.prox_weighted_l2sq(v, w, step)
    wb = np.broadcast_to(w, v.shape)
    # stationarity of 1/2 (x - v)^2 + step w x^2 (no 1/2 on the penalty): v - x = 2 step w x
    np.testing.assert_allclose(v - x, 2 * step * wb * x, rtol=0, atol=4 * EPS64 * np.abs(v).max())
    x_cvx = R.cvx_weighted_l2sq(v, w, step).reshape(v.shape)
    f = R.objective(x, v, step, R.weighted_l2sq_value(x, wb))
    f_cvx = R.objective(x_cvx, v, step, R.weighted_l2sq_value(x_cvx, wb))
    R.assert_agrees_with_cvxpy(x, x_cvx, f, f_cvx, R.objective_slack(v, step, R.weighted_l2sq_value(v, wb), v.size))


def test_weighted_l2sq_hand_case():
    # Omega = w x^2 without a 1/2: x = v / (1 + 2 step w); v = 3, w = 1, step = 1 -> 1
    np.testing.assert_array_equal(proxlib.prox_weighted_l2sq(np.array([3.0, -6.0]), 1.0), [1.0, -2.0])
    # weights broadcast over the rows of a matrix: row weights [0, 1] -> [v, v/3]
    v = np.array([[3.0, 3.0], [6.0, 6.0]])
    np.testing.assert_allclose(proxlib.prox_weighted_l2sq(v, np.array([[0.0], [1.0]])), [[3, 3], [2, 2]], rtol=2 * EPS64)


@pytest.mark.parametrize("fn", [proxlib.prox_weighted_l1, proxlib.prox_weighted_l2sq])
@given(weighted_problems())
def test_weighted_float32(fn, problem):
    v, w, step = problem
    v32 = v.astype(np.float32)
    x32 = fn(v32, w, step)  # float64 weights, float32 data
    assert x32.dtype == np.float32 and x32.shape == v.shape
    x64 = fn(v32.astype(np.float64), w, step)
    # thresholds rounded to float32 (w, step, product: 3 eps32 relative), both
    # maps are 1-Lipschitz in the threshold, plus the final rounding
    tol = 4 * EPS32 * (np.abs(v32).max() + step * np.max(w)) + TINY32  # + subnormal spacing
    np.testing.assert_allclose(x32.astype(np.float64), x64, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weighted_huge_step_and_overflowing_thresholds(dtype):
    v = np.array([3.0, -1e10, 0.5, 0.0], dtype=dtype)
    w = np.array([1.0, 2.0, 1.0, 0.5])
    x = proxlib.prox_weighted_l1(v, w, 1e300)  # every threshold exceeds |v|
    assert x.dtype == dtype
    np.testing.assert_array_equal(x, 0.0)
    # l2^2 never reaches 0 exactly: v / (1 + 2 step w), tiny in float64, 0 in float32
    x = proxlib.prox_weighted_l2sq(v, w, 1e300)
    assert x.dtype == dtype
    np.testing.assert_allclose(x, (v.astype(np.float64) / (1 + 2 * (w * 1e300))).astype(dtype), rtol=4 * EPS64, atol=0)
    # a zero weight with a step beyond float32's range: that entry is untouched
    # (0 * step = 0; casting the step to float32 first made it 0 * inf = NaN)
    w0 = np.array([1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(proxlib.prox_weighted_l1(v, w0, 1e300), np.array([0.0, -1e10, 0.0, 0.0], dtype=dtype))
    x = proxlib.prox_weighted_l2sq(v, w0, 1e300)
    assert x[1] == v[1] and np.all(np.isfinite(x))


@pytest.mark.parametrize("fn", [proxlib.prox_weighted_l1, proxlib.prox_weighted_l2sq])
@pytest.mark.parametrize("s", [2.0**-500, 2.0**500, 1e-150, 1e150])
@given(weighted_problems())
def test_weighted_extreme_scales(fn, s, problem):
    v, w, step = problem
    x = fn(v, w, step)
    if fn is proxlib.prox_weighted_l1:  # degree 1: threshold scales with v
        xs = fn(s * v, w, s * step)
    else:  # degree 2: the weights are scale-free
        xs = fn(s * v, w, step)
    # one rounding of s*v (and of s*step) for non-powers of two; where the
    # results fall in the subnormals a rounding's error is absolute, up to
    # half of 2^-1074 (long-profile example: s v = 2.3e-317, off by 2^-1074)
    np.testing.assert_allclose(xs, s * x, rtol=0, atol=4 * EPS64 * s * (np.abs(v).max() + step * np.max(w)) + 4 * 2.0**-1074)


# --------------------------------------------------------------------------- lp


def lp_f(x, v, lam, p):
    """1/2 (x - v)^2 + lam |x|^p elementwise, |0|^0 = 0."""
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    pen = (ax > 0).astype(float) if p == 0 else np.where(ax > 0, ax ** max(p, 1e-300), 0.0)
    return 0.5 * (x - v) ** 2 + lam * pen


@st.composite
def lp_problems(draw, max_size=12):
    v = draw(R.vectors(1, max_size))
    lam = draw(st.one_of(st.floats(0.01, 3, allow_subnormal=False), st.sampled_from([0.0, 0.5, 1.0])))
    return v, lam, draw(R.ps), draw(R.steps)


def lp_reference(v, lam, p):
    return R.exact_lp(v, lam, p)


def lp_rtol(x_ref, v, p):
    """Per-entry relative accuracy of an lp prox value x (x_ref the exact one).

    First-order perturbation of the stationarity condition x + q = |v|,
    q = L p x^(p-1): a relative error d in L (the rounding of a product such as
    step * lam, or a few eps in evaluating q) moves x by
    d * A * x with A = (|v| - x) / (x (1 - r)), r = (1 - p)(|v| - x)/x (< 1 on the
    branch the prox takes; 1 - r >= 1 - p/2).  A grows like 1/(1 - p) near the
    threshold for p near 1.  Allow 8 eps (2 + A).
    """
    x = np.abs(np.asarray(x_ref, dtype=np.float64))
    av = np.abs(np.asarray(v, dtype=np.float64))
    with np.errstate(all="ignore"):
        gap = np.where(x > 0, (av - x) / np.where(x > 0, x, 1.0), 0.0)
        r = (1 - p) * gap
        A = np.where(x > 0, gap / (1 - r), 0.0)
    return 8 * EPS64 * (2 + A)


def assert_lp_close(x, ref, v, p):
    np.testing.assert_array_equal(x == 0, ref == 0)
    err = np.abs(np.asarray(x, dtype=np.float64) - ref)
    bound = lp_rtol(ref, v, p) * np.abs(ref)
    assert np.all(err <= bound), (err / np.where(ref != 0, np.abs(ref), 1.0), lp_rtol(ref, v, p))


@given(lp_problems())
def test_lp_equals_60_digit_global_minimiser(problem):
    v, lam, p, step = problem
    L = step * lam
    if L > 0:
        # at |v| = threshold the two candidates tie and the answer jumps; float
        # rounding of the threshold may legitimately decide either way
        R.not_near(v, proxlib.lp_threshold(L, p), rel=1e-9)
    x = proxlib.prox_lp(v, lam, p, step)
    ref = lp_reference(v, L, p)
    # step*lam is formed in float64 (as proxlib does) and passed to the 60-digit
    # solver; proxlib's Newton iteration stops at the last bit: a few eps of |v|
    # step * lam is formed in float64 here as in proxlib and passed to the 60-digit
    # solver, so only proxlib's own arithmetic differs
    assert_lp_close(x, ref, v, p)


@given(lp_problems(max_size=6))
def test_lp_global_optimality_dense_grid(problem):
    # No derivation: the objective at proxlib's answer is no larger than at 0,
    # at v, and at 20001 grid points of [0, |v|] (where any minimiser lies).
    v, lam, p, step = problem
    L = step * lam
    x = proxlib.prox_lp(v, lam, p, step)
    for xi, vi in zip(x, v):
        grid = np.sign(vi) * np.linspace(0, abs(vi), 20001)
        f_grid = lp_f(grid, vi, L, p).min()
        f_x = lp_f(xi, vi, L, p)
        slack = 8 * EPS64 * (vi * vi + L * max(abs(vi), 1.0))
        assert f_x <= f_grid + slack, (xi, vi, f_x, f_grid)
        assert f_x <= lp_f(0.0, vi, L, p) + slack
        assert xi * vi >= 0 and abs(xi) <= abs(vi)


@given(lp_problems(max_size=30))
def test_lp_stationarity_on_support(problem):
    # for 0 < p < 1 and x != 0: x + L p |x|^(p-1) sign(x) = v, on the convex
    # branch |x| >= beta = (L p (1 - p))^(1/(2 - p)) (a local minimum)
    v, lam, p, step = problem
    assume(0 < p < 1 and lam > 0)
    L = step * lam
    x = proxlib.prox_lp(v, lam, p, step)
    on = x != 0
    ax = np.abs(x[on])
    resid = ax + L * p * ax ** (p - 1) - np.abs(v[on])
    # the residual's terms are of size |v|, each with a few roundings; Newton
    # stops when the iterate stops moving (last bit), where h' = 1 - (beta/x)^(2-p) >= 1 - p/2
    np.testing.assert_allclose(resid, 0, atol=16 * EPS64 * np.abs(v).max())
    beta = (L * p * (1 - p)) ** (1 / (2 - p))
    assert np.all(ax >= beta * (1 - 64 * EPS64 * (1 + abs(math.log(max(L, 1e-300))))))  # beta: a pow with a rounded exponent


@given(lp_problems(max_size=20))
def test_lp_monotone_in_magnitude(problem):
    # the global prox of a separable penalty is monotone: larger |v|, larger |x|
    v, lam, p, step = problem
    x = proxlib.prox_lp(v, lam, p, step)
    order = np.argsort(np.abs(v), kind="stable")
    assert np.all(np.diff(np.abs(x)[order]) >= 0)
    np.testing.assert_array_equal(proxlib.prox_lp(-v, lam, p, step), -x)


@given(lp_problems())
def test_lp_p1_is_soft_and_p0_is_hard_threshold(problem):
    v, lam, _, step = problem
    L = step * lam
    np.testing.assert_array_equal(proxlib.prox_lp(v, lam, 1.0, step), proxlib.prox_weighted_l1(v, lam, step))
    # p = 0: keep v where v^2/2 > L (objective L) beats 0 (objective v^2/2)
    np.testing.assert_array_equal(proxlib.prox_lp(v, lam, 0.0, step), np.where(np.abs(v) > math.sqrt(2 * L), v, 0.0))


def test_lp_hand_cases_and_tie_rule():
    # p = 0, L = 2: threshold sqrt(4) = 2 exactly; |v| = 2 is a tie (2^2/2 = 2 = L):
    # the documented rule returns 0.  2.5 is kept, 1.5 dropped.
    np.testing.assert_array_equal(proxlib.prox_lp(np.array([2.0, -2.5, 1.5]), 2.0, 0.0), [0.0, -2.5, 0.0])
    # p = 1 tie: |v| = L gives 0 (soft threshold)
    np.testing.assert_array_equal(proxlib.prox_lp(np.array([1.0, -3.0]), 1.0, 1.0), [0.0, -2.0])
    # An exact tie for 0 < p < 1, where tau = (2-p)/(2(1-p)) (2 lam (1-p))^(1/(2-p)):
    # p = 1/2, lam = 8: tau = 1.5 * 8^(2/3) = 6, x* = 2(1-p)/(2-p) * 6 = 4 and
    # f(4) = 2 + 8*2 = 18 = f(0) = 36/2.  The rule returns 0 at the tie (an earlier
    # kernel compared with a rounded tau = 5.999999999999999 and returned 4), and
    # x* one float above it.
    np.testing.assert_array_equal(proxlib.prox_lp(np.array([6.0, -6.0]), 8.0, 0.5), [0.0, 0.0])
    above = proxlib.prox_lp(np.array([np.nextafter(6.0, 7.0)]), 8.0, 0.5)[0]
    assert abs(above - 4.0) <= 1e-7  # x* moves like sqrt(|v| - tau) off the tie
    # p = 2/3, lam = 24, |v| = 16 would tie for the real 2/3, but the float p is
    # slightly below 2/3 and then x* = 8 wins by 1e-15 in the objective: the
    # 60-digit answer for the float inputs is non-zero, and so is proxlib's.
    ref = R.exact_lp_scalar(16.0, 24.0, 2.0 / 3.0)
    assert ref != 0
    assert proxlib.prox_lp(np.array([16.0]), 24.0, 2.0 / 3.0)[0] == pytest.approx(ref, rel=16 * EPS64)
    # lam = 0: the identity, a new array
    v = np.array([1.0, -2.0])
    x = proxlib.prox_lp(v, 0.0, 0.5)
    np.testing.assert_array_equal(x, v)
    assert not np.shares_memory(x, v)
    # p = 1/2, L = 1, v = 3: x = u^2 with u^3 - 3u + 1/2 = 0 ... checked instead by
    # stationarity: x + 0.5 / sqrt(x) = 3
    x = proxlib.prox_lp(np.array([3.0]), 1.0, 0.5)[0]
    assert abs(x + 0.5 / math.sqrt(x) - 3.0) <= 4 * EPS64 * 3


@pytest.mark.parametrize("p, lam", [(0.5, 2.0), (2.0 / 3.0, 1.0), (0.3, 2.0), (0.9, 1.0)])
def test_lp_at_the_computed_threshold_keeps_a_nonzero_prox(p, lam):
    """The computed tau (proxlib._range.lp_constants, a few ulps off) only
    pre-selects the entries, with a margin below it; the objectives decide.
    For these (p, lam) it lies above the exact threshold, and |v| = tau has
    a nonzero 60-digit prox: pre-selecting |v| > tau without the margin
    returned 0 there."""
    from proxlib._range import lp_constants

    tau = lp_constants(lam, p)[0]
    ref = R.exact_lp_scalar(tau, lam, p)
    assert ref != 0
    x = proxlib.prox_lp(np.array([tau, -tau]), lam, p)
    np.testing.assert_allclose(x, [ref, -ref], rtol=16 * EPS64)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 2.0 / 3.0, 0.9, 1.0])
@given(lam=st.floats(0.01, 10))
def test_lp_threshold_is_where_the_global_minimiser_jumps(p, lam):
    # just above the threshold the 60-digit global minimiser is non-zero, just
    # below it is zero: the formula is the exact switching point.
    tau = proxlib.lp_threshold(lam, p)
    assert R.exact_lp_scalar(tau * (1 + 1e-9), lam, p) != 0
    assert R.exact_lp_scalar(tau * (1 - 1e-9), lam, p) == 0
    # and proxlib switches at the same place
    assert proxlib.prox_lp(np.array([tau * (1 + 1e-9)]), lam, p)[0] != 0
    assert proxlib.prox_lp(np.array([tau * (1 - 1e-9)]), lam, p)[0] == 0


@pytest.mark.parametrize("k", [-500, 500, -250, 250])
@given(lp_problems())
def test_lp_scaling(k, problem):
    # x = s y: 1/2(x - s v)^2 + lam' |x|^p = s^2 (1/2 (y - v)^2 + lam' s^(p-2) |y|^p),
    # so lam' = lam s^(2 - p) gives prox(s v) = s prox(v).  Powers of two make s v
    # exact; lam s^(2-p) carries one rounding, which can flip entries sitting on
    # the threshold, so those are excluded.
    v, lam, p, step = problem
    s = 2.0**k
    L = step * lam
    assume(L > 0)
    R.not_near(v, proxlib.lp_threshold(L, p), rel=1e-9)
    x = proxlib.prox_lp(v, L, p)
    xs = proxlib.prox_lp(s * v, L * s ** (2 - p), p)
    # Both calls carry their own error (lp_rtol each), and the scaled problem is
    # not exactly the scaled one: s ** (2 - p) is a power with a rounded exponent,
    # relative error up to eps |ln s|, which moves x by A times that.
    np.testing.assert_array_equal(xs == 0, x == 0)
    A = (lp_rtol(x, v, p) / (8 * EPS64)) - 2
    bound = (2 * lp_rtol(x, v, p) + A * EPS64 * (1 + abs(k) * math.log(2))) * np.abs(s * x)
    assert np.all(np.abs(xs - s * x) <= bound)


@pytest.mark.parametrize("s", [1e-150, 1e150])
@given(lp_problems(max_size=6))
def test_lp_extreme_scales_against_reference(s, problem):
    v, lam, p, step = problem
    L = step * lam * s ** (2 - p)
    vs = v * s
    if L > 0:
        R.not_near(vs, proxlib.lp_threshold(L, p), rel=1e-9)
    x = proxlib.prox_lp(vs, L, p)
    ref = R.exact_lp(vs, L, p)
    assert_lp_close(x, ref, vs, p)


@given(lp_problems(max_size=16))
def test_lp_float32(problem):
    v, lam, p, step = problem
    v32 = v.astype(np.float32)
    L = step * lam
    if L > 0:
        R.not_near(v32, proxlib.lp_threshold(L, p), rel=1e-9)
    x32 = proxlib.prox_lp(v32, lam, p, step)
    assert x32.dtype == np.float32
    x64 = proxlib.prox_lp(v32.astype(np.float64), lam, p, step)
    # lam stays a float64 scalar and v32 is exact in float64: the float32 result
    # is the float64 one rounded once
    np.testing.assert_allclose(x32.astype(np.float64), x64, rtol=EPS32, atol=TINY32)  # + subnormal spacing


@given(lp_problems())
def test_lp_huge_step_gives_zero(problem):
    v, lam, p, _ = problem
    assume(lam > 0)
    np.testing.assert_array_equal(proxlib.prox_lp(v, lam, p, 1e300), 0.0)


# --------------------------------------------------------------------------- shape, layout, copies


@pytest.mark.parametrize(
    "call",
    [
        lambda v: proxlib.prox_weighted_l1(v, 0.3, 0.7),
        lambda v: proxlib.prox_weighted_l1(v, np.linspace(0, 1, v.shape[-1]), 0.7),
        lambda v: proxlib.prox_weighted_l2sq(v, 0.3, 0.7),
        lambda v: proxlib.prox_lp(v, 0.3, 0.5, 0.7),
        lambda v: proxlib.prox_lp(v, 0.3, 0.3, 0.7),
        lambda v: proxlib.prox_lp(v, 0.3, 0.0, 0.7),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_copies_and_types(call, dtype):
    rng = np.random.default_rng(5)
    A = rng.normal(size=(3, 4, 5)).astype(dtype)
    A0 = A.copy()
    ref = call(np.ascontiguousarray(A))
    assert type(ref) is np.ndarray and ref.dtype == dtype and ref.shape == A.shape
    assert not np.shares_memory(ref, A)
    big = np.zeros((3, 4, 10), dtype=dtype)
    big[..., ::2] = A
    for name, B in {
        "fortran": np.asfortranarray(A),
        "strided": big[..., ::2],
        "transposed": np.ascontiguousarray(A.transpose(2, 1, 0)).transpose(2, 1, 0),
        "negative-stride": np.flip(np.flip(A, 2).copy(), 2),
    }.items():
        x = call(B)
        np.testing.assert_array_equal(x, ref, err_msg=name)
        assert x.shape == A.shape and x.dtype == dtype and not np.shares_memory(x, B)
    np.testing.assert_array_equal(A, A0)


# --------------------------------------------------------------------------- re-weighting


thetas = arrays(np.float64, st.integers(1, 10), elements=R.elements())
taus = st.floats(1e-6, 2.0, allow_subnormal=False)


@given(thetas, taus)
@example(theta=np.array([0.28515625]), tau=0.2845063950259376)  # long run: (1/hypot)^2 was 4.9e-16 off
def test_reweight_formulas(theta, tau):
    r1 = proxlib.reweight_l1(theta, tau)
    assert r1.subproblem == "l1"
    np.testing.assert_allclose(r1.omega, np.abs(theta) + tau, rtol=EPS64)
    np.testing.assert_allclose(r1.weights, 1 / (np.abs(theta) + tau), rtol=2 * EPS64)
    r2 = proxlib.reweight_l2(theta, tau)
    assert r2.subproblem == "l2sq"
    np.testing.assert_allclose(r2.omega, np.sqrt(theta**2 + tau), rtol=2 * EPS64)
    np.testing.assert_allclose(r2.weights, 1 / (theta**2 + tau), rtol=2 * EPS64)
    for p in (0.0, 0.5, 1.0, 2.0):
        rf = proxlib.reweight_focuss(theta, p, tau)
        assert rf.subproblem == "l2sq"
        np.testing.assert_allclose(rf.omega, np.abs(theta) ** (2 - p) + tau, rtol=4 * EPS64)
        np.testing.assert_allclose(rf.weights, 1 / (np.abs(theta) ** (2 - p) + tau), rtol=4 * EPS64)
    # p = 2: constant weights 1/(1 + tau), a ridge step
    np.testing.assert_allclose(proxlib.reweight_focuss(theta, 2.0, tau).weights, 1 / (1 + tau), rtol=2 * EPS64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reweight_dtype_and_input(dtype):
    theta = np.array([0.0, -1.5, 2.0], dtype=dtype)
    theta0 = theta.copy()
    for r in (proxlib.reweight_l1(theta, 0.1), proxlib.reweight_l2(theta, 0.1), proxlib.reweight_focuss(theta, 0.5, 0.1)):
        assert r.omega.dtype == dtype and r.weights.dtype == dtype and r.omega.shape == theta.shape
    np.testing.assert_array_equal(theta, theta0)


@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(-5, 5)), st.floats(0.05, 2), st.floats(0.01, 1))
def test_reweighted_l1_and_l2_steps_are_majorize_minimize(v, lam, tau):
    # F1(t) = 1/2||t - v||^2 + lam sum log(|t| + tau).  log is concave, so
    # log(|t| + tau) <= log(|t0| + tau) + (|t| - |t0|)/(|t0| + tau): the weighted-l1
    # prox with lam * weights minimises a majoriser that touches F1 at t0, hence
    # F1 never increases along the iteration.  Same for F2 with log(t^2 + tau) and
    # the weighted-l2^2 prox.  Wrong weights (e.g. omega instead of 1/omega)
    # break the monotone decrease.
    def F1(t):
        return 0.5 * np.sum((t - v) ** 2) + lam * np.sum(np.log(np.abs(t) + tau))

    def F2(t):
        return 0.5 * np.sum((t - v) ** 2) + lam * np.sum(np.log(t * t + tau))

    for F, rule, prox in ((F1, proxlib.reweight_l1, proxlib.prox_weighted_l1), (F2, proxlib.reweight_l2, proxlib.prox_weighted_l2sq)):
        t = v.copy()
        f_prev = F(t)
        for _ in range(15):
            rw = rule(t, tau)
            t = prox(v, lam * rw.weights)
            f = F(t)
            assert f <= f_prev + 16 * v.size * EPS64 * (1 + abs(f_prev)), (f, f_prev)  # rounding of the sums
            f_prev = f


# ------------------------------------------------------- the one-call lane
#
# prox_weighted_l1 and prox_weighted_l2sq with a weight per entry (or one
# weight) check their arguments and form their thresholds in the map's one
# compiled pass on Numba (proxlib._registry.in_one_call): the general path's
# result bit for bit, every error left to that path.


def _general(fn, v, w, step, check_finite):
    from proxlib import _registry

    pen = proxlib.WeightedL1 if fn is proxlib.prox_weighted_l1 else proxlib.WeightedL2Sq
    return _registry.apply(pen(w, copy=False), v, step, check_finite=check_finite)


def _outcome(fn):
    try:
        x = fn()
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return type(x), x.dtype, tuple(x.shape), x.numpy().tobytes() if hasattr(x, "numpy") else x.tobytes()  # (bits: signed zeros, NaN)


@st.composite
def lane_problems(draw):
    """Valid and invalid calls near every edge the lane tests."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(st.sampled_from([(), (1,), (7,), (3, 5), (40_000,)]))  # (40,000: the parallel map)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    v = np.array(rng.standard_normal(shape) * 2.0 ** draw(st.integers(-30, 30)), dtype=dtype)
    w = np.array(rng.uniform(0.0, 3.0, shape) * 2.0 ** draw(st.integers(-30, 30)))
    if w.ndim:
        w[rng.random(shape) < 0.2] = 0.0
    flaw = draw(st.sampled_from(["none", "none", "none", "nan_v", "inf_v", "nan_w", "inf_w", "negative_w", "minus_zero_w",
                                 "huge_w", "float32_w", "scalar_w", "int_w", "zero_d_w", "one_w", "row_w", "fortran_v",
                                 "strided_v"]))
    i = tuple(int(rng.integers(0, n)) for n in shape)
    if flaw == "nan_v":
        v[i] = np.nan
    elif flaw == "inf_v":
        v[i] = -np.inf
    elif flaw in ("nan_w", "inf_w", "negative_w", "minus_zero_w", "huge_w"):
        w = np.array(w)
        w[i] = {"nan_w": np.nan, "inf_w": np.inf, "negative_w": -1e-300, "minus_zero_w": -0.0, "huge_w": 2.0**1010}[flaw]
    elif flaw == "float32_w":
        w = w.astype(np.float32)
    elif flaw == "scalar_w":
        w = float(draw(st.sampled_from([0.0, 0.3, -0.0, 1e-300, 2.0**1000, -1.0, math.nan, math.inf])))
    elif flaw == "int_w":
        w = draw(st.sampled_from([0, 2, 3 * 2**1030]))
    elif flaw == "zero_d_w":
        w = np.array(draw(st.sampled_from([0.25, -0.5])))
    elif flaw == "one_w":
        w = np.array([0.25])
    elif flaw == "row_w" and v.ndim == 2:
        w = w[:1]
    elif flaw == "fortran_v" and v.ndim == 2:
        v = np.asfortranarray(v)
    elif flaw == "strided_v" and v.ndim == 1:
        v = np.repeat(v, 2)[::2]
        w = np.array(w)
    step = draw(st.one_of(
        st.sampled_from([1.0, 0.5, 1, 3, 2.0**-1022, 2.0**-1023, 2.0**1000, 2.0**1001, 1e300, np.float64(0.7), 0.0, -1.0]),
        st.floats(1e-300, 1e300)))
    return v, w, step, draw(st.booleans())


@pytest.mark.parametrize("fn", [proxlib.prox_weighted_l1, proxlib.prox_weighted_l2sq])
@given(problem=lane_problems())
def test_weighted_one_call_lane_equals_the_general_path(fn, problem):
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    v, w, step, check_finite = problem
    with proxlib.use_backend("numba"):
        expected = _outcome(lambda: _general(fn, v, w, step, check_finite))
        assert _outcome(lambda: fn(v, w, step, check_finite=check_finite)) == expected
        try:
            pen = (proxlib.WeightedL1 if fn is proxlib.prox_weighted_l1 else proxlib.WeightedL2Sq)(w)
        except (ValueError, TypeError):
            return
        assert _outcome(lambda: pen.prox(v, step, check_finite=check_finite)) == expected  # (the object's prox: the same lane)


@pytest.mark.parametrize("fn", [proxlib.prox_weighted_l1, proxlib.prox_weighted_l2sq])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flaw", ["negative", "nan", "inf", "huge", "nan_v", "minus_zero"])
@pytest.mark.parametrize("scalar", [False, True])
@pytest.mark.parametrize("n", [4, 40_000])
def test_weighted_one_call_lane_leaves_every_error_to_the_general_path(fn, dtype, flaw, scalar, n):
    """Each flaw the lane's pass checks, in a weight per entry or one weight,
    in the serial map and the parallel one (40,000 entries; the flaw in the
    last): the general path's error (or result: -0 is a valid weight;
    thresholds near the end of the range are its to transform), as from
    that path."""
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    v = np.resize(np.array([3.0, -1.0, 0.5, 2.0], dtype=dtype), n)
    bad = {"negative": -1e-300, "nan": math.nan, "inf": math.inf, "huge": 2.0**1010, "nan_v": 0.5, "minus_zero": -0.0}[flaw]
    w = bad if scalar else np.resize(np.array([0.5, 0.75, 0.25, 0.0]), n)
    if not scalar:
        w[-1] = bad
    if flaw == "nan_v":
        v[-2] = np.nan
    with proxlib.use_backend("numba"):
        expected = _outcome(lambda: _general(fn, v, w, 0.5, True))
        assert _outcome(lambda: fn(v, w, 0.5, check_finite=True)) == expected
    assert (expected[0] is ValueError) == (flaw not in ("huge", "minus_zero"))


@pytest.mark.parametrize("fn", [proxlib.prox_weighted_l1, proxlib.prox_weighted_l2sq])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_one_call_lane_takes_the_common_call(fn, dtype, monkeypatch):
    """The lane answers the common call on Numba: a weight per entry or one
    weight, NumPy arrays and CPU tensors (their views, serial kernels), so the
    test above compares two paths; the general path is not called."""
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    torch = pytest.importorskip("torch")
    from proxlib import _registry
    from proxlib.backends import numba_cpu

    rng = np.random.default_rng(3)
    v = rng.standard_normal((64, 300)).astype(dtype)
    w = rng.uniform(0.0, 1.0, v.shape)
    with proxlib.use_backend("numba"):
        expected = {id(weights): _general(fn, v, weights, 0.5, True).tobytes() for weights in (w, 0.25)}
    with proxlib.use_backend(None):  # (a tensor's own backend: torch's, which runs Numba on the tensor's view)
        viewed = _registry.numba_view(fn.__name__[5:], torch.from_numpy(v)) is not None
        general_tensor = _general(fn, torch.from_numpy(v), w, 0.5, True)
    calls = []
    name = "weighted_l1_checked" if fn is proxlib.prox_weighted_l1 else "weighted_l2sq_checked"
    kernel = getattr(numba_cpu, name)
    monkeypatch.setattr(numba_cpu, name, lambda *a, **k: (calls.append(k.get("parallel", True)), kernel(*a, **k))[1])
    monkeypatch.setattr(_registry, "_apply", lambda *a, **k: pytest.fail("the general path ran"))
    with proxlib.use_backend("numba"):
        for weights in (w, 0.25):
            assert fn(v, weights, 0.5).tobytes() == expected[id(weights)]
    assert calls == [True, True]
    if viewed:
        with proxlib.use_backend(None):
            assert fn(torch.from_numpy(v), w, 0.5).numpy().tobytes() == general_tensor.numpy().tobytes()
            # tensor weights: the torch route before, the same bits
            assert fn(torch.from_numpy(v), torch.from_numpy(w), 0.5).numpy().tobytes() == general_tensor.numpy().tobytes()
        assert calls == [True, True, False, False]  # (a tensor's view: serial, beside torch's threads)


@st.composite
def lp_lane_problems(draw):
    """lp's lane (numba_cpu.lp_checked): lam and p near every edge it tests
    (the closed forms at p = 1/2 and 2/3, p = 0 and 1, lam = 0, thresholds
    near the ends of its range), the serial and the parallel map."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(st.sampled_from([(), (1,), (7,), (3, 5), (40_000,), (0,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = [-1060, -1040, -30, 0, 30, 1000] if dtype == np.float64 else [-150, -140, -30, 0, 30, 100]
    v = np.array(rng.standard_normal(shape) * 2.0 ** draw(st.sampled_from(scales)), dtype=dtype)
    flaw = draw(st.sampled_from(["none", "none", "none", "nan_v", "inf_v", "fortran_v"]))
    if v.size and flaw in ("nan_v", "inf_v"):
        v.reshape(-1)[int(rng.integers(0, v.size))] = np.nan if flaw == "nan_v" else -np.inf
    elif flaw == "fortran_v" and v.ndim == 2:
        v = np.asfortranarray(v)
    lam = draw(st.one_of(st.floats(0.0, 3.0), st.sampled_from([
        0.0, -0.0, 0.3, 1, 0, np.float32(0.3), -1e-300, -1.0, math.nan, math.inf, 2.0**-990, 2.0**-970, 2.0**970,
        2.0**990, 1e-300, 1e-200, 2.0**-1050, np.array(0.25), True, "0.5"])))
    p = draw(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 2.0 / 3.0, 1.0, 1, 0, 0.25, -0.1, 1.5, math.nan,
                                                            np.float32(0.5)])))
    step = draw(st.one_of(
        st.sampled_from([1.0, 0.5, 1, 3, 2.0**-1022, 2.0**-1023, 1e-200, 2.0**-1000, 2.0**1000, 2.0**1001,
                         np.float64(0.7), 0.0, -1.0]),
        st.floats(1e-300, 1e300)))
    return v, lam, p, step, draw(st.booleans())


@given(problem=lp_lane_problems())
@example(problem=(np.array([2.0**-1074, -(2.0**-1040), 2.0**-1049, 1e-300, 1e308, 0.0]), 1e-200, 0.5, 1e-200, True))
@example(problem=(np.array([2.0**-1074, 2.0**-1049, 1e-300]), 1e-300, 0.3, 1e-300, False))
def test_lp_one_call_lane_equals_the_general_path(problem):
    """prox_lp and Lp(lam, p).prox: the lane's result is the general path's
    bit for bit, and every error (type and message) is that path's."""
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    from proxlib import _registry

    v, lam, p, step, check_finite = problem
    with proxlib.use_backend("numba"):
        expected = _outcome(lambda: _registry.apply(proxlib.Lp(lam, p), v, step, check_finite=check_finite))
        assert _outcome(lambda: proxlib.prox_lp(v, lam, p, step, check_finite=check_finite)) == expected
        try:
            pen = proxlib.Lp(lam, p)
        except (ValueError, TypeError):
            return
        assert _outcome(lambda: pen.prox(v, step, check_finite=check_finite)) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.5, 2.0 / 3.0, 0.3, 1.0])
def test_lp_one_call_lane_takes_the_common_call(dtype, p, monkeypatch):
    """The lane answers lp's common call on Numba (serial and parallel
    maps), so the test above compares two paths; the general path is not
    called."""
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    from proxlib import _registry

    for shape in ((10,), (64, 300)):
        v = np.random.default_rng(7).standard_normal(shape).astype(dtype)
        with proxlib.use_backend("numba"):
            expected = _registry.apply(proxlib.Lp(0.2, p), v, 0.5).tobytes()
            with monkeypatch.context() as m:
                m.setattr(_registry, "_apply", lambda *a, **k: pytest.fail("the general path ran"))
                assert proxlib.prox_lp(v, 0.2, p, 0.5).tobytes() == expected
                assert proxlib.Lp(0.2, p).prox(v, 0.5).tobytes() == expected


@pytest.mark.parametrize("fn", [proxlib.prox_weighted_l1, proxlib.prox_weighted_l2sq, proxlib.prox_owl])
@given(data=st.data())
def test_one_call_lane_on_tensor_weights_gives_the_torch_routes_bits(fn, data):
    """CPU tensor weights beside a CPU tensor take the lane (their NumPy
    views, Numba's serial kernel) where they took the torch route: its
    result bit for bit, on entries of any scale, zeros of both signs, NaN
    and Inf unchecked, and its errors."""
    torch = pytest.importorskip("torch")
    from proxlib import _registry

    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    n = data.draw(st.sampled_from([1, 5, 64, 3000]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    v = (rng.standard_normal(n) * 2.0 ** rng.integers(-40, 40, n)).astype(dtype)
    v[rng.random(n) < 0.1] = data.draw(st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf]))
    w = rng.uniform(0, 2, n) * 2.0 ** data.draw(st.integers(-40, 10))
    w[rng.random(n) < 0.1] = data.draw(st.sampled_from([0.0, -0.0, -1.0, np.nan]))
    if fn is proxlib.prox_owl:
        w = np.sort(np.abs(w))[::-1].copy()
    step = data.draw(st.sampled_from([0.5, 1.0, 2.0**-20, 2.0**20]))
    check = data.draw(st.booleans())
    pen = {proxlib.prox_owl: proxlib.OWL, proxlib.prox_weighted_l1: proxlib.WeightedL1}.get(fn, proxlib.WeightedL2Sq)
    tv, tw = torch.from_numpy(v), torch.from_numpy(w)
    with proxlib.use_backend(None):
        expected = _outcome(lambda: _registry.apply(pen(tw, copy=False), tv, step, check_finite=check))
        assert _outcome(lambda: fn(tv, tw, step, check_finite=check)) == expected
