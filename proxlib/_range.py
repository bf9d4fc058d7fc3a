r"""Thresholds over the whole float range: forming ``step * lam * c`` without
spurious overflow, and solving exactly when a threshold lies beyond the range
a kernel can take.

A penalty's thresholds are products ``step * s_1 * ... * s_k * t`` of
non-negative Python floats (``step``, ``lam``, ``mu``, ...) and a float64
array ``t`` (group or elementwise weights).  Each factor may be anything from
the smallest subnormal to the largest finite float64, so the product can
leave float64 (1e308 * 1e308) although every input is finite.  Products are
formed from mantissas and exponents (``math.frexp``): the mantissas' product is
rounded, the power of two is applied exactly, so nothing overflows or
underflows on the way, and the rounding is that of forming the product once
(a few units in the last place).

The kernels take thresholds in the data's dtype.  Where one does not fit
(it overflows, or a scale-free one exceeds 2^900 for float64 data, 2^100 for
float32) the problem is transformed exactly instead:

* **float32 data**: the problem is solved in float64 (the data are widened
  exactly, the thresholds formed in float64) and the result rounded once to
  float32 -- the reference computes in float64 anyway.
* **degree 1** (the threshold scales like the data: group lasso, OWL, GrOWL,
  weighted l1, the l2 part of group+exclusive): ``prox_{t Omega}(v) =
  sigma prox_{(t/sigma) Omega}(v / sigma)`` for sigma = 2^j, j = ceil(log2 N)
  + 1 with N the number of entries; a threshold that still overflows is
  clamped to the largest float64, where the result is already saturated
  (a row is zero once ``a >= ||w||``, an OWL prox once ``w_1 >= ||v||_1``, both
  at most N * max|v| < sigma * max float64).  Entries below 2^-1022 * sigma
  lose their last j bits (an absolute error of at most sigma * 2^-1075).
* **degree 2** (scale-free parameters: the exclusive lasso's b, weighted
  l2^2's w, the l1^2 part of group+exclusive): once b is huge the prox is
  saturated and inversely proportional to b -- the exclusive lasso keeps only
  the largest entries of a group, as w / (1 + b k); weighted l2^2 gives
  v / (1 + 2 w); group+exclusive gives x = (gamma / b) u(gamma) with
  ||u(gamma)|| = a / (1 - gamma / b) and gamma <= ||w|| / a * sqrt(m) <= 2^200
  (there a >= b 2^-53, as 1 - mu >= 2^-53 unless mu = 1, when a = 0 and it is
  the exclusive lasso).  So ``prox_b(v) = 2^-E prox_{b 2^-E}(v)`` to a relative
  2^-600 for b 2^-E >= 2^899: each row (entry) with b > 2^900 is solved with
  b 2^-E in [2^899, 2^900] and its result multiplied by 2^-E.
* **in a diagonal metric** (:func:`metric_at_step`): argmin 1/2 sum d (x - v)^2
  + step Omega(x) is the same problem divided by 2^E, d / 2^E and thresholds
  / 2^E, for every degree; thresholds that reach 2^1023 are brought to about
  2^1000 so.  ValueError where d / 2^E would leave the normal range.  What
  the division cannot change is a degree-2 threshold's ratio to the metric
  (b / d): the metric kernels handle that themselves, the exclusive ones
  saturating a row where it exceeds 2^600 (as above, solved at b 2^-E in
  [2^599, 2^600): ``_metric_kernels._saturated``), weighted l2^2 forming
  v d / (2 w) where w / d overflows.  At the other end a threshold below 2^-1022
  is rounded as the product is (to a subnormal or 0), also where b / d is in
  range (b = 2^-1191 in the metric 2^-750 is solved with b = 0; multiplying
  the objective by 2^-E would keep it, but E would then depend on the
  metric, which changes at every step).  The error is below 2^-1074 times
  the row's l1 norm, divided by the metric.
* **lp** (degree p): ``prox_lam(v) = sigma prox_{lam sigma^(p-2)}(v / sigma)``
  with sigma = 2^k chosen so that lam sigma^(p-2) is about 1; entries that
  would overflow ``v / sigma`` are far above the threshold and returned as
  they are (their shrinkage is below 2^-1020 relative), entries that underflow
  are far below it and become 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import _validate as V
from ._dispatch import array_kind, array_namespace, device, size

__all__: list[str] = []

# A scale-free (degree-2) threshold above this is solved by saturation; the
# kernels then never see one large enough to push 1 + b k or b F towards
# overflow, or w / (1 + b k) into the subnormals.
_DEGREE2_LIMIT = {"float64": 2.0**900, "float32": 2.0**100}
_FMAX = {"float64": 1.7976931348623157e308, "float32": 3.4028234663852886e38}
# lam (already times step) of lp inside this range goes to the kernel as it is
_LP_LO, _LP_HI = 2.0**-1000, 2.0**1000


@dataclass
class Threshold:
    """``step * prod(scalars) * array`` (``array`` None: a Python float
    threshold), of homogeneity ``degree`` in the data (1, 2, or "p" for lp)."""

    scalars: tuple
    array: Any
    degree: Any = 1
    top: float | None = None  # the array's largest entry, where the caller knows it


def weighted(scalars: tuple, layout, degree=1) -> Threshold:
    """The threshold ``step * prod(scalars) * c`` of a row penalty, ``c``
    the layout's per-group weights, with their largest entry where the
    layout knows it (``c_top``: no reduction, no read of a device's array).
    ``layout``: a :class:`proxlib._registry.Layout` (every layout is one)."""
    return Threshold(tuple(scalars), layout.c, degree, top=layout.c_top)


@dataclass
class Data:
    """What :func:`solve` reads of a layout when the caller keeps the terms:
    the data alone."""

    data: Any


def terms(pen, layout) -> tuple:
    """The penalty's thresholds as :class:`Threshold` terms: its own
    ``threshold_terms`` where it declares them, else its ``thresholds`` with
    its ``degrees`` (default 1)."""
    own = getattr(pen, "threshold_terms", None)
    if own is not None:
        return own(layout)
    base = pen.thresholds(layout)
    degrees = getattr(pen, "degrees", (1,) * len(base))
    return tuple(
        Threshold((t,), None, d) if isinstance(t, float) else Threshold((), t, d) for t, d in zip(base, degrees)
    )


def products(terms_) -> tuple:
    """The thresholds of ``terms_`` before the step, as plain float64 arrays
    (or floats): ``prod(scalars) * array``, inf where that overflows."""
    return tuple(formed(t, *product(t.scalars), t.array) for t in terms_)


# ------------------------------------------------------------ extended products


def _pow_scaled(m: float, e: int, r: Fraction) -> tuple[float, int]:
    """``(m 2^e)^r`` as ``(mantissa, exponent)`` for m in (0, 1], an integer e
    and a rational r > 0, without overflow: m^r is a float power of a number
    near 1, and e r splits exactly into an integer and a fraction in [0, 1)."""
    q = e * r
    qi = math.floor(q)
    return m ** float(r) * 2.0 ** float(q - qi), qi


def _ldexp(m: float, e: int) -> float:
    try:
        return math.ldexp(m, e)
    except OverflowError:
        return math.inf


def lp_constants(lam: float, p: float) -> tuple[float, float]:
    """``(tau, beta)`` of the lp prox with ``lam`` > 0 (already times step), 0 < p < 1:

    tau = (2 - p) / (2 (1 - p)) (2 lam (1 - p))^(1/(2-p)), the magnitude up to
    which the prox is 0, and beta = (lam p (1 - p))^(1/(2-p)), where the
    stationarity equation's derivative vanishes.  Formed from the mantissa and
    exponent of lam with the exponent 1/(2 - p) as an exact rational: no
    intermediate overflows or underflows (2 lam does for lam > 2^1023), and the
    relative error is a few units in the last place instead of
    eps |ln lam| / (2 - p) for a float power with a rounded exponent.  inf
    where tau exceeds the largest float64.
    """
    r = 1 / (2 - Fraction(p))
    ml, el = math.frexp(lam)
    mt, et = math.frexp(ml * (1.0 - p))  # 2 lam (1 - p) = mt 2^(el + et + 1)
    a, ea = _pow_scaled(mt, el + et + 1, r)
    tau = _ldexp(a * ((2.0 - p) / (2.0 * (1.0 - p))), ea)
    mp, ep = math.frexp(p * (1.0 - p))
    mb, eb = math.frexp(ml * mp)  # lam p (1 - p) = mb 2^(el + ep + eb)
    b, eb2 = _pow_scaled(mb, el + ep + eb, r)
    return tau, _ldexp(b, eb2)


def hard_threshold(lam: float) -> float:
    """sqrt(2 lam) correctly rounded, also where 2 lam overflows (lp with p = 0)."""
    return math.sqrt(2.0 * lam) if lam <= 2.0**1022 else 2.0 * math.sqrt(lam / 2.0)




def product(factors) -> tuple[float, int]:
    """``prod(factors)`` (floats >= 0) as ``(m, e)``, m in [0.5, 1) or 0, exactly
    ``m * 2^e`` up to the rounding of the mantissas' product."""
    m, e = 1.0, 0
    for f in factors:
        fm, fe = math.frexp(f)
        m, e2 = math.frexp(m * fm)
        e += fe + e2
    return (m, e) if m else (0.0, 0)


def mul_pow2(a, e, m: float = 1.0):
    """``a * m * 2^e`` for a float array ``a``, a float ``m`` in [0.5, 1] and an
    integer ``e`` (a Python int or an integer array broadcastable to ``a``):
    one rounding (of the mantissas' product); the power of two is applied
    exactly, so nothing over- or underflows before the result does."""
    xp = array_namespace(a)
    with V._errstate_over():
        ma, ea = xp.frexp(a)
        if not isinstance(e, int):
            e = xp.astype(e, ea.dtype)
        return xp.ldexp(ma * m if m != 1.0 else ma, ea + e)


def _log2_max(t: Threshold, m: float, e: int) -> float:
    """log2 of the largest threshold of ``t`` (from the mantissa/exponent of
    its scalar part): -inf when all are 0.  One scalar read for an array."""
    if m == 0:
        return -math.inf
    if t.array is None:
        top = 1.0
    elif size(t.array) == 0:
        return -math.inf
    elif t.top is not None:
        top = t.top
    else:
        top = float(array_namespace(t.array).max(t.array))
    if top == 0:
        return -math.inf
    return math.log2(m) + math.log2(top) + e


def formed(t: Threshold, m: float, e: int, like, *, no_overflow: bool = False):
    """The threshold's float64 values on ``like``'s device (a Python float for
    a scalar threshold; inf where it overflows).  ``no_overflow``: the caller
    has checked that no value exceeds 2^1023 (then no floating-point state is
    changed: that costs microseconds per call)."""
    scalar = _ldexp(m, e)
    if t.array is None:
        return scalar
    a = t.array
    if (V.dtype_name(a.dtype) != "float64" or array_kind(a) != array_kind(like)
            or (array_kind(like) != "numpy" and device(a) != device(like))):
        xp = array_namespace(like)
        a = xp.asarray(a, dtype=xp.float64, device=device(like))
    if scalar == 1.0:
        return a  # exact as it is (no kernel writes to its thresholds)
    if scalar == 0 or (2.0**-1022 <= scalar < math.inf):
        if no_overflow:
            return a * scalar
        with V._errstate_over():
            return a * scalar  # one rounding, as step * w always was
    return mul_pow2(a, e, m)


def _in_dtype(a, like):
    if isinstance(a, float) or a.dtype == like.dtype:
        return a
    xp = array_namespace(like)
    with V._errstate_over():
        return xp.astype(a, like.dtype, copy=False)


# ------------------------------------------------------------------- solving


def solve(pen, layout, step: float, kernel, run, ts=None):
    """The kernel's result on ``layout.data`` (the input's dtype) for the
    penalty ``pen`` at ``step``; ``run(kernel, data, thresholds)`` calls the
    kernel.  See the module docstring for what happens out of range.
    ``ts``: the penalty's :func:`terms` for this layout, where the caller
    keeps them (``layout`` need then only have ``data``)."""
    data = layout.data
    ts = terms(pen, layout) if ts is None else ts
    me, logs, fits = _at_step(ts, step, data)
    if fits:
        return run(kernel, data, _formed_in_dtype(ts, me, logs, data))
    xp = array_namespace(data)
    if V.dtype_name(data.dtype) != "float64":  # solve in float64, round once
        data64 = xp.astype(data, xp.float64)
        X = _solve64(pen, ts, me, logs, data64, kernel, run)
        with V._errstate_over():  # (|x| <= |v| for finite input; only NaN/Inf input, unchecked, may overflow here)
            return xp.astype(X, data.dtype)
    return _solve64(pen, ts, me, logs, data, kernel, run)


def _at_step(ts, step: float, data):
    """Each term's scalar part at ``step`` as (mantissa, exponent), the log2
    of its largest threshold, and whether every one is in the kernels' range
    for ``data``'s dtype."""
    me = [product((step,) + tuple(t.scalars)) for t in ts]
    logs = [_log2_max(t, m, e) for t, (m, e) in zip(ts, me)]
    dname = V.dtype_name(data.dtype)
    return me, logs, all(_fits(t, lg, dname) for t, lg in zip(ts, logs))


def _formed_in_dtype(ts, me, logs, data, scaled=None) -> tuple:
    safe = all(lg < 1023 for lg in logs)
    return tuple(_formed_one(i, t, m, e, data, safe, scaled) for i, (t, (m, e)) in enumerate(zip(ts, me)))


def _formed_one(i: int, t: Threshold, m: float, e: int, data, safe: bool, scaled):
    """:func:`formed` in ``data``'s dtype (:func:`_in_dtype`) of the term
    ``t``, the ``i``-th; by ``scaled(i, array, s, data)`` where given and
    the scalar part s is a normal float (there formed's array is
    ``array * s``, one rounding)."""
    if scaled is not None and t.array is not None:
        s = _ldexp(m, e)
        if 2.0**-1022 <= s < math.inf:
            return scaled(i, t.array, s, data)
    return _in_dtype(formed(t, m, e, data, no_overflow=safe), data)


def thresholds_in_range(ts, step: float, data, scaled=None):
    """The thresholds :func:`solve` passes to the kernel at ``step`` when
    every one is in the kernels' range (the same values, bit for bit), or
    None when :func:`solve` would transform the problem: for a caller that
    keeps them while the step does not change.  ``scaled`` (optional):
    ``scaled(i, a, s, data)`` returns ``a * s`` (float64 products of the
    ``i``-th term's float64 array ``a`` and a normal float ``s``) rounded
    to ``data``'s dtype, as the array operations make it: for a caller with
    a faster way (:func:`proxlib.backends.numba_cpu.threshold_former`)."""
    me, logs, fits = _at_step(ts, step, data)
    return _formed_in_dtype(ts, me, logs, data, scaled) if fits else None


def topped(t: Threshold) -> Threshold:
    """``t`` with its array's largest entry (``top``) known: one reduction
    now, for a caller that keeps the terms, where :func:`_at_step` would
    make it at every new step."""
    if t.array is None or t.top is not None or size(t.array) == 0:
        return t
    return Threshold(t.scalars, t.array, t.degree, float(array_namespace(t.array).max(t.array)))


class AtStep:
    """:func:`thresholds_in_range` of ``terms`` (or another ``form(terms,
    step, like)``, e.g. :func:`metric_at_step`), formed again only when the
    step changes (no kernel writes to its thresholds): for a caller that
    solves the same problem shape at step after step (a training step, a
    solver's iterations).  ``localize`` (optional) maps the thresholds once
    formed, e.g. to one rank's part.  ``step`` is the last step asked for."""

    def __init__(self, terms_: tuple, localize=None, form=None):
        self.terms = terms_
        self.localize = localize
        self.form = thresholds_in_range if form is None else form
        self._last = (None, None)  # (step, thresholds), replaced as one

    @property
    def step(self):
        return self._last[0]

    @property
    def thresholds(self):
        return self._last[1]

    def __call__(self, step: float, like):
        """The thresholds at ``step`` for data like ``like`` (its dtype and
        device), or None where :func:`solve` would transform the problem.
        Safe to share between threads (a plan that :func:`proxlib._registry.apply`
        keeps): the step and its thresholds are read and replaced as one pair."""
        last_step, thr = self._last
        if step != last_step:
            thr = self.form(self.terms, step, like)
            if thr is not None and self.localize is not None:
                thr = self.localize(thr)
            self._last = (step, thr)
        return thr


# ------------------------------------------------------- in a diagonal metric
#
# argmin_x 1/2 sum_i d_i (x_i - v_i)^2 + step Omega(x) is unchanged when the
# whole objective is divided by c > 0: d -> d / c, step -> step / c, whatever
# the degree of each threshold (every term of the objective is linear in d or
# in its threshold).  With c = 2^E that division is exact (unless d / c leaves
# the normal range), so thresholds beyond float64 are brought back into it.

_METRIC_LOG2_TOP = 1000  # after the division, the largest threshold is about 2^1000


def metric_at_step(ts, step: float, like) -> tuple[tuple, int]:
    """The thresholds the metric kernels take at ``step``, and E: ``step * t``
    for each term, formed as :func:`solve` forms them (the mantissas' product
    rounded once, then times the array: float64 on ``like``'s device), with
    E = 0 where every one is below 2^1023; else ``step * t * 2^-E`` (formed
    without overflow) with E >= 1 bringing the largest to about 2^1000: the
    objective divided by 2^E, whose metric is :func:`metric_divided`'s.
    Thresholds far below the largest may then lose bits below 2^-1022 (their
    effect on the solution is below the largest one's by 2^-2000)."""
    me, logs, _ = _at_step(ts, step, like)
    top = max(logs, default=-math.inf)
    E = 0 if top < 1023 else math.ceil(top) - _METRIC_LOG2_TOP
    return tuple(formed(t, m, e - E, like, no_overflow=True) for t, (m, e) in zip(ts, me)), E


def metric_divided(D, E: int, d_min: float | None = None):
    """The metric ``D`` of the objective divided by 2^E: ``D * 2^-E`` (exact),
    ``D`` itself for E = 0.  ``d_min``: D's least entry (None: read from D).
    ValueError where D * 2^-E would leave the normal range: thresholds beyond
    2^1023 and metric entries below 2^(E - 1022) together span more than
    float64 holds."""
    if E == 0:
        return D
    check_metric_divided(float(array_namespace(D).min(D)) if d_min is None else d_min, E)
    return mul_pow2(D, -E)


def check_metric_divided(d_min: float, E: int) -> None:
    """:func:`metric_divided`'s check alone, on the metric's least entry: for
    a caller that checks before it divides (a training step's batch checks
    every term before anything is written)."""
    if E != 0 and d_min * 2.0**-E < 2.0**-1022:
        raise ValueError(
            f"the metric's least entry {d_min!r} and step * the thresholds (beyond 2^1023: the problem is solved "
            f"divided by 2^{E}) together span more than float64 can hold; rescale the problem"
        )


def _fits(t: Threshold, log2max: float, dname: str) -> bool:
    """Whether the kernels take this threshold as it is."""
    if t.degree == "p":  # lp's lam: kept in the normal range of float64
        return log2max == -math.inf or abs(log2max) <= 1000
    if t.degree == 2:
        return log2max <= math.log2(_DEGREE2_LIMIT[dname])
    return log2max < 128 if dname == "float32" else log2max < 1024


def _solve64(pen, ts, me, logs, data, kernel, run):
    if any(t.degree == "p" for t in ts):
        return _solve_lp(pen, ts, me, data, kernel, run)
    if all(_fits(t, lg, "float64") for t, lg in zip(ts, logs)):
        return run(kernel, data, tuple(formed(t, m, e, data) for t, (m, e) in zip(ts, me)))
    xp = array_namespace(data)
    # degree 1 beyond float64: data and those thresholds over sigma = 2^j
    over = any(t.degree == 1 and lg >= 1024 for t, lg in zip(ts, logs))
    j = max(1, math.ceil(math.log2(max(size(data), 1)))) + 1 if over else 0
    thr, shift = [], 0
    for t, (m, e), lg in zip(ts, me, logs):
        if t.degree == 2 and not _fits(t, lg, "float64"):
            # saturated: row r (entry i) with b_r 2^-E_r <= 2^900, result times 2^-E_r
            a = xp.asarray(t.array, dtype=xp.float64, device=device(data))
            _, ea = xp.frexp(a)
            shift = xp.where(a > 0, xp.maximum(xp.astype(ea, xp.int64) + e - 900, 0), 0)
            thr.append(mul_pow2(a, e - shift, m))
            if data.ndim == 2:
                shift = shift[:, None]
        else:
            a = formed(t, m, e - j if t.degree == 1 else e, data)
            thr.append(min(a, _FMAX["float64"]) if isinstance(a, float) else xp.minimum(a, _FMAX["float64"]))
    X = run(kernel, mul_pow2(data, -j) if j else data, tuple(thr))
    if data.ndim == 2 and not isinstance(shift, int):
        # a row holding NaN or Inf (check_finite=False) comes back from the
        # kernel as it is: it is not a saturated result, so it keeps its scale
        shift = xp.where(xp.all(xp.isfinite(X), axis=1)[:, None], shift, 0)
    return mul_pow2(X, j - shift) if (j or not isinstance(shift, int)) else X


def _solve_lp(pen, ts, me, data, kernel, run):
    """lp with lam (times step) outside [2^-1000, 2^1000]: the problem at scale
    sigma = 2^k with lam sigma^(p-2) in [0.5, 2)."""
    ((t,), ((m, e),)) = (ts, me)
    p = pen.fixed()[0]
    lam = formed(t, m, e, data)
    if m == 0 or (_LP_LO <= lam <= _LP_HI):
        return run(kernel, data, (lam,))
    xp = array_namespace(data)
    # lam sigma^(p-2) = m 2^(e - k (2 - p)) with k about e / (2 - p).  2 - p is a
    # dyadic rational, so e - k (2 - p) splits exactly into an integer and a
    # fraction in [0, 1), and only 2^fraction is rounded.
    k = round(e / (2 - p))
    q = Fraction(e) - Fraction(k) * (2 - Fraction(p))
    qi = math.floor(q)
    lam_s = math.ldexp(m * 2.0 ** float(q - qi), qi)
    if k >= 0:  # lam huge: v / sigma only shrinks (what underflows is far below the threshold)
        return mul_pow2(run(kernel, mul_pow2(data, -k), (lam_s,)), k)
    # lam tiny: v / sigma grows; entries that would overflow are far above the
    # threshold (their shrinkage is below 2^-1020 relative) and stay as they are
    big = xp.abs(data) >= math.ldexp(1.0, 1020 + k)
    X = mul_pow2(run(kernel, mul_pow2(xp.where(big, 0.0, data), -k), (lam_s,)), k)
    return xp.where(big, data, X)
