"""Group lasso, exclusive lasso and the exact group + exclusive prox (rows and ragged groups).

Ground truth: 60-digit references derived from the optimality conditions
(``_cvx.exact_*``), solver-free KKT certificates, and CVXPY (objective values;
minimisers loosely).  All thresholds below include ``step``:
a_g = step lam c_g (1 - mu), b_g = step lam c_g mu.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import proxlib

pytestmark = pytest.mark.usefixtures("numpy_backend")

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps
TINY32 = 4 * float(np.finfo(np.float32).smallest_subnormal)  # absolute spacing below 1.2e-38


def group_exclusive(W, lam, mu, step=1.0, **kw):
    return proxlib.prox_group_exclusive(W, lam, mu, step, **kw)


def group_lasso(W, lam, mu, step=1.0, **kw):  # mu ignored: same call shape as the others
    return proxlib.prox_group_lasso(W, lam, step, **kw)


def exclusive(W, lam, mu, step=1.0, **kw):
    return proxlib.prox_exclusive_lasso(W, lam, step, **kw)


# operator name -> (function, the mu it stands for or None to use the drawn mu)
OPS = {"group_lasso": (group_lasso, 0.0), "exclusive": (exclusive, 1.0), "group_exclusive": (group_exclusive, None)}


@st.composite
def group_weight_args(draw, G):
    kind = draw(st.sampled_from(["none", "sqrt", "array"]))
    if kind == "none":
        return None
    if kind == "sqrt":
        return "sqrt"
    return draw(arrays(np.float64, G, elements=st.one_of(st.floats(0, 2, allow_subnormal=False), st.just(1.0))))


def numeric_c(gw, sizes):
    sizes = np.asarray(sizes, dtype=np.float64)
    if gw is None:
        return np.ones_like(sizes)
    if isinstance(gw, str):
        return np.sqrt(sizes)
    return np.asarray(gw, dtype=np.float64)


@st.composite
def row_problems(draw, max_rows=4, max_cols=3):
    W = draw(R.matrices(max_rows, max_cols))
    gw = draw(group_weight_args(W.shape[0]))
    return W, draw(R.lams), draw(R.mus), draw(R.steps), gw


def sets_value(x, sets, c, mu):
    """sum_g c_g ((1 - mu) ||x_g||_2 + mu/2 ||x_g||_1^2) over index sets (float64)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    total = 0.0
    for idx, cg in zip(sets, c):
        xg = x[idx]
        total += cg * ((1 - mu) * (np.hypot.reduce(xg) if xg.size else 0.0) + mu / 2 * np.abs(xg).sum() ** 2)
    return float(total)


def kkt_check(V, X, a, b, tol):
    """Optimality of each row x of X for min 1/2||x - v||^2 + a||x||_2 + b/2||x||_1^2.

    Subgradient condition v - x = a g + b ||x||_1 s with g in d||x||_2 and s in
    d||x||_1:
      * x = 0: iff some |s_i| <= 1 gives ||v|| <= a; with ||x||_1 = 0 that is ||v|| <= a;
      * x != 0: g = x/||x||, so on the support v_i - x_i = a x_i/||x|| + b||x||_1 sign(x_i)
        and off the support |v_i| <= b ||x||_1.
    ``tol`` bounds the rounding of each residual.
    """
    for v, x, ag, bg in zip(V, X, a, b):
        nx = np.hypot.reduce(x) if x.size else 0.0
        if nx == 0:
            assert np.hypot.reduce(v) <= ag + tol, ("zero row but ||v|| > a", np.hypot.reduce(v), ag)
            continue
        t = bg * np.abs(x).sum()
        on = x != 0
        assert np.all(np.sign(x[on]) == np.sign(v[on])), "prox flipped a sign"
        res_on = v[on] - x[on] - ag * (x[on] / nx) - t * np.sign(x[on])  # a*x would underflow at 1e-308
        assert np.all(np.abs(res_on) <= tol), ("stationarity on the support", np.abs(res_on).max(), tol)
        assert np.all(np.abs(v[~on]) <= t + tol), ("off-support entry above b ||x||_1", np.abs(v[~on]), t)


def kkt_tol(V, a, b, m):
    """Residuals are differences of quantities of size <= |v| + a + b ||v||_1, each
    computed with O(m) roundings (norms, l1 sums, a root found to the last bit)."""
    vmax = np.abs(V).max(initial=0.0)
    # + a few subnormal units: below 2.2e-308 the spacing of floats is absolute
    tiny = 64 * np.finfo(np.float64).smallest_subnormal
    return 16 * (m + 2) * EPS64 * (vmax + np.max(a, initial=0.0) + np.max(b, initial=0.0) * m * vmax) + tiny


# --------------------------------------------------------------------- against CVXPY


@pytest.mark.parametrize("op", OPS)
@given(row_problems())
def test_rows_objective_not_above_cvxpy_and_minimiser_close(op, problem):
    W, lam, mu, step, gw = problem
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    G, m = W.shape
    c = numeric_c(gw, np.full(G, m))
    X = fn(W, lam, mu, step, group_weights=gw)
    sets = R.row_index_sets(W.shape)
    x_cvx = R.cvx_groups(W, sets, step * lam * c * (1 - mu), step * lam * c * mu)
    f = R.objective(X, W, step * lam, sets_value(X, sets, c, mu))
    f_cvx = R.objective(x_cvx, W, step * lam, sets_value(x_cvx, sets, c, mu))
    # objective not above CVXPY's, distance within what strong convexity allows
    R.assert_agrees_with_cvxpy(X, x_cvx, f, f_cvx, R.objective_slack(W, step * lam, sets_value(W, sets, c, mu), W.size))


@pytest.mark.parametrize("op", OPS)
@given(R.ragged_groups(), R.lams, R.mus, R.steps, st.sampled_from([None, "sqrt", "array"]), st.data())
def test_ragged_objective_not_above_cvxpy(op, v, lam, mu, step, gw_kind, data):
    v, labels = v
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    uniq = np.unique(labels)
    sets = [np.nonzero(labels == g)[0] for g in uniq]
    if gw_kind == "array":  # indexed by label
        gw = data.draw(arrays(np.float64, int(labels.max()) + 1, elements=st.floats(0, 2, allow_subnormal=False)))
        c = gw[uniq]
    else:
        gw = gw_kind
        c = numeric_c(gw, [len(s) for s in sets])
    x = fn(v, lam, mu, step, groups=labels, group_weights=gw)
    assert x.shape == v.shape
    x_cvx = R.cvx_groups(v, sets, step * lam * c * (1 - mu), step * lam * c * mu)
    f = R.objective(x, v, step * lam, sets_value(x, sets, c, mu))
    f_cvx = R.objective(x_cvx, v, step * lam, sets_value(x_cvx, sets, c, mu))
    R.assert_agrees_with_cvxpy(x, x_cvx, f, f_cvx, R.objective_slack(v, step * lam, sets_value(v, sets, c, mu), v.size))


# --------------------------------------------------------------------- exact references


@given(row_problems(max_rows=3, max_cols=8))
# found by the long run (a reference bug: theta ~ 1e-277 needs relative bisection)
@example(problem=(np.array([[1.0, 2.19297955e-277], [2.19297955e-277, 2.19297955e-277]]), 1.0, 0.5, 1.0, np.array([2.19297955e-277, 0.0])))
def test_group_exclusive_equals_60_digit_reference(problem):
    W, lam, mu, step, gw = problem
    G, m = W.shape
    c = numeric_c(gw, np.full(G, m))
    X = proxlib.prox_group_exclusive(W, lam, mu, step, group_weights=gw)
    ref = np.array([R.exact_group_exclusive_row(W[g], lam, mu, step, c[g]) for g in range(G)])
    # proxlib forms a = step lam c (1 - mu), b = step lam c mu in float64 (a few
    # roundings each) and the prox is 1-Lipschitz in v and in a (and in b up to
    # the size of |v|), so the error is a few eps of the input's scale per entry
    # summed over the row: 16 m eps max|v|.  This is also 1e-12 relative to x
    # whenever ||x|| >= ~1e-3 max|v|.
    tol = 16 * m * EPS64 * (np.abs(W).max() + step * lam * c.max())
    np.testing.assert_allclose(X, ref, rtol=0, atol=tol)
    # (zeros are checked to the same tolerance: an entry within rounding of the
    # support boundary may come out as a tiny non-zero, or vice versa)


@given(row_problems(max_rows=3, max_cols=8))
def test_exclusive_equals_rational_reference(problem):
    W, lam, _, step, gw = problem
    G, m = W.shape
    c = numeric_c(gw, np.full(G, m))
    b = step * lam * c  # the same float64 products proxlib forms
    X = proxlib.prox_exclusive_lasso(W, lam, step, group_weights=gw)
    ref = np.array([R.exact_exclusive_row(W[g], b[g]) for g in range(G)])
    # only proxlib's own arithmetic differs from the exact answer: sorting and a
    # sum of m magnitudes, m eps of the largest magnitude
    np.testing.assert_allclose(X, ref, rtol=0, atol=4 * m * EPS64 * np.abs(W).max())
    # (zeros are checked to the same tolerance: an entry within rounding of the
    # support boundary may come out as a tiny non-zero, or vice versa)


@given(row_problems(max_rows=3, max_cols=8))
def test_group_lasso_equals_60_digit_reference(problem):
    W, lam, _, step, gw = problem
    G, m = W.shape
    c = numeric_c(gw, np.full(G, m))
    X = proxlib.prox_group_lasso(W, lam, step, group_weights=gw)
    ref = np.array([R.exact_group_exclusive_row(W[g], lam, 0.0, step, c[g]) for g in range(G)])
    tol = 8 * m * EPS64 * (np.abs(W).max() + step * lam * c.max())  # see the group_exclusive test
    np.testing.assert_allclose(X, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("b", [1e-8, 1e3, 1e8, 1e15, 1e16, 1e20, 1e100, 1e300])
@given(R.matrices(3, 6))
@example(W=np.array([[0.0, 1e-8, 0.5, 0.5]]))  # (b = 1e-8: an entry just above tau, found by the long profile)
def test_exclusive_large_parameter(b, W):
    # As b grows the exclusive prox tends to 0 but is not 0: the largest entries
    # (k of them, tied) become |w|_(1) / (1 + b k).  This regime was wrong in an
    # early version (x = w returned once b >= 2^53, NaN for b = inf); compare
    # with the exact rational answer.  Accuracy is asked on the scale of the
    # result itself, not of the input: |x_i| = (|w_i| - Y_k) + e with Y_k the
    # least magnitude on the support and e = (Y_k - b F_k)/(1 + b k), F_k the
    # support's sum of |w| - Y_k (m rounded non-negative terms, b F_k <= Y_k),
    # so |dx_i| <= 3 eps |x_i| + (m + 2) eps Y_k/(1 + b k).  For large b that
    # scale is the result's (Y_k/(1 + b k) is it for a tied top, and the
    # support's entries lie within about Y_k/(b k) of each other); for small b
    # it is Y_k: an entry just above tau is ill-conditioned relative to itself
    # (at the example, one ulp of the 0.5s moves x_1 = 2e-16 by 5e-9 of itself),
    # which no backward-stable formula, the reference's included, resolves.
    X = proxlib.prox_exclusive_lasso(W, b)
    ref = np.array([R.exact_exclusive_row(row, b) for row in W])
    m = W.shape[1]
    for x, r, w in zip(X, ref, W):
        kept = r != 0
        assert np.array_equal(x != 0, kept)  # (the exact support, as before)
        scale = np.abs(w[kept]).min() / (1.0 + b * kept.sum()) if kept.any() else 0.0
        assert np.all(np.abs(x - r) <= 16 * m * EPS64 * (np.abs(r) + scale)), (x, r)


@pytest.mark.parametrize("mu", [1.0, 0.5, 1 - 1e-12])
@pytest.mark.parametrize("step", [1e15, 1e16, 1e20, 1e300])
@given(R.matrices(3, 6))
def test_group_exclusive_large_parameter(mu, step, W):
    X = proxlib.prox_group_exclusive(W, 1.0, mu, step)
    ref = np.array([R.exact_group_exclusive_row(row, 1.0, mu, step) for row in W])
    # relative to x itself: the cancellation-free kernel keeps every digit (m eps for the sums)
    np.testing.assert_allclose(X, ref, rtol=16 * W.shape[1] * EPS64, atol=0)


# --------------------------------------------------------------------- certificates


@given(st.integers(1, 10), st.integers(1, 12), st.data())
def test_kkt_certificates(G, m, data):
    W = data.draw(R.matrices(G, m, min_rows=G, min_cols=m))
    lam, mu, step = data.draw(R.lams), data.draw(R.mus), data.draw(R.steps)
    gw = data.draw(group_weight_args(G))
    c = numeric_c(gw, np.full(G, m))
    for fn, fixed_mu in OPS.values():
        mu_ = fixed_mu if fixed_mu is not None else mu
        X = fn(W, lam, mu_, step, group_weights=gw)
        a, b = step * lam * c * (1 - mu_), step * lam * c * mu_
        kkt_check(W, X, a, b, kkt_tol(W, a, b, m))


def test_kkt_at_the_smallest_normal():
    # found by the long run (a test bug: a*x underflowed in the residual)
    tiny = np.finfo(np.float64).tiny
    W = np.array([[tiny, tiny], [tiny, -3 * tiny]])
    for fn, mu in ((group_lasso, 0.0), (exclusive, 1.0), (group_exclusive, 0.5)):
        X = fn(W, tiny, mu)
        a, b = np.full(2, tiny * (1 - mu)), np.full(2, tiny * mu)
        kkt_check(W, X, a, b, kkt_tol(W, a, b, 2))


@given(st.integers(1, 6), st.integers(1, 8), st.data())
def test_group_lasso_dual_certificate(G, m, data):
    # the group lasso is a norm: r = (v - x)/step has ||r_g|| <= lam c_g and
    # <r_g, x_g> = lam c_g ||x_g|| for every group
    W = data.draw(R.matrices(G, m, min_rows=G, min_cols=m))
    lam, step = data.draw(R.lams), data.draw(R.steps)
    X = proxlib.prox_group_lasso(W, lam, step)
    Rm = (W - X) / step
    tol = 8 * m * EPS64 * (np.abs(W).max() / step + lam)
    assert np.all(R.row_norms(Rm) <= lam + tol)
    np.testing.assert_allclose(np.sum(Rm * X, axis=1), lam * R.row_norms(X), rtol=0, atol=tol * (1 + np.abs(X).max()))


# --------------------------------------------------------------------- reductions


@given(row_problems(max_rows=4, max_cols=6))
def test_mu_zero_is_group_lasso_and_mu_one_is_exclusive(problem):
    W, lam, _, step, gw = problem
    tol = 8 * W.shape[1] * EPS64 * (np.abs(W).max() + step * lam * 2 * W.shape[1])
    np.testing.assert_allclose(
        proxlib.prox_group_exclusive(W, lam, 0.0, step, group_weights=gw),
        proxlib.prox_group_lasso(W, lam, step, group_weights=gw), rtol=0, atol=tol,
    )
    np.testing.assert_allclose(
        proxlib.prox_group_exclusive(W, lam, 1.0, step, group_weights=gw),
        proxlib.prox_exclusive_lasso(W, lam, step, group_weights=gw), rtol=0, atol=tol,
    )


@given(R.vectors(1, 12), R.lams, R.mus, R.steps)
def test_one_column_closed_forms(v, lam, mu, step):
    # One entry per group: ||x||_2 = ||x||_1 = |x|, so the problem is
    # 1/2(x - v)^2 + a|x| + b/2 x^2 with solution sign(v)(|v| - a)_+/(1 + b).
    W = v[:, None]
    a, b = step * lam * (1 - mu), step * lam * mu
    tol = 8 * EPS64 * (np.abs(v).max() + a)
    soft = lambda t: np.sign(v) * np.maximum(np.abs(v) - t, 0)  # noqa: E731
    np.testing.assert_allclose(proxlib.prox_group_exclusive(W, lam, mu, step)[:, 0], soft(a) / (1 + b), rtol=0, atol=tol)
    np.testing.assert_allclose(proxlib.prox_group_lasso(W, lam, step)[:, 0], soft(step * lam), rtol=0, atol=tol)
    np.testing.assert_allclose(
        proxlib.prox_exclusive_lasso(W, lam, step)[:, 0], v / (1 + step * lam), rtol=4 * EPS64, atol=0
    )


@pytest.mark.parametrize("op", OPS)
@given(R.vectors(1, 12), R.lams, R.mus, R.steps)
def test_1d_without_labels_is_one_group(op, v, lam, mu, step):
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    x = fn(v, lam, mu, step)
    assert x.shape == v.shape
    np.testing.assert_array_equal(x, fn(v[None, :], lam, mu, step)[0])


@given(R.matrices(4, 4), st.floats(0.01, 3), R.mus)
def test_huge_step_gives_zero(W, lam, mu):
    # group lasso and group + exclusive with mu < 1: a = step lam (1 - mu) exceeds
    # every row norm, so x = 0 exactly
    mu = min(mu, 0.99)
    np.testing.assert_array_equal(proxlib.prox_group_lasso(W, lam, 1e300), np.zeros_like(W))
    np.testing.assert_array_equal(proxlib.prox_group_exclusive(W, lam, mu, 1e300), np.zeros_like(W))


@pytest.mark.parametrize("kernel", ["array", "numba"])
def test_exclusive_lasso_kernels_zero_a_row_whose_b_is_infinite(kernel):
    """Every backend's exclusive-lasso kernel gives 0 (the limit b -> inf)
    on a row whose b is inf, and solves the other rows as alone; the public
    functions never pass b = inf (lam and step must be finite, and an
    overflowing product is saturated by proxlib._range), so only the
    kernels can show it.  The array kernel on NumPy and on torch."""
    W = np.array([[1.0, -2.0, 0.5], [3.0, 4.0, -1.0]])
    b = np.array([np.inf, 0.25])
    alone = proxlib.prox_exclusive_lasso(W[1:], 0.25)
    if kernel == "numba":
        NB = pytest.importorskip("proxlib.backends.numba_cpu")
        outs = [NB.exclusive_lasso(W, b, parallel=False)]
    else:
        from proxlib.backends import _xp_kernels as K

        outs = [K.exclusive_lasso(W, b)]
        torch = pytest.importorskip("torch")
        outs.append(K.exclusive_lasso(torch.from_numpy(W), torch.from_numpy(b)).numpy())
    for X in outs:
        np.testing.assert_array_equal(X[0], 0.0)
        np.testing.assert_allclose(X[1:], alone, rtol=4 * EPS64, atol=0)


def test_group_exclusive_root_far_below_one_on_the_torch_route():
    """Rows at 2^300 with a = 2^299 and b = 2^299 (so b = 2^600 on the
    rows scaled to [1, 2)): the shrink factor c is hundreds of binades below
    1, which the root search reaches by geometric bisection (halving [0, 1]
    instead stops 9% off on the first row).  The torch route agrees with
    the Numba kernel, independent code."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("numba")
    W = np.array([[3.0, -1.0, 0.5, 2.0], [1.0, 1.0, 1.0, 1.0], [2.0, 0.1, 0.0, -0.3]]) * 2.0**300
    with proxlib.use_backend("numba"):  # (this module pins the NumPy reference: the same array code)
        want = proxlib.prox_group_exclusive(W, 2.0**299, 0.5, 1.0)
    assert np.count_nonzero(want) >= 3
    with proxlib.use_backend("torch"):
        got = proxlib.prox_group_exclusive(torch.from_numpy(W), 2.0**299, 0.5, 1.0).numpy()
    np.testing.assert_allclose(got, want, rtol=16 * EPS64, atol=0)


def test_hand_cases():
    # exclusive lasso, row [3, 1, -0.5], b = 0.5: k = 1 (3 > 0.5*3/1.5 = 1 and
    # 1 <= tau), tau = b S_1/(1 + b) = 1.5/1.5 = 1, so x = [2, 0, 0].
    np.testing.assert_allclose(proxlib.prox_exclusive_lasso(np.array([[3.0, 1.0, -0.5]]), 0.5), [[2.0, 0, 0]], rtol=2 * EPS64)
    # b = 1, row [2, 2]: both in the support, tau = 1*4/(1 + 2) = 4/3, x = [2/3, 2/3]
    np.testing.assert_allclose(proxlib.prox_exclusive_lasso(np.array([2.0, 2.0]), 1.0), [2 / 3, 2 / 3], rtol=2 * EPS64)
    # group lasso on [3, 4] with lam 1: (1 - 1/5)[3, 4] = [2.4, 3.2]; a row exactly
    # at the threshold ([0.6, 0.8], norm 1) becomes 0
    np.testing.assert_allclose(proxlib.prox_group_lasso(np.array([[3.0, 4.0], [0.6, 0.8]]), 1.0), [[2.4, 3.2], [0, 0]], rtol=2 * EPS64)
    # group + exclusive, ||v|| exactly a: x = 0 (a = 2 * 0.5 = 1, v = [0.6, 0.8])
    np.testing.assert_array_equal(proxlib.prox_group_exclusive(np.array([0.6, 0.8]), 2.0, 0.5), [0.0, 0.0])


# --------------------------------------------------------------------- invariances


@pytest.mark.parametrize("op", OPS)
@given(row_problems(max_rows=5, max_cols=5), st.randoms(use_true_random=False))
def test_row_and_entry_permutation_and_signs(op, problem, rnd):
    W, lam, mu, step, gw = problem
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    G, m = W.shape
    X = fn(W, lam, mu, step)
    rows = np.array(rnd.sample(range(G), G))
    cols = np.array([rnd.sample(range(m), m) for _ in range(G)])  # a different permutation per row
    signs = np.array([[rnd.choice([-1.0, 1.0]) for _ in range(m)] for _ in range(G)])
    P = lambda A: np.take_along_axis((signs * A)[rows], cols, axis=1)  # noqa: E731
    # rows are independent problems and each is symmetric in its entries; only
    # the summation order inside norms changes: m eps of the scale
    tol = 8 * m * EPS64 * (np.abs(W).max() + step * lam * (1 + m * np.abs(W).max()))
    np.testing.assert_allclose(fn(P(W), lam, mu, step), P(X), rtol=0, atol=tol)
    np.testing.assert_array_equal(fn(-W, lam, mu, step), -X)  # sign flips are exact


@pytest.mark.parametrize("s", [2.0**-500, 2.0**500, 1e-150, 1e150, 3.0])
@given(row_problems(max_rows=4, max_cols=6))
def test_scaling(s, problem):
    # With x = s y:  1/2||x - s v||^2 + a||x|| + b/2||x||_1^2
    #             = s^2 (1/2||y - v||^2 + (a/s)||y|| + b/2 ||y||_1^2),
    # so scaling v by s needs a scaled by s and b unchanged.
    W, lam, mu, step, _ = problem
    m = W.shape[1]
    tol = 16 * m * EPS64 * s * (np.abs(W).max() * (1 + step * lam * m) + step * lam)
    np.testing.assert_allclose(proxlib.prox_group_lasso(s * W, lam, s * step), s * proxlib.prox_group_lasso(W, lam, step), rtol=0, atol=tol)
    np.testing.assert_allclose(proxlib.prox_exclusive_lasso(s * W, lam, step), s * proxlib.prox_exclusive_lasso(W, lam, step), rtol=0, atol=tol)
    a, b = step * lam * (1 - mu), step * lam * mu
    # express (s a, b) as (lam', mu') with step 1; one or two extra roundings,
    # unless s a or b is below the rounding of lam' = s a + b (then (lam', mu')
    # cannot represent the scaled problem and there is nothing to compare)
    lam_s = s * a + b
    mu_s = b / lam_s if lam_s > 0 else 0.0
    representable = np.isclose(lam_s * (1 - mu_s), s * a, rtol=8 * EPS64, atol=0) and np.isclose(lam_s * mu_s, b, rtol=8 * EPS64, atol=0)
    if lam_s > 0 and representable:
        np.testing.assert_allclose(
            proxlib.prox_group_exclusive(s * W, lam_s, mu_s), s * proxlib.prox_group_exclusive(W, lam, mu, step),
            rtol=0, atol=tol,
        )


# --------------------------------------------------------------------- ragged groups


@pytest.mark.parametrize("op", OPS)
@given(R.matrices(4, 4), R.lams, R.mus, R.steps, st.randoms(use_true_random=False))
def test_shuffled_labels_equal_rows(op, W, lam, mu, step, rnd):
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    G, m = W.shape
    labels = np.repeat(np.arange(G) * 7 + 3, m)  # non-contiguous label values
    perm = np.array(rnd.sample(range(G * m), G * m))
    v = W.ravel()[perm]
    x = fn(v, lam, mu, step, groups=labels[perm])
    X = fn(W, lam, mu, step)
    # entries of a group arrive in another order: summation order changes only
    tol = 8 * m * EPS64 * (np.abs(W).max() * (1 + step * lam * m) + step * lam)
    np.testing.assert_allclose(x, X.ravel()[perm], rtol=0, atol=tol)
    assert fn(v, lam, mu, step, groups=list(labels[perm])).shape == v.shape  # labels as a list


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("op", OPS)
def test_numpy_labels_of_a_torch_input_keep_every_group(op, dtype):
    # NumPy labels given with a torch input were converted through the dtype it
    # is computed in: float32 (float16's too) rounded 2^24 + 1 to 2^24 and the
    # two groups became one
    torch = pytest.importorskip("torch")
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else 0.5
    big = 2**24
    labels = np.array([big, big + 1, 3, 3])
    v = torch.tensor([1.0, 1.0, 2.0, -1.0], dtype=getattr(torch, dtype))
    with proxlib.use_backend("torch"):
        x = fn(v, 0.5, mu, 1.0, groups=labels)
        ref = fn(v, 0.5, mu, 1.0, groups=torch.from_numpy(labels))  # labels of v's library
        alone = fn(v[:1], 0.5, mu, 1.0)  # each of the two entries is a group of its own
    assert torch.equal(x, ref)
    assert torch.equal(x[:2], torch.cat([alone, alone]))


@pytest.mark.parametrize("op", OPS)
@given(R.ragged_groups(max_n=20, max_groups=5), R.lams, R.mus, R.steps, st.sampled_from([None, "sqrt", "array"]))
def test_ragged_equals_each_group_alone(op, vg, lam, mu, step, gw_kind):
    v, labels = vg
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    gw = np.linspace(0.5, 1.5, labels.max() + 1) if gw_kind == "array" else gw_kind
    x = fn(v, lam, mu, step, groups=labels, group_weights=gw)
    for g in np.unique(labels):
        idx = labels == g
        cg = numeric_c(gw, [idx.sum()])[0] if gw_kind != "array" else gw[g]
        # a group alone: a 1-D vector is one group, its weight folded into lam
        ref = fn(v[idx], lam * cg, mu, step)
        tol = 8 * idx.sum() * EPS64 * (np.abs(v).max() * (1 + step * lam * cg * idx.sum()) + step * lam * cg)
        np.testing.assert_allclose(x[idx], ref, rtol=0, atol=tol)


# --------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("s", [1e-150, 1e150])
@given(row_problems(max_rows=3, max_cols=5))
def test_extreme_scales_against_reference(op, s, problem):
    # The 60-digit reference solved at the extreme scale itself (not by scaling).
    W, lam, mu, step, _ = problem
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    Ws = W * s
    # keep a (a threshold on norms) at the data's scale, b scale-free
    lam_s, mu_s = (s * step * lam * (1 - mu) + step * lam * mu), None
    if lam_s == 0:
        mu_s = mu
    else:
        mu_s = step * lam * mu / lam_s
    X = fn(Ws, lam_s, mu_s)
    ref = np.array([R.exact_group_exclusive_row(row, lam_s, mu_s) for row in Ws])
    tol = 16 * W.shape[1] * EPS64 * (np.abs(Ws).max() + lam_s)
    np.testing.assert_allclose(X, ref, rtol=0, atol=tol)
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("op", OPS)
@given(row_problems(max_rows=5, max_cols=6))
def test_float32(op, problem):
    W, lam, mu, step, gw = problem
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else mu
    W32 = W.astype(np.float32)
    X32 = fn(W32, lam, mu, step, group_weights=gw)
    assert X32.dtype == np.float32 and X32.shape == W.shape
    X64 = fn(W32.astype(np.float64), lam, mu, step, group_weights=gw)
    # float32 data: a and b are rounded to float32 (relative eps32); the prox is
    # 1-Lipschitz in a and moves by <= eps32 |v| for a relative eps32 change of b;
    # plus the final rounding of x.  m for the sums over the row.
    c = numeric_c(gw, np.full(W.shape[0], W.shape[1]))
    tol = 4 * W.shape[1] * EPS32 * (np.abs(W32).max() + step * lam * c.max()) + TINY32  # + subnormal spacing
    np.testing.assert_allclose(X32.astype(np.float64), X64, rtol=0, atol=tol)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 5), (2, 3, 2, 2)])
def test_layouts_and_nd(op, shape):
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else 0.4
    rng = np.random.default_rng(3)
    A = rng.normal(size=shape)
    ref = fn(np.ascontiguousarray(A).reshape(shape[0], -1), 0.3, mu, 0.8).reshape(shape)
    variants = {
        "C": A,
        "fortran": np.asfortranarray(A),
        "strided": np.repeat(A, 2, axis=-1)[..., ::2],
        "transposed": np.ascontiguousarray(A.T).T,
        "negative-stride": np.flip(np.flip(A, 0).copy(), 0),
    }
    for name, B in variants.items():
        np.testing.assert_array_equal(B, A)
        np.testing.assert_array_equal(fn(B, 0.3, mu, 0.8), ref, err_msg=name)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_untouched_new_array_type_kept(op, dtype):
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else 0.5
    rng = np.random.default_rng(4)
    W = rng.normal(size=(3, 4)).astype(dtype)
    W[1] = 0.0  # a zero row
    W0 = W.copy()
    for lam in (0.0, 0.4):
        X = fn(W, lam, mu, 0.5)
        assert type(X) is np.ndarray and X.dtype == dtype and X.shape == W.shape
        assert not np.shares_memory(X, W)
        np.testing.assert_array_equal(X[1], 0.0)
    X = fn(W, 0.0, mu)  # lam = 0: the identity, still a new array
    np.testing.assert_array_equal(X, W)
    assert not np.shares_memory(X, W)
    v, labels = W.ravel(), np.array([2, 0, 1] * 4)
    x = fn(v, 0.4, mu, groups=labels, group_weights=np.ones(3))
    assert x.dtype == dtype and not np.shares_memory(x, v)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(labels, [2, 0, 1] * 4)


@pytest.mark.parametrize("op", OPS)
def test_degenerate_shapes(op):
    fn, fixed_mu = OPS[op]
    mu = fixed_mu if fixed_mu is not None else 0.5
    for shape in [(0, 3), (3, 0), (1, 1), (1, 5), (5, 1)]:
        W = np.ones(shape)
        X = fn(W, 0.1, mu)
        assert X.shape == shape and X.dtype == W.dtype
    assert fn(np.zeros(0), 0.1, mu, groups=np.zeros(0, dtype=int)).shape == (0,)


@given(R.matrices(4, 4), R.lams, R.steps)
def test_exclusive_ties_and_zero_rows(W, lam, step):
    # equal magnitudes within a row get equal outputs; zero rows stay zero
    X = proxlib.prox_exclusive_lasso(W, lam, step)
    A, B = np.abs(W), np.abs(X)
    for a, bb in zip(A, B):
        tied = a[:, None] == a[None, :]
        assert np.all((bb[:, None] == bb[None, :])[tied])
    assert np.all(X[np.all(W == 0, axis=1)] == 0)


@pytest.mark.parametrize("b", [1e3, 1e8, 1e15, 1e100])
@given(R.matrices(3, 6), st.floats(0.0, 0.5))
def test_group_exclusive_large_b_moderate_a(b, W, f):
    # The general path (a > 0, b > 0) with b large: x ~ |w| / (1 + b k) is tiny
    # and must still be accurate relative to itself.  An earlier kernel
    # subtracted a threshold theta ~ |w|_(1) from |w| and lost log10(b) digits.
    # a <= 0.5 ||u(b)|| keeps c = 1 - a/||u|| >= 1/2 (well conditioned).
    G, m = W.shape
    a = f * np.abs(W).max() / (1 + b * m)
    lam = a + b
    mu = b / lam
    X = proxlib.prox_group_exclusive(W, lam, mu)
    ref = np.array([R.exact_group_exclusive_row(row, lam, mu) for row in W])
    # lam (1 - mu) and lam mu are one or two roundings from (a, b): relative
    # 4 eps in x; sums over the row: m eps.
    for x, r in zip(X, ref):
        np.testing.assert_allclose(x, r, rtol=0, atol=16 * m * EPS64 * np.abs(r).max())


ROW_KINDS = ["general", "a=0", "b=0", "b=inf", "zero row", "a>=norm", "a=b=0"]


def rows_of_every_kind(W, nrm, kinds, scale):
    """Thresholds (a, b) for W (and W changed in place) that make row r of
    the kind kinds[r] (:data:`ROW_KINDS`): the group+exclusive kernels'
    cases, their zero rows and their unchanged rows in one call.  ``nrm``:
    the row norms that decide x = 0 (||w||, or ||D w|| in a metric D)."""
    G, m = W.shape
    a = 0.5 * nrm / scale
    b = np.full(G, scale / m)
    for r, kind in enumerate(kinds[:G]):
        if kind in ("a=0", "a=b=0"):
            a[r] = 0.0
        if kind in ("b=0", "a=b=0"):
            b[r] = 0.0
        if kind == "b=inf":
            b[r] = np.inf
        elif kind == "zero row":
            W[r] = 0.0
        elif kind == "a>=norm":
            a[r] = 2.0 * nrm[r]
    return a, b


@given(R.matrices(6, 7), st.lists(st.sampled_from(ROW_KINDS), min_size=6, max_size=6), st.floats(1e-3, 1e3))
def test_group_exclusive_searching_every_row_is_gathering_them_bit_for_bit(W, kinds, scale):
    """An accelerator's route (``gather=False``: every row through the root
    search, those that need none on a stand-in, no host read to find them)
    gives the gathered route's result bit for bit, with every kind of row
    in one call; on NumPy and on torch."""
    from proxlib.backends import _xp_kernels as K

    a, b = rows_of_every_kind(W, np.sqrt((W * W).sum(axis=1)), kinds, scale)
    gathered = K.group_exclusive(W, a, b)
    np.testing.assert_array_equal(K.group_exclusive(W, a, b, gather=False), gathered)
    torch = pytest.importorskip("torch")
    Wt, at, bt = (torch.from_numpy(x) for x in (W, a, b))
    np.testing.assert_array_equal(K.group_exclusive(Wt, at, bt, gather=False).numpy(), K.group_exclusive(Wt, at, bt).numpy())


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_group_exclusive_root_search_goes_on_with_the_rows_still_searching(lib):
    """On the host's route (``gather``) the root search drops the rows it
    has finished (most stop within 4-8 steps, the slowest of many rows
    after 20-40): the same c, bit for bit, as searching every row until the
    last one stops (an accelerator's route), and the later steps run on
    fewer rows.  Supports of 1-20 entries (one-entry rows: g is linear in
    c), b over 20 binades."""
    from proxlib._dispatch import array_namespace
    from proxlib.backends import _xp_kernels as K

    rng = np.random.default_rng(7)
    G = 4000
    k = rng.integers(1, 20, G).astype(float)
    Y = rng.uniform(0.01, 1, G) * np.exp(rng.uniform(-5, 5, G))
    F = np.where(k > 1, rng.uniform(0, 1, G) * k * Y * rng.uniform(0.1, 10, G), 0.0)
    D2 = np.where(k > 1, F * F / k * rng.uniform(1, 3, G), 0.0)
    a = rng.uniform(0, 0.9, G) * np.sqrt(D2 + k * Y * Y)
    b = np.exp(rng.uniform(-10, 10, G))
    args = [Y, F, D2, k, np.zeros(G), np.ones(G), a, b]
    if lib == "torch":
        torch = pytest.importorskip("torch")
        args = [torch.from_numpy(x) for x in args]
    xp = array_namespace(args[0])
    sizes = []

    class Spy:
        def __getattr__(self, name):
            return getattr(xp, name)

        def sqrt(self, x):
            sizes.append(x.shape[0])
            return xp.sqrt(x)

    copies = [np.asarray(x).copy() for x in args]
    dropped = np.asarray(K.group_exclusive_factor(*args, Spy(), gather=True))
    assert min(sizes) < G // 8 and max(sizes) == G
    for x, before in zip(args, copies):
        np.testing.assert_array_equal(np.asarray(x), before)  # (inputs untouched)
    sizes.clear()
    every_row = np.asarray(K.group_exclusive_factor(*args, Spy()))
    assert min(sizes) == G
    np.testing.assert_array_equal(dropped, every_row)
    assert np.all((dropped > 0) & (dropped < 1))


@pytest.mark.parametrize("op", OPS)
def test_ragged_groups_of_very_different_sizes_are_not_padded_to_the_largest(op):
    """One group of n/2 entries and n/2 singletons: padded together they
    held n^2/4 entries (18 MB here for 24 KB of data; gigabytes at n = 10^5,
    then a MemoryError or the OOM killer).  Solved by size class, the prox,
    its metric variant and Omega use memory of the data's order, and equal the
    padded layout's results to rounding (each group alone, as before); so
    does the thesis' sequential step (whose exclusive step is Eq. 8's)."""
    import tracemalloc

    from proxlib import _rows

    fn, mu = OPS[op]
    rng = np.random.default_rng(0)
    n = 3000
    groups = np.concatenate([np.zeros(n // 2, dtype=np.int64), 3 * np.arange(1, n // 2 + 1)])
    perm = rng.permutation(n)
    v, groups = rng.standard_normal(n)[perm], groups[perm]
    gw = rng.random(int(groups.max()) + 1) * 2
    d = rng.random(n) + 0.5
    lam, mu = 0.05, 0.3 if mu is None else mu
    pen = {"group_lasso": proxlib.GroupLasso(lam, groups, gw), "exclusive": proxlib.ExclusiveLasso(lam, groups, gw),
           "group_exclusive": proxlib.GroupExclusive(lam, mu, groups, gw)}[op]
    small = np.arange(4)  # (the first calls import modules: not under tracemalloc)
    fn(v[:4], lam, mu, 0.7, groups=small, group_weights=gw, metric=d[:4])
    pen.value(fn(v, lam, mu, 0.7, groups=groups, group_weights=gw))
    proxlib.prox_group_exclusive_sequential(v[:4], lam, mu, 0.7, groups=small, group_weights=gw)
    tracemalloc.start()
    try:
        x = fn(v, lam, mu, 0.7, groups=groups, group_weights=gw)
        xd = fn(v, lam, mu, 0.7, groups=groups, group_weights=gw, metric=d)
        value = pen.value(x)
        thesis = proxlib.prox_group_exclusive_sequential(v, lam, mu, 0.7, groups=groups, group_weights=gw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * v.nbytes, peak
    padded = _rows.PADDED_SLACK
    _rows.PADDED_SLACK = 10**12  # (never split: the padded layout)
    try:
        # (to rounding: a row's norm sums in an order that depends on the padded length)
        tol = 16 * EPS64 * np.abs(v).max()
        np.testing.assert_allclose(x, fn(v, lam, mu, 0.7, groups=groups, group_weights=gw), rtol=0, atol=tol)
        np.testing.assert_allclose(xd, fn(v, lam, mu, 0.7, groups=groups, group_weights=gw, metric=d), rtol=0, atol=tol)
        assert value == pytest.approx(pen.value(x), rel=1e-14)
        np.testing.assert_allclose(
            thesis, proxlib.prox_group_exclusive_sequential(v, lam, mu, 0.7, groups=groups, group_weights=gw), rtol=0, atol=tol
        )
    finally:
        _rows.PADDED_SLACK = padded
    assert x.dtype == np.float64 and x.shape == v.shape


def test_short_group_weights_of_split_groups_name_the_largest_label(monkeypatch):
    # split by size class, a group_weights array too short for the labels was
    # reported by the first part (the singletons, labels 40..59): "needs
    # length > max label (60)", where the largest label is 100 (101 needed, as
    # unsplit says): the class of the largest label now comes first
    from proxlib import _rows
    from proxlib import certificates as C

    monkeypatch.setattr(_rows, "PADDED_SLACK", 0)
    v = np.random.default_rng(4).standard_normal(40)
    groups = np.r_[np.full(20, 100), np.arange(40, 60)]
    assert _rows.ragged_parts(v, groups) is not None
    gw = np.ones(50)
    msg = r"needs length > max label \(101\), got 50"
    for pen in (proxlib.GroupLasso(0.3, groups, gw), proxlib.ExclusiveLasso(0.3, groups, gw), proxlib.GroupExclusive(0.3, 0.5, groups, gw)):
        for call in (lambda: pen.prox(v), lambda: pen.prox(v, metric=np.arange(1.0, 41.0)), lambda: pen.value(v),
                     lambda: C.certify(pen, v, v), lambda: C.residual_tolerance(pen, v)):
            with pytest.raises(ValueError, match=msg):
                call()
    with pytest.raises(ValueError, match=msg):
        proxlib.GroupLasso(0.3, groups, gw).dual_norm(v)
    with pytest.raises(ValueError, match=msg):
        proxlib.prox_group_exclusive_sequential(v, 0.3, 0.5, groups=groups, group_weights=gw)


def test_training_term_refuses_groups_labels_before_laying_them_out(monkeypatch):
    # a ProxTerm refuses groups= labels, but laid them out first: for very
    # uneven groups that was n_groups x largest-group rows (64 MB for one group
    # of 4000 and 4000 singletons, gigabytes from 10^5: MemoryError instead of
    # the ValueError); the refusal now comes before any layout
    torch = pytest.importorskip("torch")
    from proxlib import _registry
    from proxlib.torch import ProxTerm

    def no_layout(*args, **kwargs):
        raise AssertionError("laid out")

    monkeypatch.setattr(_registry, "layout_of", no_layout)
    groups = np.r_[np.zeros(20, dtype=np.int64), np.arange(1, 21)]
    p = torch.nn.Parameter(torch.randn(40))
    for pen in (proxlib.GroupLasso(0.1, groups=groups), proxlib.GroupExclusive(0.1, 0.5, groups=groups)):
        with pytest.raises(ValueError, match="groups= labels are not supported on a training term"):
            ProxTerm(p, pen)


@pytest.mark.parametrize("op", ["group_lasso", "exclusive", "group_exclusive"])
def test_empty_labels_list_of_an_empty_vector(op):
    """``groups=[]`` (a list, which NumPy makes float64) for an empty W was
    refused as "groups must hold integer labels, got dtype float64", on the
    prox functions and on the penalty objects when made; an int64 empty
    array was accepted.  Both now give the empty result."""
    make = {"group_lasso": lambda g: proxlib.GroupLasso(0.5, groups=g), "exclusive": lambda g: proxlib.ExclusiveLasso(0.5, groups=g),
            "group_exclusive": lambda g: proxlib.GroupExclusive(0.5, 0.5, groups=g)}[op]
    for groups in ([], ()):
        x = make(groups).prox(np.zeros(0), 1.0)
        assert x.shape == (0,) and x.dtype == np.float64
    with pytest.raises(TypeError, match="integer labels"):
        make([0.5, 1.0])  # (non-empty floats stay refused)


def test_split_groups_return_half_precision_as_the_unsplit(monkeypatch):
    # groups split by size class (proxlib._rows.ragged_parts) are computed in
    # float32 for a float16 input, and the result is returned in float16, the
    # same bits as the padded layout gives
    from proxlib import _rows

    v = np.random.default_rng(5).standard_normal(40).astype(np.float16)
    groups = np.r_[np.zeros(20, dtype=np.int64), np.arange(1, 21)]
    d = np.linspace(0.5, 2.0, 40)
    calls = (lambda: proxlib.prox_group_lasso(v, 0.3, groups=groups),
             lambda: proxlib.prox_exclusive_lasso(v, 0.3, groups=groups, metric=d))
    monkeypatch.setattr(_rows, "PADDED_SLACK", 10**12)  # (never split: the padded layout)
    unsplit = [call() for call in calls]
    monkeypatch.setattr(_rows, "PADDED_SLACK", 0)
    assert _rows.ragged_parts(v.astype(np.float32), groups) is not None
    for call, ref in zip(calls, unsplit):
        got = call()
        assert got.dtype == np.float16 and ref.dtype == np.float16
        np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------- the one-call lane
#
# prox_group_lasso, prox_exclusive_lasso and prox_group_exclusive (and the
# penalty objects' prox) with scalar parameters, no group weights, labels or
# metric, form their thresholds and run the general path's row kernel without
# its Python layers on Numba (proxlib.group.rows_in_one_call): the general
# path's result bit for bit, every error left to that path.

LANE_OPERATORS = {
    "group_lasso": (proxlib.prox_group_lasso, lambda lam, mu, **kw: proxlib.GroupLasso(lam, **kw), False),
    "exclusive_lasso": (proxlib.prox_exclusive_lasso, lambda lam, mu, **kw: proxlib.ExclusiveLasso(lam, **kw), False),
    "group_exclusive": (proxlib.prox_group_exclusive, lambda lam, mu, **kw: proxlib.GroupExclusive(lam, mu, **kw), True),
}


def _lane_outcome(fn):
    try:
        x = fn()
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return x.dtype, x.shape, x.tobytes()  # (bits: signed zeros, NaN payloads)


@st.composite
def row_lane_problems(draw):
    """Valid and invalid calls near every edge the lane tests, rows of every
    layout (1-D: one row, N-D: W.reshape(G, -1); F-ordered and strided
    ones are the general path's) and both kernels behind it (serial rows;
    a parallel-sized W through the kernel's parallel route)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(st.one_of(
        st.tuples(st.integers(1, 6), st.integers(1, 5)), st.tuples(st.integers(1, 12)),
        st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
        st.sampled_from([(300, 784), (0, 3), (3, 0)])))
    if np.prod(shape) <= 60:
        W = draw(arrays(np.float64, shape, elements=R.elements())).astype(dtype)
    else:
        W = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape).astype(dtype)
    W = W * dtype(draw(st.sampled_from([1.0, 1.0, 2.0**-1040, 2.0**-140])))  # (rows where a threshold near 2^-1074 counts)
    lam = draw(st.one_of(st.floats(0.0, 3.0), st.sampled_from([
        0.0, -0.0, 0.3, 1, 0, np.float32(0.3), np.float64(0.7), np.array(0.25), np.array([0.25]), -1e-300, -1.0,
        math.nan, math.inf, 2.0**-1060, 2.0**-1074, 1e-300, 2.0**76, 2.0**77, 2.0**100, 2.0**876, 2.0**877, 2.0**1000,
        2.0**1010, 3 * 2**1030, 1e-200, True, "0.5"])))
    mu = draw(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 0.5, 1, 0, -0.0, 1e-300, 1.0 - 2.0**-53, -1e-300,
                                                             1.5, math.nan, np.float32(0.25), np.array(0.5), "0.5"])))
    flaw = draw(st.sampled_from(["none", "none", "none", "nan_W", "inf_W", "fortran_W", "strided_W", "groups", "weights"]))
    if W.size and flaw in ("nan_W", "inf_W"):
        W.reshape(-1)[draw(st.integers(0, W.size - 1))] = np.nan if flaw == "nan_W" else -np.inf
    elif flaw == "fortran_W" and W.ndim == 2:
        W = np.asfortranarray(W)
    elif flaw == "strided_W" and W.ndim == 1:
        W = np.repeat(W, 2)[::2]
    step = draw(st.one_of(
        st.sampled_from([1.0, 0.5, 1, 3, 2.0**-1022, 2.0**-1023, 1e-200, 2.0**100, 2.0**101, 2.0**1000, 2.0**1001, 1e300,
                         np.float64(0.7), 0.0, -1.0]),
        st.floats(1e-300, 1e300)))
    extra = {}
    if flaw == "groups" and W.ndim == 1:
        extra = {"groups": np.arange(W.shape[0]) % 2}
    elif flaw == "weights" and W.ndim >= 1:
        extra = {"group_weights": "sqrt"}
    return W, lam, mu, step, extra, draw(st.booleans())


@pytest.mark.parametrize("name", sorted(LANE_OPERATORS))
@given(problem=row_lane_problems())
def test_row_one_call_lane_equals_the_general_path(name, problem):
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    from proxlib import _registry

    fn, make, two = LANE_OPERATORS[name]
    W, lam, mu, step, extra, check_finite = problem
    args = (lam, mu) if two else (lam,)
    with proxlib.use_backend("numba"):
        expected = _lane_outcome(lambda: _registry.apply(make(lam, mu, copy=False, **extra), W, step, check_finite=check_finite))
        assert _lane_outcome(lambda: fn(W, *args, step, check_finite=check_finite, **extra)) == expected
        try:
            pen = make(lam, mu, **extra)
        except (ValueError, TypeError):
            return
        assert _lane_outcome(lambda: pen.prox(W, step, check_finite=check_finite)) == expected


@pytest.mark.parametrize("name", sorted(LANE_OPERATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (64, 64), (10, 300), (3, 4, 5), (300, 784)])
def test_row_one_call_lane_takes_the_common_call(name, dtype, shape, monkeypatch):
    """The lane answers the common call on Numba (the rows serially, or the
    kernel's parallel route for a parallel-sized W), so the test above
    compares two paths; the general path is not called.  Another backend:
    the general path; a subclass of the penalty with other thresholds
    (exclusive.py's _GroupTimes, _ExclusiveTimes): the general path."""
    if "numba" not in proxlib.available_backends():
        pytest.skip("numba does not import here")
    from proxlib import _registry, exclusive, group

    fn, make, two = LANE_OPERATORS[name]
    args = (0.3, 0.25) if two else (0.3,)
    W = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    with proxlib.use_backend("numba"):
        expected = _registry.apply(make(0.3, 0.25), W, 0.5).tobytes()
        assert group.rows_in_one_call(name, W, args, 0.5, True) is not None
        with monkeypatch.context() as m:
            m.setattr(_registry, "_apply", lambda *a, **k: pytest.fail("the general path ran"))
            assert fn(W, *args, 0.5).tobytes() == expected
            assert make(0.3, 0.25).prox(W, 0.5).tobytes() == expected
        if not two:  # (lam * factor: not the lane's thresholds)
            times = (exclusive._GroupTimes if name == "group_lasso" else exclusive._ExclusiveTimes)(0.3, factor=4.0)
            assert times.prox(W, 0.5).tobytes() == _registry.apply(make(1.2, None), W, 0.5).tobytes()
    assert group.rows_in_one_call(name, W, args, 0.5, True) is None  # (the module's backend: NumPy's, no lane)
