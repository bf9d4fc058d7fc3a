"""The seed thesis' approximate steps: where they differ from the exact proxes,
by how much, and where they coincide.

By how much: the prox objective F is 1-strongly convex and the exact operator
returns its minimiser, so any other point z has
F(z) - F(exact) >= 1/2 ||z - exact||^2.  We assert that bound (it is what
"strictly worse" means quantitatively) and that the distance is positive on
generic inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import _cvx as R
import proxlib

pytestmark = pytest.mark.usefixtures("numpy_backend")

EPS64 = np.finfo(np.float64).eps


def F(X, W, step, lam, mu):
    """1/2||X - W||^2 + step lam sum_rows ((1 - mu)||x||_2 + mu/2 ||x||_1^2), float64."""
    return R.objective(X, W, step * lam, R.group_exclusive_value(X, np.ones(W.shape[0]), mu))


def slack(W, step, lam):
    return R.objective_slack(W, step * lam, R.group_exclusive_value(W, np.ones(W.shape[0]), 0.5) * 2, W.size)


def strongly_worse(Z, X, W, step, lam, mu):
    """F(Z) - F(X) >= 1/2||Z - X||^2 (X the exact minimiser), up to evaluation rounding."""
    gap = F(Z, W, step, lam, mu) - F(X, W, step, lam, mu)
    d2 = float(np.sum((Z - X) ** 2))
    assert gap >= 0.5 * d2 - slack(W, step, lam), (gap, d2)
    return gap, d2


# --------------------------------------------------------------------------- thesis exclusive step


@given(R.matrices(4, 6), st.floats(0.05, 3), R.steps)
def test_thesis_exclusive_step_differs_and_is_worse(W, lam, step):
    X = proxlib.prox_exclusive_lasso(W, lam, step)
    T = proxlib.prox_exclusive_lasso_thesis(W, lam, step)
    # its own formula: sign(w)(|w| - step lam ||w_g||_1)_+
    tau = step * lam * np.abs(W).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(T, np.sign(W) * np.maximum(np.abs(W) - tau, 0), rtol=0, atol=4 * EPS64 * np.abs(W).max() * (1 + step * lam * W.shape[1]))
    # the thesis threshold b||w||_1 exceeds the exact b S_k/(1 + b k): it shrinks more
    assert np.all(np.abs(T) <= np.abs(X) + 4 * EPS64 * np.abs(W).max())
    strongly_worse(T, X, W, step, lam, 1.0)
    # they differ on every non-zero row: the exact prox keeps the largest entry
    # (|w|_(1)/(1 + b) at least), the thesis step keeps strictly less of it
    nonzero_rows = np.any(W != 0, axis=1)
    for t, x in zip(T[nonzero_rows], X[nonzero_rows]):
        assert np.any(x != 0)
        assert not np.array_equal(t, x)


def test_thesis_exclusive_hand_case():
    # w = [3, 1, -0.5], b = 0.5.  Exact: k = 1, tau = 0.5*3/1.5 = 1, x = [2, 0, 0];
    # F = 1/2 (1 + 1 + 0.25) + 0.5/2 * 2^2 = 2.125.
    # Thesis: tau = 0.5 * 4.5 = 2.25, x = [0.75, 0, 0];
    # F = 1/2 (2.25^2 + 1 + 0.25) + 0.25 * 0.75^2 = 3.296875.
    w = np.array([[3.0, 1.0, -0.5]])
    X = proxlib.prox_exclusive_lasso(w, 0.5)
    T = proxlib.prox_exclusive_lasso_thesis(w, 0.5)
    np.testing.assert_allclose(X, [[2.0, 0.0, 0.0]], rtol=2 * EPS64)
    np.testing.assert_allclose(T, [[0.75, 0.0, 0.0]], rtol=2 * EPS64)
    assert F(X, w, 1.0, 0.5, 1.0) == pytest.approx(2.125, rel=4 * EPS64)
    assert F(T, w, 1.0, 0.5, 1.0) == pytest.approx(3.296875, rel=4 * EPS64)


@given(R.matrices(4, 6), R.steps)
def test_thesis_exclusive_coincides_only_trivially(W, step):
    # b = 0: both are the identity; zero rows stay zero in both
    np.testing.assert_array_equal(proxlib.prox_exclusive_lasso_thesis(W, 0.0, step), W)
    Z = np.zeros_like(W)
    np.testing.assert_array_equal(proxlib.prox_exclusive_lasso_thesis(Z, 1.0, step), Z)
    np.testing.assert_array_equal(proxlib.prox_exclusive_lasso(Z, 1.0, step), Z)


# --------------------------------------------------------------------------- sequential composition


@pytest.mark.parametrize("variant", ["thesis", "exact"])
@given(R.matrices(4, 6), st.floats(0.05, 3), st.floats(0.05, 0.95), R.steps)
def test_sequential_differs_and_is_worse(variant, W, lam, mu, step):
    X = proxlib.prox_group_exclusive(W, lam, mu, step)
    S = proxlib.prox_group_exclusive_sequential(W, lam, mu, step, exclusive_step=variant)
    # its definition: E(G(W)), G the group prox at lam(1-mu), E the exclusive step at lam mu
    G = proxlib.prox_group_lasso(W, lam * (1 - mu), step)
    E = proxlib.prox_exclusive_lasso_thesis if variant == "thesis" else proxlib.prox_exclusive_lasso
    np.testing.assert_array_equal(S, E(G, lam * mu, step))
    strongly_worse(S, X, W, step, lam, mu)
    # Generic rows differ.  With x = c u(b c) exact and t u(b) sequential-exact
    # (t = 1 - a/||w||; the exclusive prox is scale-equivariant), the directions
    # differ iff the thresholds differ, i.e. whenever 0 < mu < 1, the support has
    # two or more entries and their magnitudes are not all equal.  (One entry:
    # both are sign(w)(|w| - a)_+/(1 + b): the composition is exact in 1-D.)
    for s, x in zip(S, X):
        mags = np.abs(x[x != 0])
        if mags.size >= 2 and np.ptp(mags) > 1e-6 * mags.max():
            assert np.linalg.norm(s - x) > 0


def test_sequential_differs_on_a_fixed_example():
    # A deterministic witness, with the gap measured rather than hard-coded:
    # 100 random 3x8 problems at lam = 1, mu = 1/2 all differ, and the exact
    # operator's objective is lower by at least half the squared distance.
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(100):
        W = rng.normal(size=(3, 8)) * 3
        X = proxlib.prox_group_exclusive(W, 1.0, 0.5)
        for variant in ("thesis", "exact"):
            S = proxlib.prox_group_exclusive_sequential(W, 1.0, 0.5, exclusive_step=variant)
            gap, d2 = strongly_worse(S, X, W, 1.0, 1.0, 0.5)
            assert d2 > 0
            gaps.append(gap / F(X, W, 1.0, 1.0, 0.5))
    assert min(gaps) > 0


@given(R.matrices(4, 6), R.lams, R.steps)
def test_sequential_coincides_where_it_should(W, lam, step):
    tol = 8 * W.shape[1] * EPS64 * (np.abs(W).max() + step * lam) * (1 + step * lam * W.shape[1])
    for variant in ("thesis", "exact"):
        # mu = 0: the exclusive step has parameter 0 (the identity): group lasso
        np.testing.assert_allclose(
            proxlib.prox_group_exclusive_sequential(W, lam, 0.0, step, exclusive_step=variant),
            proxlib.prox_group_exclusive(W, lam, 0.0, step), rtol=0, atol=tol,
        )
    # mu = 1 with the exact exclusive step: the group step is the identity
    np.testing.assert_allclose(
        proxlib.prox_group_exclusive_sequential(W, lam, 1.0, step, exclusive_step="exact"),
        proxlib.prox_group_exclusive(W, lam, 1.0, step), rtol=0, atol=tol,
    )
    # ... but not with the thesis step (on non-zero rows, when b = step lam > 0;
    # the top entry differs by >= b^2 |w|_(1) / (1 + b), so b >= 1e-4 keeps the
    # difference far above rounding)
    if step * lam >= 1e-4 and np.any(W != 0):
        assert not np.array_equal(
            proxlib.prox_group_exclusive_sequential(W, lam, 1.0, step, exclusive_step="thesis"),
            proxlib.prox_group_exclusive(W, lam, 1.0, step),
        )


@given(R.matrices(4, 6), st.floats(0.05, 3), st.floats(0.0, 0.95), R.steps)
def test_sequential_zero_results_coincide(W, lam, mu, step):
    # rows with ||w|| <= a = step lam (1 - mu) are 0 for the exact prox and for
    # the composition (the group step already zeroes them)
    a = step * lam * (1 - mu)
    small = R.row_norms(W) <= a
    assume(np.any(small))
    X = proxlib.prox_group_exclusive(W, lam, mu, step)
    for variant in ("thesis", "exact"):
        S = proxlib.prox_group_exclusive_sequential(W, lam, mu, step, exclusive_step=variant)
        np.testing.assert_array_equal(S[small], 0.0)
        np.testing.assert_array_equal(X[small], 0.0)


@given(R.ragged_groups(), st.floats(0.05, 2), st.floats(0.05, 0.95))
def test_approximations_take_ragged_groups(vg, lam, mu):
    v, labels = vg
    for fn, args in (
        (proxlib.prox_exclusive_lasso_thesis, (lam,)),
        (proxlib.prox_group_exclusive_sequential, (lam, mu)),
    ):
        x = fn(v, *args, groups=labels)
        assert x.shape == v.shape
        for g in np.unique(labels):  # each group alone, as a one-row problem
            idx = labels == g
            np.testing.assert_allclose(x[idx], fn(v[idx][None, :], *args)[0], rtol=0, atol=8 * EPS64 * (1 + np.abs(v).max()) * idx.sum())
