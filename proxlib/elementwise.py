r"""Separable penalties: weighted l1, weighted squared l2, lp (0 <= p <= 1), and the
affine-scaling re-weighting rules of Fedorov & Rao (Eqs. 8-10) whose inner
steps are weighted l1 / weighted l2^2 subproblems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _validate as V
from ._dispatch import array_namespace, backend_for

__all__ = [
    "prox_weighted_l1",
    "prox_weighted_l2sq",
    "prox_lp",
    "lp_threshold",
    "Reweighting",
    "reweight_l1",
    "reweight_l2",
    "reweight_focuss",
]


def _elementwise_weights(weights, v, step):
    """Weights broadcast to v's shape, scaled by step, flattened: (n,) or (1,)."""
    xp = array_namespace(v)
    w = V.nonnegative_array(weights, "weights", like=v)
    if w.ndim == 0 or w.size == 1:
        w = w.reshape(1)
    else:
        try:
            w = xp.broadcast_to(w, v.shape)
        except ValueError:
            raise ValueError(f"weights of shape {w.shape} do not broadcast to v's shape {v.shape}") from None
        w = xp.ascontiguousarray(w).reshape(-1)
    return V.times_step(w, step)


def _flat(v):
    return array_namespace(v).ascontiguousarray(v.reshape(-1))


def prox_weighted_l1(v, weights, step=1.0, *, check_finite: bool = True):
    r"""Proximal operator of the weighted l1 norm (soft thresholding).

    .. math::

        \arg\min_x \tfrac12\|x - v\|_2^2 + \mathrm{step}\sum_i \mathrm{weights}_i |x_i|
        \;=\; \mathrm{sign}(v)\,(|v| - \mathrm{step\,weights})_+

    ``weights`` (>= 0) is a scalar or an array broadcastable to ``v``'s shape.

    >>> import numpy as np, proxlib
    >>> proxlib.prox_weighted_l1(np.array([3.0, -0.5, 1.0]), np.array([1.0, 1.0, 0.0]))
    array([ 2., -0.,  1.])
    """
    v = V.as_float_array(v, "v", check_finite=check_finite)
    step = V.positive(step, "step")
    w = _elementwise_weights(weights, v, step)
    return backend_for(v).weighted_l1(_flat(v), w).reshape(v.shape)


def prox_weighted_l2sq(v, weights, step=1.0, *, check_finite: bool = True):
    r"""Proximal operator of the weighted squared l2 norm (no 1/2 factor).

    .. math::

        \arg\min_x \tfrac12\|x - v\|_2^2 + \mathrm{step}\sum_i \mathrm{weights}_i x_i^2
        \;=\; \frac{v}{1 + 2\,\mathrm{step\,weights}}

    ``weights`` (>= 0) is a scalar or an array broadcastable to ``v``'s shape.

    >>> import numpy as np, proxlib
    >>> proxlib.prox_weighted_l2sq(np.array([3.0, -1.0]), 1.0)
    array([ 1.        , -0.33333333])
    """
    v = V.as_float_array(v, "v", check_finite=check_finite)
    step = V.positive(step, "step")
    w = _elementwise_weights(weights, v, step)
    return backend_for(v).weighted_l2sq(_flat(v), w).reshape(v.shape)


def lp_threshold(lam: float, p: float) -> float:
    r"""The magnitude below which the lp prox is 0 (for lam already times step).

    .. math::

        \tau = \frac{2 - p}{2(1 - p)}\,\big(2\lambda(1 - p)\big)^{1/(2-p)}
        \quad (0 \le p < 1), \qquad \tau = \lambda \quad (p = 1).

    p = 0 gives sqrt(2 lam) (hard thresholding).
    """
    lam = V.nonnegative(lam, "lam")
    p = V.in_unit_interval(p, "p")
    if p == 1:
        return lam
    return (2 - p) / (2 * (1 - p)) * (2 * lam * (1 - p)) ** (1 / (2 - p))


def prox_lp(v, lam, p, step=1.0, *, check_finite: bool = True):
    r"""Global proximal operator of the lp quasi-norm penalty, 0 <= p <= 1.

    .. math::

        \arg\min_x \tfrac12\|x - v\|_2^2 + \mathrm{step}\,\mathrm{lam}\sum_i |x_i|^p

    with the convention :math:`|0|^0 = 0` (p = 0 counts non-zeros).  The
    problem is separable; for each entry the global minimiser is 0 when
    :math:`|v_i| \le \tau` (:func:`lp_threshold` of step*lam) and otherwise the
    largest stationary point :math:`x^\star` of
    :math:`x + \lambda p\,x^{p-1} = |v_i|`, with sign(v_i).  p = 1 is soft
    thresholding; p = 0 hard thresholding at sqrt(2 step lam).

    Tie rule: at :math:`|v_i| = \tau` exactly, 0 and the non-zero point have the
    same objective value; proxlib returns 0 (the sparser minimiser).

    Algorithm: closed forms for p = 1/2 (cubic) and p = 2/3 (quartic) as starting
    points, then Newton's method on the convex, increasing branch x > beta
    (:math:`\beta^{2-p} = \lambda p (1-p)`), where it decreases monotonically to
    the root; it stops when the iterate no longer decreases (last bit).

    >>> import numpy as np, proxlib
    >>> proxlib.prox_lp(np.array([3.0, 0.5, -2.0]), 1.0, 0.0)
    array([ 3.,  0., -2.])
    """
    v = V.as_float_array(v, "v", check_finite=check_finite)
    lam = V.nonnegative(lam, "lam")
    p = V.in_unit_interval(p, "p")
    step = V.positive(step, "step")
    return backend_for(v).lp(_flat(v), step * lam, p).reshape(v.shape)


def weighted_l1_value(x, weights) -> float:
    xp = array_namespace(x)
    return float(xp.sum(xp.asarray(weights, dtype=xp.float64) * xp.abs(x.astype(xp.float64))))


def weighted_l2sq_value(x, weights) -> float:
    xp = array_namespace(x)
    x = x.astype(xp.float64)
    return float(xp.sum(xp.asarray(weights, dtype=xp.float64) * x * x))


def lp_value(x, lam, p) -> float:
    xp = array_namespace(x)
    a = xp.abs(x.astype(xp.float64))
    if p == 0:
        return float(lam * xp.count_nonzero(a))
    return float(lam * xp.sum(a**p))


# ------------------------------------------------------------- re-weighting rules


@dataclass(frozen=True)
class Reweighting:
    r"""One affine-scaling re-weighting step from the previous iterate theta.

    Attributes
    ----------
    omega : array
        The scaling of the reparametrisation :math:`\theta = q \odot \omega`
        (Fedorov & Rao, Eq. 6-7).
    weights : array
        The weights of the majorised subproblem in theta: the prox to take
        is :func:`prox_weighted_l1` (``subproblem == "l1"``) or
        :func:`prox_weighted_l2sq` (``subproblem == "l2sq"``) with these
        weights times the penalty strength.
    subproblem : str
        ``"l1"`` or ``"l2sq"``.
    """

    omega: Any
    weights: Any
    subproblem: str


def _theta_tau(theta, tau):
    theta = V.as_float_array(theta, "theta")
    tau = V.positive(tau, "tau")
    return theta, tau


def reweight_l1(theta, tau) -> Reweighting:
    r"""Re-weighted l1 (Candes, Wakin & Boyd; Fedorov & Rao Eq. 8).

    From :math:`g(\theta) = \log(|\theta| + \tau)`:
    :math:`\omega = |\theta| + \tau` and weighted-l1 weights
    :math:`1/(|\theta| + \tau) = 1/\omega`.
    """
    theta, tau = _theta_tau(theta, tau)
    xp = array_namespace(theta)
    omega = xp.abs(theta) + theta.dtype.type(tau)
    return Reweighting(omega=omega, weights=1 / omega, subproblem="l1")


def reweight_l2(theta, tau) -> Reweighting:
    r"""Re-weighted l2 (Chartrand & Yin; Fedorov & Rao Eq. 9).

    From :math:`g(\theta) = \log(\theta^2 + \tau)`:
    :math:`\omega = \sqrt{\theta^2 + \tau}` and weighted-l2^2 weights
    :math:`1/(\theta^2 + \tau) = 1/\omega^2`.
    """
    theta, tau = _theta_tau(theta, tau)
    xp = array_namespace(theta)
    sq = theta * theta + theta.dtype.type(tau)
    return Reweighting(omega=xp.sqrt(sq), weights=1 / sq, subproblem="l2sq")


def reweight_focuss(theta, p, tau) -> Reweighting:
    r"""FOCUSS-lp (Gorodnitsky & Rao; Fedorov & Rao Eq. 10), 0 <= p <= 2.

    :math:`\omega = |\theta|^{2-p} + \tau` and weighted-l2^2 weights
    :math:`1/(|\theta|^{2-p} + \tau) = 1/\omega` (the re-weighted minimum-norm
    step of FOCUSS).  p = 2 gives constant weights (ridge); p -> 0 approaches l0.
    """
    theta, tau = _theta_tau(theta, tau)
    p = V.real_scalar(p, "p")
    if not 0 <= p <= 2:
        raise ValueError(f"p must lie in [0, 2], got {p}")
    xp = array_namespace(theta)
    omega = xp.abs(theta) ** theta.dtype.type(2 - p) + theta.dtype.type(tau)
    return Reweighting(omega=omega, weights=1 / omega, subproblem="l2sq")
