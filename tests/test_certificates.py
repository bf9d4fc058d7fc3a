"""Optimality certificates (proxlib.certificates): every operator has one, it is at the
rounding level at proxlib's output on every backend, it grows with a perturbation, it
flags a wrong prox, and the dual norms match their definition.

The certificates never call a prox, so these tests check the kernels against the
optimality conditions, independently of the CVXPY and exact references.
"""

from __future__ import annotations

import math
import warnings

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import proxlib
from proxlib import _registry
from proxlib import certificates as C
from proxlib.testing import float_arrays, nonincreasing_weights, operator_names, prox_problems, steps

BACKENDS = ["numpy", "numba", "torch"]


def _backend(name):
    marks = []
    if name not in proxlib.available_backends():
        marks.append(pytest.mark.skip(reason=f"backend {name!r} does not import here"))
    return pytest.param(name, marks=marks)


def _on(backend, a):
    if backend == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(a))
    return a


def _prox(backend, pen, v, step):
    with proxlib.use_backend(backend):
        return pen.prox(_on(backend, v), step)


# ----------------------------------------------------------------------------- registry


def test_every_operator_has_a_certificate():
    missing = [name for name in proxlib.OPERATORS if name not in C.CERTIFICATES]
    assert not missing, f"operators without a certificate: {missing}"
    assert set(C.DUAL_NORMS) == {"owl", "growl", "group_lasso", "weighted_l1"}
    assert set(C.DUAL_NORMS) <= set(proxlib.OPERATORS)
    # the strategies of proxlib.testing cover every operator too
    assert operator_names() == list(proxlib.OPERATORS)


def test_penalty_methods_delegate():
    pen = proxlib.GroupLasso(1.0)
    W = np.array([[3.0, 4.0], [0.3, 0.4]])
    X = pen.prox(W)
    assert pen.optimality_residual(W, X) == C.optimality_residual(pen, W, X) <= C.residual_tolerance(pen, W)
    Y = X + np.array([[0.0, 0.1], [0.0, 0.0]])
    assert pen.subdifferential_distance(W, Y) == pytest.approx(C.certify(pen, W, Y).distance)
    assert pen.dual_norm(np.array([[3.0, 4.0], [0.0, 1.0]])) == 5.0
    with pytest.raises(TypeError, match="not a norm"):
        proxlib.ExclusiveLasso(1.0).dual_norm(W)
    assert not C.has_dual_norm(proxlib.Lp(1.0, 0.5)) and C.has_dual_norm(proxlib.OWL([1.0]))


# ----------------------------------------------------------------------------- at the prox


@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
@pytest.mark.parametrize("name", list(proxlib.OPERATORS))
@given(data=st.data())
def test_residual_at_rounding_level_at_proxlib_output(backend, name, data):
    pen, v, step = data.draw(prox_problems(name))
    x = _prox(backend, pen, v, step)
    cert = C.certify(pen, _on(backend, v), x, step)
    assert cert.residual <= cert.tolerance, (cert.residual, cert.tolerance, cert.worst)
    assert cert.tolerance == C.residual_tolerance(pen, _on(backend, v), step)


def test_sqrt_group_weights_agree_across_backends():
    # found by the long run: torch's float64 sqrt of 2 is an ulp below the
    # correctly rounded one, so "sqrt" group weights, hence the thresholds and
    # the certificate's tolerance, differed from NumPy's in the last bit
    pen = proxlib.GroupLasso(9.441578211753893e-148, None, "sqrt")
    v = np.zeros((1, 2), dtype=np.float32)
    ref = pen.thresholds(_registry.layout_of(pen, v, contiguous=False))[0]
    for backend in BACKENDS:
        if backend not in proxlib.available_backends():
            continue
        got = pen.thresholds(_registry.layout_of(pen, _on(backend, v), contiguous=False))[0]
        assert np.asarray(got).tolist() == ref.tolist(), backend
        assert C.residual_tolerance(pen, _on(backend, v)) == C.residual_tolerance(pen, v), backend


def test_tolerance_is_documented_formula():
    v = np.ones((3, 5))
    eps = np.finfo(np.float64).eps
    # (relative comparisons: pytest.approx's default abs=1e-12 let any float64 tolerance, ~1e-14, pass)
    assert C.residual_tolerance(proxlib.WeightedL1(0.0), v) == pytest.approx(16 * 2 * eps + 64 * 5e-324, rel=1e-12, abs=0)
    assert C.residual_tolerance(proxlib.GroupLasso(1.0), v) == pytest.approx(16 * 6 * eps + 64 * 5e-324 / (np.sqrt(5) + 1), rel=1e-12, abs=0)
    assert C.residual_tolerance(proxlib.OWL(np.ones(15)), v.astype(np.float32)) == pytest.approx(
        16 * 16 * np.finfo(np.float32).eps + 64 * 2.0**-149 / 2, rel=1e-12, abs=0
    )
    # GrOWL: N = rows + row length (3 + 5), scale = the largest row norm + s w_1
    assert C.residual_tolerance(proxlib.GrOWL(np.ones(3)), v) == pytest.approx(16 * 9 * eps + 64 * 5e-324 / (np.sqrt(5) + 1), rel=1e-12, abs=0)


def test_tolerance_counts_the_exclusive_coupling_of_subnormal_rounding():
    # found by the long profile: nine equal float32 subnormals, b = 3 sqrt(10);
    # the result y / (1 + 9 b) = 8.505e-42 is correctly rounded (checked in
    # rational arithmetic), and its rounding on the subnormal grid moves
    # each exclusive condition by (1 + b N) half-spacings: the residual
    # (7.4e-5) exceeded the tolerance that counted 64 spacings (6.2e-5)
    v = np.array([7.34684e-40] * 9 + [0.0], dtype=np.float32)
    pen, step = proxlib.ExclusiveLasso(1.0, np.zeros(10, dtype=int), "sqrt"), 3.0
    x = pen.prox(v, step)
    b = Fraction(float(np.float32(step * np.sqrt(10.0))))
    assert x[0] == np.float32(float(Fraction(float(v[0])) / (1 + 9 * b)))
    cert = C.certify(pen, v, x, step)
    assert cert.residual <= cert.tolerance
    N, spacing = 10, 2.0**-149
    gain = 0.5 * (1 + N * step * np.sqrt(10.0)) * np.sqrt(N)
    assert cert.tolerance == pytest.approx(16 * 11 * np.finfo(np.float32).eps + (64 + gain) * spacing / cert.scale)
    # still sharp: one entry 1% off (60 spacings) fails
    x1 = x.copy()
    x1[0] *= np.float32(1.01)
    assert not C.certify(pen, v, x1, step).ok


@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
def test_certificates_at_subnormal_data_with_zero_thresholds(backend):
    # found by the long profile: the normalizer's sigma = 2^1023 times step 2
    # overflowed (inf * 0 thresholds = NaN), and lp's |x|^(p-1) overflowed at
    # a subnormal x with L = 0; the prox is the identity in both
    for pen, v, step in ((proxlib.WeightedL1(0.0), np.array([9.76877987e-309]), 2.0),
                         (proxlib.Lp(0.0, 0.0), np.array([2.79633086e-309, 0.0]), 1.0),
                         (proxlib.Lp(0.0, 0.001), np.array([-2.79633086e-309, 0.0]), 1.0),
                         (proxlib.GroupLasso(0.0), np.array([[5e-324, -1e-310]]), 4.0)):
        x = _prox(backend, pen, v, step)
        cert = C.certify(pen, _on(backend, v), x, step)
        assert cert.residual == 0.0 and cert.tolerance == C.residual_tolerance(pen, v, step)
    # and still sharp there: an x off by a subnormal spacing fails with a nonzero weight
    v = np.array([9.76877987e-309, 4e-310])
    pen = proxlib.WeightedL1(1e-310)
    x = proxlib.prox_weighted_l1(v, 1e-310, 2.0)
    assert C.certify(pen, v, x, 2.0).ok
    assert not C.certify(pen, v, x + np.array([1e-311, 0.0]), 2.0).ok


def test_lp_tie_both_minimisers_pass():
    # |v| = 6, L = 8, p = 1/2: f(0) = f(4) = 18 (x + 4/sqrt(x) = 6 at x = 4)
    pen, v = proxlib.Lp(8.0, 0.5), np.array([6.0, -6.0])
    assert pen.prox(v).tolist() == [0.0, 0.0]
    assert C.optimality_residual(pen, v, np.array([0.0, 0.0])) == 0.0
    assert C.optimality_residual(pen, v, np.array([4.0, -4.0])) == 0.0
    # the local maximum (the smaller stationary point) fails the comparison with 0
    small = 4.0 * (1.0 - 0.0)  # x + 4/sqrt(x) = 6 has its other root at x = (sqrt(5) - 1)^2 ... computed:
    r = np.roots([1.0, 0.0, -6.0, 4.0])  # y^3 - 6 y + 4 = 0, y = sqrt(x)
    small = float(min(y * y for y in r.real if y > 0))
    assert abs(small + 4.0 / math.sqrt(small) - 6.0) < 1e-12
    assert C.optimality_residual(pen, np.array([6.0]), np.array([small])) > 0.05


# ----------------------------------------------------------------------------- away from it


CONVEX_BLOCK_SEPARABLE = ["group_lasso", "exclusive_lasso", "group_exclusive", "weighted_l1", "weighted_l2sq"]


@pytest.mark.parametrize("name", CONVEX_BLOCK_SEPARABLE)
@given(data=st.data(), t=st.sampled_from([1e-9, 1e-6, 1e-3, 1.0]))
def test_residual_bounds_the_distance(name, data, t):
    # convex and separable over blocks: residual * scale >= max_B ||x_B - prox(v)_B||,
    # so a move of t * scale in any entry gives a residual >= t (firm non-expansiveness)
    pen, v, step = data.draw(prox_problems(name, np.float64, max_size=10))
    x = pen.prox(v, step)
    cert = C.certify(pen, v, x, step)
    d = data.draw(float_arrays(v.shape, np.float64, extreme=False))
    if not np.any(d) or cert.scale == 0:
        return
    d = d / np.abs(d).max()
    assert C.optimality_residual(pen, v, x + t * cert.scale * d, step) >= t * (1 - 1e-9) - cert.tolerance


@pytest.mark.parametrize("name", list(proxlib.OPERATORS))
@given(data=st.data())
def test_residual_grows_with_a_perturbation(name, data):
    # x + t d for growing t, d on the support of x (a move off the support makes
    # the residual jump at once: the subdifferential of |.| and ||.|| jumps at 0)
    pen, v, step = data.draw(prox_problems(name, np.float64, max_size=10))
    x = pen.prox(v, step)
    cert = C.certify(pen, v, x, step)
    d = np.where(x != 0, data.draw(float_arrays(v.shape, np.float64, extreme=False)), 0.0)
    if not np.any(d) or cert.scale == 0:
        return
    d = d / np.abs(d).max() * cert.scale
    # small enough moves to keep every sign and stay near x (lp: on its branch)
    ts = [t for t in (1e-9, 1e-7, 1e-5, 1e-3) if np.all(np.abs(t * d) <= 0.5 * np.abs(x))]
    res = [C.optimality_residual(pen, v, x + t * d, step) for t in ts]
    assert all(b >= a - 2 * cert.tolerance for a, b in zip(res, res[1:])), res
    big = [r for t, r in zip(ts, res) if t * np.abs(d).max() > 1e6 * cert.tolerance * cert.scale]
    assert all(r > cert.tolerance for r in big), (res, cert.tolerance)


@given(st.integers(1, 6), st.integers(1, 6), st.data())
@example(G=1, m=3, data=None)
def test_thesis_exclusive_step_is_flagged(G, m, data):
    if data is None:
        W, lam, step = np.array([[3.0, 1.0, -0.5]]), 0.5, 1.0
    else:
        W = data.draw(float_arrays((G, m), np.float64, extreme=False))
        lam, step = data.draw(st.floats(0.05, 3.0)), data.draw(steps())
    pen = proxlib.ExclusiveLasso(lam)
    exact = pen.prox(W, step)
    thesis = proxlib.prox_exclusive_lasso_thesis(W, lam, step)
    cert = C.certify(pen, W, thesis, step)
    # the thesis' step thresholds by b ||w||_1 instead of b S_k / (1 + b k): it
    # differs exactly where a row keeps non-zeros, and the certificate sees it
    # (the distance to the prox is at most the row's violation: convex penalty)
    far = np.abs(thesis - exact).max() > 1e-9 * cert.scale
    assert (cert.residual > 1e3 * cert.tolerance) == far
    # (+ the rounding of proxlib's own prox, which stands in for the exact one)
    gaps = np.sqrt(((thesis - exact) ** 2).sum(axis=1))
    assert np.all(gaps <= cert.violation * (1 + 1e-12) + cert.tolerance * cert.scale)


@given(prox_problems("group_exclusive", np.float64))
def test_sequential_group_exclusive_is_flagged(problem):
    pen, W, step = problem
    seq = proxlib.prox_group_exclusive_sequential(W, pen.lam, pen.mu, step, groups=pen.groups, group_weights=pen.group_weights)
    exact = pen.prox(W, step)
    cert = C.certify(pen, W, seq, step)
    far = np.abs(seq - exact).max() > 1e-9 * cert.scale
    if far:
        assert cert.residual > 1e3 * cert.tolerance
    # the distance bound of the convex block-separable certificate (+ the
    # rounding of proxlib's own prox, which stands in for the exact one)
    bound = math.sqrt(float(np.sum(np.asarray(cert.violation) ** 2))) * (1 + 1e-9)
    assert np.linalg.norm(seq - exact) <= bound + math.sqrt(W.shape[0]) * cert.tolerance * cert.scale


# ----------------------------------------------------------------------------- scale-free


@pytest.mark.parametrize("name", ["owl", "growl", "group_lasso", "weighted_l1"])
@given(data=st.data(), k=st.integers(-40, 40))
def test_scale_free_for_norms(name, data, k):
    pen, v, step = data.draw(prox_problems(name, np.float64, ragged=False))
    x = pen.prox(v, step) * 1.001  # any point: the residual is homogeneous of degree 0
    s = 2.0**k  # powers of two scale exactly, unless a value leaves the normal range:
    for a in (np.asarray(v), np.asarray(x), np.asarray(step)):
        assume(np.array_equal((s * a) / s, a))
    assert C.optimality_residual(pen, s * v, s * x, s * step) == C.optimality_residual(pen, v, x, step)


@pytest.mark.parametrize("name", ["owl", "growl"])
def test_sorted_l1_certificate_sees_a_near_tie_left_unpooled(name):
    """Two magnitudes 1/16 apart at 2^20 with weights (1, 0) and step 1/16:
    the prox pools them (both 2^20 - 1/32); sorted soft thresholding without
    the pooling step leaves them 1/16 apart, 1/32 from the prox.  The
    complementarity of a boundary is the lesser of shifting r and closing
    the gap, so that point fails (weighting by the relative gap 6e-8 let it
    pass, long-profile example of test_owl_without_pooling_fails), and the
    prox itself passes."""
    v = np.array([2.0**20, 2.0**20])
    w = np.array([1.0, 0.0])
    step = 1.0 / 16
    bad = np.array([2.0**20 - step, 2.0**20])  # the larger weight to the first of the tie
    if name == "growl":
        v, bad = v[:, None] * np.array([[0.6, 0.8]]), bad[:, None] * np.array([[0.6, 0.8]])
        pen = proxlib.GrOWL(w)
    else:
        pen = proxlib.OWL(w)
    x = pen.prox(v, step)
    gap = np.abs(x - bad) if name == "owl" else np.linalg.norm(x - bad, axis=1)  # per entry / per row
    assert gap.max() >= step / 2 * 0.99
    cert = C.certify(pen, v, bad, step)
    assert cert.residual > 1e6 * cert.tolerance
    assert cert.distance >= step / 2  # at least the gap it should have closed, in units of v
    assert C.certify(pen, v, x, step).ok


@pytest.mark.parametrize("name", ["group_lasso", "group_exclusive"])
def test_group_certificates_reject_a_zero_row_outside_the_ball(name):
    """A zero row is the prox iff ||v_g|| <= s a_g: a row of norm 1.5 with
    a = 1 (group lasso; group+exclusive's lam (1 - mu) = 3/4) leaves the ball
    by at least 1/2, so x = 0 must fail, also where ||v_g|| < 2 a_g."""
    v = np.array([[0.9, 1.2]])
    pen = proxlib.GroupLasso(1.0) if name == "group_lasso" else proxlib.GroupExclusive(1.0, 0.25)
    cert = C.certify(pen, v, np.zeros_like(v), 1.0)
    assert cert.residual > 1e6 * cert.tolerance
    assert cert.distance >= 0.5 * (1 - 1e-12)
    assert C.certify(pen, v, pen.prox(v, 1.0), 1.0).ok


@pytest.mark.parametrize("name", ["owl", "growl"])
def test_sorted_l1_certificate_rejects_zero_where_the_data_leaves_the_dual_ball(name):
    """x = 0 is the prox iff the partial sums of the sorted |v| / s stay within
    those of the weights: v = (1.5, 0) with weights (1, 1) exceeds them by
    1/2 (the prox is (0.5, 0)).  Only the dual-norm condition sees it (x = 0
    has no boundary in its order), so a certificate whose partial sums were
    compared with a multiple of the weights' accepted x = 0."""
    v, w = np.array([1.5, 0.0]), np.array([1.0, 1.0])
    if name == "growl":
        v, pen = v[:, None] * np.array([[0.6, 0.8]]), proxlib.GrOWL(w)
    else:
        pen = proxlib.OWL(w)
    cert = C.certify(pen, v, np.zeros_like(v), 1.0)
    assert cert.residual > 1e6 * cert.tolerance
    assert cert.distance >= 0.5 * (1 - 1e-12)
    assert C.certify(pen, v, pen.prox(v, 1.0), 1.0).ok


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["owl", "growl"])
def test_sorted_l1_certificate_rejects_x_in_the_box_where_thresholds_dwarf_the_data(name, dtype):
    """Weights 1e6 times the data: the prox is 0.  A boundary's gap was
    closed at its cost in units of v, divided by the scale max|v| + s w_1,
    so x = v scored |v| / (s w_1) = 2e-6: below float32's tolerance, and in
    float64 from weights 1e14 times the data on.  The gap is now measured
    against max|v| (the prox's magnitudes never exceed it)."""
    v = np.array([3.0, -1.0, 0.5, 2.0], dtype=dtype)
    for lam, step in ((1e6, 1.0), (1e100, 1.0), (1e300, 1e300)):  # the last: step * w overflows
        w = np.full(4, lam)
        if name == "growl":
            V, pen = v[:, None] * np.array([[0.6, 0.8]], dtype=dtype), proxlib.GrOWL(w)
        else:
            V, pen = v, proxlib.OWL(w)
        x = pen.prox(V, step)
        assert not np.any(x) and C.certify(pen, V, x, step).ok
        for wrong in (V.copy(), V / 2, np.where(V == V.max(), V, 0)):
            assert not C.certify(pen, V, wrong, step).ok


@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
@pytest.mark.parametrize(
    "pen", [proxlib.ExclusiveLasso(1e300), proxlib.GroupExclusive(1e300, 0.5), proxlib.WeightedL2Sq(1e300)], ids=repr
)
def test_certificates_where_step_times_threshold_overflows(pen, backend):
    """step * threshold = 1e600 leaves float64 (the prox solves it exactly,
    proxlib._range: here 0).  The certificate formed inf * 0: the exclusive
    lasso's and weighted l2^2's tolerances were inf (any x passed, x = v
    included), group+exclusive's NaN (its own answer failed)."""
    v, step = np.array([[3.0, -1.0, 0.5, 0.0]]), 1e300
    x = _prox(backend, pen, v, step)
    assert not np.any(np.asarray(x))
    assert C.certify(pen, _on(backend, v), x, step).ok
    for wrong in (v.copy(), v / 2):
        cert = C.certify(pen, _on(backend, v), _on(backend, wrong), step)
        assert math.isfinite(cert.tolerance) and not cert.ok


@pytest.mark.parametrize("name", ["group_lasso", "weighted_l1", "owl", "growl"])
def test_scale_free_for_entries_near_the_subnormals(name):
    """Entries at the smallest normal magnitudes: v - x is subnormal, with
    fewer significant bits after each halving, so the conditions computed
    as they are drift in the last digits (long-profile Hypothesis example,
    group lasso at 2^-1022).  certify brings such data up by an exact power
    of two: the residual is the same at every scale, the distance is in
    units of v."""
    v = np.full((1, 4), 2.0**-1022) * np.array([1.0, -1.0, 1.5, 0.75])
    x = v * (1 + 2.0**-10)  # exact, and exact at every scale below
    w = np.zeros(v.size if name == "owl" else 1)
    pen = {"group_lasso": proxlib.GroupLasso(0.0), "weighted_l1": proxlib.WeightedL1(0.0),
           "owl": proxlib.OWL(w), "growl": proxlib.GrOWL(w)}[name]
    ref = C.optimality_residual(pen, v, x, 1.0)
    assert ref > 0
    for k in range(1, 30):
        s = 2.0**-k
        assert np.array_equal((s * x) / s, x) and np.array_equal((s * v) / s, v)
        assert C.optimality_residual(pen, s * v, s * x, s) == ref
    cert = C.certify(pen, v, x, 1.0)
    assert cert.distance == pytest.approx(cert.residual * cert.scale, rel=1e-12)


# ----------------------------------------------------------------------------- dual norms


@given(st.integers(1, 8).flatmap(lambda n: st.tuples(float_arrays((n,), extreme=False), nonincreasing_weights(n))), st.data())
def test_owl_dual_norm_is_the_dual_of_owl(problem, data):
    r, w = problem
    w = w + 0.1  # a norm (no zero weight)
    pen = proxlib.OWL(w)
    dn = pen.dual_norm(r)
    # <r, x> <= dn * Omega(x) for every x ...
    for _ in range(5):
        x = data.draw(float_arrays(r.shape, extreme=False))
        assert float(r @ x) <= dn * pen.value(x) * (1 + 1e-12) + 1e-12
    # ... with equality at an extreme point of the unit ball: sign(r) on the top k of |r|
    order = np.argsort(-np.abs(r), kind="stable")
    best = max(
        float(r @ np.where(np.isin(np.arange(r.size), order[:k]), np.sign(r), 0.0)) / pen.value(np.where(np.isin(np.arange(r.size), order[:k]), 1.0, 0.0))
        for k in range(1, r.size + 1)
    )
    assert best == pytest.approx(dn, rel=1e-12, abs=1e-300)


@given(st.integers(1, 5), st.integers(1, 4), st.data())
def test_group_and_growl_dual_norms(G, m, data):
    R_ = data.draw(float_arrays((G, m), extreme=False))
    lam = data.draw(st.floats(0.1, 3.0))
    c = data.draw(st.lists(st.floats(0.1, 2.0), min_size=G, max_size=G))
    nr = np.linalg.norm(R_, axis=1)
    assert proxlib.GroupLasso(lam, group_weights=np.array(c)).dual_norm(R_) == pytest.approx(np.max(nr / (lam * np.array(c))), rel=1e-14)
    w = np.sort(np.array(c))[::-1]
    growl = proxlib.GrOWL(w).dual_norm(R_)
    assert growl == pytest.approx(proxlib.OWL(w).dual_norm(nr), rel=1e-14)
    wl1 = np.array(c)
    v = R_[:, 0]
    assert proxlib.WeightedL1(wl1).dual_norm(v) == pytest.approx(np.max(np.abs(v) / wl1), rel=1e-15)
    # zero weight: an unpenalised direction (0/0 = 0, c/0 = inf)
    assert proxlib.WeightedL1(np.array([1.0, 0.0])).dual_norm(np.array([2.0, 0.0])) == 2.0
    assert proxlib.WeightedL1(np.array([1.0, 0.0])).dual_norm(np.array([2.0, 1.0])) == math.inf


# ----------------------------------------------------------------------------- inputs


def test_bad_inputs():
    pen = proxlib.OWL([1.0, 0.5])
    v = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="x must have v's shape"):
        C.optimality_residual(pen, v, np.zeros(3))
    with pytest.raises(ValueError, match="step"):
        C.optimality_residual(pen, v, v, step=0.0)
    with pytest.raises(TypeError, match="penalty"):
        C.optimality_residual("owl", v, v)
    with pytest.raises(TypeError, match="x must be"):
        C.optimality_residual(pen, v, np.array(["a", "b"]))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one library"):
        C.optimality_residual(pen, v, torch.zeros(2, dtype=torch.float64))
    # inputs are not modified
    x = np.array([0.5, 1.0])
    vc, xc = v.copy(), x.copy()
    C.certify(pen, v, x)
    assert np.array_equal(v, vc) and np.array_equal(x, xc)


def test_empty_and_zero():
    pen = proxlib.GroupLasso(1.0)
    assert C.optimality_residual(pen, np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    empty = C.certify(pen, np.zeros((0, 3)), np.zeros((0, 3)))
    assert empty.residual == empty.tolerance == 0.0 and empty.ok  # ok is residual <= tolerance (documented), not <
    assert C.optimality_residual(proxlib.WeightedL2Sq(1.0), np.zeros(3), np.zeros(3)) == 0.0
    assert C.optimality_residual(proxlib.WeightedL2Sq(1.0), np.zeros(3), np.ones(3)) == math.inf


def test_torch_result_stays_on_device_until_the_scalar():
    torch = pytest.importorskip("torch")
    pen = proxlib.GrOWL(np.array([2.0, 1.0, 0.5]))
    W = torch.randn(3, 4, dtype=torch.float64)
    cert = C.certify(pen, W, pen.prox(W))
    assert isinstance(cert.violation, torch.Tensor) and cert.violation.device == W.device
    assert cert.ok


def test_dual_norm_of_very_uneven_groups_is_not_padded(monkeypatch):
    # one group of n/2 features and n/2 singletons: the dual norm padded them
    # into (n/2 + 1) x n/2 rows (32 MB for 32 KB here, gigabytes from n = 10^5),
    # at every gap check of prox_grad; it is a max over groups, so over the
    # size classes the public prox solves apart (proxlib._rows.ragged_parts):
    # the padded layout's value bit for bit.  (np.linalg.norm sums otherwise:
    # on an AMD EPYC it rounded the big group's norm one ulp above the
    # correctly rounded one, which proxlib's is, so it is compared to 2 ulps.)
    import tracemalloc

    from proxlib import _rows

    n = 4000
    r = np.random.default_rng(1).standard_normal(n)
    groups = np.r_[np.zeros(n // 2, dtype=np.int64), np.arange(1, n // 2 + 1)]
    pen = proxlib.GroupLasso(0.5, groups=groups)
    pen.dual_norm(r)  # (first: anything compiled or loaded, untraced)
    tracemalloc.start()
    try:
        d = pen.dual_norm(r)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * r.nbytes
    assert d == pytest.approx(max(float(np.linalg.norm(r[: n // 2])), float(np.abs(r[n // 2:]).max())) / 0.5, rel=4.5e-16, abs=0)
    monkeypatch.setattr(_rows, "PADDED_SLACK", 10**12)  # (never split: the padded layout)
    assert d == pen.dual_norm(r)


@pytest.mark.parametrize("make", [lambda g: proxlib.GroupLasso(0.4, groups=g), lambda g: proxlib.ExclusiveLasso(0.4, groups=g),
                                  lambda g: proxlib.GroupExclusive(0.4, 0.5, groups=g)], ids=["group_lasso", "exclusive", "group_exclusive"])
def test_certificate_of_very_uneven_groups_is_not_padded(make, monkeypatch):
    # optimality_residual, certify and residual_tolerance laid very uneven
    # groups out as n_groups x largest-group rows (32 MB for 32 KB here,
    # gigabytes from n = 10^5; prox_grad certifies its result so): they now
    # take the size classes apart as the prox does, with the padded layout's
    # residual, tolerance, scale and worst group
    import tracemalloc

    from proxlib import _rows

    n = 4000
    rng = np.random.default_rng(2)
    v = rng.standard_normal(n)
    groups = np.r_[np.zeros(n // 2, dtype=np.int64), np.arange(1, n // 2 + 1)]
    pen = make(groups)
    x = pen.prox(v, 0.5)
    x[n // 2 + 7] += 1e-3  # the singleton labelled 8 off its prox
    C.certify(pen, v, x, 0.5)  # (first: anything compiled or loaded, untraced)
    tracemalloc.start()
    try:
        cert = C.certify(pen, v, x, 0.5)
        tol = C.residual_tolerance(pen, v, 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * v.nbytes
    assert C.optimality_residual(pen, v, pen.prox(v, 0.5), 0.5) <= tol
    monkeypatch.setattr(_rows, "PADDED_SLACK", 10**12)  # (never split: the padded layout)
    padded = C.certify(pen, v, x, 0.5)
    assert cert.labels[cert.worst] == padded.labels[padded.worst] == 8
    assert cert.residual == pytest.approx(padded.residual, rel=1e-12)
    assert cert.scale == pytest.approx(padded.scale, rel=1e-14) and cert.tolerance == pytest.approx(padded.tolerance, rel=1e-14)
    assert tol == pytest.approx(C.residual_tolerance(pen, v, 0.5), rel=1e-14)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_certificate_of_split_groups_is_in_label_order(lib, monkeypatch):
    # split into size classes, the certificate's rows came in size-class order
    # (the singletons first), not in increasing label order as documented:
    # worst (and violation[i]) named another group than the padded layout's
    from proxlib import _rows

    rng = np.random.default_rng(3)
    groups = np.r_[np.full(30, 7), rng.choice([1000, 3, 50, 9, 11], 30)][rng.permutation(60)]
    v = rng.standard_normal(60)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        v, groups = torch.from_numpy(v), torch.from_numpy(groups)
    pen = proxlib.GroupExclusive(0.3, 0.4, groups, "sqrt")
    x = pen.prox(v, 0.7)
    x[int(np.flatnonzero(np.asarray(groups) == 9)[0])] += 1e-3
    monkeypatch.setattr(_rows, "PADDED_SLACK", 0)  # (split: size classes 1, 2-3 and 16-31)
    assert _rows.ragged_parts(v, groups) is not None
    cert = C.certify(pen, v, x, 0.7)
    monkeypatch.setattr(_rows, "PADDED_SLACK", 10**12)  # (never split: the padded layout)
    padded = C.certify(pen, v, x, 0.7)
    assert np.asarray(cert.labels).tolist() == np.asarray(padded.labels).tolist() == [3, 7, 9, 11, 50, 1000]
    assert cert.worst == padded.worst == 2
    np.testing.assert_allclose(np.asarray(cert.violation), np.asarray(padded.violation), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", [proxlib.WeightedL2Sq, proxlib.ExclusiveLasso], ids=["weighted_l2sq", "exclusive_lasso"])
def test_subnormal_slack_at_a_step_below_one(make):
    """The prox of 1e-300 with step * 2w = 2e20 is subnormal (5e-321, about
    ten spacings): its rounding moves v - x - 2 s w x by 1e20 spacings, which
    the tolerance counts, as (step * 2^-1074) * threshold: 0 for any step < 1
    (0.5 * 2^-1074 rounds to 0), so proxlib's own answer failed at step 0.5
    (residual 4e-4, tolerance 7e-15) and passed at step 1 (same problem)."""
    v = np.array([[1e-300, 3e-301]])
    for step in (1.0, 0.5, 2.0**-20):
        pen = make((1e20 if make is proxlib.WeightedL2Sq else 2e20) / step)
        x = pen.prox(v, step)
        cert = C.certify(pen, v, x, step)
        assert np.any(x) and cert.ok, (step, cert)
        assert cert.tolerance == C.residual_tolerance(pen, v, step)
        assert not C.certify(pen, v, np.zeros_like(v), step).ok  # still sharp: x = 0 fails


@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
@pytest.mark.parametrize(
    "pen, step",
    [(proxlib.ExclusiveLasso(2.0**1000), 2.0**30), (proxlib.GroupExclusive(2.0**1000, 1.0), 2.0**30),
     (proxlib.WeightedL2Sq(2.0**999), 2.0**28)],
    ids=["exclusive_lasso", "group_exclusive", "weighted_l2sq"],
)
def test_certificates_where_step_times_threshold_overflows_at_a_nonzero_prox(pen, step, backend):
    """step * threshold = 2^1030 leaves float64 but data at 2^700 keeps a
    nonzero prox (about 2^-330, which proxlib computes).  The certificate
    formed inf * x: violation inf, proxlib's own answer failed."""
    v = np.array([[2.0**700, -2.0**699, 1.0]])
    x = _prox(backend, pen, v, step)
    assert np.any(np.asarray(x))
    assert C.certify(pen, _on(backend, v), x, step).ok
    for wrong in (np.asarray(x) * 1.001, v.copy(), np.zeros_like(v)):
        assert not C.certify(pen, _on(backend, v), _on(backend, wrong), step).ok


def test_weighted_l1_certificate_rejects_a_zero_entry_outside_its_threshold():
    """x = 0 for |v| = 1.5 > t = 1 (the prox is 0.5) fails, though |v| is
    within twice the threshold."""
    pen, v = proxlib.WeightedL1(1.0), np.array([1.5, -0.25])
    cert = C.certify(pen, v, np.zeros_like(v), 1.0)
    assert cert.residual > 1e6 * cert.tolerance
    assert C.certify(pen, v, pen.prox(v, 1.0), 1.0).ok


def test_exclusive_certificate_rejects_a_zero_entry_outside_its_threshold():
    """v = (1, 0.5), b = 1/2: x = (v_1 / (1 + b), 0) is optimal on its support,
    but |v_2| = 1/2 exceeds b ||x||_1 = 1/3 (the prox is (5/8, 1/8)): it
    fails, though within twice the threshold."""
    pen, v = proxlib.ExclusiveLasso(0.5), np.array([[1.0, 0.5]])
    cert = C.certify(pen, v, np.array([[1.0 / 1.5, 0.0]]), 1.0)
    assert cert.residual > 1e6 * cert.tolerance
    assert C.certify(pen, v, pen.prox(v, 1.0), 1.0).ok


def test_growl_certificate_rejects_a_row_turned_off_the_direction_of_its_data():
    """The prox keeps each row's direction; a row turned by 1e-7 (norm
    kept to first order) moves the residual ||r|| above the weight only at
    second order (1e-14, under the tolerance): the component of r
    orthogonal to x must flag it at first order."""
    pen = proxlib.GrOWL(np.array([1.0]))
    v = np.array([[3.0, 4.0]])
    x = pen.prox(v, 1.0)
    assert C.certify(pen, v, x, 1.0).ok
    turned = x + 1e-7 * np.array([[-0.8, 0.6]])
    cert = C.certify(pen, v, turned, 1.0)
    assert cert.residual > 1e6 * cert.tolerance
    assert cert.distance >= 1e-7 * (1 - 1e-6)


def test_lp_certificate_rejects_zero_where_the_data_exceeds_the_threshold():
    """Off the support the condition is |v| <= tau (tau = 1.5 for L = 1,
    p = 1/2): x = 0 at |v| = 1.6 is not the prox (1.1295...) and fails by
    |v| - tau = 0.1, in units of v; an off-support test against a larger
    multiple of tau accepted it."""
    pen, v = proxlib.Lp(1.0, 0.5), np.array([1.6, -0.3])
    assert C._lp_threshold(1.0, 0.5) == pytest.approx(1.5, rel=1e-15)
    assert pen.prox(v)[0] > 1.0
    cert = C.certify(pen, v, np.zeros_like(v), 1.0)
    assert cert.residual > 1e6 * cert.tolerance
    assert cert.distance == pytest.approx(0.1, rel=1e-12)
    assert C.certify(pen, v, pen.prox(v), 1.0).ok


def test_residual_tolerance_warns_of_nothing_where_a_violation_overflows():
    """residual_tolerance computes the certificate at x = v for its scale
    terms, outside certify's errstate: for lp with p = 0 and a tiny entry,
    L / |v| overflowed ("overflow encountered in divide", then "invalid value
    in multiply" for 0 * inf), an error under -W error.  Found by the long
    Hypothesis profile (test_residual_at_rounding_level_at_proxlib_output
    [lp-numba]).  The tolerance is certify's."""
    v = np.array([1e-300, 3.0])
    for p in (0.0, 0.01):
        pen = proxlib.Lp(1e10, p)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tol = C.residual_tolerance(pen, v)
            assert tol == C.certify(pen, v, pen.prox(v)).tolerance


@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.7])
def test_lp_certificate_where_step_times_lam_overflows(p, backend):
    """L = step * lam = 1e503 leaves float64, but the threshold (p < 1) and
    the term L |x|^(p-1) at a kept entry of 1e280 need not: the certificate
    formed them from L = inf and reported inf for proxlib's own answer (p = 0:
    x = (0, 1e280), exact).  A zero where the prox keeps the entry, or the
    data where the prox is zero, still fails."""
    pen, v, step = proxlib.Lp(1e308, p), np.array([-1e195, 1e280]), 1e195
    x = np.asarray(_prox(backend, pen, v, step))
    assert x[0] == 0.0
    assert C.certify(pen, _on(backend, v), _on(backend, x), step).ok
    wrong = np.zeros_like(v) if x[1] != 0 else v.copy()
    assert not C.certify(pen, _on(backend, v), _on(backend, wrong), step).ok
    if p == 0.0:
        assert x[1] == 1e280  # (above tau = sqrt(2 L) ~ 3e251: kept)


@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
@pytest.mark.parametrize("name", ["owl", "growl"])
def test_sorted_l1_certificate_at_a_step_so_small_that_vmax_over_step_overflows(name, backend):
    """vmax / step = 1e310: the complementarity weighed a zero gap (a tie of
    zeros) by it, 0 * inf = NaN, and the residual of proxlib's exact answer
    was inf.  The gap is now weighed in units of v.  Halving the kept entry
    still fails."""
    w, step = np.array([1.0, 1.0]), 1e-300
    pen = proxlib.OWL(w) if name == "owl" else proxlib.GrOWL(w)
    v = np.array([1e10, 0.0]) if name == "owl" else np.array([[1e10, 0.0], [0.0, 0.0]])
    x = _prox(backend, pen, v, step)
    cert = C.certify(pen, _on(backend, v), x, step)
    assert math.isfinite(cert.residual) and cert.ok
    assert not C.certify(pen, _on(backend, v), _on(backend, v / 2), step).ok
