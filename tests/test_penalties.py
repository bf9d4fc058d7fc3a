"""Penalty objects: ``value`` evaluated as carefully as ``prox``.

Each value is checked against a hand computation (sorting done here), against
CVXPY's evaluation of the same expression, and for consistency with its prox:
the prox must minimise 1/2||x - v||^2 + step * value(x), so a value that
disagrees with the prox (e.g. an OWL that pairs the largest weight with the
smallest entry, a known peer bug) shows up as a point beating the prox.
"""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as R
import proxlib

pytestmark = pytest.mark.usefixtures("numpy_backend")

EPS64 = np.finfo(np.float64).eps


# --------------------------------------------------------------------------- OWL value


def test_owl_value_pairs_largest_weight_with_largest_magnitude():
    # |x| sorted decreasingly is [3, 2, 1]; weights [3, 2, 1] pair as
    # 3*3 + 2*2 + 1*1 = 14.  Pairing the largest weight with the smallest entry
    # (the peer bug) would give 3*1 + 2*2 + 1*3 = 10.
    assert proxlib.OWL(np.array([3.0, 2.0, 1.0])).value(np.array([1.0, -3.0, 2.0])) == 14.0
    # spike weights: lam * ||x||_inf = 2 * 3
    assert proxlib.OWL(proxlib.owl_weights_spike(3, 2.0)).value(np.array([1.0, -3.0, 2.0])) == 6.0
    # GrOWL: row norms 5 and 1, weights [2, 1]: 2*5 + 1*1 = 11 (not 2*1 + 1*5 = 7)
    assert proxlib.GrOWL(np.array([2.0, 1.0])).value(np.array([[0.0, 1.0], [3.0, 4.0]])) == 11.0


@given(R.vectors(1, 12), st.data())
def test_owl_value_against_sorting_and_cvxpy(x, data):
    w = data.draw(R.nonincreasing_weights(x.size))
    val = proxlib.OWL(w).value(x)
    assert isinstance(val, float)
    hand = float(np.dot(w, np.sort(np.abs(x))[::-1]))
    assert val == pytest.approx(hand, rel=4 * x.size * EPS64, abs=1e-300)
    cvx_val = float(R.owl_expr(cp.abs(cp.Constant(x)), w).value)
    # cvxpy evaluates the telescoping sum of sum_largest: a different summation order
    assert val == pytest.approx(cvx_val, rel=8 * x.size * EPS64, abs=8 * x.size * EPS64 * (1 + np.abs(x).max() * w.max()))
    # N-D x is one flat vector
    assert proxlib.OWL(w).value(x.reshape(1, -1, 1)) == val


@given(R.matrices(5, 3), st.data())
def test_growl_value_against_sorting_and_cvxpy(X, data):
    w = data.draw(R.nonincreasing_weights(X.shape[0]))
    val = proxlib.GrOWL(w).value(X)
    hand = float(np.dot(w, np.sort(R.row_norms(X))[::-1]))  # hypot: no underflow at 1e-267
    assert val == pytest.approx(hand, rel=8 * X.size * EPS64, abs=1e-300)
    cvx_val = float(R.owl_expr(cp.norm(cp.Constant(X), 2, axis=1), w).value)
    assert val == pytest.approx(cvx_val, rel=8 * X.size * EPS64, abs=8 * X.size * EPS64 * (1 + np.abs(X).max() * w.max()))


def test_owl_growl_value_validates_weights():
    x = np.ones(3)
    X = np.ones((3, 2))
    for bad in ([1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0], [1.0, -1.0, -2.0], [np.nan, 1.0, 0.0]):
        with pytest.raises(ValueError, match="weights"):
            proxlib.OWL(np.array(bad)).value(x)
        # a wrong-length GrOWL weight vector used to broadcast into a wrong value
        with pytest.raises(ValueError, match="weights"):
            proxlib.GrOWL(np.array(bad)).value(X)


@pytest.mark.parametrize("cls", [proxlib.WeightedL1, proxlib.WeightedL2Sq])
def test_weighted_penalties_copy_their_weights_when_made(cls):
    """As OWL's: changing the caller's array after the penalty is made does
    not change the penalty (a training step's plans keep thresholds formed
    from the weights, the in-place Numba runners read them at every step:
    before the copy the two routes of ProximalStep disagreed after such a
    change); ``copy=False`` (the prox_* functions) keeps the caller's array."""
    torch = pytest.importorskip("torch")
    v = np.array([[4.0, -1.0, 2.5], [0.3, -2.0, 1.0]])
    w = np.full((2, 3), 0.5)
    pen = cls(w)
    before = pen.prox(v)
    w[...] = 100.0
    np.testing.assert_array_equal(pen.prox(v), before)
    wt = torch.full((2, 3), 0.5, dtype=torch.float64)
    pen = cls(wt)
    wt[...] = 100.0
    assert torch.equal(pen.weights, torch.full((2, 3), 0.5, dtype=torch.float64))
    w64 = np.full((2, 3), 0.5)
    assert cls(w64, copy=False).weights is w64
    assert cls(0.5).weights == 0.5  # (a scalar stays a float)
    from proxlib.backends import torch_dev
    from proxlib.torch import ProximalStep

    results = []
    for route in ("auto", "torch"):
        torch.manual_seed(0)
        lin = torch.nn.Linear(3, 2, dtype=torch.float64)
        w = np.full((2, 3), 0.01)
        prox = ProximalStep()
        prox.add(lin, cls(w))
        old = torch_dev.CPU_KERNELS
        torch_dev.CPU_KERNELS = route
        try:
            prox.step(lr=1.0)
            w[...] = 100.0  # (no effect on the term)
            prox.step(lr=1.0)
        finally:
            torch_dev.CPU_KERNELS = old
        results.append(lin.weight.detach().clone())
    assert torch.equal(results[0], results[1]) and results[0].abs().min() > 0


def test_owl_growl_check_and_copy_their_weights_when_made():
    # the weights are checked once, at construction (a prox call then only
    # checks their length), and copied: changing the caller's array later
    # cannot make them increasing or negative behind the check
    for bad, msg in (([0.0, 1.0], "non-increasing"), ([1.0, -1.0], ">= 0"), ([np.inf, 1.0], "NaN or Inf"),
                     ([[1.0, 0.5]], "1-D")):
        for cls in (proxlib.OWL, proxlib.GrOWL):
            with pytest.raises(ValueError, match=msg):
                cls(np.array(bad))
    w = np.array([3.0, 2.0, 1.0])
    pen = proxlib.OWL(w)
    v = np.array([4.0, -1.0, 2.5])
    before = pen.prox(v)
    w[:] = [0.0, 5.0, 9.0]  # increasing: refused had it been passed
    np.testing.assert_array_equal(pen.prox(v), before)
    assert pen.weights.dtype == np.float64 and not np.shares_memory(pen.weights, w)
    # the one-shot functions use the caller's array without a copy, and the
    # same checks
    w32 = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    assert proxlib.OWL(w32, copy=False).weights.dtype == np.float64
    w64 = np.array([3.0, 2.0, 1.0])
    assert proxlib.OWL(w64, copy=False).weights is w64
    np.testing.assert_array_equal(proxlib.prox_owl(v, w64), before)
    with pytest.raises(ValueError, match="non-increasing"):
        proxlib.prox_owl(v, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="one entry per element"):
        pen.prox(np.ones(4))


@pytest.mark.parametrize("make", [lambda **k: proxlib.GroupLasso(0.5, **k), lambda **k: proxlib.ExclusiveLasso(0.5, **k),
                                  lambda **k: proxlib.GroupExclusive(0.5, 0.5, **k)])
@pytest.mark.parametrize("kind", ["numpy", "torch", "list"])
def test_row_penalties_copy_their_groups_and_group_weights_when_made(make, kind):
    """The README: penalty objects copy their weight arrays when made, so
    changing the caller's array later changes nothing.  The row penalties
    kept the caller's ``groups`` and ``group_weights``: relabelling or
    reweighting them after the penalty was made changed its prox."""
    if kind == "torch":
        torch = pytest.importorskip("torch")
        mk = lambda a: torch.tensor(a)  # noqa: E731
        v = torch.tensor([3.0, 4.0, 1.0, -2.0], dtype=torch.float64)
    else:
        mk = np.array if kind == "numpy" else list
        v = np.array([3.0, 4.0, 1.0, -2.0])
    groups, c = mk([0, 0, 1, 1]), mk([1.0, 2.0])
    pen = make(groups=groups, group_weights=c)
    with proxlib.use_backend("torch" if kind == "torch" else "numpy"):
        before = pen.prox(v, 0.5)
        c[0] = 100.0
        groups[0] = 1
        after = pen.prox(v, 0.5)
    assert bool((after == before).all())
    assert list(map(float, pen.group_weights)) == [1.0, 2.0] and list(map(int, pen.groups)) == [0, 0, 1, 1]
    kept = make(groups=groups, group_weights=c, copy=False)  # (the prox_* functions: the object serves one call)
    assert kept.groups is groups and kept.group_weights is c


# --------------------------------------------------------------------------- group values


@st.composite
def grouped(draw):
    W = draw(R.matrices(4, 4))
    lam = draw(R.lams)
    mu = draw(R.mus)
    gw = draw(st.one_of(st.none(), st.just("sqrt"), arrays(np.float64, W.shape[0], elements=st.floats(0, 2))))
    return W, lam, mu, gw


def _c(gw, G, m):
    return np.ones(G) if gw is None else np.full(G, np.sqrt(m)) if isinstance(gw, str) else gw


@given(grouped())
def test_group_values_against_hand_and_cvxpy(problem):
    W, lam, mu, gw = problem
    G, m = W.shape
    c = _c(gw, G, m)
    l2 = R.row_norms(W)
    l1 = np.abs(W).sum(axis=1)
    hand = {
        "group": lam * np.sum(c * l2),
        "exclusive": lam / 2 * np.sum(c * l1**2),
        "both": lam * np.sum(c * ((1 - mu) * l2 + mu / 2 * l1**2)),
    }
    Xc = cp.Constant(W)
    cvx = {
        "group": lam * cp.sum(cp.multiply(c, cp.norm(Xc, 2, axis=1))).value,
        "exclusive": lam / 2 * cp.sum(cp.multiply(c, cp.square(cp.norm(Xc, 1, axis=1)))).value,
    }
    cvx["both"] = (1 - mu) * cvx["group"] + mu * cvx["exclusive"]
    got = {
        "group": proxlib.GroupLasso(lam, group_weights=gw).value(W),
        "exclusive": proxlib.ExclusiveLasso(lam, group_weights=gw).value(W),
        "both": proxlib.GroupExclusive(lam, mu, group_weights=gw).value(W),
    }
    for k in hand:
        scale = 16 * W.size * EPS64 * (1 + abs(hand[k]))
        assert got[k] == pytest.approx(hand[k], abs=scale), k
        assert got[k] == pytest.approx(float(cvx[k]), abs=scale), k


@given(R.ragged_groups(), R.lams, R.mus)
def test_ragged_group_values(vg, lam, mu):
    v, labels = vg
    total_g = total_e = 0.0
    for g in np.unique(labels):
        xg = v[labels == g]
        cg = np.sqrt(xg.size)
        total_g += cg * np.hypot.reduce(xg)
        total_e += cg * np.abs(xg).sum() ** 2 / 2
    tol = 16 * v.size * EPS64 * (1 + lam * (total_g + total_e))
    assert proxlib.GroupLasso(lam, groups=labels, group_weights="sqrt").value(v) == pytest.approx(lam * total_g, abs=tol)
    assert proxlib.ExclusiveLasso(lam, groups=labels, group_weights="sqrt").value(v) == pytest.approx(lam * total_e, abs=tol)
    assert proxlib.GroupExclusive(lam, mu, groups=labels, group_weights="sqrt").value(v) == pytest.approx(
        lam * ((1 - mu) * total_g + mu * total_e), abs=tol
    )


# --------------------------------------------------------------------------- elementwise values


@given(st.one_of(R.vectors(1, 12), R.matrices(3, 4)), st.floats(0, 3))
def test_elementwise_values(x, lam):
    w = np.linspace(0.0, 2.0, x.shape[-1])  # broadcasts along the last axis
    tol = 8 * x.size * EPS64 * (1 + np.abs(x).max() ** 2 * (2 + lam))
    assert proxlib.WeightedL1(w).value(x) == pytest.approx(float(np.sum(w * np.abs(x))), abs=tol)
    assert proxlib.WeightedL1(lam).value(x) == pytest.approx(lam * float(np.abs(x).sum()), abs=tol)
    assert proxlib.WeightedL2Sq(w).value(x) == pytest.approx(float(np.sum(w * x * x)), abs=tol)  # no 1/2
    # lp: p = 0 counts non-zeros (|0|^0 = 0), p = 1 is lam ||x||_1
    assert proxlib.Lp(lam, 0.0).value(x) == lam * np.count_nonzero(x)
    assert proxlib.Lp(lam, 1.0).value(x) == pytest.approx(lam * float(np.abs(x).sum()), abs=tol)
    nz = np.abs(x[x != 0])
    assert proxlib.Lp(lam, 0.5).value(x) == pytest.approx(lam * float(np.sum(np.sqrt(nz))), abs=tol)


def test_elementwise_hand_values():
    x = np.array([0.0, -2.0, 3.0])
    assert proxlib.Lp(2.0, 0.0).value(x) == 4.0  # two non-zeros, lam 2
    assert proxlib.Lp(1.0, 0.5).value(np.array([4.0, 0.0, -9.0])) == 5.0  # sqrt 4 + sqrt 9
    assert proxlib.WeightedL2Sq(np.array([1.0, 1.0, 0.5])).value(x) == 4.0 + 4.5  # 1*4 + 0.5*9
    assert proxlib.WeightedL1(np.array([1.0, 1.0, 0.5])).value(x) == 2.0 + 1.5


# --------------------------------------------------------------------------- prox == function, value consistent with prox


def penalty_cases(v, data):
    """(penalty, the matching prox function call) pairs for input v."""
    n = v.size
    w_owl = data.draw(R.nonincreasing_weights(n))
    W2 = v.reshape(1, -1) if v.ndim == 1 else v
    w_growl = data.draw(R.nonincreasing_weights(W2.shape[0]))
    lam = data.draw(R.lams)
    mu = data.draw(R.mus)
    p = data.draw(R.ps)
    w_el = data.draw(arrays(np.float64, v.shape, elements=st.floats(0, 2)))
    return [
        (proxlib.OWL(w_owl), lambda x, s: proxlib.prox_owl(x, w_owl, s)),
        (proxlib.GrOWL(w_growl), lambda x, s: proxlib.prox_growl(x, w_growl, s)),
        (proxlib.GroupLasso(lam), lambda x, s: proxlib.prox_group_lasso(x, lam, s)),
        (proxlib.ExclusiveLasso(lam), lambda x, s: proxlib.prox_exclusive_lasso(x, lam, s)),
        (proxlib.GroupExclusive(lam, mu), lambda x, s: proxlib.prox_group_exclusive(x, lam, mu, s)),
        (proxlib.WeightedL1(w_el), lambda x, s: proxlib.prox_weighted_l1(x, w_el, s)),
        (proxlib.WeightedL2Sq(w_el), lambda x, s: proxlib.prox_weighted_l2sq(x, w_el, s)),
        (proxlib.Lp(lam, p), lambda x, s: proxlib.prox_lp(x, lam, p, s)),
    ]


@pytest.mark.long_examples(100)  # every penalty, 12 perturbations each, per example
@given(st.one_of(R.vectors(1, 10), R.matrices(3, 3)), R.steps, st.data(), st.randoms(use_true_random=False))
def test_prox_matches_function_and_minimises_value(v, step, data, rnd):
    rng = np.random.default_rng(rnd.getrandbits(64))
    for pen, fn in penalty_cases(v, data):
        x = pen.prox(v, step)
        np.testing.assert_array_equal(x, fn(v, step), err_msg=type(pen).__name__)
        np.testing.assert_array_equal(pen.prox(v), fn(v, 1.0))
        # The prox is the global minimiser of F(z) = 1/2||z - v||^2 + step value(z):
        # no perturbation of it may do better (beyond evaluation rounding).
        F = lambda z: 0.5 * float(np.sum((z - v) ** 2)) + step * pen.value(z)  # noqa: E731
        fx = F(x)
        slack = 64 * v.size * EPS64 * (1 + 0.5 * float(np.sum(v * v)) + step * pen.value(v))
        for scale in (1e-1, 1e-3, 1e-6):
            for _ in range(4):
                d = rng.uniform(-1, 1, size=v.shape)
                assert fx <= F(x + scale * d) + slack, (type(pen).__name__, scale)
        assert fx <= F(np.zeros_like(v)) + slack and fx <= F(v) + slack


@pytest.mark.long_examples(100)  # up to 6! pairings per example
@given(R.vectors(2, 10), st.data(), st.randoms(use_true_random=False))
def test_owl_value_is_the_largest_pairing(v, data, rnd):
    # Rearrangement inequality: with non-increasing w, sum_i w_i |x|_[i] (largest
    # with largest) is the MAXIMUM of sum_i w_i |x|_pi(i) over all pairings pi; the
    # mis-paired peer value is the minimum.  So the value must beat every random
    # pairing, and equal the maximum over all of them for small n.
    w = data.draw(R.nonincreasing_weights(v.size))
    val = proxlib.OWL(w).value(v)
    a = np.abs(v)
    tol = 4 * v.size * EPS64 * (1 + a.max() * w.max())
    for _ in range(10):
        perm = rnd.sample(range(v.size), v.size)
        assert val >= float(np.dot(w, a[perm])) - tol
    if v.size <= 6:
        import itertools

        best = max(float(np.dot(w, a[list(pm)])) for pm in itertools.permutations(range(v.size)))
        assert val == pytest.approx(best, abs=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_returns_float_and_accepts_dtypes(dtype):
    x = np.array([[1.0, -2.0], [0.0, 3.0]], dtype=dtype)
    for pen in (
        proxlib.OWL(np.array([4.0, 3.0, 2.0, 1.0])),
        proxlib.GrOWL(np.array([1.0, 0.5])),
        proxlib.GroupLasso(0.5),
        proxlib.ExclusiveLasso(0.5),
        proxlib.GroupExclusive(0.5, 0.3),
        proxlib.WeightedL1(0.5),
        proxlib.WeightedL2Sq(0.5),
        proxlib.Lp(0.5, 0.5),
    ):
        val = pen.value(x)
        assert type(val) is float and np.isfinite(val)
        assert val == pen.value(x.astype(np.float64))  # x is exact in float32; values are float64 sums
        assert pen.prox(x, 0.5).dtype == dtype
        with pytest.raises(ValueError, match=r"\bx\b"):
            pen.value(np.array([np.nan, 1.0, 1.0, 1.0]).reshape(2, 2))
        with pytest.raises(TypeError, match=r"\bx\b"):
            pen.value(np.ones((2, 2), dtype=complex))
        with pytest.raises(dataclasses.FrozenInstanceError):
            pen.lam = 1.0  # type: ignore[misc]


def test_penalty_hyperparameters_validated_when_made():
    """Bad parameters fail when the penalty is made (before any data is seen),
    with a message naming the parameter; so do the public functions."""
    for make, name in (
        (lambda: proxlib.GroupLasso(-1.0), "lam"),
        (lambda: proxlib.ExclusiveLasso(np.nan), "lam"),
        (lambda: proxlib.GroupExclusive(1.0, 1.5), "mu"),
        (lambda: proxlib.Lp(1.0, -0.5), "p"),
        (lambda: proxlib.Lp(True, 0.5), "lam"),
    ):
        with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
            make()
    with pytest.raises(ValueError, match=r"\blam\b"):
        proxlib.prox_group_lasso(np.ones((2, 2)), -1.0)
