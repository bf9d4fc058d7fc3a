"""The prox in a diagonal metric: argmin_x 1/2 sum_i d_i (x_i - v_i)^2 + step Omega(x).

Ground truth (``_metric_ref``): CVXPY with the weighted quadratic (compared
through strong convexity in the d-norm), exact rationals (exclusive lasso),
60-digit decimals (group lasso, group + exclusive, lp), solver-free KKT
certificates.  Reductions: a constant metric is the Euclidean prox with step
/ d (bit for bit through the public functions, to rounding through the
kernels); mu = 0 and mu = 1.  Invariances: d and step scaled together, signs,
permutations.  Edge cases, bad input, and parity of the numpy, numba and torch
(CPU) backends.

Tolerances.  The prox in the metric d is 1-Lipschitz in the d-norm
||r||_d = sqrt(sum d_i r_i^2) (it is the Euclidean prox after the change of
variables y = sqrt(d) x), so errors are measured in that norm, per row,
against the row's natural scale: ||v||_d (every |x_i| <= |v_i|, and the
algorithms perturb quantities bounded by |v| relatively) plus
min(a, ||d v||) / sqrt(min d) (near the group threshold the root s = ||x|| is
known to eps (s + a/d), as s = ||v|| - a is in the Euclidean case); the
factor is 16 (m + 2) eps, m the row length (sums over the row, a root found
to the last bit), plus the subnormal spacing.
"""

from __future__ import annotations

import ast
import functools
import math
import pathlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as C
import _metric_ref as M
import proxlib
from proxlib.backends import _metric_kernels as MK
from proxlib.backends import numpy_ref
from test_group_ops import ROW_KINDS, group_weight_args, numeric_c, rows_of_every_kind  # the Euclidean tests' strategies

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
TINY64 = 64 * float(np.finfo(np.float64).smallest_subnormal)
TINY32 = 4 * float(np.finfo(np.float32).smallest_subnormal)

ROW_OPS = ("group_lasso", "exclusive", "group_exclusive")


def row_prox(op, W, lam, mu, step=1.0, **kw):
    if op == "group_lasso":
        return proxlib.prox_group_lasso(W, lam, step, **kw)
    if op == "exclusive":
        return proxlib.prox_exclusive_lasso(W, lam, step, **kw)
    return proxlib.prox_group_exclusive(W, lam, mu, step, **kw)


def op_mu(op, mu):
    return {"group_lasso": 0.0, "exclusive": 1.0}.get(op, mu)


def thresholds(lam, mu, step, c):
    """(a, b) as proxlib forms them: step * (lam (1 - mu) c) and step * (lam mu c) in float64."""
    c = np.asarray(c, dtype=np.float64)
    return step * (lam * (1.0 - mu) * c), step * (lam * mu * c)


def row_thresholds(shape, lam, mu, step, gw):
    """:func:`thresholds` of the rows of a (G, m) matrix under ``group_weights=gw``."""
    G, m = shape
    return thresholds(lam, mu, step, numeric_c(gw, np.full(G, m)))


def _thresholds_below_the_normal_range(lam, mu, step, c) -> bool:
    """Whether a nonzero threshold of any row operator, step * lam * f * c_r
    with f in {1, 1 - mu, mu}, lies below 2^-1022 (exact: from the factors'
    log2)."""
    factors = [f for f in (1.0, 1.0 - mu, mu) if f > 0]
    if not (lam > 0 and step > 0):
        return False
    return any(math.log2(step) + math.log2(lam) + math.log2(f) + math.log2(cr) < -1022
               for f in factors for cr in np.ravel(c) if cr > 0)


def sets_value(x, sets, a, b):
    """sum_g a_g ||x_g||_2 + b_g/2 ||x_g||_1^2 (thresholds include the step)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    total = 0.0
    for idx, ag, bg in zip(sets, a, b):
        xg = x[idx]
        total += ag * (np.hypot.reduce(xg) if xg.size else 0.0) + bg / 2 * np.abs(xg).sum() ** 2
    return float(total)


def row_tol(v, d, a, m, eps=EPS64, tiny=TINY64):
    """16 (m + 2) eps times the row's natural scale in the d-norm (module docstring)."""
    v = np.asarray(v, dtype=np.float64).ravel()
    d = np.asarray(d, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    dv = np.abs(d * v) if np.all(np.isfinite(d * v)) else None
    reach = min(a, M.d_norm(dv, np.ones_like(d)) if dv is not None else math.inf) / math.sqrt(d.min())
    return 16 * (m + 2) * eps * (M.d_norm(v, d) + reach) + tiny * math.sqrt(d.max()) * math.sqrt(m)


def rows_close(X, REF, W, D, a, b=None, eps=EPS64, tiny=TINY64):
    """Per row: ||X_g - REF_g||_d <= row_tol(W_g, D_g, a_g).  (The exclusive
    threshold theta = b ||x||_1 never exceeds the support's smallest d|v|, so
    its rounding moves x by at most eps ||v||_d: b needs no term of its own.)"""
    X, REF, W, D = (np.asarray(A, dtype=np.float64) for A in (X, REF, W, D))
    G = W.shape[0] if W.ndim > 1 else 1
    X, REF, W, D = (A.reshape(G, -1) for A in (X, REF, W, D))
    m = W.shape[1]
    for g in range(G):
        err = M.d_norm(X[g] - REF[g], D[g])
        tol = row_tol(W[g], D[g], a[g], m, eps, tiny)
        assert err <= tol, ("row", g, "error", err, "tolerance", tol, X[g], REF[g])


# ------------------------------------------------------------------ strategies


@st.composite
def metric_row_problems(draw, max_rows=4, max_cols=4, lo_exp=-3.0, hi_exp=3.0):
    W = draw(C.matrices(max_rows, max_cols))
    D = draw(M.metrics(W.shape, lo_exp, hi_exp))
    gw = draw(group_weight_args(W.shape[0]))
    return W, D, draw(C.lams), draw(C.mus), draw(C.steps), gw


# ------------------------------------------------------------------ against CVXPY


@pytest.mark.parametrize("op", ROW_OPS)
@given(metric_row_problems())
def test_rows_against_cvxpy(numpy_backend, op, problem):
    W, D, lam, mu, step, gw = problem
    mu = op_mu(op, mu)
    a, b = row_thresholds(W.shape, lam, mu, step, gw)
    X = row_prox(op, W, lam, mu, step, group_weights=gw, metric=D)
    assert X.shape == W.shape and X.dtype == W.dtype
    sets = C.row_index_sets(W.shape)
    x_cvx = M.cvx_metric_groups(W, D, sets, a, b)
    f = M.metric_objective(X, W, D, sets_value(X, sets, a, b))
    f_cvx = M.metric_objective(x_cvx, W, D, sets_value(x_cvx, sets, a, b))
    M.assert_agrees_with_cvxpy_metric(X, x_cvx, D, f, f_cvx, M.metric_slack(W, D, sets_value(W, sets, a, b), W.size))


@pytest.mark.parametrize("op", ROW_OPS)
@given(C.ragged_groups(), C.lams, C.mus, C.steps, st.sampled_from([None, "sqrt", "array"]), st.data())
def test_ragged_against_cvxpy(numpy_backend, op, vg, lam, mu, step, gw_kind, data):
    v, labels = vg
    mu = op_mu(op, mu)
    d = data.draw(M.metrics(v.shape))
    uniq = np.unique(labels)
    sets = [np.nonzero(labels == g)[0] for g in uniq]
    if gw_kind == "array":
        gw = data.draw(arrays(np.float64, int(labels.max()) + 1, elements=st.floats(0, 2, allow_subnormal=False)))
        c = gw[uniq]
    else:
        gw = gw_kind
        c = numeric_c(gw, [len(s) for s in sets])
    a, b = thresholds(lam, mu, step, c)
    x = row_prox(op, v, lam, mu, step, groups=labels, group_weights=gw, metric=d)
    assert x.shape == v.shape
    x_cvx = M.cvx_metric_groups(v, d, sets, a, b)
    f = M.metric_objective(x, v, d, sets_value(x, sets, a, b))
    f_cvx = M.metric_objective(x_cvx, v, d, sets_value(x_cvx, sets, a, b))
    M.assert_agrees_with_cvxpy_metric(x, x_cvx, d, f, f_cvx, M.metric_slack(v, d, sets_value(v, sets, a, b), v.size))


@pytest.mark.parametrize("op", ["weighted_l1", "weighted_l2sq"])
@given(st.data())
def test_separable_against_cvxpy(numpy_backend, op, data):
    v = data.draw(C.vectors(1, 10))
    d = data.draw(M.metrics(v.shape))
    w = data.draw(st.one_of(st.floats(0, 3), arrays(np.float64, v.shape, elements=st.floats(0, 3))))
    step = data.draw(C.steps)
    if op == "weighted_l1":
        x = proxlib.prox_weighted_l1(v, w, step, metric=d)
        x_cvx = M.cvx_metric_weighted_l1(v, d, step * np.asarray(w))
        omega = lambda z: C.weighted_l1_value(z, step * np.broadcast_to(w, v.shape))  # noqa: E731
    else:
        x = proxlib.prox_weighted_l2sq(v, w, step, metric=d)
        x_cvx = M.cvx_metric_weighted_l2sq(v, d, step * np.asarray(w))
        omega = lambda z: C.weighted_l2sq_value(z, step * np.broadcast_to(w, v.shape))  # noqa: E731
    f, f_cvx = M.metric_objective(x, v, d, omega(x)), M.metric_objective(x_cvx, v, d, omega(x_cvx))
    M.assert_agrees_with_cvxpy_metric(x, x_cvx, d, f, f_cvx, M.metric_slack(v, d, omega(v), v.size))


@given(st.data())
def test_owl_and_growl_constant_metric_against_cvxpy(numpy_backend, data):
    # the only metrics OWL and GrOWL take: constant ones (then step / d)
    W = data.draw(C.matrices(3, 3))
    delta = data.draw(M.metric_elements())
    D = np.full(W.shape, delta)
    step = data.draw(C.steps)
    w = data.draw(C.nonincreasing_weights(W.size))
    x = proxlib.prox_owl(W.ravel(), w, step, metric=D.ravel())
    x_cvx = M.cvx_metric_owl(W.ravel(), D.ravel(), step * w)
    f, f_cvx = (M.metric_objective(z, W, D, C.owl_value(z, step * w)) for z in (x, x_cvx))
    M.assert_agrees_with_cvxpy_metric(x, x_cvx, D, f, f_cvx, M.metric_slack(W, D, C.owl_value(W, step * w), W.size))
    wg = data.draw(C.nonincreasing_weights(W.shape[0]))
    X = proxlib.prox_growl(W, wg, step, metric=D)
    X_cvx = M.cvx_metric_growl(W, D, step * wg)
    f, f_cvx = (M.metric_objective(z, W, D, C.growl_value(z, step * wg)) for z in (X, X_cvx))
    M.assert_agrees_with_cvxpy_metric(X, X_cvx, D, f, f_cvx, M.metric_slack(W, D, C.growl_value(W, step * wg), W.size))


# ------------------------------------------------------------------ exact references


@given(metric_row_problems(max_rows=3, max_cols=8))
def test_exclusive_equals_rational_reference(numpy_backend, problem):
    W, D, lam, _, step, gw = problem
    G, m = W.shape
    _, b = thresholds(lam, 1.0, step, numeric_c(gw, np.full(G, m)))
    X = proxlib.prox_exclusive_lasso(W, lam, step, group_weights=gw, metric=D)
    ref = np.array([M.exact_exclusive_metric_row(W[g], D[g], b[g]) for g in range(G)])
    rows_close(X, ref, W, D, np.zeros(G), b)


@pytest.mark.parametrize("op", ["group_lasso", "group_exclusive"])
@given(metric_row_problems(max_rows=3, max_cols=6))
def test_group_ops_equal_60_digit_reference(numpy_backend, op, problem):
    W, D, lam, mu, step, gw = problem
    mu = op_mu(op, mu)
    G = W.shape[0]
    a, b = row_thresholds(W.shape, lam, mu, step, gw)
    X = row_prox(op, W, lam, mu, step, group_weights=gw, metric=D)
    ref = np.array(
        [
            M.exact_exclusive_metric_row(W[g], D[g], b[g]) if a[g] == 0 else M.exact_group_exclusive_metric_row(W[g], D[g], a[g], b[g])
            for g in range(G)
        ]
    )
    rows_close(X, ref, W, D, a, b)


@pytest.mark.parametrize("p", [0.0, 0.5, 2.0 / 3.0, 0.3, 0.9, 1.0])
@given(C.vectors(1, 6), st.floats(0.0, 3.0), C.steps, st.data())
def test_lp_equals_reference(numpy_backend, p, v, lam, step, data):
    d = data.draw(M.metrics(v.shape))
    x = proxlib.prox_lp(v, lam, p, step, metric=d)
    lam_i = (step * lam) / d  # the per-entry parameters proxlib forms (float64)
    # (where they are subnormal or underflow to 0 while step lam > 0, float64
    # holds them only roughly, and proxlib solves with the exact quotient,
    # as test_lp_per_entry_parameter_beyond_float64 checks: this float64
    # reference, which would take lam_i = 0 there, is not the problem solved;
    # the exact step lam is > 0 whenever both are, even where their float64
    # product underflows: step 0.5, lam 5e-324 gave 0 there and let a
    # float64 lam_i = 0 through)
    assume(not np.any((lam_i < np.finfo(np.float64).tiny) & (step > 0) & (lam > 0)))
    for i in range(v.size):
        # away from the discontinuity at the threshold, where 0 and x* tie
        C.not_near(v[i], proxlib.lp_threshold(lam_i[i], p), rel=1e-7)
    ref = v if lam == 0 else np.array([C.exact_lp_scalar(v[i], lam_i[i], p) for i in range(v.size)])
    # per entry, x* solves x + lam_i p x^(p-1) = |v_i| on the branch x >= beta,
    # where a relative perturbation of lam_i or of the evaluation moves x by at
    # most 2 |v_i| times it (test_elementwise.lp_rtol): 32 eps |v_i|
    np.testing.assert_array_equal(x == 0, ref == 0)
    assert np.all(np.abs(x - ref) <= 32 * EPS64 * np.abs(v)), (x, ref)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.9])
@proxlib.use_backend(None)  # automatic dispatch (the module's other tests pin numpy)
def test_lp_per_entry_parameter_beyond_float64(lib, p):
    # lam_i = step lam / d_i may overflow or underflow while the threshold,
    # of order lam_i^(1/(2-p)), is an ordinary float: v = 1e200 with
    # lam_i = 1e310 (p = 0: threshold 1.4e155) must be kept, v = 1e-250 with
    # lam_i = 7e-341 (threshold 1e-170) zeroed.  The quotient gave inf (x = 0)
    # and 0 (x = v).  Each entry is the Euclidean prox at step / d_i, which
    # proxlib solves exactly at any lam (proxlib._range).
    v = np.array([1e200, -1e-250, 3e-200, -2e250, 1.0, 5e-300, 7e280])
    d = np.array([1e-250, 1e300, 1e250, 1e-200, 1.0, 1e300, 1e-300])
    lam, step = 1e60, 0.7
    lam_small = 1e-40
    for lam_ in (lam, lam_small):
        ref = np.array([proxlib.prox_lp(v[i:i + 1], lam_, p, step / d[i])[0] for i in range(v.size)])
        if lib == "torch":
            torch = _torch()
            x = proxlib.prox_lp(torch.from_numpy(v), lam_, p, step, metric=torch.from_numpy(d)).numpy()
        else:
            x = proxlib.prox_lp(v, lam_, p, step, metric=d)
        np.testing.assert_array_equal(x == 0, ref == 0, err_msg=f"lam={lam_}: {x} vs {ref}")
        assert np.all(np.abs(x - ref) <= 32 * EPS64 * np.abs(v)), (lam_, x, ref)


# ------------------------------------------------------------------ certificates


def kkt_metric(V, X, Dm, a, b, tol):
    """Optimality of each row x of min 1/2 sum d (x - v)^2 + a ||x||_2 + b/2 ||x||_1^2:
    r = d (v - x) must equal a x/||x|| + b ||x||_1 sign(x) on the support, with
    |d_i v_i| <= b ||x||_1 off it; x = 0 iff ||d v|| <= a.  Residuals in units of
    the row's d-weighted magnitudes, plus what the rounding of x itself moves
    where x is subnormal: each x_i on the float grid (spacing s, the least
    subnormal) moves x/||x|| by up to sqrt(m) s / ||x|| and ||x||_1 by m s
    (the correctly rounded exact solution fails the check without this:
    2^-1022 w and a = 0.999 ||w|| give x = 2^-1032 w, residuals 2.8e-321
    against 2.1e-321)."""
    for v, x, d, ag, bg, t in zip(V, X, Dm, a, b, tol):
        nx = np.hypot.reduce(x) if x.size else 0.0
        if nx == 0:
            assert np.hypot.reduce(d * v) <= ag + t, ("zero row but ||d v|| > a", np.hypot.reduce(d * v), ag)
            continue
        L = np.abs(x).sum()
        on = x != 0
        assert np.all(np.sign(x[on]) == np.sign(v[on])), "the prox flipped a sign"
        grid = float(np.finfo(x.dtype).smallest_subnormal)
        t = t + ag * (math.sqrt(x.size) * (grid / nx)) + bg * (x.size * grid)  # (b m s: m s first, b = 2^1023 b m overflowed)
        res = d[on] * (v[on] - x[on]) - ag * (x[on] / nx) - bg * L * np.sign(x[on])
        assert np.all(np.abs(res) <= t), ("stationarity on the support", np.abs(res).max(), t)
        assert np.all(np.abs(d[~on] * v[~on]) <= bg * L + t), "off-support entry above b ||x||_1"


def kkt_tol(W, D, a):
    """Residuals are differences of terms of size <= max d|v| (d (v - x), and
    b ||x||_1 = theta <= the support's smallest d|v|) and a (where x != 0,
    a < ||d v||), each formed with O(m) roundings."""
    dv = np.abs(D * W)
    m = W.shape[1]
    return 16 * (m + 2) * EPS64 * (dv.max(axis=1) + np.minimum(a, np.hypot.reduce(dv, axis=1))) + TINY64


@given(st.integers(1, 6), st.integers(1, 10), st.data())
def test_kkt_certificates(numpy_backend, G, m, data):
    W = data.draw(C.matrices(G, m, min_rows=G, min_cols=m))
    D = data.draw(M.metrics(W.shape))
    lam, mu, step = data.draw(C.lams), data.draw(C.mus), data.draw(C.steps)
    for op in ROW_OPS:
        mu_ = op_mu(op, mu)
        a, b = thresholds(lam, mu_, step, np.ones(G))
        X = row_prox(op, W, lam, mu_, step, metric=D)
        kkt_metric(W, X, D, a, b, kkt_tol(W, D, a))


@given(C.vectors(1, 12), st.data())
def test_separable_certificates(numpy_backend, v, data):
    d = data.draw(M.metrics(v.shape))
    w = data.draw(arrays(np.float64, v.shape, elements=st.floats(0, 3)))
    x = proxlib.prox_weighted_l1(v, w, metric=d)
    r = d * (v - x)  # must lie in w * d|x|
    tol = 8 * EPS64 * (np.abs(d * v) + w)
    on = x != 0
    np.testing.assert_array_less(np.abs(r[on] - w[on] * np.sign(x[on])), tol[on] + TINY64)
    assert np.all(np.abs(r[~on]) <= w[~on] + tol[~on])
    y = proxlib.prox_weighted_l2sq(v, w, metric=d)
    np.testing.assert_allclose(d * (v - y), 2 * w * y, rtol=0, atol=8 * EPS64 * np.abs(d * v).max() + TINY64)


# ------------------------------------------------------------------ reductions


def _flat(a):
    return a.reshape(-1) if hasattr(a, "shape") else a


def _all_calls(v2d, rng):
    """(name, call(v, step, metric=...)) for every operator on the 2-D array v2d."""
    G, m = v2d.shape
    w_owl = np.sort(rng.uniform(0, 1, v2d.size))[::-1]
    w_growl = np.sort(rng.uniform(0, 1, G))[::-1]
    return {
        "owl": lambda v, s, **k: proxlib.prox_owl(v.ravel(), w_owl, s, **({"metric": _flat(k["metric"])} if "metric" in k else {})),
        "growl": lambda v, s, **k: proxlib.prox_growl(v, w_growl, s, **k),
        "group_lasso": lambda v, s, **k: proxlib.prox_group_lasso(v, 0.7, s, **k),
        "exclusive": lambda v, s, **k: proxlib.prox_exclusive_lasso(v, 0.7, s, **k),
        "group_exclusive": lambda v, s, **k: proxlib.prox_group_exclusive(v, 0.7, 0.4, s, **k),
        "weighted_l1": lambda v, s, **k: proxlib.prox_weighted_l1(v, 0.3, s, **k),
        "weighted_l2sq": lambda v, s, **k: proxlib.prox_weighted_l2sq(v, 0.3, s, **k),
        "lp": lambda v, s, **k: proxlib.prox_lp(v, 0.3, 0.5, s, **k),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("delta", [1.0, 0.5, 3.0, 1e-3])
def test_constant_metric_is_the_euclidean_prox_bit_for_bit(delta, dtype):
    # the documented reduction: a constant metric delta runs the Euclidean
    # operator with step / delta, so the bits are those of that call (and
    # metric = ones is no metric at all); every operator, on every backend
    rng = np.random.default_rng(5)
    W = rng.normal(size=(4, 6)).astype(dtype)
    for name, call in _all_calls(W, rng).items():
        ref = call(W, 0.8 / delta)
        for D in (np.full(W.shape, delta), np.full(W.shape, delta, dtype=np.float32 if delta != 1e-3 else np.float64)):
            np.testing.assert_array_equal(call(W, 0.8, metric=D), ref, err_msg=name)
        if delta == 1.0:
            np.testing.assert_array_equal(call(W, 0.8, metric=np.ones(W.shape)), call(W, 0.8), err_msg=name)


@pytest.mark.parametrize("op", ["group_lasso", "exclusive", "group_exclusive"])
@given(C.matrices(4, 6), st.sampled_from([1.0, 0.5, 3.0, 1e-3, 7e2]), C.lams, C.mus, C.steps)
def test_metric_kernels_with_a_constant_metric_are_the_euclidean_kernels(op, W, delta, lam, mu, step):
    # the metric kernels themselves (which apply_metric bypasses for constant
    # metrics) against the Euclidean kernels with thresholds / delta: the same
    # problem, solved by other formulas, so equal to rounding
    mu = op_mu(op, mu)
    G, m = W.shape
    a, b = thresholds(lam, mu, step, np.ones(G))
    D = np.full(W.shape, delta)
    if op == "group_lasso":
        X, ref = MK.group_lasso_metric(W, D, a), numpy_ref.group_lasso(W, a / delta)
    elif op == "exclusive":
        X, ref = MK.exclusive_lasso_metric(W, D, b), numpy_ref.exclusive_lasso(W, b / delta)
    else:
        X, ref = MK.group_exclusive_metric(W, D, a, b), numpy_ref.group_exclusive(W, a / delta, b / delta)
    rows_close(X, ref, W, D, a, b)


@given(C.vectors(1, 12), st.sampled_from([1.0, 0.5, 3.0, 1e-3]), st.floats(0, 3), st.sampled_from([0.0, 0.5, 0.3, 1.0]))
def test_separable_kernels_with_a_constant_metric(v, delta, w, p):
    # the reference takes the threshold w / delta as a float: where that
    # leaves the normal range it is rounded (5e-324 / 3 is 0), while the
    # kernels keep w / d_i exact (lp_metric's scaling), so there the
    # reference is not the same problem (the hard threshold sqrt(2 w/3) of
    # w = 5e-324 is 2.2e-162, not 0: found by the long profile)
    assume(w == 0 or w / delta >= np.finfo(np.float64).tiny)
    d = np.full(v.shape, delta)
    wv = np.full(1, w)
    tol = 4 * EPS64 * (np.abs(v).max() + w / delta)
    np.testing.assert_allclose(MK.weighted_l1_metric(v, d, wv), numpy_ref.weighted_l1(v, wv / delta), rtol=0, atol=tol)
    np.testing.assert_allclose(MK.weighted_l2sq_metric(v, d, wv), numpy_ref.weighted_l2sq(v, wv / delta), rtol=4 * EPS64, atol=0)
    C.not_near(v, proxlib.lp_threshold(w / delta, p), rel=1e-7)
    np.testing.assert_allclose(MK.lp_metric(v, d, w, p), numpy_ref.lp(v, w / delta, p), rtol=0, atol=tol)


def _same_bits(X, ref):
    """X is ref entry by entry, the sign of a zero included; NaN where ref is
    NaN (its payload aside)."""
    assert X.dtype == ref.dtype and X.shape == ref.shape
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(X), nan)
    np.testing.assert_array_equal(np.signbit(X[~nan]), np.signbit(ref[~nan]))
    np.testing.assert_array_equal(X[~nan], ref[~nan])


@pytest.mark.parametrize("name", ["weighted_l1_metric", "weighted_l2sq_metric"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(st.data())
def test_numba_separable_metric_kernels_are_the_array_code_bit_for_bit(name, dtype, data):
    """Numba's one-pass weighted l1 and weighted squared l2 in a metric make
    the array code's float64 operations entry by entry: the same bits for
    any floats (NaN, +-inf, subnormals, -0; an unchecked metric of any sign),
    one weight or one per entry (inf included), a float64 metric of float32
    data (a metric divided by 2^E), in place, serially and in parallel, and
    on strided inputs (which take the array code)."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    width = 32 if dtype == np.float32 else 64
    n = data.draw(st.integers(1, 40), label="n")
    v = data.draw(arrays(dtype, n, elements=st.floats(width=width)), label="v")
    d_dtype = data.draw(st.sampled_from([dtype, np.float64]), label="d dtype")
    d = data.draw(arrays(d_dtype, n, elements=st.floats(width=32 if d_dtype == np.float32 else 64)), label="d")
    w = data.draw(arrays(np.float64, data.draw(st.sampled_from([1, n]), label="weights"), elements=st.floats(0, None)), label="w")
    kernel, reference = getattr(nb, name), getattr(MK, name)
    with np.errstate(all="ignore"):
        ref = reference(v, d, w)
        _same_bits(kernel(v, d, w, parallel=False), ref)
        x = v.copy()
        assert kernel(x, d, w, out=x) is x
        _same_bits(x, ref)
        # strided views of the same values (the array code's route)
        _same_bits(kernel(np.repeat(v, 2)[::2], np.repeat(d, 2)[::2], w), ref)
        # long enough for the parallel loop (nb._PAR_MIN entries)
        reps = -(-nb._PAR_MIN // n)
        W = w if w.shape[0] == 1 else np.tile(w, reps)
        _same_bits(kernel(np.tile(v, reps), np.tile(d, reps), W), np.tile(ref, reps))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(st.data())
def test_numba_lp_metric_is_the_array_code(dtype, data):
    """Numba's one-pass lp in a metric makes the array code's operations
    entry by entry; its powers are libm's where the array code's are
    NumPy's, so: p = 1 (no power) the same bits; otherwise each entry the
    array code's to 16 eps where both are nonzero, and where one is zero
    the two are a tie of the entry's objective (within its rounding).  Any
    magnitudes of the data and the metric (lam / d beyond [2^-1000, 2^1000]:
    solved at the entry's scale), NaN and +-inf passing through, one lam or
    one per entry; in place, in parallel and on strided inputs the serial
    result's bits."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    n = data.draw(st.integers(1, 24), label="n")
    with np.errstate(over="ignore", under="ignore"):  # (float32: beyond its range, inf and 0)
        v = data.draw(arrays(np.float64, n, elements=st.floats(-1e300, 1e300) | st.sampled_from([np.nan, np.inf, -np.inf, -0.0])), label="v").astype(dtype)
        d = data.draw(arrays(np.float64, n, elements=st.floats(1e-300, 1e300)), label="d").astype(dtype)
    assume(np.all(d > 0) and np.all(np.isfinite(d)))
    p = data.draw(st.sampled_from([0.0, 0.5, 2.0 / 3.0, 1.0]) | st.floats(0.05, 0.95), label="p")
    lam = data.draw(st.floats(1e-300, 1e300) | st.just(0.0) | st.floats(0.0, 1e300).map(np.array)  # (a number, 0, a 0-d array)
                    | arrays(np.float64, n, elements=st.floats(0.0, 1e300)), label="lam")
    with np.errstate(all="ignore"):
        X, R = nb.lp_metric(v, d, lam, p, parallel=False), MK.lp_metric(v, d, lam, p)
    if p == 1.0:
        _same_bits(X, R)
    x, r, v64, d64 = (np.asarray(A, dtype=np.float64) for A in (X, R, v, d))
    np.testing.assert_array_equal(np.isnan(x), np.isnan(r))
    eps = float(np.finfo(dtype).eps)
    both = (x != 0) & (r != 0) & np.isfinite(r)
    np.testing.assert_array_less(np.abs(x[both] - r[both]), 16 * eps * np.abs(r[both]) + 1e-300)
    one = (x == 0) != (r == 0)
    if one.any():  # a tie between 0 and x*: equal objectives 1/2 d (x - v)^2 + lam |x|^p, relative to d v^2
        lam_i = np.broadcast_to(np.asarray(lam, dtype=np.float64), v64.shape)[one]
        with np.errstate(all="ignore"):
            obj = lambda z: (0.5 * (z - v64[one]) ** 2 + (lam_i / d64[one]) * np.abs(z) ** p) / v64[one] ** 2
            assert np.all(np.abs(obj(x[one]) - obj(r[one])) <= 64 * eps), (x[one], r[one])
    # and where the penalty's pull is a fair part of each entry (the drawn ones are often all or nothing)
    vm, dm = np.linspace(0.5, 3.0, 64).astype(dtype), np.linspace(0.5, 2.0, 64).astype(dtype)
    xm, rm = nb.lp_metric(vm, dm, 0.3, p).astype(np.float64), MK.lp_metric(vm, dm, 0.3, p).astype(np.float64)
    both = (xm != 0) & (rm != 0)
    assert both.sum() > 32
    np.testing.assert_array_less(np.abs(xm[both] - rm[both]), 16 * eps * np.abs(rm[both]))
    y = v.copy()
    assert nb.lp_metric(y, d, lam, p, out=y) is y
    _same_bits(y, X)
    reps = -(-nb._PAR_MIN // n)  # (the parallel loop)
    L = lam if np.ndim(lam) == 0 else np.tile(lam, reps)
    _same_bits(nb.lp_metric(np.tile(v, reps), np.tile(d, reps), L, p), np.tile(X, reps))
    with np.errstate(all="ignore"):  # strided: the array code
        S = nb.lp_metric(np.repeat(v, 2)[::2], np.repeat(d, 2)[::2], lam, p)
    _same_bits(S, R)


def _lp_preselection():
    """_lp_one's pre-selection of 0 as a compiled function of (av, lam_i, p):
    ``not av > tau (1 - 1e-9)`` with tau = c_tau lam_i^r formed as
    _lp_metric_one forms it (libm's pow, then the products)."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    import numba

    @numba.njit
    def below(av, li, r, c_tau):
        tau = c_tau * li**r
        return not av > tau * (1.0 - 1e-9)

    return nb, below


_NEAR = [0.0, 2.0**-52, 2.0**-45, 2.0**-41, 2.0**-40, 2.0**-39, 2.0**-30, 1e-9, 1e-6, 0.5]


@given(st.data())
def test_numba_lp_metric_skips_the_power_only_below_its_preselection(data):
    """_lp_surely_below (the pow-free test of p = 1/2 and 2/3) answers True
    only where the pre-selection with the power returns 0, at magnitudes
    within a few ulps of its bound as well as far from it, lam_i over the
    whole float range (out of its range it answers False); and it answers
    True wherever the magnitude is 2^-38 below that bound and lam_i in
    [2^-290, 2^290] (where the power is then skipped)."""
    nb, below = _lp_preselection()
    p = data.draw(st.sampled_from([0.5, 2.0 / 3.0]), label="p")
    _, p_code, r, c_tau, _, c_pow = nb._lp_constants(p)
    exponent = st.integers(-310, 310) | st.integers(-1074, 1024)
    lis = [math.ldexp(m, e) for m, e in data.draw(st.lists(st.tuples(st.floats(0.5, 1.0, exclude_max=True), exponent), min_size=1, max_size=8), label="lam_i")]
    for li in [x for x in lis if 0.0 < x < math.inf]:
        bound = c_tau * li**r * (1.0 - 1e-9)
        rels = [s * x for x in _NEAR for s in (-1.0, 1.0)] + data.draw(st.lists(st.floats(-1e-3, 1e-3), max_size=8), label="rel")
        avs = [bound * (1.0 + x) for x in rels] + [math.nextafter(bound, math.inf), math.nextafter(bound, 0.0)]
        avs += data.draw(st.lists(st.floats(0.0, 1e300), max_size=4), label="anywhere")
        for av in [x for x in avs if x < math.inf]:
            surely = nb._lp_surely_below(av, li, p_code, c_pow)
            if surely:
                assert below(av, li, r, c_tau), (av, li, p)
            if 2.0**-290 <= li <= 2.0**290 and av <= bound * (1.0 - 2.0**-38):
                assert surely, (av, li, p)
            if not 2.0**-300 <= li <= 2.0**300:
                assert not surely, (av, li, p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(st.data())
def test_numba_lp_metric_is_the_same_with_and_without_the_power_skipped(dtype, data):
    """The lp kernel in a metric with _lp_surely_below on (its constants) and
    off (c_pow = 0: no entry decided without its power): the same bits, on
    entries near the pre-selection's bound and anywhere, any metric."""
    nb, _ = _lp_preselection()
    p = data.draw(st.sampled_from([0.5, 2.0 / 3.0]), label="p")
    lpc = nb._lp_constants(p)
    n = data.draw(st.integers(1, 32), label="n")
    lam = data.draw(st.floats(1e-300, 1e300), label="lam")
    with np.errstate(over="ignore", under="ignore"):  # (float32: beyond its range, inf and 0)
        d = data.draw(arrays(np.float64, n, elements=st.floats(1e-300, 1e300)), label="d").astype(dtype)
    assume(np.all(d > 0) and np.all(np.isfinite(d)))
    with np.errstate(all="ignore"):
        li = lam / d.astype(np.float64)
        bound = lpc[3] * li ** lpc[2] * (1.0 - 1e-9)
        rel = data.draw(arrays(np.float64, n, elements=st.sampled_from(_NEAR + [-x for x in _NEAR])), label="rel")
        v = (bound * (1.0 + rel)).astype(dtype)
        anywhere = data.draw(arrays(np.float64, n, elements=st.floats(-1e300, 1e300)), label="anywhere").astype(dtype)
    v = np.where(data.draw(arrays(np.bool_, n), label="near"), v, anywhere)
    w = np.array([lam])
    on, off = np.empty_like(v), np.empty_like(v)
    nb._lp_metric_seq(v, w, on, (d,) + lpc)
    nb._lp_metric_seq(v, w, off, (d,) + lpc[:5] + (0.0,))
    _same_bits(on, off)


@functools.lru_cache(maxsize=None)
def _lp_scalar_maps():
    """The scalar maps of Numba's lp kernels (its entry functions entry by
    entry, as for every p other than 1/2 and 2/3): the reference of its
    lanes (:func:`proxlib.backends.numba_cpu._lp_half_lane`,
    ``_lp_two_thirds_lane``); and the lanes' cube root and the scalar
    path's (compiled once: inside a Hypothesis test, once per example)."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    import numba

    @numba.njit(error_model="numpy")  # (the kernels' model: x / 0 is inf, not an exception)
    def plain(v, w, out, c, check):
        return nb._map_seq(v, w, out, nb._lp_entry, c, check)

    @numba.njit(error_model="numpy")
    def metric(v, w, out, c):
        return nb._map_seq(v, w, out, nb._lp_metric_at, c, False)

    @numba.njit(error_model="numpy")
    def cbrt_lanes(a):
        return nb._cbrt_in_range(a)

    @numba.njit(error_model="numpy")
    def cbrt_scalar(a):
        return nb._cbrt_pos(a)

    return nb, plain, metric, cbrt_lanes, cbrt_scalar


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(st.data())
def test_numba_lp_lanes_are_its_scalar_entries(k, dtype, data):
    """p = 1/2 and 2/3 (k = 2, 3): Numba's lp kernels (Euclidean and in a
    metric; serial, parallel, in place) take a branch-free pass over
    blocks of entries and leave to the scalar entry function only the
    entries it cannot finish (Newton not yet stalled after its fixed
    steps: c = p lam |v|^(p-2) above about 0.1; NaN, +-inf; for p = 2/3
    |v| outside [2^-1000, 2^1000], where the cube root is libm's; in a
    metric lam / d out of its range, or |v| >= 2^1020).  Bit for bit the
    scalar map, on entries drawn at every c of the pre-selection (both sides of the threshold c_star, far above
    and at it) and anywhere, one lam or one per entry, lengths across
    block boundaries, NaN and +-inf counted as the scalar map counts them."""
    nb, plain, metric, _, _ = _lp_scalar_maps()
    n = data.draw(st.integers(1, 3 * nb._LP_BLOCK + 5), label="n")
    c_star = nb._lp_root_constants(k)[0]
    p = 0.5 if k == 2 else 2.0 / 3.0  # (the p of p_code k - 1: 1 - 1/3 rounds above 2/3)
    lam = data.draw(arrays(np.float64, n, elements=st.floats(1e-12, 1e12)) | arrays(np.float64, 1, elements=st.floats(1e-12, 1e12)), label="lam")
    d = data.draw(arrays(np.float64, n, elements=st.floats(1e-6, 1e6)) | st.just(np.ones(n)), label="d").astype(dtype)
    li = lam / d.astype(np.float64)
    near = [c_star * (1.0 + x) for x in (-2.0**-40, -1e-9, 0.0, 1e-9, 2.0**-30, 2.0**-20, 1e-3)]
    cs = data.draw(arrays(np.float64, n, elements=st.floats(0.0, 0.42) | st.sampled_from(near) | st.floats(1e-12, 1e-3)), label="c")
    with np.errstate(all="ignore"):
        v = (p * li / cs) ** (1.0 / (2.0 - p))  # the |v| of that c at lam / d (c = 0: inf)
        v = np.where(data.draw(arrays(np.bool_, n), label="negative"), -v, v).astype(dtype)
    anywhere = data.draw(arrays(np.float64, n, elements=st.floats(-1e30, 1e30) | st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-305, -3e-310])), label="anywhere").astype(dtype)
    v = np.where(data.draw(arrays(np.bool_, n), label="drawn c"), v, anywhere)
    w = lam if lam.shape[0] == n else np.full(1, lam[0])
    c_plain = (p, 0.0, 0.0, k - 1)  # (p, tau, beta, p_code): tau and beta unused by p = 1/2, 2/3
    (seq, par_), (mseq, mpar) = nb._LP_KERNELS[k - 1], nb._LP_METRIC_KERNELS[k - 1]  # (the lanes' kernels)
    lpc = (d,) + nb._lp_constants(p)
    with np.errstate(all="ignore"):
        for check in (False, True):
            want, got = np.empty_like(v), np.empty_like(v)
            bad_want = plain(v, w, want, c_plain, check)
            bad_got = seq(v, w, got, c_plain, check)
            _same_bits(got, want)
            assert bad_got == bad_want
        mw, mg = np.empty_like(v), np.empty_like(v)
        metric(v, w, mw, lpc)
        mseq(v, w, mg, lpc)
        _same_bits(mg, mw)
        y = v.copy()
        mseq(y, w, y, lpc)  # in place
        _same_bits(y, mw)
        y = v.copy()
        seq(y, w, y, c_plain, False)
        _same_bits(y, want)
        par = np.empty_like(v)
        mpar(v, w, par, lpc)
        _same_bits(par, mw)
        assert par_(v, w, par, c_plain, True) == bad_want
        _same_bits(par, want)


@given(st.data())
def test_numba_cube_root_in_range_is_within_two_ulps(data):
    """numba_cpu._cbrt_in_range, the lanes' branch-free cube root (the
    exponent divided by three on the bits, four Newton steps): within 2
    units in the last place of the exact root (40 digits) over its whole
    range [2^-1000, 2^1000], at its ends, at powers of 8 and between them;
    and _cbrt_pos, the scalar path's root, is it there."""
    mpmath = pytest.importorskip("mpmath")
    _, _, _, lanes, scalar = _lp_scalar_maps()
    a = data.draw(st.floats(2.0**-1000, 2.0**1000) | st.sampled_from([2.0**-1000, 2.0**1000, 1.0, 8.0, 0.125, 2.0**999, 3.0, 7.999999999999999]), label="a")
    got = lanes(a)
    with mpmath.workdps(40):
        exact = mpmath.cbrt(mpmath.mpf(a))
        assert abs(mpmath.mpf(got) - exact) <= 2 * math.ulp(float(exact)), (a, got, exact)
    assert scalar(a) == got


@pytest.mark.parametrize("k", [2, 3])
def test_lp_root_constants_bound_the_threshold(k):
    """_lp_root's c_star is the c = p lam |v|^(p-2) of an entry at lp's
    threshold (lp_threshold, where x* and 0 tie), and its pre-selection
    bound lies just above it and below the c where the root leaves
    (h(u) = u^(k+1) - u + c has no root past u_min = (k+1)^(-1/k))."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    p = 1.0 - 1.0 / k
    c_star, c_pre = nb._lp_root_constants(k)
    for lam in (1e-8, 0.3, 1.0, 7e5):
        tau = proxlib.lp_threshold(lam, p)
        assert math.isclose(p * lam * tau ** (p - 2.0), c_star, rel_tol=1e-13)
    u_min = (k + 1.0) ** (-1.0 / k)
    c_gone = u_min - u_min ** (k + 1)  # h(u_min) = 0
    assert c_star < c_pre <= c_star * (1.0 + 2.0**-19) and c_pre < 0.9 * c_gone
    # and the start, the root's series to c^2, lies past u_min (h' > 0 there: the
    # first Newton step lands at or right of the root) for every c kept
    u0 = 1.0 - c_pre * (1.0 / k + c_pre * ((k + 1.0) / (2.0 * k**3)))
    assert u0 > u_min + 0.2


def _numba_row_kernel(op):
    """(Numba's kernel, the array code) of the row operator ``op``, both
    called as f(W, D, a, b, **kw)."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    if op == "group_lasso":
        return (lambda W, D, a, b, **kw: nb.group_lasso_metric(W, D, a, **kw)), (lambda W, D, a, b: MK.group_lasso_metric(W, D, a))
    if op == "exclusive":
        return (lambda W, D, a, b, **kw: nb.exclusive_lasso_metric(W, D, b, **kw)), (lambda W, D, a, b: MK.exclusive_lasso_metric(W, D, b))
    return nb.group_exclusive_metric, MK.group_exclusive_metric


@pytest.mark.parametrize("m", [20, 300, 1500])
@pytest.mark.parametrize("kind", ["plain", "zeros", "outlier", "ties", "one octave"])
def test_numba_pair_order_is_the_lexicographic_order(m, kind):
    """The exclusive kernels' sort (:func:`numba_cpu._pair_order`: packed
    keys sorted by a window of their bits, the whole keys where the window
    leaves many out of order, then an insertion pass) is the order of
    (Z, Zlo) decreasing, ties by index, on rows that take each path: spread
    products (the window alone: two digits for 300 keys, three for 1500;
    20 keys by insertion), a pruned row's zeros (kept out of the window),
    one product far above the rest (the whole keys), ties, products within
    one octave."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    rng = np.random.default_rng(m)
    d, v = np.exp(rng.uniform(-3, 3, m)), np.abs(rng.standard_normal(m))
    if kind == "zeros":
        v[rng.random(m) < 0.4] = 0.0
    elif kind == "outlier":  # (a cluster within 2^-20 and products 2^-1000 apart from it: the window is too coarse)
        d, v = np.ones(m), 1.0 + rng.uniform(0.0, 2.0**-20, m)
        v[:: m // 3] = 2.0**-1000
    elif kind == "ties":
        v = np.round(v, 1)
        d = np.ones(m)
    elif kind == "one octave":
        d, v = np.ones(m), rng.uniform(1.0, 2.0, m)
    Z, Zlo = np.empty(m), np.empty(m)
    for i in range(m):
        Z[i], Zlo[i] = nb._two_product(d[i], v[i])
    order = nb._pair_order(Z, Zlo, np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))
    np.testing.assert_array_equal(order, np.lexsort((np.arange(m), -Zlo, -Z)))
    if m <= nb._PAIR_INSERTION:  # (no window)
        return
    # which path the row took: the window's sort alone, or the whole keys after it
    low = (1 << int(m - 1).bit_length()) - 1
    keys = ((nb._INF_BITS - Z.view(np.int64)) & ~low) | np.arange(m)
    nb._radix_sort_window(keys, np.empty(m, dtype=np.int64), nb._INF_BITS & ~low)
    assert (nb._descents(keys) * 32 > m) == (kind == "outlier")


@given(data=st.data())
def test_numba_pair_order_breaks_ties_by_zlo_then_index(data):
    """_pair_order on pairs whose Z repeat (a few values, zeros among them,
    and neighbours one unit in the last place apart, which the packed keys
    truncate to one value), with low parts that differ or repeat: the order
    of (Z, Zlo) decreasing, then the index increasing, whichever entries its
    insertion pass skips; a negative Z (an unchecked metric) takes the
    argsort path to the same order."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    m = data.draw(st.integers(1, 200))
    base = data.draw(st.lists(st.floats(2.0**-60, 2.0**60), min_size=1, max_size=4))
    values = [0.0] + base + [np.nextafter(b, np.inf) for b in base]
    if data.draw(st.booleans()):
        values.append(-1.0)
    Z = np.array(data.draw(st.lists(st.sampled_from(values), min_size=m, max_size=m)))
    Zlo = np.array([data.draw(st.sampled_from([0.0, 1.0, -1.0])) * z * 2.0**-60 for z in Z])
    order = nb._pair_order(Z, Zlo, np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))
    np.testing.assert_array_equal(order, np.lexsort((np.arange(m), -Zlo, -Z)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_numba_exclusive_metric_candidates_give_the_whole_rows_bits(dtype, data):
    """The exclusive lasso in a metric solves each row from the entries
    above a point found by Newton's steps without sorting
    (:func:`numba_cpu._ex_metric_candidates`), and from the whole sorted
    row where the candidates' search does not end inside them: the array
    code's bits either way, on long rows whose supports range from one
    entry to all of them, with zeros (pruned entries), ties and a metric
    spread over decades."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    G, m = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 300))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    W = rng.standard_normal((G, m)) * 10.0 ** rng.uniform(-3, 3, (G, 1))
    kind = data.draw(st.sampled_from(["plain", "zeros", "ties", "mostly zeros"]))
    if kind == "zeros":
        W[rng.random((G, m)) < 0.5] = 0.0
    elif kind == "ties":
        W = np.round(W, 1)
    elif kind == "mostly zeros":
        W[rng.random((G, m)) < 0.95] = 0.0
    spread = data.draw(st.sampled_from([0.0, 1.0, 6.0]))
    D = 10.0 ** rng.uniform(-spread, spread, (G, m)) * 10.0 ** rng.uniform(-3, 3)
    if data.draw(st.booleans()):
        D = np.round(D, 2) + 0.01  # (tied products)
    W, D = W.astype(dtype), D.astype(dtype)
    # b from a one-entry support (b large against 1/||d w||_1) to all of it
    scale = np.abs(D.astype(np.float64) * W).sum(axis=1) + 1e-300
    b = 10.0 ** data.draw(st.floats(-4, 4)) / scale
    with np.errstate(all="ignore"):
        X, ref = nb.exclusive_lasso_metric(W, D, b, parallel=False), MK.exclusive_lasso_metric(W, D, b)
    _same_bits(X, ref)


@pytest.mark.parametrize("op", ROW_OPS)
@given(st.integers(1, 6), st.integers(1, 12), st.data())
def test_numba_row_kernels_in_a_metric(op, G, m, data):
    """Numba's row-by-row group lasso, exclusive lasso and group+exclusive
    in a metric: the group lasso and group+exclusive the array code's
    result to the accuracy of its row sums (another summation order), the
    exclusive lasso its bits (the same sort, cumulative sums and prefix;
    its norm only decides zero rows), all KKT-certified; float32 within the
    same bound at float32's eps; the same bits from C- and F-contiguous
    rows (F: the column tiles), in place, serially and in parallel; a row
    of w or d holding NaN or +-inf returned as it is, as the array code
    returns it."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    kernel, reference = _numba_row_kernel(op)
    W = data.draw(C.matrices(G, m, min_rows=G, min_cols=m), label="W")
    D = data.draw(M.metrics(W.shape), label="D")
    lam, step = data.draw(C.lams, label="lam"), data.draw(C.steps, label="step")
    mu = op_mu(op, data.draw(C.mus, label="mu"))
    c = data.draw(st.sampled_from([np.ones(G), np.linspace(0.5, 2.0, G)]), label="c")
    drawn = np.ones(G, dtype=bool)
    a, b = thresholds(lam, mu, step, c)
    if op != "exclusive":
        near = data.draw(st.sampled_from([None, 0.5, 0.999, 1.001, 1 - 2.0**-40]), label="a / ||d w||")
        if near is not None:  # thresholds about the rows' ||d w||: zero rows on either side of it
            a = near * np.hypot.reduce(D * W, axis=1)
    if op != "group_lasso":
        b0 = data.draw(st.sampled_from([b[0], 0.0, np.inf, 1e300, 2.0**1000 * b[0]]), label="b_0")  # (saturated rows: b / d beyond 2^600)
        drawn[0] = b0 == b[0]  # (the certificate's zero test assumes no x underflowing to 0: not for b = 1e300)
        b[0] = b0
    with np.errstate(all="ignore"):
        X, ref = kernel(W, D, a, b, parallel=False), reference(W, D, a, b)
    if op == "exclusive":
        _same_bits(X, ref)
    rows_close(X, ref, W, D, a, b)
    ok = drawn & np.isfinite(b)
    kkt_metric(W[ok], X[ok], D[ok], a[ok], b[ok], kkt_tol(W[ok], D[ok], a[ok]))
    for layout in (np.ascontiguousarray, np.asfortranarray):
        Wl, Dl = layout(W), layout(D)
        np.testing.assert_array_equal(kernel(Wl, Dl, a, b), X)
        Y = Wl.copy(order="K")
        assert kernel(Y, Dl, a, b, out=Y) is Y
        np.testing.assert_array_equal(Y, X)
    reps = -(-nb._PAR_MIN // W.size)  # (the parallel rows)
    np.testing.assert_array_equal(kernel(np.tile(W, (reps, 1)), np.tile(D, (reps, 1)), np.tile(a, reps), np.tile(b, reps)),
                                  np.tile(X, (reps, 1)))
    # the whole float range: data and metric scaled apart by powers of two (exact), the thresholds with them
    fw, fd = data.draw(st.sampled_from([(2.0**-900, 1.0), (2.0**600, 2.0**-600), (1.0, 2.0**-1000), (2.0**-500, 2.0**500), (2.0**900, 2.0**100)]), label="scales")
    with np.errstate(over="ignore", under="ignore"):  # (beyond the range: not drawn)
        Ws, Ds = W * fw, D * fd
        a_s, b_s = a * (fw * fd), b * fd  # (a scales with d w, b with d: x scales with w)
    assume(np.all(np.isfinite(Ws)) and np.all(Ds > 0) and np.all(np.isfinite(Ds)))
    with np.errstate(all="ignore"):
        Xs, refs = kernel(Ws, Ds, a_s, b_s), reference(Ws, Ds, a_s, b_s)
    if op == "exclusive":
        _same_bits(Xs, refs)
    rows_close(Xs, refs, Ws, Ds, a_s, b_s)
    W32, D32 = W.astype(np.float32), D.astype(np.float32)
    assume(np.all(np.isfinite(W32)) and np.all(D32 > 0))
    with np.errstate(all="ignore"):
        X32, ref32 = kernel(W32, D32, a, b), reference(W32, D32, a, b)
    if op == "exclusive":
        _same_bits(X32, ref32)
    rows_close(X32, ref32, W32, D32, a, b, eps=EPS32, tiny=TINY32)
    bad = W.copy()
    bad[0, data.draw(st.integers(0, m - 1), label="where")] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value")
    with np.errstate(all="ignore"):
        Xb, ref = kernel(bad, D, a, b), reference(bad, D, a, b)
    np.testing.assert_array_equal(Xb[0], bad[0])
    np.testing.assert_array_equal(ref[0], bad[0])
    if G > 1:
        rows_close(Xb[1:], ref[1:], W[1:], D[1:], a[1:], b[1:])


@pytest.mark.parametrize("op", ROW_OPS)
@given(st.integers(16, 40), st.integers(2, 19), st.data())  # (a row of one entry: the row kernel)
def test_numba_metric_column_tiles_are_the_rows_bit_for_bit(op, G, m, data):
    """Rows that are the columns of a C-contiguous matrix (an F-contiguous
    W: a Linear weight's "channel" rows) go through scratch a tile of 16
    columns at a time, whole tiles in 8 x 8 blocks (_transpose8) and the
    rows past the last multiple of 8 and the last, partial tile one by one:
    the same bits as the C-contiguous rows, into a new array and in place,
    float32 and float64, a row holding NaN or inf (in a whole tile)
    returned as it is.  (test_numba_row_kernels_in_a_metric draws fewer
    rows than a tile.)"""
    kernel, _ = _numba_row_kernel(op)
    dt = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    W = data.draw(arrays(np.float64, (G, m), elements=st.floats(-4, 4)), label="W").astype(dt)
    D = data.draw(M.metrics((G, m)), label="D")
    norms = np.hypot.reduce(D * W.astype(np.float64), axis=1)
    a = norms * data.draw(st.sampled_from([0.0, 0.3, 0.9, 1.1]), label="a / ||d w||")
    b = np.full(G, data.draw(st.sampled_from([0.0, 1e-3, 0.1, 10.0]), label="b"))
    if data.draw(st.booleans(), label="a bad row"):
        W[data.draw(st.integers(0, 15), label="row"), data.draw(st.integers(0, m - 1), label="where")] = data.draw(st.sampled_from([np.nan, np.inf]), label="bad")
    with np.errstate(all="ignore"):
        X = kernel(np.ascontiguousarray(W), np.ascontiguousarray(D), a, b, parallel=False)
        Wf, Df = np.asfortranarray(W), np.asfortranarray(D)
        assert NB_as_columns(Wf)
        np.testing.assert_array_equal(kernel(Wf, Df, a, b), X)
        Y = Wf.copy(order="F")
        assert kernel(Y, Df, a, b, out=Y) is Y
    np.testing.assert_array_equal(Y, X)


@pytest.mark.parametrize("op", ROW_OPS)
@given(st.integers(1, 40), st.integers(1, 19), st.data())
def test_numba_metric_row_kernels_read_a_float32_metric_as_its_float64_copy(op, G, m, data):
    """A float32 metric of float32 weights (the torch step's) is read where
    it lies, each entry widened as its row is read: the same bits as the
    kernel given its float64 copy, in C and F layout (the column tiles),
    serially and in parallel; a metric of another dtype than the weights'
    (float32 for float64 weights, float16, integers) is read through its
    float64 copy.  The metric is left as it was."""
    kernel, _ = _numba_row_kernel(op)
    dt = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    W = data.draw(arrays(np.float64, (G, m), elements=st.floats(-4, 4)), label="W").astype(dt)
    D64 = data.draw(M.metrics((G, m)), label="D")
    ddt = data.draw(st.sampled_from([np.float32, np.float16, np.int64]), label="metric dtype")
    if ddt is np.float16:  # (within its normal range: no entry rounded to 0 or inf)
        D64 = np.clip(D64, 2.0**-14, 6e4)
    elif ddt is np.int64:
        D64 = np.maximum(np.rint(np.minimum(D64, 2.0**40)), 1.0)
    D = D64.astype(ddt)
    norms = np.hypot.reduce(D.astype(np.float64) * W.astype(np.float64), axis=1)
    a = norms * data.draw(st.sampled_from([0.0, 0.3, 0.9, 1.1]), label="a / ||d w||")
    b = np.full(G, data.draw(st.sampled_from([0.0, 1e-3, 0.1, 10.0]), label="b"))
    kept = D.copy()
    for layout in (np.ascontiguousarray, np.asfortranarray):
        Wl, Dl = layout(W), layout(D)
        for parallel in (False, True):
            reps = -(-pytest.importorskip("proxlib.backends.numba_cpu")._PAR_MIN // W.size) if parallel else 1
            Wr, Dr = np.tile(Wl, (reps, 1)), np.tile(Dl, (reps, 1))
            Wr, Dr = layout(Wr), layout(Dr)
            ar, br = np.tile(a, reps), np.tile(b, reps)
            with np.errstate(all="ignore"):
                np.testing.assert_array_equal(kernel(Wr, Dr, ar, br, parallel=parallel),
                                              kernel(Wr, Dr.astype(np.float64), ar, br, parallel=parallel))
        np.testing.assert_array_equal(Dl, kept)


def NB_as_columns(W):
    """Whether Numba's row kernels take W's rows as the columns of W.T."""
    return pytest.importorskip("proxlib.backends.numba_cpu")._as_columns(W, W)


@pytest.mark.parametrize("op", ROW_OPS)
@given(C.matrices(4, 5), st.data(), C.lams, C.mus, C.steps)
def test_row_constant_metric_is_each_row_euclidean(numpy_backend, op, W, data, lam, mu, step):
    # d constant along each row (not across rows): each row is the Euclidean
    # prox of its own row with step / d_r (the metric kernel computes it)
    mu = op_mu(op, mu)
    dr = data.draw(arrays(np.float64, W.shape[0], elements=M.metric_elements()))
    D = np.repeat(dr[:, None], W.shape[1], axis=1)
    X = row_prox(op, W, lam, mu, step, metric=D)
    ref = np.array([row_prox(op, W[g], lam, mu, step / dr[g]) for g in range(W.shape[0])])
    a, b = thresholds(lam, mu, step, np.ones(W.shape[0]))
    rows_close(X, ref, W, D, a, b)


@given(C.matrices(7, 6), st.data(), st.lists(st.sampled_from(ROW_KINDS), min_size=7, max_size=7), st.floats(1e-3, 1e3))
def test_metric_rows_searched_in_place_are_the_gathered_rows_bit_for_bit(W, data, kinds, scale):
    """A device's route (``gather=False``: each case that occurs solved on
    every row, the other rows on a stand-in; one host read to know the cases,
    the root searches checked every four steps) gives the gathered route's
    result bit for bit, with every kind of row in one call; on NumPy and on
    torch, for the three row kernels."""
    D = data.draw(M.metrics(W.shape))
    a, b = rows_of_every_kind(W, np.sqrt(((D * W) ** 2).sum(axis=1)), kinds, scale)
    calls = (
        lambda W, D, a, b, **kw: MK.group_exclusive_metric(W, D, a, b, **kw),
        lambda W, D, a, b, **kw: MK.group_lasso_metric(W, D, a, **kw),
        lambda W, D, a, b, **kw: MK.exclusive_lasso_metric(W, D, b, **kw),
    )
    torch = pytest.importorskip("torch")
    for call in calls:
        gathered = call(W, D, a, b)
        np.testing.assert_array_equal(call(W, D, a, b, gather=False), gathered)
        args = [torch.from_numpy(x) for x in (W, D, a, b)]
        np.testing.assert_array_equal(call(*args, gather=False).numpy(), call(*args).numpy())


@given(C.matrices(6, 6), st.data(), st.lists(st.sampled_from(ROW_KINDS), min_size=6, max_size=6), st.floats(1e-3, 1e3))
def test_each_metric_row_is_solved_as_if_alone(W, data, kinds, scale):
    """A row's result does not depend on the other rows of the call: each
    row's root search stops at its own last step (:func:`MK._root`), however
    long the slowest row's search runs."""
    D = data.draw(M.metrics(W.shape))
    a, b = rows_of_every_kind(W, np.sqrt(((D * W) ** 2).sum(axis=1)), kinds, scale)
    X = MK.group_exclusive_metric(W, D, a, b)
    for r in range(W.shape[0]):
        one = slice(r, r + 1)
        np.testing.assert_array_equal(MK.group_exclusive_metric(W[one], D[one], a[one], b[one])[0], X[r])


def _root_steps(monkeypatch, call):
    """How many (g, g') evaluations each root search of ``call()`` takes."""
    steps = []
    root = MK._root

    def counting(g_and_slope, left, right, xp, c=None, check_every=1):
        n = [0]

        def g(s):
            n[0] += 1
            return g_and_slope(s)

        out = root(g, left, right, xp, c=c, check_every=check_every)
        steps.append(n[0])
        return out

    monkeypatch.setattr(MK, "_root", counting)
    call()
    return steps


@pytest.mark.parametrize("op", ["group_lasso", "group_exclusive"])
def test_metric_root_searches_take_newtons_steps(monkeypatch, op):
    """The outer root searches use the exact slope psi'(s): Newton from the
    bracket converges in a few steps (8 and 9 here; each a host read on a
    device).  A slope that is off (group+exclusive without its t b P^2 /
    (1 + b H_k) term: 66 steps) still ends at the root -- bisection
    safeguards it -- so no test of the results can see it."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((16, 12))
    D = np.exp(rng.uniform(-3.0, 3.0, W.shape))
    nz = np.sqrt(((D * W) ** 2).sum(axis=1))
    a = 0.5 * nz
    b = np.exp(rng.uniform(-2.0, 4.0, W.shape[0])) / np.abs(W).sum(axis=1)
    if op == "group_lasso":
        steps = _root_steps(monkeypatch, lambda: MK.group_lasso_metric(W, D, a))
    else:
        steps = _root_steps(monkeypatch, lambda: MK.group_exclusive_metric(W, D, a, b))
    assert len(steps) == 1 and steps[0] <= 12, steps


# (found by the long profile: the reference's group+exclusive kernel summed the
# norm over the sorted magnitudes, one ulp off the group lasso's)
_W_MU0 = np.zeros((4, 6))
_W_MU0[3, :3] = [8.692897420209256, 4.429668482291537, 5.8032724194181675]


@given(metric_row_problems(max_rows=4, max_cols=6))
@example(problem=(_W_MU0, np.ones((4, 6)), 0.3, 0.0, 2.0, "sqrt"))
def test_mu_zero_and_one_are_the_group_and_exclusive_metric_prox(numpy_backend, problem):
    W, D, lam, _, step, gw = problem
    kw = dict(group_weights=gw, metric=D)
    # the same code path, so the same bits
    np.testing.assert_array_equal(proxlib.prox_group_exclusive(W, lam, 0.0, step, **kw), proxlib.prox_group_lasso(W, lam, step, **kw))
    np.testing.assert_array_equal(proxlib.prox_group_exclusive(W, lam, 1.0, step, **kw), proxlib.prox_exclusive_lasso(W, lam, step, **kw))


@given(C.vectors(1, 12), st.data(), C.lams, C.mus, C.steps)
def test_one_entry_per_group_closed_form(numpy_backend, v, data, lam, mu, step):
    # one entry per group: 1/2 d (x - v)^2 + a|x| + b/2 x^2 -> x = sign(v)(d|v| - a)_+ / (d + b)
    d = data.draw(M.metrics(v.shape))
    W, D = v[:, None], d[:, None]
    a, b = thresholds(lam, mu, step, 1.0)
    # formed without the product d |v| (subnormal for |v| ~ 2^-1022, d < 1: the
    # reference itself lost bits there; found by the long profile)
    ref = np.sign(v) * np.maximum(np.abs(v) - a / d, 0.0) / (1.0 + b / d)
    X = proxlib.prox_group_exclusive(W, lam, mu, step, metric=D)[:, 0]
    assert np.all(np.abs(X - ref) <= 16 * EPS64 * (np.abs(v) + a / d) + TINY64), (X, ref)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("scale", [1.0, 1e100, 1e200])
@proxlib.use_backend(None)  # automatic dispatch (the module's other tests pin numpy)
def test_group_exclusive_tiny_solution_relative_to_itself(lib, scale):
    # b / d huge: x ~ (d|v| - a) / (d + b) lies far below |v| (82.7 against
    # 1e202 at b / d = 1e200), where its squares underflow; the norms of the
    # outer root search gave 0, so g = s / ||x|| - 1 = inf, and every such
    # group came out 0 although ||d v|| > a.  The support here is the first
    # entry alone (d_i |v_i| <= b x_1 for the others): the closed form
    # x_1 = (d_1 v_1 - a) / (d_1 + b), to a few eps of itself.
    v = np.array([[1.0243405e2, -6.1221552e1, 3.1319702e2, -4.0741495e2]]) * scale
    d = np.array([[9.26420547e44, 2.04608685e39, 1.78555870e42, 2.21866803e37]]) / scale
    lam, mu = 1.3702133901097786e45, 0.8351832046922797
    a, b = thresholds(lam, mu, 1.0, 1.0)
    x1 = (d[:, 0] * v[:, 0] - a) / (d[:, 0] + b)
    if lib == "torch":
        torch = _torch()
        X = proxlib.prox_group_exclusive(torch.from_numpy(v), lam, mu, metric=torch.from_numpy(d)).numpy()
    else:
        X = proxlib.prox_group_exclusive(v, lam, mu, metric=d)
    np.testing.assert_allclose(X[:, 0], x1, rtol=64 * EPS64, atol=0)
    assert np.all(X[:, 1:] == 0)
    # one entry per group (m = 1) likewise
    X1 = proxlib.prox_group_exclusive(v[:, :1], lam, mu, metric=d[:, :1]) if lib == "numpy" else X[:, :1]
    np.testing.assert_allclose(X1[:, 0], x1, rtol=64 * EPS64, atol=0)


def test_one_entry_per_group_at_the_smallest_normal(numpy_backend):
    """The long profile's case: |v| = 2^-1022, d = 0.001, lam = 0: x = v exactly."""
    v = np.array([0.0, 0.0, 2.0**-1022])
    D = np.array([1.0, 1.0, 0.001])[:, None]
    for lam, mu in ((0.0, 0.0), (0.0, 0.5)):
        X = proxlib.prox_group_exclusive(v[:, None], lam, mu, 1.0, metric=D)[:, 0]
        np.testing.assert_array_equal(X, v)


# ------------------------------------------------------------------ invariances


@pytest.mark.parametrize("c", [2.0**-20, 4.0, 2.0**30])
@given(metric_row_problems(max_rows=3, max_cols=5))
def test_scaling_metric_and_step_together_power_of_two_is_exact(numpy_backend, c, problem):
    # argmin 1/2 sum c d (x - v)^2 + c step Omega = argmin 1/2 sum d (x - v)^2 + step Omega;
    # with c a power of two every product and quotient is scaled exactly
    W, D, lam, mu, step, gw = problem
    assume(D.min() * c > 1e-300 and np.all(np.isfinite(D * c)))
    # and no threshold below the normal range, in either problem: there it is
    # rounded to a subnormal, and the scaled problem's is not c times the
    # other's (the long profile's case, 2026-12-07: step 2^-1022, lam 1, mu
    # 0.05, c = 2^-20: a = 0.95 2^-1042 kept 32 bits, and group+exclusive's
    # prox moved by 1e-9 of itself; as in the test below)
    low = min(step, c * step)
    assume(not _thresholds_below_the_normal_range(lam, mu, low, numeric_c(gw, np.full(W.shape[0], W.shape[1]))))
    assume(0.4 * low >= 2.0**-1022)  # (weighted l1's weight below)
    for op in ROW_OPS:
        np.testing.assert_array_equal(
            row_prox(op, W, lam, mu, c * step, group_weights=gw, metric=c * D), row_prox(op, W, lam, mu, step, group_weights=gw, metric=D)
        )
    v = W.ravel()
    np.testing.assert_array_equal(proxlib.prox_weighted_l1(v, 0.4, c * step, metric=c * D.ravel()), proxlib.prox_weighted_l1(v, 0.4, step, metric=D.ravel()))
    np.testing.assert_array_equal(proxlib.prox_lp(v, lam, 0.5, c * step, metric=c * D.ravel()), proxlib.prox_lp(v, lam, 0.5, step, metric=D.ravel()))


@pytest.mark.parametrize("k, s", [(1100, 200), (1700, 750)])
@given(metric_row_problems(max_rows=3, max_cols=5))
# found by the long run: the group threshold was divided by the data's scale
# (2^750) and then by the metric's (2^-740), through a subnormal in between
@example(problem=(np.ones((3, 4)), np.array([[1.0] * 4, [1.0] * 4, [1.0, 1.0, 1.0, 10.0]]), 1.4383236392184504e-100, 0.5, 1.0, None))
def test_thresholds_beyond_float64_divide_the_objective_exactly(numpy_backend, k, s, problem):
    # with metric 2^k d and thresholds 2^k step t beyond float64 (the step and
    # lam each take half of 2^k), the prox is solved as the same problem
    # divided by a power of two: that of metric d and thresholds step t.  The
    # data are 2^s larger and the metric 2^s smaller than usual, so that
    # 2^k d stays finite while the prox is far from 0 (degree-1 thresholds)
    # and, for the exclusive lasso, saturated: only each row's largest
    # entries survive, tiny but not 0 (where inf thresholds gave 0)
    W, D, lam, mu, step, gw = problem
    # the unscaled problem must be the same problem: a threshold below the
    # normal range is rounded there (to a subnormal or 0) where the scaled one
    # is exact (the long profile's case: lam 2^-332 times a group weight
    # 2^-859 gave b = 0, and x = w, where b = 2^-1191 zeroes an entry 2^-904 in
    # the metric 2^-750 of a row of 2^749's)
    assume(not _thresholds_below_the_normal_range(lam, mu, step, numeric_c(gw, np.full(W.shape[0], W.shape[1]))))
    W, D = W * 2.0**s, D * 2.0**-s
    h = 2.0 ** (k // 2)
    for op in ROW_OPS:
        expected = row_prox(op, W, lam, mu, step, group_weights=gw, metric=D)
        big = row_prox(op, W, lam * h, mu, step * h, group_weights=gw, metric=D * h * h)
        np.testing.assert_array_equal(np.signbit(big), np.signbit(expected))
        np.testing.assert_array_equal(big, expected)
        if op == "exclusive" and lam > 0 and np.any(W):
            assert np.count_nonzero(expected) >= np.count_nonzero(np.any(W, axis=1))
    v = W.ravel()
    for prox, args in ((proxlib.prox_weighted_l1, (0.4,)), (proxlib.prox_lp, (lam, 0.5)), (proxlib.prox_weighted_l2sq, (0.4,))):
        expected = prox(v, *args, step, metric=D.ravel())
        np.testing.assert_array_equal(prox(v, args[0] * h, *args[1:], step * h, metric=D.ravel() * h * h), expected)


def test_thresholds_and_metric_beyond_float64_together_raise():
    # thresholds 2^1100 against a metric entry of 2^-1000: dividing by 2^E
    # would take the metric below the normal range
    W = np.array([[1.0, -2.0], [3.0, 0.5]])
    D = np.array([[2.0**-1000, 1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="metric's least entry"):
        proxlib.prox_exclusive_lasso(W, 2.0**550, 2.0**550, metric=D)
    # in range the same metric is fine
    assert np.all(np.isfinite(proxlib.prox_exclusive_lasso(W, 2.0**500, 2.0**500, metric=D)))


def test_a_metric_divided_into_the_subnormals_raises():
    # thresholds 2^1100: the objective is divided by 2^100, which takes the
    # metric entry (1 + 2^-30) 2^-950 to a subnormal (its last 28 bits lost:
    # x_0 = 1 - 2^-10 instead of 1 - 2^-10 / (1 + 2^-30)); exactly 2^-922
    # becomes 2^-1022, the least normal float, and is solved
    v = np.array([1.0, 2.0**200])
    w = np.array([2.0**-1060, 2.0**1000])
    for d0 in (math.ldexp(1 + 2.0**-30, -950), 2.0**-923):
        with pytest.raises(ValueError, match="metric's least entry"):
            proxlib.prox_weighted_l1(v, w, 2.0**100, metric=np.array([d0, 1.0]))
    x = proxlib.prox_weighted_l1(v, w, 2.0**100, metric=np.array([2.0**-922, 1.0]))
    np.testing.assert_array_equal(x, [1.0 - 2.0**-38, 0.0])


@pytest.mark.parametrize("lib,gather", [("numpy", True), ("numpy", False), ("torch", True), ("torch", False), ("numba", True)])
def test_exclusive_metric_where_b_over_the_metric_exceeds_float64(lib, gather):
    # b = step lam mu < 2^1023 (no division of the objective), but b / max(d)
    # beyond 2^900 or overflowing: the kernel gave 0 for the whole row (b / sd
    # = inf) where x ~ d |v| / (b H) is a float (7.9e-31 for b = 2^1000 in
    # the metric 2^-100 at 2^1000), or lost bits (b / sd near 2^930 with the
    # row's metric spanning 2^70: z - theta subnormal).  Against the exact
    # rational (exclusive) and 60-digit (group + exclusive) references
    W = np.array([[2.0**1000, 2.0**999, 1.0], [1e300, 1e300, 0.25], [1e300, -3e299, 0.25],
                  [1.0, 1.0, 0.25], [3.0, -1.0, 2.0], [2.0, 1.0, 0.5]])
    D = np.array([[2.0**-100, 2.0**-101, 2.0**-100], [2.0**-100, 2.0**-100, 2.0**-30], [2.0**-10, 2.0**-12, 2.0**-30],
                  [0.5, 0.5, 2.0**-30], [1.0, 0.5, 2.0], [2.0, 1.0, 0.5]])
    b = np.array([2.0**1000, 2.0**900, 2.0**1023, 2.0**1023, 2.0**800, 2.0])
    a = np.array([1e-300, 2.0**-100, 1e290, 0.5, 1.0, 0.5])  # (group + exclusive: a < ||d v||)
    kern = metric_row_kernels(lib, gather)
    for name, call in kern.items():
        X = call(W, D, b) if name == "exclusive" else call(W, D, a, b)
        if name == "group_exclusive":  # (and its optimality conditions)
            kkt_metric(W, X, D, a, b, kkt_tol(W, D, a))
        for g in range(W.shape[0]):
            if name == "group_exclusive":
                ref = M.exact_group_exclusive_metric_row(W[g], D[g], a[g], b[g])
            else:
                ref = M.exact_exclusive_metric_row(W[g], D[g], b[g])
            assert np.any(ref != 0), (name, g)
            np.testing.assert_allclose(X[g], ref, rtol=0, atol=64 * W.shape[1] * EPS64 * np.abs(ref).max(), err_msg=f"{name} row {g}")
    # the public functions (the same kernels): b = step lam = 2^1000 in the metric 2^-100
    X = proxlib.prox_exclusive_lasso(W[:1], 2.0**500, 2.0**500, metric=D[:1])
    np.testing.assert_array_equal(X[0], M.exact_exclusive_metric_row(W[0], D[0], 2.0**1000))


def huge_b_in_wide_metrics():
    """(W, D, b, a) for rows whose metric spans up to 2^200 and b / max(d)
    from 2^464 to 2^1013 (b from 1e200 to 1e305): z_k - theta, about
    z_k / (b sum_S 1/d), lies far below z_k.  Per metric span: a single
    entry at the metric's least d (x = w / (1 + b) there; the row of
    Hypothesis's failing example), random entries, and an exact tie of
    z = d|w| (4 * 1 = 1 * 4).  ``a``: group+exclusive's l2 threshold,
    0.3 ||d w|| and 2^-400 ||d w|| (a / (sv sd) above 2^-500)."""
    rng = np.random.default_rng(69)
    rows = []
    for span in (0, 50, 100, 150, 200):
        for kind in ("single", "random", "tie"):
            d = 2.0 ** rng.uniform(0, span, 5)
            d[0], d[-1] = 1.0, 2.0**span
            if kind == "single":
                w = np.array([-8.666558805121601, 0.0, 0.0, 0.0, 0.0])
            elif kind == "random":
                w = rng.standard_normal(5) / np.sqrt(d) * 2.0 ** rng.integers(-5, 5)
            else:
                w = np.array([4.0, -1.0, 0.0, 0.0, 0.0])
                d[1] = 4.0
            rows.append((w, d))
    bs = 10.0 ** np.array([200, 250, 270, 280, 290, 295, 299, 301, 305])
    W = np.array([w for w, _ in rows for _ in bs])
    D = np.array([d for _, d in rows for _ in bs])
    b = np.tile(bs, len(rows))
    ndw = np.hypot.reduce(D * W, axis=1)
    return W, D, b, (0.3 * ndw, 2.0**-400 * ndw)


@functools.cache
def huge_b_group_exclusive_references():
    """The 60-digit group+exclusive prox of huge_b_in_wide_metrics' rows, for
    each of its a (computed once: 270 rows, a few seconds)."""
    W, D, b, a_cases = huge_b_in_wide_metrics()
    return [np.array([M.exact_group_exclusive_metric_row(W[g], D[g], a[g], b[g]) for g in range(W.shape[0])]) for a in a_cases]


def metric_row_kernels(lib, gather=True):
    """{"exclusive": f(W, D, b), "group_exclusive": f(W, D, a, b)}: the metric
    row kernels of ``lib`` (numpy, torch: the array code; numba), on NumPy
    arrays in and out."""
    if lib == "numba":
        nb = pytest.importorskip("proxlib.backends.numba_cpu")
        return {"exclusive": nb.exclusive_lasso_metric, "group_exclusive": nb.group_exclusive_metric}
    if lib == "numpy":
        return {"exclusive": lambda W, D, b: MK.exclusive_lasso_metric(W, D, b, gather),
                "group_exclusive": lambda W, D, a, b: MK.group_exclusive_metric(W, D, a, b, gather)}
    torch = _torch()
    t = torch.from_numpy
    return {"exclusive": lambda W, D, b: MK.exclusive_lasso_metric(t(W), t(D), t(b), gather).numpy(),
            "group_exclusive": lambda W, D, a, b: MK.group_exclusive_metric(t(W), t(D), t(a), t(b), gather).numpy()}


@pytest.mark.parametrize("lib,gather", [("numpy", True), ("numpy", False), ("torch", True), ("torch", False), ("numba", True)])
def test_huge_b_in_wide_metrics_is_exact(lib, gather):
    """b / max(d) past 2^600 is solved by saturation (at b 2^-shift in
    [2^599, 2^600), the result scaled back): below 2^900, where saturation
    once began, z_k - theta went subnormal for rows whose metric spans 2^100
    or more (x = 0 for b = 1e299, 4 digits lost at 1e290).  The exclusive
    lasso against the exact rational reference; group+exclusive against the
    60-digit reference (measured: within 1.83 ulps of each entry, every
    backend) and by its optimality conditions, whose b ||x||_1 term sees x's
    relative error."""
    kern = metric_row_kernels(lib, gather)
    assert_huge_b_rows_exact(kern["exclusive"], kern["group_exclusive"])


def assert_huge_b_rows_exact(exclusive, group_exclusive):
    """huge_b_in_wide_metrics' rows through exclusive(W, D, b) and
    group_exclusive(W, D, a, b) (NumPy arrays in and out): the exclusive
    lasso against the exact rational reference, group+exclusive against the
    60-digit reference and by its optimality conditions."""
    W, D, b, a_cases = huge_b_in_wide_metrics()
    X = exclusive(W, D, b)
    for g in range(W.shape[0]):
        ref = M.exact_exclusive_metric_row(W[g], D[g], b[g])
        assert np.any(ref != 0)
        np.testing.assert_allclose(X[g], ref, rtol=0, atol=64 * W.shape[1] * EPS64 * np.abs(ref).max(), err_msg=f"row {g}")
    for a, refs in zip(a_cases, huge_b_group_exclusive_references()):
        X = group_exclusive(W, D, a, b)
        assert np.all(np.any(X != 0, axis=1))
        kkt_metric(W, X, D, a, b, kkt_tol(W, D, a))
        for g, ref in enumerate(refs):
            np.testing.assert_allclose(X[g], ref, rtol=0, atol=16 * W.shape[1] * EPS64 * np.abs(ref).max(), err_msg=f"a={a[g]} row {g}")


@pytest.mark.parametrize("lib", ["numpy", "torch", "numba"])
@given(metric_row_problems(max_rows=4, max_cols=6, lo_exp=-30.0, hi_exp=30.0), st.floats(-320.0, 300.0))
# Hypothesis's find (long profile, in the Triton kernel; every backend alike):
# x = 0 for -8.67e-299, a metric spanning 30 decades not yet saturated at 2^900
@example((np.array([[-8.666558805121601, 0.0, 0.0]]), np.array([[1.0, 1.0, 8.78437217e29]]), 1.0, 1.0, 1.0, None), 299.0)
# (long profile, stop 69) b = 1: z = 1.7e-16 off the support came out x = 1.33
@example((np.array([[1.0, 0.0, 0.0, 3.5]]), np.array([[3.0, 1.0, 1.0, 1e16]]), 1.0, 1.0, 1.0, None), 0.0)
def test_exclusive_with_wide_metrics_equals_the_exact_reference(lib, problem, log_b):
    """Metrics spanning up to sixty decades in a row, b from 1e-320 to 1e300
    (the kernel test of ``test_triton_metric`` on the other backends)."""
    W, D, *_ = problem
    b = np.full(W.shape[0], 10.0**log_b)
    X = metric_row_kernels(lib, gather=lib != "torch")["exclusive"](W, D, b)
    for g in range(W.shape[0]):
        ref = M.exact_exclusive_metric_row(W[g], D[g], b[g])
        np.testing.assert_allclose(X[g], ref, rtol=0, atol=64 * (W.shape[1] + 2) * EPS64 * np.abs(ref).max() + 2.0**-1070)


@pytest.mark.parametrize("lib", ["numpy", "torch", "numba"])
def test_saturation_keeps_how_a_tiny_l2_threshold_splits_tied_entries(lib):
    """z = d|w| tied (4 * 1 = 1 * 4): x_i = c / (d_i + t), t = a / ||x||.
    In the scaled row (sv = sd = 4) a_s = 2^-704 and b_s = 2^798, so t is
    about 2^96 and the magnitudes are equal to 2^-96.  Solved at b 2^-199
    instead (saturation), t would be about 2^-103 and x_1 / x_2 = 4: such
    rows are solved as they are up to 2^900 (``_metric_kernels._saturated``)."""
    W = np.array([[4.0, -1.0, 0.0]])
    D = np.array([[1.0, 4.0, 1.0]])
    X = metric_row_kernels(lib)["group_exclusive"](W, D, np.array([2.0**-700]), np.array([2.0**800]))
    np.testing.assert_allclose(X[0, 0], -X[0, 1], rtol=4 * EPS64)
    assert X[0, 2] == 0 and X[0, 0] > 0


@pytest.mark.parametrize("c", [3.0, 0.1, 1e5])
@given(metric_row_problems(max_rows=3, max_cols=5))
def test_scaling_metric_and_step_together(numpy_backend, c, problem):
    W, D, lam, mu, step, gw = problem
    G, m = W.shape
    for op in ROW_OPS:
        mu_ = op_mu(op, mu)
        a, b = thresholds(lam, mu_, step, numeric_c(gw, np.full(G, m)))
        X = row_prox(op, W, lam, mu_, c * step, group_weights=gw, metric=c * D)
        rows_close(X, row_prox(op, W, lam, mu_, step, group_weights=gw, metric=D), W, D, a, b)


@given(metric_row_problems(max_rows=4, max_cols=5), st.randoms(use_true_random=False))
def test_signs_and_permutations(numpy_backend, problem, rnd):
    W, D, lam, mu, step, _ = problem
    G, m = W.shape
    rows = np.array(rnd.sample(range(G), G))
    cols = np.array([rnd.sample(range(m), m) for _ in range(G)])
    signs = np.array([[rnd.choice([-1.0, 1.0]) for _ in range(m)] for _ in range(G)])
    P = lambda A, s=signs: np.take_along_axis((s * A)[rows], cols, axis=1)  # noqa: E731
    ones = np.ones_like(signs)
    for op in ROW_OPS:
        mu_ = op_mu(op, mu)
        a, b = thresholds(lam, mu_, step, np.ones(G))
        X = row_prox(op, W, lam, mu_, step, metric=D)
        np.testing.assert_array_equal(row_prox(op, -W, lam, mu_, step, metric=D), -X)  # sign flips are exact
        # the metric permuted with the data; summation order changes only
        rows_close(row_prox(op, P(W), lam, mu_, step, metric=P(D, ones)), P(X), P(W), P(D, ones), a[rows], b[rows])


# ------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("sv, sd", [(1e-150, 1e150), (1e150, 1e-150), (1e150, 1e150), (1e-150, 1e-150), (1.0, 1e150), (1e-150, 1.0)])
@given(metric_row_problems(max_rows=3, max_cols=5))
def test_extreme_scales_against_reference(numpy_backend, sv, sd, problem):
    # data at 1e+-150, metric at 1e+-150: the references solved at that scale
    W, D, lam, mu, step, _ = problem
    Ws, Ds = W * sv, D * sd
    G, m = W.shape
    for op in ROW_OPS:
        mu_ = op_mu(op, mu)
        a0, b0 = thresholds(lam, mu_, step, np.ones(G))
        # a scales like |d v| (sv sd), b like d (sd): a problem of the same shape
        a, b = a0 * (sv * sd), b0 * sd
        lam_s = a[0] + b[0]
        if lam_s == 0 or not math.isfinite(lam_s):
            continue
        mu_s = b[0] / lam_s
        if op == "group_lasso":
            X = proxlib.prox_group_lasso(Ws, a[0], metric=Ds)
            a, b = np.full(G, a[0]), np.zeros(G)
        elif op == "exclusive":
            X = proxlib.prox_exclusive_lasso(Ws, b[0], metric=Ds)
            a, b = np.zeros(G), np.full(G, b[0])
        else:
            X = proxlib.prox_group_exclusive(Ws, lam_s, mu_s, metric=Ds)
            a, b = thresholds(lam_s, mu_s, 1.0, np.ones(G))
        ref = np.array(
            [M.exact_exclusive_metric_row(Ws[g], Ds[g], b[g]) if a[g] == 0 else M.exact_group_exclusive_metric_row(Ws[g], Ds[g], a[g], b[g]) for g in range(G)]
        )
        assert np.all(np.isfinite(X))
        rows_close(X, ref, Ws, Ds, a, b, tiny=TINY64 / math.sqrt(sd))


@pytest.mark.parametrize("b", [1e3, 1e8, 1e15])
@given(C.matrices(3, 5), st.data(), st.floats(0.0, 0.5))
def test_large_b_relative_accuracy(numpy_backend, b, W, data, f):
    # x ~ d|v| / (d (1 + b H)) is tiny; the cancellation-free formulas keep it
    # accurate relative to itself (a <= f times the result's scale keeps the
    # group factor well conditioned)
    D = data.draw(M.metrics(W.shape, -1.0, 1.0))
    a = f * np.abs(D * W).max() / (1 + b * np.sum(1 / D, axis=1).max())
    for lam, mu in ((b, 1.0), (a + b, b / (a + b))):
        X = proxlib.prox_group_exclusive(W, lam, mu, metric=D)
        aa, bb = thresholds(lam, mu, 1.0, np.ones(W.shape[0]))
        for g in range(W.shape[0]):
            ref = M.exact_exclusive_metric_row(W[g], D[g], bb[g]) if mu == 1.0 else M.exact_group_exclusive_metric_row(W[g], D[g], aa[g], bb[g])
            np.testing.assert_allclose(X[g], ref, rtol=0, atol=64 * W.shape[1] * EPS64 * np.abs(ref).max())


@given(metric_row_problems(max_rows=4, max_cols=5), st.sampled_from(["row", "entry"]))
def test_ties_and_zeros(numpy_backend, problem, where):
    W, D, lam, mu, step, _ = problem
    W, D = np.vstack([W, np.zeros_like(W[:1])]), np.vstack([D, D[:1]])  # a zero row last
    if where == "row" and W.shape[0] > 2:
        W[1], D[1] = W[0], D[0]
    elif W.shape[1] > 1:
        W[:, 1], D[:, 1] = -W[:, 0], D[:, 0]
    for op in ROW_OPS:
        X = row_prox(op, W, lam, op_mu(op, mu), step, metric=D)
        assert np.all(X[-1] == 0), "a zero row must stay zero"
        if where == "row" and W.shape[0] > 2:
            np.testing.assert_array_equal(X[1], X[0])
        elif W.shape[1] > 1:
            np.testing.assert_array_equal(X[:, 1], -X[:, 0])


@pytest.mark.parametrize("op", ROW_OPS + ("lp", "weighted_l1", "weighted_l2sq"))
@given(metric_row_problems(max_rows=4, max_cols=5))
def test_float32(numpy_backend, op, problem):
    W, D, lam, mu, step, gw = problem
    mu = op_mu(op, mu)
    W32, D32 = W.astype(np.float32), D.astype(np.float32)
    if op in ROW_OPS:
        call = lambda A, Dm: row_prox(op, A, lam, mu, step, group_weights=gw, metric=Dm)  # noqa: E731
    elif op == "lp":
        call = lambda A, Dm: proxlib.prox_lp(A, lam, 0.5, step, metric=Dm)  # noqa: E731
        C.not_near(W32.astype(np.float64), [proxlib.lp_threshold(step * lam / dd, 0.5) for dd in np.unique(D32)], rel=1e-5)
    elif op == "weighted_l1":
        call = lambda A, Dm: proxlib.prox_weighted_l1(A, lam, step, metric=Dm)  # noqa: E731
    else:
        call = lambda A, Dm: proxlib.prox_weighted_l2sq(A, lam, step, metric=Dm)  # noqa: E731
    X32 = call(W32, D32)
    assert X32.dtype == np.float32 and X32.shape == W.shape
    X64 = call(W32.astype(np.float64), D32.astype(np.float64))
    # float32 data and metric: the kernels compute in float64 and round once;
    # the Euclidean reduction (constant metric) rounds the thresholds to
    # float32: eps32 relative in the thresholds, eps32 in x
    G = W.shape[0]
    a, b = row_thresholds(W.shape, lam, mu, step, gw)
    if op not in ROW_OPS:
        a, b = np.full(G, step * lam), np.zeros(G)
    rows_close(X32, X64, W32, D32, a, b, eps=EPS32, tiny=TINY32)


def test_metric_spanning_the_float_range(numpy_backend):
    # d from 1e-300 to 1e300 in one row (the scaled metric underflows to 0 for
    # the smallest entries): finite results that satisfy the optimality conditions
    W = np.array([[1.0, -2.0, 3.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    D = np.array([[1e300, 1e-300, 1.0, 1e-30], [1e-300, 1e300, 1e-300, 2.0]])
    for op in ROW_OPS:
        for lam in (1e-3, 1.0, 1e300):
            mu = op_mu(op, 0.5)
            X = row_prox(op, W, lam, mu, metric=D)
            assert np.all(np.isfinite(X)), (op, lam, X)
            assert np.all(np.abs(X) <= np.abs(W))
            a, b = thresholds(lam, mu, 1.0, np.ones(2))
            kkt_metric(W, X, D, a, b, kkt_tol(W, D, a))


@pytest.mark.parametrize("lib", ["numpy", "numba", "torch"])
@proxlib.use_backend(None)  # automatic dispatch (the module's other tests pin numpy)
def test_metric_whose_row_norm_squares_underflow(lib):
    """||d v||_2 carried by entries of d near 1e-170 (the metric spans
    1e170): the scaled row's squares underflowed, the row counted as zero
    and x = 0 came back, at lam = 0 too (where x = v) and wherever
    ||d v|| > lam at that scale.  Entry by entry against the exact
    rational/60-digit references, relative to the data."""
    if lib not in proxlib.available_backends():
        pytest.skip(f"backend {lib!r} does not import here")
    W = np.array([[1.0, 0.0, -0.5], [3.0, 0.0, 2.0]])
    D = np.array([[1e-170, 1.0, 3e-171], [2e-171, 0.25, 1e-170]])
    for op in ROW_OPS:
        for lam in (0.0, 1e-171, 4e-171):
            mu = op_mu(op, 0.5)
            a, b = thresholds(lam, mu, 1.0, np.ones(2))
            if lib == "torch":
                import torch

                X = row_prox(op, torch.from_numpy(W.copy()), lam, mu, metric=torch.from_numpy(D.copy())).numpy()
            else:
                with proxlib.use_backend(lib):
                    X = row_prox(op, W, lam, mu, metric=D)
            ref = np.array([
                W[g] if a[g] == b[g] == 0 else
                M.exact_exclusive_metric_row(W[g], D[g], b[g]) if a[g] == 0 else
                M.exact_group_exclusive_metric_row(W[g], D[g], a[g], b[g])
                for g in range(2)
            ])
            assert np.abs(ref).max() > 0.1  # (not the zero rows that came back)
            np.testing.assert_allclose(X, ref, rtol=0, atol=16 * 3 * EPS64 * np.abs(W).max(), err_msg=f"{op} lam={lam}")


@pytest.mark.parametrize("op", ROW_OPS)
def test_degenerate_shapes(numpy_backend, op):
    for shape in [(0, 3), (3, 0), (1, 1), (1, 5), (5, 1)]:
        W = np.ones(shape)
        D = np.linspace(1, 2, W.size).reshape(shape)
        X = row_prox(op, W, 0.1, 0.5, metric=D)
        assert X.shape == shape and X.dtype == W.dtype
    assert row_prox(op, np.zeros(0), 0.1, 0.5, groups=np.zeros(0, dtype=int), metric=np.zeros(0)).shape == (0,)


def test_hand_cases():
    # group lasso, one row [3, 4] with d = [1, 4], a = 1: ||d v|| = ||[3, 16]|| > 1.
    # x_i = d_i v_i s / (d_i s + 1): s solves (3/(s + 1))^2 + (16/(4 s + 1))^2 = 1.
    x = proxlib.prox_group_lasso(np.array([[3.0, 4.0]]), 1.0, metric=np.array([[1.0, 4.0]]))[0]
    s = np.hypot(*x)
    np.testing.assert_allclose((3 / (s + 1)) ** 2 + (16 / (4 * s + 1)) ** 2, 1.0, rtol=4 * EPS64)
    np.testing.assert_allclose(x, [3 * s / (s + 1), 16 * s / (4 * s + 1)], rtol=4 * EPS64)
    # zero iff ||d v|| <= a: v = [1.5, 4], d = [2, 1] has d v = [3, 4], ||d v|| = 5
    v, d = np.array([1.5, 4.0]), np.array([2.0, 1.0])
    np.testing.assert_array_equal(proxlib.prox_group_lasso(v, 5.0, metric=d), [0.0, 0.0])
    assert np.all(proxlib.prox_group_lasso(v, 5.0 * (1 - 2.0**-50), metric=d) > 0)
    # exclusive, [3, 1] with d = [1, 2], b = 1: z = d|v| = [3, 2].  k = 1: L = 3/(1 + 1) = 1.5,
    # but z_2 = 2 > b L = 1.5, so k = 2: L = 4/(1 + 1 + 1/2) = 1.6; x = |v| - L/d = [1.4, 0.2]
    np.testing.assert_allclose(proxlib.prox_exclusive_lasso(np.array([3.0, 1.0]), 1.0, metric=np.array([1.0, 2.0])), [1.4, 0.2], rtol=4 * EPS64)
    # weighted l1: thresholds w/d
    np.testing.assert_array_equal(proxlib.prox_weighted_l1(np.array([3.0, 3.0]), 1.0, metric=np.array([1.0, 2.0])), [2.0, 2.5])
    # lp, p = 0: hard threshold sqrt(2 lam / d): |v| = 1.5 survives d = 1 (sqrt 2 = 1.41) but not d = 0.5 (2)
    np.testing.assert_array_equal(proxlib.prox_lp(np.array([1.5, 1.5]), 1.0, 0.0, metric=np.array([1.0, 0.5])), [1.5, 0.0])


# ------------------------------------------------------------------ bad input


BAD_METRICS = [
    (np.array([[1.0, 0.0], [1.0, 1.0]]), ValueError, "> 0"),
    (np.array([[1.0, -2.0], [1.0, 1.0]]), ValueError, "> 0"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), ValueError, "NaN or Inf"),
    (np.array([[1.0, np.inf], [1.0, 1.0]]), ValueError, "NaN or Inf"),
    (np.ones((3, 2)), ValueError, "broadcast"),
    (np.ones(3), ValueError, "broadcast"),
    (np.ones((2, 2), dtype=bool), TypeError, "bool"),
    (np.ones((2, 2), dtype=complex), TypeError, "complex"),
    ("abc", TypeError, "metric"),
]


@pytest.mark.parametrize("bad, exc, match", BAD_METRICS)
def test_bad_metric_raises(bad, exc, match):
    W = np.array([[1.0, -2.0], [0.5, 3.0]])
    rng = np.random.default_rng(0)
    for name, call in _all_calls(W, rng).items():
        if name == "owl" and getattr(bad, "shape", None) not in (None, (2, 2)):
            continue  # (the OWL call flattens the metric)
        with pytest.raises(exc, match=match):
            call(W, 1.0, metric=bad)


def test_metric_errors_name_the_argument_and_inputs_untouched():
    W = np.array([[1.0, -2.0], [0.5, 3.0]])
    D = np.array([[1.0, 2.0], [0.5, 3.0]])
    W0, D0 = W.copy(), D.copy()
    with pytest.raises(ValueError, match="metric"):
        proxlib.prox_group_lasso(W, 1.0, metric=-D)
    X = proxlib.prox_group_exclusive(W, 1.0, 0.5, metric=D)
    assert not np.shares_memory(X, W) and not np.shares_memory(X, D)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(D, D0)
    # broadcasting: a metric per row (G, 1) is one d per row
    np.testing.assert_array_equal(
        proxlib.prox_group_lasso(W, 1.0, metric=np.array([[1.0], [2.0]])),
        proxlib.prox_group_lasso(W, 1.0, metric=np.array([[1.0, 1.0], [2.0, 2.0]])),
    )


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@proxlib.use_backend(None)  # automatic dispatch (the module's other tests pin numpy)
def test_unchecked_non_finite_rows_pass_through_in_a_metric(lib, dtype):
    # the documented check_finite=False ("lets such rows through as they
    # are"), as without a metric: a row with NaN came out [0, nan, 0] and one
    # with inf all NaN or shrunk around a NaN; the other rows are unchanged
    W = np.array([[1.0, np.nan, 0.5], [3.0, 0.1, -0.2], [1.0, np.inf, 0.5], [-np.inf, 2.0, 3.0]], dtype=dtype)
    D = np.array([[1.0, 2.0, 3.0], [0.5, 4.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=dtype)
    calls = {
        "exclusive": lambda A, **k: proxlib.prox_exclusive_lasso(A, 0.5, **k),
        "group_exclusive": lambda A, **k: proxlib.prox_group_exclusive(A, 0.5, 0.5, **k),
        "group_lasso": lambda A, **k: proxlib.prox_group_lasso(A, 0.5, **k),
        "group_exclusive_ragged": lambda A, **k: proxlib.prox_group_exclusive(
            A.reshape(-1), 0.5, 0.5, groups=np.array([0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4, 5]), **{**k, "metric": k["metric"].reshape(-1)}
        ).reshape(A.shape),
    }
    for name, call in calls.items():
        if lib == "torch":
            torch = _torch()
            X = call(torch.from_numpy(W.copy()), metric=torch.from_numpy(D), check_finite=False).numpy()
        else:
            X = call(W.copy(), metric=D, check_finite=False)
        if name == "group_exclusive_ragged":
            # groups 0, 3 and 4 hold a NaN or inf; 1, 2 and 5 are finite
            bad = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=bool)
            np.testing.assert_array_equal(X[bad], W[bad], err_msg=name)
            assert np.all(np.isfinite(X[~bad])), name
            continue
        np.testing.assert_array_equal(X[[0, 2, 3]], W[[0, 2, 3]], err_msg=name)
        with proxlib.use_backend("numpy"):
            ref = call(W[1:2], metric=D[1:2])
        if name == "group_lasso" and lib == "numpy" and dtype == "float64":
            # (Numba's kernel: its root search stops within a few units in
            # the last place of the array code's, its contract
            # (test_numba_row_kernels_in_a_metric): the array code's result
            # to the accuracy of its row sums)
            rows_close(X[1:2], ref, W[1:2], D[1:2], np.array([0.5]))
        else:
            np.testing.assert_array_equal(X[1:2], ref, err_msg=name)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@proxlib.use_backend(None)
def test_unchecked_inf_entries_pass_through_when_weight_over_metric_overflows(lib):
    # w / d = 1e300 / 1e-300 overflows: weighted l2^2 and weighted l1 in the
    # metric gave NaN for an unchecked +inf (inf / inf, inf - inf) where the
    # plain prox, lp and the row operators keep it
    v = np.array([np.inf, -np.inf, np.nan, 3.0])
    d = np.array([1e-300, 1e-300, 1e-300, 2.0])  # (not constant: a constant metric is the Euclidean prox)
    for prox in (proxlib.prox_weighted_l2sq, proxlib.prox_weighted_l1):
        if lib == "torch":
            torch = _torch()
            X = prox(torch.from_numpy(v.copy()), 1e300, metric=torch.from_numpy(d), check_finite=False).numpy()
        else:
            X = prox(v.copy(), 1e300, metric=d, check_finite=False)
        np.testing.assert_array_equal(X[:3], v[:3], err_msg=prox.__name__)
        np.testing.assert_array_equal(X[:3], prox(v[:3], 1e300, check_finite=False), err_msg=prox.__name__)
        assert X[3] == prox(v[3:], 1e300, metric=d[3:])[0], prox.__name__


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@proxlib.use_backend(None)
def test_weighted_l2sq_metric_where_twice_weight_over_metric_overflows(lib):
    # x = d v / (d + 2 w): with w / d >= 2^1023 the kernel's v / (1 + 2 w / d)
    # gave 0 (2 w / d overflowing), e.g. v = 1e308, w = 1e300, d = 1e-8 gave 0
    # for 0.5 (and v = 1 with w = 1e308, d = 1 gave 0 where the plain prox
    # gives 5e-309)
    v = np.array([1e308, -1e308, 1.0, 3e300, 1.5, 2.0**-1000, 1e308, 0.0])
    d = np.array([1e-8, 1e-10, 1.0, 1e-300, 2.0**-600, 1e-20, 1.0, 1e-300])
    w = np.array([1e300, 1e300, 1e308, 1e300, 2.0**450, 1e300, 1e-300, 1e300])
    if lib == "torch":
        torch = _torch()
        X = proxlib.prox_weighted_l2sq(torch.from_numpy(v), torch.from_numpy(w), metric=torch.from_numpy(d)).numpy()
    else:
        X = proxlib.prox_weighted_l2sq(v, w, metric=d)
    for i in range(v.size):
        F = Fraction
        ref = float(F(v[i]) * F(d[i]) / (F(d[i]) + 2 * F(w[i])))
        assert abs(X[i] - ref) <= 4 * EPS64 * abs(ref) + TINY64, (i, X[i], ref)
    assert X[0] == 0.5 and X[2] == proxlib.prox_weighted_l2sq(np.array([1.0]), 1e308)[0]


def test_owl_and_growl_refuse_a_non_constant_metric():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="only when the metric is constant"):
        proxlib.prox_owl(W.ravel(), np.ones(12), metric=np.linspace(1, 2, 12))
    # constant within each row is not enough for GrOWL
    with pytest.raises(ValueError, match="only when the metric is constant"):
        proxlib.prox_growl(W, np.ones(3), metric=np.array([[1.0], [2.0], [3.0]]))
    with pytest.raises(ValueError, match="only when the metric is constant"):
        proxlib.OWL(np.ones(12)).prox(W.ravel(), 1.0, metric=np.linspace(1, 2, 12))
    # a constant metric whose step / d leaves the float range is refused too
    with pytest.raises(ValueError, match="positive finite"):
        proxlib.prox_owl(W.ravel(), np.ones(12), 1e300, metric=np.full(12, 1e-300))


# ------------------------------------------------------------------ backends


def _torch():
    return pytest.importorskip("torch")


BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(b not in proxlib.available_backends(), reason=f"{b} unavailable")) for b in ("numpy", "numba", "torch")]


def _parity_cases(rng, dtype):
    W = rng.normal(size=(5, 7)) * rng.choice([1.0, 1e-3, 1e3], size=(5, 1))
    W[2] = 0.0
    W[3, :3] = W[3, 3:6]  # ties
    D = np.exp(rng.normal(size=W.shape) * 2)
    D[3, :3] = D[3, 3:6]
    v, labels = W.ravel(), np.arange(W.size) % 4
    cases = {
        "group_lasso": (lambda A, Dm: proxlib.prox_group_lasso(A, 0.6, 0.7, metric=Dm), W, D),
        "group_lasso_ragged": (lambda A, Dm: proxlib.prox_group_lasso(A, 0.6, 0.7, groups=labels, metric=Dm), v, D.ravel()),
        "exclusive": (lambda A, Dm: proxlib.prox_exclusive_lasso(A, 0.6, 0.7, metric=Dm), W, D),
        "group_exclusive": (lambda A, Dm: proxlib.prox_group_exclusive(A, 0.6, 0.3, 0.7, metric=Dm), W, D),
        "group_exclusive_ragged": (lambda A, Dm: proxlib.prox_group_exclusive(A, 0.6, 0.3, groups=labels, group_weights="sqrt", metric=Dm), v, D.ravel()),
        "weighted_l1": (lambda A, Dm: proxlib.prox_weighted_l1(A, 0.4, 0.7, metric=Dm), W, D),
        "weighted_l2sq": (lambda A, Dm: proxlib.prox_weighted_l2sq(A, 0.4, 0.7, metric=Dm), W, D),
        "lp": (lambda A, Dm: proxlib.prox_lp(A, 0.4, 0.5, 0.7, metric=Dm), W, D),
        "lp_p0": (lambda A, Dm: proxlib.prox_lp(A, 0.4, 0.0, 0.7, metric=Dm), W, D),
        "owl_constant": (lambda A, Dm: proxlib.prox_owl(A.reshape(-1), np.linspace(1, 0, math.prod(A.shape)), 0.7, metric=0 * Dm.reshape(-1) + 2.0), W, D),
        "growl_constant": (lambda A, Dm: proxlib.prox_growl(A, np.linspace(1, 0, A.shape[0]), 0.7, metric=0 * Dm + 2.0), W, D),
    }
    return {k: (f, A.astype(dtype), Dm.astype(dtype)) for k, (f, A, Dm) in cases.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_backend_parity(backend, dtype):
    rng = np.random.default_rng(11)
    cases = _parity_cases(rng, np.dtype(dtype))
    eps = EPS64 if dtype == "float64" else EPS32
    for name, (call, A, Dm) in cases.items():
        with proxlib.use_backend("numpy"):
            ref = call(A, Dm)
        A0, D0 = A.copy(), Dm.copy()
        if backend == "torch":
            torch = _torch()
            At, Dt = torch.from_numpy(A.copy()), torch.from_numpy(Dm.copy())
            with proxlib.use_backend("torch"):
                X = call(At, Dt)
            assert isinstance(X, torch.Tensor) and X.device.type == "cpu", name
            assert str(X.dtype) == f"torch.{dtype}" and tuple(X.shape) == ref.shape, name
            np.testing.assert_array_equal(At.numpy(), A0)
            X = X.numpy()
        else:
            with proxlib.use_backend(backend):
                X = call(A, Dm)
            assert type(X) is np.ndarray and X.dtype == A.dtype and X.shape == ref.shape, name
        np.testing.assert_array_equal(A, A0)
        np.testing.assert_array_equal(Dm, D0)
        # same algorithm, other libraries' rounding (sums, sqrt): 16 m eps of the row scale in the d-norm
        G = A.shape[0] if A.ndim > 1 else 1
        rows_close(X.reshape(A.shape), ref.reshape(A.shape), A, Dm, np.full(G, 0.42 * 2), np.full(G, 0.42 * 2 * max(A.shape)), eps=eps, tiny=TINY32 if dtype == "float32" else TINY64)


@proxlib.use_backend(None)  # automatic dispatch (the module's other tests pin numpy)
def test_torch_metric_tensor_for_numpy_input_and_numpy_metric_for_tensor():
    torch = _torch()
    rng = np.random.default_rng(2)
    W, D = rng.normal(size=(3, 4)), np.exp(rng.normal(size=(3, 4)))
    ref = proxlib.prox_group_exclusive(W, 0.5, 0.5, metric=D)
    np.testing.assert_allclose(proxlib.prox_group_exclusive(W, 0.5, 0.5, metric=torch.from_numpy(D)), ref, rtol=0, atol=0)
    X = proxlib.prox_group_exclusive(torch.from_numpy(W), 0.5, 0.5, metric=D)
    assert isinstance(X, torch.Tensor)
    np.testing.assert_allclose(X.numpy(), ref, rtol=1e-13, atol=1e-15)
    # half precision is computed in float32 and returned in its dtype
    Xh = proxlib.prox_group_lasso(torch.from_numpy(W).half(), 0.5, metric=torch.from_numpy(D).half())
    assert Xh.dtype == torch.float16


def test_torch_kernels_take_out():
    torch = _torch()
    from proxlib.backends import torch_dev

    rng = np.random.default_rng(3)
    W, D = torch.from_numpy(rng.normal(size=(3, 4))), torch.from_numpy(np.exp(rng.normal(size=(3, 4))))
    a = torch.full((3,), 0.5, dtype=torch.float64)
    out = torch.empty_like(W)
    res = torch_dev.group_lasso_metric(W, D, a, out=out)
    assert res is out
    np.testing.assert_array_equal(out.numpy(), torch_dev.group_lasso_metric(W, D, a).numpy())
    assert not torch_dev.group_lasso_metric(W.requires_grad_(), D, a).requires_grad  # under no_grad


def test_metric_kernels_stay_on_the_device():
    # like the other modules on the CuPy path: no NumPy import, no host copies
    path = pathlib.Path(MK.__file__)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "numpy" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "numpy"
        if isinstance(node, ast.Attribute):  # the rules of test_cupy_backend's _GPU_PATH check, and .numpy()/.cpu()
            assert node.attr not in {"get", "asnumpy", "tolist", "item", "tobytes", "__array__", "numpy", "cpu"}, node.attr
        if isinstance(node, ast.Name):
            assert node.id not in {"np", "numpy", "float"}, (node.id, node.lineno)


def test_every_metric_kernel_is_registered():
    from proxlib.backends import KERNELS

    for op in proxlib.OPERATORS.values():
        mk = op.penalty.metric_kernel
        if op.name in ("owl", "growl"):
            assert mk is None
        else:
            assert mk == op.kernel + "_metric" and mk in KERNELS


def test_exclusive_metric_large_b_is_accurate_relative_to_the_output():
    """z = D |w| is kept as an exact pair (Z, Zlo), and |x_i| = (z_i - theta) / D_i
    is formed from the pairs' differences: with b large, x ~ z / (b H) is far
    below z, and the low parts Zlo decide its leading digits.  Here z_1 =
    0.1 * 3 and z_2 = 0.3 differ by 2.8e-17 (only in the low part of z_1 once
    rounded), both on the support; dropping the low parts moved x by 1e-6
    relative to itself."""
    W = np.array([[0.1, -0.3, 0.05]])
    D = np.array([[3.0, 1.0, 2.0]])
    b = np.array([1e10])
    ref = M.exact_exclusive_metric_row(W[0], D[0], b[0])
    assert ref[0] != 0 and ref[1] != 0
    np.testing.assert_allclose(MK.exclusive_lasso_metric(W, D, b), [ref], rtol=64 * EPS64, atol=0.0)
