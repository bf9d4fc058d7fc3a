"""OWL / GrOWL weight builders and the per-layer mu schedule.

Each builder is checked entry by entry against its docstring formula written
as a plain loop, plus the properties prox_owl relies on (non-negative,
non-increasing, length n, dtype) and the reductions the names promise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import _cvx as R
import proxlib

pytestmark = pytest.mark.usefixtures("numpy_backend")

EPS64 = np.finfo(np.float64).eps
ns = st.integers(0, 40)
nonneg = st.floats(0, 10, allow_subnormal=False)


def assert_valid_owl_weights(w, n):
    assert w.shape == (n,)
    assert np.all(w >= 0)
    assert np.all(np.diff(w) <= 0), w
    if n:
        proxlib.prox_owl(np.ones(n), w)  # accepted by the operator


@given(ns, nonneg)
def test_constant(n, lam):
    w = proxlib.owl_weights_constant(n, lam)
    assert_valid_owl_weights(w, n)
    np.testing.assert_array_equal(w, [lam] * n)


@given(ns, nonneg, nonneg)
def test_oscar(n, lam1, lam2):
    w = proxlib.owl_weights_oscar(n, lam1, lam2)
    assert_valid_owl_weights(w, n)
    ref = [lam1 + lam2 * (n - i) for i in range(1, n + 1)]  # lambda_i = lam1 + lam2 (n - i)
    np.testing.assert_allclose(w, ref, rtol=2 * EPS64)
    if n:
        assert w[-1] == lam1  # the smallest weight is lam1 exactly


@given(ns.flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))), nonneg, nonneg)
def test_stairwise(n_p, L1, L2):
    n, p = n_p
    w = proxlib.owl_weights_stairwise(n, L1, L2, p)
    assert_valid_owl_weights(w, n)
    ref = [L1 + (p - i + 1) * L2 if i <= p else L1 for i in range(1, n + 1)]
    np.testing.assert_allclose(w, ref, rtol=2 * EPS64)


@given(ns, nonneg, nonneg, st.floats(0, 1))
def test_piecewise_linear(n, a, b, t):
    l1, l2 = max(a, b), min(a, b)
    w = proxlib.owl_weights_piecewise_linear(n, l1, l2, t)
    assert_valid_owl_weights(w, n)
    p = min(n, math.ceil(round(t * n, 9)))
    for i in range(1, n + 1):
        if p == 1 and i == 1:
            expected = l1
        elif i <= p and p > 1:
            expected = l2 + (l1 - l2) * (p - i) / (p - 1)
        else:
            expected = l2
        assert w[i - 1] == pytest.approx(expected, rel=4 * EPS64, abs=4 * EPS64 * l1)
    if p >= 1:  # l2 + (l1 - l2) * 1 may be one rounding away from l1
        assert w[0] == pytest.approx(l1, rel=2 * EPS64)
    if p >= 2:  # (p = 1: the single decaying weight is lambda1)
        assert w[p - 1] == l2


def test_piecewise_linear_transition_is_exact_for_fractions():
    # transition = k/n must give exactly k decaying positions: k/n * n is not k in
    # floating point for many pairs (7/100 * 100 = 7.000000000000001), which made
    # the ceiling one too large.
    for n in range(1, 80):
        for k in range(n + 1):
            w = proxlib.owl_weights_piecewise_linear(n, 2.0, 1.0, k / n)
            # positions with weight > lambda2: 1 for p = 1, p - 1 for p >= 2, 0 for p = 0
            assert int(np.sum(w > 1.0)) == (1 if k == 1 else max(k - 1, 0)), (n, k)


def test_hand_cases():
    # oscar(3, 1, 2): 1 + 2*(3 - i) = [5, 3, 1]
    np.testing.assert_array_equal(proxlib.owl_weights_oscar(3, 1.0, 2.0), [5.0, 3.0, 1.0])
    # stairwise(5, 1, 2, p=2): i=1: 1 + 2*2 = 5, i=2: 1 + 1*2 = 3, then 1
    np.testing.assert_array_equal(proxlib.owl_weights_stairwise(5, 1.0, 2.0, 2), [5.0, 3.0, 1.0, 1.0, 1.0])
    # piecewise(5, 3, 1, 0.6): p = 3; 1 + 2*(3 - i)/2 = [3, 2, 1], then 1, 1
    np.testing.assert_array_equal(proxlib.owl_weights_piecewise_linear(5, 3.0, 1.0, 0.6), [3.0, 2.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(proxlib.owl_weights_spike(4, 2.5), [2.5, 0.0, 0.0, 0.0])
    assert proxlib.owl_weights_spike(0, 1.0).shape == (0,)


@pytest.mark.parametrize(
    "build",
    [
        lambda n, dt: proxlib.owl_weights_constant(n, 0.5, dtype=dt),
        lambda n, dt: proxlib.owl_weights_oscar(n, 0.5, 0.1, dtype=dt),
        lambda n, dt: proxlib.owl_weights_stairwise(n, 0.5, 0.1, n // 2, dtype=dt),
        lambda n, dt: proxlib.owl_weights_piecewise_linear(n, 1.0, 0.1, 0.5, dtype=dt),
        lambda n, dt: proxlib.owl_weights_spike(n, 0.5, dtype=dt),
    ],
)
def test_dtype_argument(build):
    for dt in (np.float32, np.float64):
        w = build(7, dt)
        assert w.dtype == dt
        assert_valid_owl_weights(w.astype(np.float64), 7)


@given(R.matrices(5, 3), st.floats(0, 3), R.steps)
def test_constant_weights_make_growl_the_group_lasso(W, lam, step):
    X = proxlib.prox_growl(W, proxlib.owl_weights_constant(W.shape[0], lam), step)
    Y = proxlib.prox_group_lasso(W, lam, step)
    np.testing.assert_allclose(X, Y, rtol=0, atol=8 * W.size * EPS64 * (np.abs(W).max() + step * lam))


@given(ns, nonneg)
def test_oscar_without_slope_and_stairwise_without_steps_are_constant(n, lam):
    np.testing.assert_array_equal(proxlib.owl_weights_oscar(n, lam, 0.0), proxlib.owl_weights_constant(n, lam))
    np.testing.assert_array_equal(proxlib.owl_weights_stairwise(n, lam, 3.0, 0), proxlib.owl_weights_constant(n, lam))
    np.testing.assert_array_equal(proxlib.owl_weights_piecewise_linear(n, lam, lam, 0.5), proxlib.owl_weights_constant(n, lam))


def test_builder_validation():
    with pytest.raises(TypeError, match=r"\bn\b"):
        proxlib.owl_weights_constant(3.0, 1.0)
    with pytest.raises(TypeError, match=r"\bn\b"):
        proxlib.owl_weights_constant(True, 1.0)
    with pytest.raises(ValueError, match=r"\bn\b"):
        proxlib.owl_weights_oscar(-1, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"\blam\b"):
        proxlib.owl_weights_constant(3, -1.0)
    with pytest.raises(ValueError, match=r"\blam2\b"):
        proxlib.owl_weights_oscar(3, 1.0, np.nan)
    with pytest.raises(ValueError, match=r"\bp\b"):
        proxlib.owl_weights_stairwise(3, 1.0, 1.0, 4)
    with pytest.raises(TypeError, match=r"\bp\b"):
        proxlib.owl_weights_stairwise(3, 1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match=r"\bLambda1\b"):
        proxlib.owl_weights_stairwise(3, -1.0, 1.0, 1)
    with pytest.raises(ValueError, match=r"lambda1"):
        proxlib.owl_weights_piecewise_linear(3, 1.0, 2.0, 0.5)  # would increase
    with pytest.raises(ValueError, match=r"\btransition\b"):
        proxlib.owl_weights_piecewise_linear(3, 2.0, 1.0, 1.5)
    with pytest.raises(TypeError, match=r"\blam\b"):
        proxlib.owl_weights_spike(3, True)


# --------------------------------------------------------------------------- mu_schedule


@given(st.integers(1, 50), st.floats(0, 0.5))
def test_mu_schedule(L, m):
    mus = proxlib.mu_schedule(L, m)
    assert isinstance(mus, list) and len(mus) == L
    assert all(isinstance(u, float) for u in mus)
    if L == 1:
        assert mus == [m]
        return
    for l, u in enumerate(mus):  # mu_l = m + (1 - 2m) l/(L - 1)
        assert u == pytest.approx(m + (1 - 2 * m) * l / (L - 1), abs=4 * EPS64)
    assert mus[0] == m and mus[-1] == pytest.approx(1 - m, abs=4 * EPS64)
    assert all(0 <= u <= 1 for u in mus)
    assert all(b >= a for a, b in zip(mus, mus[1:]))
    for u in mus:  # every entry is a valid mu for the operators (their check, without a prox each)
        proxlib.GroupExclusive(1.0, u)


def test_mu_schedule_hand_and_validation():
    # m = 0: from pure group lasso at the bottom to pure exclusive at the top
    assert proxlib.mu_schedule(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert proxlib.mu_schedule(3, 0.25) == [0.25, 0.5, 0.75]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n_layers"):
            proxlib.mu_schedule(bad)
    for m in (-0.1, 0.6, np.nan):
        with pytest.raises(ValueError, match=r"\bm\b"):
            proxlib.mu_schedule(3, m)


# ------------------------------------------------ the float range, torch scalars and like=

_BUILDERS = {
    "constant": lambda *a, **k: proxlib.owl_weights_constant(5, *a[:1], **k),
    "oscar": lambda *a, **k: proxlib.owl_weights_oscar(5, *a[:2], **k),
    "stairwise": lambda *a, **k: proxlib.owl_weights_stairwise(5, *a[:2], 3, **k),
    "piecewise_linear": lambda *a, **k: proxlib.owl_weights_piecewise_linear(5, *a[:2], 0.6, **k),
    "spike": lambda *a, **k: proxlib.owl_weights_spike(5, *a[:1], **k),
}


def test_builders_refuse_weights_beyond_float64():
    # lam1 + lam2 (n - i) = 5e308: overflowed to inf before; not representable
    with pytest.raises(ValueError, match="overflow float64"):
        proxlib.owl_weights_oscar(3, 1e308, 1e308)
    with pytest.raises(ValueError, match="overflow float64"):
        proxlib.owl_weights_oscar(10**6, 0.0, 1e303)
    with pytest.raises(ValueError, match="overflow float64"):
        proxlib.owl_weights_stairwise(4, 1e308, 1e308, 3)
    # representable ones are exact at the top of the range
    np.testing.assert_array_equal(proxlib.owl_weights_oscar(2, 1e308, 5e307), [1.5e308, 1e308])
    big = np.finfo(np.float64).max
    w = proxlib.owl_weights_piecewise_linear(5, big, big / 4, 1.0)  # (l1 - l2)(p - i) overflowed
    np.testing.assert_allclose(w, big / 4 + (big - big / 4) * np.array([1, 0.75, 0.5, 0.25, 0]), rtol=2 * EPS64)
    assert_valid_owl_weights(w, 5)
    np.testing.assert_array_equal(proxlib.owl_weights_constant(2, 5e-324), [5e-324, 5e-324])


@pytest.mark.parametrize("name", sorted(_BUILDERS))
def test_builders_refuse_weights_beyond_the_requested_dtype(name):
    with pytest.raises(ValueError, match="overflow float32"):
        _BUILDERS[name](1e39, 1e38, dtype=np.float32)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", sorted(_BUILDERS))
def test_builders_refuse_weights_beyond_like_dtype_with_the_valueerror_alone(name):
    # like= a NumPy float16 array: the cast overflowed with a RuntimeWarning
    # first (under -W error that warning, not the documented ValueError)
    with pytest.raises(ValueError, match="overflow float16"):
        _BUILDERS[name](1e5, 1e5, like=np.zeros(1, dtype=np.float16))
    with pytest.raises(ValueError, match="overflow float32"):
        _BUILDERS[name](1e39, 1e38, like=np.zeros(1), dtype=np.float32)


@pytest.mark.parametrize("name", sorted(_BUILDERS))
def test_builders_accept_torch_scalars_and_return_like_arrays(name):
    torch = pytest.importorskip("torch")
    build = _BUILDERS[name]
    ref = build(1.5, 0.25)
    assert type(ref) is np.ndarray and ref.dtype == np.float64
    # scalars as 0-d tensors (and n as a 0-d integer tensor)
    np.testing.assert_array_equal(build(torch.tensor(1.5), torch.tensor(0.25, dtype=torch.float64)), ref)
    np.testing.assert_array_equal(proxlib.owl_weights_oscar(torch.tensor(5), 1.5, 0.25), proxlib.owl_weights_oscar(5, 1.5, 0.25))
    # like=: like's library, device and dtype
    for like in (torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.zeros((), dtype=torch.bfloat16)):
        w = build(1.5, 0.25, like=like)
        assert isinstance(w, torch.Tensor) and w.dtype == like.dtype and w.device == like.device
        np.testing.assert_array_equal(w.double().numpy(), torch.as_tensor(ref).to(like.dtype).double().numpy())
        assert bool(torch.all(w[1:] <= w[:-1]))  # rounding keeps them non-increasing
    w = build(1.5, 0.25, like=torch.zeros(1), dtype=torch.float64)  # dtype overrides like's
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float64
    w = build(1.5, 0.25, like=np.zeros(1, dtype=np.float32))
    assert type(w) is np.ndarray and w.dtype == np.float32
    with pytest.raises(ValueError, match="overflow float32"):
        build(1e39, 1e38, like=torch.zeros(1))
    with pytest.raises(TypeError, match="like must be a floating array or tensor, got a Tensor of dtype int64"):
        build(1.5, 0.25, like=torch.zeros(1, dtype=torch.int64))  # (the message named no dtype: "got Tensor")
    with pytest.raises(TypeError, match="like"):
        build(1.5, 0.25, like=[0.0])
    # and they are accepted by the operators on tensors
    v = torch.linspace(-2, 2, 5)
    with proxlib.use_backend(None):  # the module pins NumPy arrays to the reference
        x = proxlib.prox_owl(v, build(1.5, 0.25, like=v))
    assert isinstance(x, torch.Tensor) and x.dtype == v.dtype
