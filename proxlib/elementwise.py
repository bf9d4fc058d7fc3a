r"""Separable penalties: weighted l1, weighted squared l2, lp (0 <= p <= 1), and the
affine-scaling re-weighting rules of Fedorov & Rao (Eqs. 8-10) whose inner
steps are weighted l1 / weighted l2^2 subproblems.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

import numpy as np

from . import _range
from . import _registry as R
from . import _validate as V
from ._dispatch import array_namespace, size
from ._dispatch import device as _device
from .backends import _xp_kernels as _k

__all__ = [
    "WeightedL1",
    "WeightedL2Sq",
    "Lp",
    "prox_weighted_l1",
    "prox_weighted_l2sq",
    "prox_lp",
    "lp_threshold",
    "Reweighting",
    "reweight_l1",
    "reweight_l2",
    "reweight_focuss",
]


def _checked_weights(weights, copy: bool = True):
    """``weights`` checked when a penalty is made (finite, >= 0; the
    messages the prox functions give): a real scalar (Python or NumPy) as a
    Python float, anything else as a float64 array of its own library and
    device (NumPy for lists), a copy unless ``copy`` is False (then the
    caller's array itself where it is already float64)."""
    if (type(weights) is float and 0.0 <= weights < math.inf) or (type(weights) is int and 0 <= weights < 2**53):
        return float(weights)  # (the common case, checked without arrays: the same value, exact)
    w = V.nonnegative_float64(weights, "weights")
    if w.ndim == 0 and (not V._is_array(weights) or isinstance(weights, np.generic)):
        return float(w)
    if copy and V._is_array(weights):
        w = array_namespace(w).asarray(w, copy=True)
    return w


def _broadcast_weights(weights, layout, shape, name="weights"):
    """The (checked) weights as float64 on the input's library and device:
    one scalar as a (1,) array, else broadcast to the input's ``shape`` and
    flattened like the data."""
    w = R.param_array(weights, layout.data, name)
    if w.ndim == 0 or size(w) == 1:
        return w.reshape(1)
    xp = array_namespace(w)
    try:
        w = xp.broadcast_to(w, tuple(shape))
    except (ValueError, RuntimeError):
        raise ValueError(f"{name} of shape {tuple(w.shape)} do not broadcast to the input's shape {tuple(shape)}") from None
    return xp.reshape(w, (-1,))


class _Elementwise(R.Penalty):
    """Shared by the weighted l1 and squared l2: ``weights`` checked and (by
    default) copied when the object is made, as OWL's are, so that the
    caller may change the array it passed without effect on the penalty
    (a training step's plans keep thresholds formed from it).
    ``copy=False`` keeps the caller's array (the ``prox_*`` functions, which
    use the object once)."""

    layout: ClassVar[str] = "flat"
    arg: ClassVar[str] = "v"

    def __post_init__(self, copy: bool):
        R.frozen_set(self, weights=_checked_weights(self.weights, copy))

    def prox(self, v, step=1.0, *, metric=None, check_finite: bool = True):
        if metric is None:  # (the public function's one-call lane, weights already checked)
            x = R.in_one_call(self.kernel, v, R.one_weight(self.weights), step, check_finite, _fits_one_call)
            if x is not None:
                return x
        return super().prox(v, step, metric=metric, check_finite=check_finite)

    prox.__doc__ = R.Penalty.prox.__doc__

    def thresholds(self, layout):
        return (_broadcast_weights(self.weights, layout, layout.shape),)


@dataclass(frozen=True)
class WeightedL1(_Elementwise):
    r"""Omega(x) = sum_i weights_i |x_i|; ``weights`` >= 0 a scalar or an array
    broadcastable to x's shape.  See :func:`prox_weighted_l1`.

    The weights are checked (and copied, unless ``copy=False``) when the
    object is made."""

    weights: Any
    copy: InitVar[bool] = True
    kernel: ClassVar[str] = "weighted_l1"
    metric_kernel: ClassVar[str] = "weighted_l1_metric"

    def value(self, x) -> float:
        x, w, xp = _value_args(self, x)
        return float(xp.sum(w * xp.abs(x)))


@dataclass(frozen=True)
class WeightedL2Sq(_Elementwise):
    r"""Omega(x) = sum_i weights_i x_i^2 (no 1/2); see :func:`prox_weighted_l2sq`.

    The weights are checked (and copied, unless ``copy=False``) when the
    object is made."""

    weights: Any
    copy: InitVar[bool] = True
    kernel: ClassVar[str] = "weighted_l2sq"
    metric_kernel: ClassVar[str] = "weighted_l2sq_metric"
    degrees: ClassVar[tuple] = (2,)  # scale-free: v / (1 + 2 step w)

    def value(self, x) -> float:
        x, w, xp = _value_args(self, x)
        return float(xp.sum(w * x * x))


def _value_args(pen, x):
    x = V.as_float_array(x, "x")
    layout = R.layout_of(pen, x)
    xp = array_namespace(x)
    return _k.upcast(layout.data, xp), pen.thresholds(layout)[0], xp


@dataclass(frozen=True)
class Lp(R.Penalty):
    r"""Omega(x) = lam sum_i |x_i|^p, 0 <= p <= 1, with |0|^0 = 0; see :func:`prox_lp`."""

    lam: float
    p: float

    kernel: ClassVar[str] = "lp"
    metric_kernel: ClassVar[str] = "lp_metric"
    layout: ClassVar[str] = "flat"
    arg: ClassVar[str] = "v"
    degrees: ClassVar[tuple] = ("p",)

    def __post_init__(self):
        R.frozen_set(self, lam=V.nonnegative(self.lam, "lam"), p=V.in_unit_interval(self.p, "p"))

    def thresholds(self, layout):
        return (self.lam,)

    def fixed(self):
        return (self.p,)

    def prox(self, v, step=1.0, *, metric=None, check_finite: bool = True):
        if metric is None:  # (the public function's one-call lane)
            x = R.in_one_call(self.kernel, v, np.array((self.lam, self.p)), step, check_finite, _lam_and_p)
            if x is not None:
                return x
        return super().prox(v, step, metric=metric, check_finite=check_finite)

    prox.__doc__ = R.Penalty.prox.__doc__

    def value(self, x) -> float:
        x = V.as_float_array(x, "x")
        xp = array_namespace(x)
        a = xp.abs(_k.upcast(x, xp))
        if self.p == 0:
            return self.lam * int(xp.count_nonzero(a))  # a Python int: float64 on every backend
        return float(self.lam * xp.sum(a**self.p))


def prox_weighted_l1(v, weights, step=1.0, *, metric=None, check_finite: bool = True):
    r"""Proximal operator of the weighted l1 norm (soft thresholding).

    .. math::

        \arg\min_x \tfrac12\|x - v\|_2^2 + \mathrm{step}\sum_i \mathrm{weights}_i |x_i|
        \;=\; \mathrm{sign}(v)\,(|v| - \mathrm{step\,weights})_+

    ``weights`` (>= 0) is a scalar or an array broadcastable to ``v``'s shape.
    ``metric=d`` (> 0, broadcastable to ``v``'s shape) solves
    :math:`\arg\min_x \tfrac12 \sum_i d_i (x_i - v_i)^2 + \mathrm{step} \sum_i \mathrm{weights}_i |x_i|
    = \mathrm{sign}(v)(|v| - \mathrm{step\,weights}/d)_+`.

    >>> import numpy as np, proxlib
    >>> proxlib.prox_weighted_l1(np.array([3.0, -0.5, 1.0]), np.array([1.0, 1.0, 0.0]))
    array([ 2., -0.,  1.])
    >>> proxlib.prox_weighted_l1(np.array([3.0, 3.0]), 1.0, metric=np.array([1.0, 2.0]))
    array([2. , 2.5])
    """
    if metric is None:
        x = R.in_one_call("weighted_l1", v, R.one_weight(weights), step, check_finite, _fits_one_call)
        if x is not None:
            return x
    return WeightedL1(weights, copy=False).prox(v, step, metric=metric, check_finite=check_finite)


def prox_weighted_l2sq(v, weights, step=1.0, *, metric=None, check_finite: bool = True):
    r"""Proximal operator of the weighted squared l2 norm (no 1/2 factor).

    .. math::

        \arg\min_x \tfrac12\|x - v\|_2^2 + \mathrm{step}\sum_i \mathrm{weights}_i x_i^2
        \;=\; \frac{v}{1 + 2\,\mathrm{step\,weights}}

    ``weights`` (>= 0) is a scalar or an array broadcastable to ``v``'s shape.
    ``metric=d`` (> 0, broadcastable to ``v``'s shape) solves
    :math:`\arg\min_x \tfrac12 \sum_i d_i (x_i - v_i)^2 + \mathrm{step} \sum_i \mathrm{weights}_i x_i^2
    = v / (1 + 2\,\mathrm{step\,weights}/d)`.

    >>> import numpy as np, proxlib
    >>> proxlib.prox_weighted_l2sq(np.array([3.0, -1.0]), 1.0)
    array([ 1.        , -0.33333333])
    """
    if metric is None:
        x = R.in_one_call("weighted_l2sq", v, R.one_weight(weights), step, check_finite, _fits_one_call)
        if x is not None:
            return x
    return WeightedL2Sq(weights, copy=False).prox(v, step, metric=metric, check_finite=check_finite)


def _fits_one_call(v, w) -> bool:
    """A weight per entry, or one weight (the one-call route's cases: other
    shapes broadcast on the general path)."""
    return w.shape == v.shape or w.ndim == 0


def lp_threshold(lam: float, p: float) -> float:
    r"""The exact threshold of the lp prox (for lam already times step): the
    global minimiser of :math:`\tfrac12 (x - v)^2 + \lambda |x|^p` is 0 for
    :math:`|v| \le \tau` and non-zero above, in exact arithmetic.

    .. math::

        \tau = \frac{2 - p}{2(1 - p)}\,\big(2\lambda(1 - p)\big)^{1/(2-p)}
        \quad (0 \le p < 1), \qquad \tau = \lambda \quad (p = 1).

    p = 0 gives sqrt(2 lam) (hard thresholding, correctly rounded).  Formed
    without intermediate overflow or underflow over the whole float64 range of
    lam, to a few units in the last place (the exponent 1/(2 - p) is used as
    an exact rational).

    Relation to :func:`prox_lp`: for p = 0 and p = 1 the operator thresholds
    at exactly this value (0 iff ``|v| <= tau``).  For 0 < p < 1 it is 0 for
    every ``|v| <= tau * (1 - 1e-9)``; above that it keeps the non-zero
    stationary point iff its objective, compared with that of 0 in float64,
    is smaller.  That comparison and this closed form are each within rounding
    of the exact threshold but are not the same computation, so within a few
    units in the last place of tau (more for p within 1e-6 of 1, where the
    two objectives nearly cancel) the result may be either, ``|v| = tau``
    included: ``prox_lp(np.array([lp_threshold(lam, p)]), lam, p)`` is
    non-zero for about 35-40% of random (lam, p), and where it falls differs
    by backend (Numba solves p = 1/2 and 2/3 in other variables: for p = 2/3
    and lam = 1357.38 it gives 0 at tau, NumPy 164.99).

    >>> import numpy as np, proxlib
    >>> tau = proxlib.lp_threshold(1357.38, 1 / 2)
    >>> proxlib.prox_lp(np.array([tau * (1 - 1e-9), tau]), 1357.38, 1 / 2)  # at tau: within rounding
    array([  0.        , 122.59355262])

    Raises
    ------
    ValueError
        If tau exceeds the largest float64 (it never does for p = 0 or 1).
    """
    lam = V.nonnegative(lam, "lam")
    p = V.in_unit_interval(p, "p")
    if p == 1 or lam == 0:
        return lam
    if p == 0:
        return _range.hard_threshold(lam)
    tau = _range.lp_constants(lam, p)[0]
    if tau == math.inf:
        raise ValueError(f"the lp threshold for lam = {lam!r}, p = {p!r} exceeds the largest float64")
    return tau


def prox_lp(v, lam, p, step=1.0, *, metric=None, check_finite: bool = True):
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
    same objective value; proxlib returns 0 (the sparser minimiser).  For
    0 < p < 1 the choice is made by comparing the two objective values in
    float64 (0 unless x* is strictly lower), not against the rounded
    :func:`lp_threshold`: within a few units in the last place of tau the
    computed result may be either (see :func:`lp_threshold` for the exact
    relationship); every :math:`|v_i| \le \tau (1 - 10^{-9})` gives 0.

    Algorithm: closed forms for p = 1/2 (cubic) and p = 2/3 (quartic) as starting
    points, then Newton's method on the convex, increasing branch x > beta
    (:math:`\beta^{2-p} = \lambda p (1-p)`), where it decreases monotonically to
    the root; it stops when the iterate no longer decreases (last bit).

    ``metric=d`` (> 0, broadcastable to ``v``'s shape) solves
    :math:`\arg\min_x \tfrac12 \sum_i d_i (x_i - v_i)^2 + \mathrm{step\,lam}\sum_i |x_i|^p`:
    separable, entry i is the global prox above with
    :math:`\lambda_i = \mathrm{step\,lam} / d_i` (same algorithm, same tie rule).

    With ``check_finite=False``, NaN and +-inf entries of ``v`` are returned
    as they are (on every backend), as the other elementwise maps return
    them.

    >>> import numpy as np, proxlib
    >>> proxlib.prox_lp(np.array([3.0, 0.5, -2.0]), 1.0, 0.0)
    array([ 3.,  0., -2.])
    """
    if metric is None:
        x = R.in_one_call("lp", v, R.scalar_vector((lam, p)), step, check_finite, _lam_and_p)
        if x is not None:
            return x
    return Lp(lam, p).prox(v, step, metric=metric, check_finite=check_finite)


def _lam_and_p(v, w) -> bool:
    """lp's one-call lane takes its two scalars as a vector (lam, p)."""
    return w.shape == (2,)


R.register("weighted_l1", WeightedL1, prox_weighted_l1)
R.register("weighted_l2sq", WeightedL2Sq, prox_weighted_l2sq)
R.register("lp", Lp, prox_lp)


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
    """theta as a float array (half precision as float32), tau checked, the
    namespace, and the dtype the rule's results are rounded to: theta's own
    (float16 and bfloat16 included; float64 for integers and lists)."""
    dtype = V.result_dtype(theta)
    theta = V.as_float_array(theta, "theta")
    tau = V.positive(tau, "tau")
    return theta, tau, array_namespace(theta), dtype or theta.dtype


def _rounded(a64, what: str, theta, dtype, tau_value):
    """float64 ``a64`` rounded once to ``dtype`` (theta's own dtype, half
    precision included); a ValueError saying which quantity of the rule
    overflows that dtype where an entry does (the exact value is not
    representable)."""
    xp = array_namespace(a64)
    a = xp.astype(a64, dtype)
    if size(a) and not bool(xp.all(xp.isfinite(a))):
        raise ValueError(
            f"{what} is not representable in {V.dtype_name(dtype)} for this theta and tau "
            f"(max |theta| = {float(xp.max(xp.abs(theta)))}, tau = {tau_value!r}): its exact value exceeds "
            "the largest finite number of the dtype"
        )
    return a


def reweight_l1(theta, tau) -> Reweighting:
    r"""Re-weighted l1 (Candes, Wakin & Boyd; Fedorov & Rao Eq. 8).

    From :math:`g(\theta) = \log(|\theta| + \tau)`:
    :math:`\omega = |\theta| + \tau` and weighted-l1 weights
    :math:`1/(|\theta| + \tau) = 1/\omega`.

    Both are formed in float64 and rounded once to theta's dtype; a ValueError
    says so when they are not representable in it (tau below float32's range,
    or |theta| near the largest float).
    """
    theta, tau, xp, dtype = _theta_tau(theta, tau)
    with _k.errstate(theta):
        omega64 = xp.abs(_k.upcast(theta, xp)) + tau
        omega = _rounded(omega64, "omega = |theta| + tau", theta, dtype, tau)
        weights = _rounded(1.0 / omega64, "1/(|theta| + tau)", theta, dtype, tau)
    return Reweighting(omega=omega, weights=weights, subproblem="l1")


def reweight_l2(theta, tau) -> Reweighting:
    r"""Re-weighted l2 (Chartrand & Yin; Fedorov & Rao Eq. 9).

    From :math:`g(\theta) = \log(\theta^2 + \tau)`:
    :math:`\omega = \sqrt{\theta^2 + \tau}` and weighted-l2^2 weights
    :math:`1/(\theta^2 + \tau) = 1/\omega^2`.

    Both are formed in float64 from s = theta^2 + tau (three roundings: the
    weights 1/s to 1.5 units in the last place, omega = sqrt(s) to 1) and
    rounded once to theta's dtype; where s overflows (|theta| near 1e154 and
    beyond) from omega = hypot(theta, sqrt(tau)) and (1/omega)^2 instead, which
    cannot overflow (a weight below the dtype's range rounds to 0, the
    correctly rounded value; omega beyond it raises ValueError).
    """
    theta, tau, xp, dtype = _theta_tau(theta, tau)
    t64 = _k.upcast(theta, xp)
    with _k.errstate(theta):
        s = t64 * t64 + tau
        finite = xp.isfinite(s)
        big = xp.hypot(t64, xp.asarray(tau**0.5, dtype=xp.float64, device=_device(theta)))
        omega64 = xp.where(finite, xp.sqrt(s), big)
        inv = 1.0 / big
        weights64 = xp.where(finite, 1.0 / s, inv * inv)
        omega = _rounded(omega64, "omega = sqrt(theta^2 + tau)", theta, dtype, tau)
        weights = _rounded(weights64, "1/(theta^2 + tau)", theta, dtype, tau)
    return Reweighting(omega=omega, weights=weights, subproblem="l2sq")


def reweight_focuss(theta, p, tau) -> Reweighting:
    r"""FOCUSS-lp (Gorodnitsky & Rao; Fedorov & Rao Eq. 10), 0 <= p <= 2.

    :math:`\omega = |\theta|^{2-p} + \tau` and weighted-l2^2 weights
    :math:`1/(|\theta|^{2-p} + \tau) = 1/\omega` (the re-weighted minimum-norm
    step of FOCUSS).  p = 2 gives constant weights (ridge); p -> 0 approaches l0.
    Formed in float64 and rounded once; a ValueError says so when omega or the
    weights are not representable in theta's dtype.
    """
    theta, tau, xp, dtype = _theta_tau(theta, tau)
    p = V.real_scalar(p, "p")
    if not 0 <= p <= 2:
        raise ValueError(f"p must lie in [0, 2], got {p}")
    with _k.errstate(theta):
        omega64 = xp.abs(_k.upcast(theta, xp)) ** (2.0 - p) + tau
        omega = _rounded(omega64, "omega = |theta|^(2-p) + tau", theta, dtype, tau)
        weights = _rounded(1.0 / omega64, "1/(|theta|^(2-p) + tau)", theta, dtype, tau)
    return Reweighting(omega=omega, weights=weights, subproblem="l2sq")
