"""Every operator on torch tensors against CVXPY and the exact references.

The parity suite (test_backends.py) compares the torch backend with the NumPy
reference; here the torch path is checked on its own against the ground truth:
CVXPY's minimiser through strong convexity (objective not above CVXPY's, the
distance explained by CVXPY's own suboptimality, see ``_cvx.assert_agrees_with_cvxpy``),
the exact rational OWL and the 60-digit lp reference.  float64 tensors, and
float32 tensors whose result must match the float64 one to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import _cvx as R  # noqa: E402
import proxlib  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)


def T(a):
    return torch.as_tensor(np.array(a, dtype=np.float64, copy=True))


def N(t):
    return t.detach().cpu().numpy()


def _float32_close(x32, x64, scale):
    """A float32 run rounds the input and the result: within a few float32 ulps
    of the float64 result, relative to the data's magnitude (the prox is
    1-Lipschitz, so the input's rounding moves it by at most that much)."""
    np.testing.assert_allclose(N(x32).astype(np.float64), N(x64), rtol=0, atol=16 * EPS32 * (1.0 + scale))


@given(R.vectors(1, 10), st.data(), R.steps)
def test_torch_owl_equals_the_exact_rational_pava(v, data, step):
    w = data.draw(R.nonincreasing_weights(v.size))
    x = proxlib.prox_owl(T(v), T(w), step)
    assert type(x) is torch.Tensor and x.dtype == torch.float64
    exact = R.exact_owl(v, np.asarray(w) * step)
    np.testing.assert_allclose(N(x), exact, rtol=0, atol=8 * R.EPS64 * (1 + np.abs(v).max() + step * np.max(w)))
    _float32_close(proxlib.prox_owl(T(v).float(), T(w), step), x, np.abs(v).max() + step * np.max(w))


@given(R.matrices(4, 3), st.data(), R.steps)
def test_torch_growl_against_cvxpy(W, data, step):
    w = data.draw(R.nonincreasing_weights(W.shape[0]))
    X = N(proxlib.prox_growl(T(W), T(w), step))
    X_cvx = R.cvx_growl(W, w, step)
    f = R.objective(X, W, step, R.growl_value(X, w))
    f_cvx = R.objective(X_cvx, W, step, R.growl_value(X_cvx, w))
    R.assert_agrees_with_cvxpy(X, X_cvx, f, f_cvx, R.objective_slack(W, step, R.growl_value(W, w), W.size))


@pytest.mark.parametrize("op", ["group_lasso", "exclusive_lasso", "group_exclusive"])
@given(W=R.matrices(4, 4), lam=R.lams, mu=R.mus, step=R.steps)
def test_torch_group_operators_against_cvxpy(op, W, lam, mu, step):
    G = W.shape[0]
    if op == "group_lasso":
        x = proxlib.prox_group_lasso(T(W), lam, step)
        a, b, value = [step * lam] * G, [0.0] * G, R.group_exclusive_value(W, np.ones(G), 0.0) * lam
    elif op == "exclusive_lasso":
        x = proxlib.prox_exclusive_lasso(T(W), lam, step)
        a, b, value = [0.0] * G, [step * lam] * G, R.exclusive_value(W, np.ones(G)) * lam
    else:
        x = proxlib.prox_group_exclusive(T(W), lam, mu, step)
        a, b = [step * lam * (1 - mu)] * G, [step * lam * mu] * G
        value = lam * R.group_exclusive_value(W, np.ones(G), mu)
    X = N(x).ravel()
    X_cvx = R.cvx_groups(W, R.row_index_sets(W.shape), a, b)

    def F(z):
        z = np.asarray(z).reshape(W.shape)
        if op == "group_lasso":
            om = lam * R.group_exclusive_value(z, np.ones(G), 0.0)
        elif op == "exclusive_lasso":
            om = lam * R.exclusive_value(z, np.ones(G))
        else:
            om = lam * R.group_exclusive_value(z, np.ones(G), mu)
        return R.objective(z, W, step, om)

    R.assert_agrees_with_cvxpy(X, X_cvx, F(X), F(X_cvx), R.objective_slack(W, step, value, W.size))
    x32 = {
        "group_lasso": lambda: proxlib.prox_group_lasso(T(W).float(), lam, step),
        "exclusive_lasso": lambda: proxlib.prox_exclusive_lasso(T(W).float(), lam, step),
        "group_exclusive": lambda: proxlib.prox_group_exclusive(T(W).float(), lam, mu, step),
    }[op]()
    assert x32.dtype == torch.float32
    # group lasso/group+exclusive scale by 1 - a/||w||: near the threshold the
    # input's float32 rounding moves the result by up to |w| times that rounding
    _float32_close(x32, x, np.abs(W).max() * (1 + np.sqrt(W.size)))


@given(R.vectors(1, 10), st.data(), R.steps)
def test_torch_elementwise_against_cvxpy(v, data, step):
    w = np.asarray(data.draw(st.lists(st.floats(0, 3, allow_subnormal=False), min_size=v.size, max_size=v.size)))
    for fn, cvx, value in (
        (proxlib.prox_weighted_l1, R.cvx_weighted_l1, R.weighted_l1_value),
        (proxlib.prox_weighted_l2sq, R.cvx_weighted_l2sq, R.weighted_l2sq_value),
    ):
        x = N(fn(T(v), T(w), step))
        x_cvx = cvx(v, w, step)
        f = R.objective(x, v, step, value(x, w))
        f_cvx = R.objective(x_cvx, v, step, value(x_cvx, w))
        R.assert_agrees_with_cvxpy(x, x_cvx, f, f_cvx, R.objective_slack(v, step, value(v, w), v.size))


@given(R.vectors(1, 8), R.lams, R.ps, R.steps)
def test_torch_lp_equals_the_60_digit_reference(v, lam, p, step):
    x = proxlib.prox_lp(T(v), lam, p, step)
    exact = R.exact_lp(v, lam * step, p)
    # at the tie |v| = tau either minimiser is right: such examples are rejected
    # (the tie rule itself is tested on every backend in test_backends.py)
    R.not_near(np.abs(v), proxlib.lp_threshold(lam * step, p))
    np.testing.assert_allclose(N(x), exact, rtol=16 * R.EPS64, atol=16 * R.EPS64 * (1 + np.abs(v).max()))
