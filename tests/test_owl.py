"""OWL and GrOWL proxes, on the NumPy reference and on the Numba backend.

Ground truth, from strongest to weakest: exact rational pool-adjacent-violators
(``_cvx.exact_owl``; the zero pattern is compared EXACTLY), solver-free
optimality certificates (dual norm <= 1 and <r, x> = Omega(x)), and CVXPY
(objective values; minimisers loosely).  Every test except the CVXPY ones runs
on each CPU backend (the ``backend`` fixture); CVXPY checks the reference only.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import proxlib

BACKENDS = ["numpy"] + (["numba"] if "numba" in proxlib.available_backends() else [])


@pytest.fixture(params=BACKENDS, scope="module", autouse=True)
def backend(request):
    """Run each test on each CPU backend (module scope: Hypothesis re-runs the
    body many times within one fixture instance, and the override is all it
    holds)."""
    with proxlib.use_backend(request.param):
        yield request.param


only_reference = pytest.mark.parametrize("backend", ["numpy"], indirect=True)  # CVXPY: the reference only

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps
# below float32's normal range the spacing is absolute, 1.4e-45: a few of those
# (found by the long run with data ~1e-42)
TINY32 = 4 * float(np.finfo(np.float32).smallest_subnormal)


@st.composite
def owl_problems(draw, max_size=12):
    v = draw(R.vectors(1, max_size))
    w = draw(R.nonincreasing_weights(v.size))
    return v, w, draw(R.steps)


@st.composite
def growl_problems(draw, max_rows=4, max_cols=3):
    W = draw(R.matrices(max_rows, max_cols))
    w = draw(R.nonincreasing_weights(W.shape[0]))
    return W, w, draw(R.steps)


def owl_dual_certificate(r_mags, x_mags, r_dot_x, w, omega_x, tol):
    """Optimality of x for the prox of the OWL norm with weights w (step folded in r).

    x = prox(v) iff r = (v - x)/step lies in the subdifferential of the OWL norm at
    x, i.e. (the norm's subdifferential is {r : ||r||_* <= 1, <r, x> = Omega(x)})
      * the dual norm of r is <= 1: for |r| sorted decreasingly, every partial sum
        sum_{j<=k} |r|_[j] <= sum_{j<=k} w_j;
      * <r, x> = Omega(x).
    """
    lhs = np.cumsum(R.sorted_desc(r_mags))
    rhs = np.cumsum(np.asarray(w, dtype=np.float64))
    assert np.all(lhs <= rhs + tol), f"dual norm > 1: max excess {np.max(lhs - rhs)} > tol {tol}"
    assert abs(r_dot_x - omega_x) <= tol * (1 + np.max(np.abs(x_mags), initial=0.0)), (r_dot_x, omega_x)


def certificate_tol(n, vmax, step, wmax, eps=EPS64):
    """Bound on the rounding in r = (v - x)/step and its partial sums.

    Each x_i comes out of a pooled mean of at most n terms of size <= vmax + step
    wmax (error <= n eps (vmax + step wmax)), v - x adds 2 eps vmax, so each |r_i|
    errs by <= (n + 2) eps (vmax/step + wmax); a partial sum of n of them by n
    times that.  Factor 2 for the cumsum of w and the products.
    """
    return 2 * n * (n + 2) * eps * (vmax / step + wmax + 1e-300)


# ----------------------------------------------------------------------------- OWL


@only_reference
@given(owl_problems())
def test_owl_objective_not_above_cvxpy_and_minimiser_close(problem):
    v, w, step = problem
    x = proxlib.prox_owl(v, w, step)
    x_cvx = R.cvx_owl(v, w, step)
    f = R.objective(x, v, step, R.owl_value(x, w))
    f_cvx = R.objective(x_cvx, v, step, R.owl_value(x_cvx, w))
    # objective not above CVXPY's, distance within what strong convexity allows
    R.assert_agrees_with_cvxpy(x, x_cvx, f, f_cvx, R.objective_slack(v, step, R.owl_value(v, w), v.size))


def exact_owl_fractions(v, w):
    """The exact OWL prox magnitudes as Fractions, in v's order (w already
    includes step): the rational pool-adjacent-violators of ``_cvx.exact_owl``,
    kept unrounded so that the zero pattern can be compared exactly.  v may hold
    floats or exact numbers (Decimal, Fraction); only |v| enters."""
    mags = [abs(Fraction(x if isinstance(x, (Decimal, Fraction)) else float(x))) for x in np.ravel(v)]
    order = sorted(range(len(mags)), key=lambda i: -mags[i])
    z = [mags[i] - Fraction(float(w[k])) for k, i in enumerate(order)]
    fit = R.pava_nonincreasing_clipped(z)
    out = [Fraction(0)] * len(mags)
    for k, i in enumerate(order):
        out[i] = fit[k]
    return out


def assert_exact_zero_pattern(x, v, w, tiny=Fraction(2) ** -1074):
    """x_i == 0 exactly where the exact prox is 0, and x_i != 0 where it is not
    (except a positive exact value below ``tiny``, the smallest subnormal of
    x's dtype, which may round to 0)."""
    exact = exact_owl_fractions(v, w)
    for i, (xi, ei) in enumerate(zip(np.ravel(x), exact)):
        if ei == 0:
            assert xi == 0, f"entry {i}: exact prox 0, got {xi!r}"
        elif ei >= tiny:
            assert xi != 0, f"entry {i}: exact prox {float(ei)!r}, got 0"


@given(owl_problems(max_size=12))
# the rounding of |v| - w decided the support: 1 - 2.8e-45 rounds to 1 and the
# three entries came out 1.2e-175 instead of exactly 0
@example(problem=(np.array([1.0, 5.0, 3.66676101e-175]), np.array([3.0, 1.40129846e-45, 0.0]), 2.0))
def test_owl_equals_exact_rational_pava(problem):
    v, w, step = problem
    x = proxlib.prox_owl(v, w, step)
    # Same float64 thresholds as proxlib forms (w * step, one rounding); the
    # reference then runs PAVA exactly in rationals.  proxlib's pooled means sum
    # at most n terms: n eps relative to the largest |v| - threshold.
    ref = R.exact_owl(v, w * step)
    scale = np.abs(v).max() + step * w.max()
    np.testing.assert_allclose(x, ref, rtol=0, atol=4 * v.size * EPS64 * scale)
    # The zero pattern is decided by exact sums (TwoSum for |v| - w, exact
    # prefix sums for the support): it must be exactly the rational one.
    assert_exact_zero_pattern(x, v, w * step)


# magnitudes and weights that make |v| - w cancel below double (and double-double)
# precision: 1 - 2^-60 against 1, 2^-120 against 2^-60, ...
_CANCELLING = [0.0, 1.0, 2.0, 3.0, 1.0 + 2.0**-52, 1.0 - 2.0**-53, 2.0**-60, 3 * 2.0**-61, 2.0**-120, 1e-300, 2.0**-1000, 2.0**-1074]


@st.composite
def cancelling_owl_problems(draw, max_size=10):
    n = draw(st.integers(1, max_size))
    v = draw(arrays(np.float64, n, elements=st.sampled_from(_CANCELLING + [-x for x in _CANCELLING])))
    w = draw(st.lists(st.sampled_from(_CANCELLING), min_size=n, max_size=n))
    return v, np.array(sorted(w, reverse=True))


@given(cancelling_owl_problems())
@example(problem=(np.array([1.0, 5.0, 3.7e-175]), np.array([6.0, 2.8e-45, 0.0])))  # the issue's case: all 0
@example(problem=(np.array([1.0, 2.0**-60, 2.0**-120]), np.array([2.0**-60 + 2.0**-120 + 1.0, 0.0, 0.0])))
def test_owl_zero_pattern_is_exact_under_cancellation(problem):
    """Sums that cancel far below the working precision decide the support."""
    v, w = problem
    x = proxlib.prox_owl(v, w)
    np.testing.assert_allclose(x, R.exact_owl(v, w), rtol=0, atol=4 * v.size * EPS64 * (np.abs(v).max() + w.max()))
    assert_exact_zero_pattern(x, v, w)


def test_owl_issue_case_is_exactly_zero():
    # v = [1, 5, 3.7e-175], step w = [6, 2.8e-45, 0]: sorted |v| - w = [-1, 1 - 2.8e-45,
    # 3.7e-175] pools to one block of mean (-2.8e-45 + 3.7e-175)/3 < 0: all zero.
    x = proxlib.prox_owl(np.array([1.0, 5.0, 3.7e-175]), np.array([6.0, 2.8e-45, 0.0]))
    assert np.array_equal(x, np.zeros(3)) and not np.signbit(x).any()


@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(arrays(np.float64, n, elements=R.elements()), R.nonincreasing_weights(n), R.steps)
    )
)
# found by the long run: a pooled block's rounded mean left [min, max] of the
# block (three copies of 0.05 averaged to 0.05000000000000001, growing |v|)
@example(problem=(np.full(3, 0.05), np.zeros(3), 1.0))
def test_owl_certificate(problem):
    v, w, step = problem
    x = proxlib.prox_owl(v, w, step)
    r = (v - x) / step
    tol = certificate_tol(v.size, np.abs(v).max(), step, w.max())
    owl_dual_certificate(np.abs(r), np.abs(x), float(np.dot(r, x)), w, R.owl_value(x, w), tol)
    # prox of a sign-invariant norm: never flips a sign, never grows a magnitude
    assert np.all(x * v >= 0) and np.all(np.abs(x) <= np.abs(v))


@given(owl_problems(max_size=20), st.randoms(use_true_random=False))
def test_owl_permutation_and_sign_equivariance(problem, rnd):
    v, w, step = problem
    perm = np.array(rnd.sample(range(v.size), v.size))
    signs = np.array([rnd.choice([-1.0, 1.0]) for _ in range(v.size)])
    x = proxlib.prox_owl(v, w, step)
    x_perm = proxlib.prox_owl(signs * v[perm], w, step)
    # Sign flips are exact (only |v| enters); a permutation changes only how the
    # sort orders tied magnitudes, and ties are pooled, so equality up to the
    # rounding of a pooled mean (n eps of the input scale).
    tol = 2 * v.size * EPS64 * (np.abs(v).max() + step * w.max())
    np.testing.assert_allclose(x_perm, signs * x[perm], rtol=0, atol=tol)
    np.testing.assert_array_equal(proxlib.prox_owl(-v, w, step), -x)


@given(owl_problems(max_size=12))
# found by the long run: scipy's PAVA returned two different values for 12 copies
# of one magnitude with zero weights
@example(problem=(np.full(12, 5.436249914654229), np.zeros(12), 1.0))
@example(problem=(np.array([0.8401534358238483] * 4 + [-0.8401534358238483] * 4), np.zeros(8), 1.0))
def test_owl_ties_get_equal_magnitudes(problem):
    v, w, step = problem
    x = proxlib.prox_owl(v, w, step)
    a, b = np.abs(v)[:, None], np.abs(x)
    tied = a == a.T
    # the claim in prox_owl's docstring: equal magnitudes, equal outputs (exactly)
    assert np.all(b[:, None] == b[None, :], where=tied)


@pytest.mark.parametrize("s", [2.0**-500, 2.0**500, 1e-150, 1e150, 3.0])
@given(owl_problems(max_size=12))
@example(problem=(np.full(5, 6.09282581e-161), np.array([6.0928258131332504e-161, 0.0, 0.0, 0.0, 0.0]), 3.3125))
def test_owl_scaling(s, problem):
    # OWL is positively homogeneous of degree 1: prox_{s step Omega}(s v) = s prox_{step Omega}(v).
    v, w, step = problem
    x = proxlib.prox_owl(v, w, step)
    xs = proxlib.prox_owl(s * v, w, s * step)
    # powers of two scale exactly; other s add one rounding to v and to step,
    # and the prox is 1-Lipschitz in v and in the thresholds.  Where s v, the
    # thresholds s step w or the outputs are subnormal, each of those roundings
    # (and the kernels' last, and that of s x) is absolute instead, up to
    # half the smallest subnormal: v = 6.09e-161 (5 ties), w = (v_0, 0, 0, 0,
    # 0), step 3.3125, s = 1e-150 came 2^-1074 apart against a relative
    # tolerance of 1.2e-325 (0 in float64).
    tol = 4 * v.size * EPS64 * s * (np.abs(v).max() + step * w.sum()) + 4 * 2.0**-1074
    np.testing.assert_allclose(xs, s * x, rtol=0, atol=tol)


@given(R.vectors(1, 20), st.floats(0, 3), R.steps)
def test_owl_constant_weights_is_weighted_l1(v, lam, step):
    x = proxlib.prox_owl(v, proxlib.owl_weights_constant(v.size, lam), step)
    ref = proxlib.prox_weighted_l1(v, lam, step)
    # constant weights: every pooled block has the same |v| - lam, so the pooled
    # mean is exact up to one rounding of the block sum
    np.testing.assert_allclose(x, ref, rtol=0, atol=2 * v.size * EPS64 * (np.abs(v).max() + step * lam))


def _project_l1_ball(v, radius):
    """Euclidean projection onto {||x||_1 <= radius} (Duchi et al. 2008, sort-based)."""
    a = np.abs(v)
    if a.sum() <= radius:
        return v.copy()
    u = np.sort(a)[::-1]
    css = np.cumsum(u)
    k = np.nonzero(u * np.arange(1, a.size + 1) > css - radius)[0][-1]
    theta = (css[k] - radius) / (k + 1)
    return np.sign(v) * np.maximum(a - theta, 0)


@given(R.vectors(1, 20), st.floats(0.01, 5), R.steps)
def test_owl_spike_weights_is_linf_prox(v, lam, step):
    # spike weights: Omega = lam ||x||_inf; Moreau: prox = v - P_{||.||_1 <= step lam}(v)
    x = proxlib.prox_owl(v, proxlib.owl_weights_spike(v.size, lam), step)
    ref = v - _project_l1_ball(v, step * lam)
    np.testing.assert_allclose(x, ref, rtol=0, atol=4 * v.size * EPS64 * (np.abs(v).max() + step * lam))


@given(R.vectors(1, 12), R.nonincreasing_weights(12))
def test_owl_huge_step_gives_zero(v, w):
    w = w[: v.size] + 0.1  # all weights > 0: the prox is 0 once step w_n >= ||v||_1
    x = proxlib.prox_owl(v, w, 1e300)
    np.testing.assert_array_equal(x, np.zeros_like(v))


@pytest.mark.filterwarnings("error")
def test_owl_growl_finite_input_near_the_float_max_raises_no_overflow_warning():
    """Finite v / weights whose SUM overflows (the finiteness check's first
    reduction) are valid input: no RuntimeWarning (an error under -W error)."""
    big = np.array([1.7e308, 1.7e308, 1e308])
    wbig = np.array([1e308, 1e308, 0.0])
    x = proxlib.prox_owl(big, np.array([1.0, 0.5, 0.0]))
    np.testing.assert_array_equal(x, big - [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(proxlib.prox_owl(np.float32([3e38, 3e38]), np.array([1.0, 0.0])),
                                  np.float32([3e38, 3e38]) - np.float32([0.5, 0.5]))
    np.testing.assert_array_equal(proxlib.prox_owl(np.ones(3), wbig), np.zeros(3))
    np.testing.assert_array_equal(proxlib.OWL(wbig).prox(np.ones(3)), np.zeros(3))
    np.testing.assert_array_equal(proxlib.prox_growl(np.ones((3, 2)), wbig), np.zeros((3, 2)))


def test_owl_hand_cases():
    # v = [1, 1], w = [1, 0]: sorted |v| - w = [0, 1] violates monotonicity, so
    # PAVA pools it to [0.5, 0.5]; both entries become 0.5.
    np.testing.assert_array_equal(proxlib.prox_owl(np.array([1.0, -1.0]), np.array([1.0, 0.0])), [0.5, -0.5])
    # one entry: soft thresholding, 3 - 1 = 2
    np.testing.assert_array_equal(proxlib.prox_owl(np.array([-3.0]), np.array([1.0])), [-2.0])
    # all zeros stay zero; an empty vector is returned as an empty vector
    np.testing.assert_array_equal(proxlib.prox_owl(np.zeros(4), np.ones(4)), np.zeros(4))
    assert proxlib.prox_owl(np.zeros(0), np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("scale", [1.0, 0.9e308])
@pytest.mark.parametrize("n", [2, 9, 301])
def test_owl_support_is_exact_where_the_window_spans_the_vector(n, scale):
    # Equal magnitudes and linear weights with about their sum: the prefix sums
    # of |v| - w peak at both ends, near-tied, so the reference's exact sums
    # span the whole vector (in segments; near 1e308 math.fsum overflows and
    # the reference falls back to a Fraction per term).  The zero pattern is
    # exact (ground truth: rational PAVA).
    v = np.tile([scale, -scale], n)[:n]
    for top in (2.0 * scale, np.nextafter(2.0 * scale, 0), 2.0 * scale * (1 - 1e-12), 1.99 * scale):
        w = np.linspace(min(top, 1.79e308), 0.0, n) if scale == 1.0 else np.linspace(1.79e308, 0.01e308, n)
        x, ref = proxlib.prox_owl(v, w), R.exact_owl(v, w)
        np.testing.assert_array_equal(x != 0, ref != 0)
        # values: the reference's documented accuracy, k* eps max|z|
        np.testing.assert_allclose(x, ref, rtol=0, atol=n * EPS64 * max(np.abs(v).max(), w[0]))


@given(owl_problems(max_size=16))
@example(problem=(np.array([2.10741609e-42]), np.array([2.10741609e-42]), 1.0))  # float32 subnormals
@example(problem=(np.array([3.0, 3.0, 3.0, 3.0]), np.array([2.63879243, 0.0, 0.0, 0.0]), 3.5))  # step * w rounded once
def test_owl_float32(problem):
    v, w, step = problem
    v32 = v.astype(np.float32)
    x32 = proxlib.prox_owl(v32, w, step)  # float64 weights with float32 data
    assert x32.dtype == np.float32
    x64 = proxlib.prox_owl(v32.astype(np.float64), w, step)
    # The thresholds are rounded to float32 (w, step and their product: 3 eps32
    # relative) and the prox is 1-Lipschitz in the thresholds (projection onto
    # the monotone cone), plus the final rounding of x to float32.
    #
    # Below float32's normal range (1.2e-38) the spacing is absolute, 2^-149, and
    # relative terms no longer bound the two roundings: with v = w = 2.1e-42 the
    # thresholds round to w32 = v32 (x32 = 0 exactly, as the float32 problem
    # demands) while x64 = v32 - w = 1.4e-46, a tenth of a float32 subnormal.
    # Casting a threshold errs by <= 2^-150 and rounding x by <= 2^-150, and the
    # prox is 1-Lipschitz in the thresholds: <= 2^-149 absolute.  TINY32 = 4 *
    # 2^-149 leaves room for the product step * w rounded in the subnormal range.
    tol = 4 * EPS32 * (step * np.linalg.norm(w) + np.abs(v32).max()) + TINY32
    np.testing.assert_allclose(x32.astype(np.float64), x64, rtol=0, atol=tol)
    # The float32 problem itself: thresholds rounded as proxlib forms them
    # (step * w in float64, rounded once to float32: proxlib._range); x32 is its
    # exact prox computed in float64 (n eps64 of the scale) and rounded once to
    # float32 (eps32/2 relative, or 2^-150 absolute below the normal range).
    t32 = (w.astype(np.float64) * step).astype(np.float32).astype(np.float64)
    v64 = v32.astype(np.float64)
    exact = R.exact_owl(v64, t32)
    atol = 4 * v.size * EPS64 * (np.abs(v64).max() + t32.max()) + TINY32 / 4
    np.testing.assert_allclose(x32.astype(np.float64), exact, rtol=EPS32, atol=atol)
    assert_exact_zero_pattern(x32, v64, t32, tiny=Fraction(2) ** -149)


def _layouts(A):
    """The same values as A in other memory layouts (never C-contiguous copies)."""
    out = {"fortran": np.asfortranarray(A)}
    big = np.zeros((A.shape[0] * 2,) + A.shape[1:])
    big[::2] = A
    out["strided"] = big[::2]
    out["transposed"] = np.ascontiguousarray(A.T).T
    return out


@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 4)])
def test_owl_and_growl_memory_layouts(shape):
    rng = np.random.default_rng(0)
    A = rng.normal(size=shape)
    n = A.size
    w = np.sort(rng.uniform(0, 1, n))[::-1]
    wg = np.sort(rng.uniform(0, 2, shape[0]))[::-1]
    x_ref = proxlib.prox_owl(np.ascontiguousarray(A), w, 0.7)
    X_ref = proxlib.prox_growl(np.ascontiguousarray(A), wg, 0.7)
    for name, B in _layouts(A).items():
        assert not B.flags.c_contiguous or B.ndim == 1, name
        np.testing.assert_array_equal(proxlib.prox_owl(B, w, 0.7), x_ref, err_msg=name)
        np.testing.assert_array_equal(proxlib.prox_growl(B, wg, 0.7), X_ref, err_msg=name)


def test_owl_nd_is_flat():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(2, 3, 4))
    w = np.sort(rng.uniform(0, 1, A.size))[::-1]
    np.testing.assert_array_equal(proxlib.prox_owl(A, w), proxlib.prox_owl(A.ravel(), w).reshape(A.shape))


def test_strided_weights_are_kept_contiguous():
    """Weights made the common way, np.sort(w)[::-1] (negative strides), are
    held in contiguous memory even when the caller's array is kept
    (copy=False, as the prox_* functions make their penalty): the compiled
    kernels then see one memory layout of the weights (one specialisation
    each) whatever the caller passed."""
    w = np.sort(np.random.default_rng(2).uniform(0, 1, 8))[::-1]
    for cls in (proxlib.OWL, proxlib.GrOWL):
        for copy in (False, True):
            pen = cls(w, copy=copy)
            assert pen.weights.flags.c_contiguous
            np.testing.assert_array_equal(pen.weights, w)
    c = np.ascontiguousarray(w)
    assert proxlib.OWL(c, copy=False).weights is c  # (contiguous float64 weights are kept, not copied)


# ----------------------------------------------------------------------------- GrOWL


@only_reference
@given(growl_problems())
def test_growl_objective_not_above_cvxpy_and_minimiser_close(problem):
    W, w, step = problem
    X = proxlib.prox_growl(W, w, step)
    X_cvx = R.cvx_growl(W, w, step)
    f = R.objective(X, W, step, R.growl_value(X, w))
    f_cvx = R.objective(X_cvx, W, step, R.growl_value(X_cvx, w))
    # see test_owl_objective_not_above_cvxpy_and_minimiser_close
    R.assert_agrees_with_cvxpy(X, X_cvx, f, f_cvx, R.objective_slack(W, step, R.growl_value(W, w), W.size))


@given(st.integers(1, 12), st.integers(1, 5), st.data())
def test_growl_certificate_and_structure(G, m, data):
    W = data.draw(R.matrices(G, m, min_rows=G, min_cols=m))
    w = data.draw(R.nonincreasing_weights(G))
    step = data.draw(R.steps)
    X = proxlib.prox_growl(W, w, step)
    Rm = (W - X) / step
    nv = R.row_norms(W)
    tol = certificate_tol(G, nv.max(), step, w.max()) + 4 * m * EPS64 * nv.max() / step
    owl_dual_certificate(R.row_norms(Rm), R.row_norms(X), float(np.sum(Rm * X)), w, R.growl_value(X, w), tol)
    # each row is a non-negative multiple (<= 1) of the input row; zero rows stay zero
    nx = R.row_norms(X)
    np.testing.assert_allclose(X * nv[:, None], W * nx[:, None], rtol=0, atol=8 * m * EPS64 * nv.max() ** 2)
    assert np.all(nx <= nv * (1 + 4 * EPS64))
    assert np.all(X[nv == 0] == 0)
    # tied row norms give tied output norms (the exact prox is symmetric in rows)
    tied = nv[:, None] == nv[None, :]
    np.testing.assert_allclose(
        np.broadcast_to(nx[:, None], tied.shape)[tied], np.broadcast_to(nx[None, :], tied.shape)[tied],
        rtol=4 * EPS64, atol=0,
    )


@given(growl_problems(max_rows=8, max_cols=4))
def test_growl_is_owl_of_row_norms(problem):
    # ||x_g|| = prox_owl(row norms)_g, rows keep their direction: checked against
    # the exact rational OWL prox of the (float64) row norms.
    W, w, step = problem
    X = proxlib.prox_growl(W, w, step)
    nv = R.row_norms(W)
    ref = R.exact_owl(nv, w * step)
    np.testing.assert_allclose(R.row_norms(X), ref, rtol=0, atol=8 * W.size * EPS64 * (nv.max() + step * w.max()))


@given(owl_problems(max_size=12))
def test_growl_one_column_is_owl(problem):
    v, w, step = problem
    X = proxlib.prox_growl(v[:, None], w, step)
    # one column: row norm = |v_i| and the rescaling restores the sign
    np.testing.assert_allclose(X[:, 0], proxlib.prox_owl(v, w, step), rtol=4 * EPS64, atol=0)


@given(growl_problems(max_rows=6, max_cols=4), st.randoms(use_true_random=False))
def test_growl_row_permutation_and_sign_equivariance(problem, rnd):
    W, w, step = problem
    G, m = W.shape
    perm = np.array(rnd.sample(range(G), G))
    signs = np.array([[rnd.choice([-1.0, 1.0]) for _ in range(m)] for _ in range(G)])
    X = proxlib.prox_growl(W, w, step)
    Xp = proxlib.prox_growl((signs * W)[perm], w, step)
    tol = 2 * G * EPS64 * (R.row_norms(W).max() + step * w.max())
    np.testing.assert_allclose(Xp, (signs * X)[perm], rtol=0, atol=tol)


@given(growl_problems(max_rows=4, max_cols=3), st.integers(1, 4))
def test_growl_nd_is_reshaped_rows(problem, k):
    W, w, step = problem
    G, m = W.shape
    W3 = np.repeat(W[:, :, None], k, axis=2) / k  # (G, m, k)
    X3 = proxlib.prox_growl(W3, w, step)
    assert X3.shape == W3.shape
    np.testing.assert_array_equal(X3, proxlib.prox_growl(W3.reshape(G, -1), w, step).reshape(W3.shape))
    np.testing.assert_array_equal(proxlib.prox_growl(np.asfortranarray(W3), w, step), X3)


@pytest.mark.parametrize("s", [2.0**-500, 2.0**500, 1e-150, 1e150])
@given(growl_problems(max_rows=4, max_cols=4))
@example(problem=(np.array([[6.18160669e-171]]), np.array([6.18160669e-171]), 0.5))  # subnormal at s = 1e-150
def test_growl_extreme_scales(s, problem):
    # squared norms of rows at 1e150 would overflow (1e300 * m) and at 1e-150
    # underflow; the prox must still scale: prox(s W; s step) = s prox(W; step).
    # Where s * W or s * step * w are subnormal they are rounded to multiples of
    # 2^-1074 (up to half of one each); the prox is 1-Lipschitz in the data
    # and (through the OWL of the norms) in the thresholds, so the identity
    # holds only to sqrt(#entries) + sqrt(#weights) of those, plus the
    # output's own rounding there (found by the long profile: W = w = 6.2e-171,
    # s = 1e-150: s W rounds to 1251 units of 2^-1074, the threshold to 626,
    # the exact prox of those is 625 units, s X is 626).
    W, w, step = problem
    X = proxlib.prox_growl(W, w, step)
    Xs = proxlib.prox_growl(s * W, w, s * step)
    quantum = 2.0**-1074 * (np.sqrt(W.size) + np.sqrt(w.size) + 1)
    tol = 8 * W.size * EPS64 * s * (np.abs(W).max() + step * w.sum()) + quantum
    np.testing.assert_allclose(Xs, s * X, rtol=0, atol=tol)


def test_growl_hand_cases():
    # rows [3, 4] (norm 5) and [0, 1] (norm 1), weights [1, 1]: each norm is soft
    # thresholded by 1 -> 4 and 0, so row 0 becomes (4/5)[3, 4] = [2.4, 3.2].
    X = proxlib.prox_growl(np.array([[3.0, 4.0], [0.0, 1.0]]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(X, [[2.4, 3.2], [0.0, 0.0]], rtol=2 * EPS64)
    # a 1-D W is one row: GrOWL with one weight is the group lasso of that row
    v = np.array([3.0, 4.0])
    np.testing.assert_allclose(proxlib.prox_growl(v, np.array([1.0])), [2.4, 3.2], rtol=2 * EPS64)
    # zero rows: no division by zero, they stay zero
    Z = np.zeros((3, 2))
    np.testing.assert_array_equal(proxlib.prox_growl(Z, np.ones(3)), Z)


@given(growl_problems(max_rows=6, max_cols=3))
@example(problem=(np.array([[1.71707562e-43]]), np.array([1.71707562e-43]), 1.0))  # float32 subnormals
def test_growl_float32(problem):
    W, w, step = problem
    W32 = W.astype(np.float32)
    X32 = proxlib.prox_growl(W32, w, step)
    assert X32.dtype == np.float32 and X32.shape == W.shape
    X64 = proxlib.prox_growl(W32.astype(np.float64), w, step)
    # as test_owl_float32, on the row norms; the rescaling of a row by the ratio
    # of norms adds a few roundings of the row's own size
    tol = 4 * EPS32 * (step * np.linalg.norm(w) + R.row_norms(W32).max()) + TINY32  # + subnormal spacing
    np.testing.assert_allclose(X32.astype(np.float64), X64, rtol=0, atol=tol)


@given(growl_problems(max_rows=4, max_cols=3))
def test_growl_huge_step_gives_zero(problem):
    W, w, _ = problem
    X = proxlib.prox_growl(W, w + 0.1, 1e300)
    np.testing.assert_array_equal(X, np.zeros_like(W))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_owl_growl_inputs_untouched_and_new_arrays(dtype):
    rng = np.random.default_rng(2)
    v = rng.normal(size=(3, 4)).astype(dtype)
    w = np.sort(rng.uniform(0, 1, v.size))[::-1]
    wg = np.array([0.5, 0.5, 0.0])
    v0, w0, wg0 = v.copy(), w.copy(), wg.copy()
    for fn, weights in ((proxlib.prox_owl, w), (proxlib.prox_growl, wg)):
        for step in (1.0, 0.5):
            x = fn(v, weights, step)
            assert type(x) is np.ndarray and x.shape == v.shape and x.dtype == dtype
            assert not np.shares_memory(x, v) and not np.shares_memory(x, weights)
        # zero weights: the prox is the identity, still a new array
        x = fn(v, np.zeros_like(weights))
        np.testing.assert_array_equal(x, v)
        assert not np.shares_memory(x, v)
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(wg, wg0)


# ------------------------------------------------------- the one-call lane
#
# prox_owl and OWL(w).prox check NumPy vectors and form their thresholds in
# one compiled pass, and solve short ones in that same call
# (proxlib.owl._in_one_call).  It must give the general path's result bit
# for bit, and leave every error to that path.


def _general_owl(v, w, step, check_finite):
    from proxlib import _registry

    return _registry.apply(proxlib.OWL(w, copy=False), v, step, check_finite=check_finite)


def _outcome(fn):
    try:
        x = fn()
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return x.dtype, x.shape, x.tobytes()  # bits: signed zeros and NaN payloads count


@st.composite
def lane_problems(draw):
    """Valid and invalid calls near every edge the lane tests."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.one_of(st.integers(1, 24), st.sampled_from([2047, 2048, 2049, 5000, 70001])))
    if n <= 24:
        v = draw(arrays(np.float64, n, elements=R.elements())).astype(dtype)
        w = np.array(sorted(draw(st.lists(st.floats(0.0, 3.0), min_size=n, max_size=n)), reverse=True))
    else:  # (long: random vectors, weights with ties)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        v = rng.standard_normal(n).astype(dtype)
        w = np.sort(np.round(rng.uniform(0.0, 3.0, n), 2))[::-1].copy()
    flaw = draw(st.sampled_from(["none", "none", "none", "nan_v", "inf_v", "nan_w", "inf_w", "negative_w",
                                 "rising_w", "short_w", "float32_w", "shape_v"]))
    i = draw(st.integers(0, n - 1))
    if flaw == "nan_v":
        v[i] = np.nan
    elif flaw == "inf_v":
        v[i] = -np.inf
    elif flaw == "nan_w":
        w[i] = np.nan
    elif flaw == "inf_w":
        w[0] = np.inf
    elif flaw == "negative_w":
        w[-1] = -draw(st.sampled_from([1e-300, 0.5]))
    elif flaw == "rising_w" and n > 1:
        w[i if i < n - 1 else 0] = -1.0 if i else w[1]
        w[-1], w[0] = w[0] + 1.0, w[-1]
    elif flaw == "short_w":
        w = w[1:]
    elif flaw == "float32_w":
        w = w.astype(np.float32)
    elif flaw == "shape_v" and n % 2 == 0:
        v = v.reshape(2, n // 2)
    step = draw(st.one_of(
        st.sampled_from([1.0, 0.5, 1, 3, 2.0**-1022, 2.0**-1023, 2.0**1000, 2.0**1001, 1e300, 2.0**-100,
                         np.float64(0.7), 0.0, -1.0]),
        st.floats(1e-300, 1e300)))
    return v, w, step, draw(st.booleans())


def _assert_lane_is_the_general_path(fn, penalty, x, w, step, check_finite):
    """``fn(x, w, step)`` and ``penalty(w).prox(x, step)`` (the lane where
    it answers) have the general path's outcome: its result bit for bit,
    or its error's type and message."""
    from proxlib import _registry

    expected = _outcome(lambda: _registry.apply(penalty(w, copy=False), x, step, check_finite=check_finite))
    assert _outcome(lambda: fn(x, w, step, check_finite=check_finite)) == expected
    try:
        pen = penalty(w)
    except ValueError:
        return
    assert _outcome(lambda: pen.prox(x, step, check_finite=check_finite)) == expected


@given(lane_problems())
def test_owl_one_call_lane_equals_the_general_path(problem):
    _assert_lane_is_the_general_path(proxlib.prox_owl, proxlib.OWL, *problem)


@st.composite
def growl_lane_problems(draw):
    """GrOWL's lane (proxlib.owl._in_one_call("growl", ...)): valid and
    invalid calls near every edge it tests, rows of every layout it takes
    (1-D: one row; N-D: W.reshape(G, -1)) and the routes behind it (G <=
    2048 serially in one compiled call; more rows, or a parallel-sized W,
    through numba_cpu.growl)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(st.one_of(
        st.tuples(st.integers(1, 6), st.integers(1, 5)), st.tuples(st.integers(1, 12)),
        st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
        st.sampled_from([(2048, 2), (2049, 2), (300, 784), (0, 3), (3, 0)])))
    G = 1 if len(shape) == 1 else shape[0]
    if math.prod(shape) <= 60:
        W = draw(arrays(np.float64, shape, elements=R.elements())).astype(dtype)
        w = np.array(sorted(draw(st.lists(st.floats(0.0, 3.0), min_size=G, max_size=G)), reverse=True))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        W = rng.standard_normal(shape).astype(dtype)
        w = np.sort(np.round(rng.uniform(0.0, 3.0, G), 2))[::-1].copy()
    flaw = draw(st.sampled_from(["none", "none", "none", "nan_W", "inf_W", "nan_w", "inf_w", "negative_w",
                                 "rising_w", "short_w", "float32_w", "tiny_w"]))
    if W.size and flaw in ("nan_W", "inf_W"):
        W.reshape(-1)[draw(st.integers(0, W.size - 1))] = np.nan if flaw == "nan_W" else -np.inf
    elif G and flaw == "nan_w":
        w[draw(st.integers(0, G - 1))] = np.nan
    elif G and flaw == "inf_w":
        w[0] = np.inf
    elif G and flaw == "negative_w":
        w[-1] = -draw(st.sampled_from([1e-300, 0.5]))
    elif G > 1 and flaw == "rising_w":
        w[-1], w[0] = w[0] + 1.0, w[-1]
    elif flaw == "short_w":
        w = w[1:]
    elif flaw == "float32_w":
        w = w.astype(np.float32)
    elif flaw == "tiny_w":  # (thresholds step * w in the subnormals)
        w = w * 2.0**-1060
    step = draw(st.one_of(
        st.sampled_from([1.0, 0.5, 1, 3, 2.0**-1022, 2.0**-1023, 2.0**100, 2.0**101, 2.0**1000, 2.0**1001, 1e300,
                         np.float64(0.7), 0.0, -1.0]),
        st.floats(1e-300, 1e300)))
    return W, w, step, draw(st.booleans())


@given(growl_lane_problems())
def test_growl_one_call_lane_equals_the_general_path(problem):
    """prox_growl and GrOWL(w).prox: the lane's result is the general path's
    bit for bit, and every error (type and message) is that path's."""
    _assert_lane_is_the_general_path(proxlib.prox_growl, proxlib.GrOWL, *problem)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (64, 64), (10, 300), (3, 4, 5), (2049, 3), (300, 784)])
def test_growl_one_call_lane_takes_the_common_call(backend, dtype, shape):
    """The lane answers GrOWL's common call on Numba (serially in one
    compiled call, or by numba_cpu.growl for more rows or a parallel-sized
    W), so the test above compares two paths; and no other backend (a CPU
    tensor's call: tests/test_torch_numba_view.py)."""
    from proxlib import _registry, owl

    rng = np.random.default_rng(len(shape))
    W = rng.standard_normal(shape).astype(dtype)
    G = 1 if len(shape) == 1 else shape[0]
    w = np.sort(rng.uniform(0, 1, G))[::-1].copy()
    for weights in (w, w.astype(dtype)):
        x = owl._in_one_call("growl", W, weights, 0.5, True)
        assert (x is not None) == (backend == "numba")
        if x is not None:
            expected = _registry.apply(proxlib.GrOWL(weights, copy=False), W, 0.5)
            assert x.tobytes() == expected.tobytes() and x.shape == W.shape


def test_growl_warns_of_nothing_on_an_unchecked_infinite_row(backend):
    """An infinite row with check_finite=False (output unspecified) made the
    NumPy reference's factor inf / inf, with NumPy's "invalid value
    encountered in divide" RuntimeWarning, an error under ``-W error``
    (found by the GrOWL lane's Hypothesis test under the long profile)."""
    import warnings

    W = np.array([[np.inf, 1.0], [1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = proxlib.prox_growl(W, np.array([1.0, 0.5]), 1.0, check_finite=False)
    assert x.shape == W.shape and x.dtype == W.dtype


def test_float32_solved_in_float64_warns_of_no_overflow_on_unchecked_non_finite_input(backend):
    """float32 data whose thresholds lie beyond float32 is solved in float64
    and rounded once; with NaN or Inf in it and check_finite=False (output
    unspecified) a float64 result beyond float32 became inf with NumPy's
    "overflow encountered in cast" RuntimeWarning, an error under
    ``-W error``.  (Finite input cannot overflow there: |x| <= |v|.)"""
    import warnings

    v = np.array([np.nan, 1.0, -np.inf], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = proxlib.prox_owl(v, np.array([3.0, 2.0, 1.0]), 1e300, check_finite=False)
        assert x.dtype == np.float32 and np.isnan(x[0])
        finite = proxlib.prox_owl(np.array([3.0, -1.0, 2.0], dtype=np.float32), np.array([3.0, 2.0, 1.0]), 1e300)
    np.testing.assert_array_equal(finite, np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 100, 2048, 2049, 300_000])
def test_owl_one_call_lane_takes_the_common_call(backend, dtype, n):
    """The lane answers the common call on Numba, short vectors (one compiled
    call) and long ones (the checks and thresholds in one compiled pass),
    so the test above compares two paths; and no other backend."""
    from proxlib import owl

    rng = np.random.default_rng(n)
    v = rng.standard_normal(n).astype(dtype)
    w = np.sort(rng.uniform(0, 1, n))[::-1].copy()
    for weights in (w, w.astype(dtype)):
        x = owl._in_one_call("owl", v, weights, 0.5, True)
        assert (x is not None) == (backend == "numba")
        if x is not None:
            assert x.tobytes() == _general_owl(v, weights, 0.5, True).tobytes()
