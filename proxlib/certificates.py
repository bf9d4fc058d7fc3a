r"""Optimality certificates: how far ``x`` is from ``prox_{step*Omega}(v)``, without the prox.

``x`` is the prox of ``step * Omega`` at ``v`` iff the residual

.. math:: r = (v - x) / \mathrm{step} \in \partial\Omega(x)

(for lp, which is not convex: iff x is a global minimiser of the separable
problem, checked entry by entry).  :func:`optimality_residual` measures the
violation of that condition from ``v``, ``x`` and the penalty's parameters
alone: it never calls a prox, so it checks proxlib's kernels (and any other
library's) independently of them.

What is measured (``s`` = step, blocks = entries for the separable penalties,
rows / groups for the group penalties):

* **weighted l1, weighted l2^2, group lasso, exclusive lasso, group +
  exclusive** (convex, separable over blocks): the Euclidean distance of each
  block of ``v - x`` to ``s * dOmega_B(x_B)``, in closed form.  By firm
  non-expansiveness of the prox it bounds the distance to the answer:
  ``||x_B - prox(v)_B||_2 <= violation_B``.
* **OWL, GrOWL** (not separable): the dual-norm conditions.  With ``|r|``
  (GrOWL: the row norms of ``r``) sorted decreasingly and ``W_k`` the partial
  sums of the weights, ``r`` is in the subdifferential iff (a) every partial
  sum ``C_k = sum_{j<=k} |r|_[j] <= W_k`` (dual norm <= 1) and (b)
  ``<r, x> = Omega(x)``.  (b) is measured where it can fail: with the entries
  (rows) ordered by ``|x|`` decreasingly, ``Omega(x) - <r, x> = sum_K (a_K -
  a_{K+1}) D_K`` with ``a_K`` the sorted magnitudes and ``D_K = W_K - sum_{j<=K}
  q_j`` (``q_j = r_j sign(x_j)``, for GrOWL the component of ``r_j`` along
  ``x_j``), so each boundary contributes ``min(c (a_K - a_{K+1}) / s, |D_K|)``
  (in units of ``v`` after the factor ``s`` below: the lesser of shifting
  ``r`` to make ``D_K`` vanish and closing the gap to tie the two sides,
  the gap weighed against the data's scale: ``c = scale / max|v|`` (GrOWL:
  the largest row norm), so that the residual's part is the gap divided by
  ``max|v|``, which the prox's magnitudes never exceed; against ``scale``,
  which adds ``s w_1``, ``x = v`` passed where the weights dwarf the data):
  zero inside a block of tied magnitudes, continuous in ``x`` (a tie split
  by one ulp contributes at most one ulp).  GrOWL adds the component of
  each row of ``r`` orthogonal to its ``x`` row.  All three are multiplied
  by ``s`` (units of ``v``).
* **lp** (0 <= p <= 1, the global minimiser): with ``L = s * lam``, on the
  support the stationarity ``|x + L p |x|^(p-1) sign(x) - v|`` and the
  comparison with 0, ``(f(x) - f(0)) / |x| = |x|/2 - |v| + L |x|^(p-1)``
  (must be <= 0); off the support ``|v| <= tau`` (the threshold of
  :func:`proxlib.lp_threshold`, evaluated here as ``min_t t/2 + L t^(p-1)`` at
  its minimiser, so that the rounded exponent of the closed form costs only a
  second-order error).  Either tie choice at ``|v| = tau`` passes.

``violation`` (one number per block, units of ``v``) is divided by a ``scale``
that does not depend on ``x``: ``max_B ||v_B|| + s * (largest threshold)``
for OWL, GrOWL, the group lasso and weighted l1 (the largest term the
conditions hold at the prox); ``max_B ||v_B||`` alone for the exclusive
lasso, weighted l2^2 and lp (their thresholds multiply x, whose size
``max ||v_B||`` bounds); for group+exclusive ``max_B ||v_B||`` plus ``s``
times the largest group-lasso threshold.  So the residual is
scale-free: multiplying ``v``, ``x`` and ``step`` (or the penalty's parameters)
together leaves it unchanged for the homogeneous penalties.

**Rounding level.**  At the exact prox the residual is 0; at a prox computed in
floating point it is a few units of the data's precision times the number of
terms summed by the conditions (``N``: 1 for the elementwise penalties, the
row length for the group penalties, the vector length for OWL, rows + row
length for GrOWL).  :func:`residual_tolerance` returns
``16 (N + 1) eps + (64 + g) (subnormal spacing) / scale``, the bound used by
proxlib's own tests; ``eps`` and the subnormal spacing are those of the less
precise of ``v``'s and ``x``'s dtypes (float16 and bfloat16 at their own
precision, 2^-10 and 2^-7: proxlib computes in float32 but rounds the
result to the input's half precision), and ``g`` (0 for the norms) what rounding the result to the subnormal grid
costs where the conditions amplify it (``(1 + b N) sqrt(N) / 2`` for the
exclusive conditions, whose entries are coupled through ``b ||x||_1``).

Everything is computed in float64 on the arrays' own library and device
(NumPy, CuPy, torch on any device); only the final scalars leave it.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import _registry as R
from . import _validate as V
from ._dispatch import array_kind, array_namespace, device, size
from ._rows import ragged_parts
from .backends import _xp_kernels as _k

__all__ = [
    "Certificate",
    "certify",
    "optimality_residual",
    "subdifferential_distance",
    "residual_tolerance",
    "dual_norm",
    "has_dual_norm",
    "CERTIFICATES",
    "DUAL_NORMS",
]


# ----------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Certificate:
    """The optimality conditions of ``x`` for ``prox_{step*Omega}(v)``, block by block.

    Attributes
    ----------
    violation : array (float64, the input's library and device)
        One value per block in units of ``v``: per entry (flat penalties:
        OWL, weighted l1/l2^2, lp; in ``v.reshape(-1)`` order) or per row /
        group (row penalties; ragged groups in increasing label order).
    scale : float
        ``max_B ||v_B||``, plus ``step * (largest threshold)`` for OWL, GrOWL,
        the group lasso and weighted l1 (group+exclusive: its group-lasso
        threshold); independent of ``x`` (see the module docstring).
    tolerance : float
        The rounding level of :attr:`residual` for ``v``'s and ``x``'s dtypes
        (see :func:`residual_tolerance`).
    blocks : str
        ``"entries"`` or ``"rows"``.
    labels : array or None
        Row penalties: the group label (dense input: the row index) of each row.
    """

    violation: Any
    scale: float
    tolerance: float
    blocks: str
    labels: Any = None
    # distance / scale as computed on inputs brought up from below 2^-960
    # (see certify): the same ratio, without the subnormal rounding of either
    normalized_residual: float | None = field(default=None, repr=False)

    @property
    def distance(self) -> float:
        """The largest violation, in units of ``v``."""
        if size(self.violation) == 0:
            return 0.0
        return float(array_namespace(self.violation).max(self.violation))

    @property
    def residual(self) -> float:
        """``distance / scale`` (0 when both are 0, inf for a violation at scale 0)."""
        if self.normalized_residual is not None:
            return self.normalized_residual
        return _ratio(self.distance, self.scale)

    @property
    def worst(self) -> int:
        """Index of the block with the largest violation (entry or row)."""
        xp = array_namespace(self.violation)
        return int(xp.argmax(self.violation)) if size(self.violation) else -1

    @property
    def ok(self) -> bool:
        """``residual <= tolerance``."""
        return self.residual <= self.tolerance


def certify(penalty: R.Penalty, v, x, step=1.0) -> Certificate:
    """The :class:`Certificate` of ``x`` for ``prox_{step*penalty}(v)`` (no prox is called).

    ``v`` and ``x`` must be arrays of the same library and shape (``x`` as the
    prox returns it: same shape as ``v``); ``penalty`` a registered penalty
    object (:data:`proxlib.OPERATORS`).
    """
    name = _name_of(penalty)
    (eps_v, tiny_v), (eps_x, tiny_x) = _precision(_stored_dtype(v)), _precision(_stored_dtype(x))
    eps, tiny = max(eps_v, eps_x), max(tiny_v, tiny_x)
    v, x, step = _inputs(v, x, step)
    xp = array_namespace(v)
    pieces = [(p, lv, _k.upcast(lv.data, xp), _k.upcast(lx.data, xp), p.thresholds(lv)) for p, lv, lx in _pieces(penalty, v, x)]
    rows = pieces[0][1].rows is not None
    if sum(size(V64) for _, _, V64, _, _ in pieces) == 0:
        return Certificate(xp.zeros(0, dtype=xp.float64), 0.0, 0.0, "rows" if rows else "entries")
    tops = _tops([thr for *_, thr in pieces])
    m = max(max(float(_max(xp.abs(V64), xp)), float(_max(xp.abs(X64), xp))) for _, _, V64, X64, _ in pieces)
    sigma = _normalizer(penalty, m, tops, step)
    viols, terms = [], []
    with _k.errstate(pieces[0][2]):
        for p, _, V64, X64, thr in pieces:
            viol, scale_terms = CERTIFICATES[name](p, V64 * sigma, X64 * sigma, thr, step * sigma, xp)
            viols.append(xp.where(xp.isnan(viol), xp.inf, viol))
            terms.append(scale_terms)
    viol = viols[0] if len(viols) == 1 else xp.concat(viols)
    scale = _scale(terms)
    rel = None
    if sigma != 1.0:
        rel = _ratio(float(_max(viol, xp)), scale)
        viol, scale = viol / sigma, scale / sigma
    shape = _shape([lv for _, lv, *_ in pieces])
    tol = _tolerance(name, shape, eps, scale, _subnormal_slack(name, shape, tops, step, tiny))
    if rows:
        labels = [lv.rows.labels for _, lv, *_ in pieces]
        if len(labels) == 1:
            return Certificate(viol, scale, tol, "rows", labels[0], rel)
        # the pieces' groups back in increasing label order (the padded layout's,
        # as documented): worst and the violation's indices are then the same
        labels = xp.concat(labels)
        order = xp.argsort(labels)
        return Certificate(viol[order], scale, tol, "rows", labels[order], rel)
    return Certificate(viol, scale, tol, "entries", None, rel)


def _pieces(penalty, v, x=None) -> list:
    """``[(penalty, layout of v, layout of x or None)]``: the whole, or for
    ragged ``groups=`` of very different sizes one piece per size class
    (:func:`proxlib._rows.ragged_parts`, as the prox solves them), where the
    padded layout would hold n_groups x largest-group entries.  Every
    condition is a group's own, so the pieces' violations are the whole's,
    and the whole's scale terms are maxima over the pieces (:func:`_scale`)."""
    split = ragged_parts(v, getattr(penalty, "groups", None), name="v")
    if split is None:
        parts = [(penalty, v, x)]
    else:
        labels, idxs = split
        parts = [(replace(penalty, groups=labels[i]), v[i], None if x is None else x[i]) for i in idxs]
    return [(p, R.layout_of(p, a, contiguous=False), None if b is None else R.layout_of(p, b, contiguous=False, name="x"))
            for p, a, b in parts]


def _scale(terms: list) -> float:
    """The scale from each piece's scale terms (a certificate's maxima over
    its blocks, summed): the terms' maxima over the pieces, summed."""
    if len(terms) == 1:
        return float(functools.reduce(operator.add, terms[0]))
    return functools.reduce(operator.add, [max(float(t[i]) for t in terms) for i in range(len(terms[0]))])


def _tops(thresholds: list) -> tuple:
    """Each threshold term's largest value over every piece (floats)."""
    return tuple(max(_top(t[i]) for t in thresholds) for i in range(len(thresholds[0])))


def _shape(layouts: list) -> tuple:
    """The shape of the whole data as the kernels lay it out (for a split,
    the rows of every piece by the longest row)."""
    if len(layouts) == 1:
        return tuple(layouts[0].data.shape)
    return (sum(int(lv.data.shape[0]) for lv in layouts), max(int(lv.data.shape[1]) for lv in layouts))


_TINY_DATA = 2.0**-960  # below this, differences of entries may be subnormal


def _normalizer(penalty, m: float, tops: tuple, step) -> float:
    """A power of two sigma >= 1 that brings data whose largest magnitude is
    below 2^-960 up to [0.5, 1) (to >= 2^-51 from the subnormals; 1 otherwise), for the penalties whose
    conditions are homogeneous of degree 1 in (v, x, step) (norms: OWL,
    GrOWL, group lasso, weighted l1), where neither step * sigma nor step *
    threshold * sigma would pass 2^1000 (sigma is lowered for a large step:
    step * sigma alone overflowed for zero thresholds, e.g. step 2 and data
    near 2^-1023, and gave inf * 0).  Scaling up by a power of two is exact, so the
    conditions are those of the same problem, evaluated with no subnormal
    intermediate (the difference of two tiny entries, a norm of them) losing
    relative precision: the residual is then scale-free to the last bit."""
    if any(d != 1 for d in getattr(penalty, "degrees", (1,))):
        return 1.0
    if not 0.0 < m < _TINY_DATA:
        return 1.0
    # m sigma >= 2^-51 from any subnormal m; step sigma < 2^999
    k = min(1023, -math.frexp(m)[1], 999 - math.frexp(step)[1])
    if k <= 0:
        return 1.0
    sigma = math.ldexp(1.0, k)
    top = max(tops, default=0.0)
    return sigma if step * top * sigma < 2.0**1000 else 1.0


def _ratio(distance: float, scale: float) -> float:
    """distance / scale (0 when both are 0, inf for a violation at scale 0)."""
    if distance == 0.0:
        return 0.0
    if math.isinf(distance):  # also at an infinite scale (a threshold beyond float64)
        return math.inf
    return distance / scale if scale > 0 else math.inf


def optimality_residual(penalty: R.Penalty, v, x, step=1.0) -> float:
    r"""Scale-free distance of ``x`` from ``prox_{step*penalty}(v)``, computed without the prox.

    Returns ``max_B violation_B / scale`` (see the module docstring for what
    each penalty's violation is): 0 at the exact prox, at most
    :func:`residual_tolerance` at a prox computed in floating point, growing
    with the distance of ``x`` from the prox.  For the convex separable and
    block-separable penalties ``residual * scale`` bounds
    ``max_B ||x_B - prox(v)_B||_2``.

    Parameters
    ----------
    penalty : a penalty object (``proxlib.OWL(weights)``, ``proxlib.Lp(lam, p)``, ...)
    v, x : arrays of one library (NumPy, CuPy or torch) and one shape, float32 or float64
    step : float > 0

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> pen = proxlib.WeightedL1(1.0)
    >>> v = np.array([3.0, -0.5])
    >>> proxlib.optimality_residual(pen, v, pen.prox(v))
    0.0
    >>> proxlib.optimality_residual(pen, v, np.array([2.5, 0.0]))  # 0.5 off, scale 3 + 1
    0.125
    """
    return certify(penalty, v, x, step).residual


def subdifferential_distance(penalty: R.Penalty, v, x, step=1.0) -> float:
    """The largest violation of the optimality conditions, in units of ``v``
    (``optimality_residual * scale``; for the convex separable and
    block-separable penalties the largest block distance of ``v - x`` to
    ``step * dOmega(x)``)."""
    return certify(penalty, v, x, step).distance


def residual_tolerance(penalty: R.Penalty, v, step=1.0, dtype=None) -> float:
    """The rounding level of :func:`optimality_residual` at a floating-point prox of ``v``.

    ``16 (N + 1) eps + (64 + g) * (smallest subnormal) / scale`` with ``eps``
    and the smallest subnormal those of ``dtype`` (default: ``v``'s dtype,
    float16 and bfloat16 included, in which proxlib returns their prox; pass
    the result's dtype if it is less precise): a NumPy, CuPy or torch dtype,
    a NumPy scalar type such as ``np.float32``, ``float`` (float64) or a
    name (TypeError for a dtype that is not floating), ``N`` the number of terms summed
    by the penalty's conditions (module docstring) and ``g`` what rounding
    the result to the subnormal grid costs where the conditions amplify it:
    ``(1 + b N) sqrt(N) / 2`` for the exclusive lasso and group+exclusive
    (b = step * the l1^2 threshold; the entries of a row are coupled through
    ``b ||x||_1``), ``(1 + 2 step w) / 2`` for weighted l2^2, 0 otherwise.
    A residual above it means that ``x`` is not the prox to the precision
    the arithmetic allows.
    """
    name = _name_of(penalty)
    eps, tiny = _precision(_stored_dtype(v) if dtype is None else V.float_dtype_name(dtype))
    v = V.as_float_array(v, "v")
    step = V.positive(step, "step")
    xp = array_namespace(v)
    pieces = [(p, lv, _k.upcast(lv.data, xp), p.thresholds(lv)) for p, lv, _ in _pieces(penalty, v)]
    if sum(size(V64) for _, _, V64, _ in pieces) == 0:
        return 0.0
    with _k.errstate(pieces[0][2]):  # (as certify: the violations computed beside the scale may overflow)
        scale = _scale([CERTIFICATES[name](p, V64, V64, thr, step, xp)[1] for p, _, V64, thr in pieces])
    shape = _shape([lv for _, lv, _, _ in pieces])
    slack = _subnormal_slack(name, shape, _tops([thr for *_, thr in pieces]), step, tiny)
    return _tolerance(name, shape, eps, scale, slack)


def has_dual_norm(penalty: R.Penalty) -> bool:
    """Whether ``penalty`` is a norm with a dual norm here (OWL, GrOWL, group lasso, weighted l1)."""
    return _name_of(penalty) in DUAL_NORMS


def dual_norm(penalty: R.Penalty, r) -> float:
    r"""The dual norm :math:`\Omega_*(r) = \max_{\Omega(x) \le 1} \langle r, x\rangle`.

    * OWL: ``max_k sum_{j<=k} |r|_[j] / sum_{j<=k} w_j``;
    * GrOWL: the same over the row norms of ``r``;
    * group lasso: ``max_g ||r_g||_2 / (lam c_g)``;
    * weighted l1: ``max_i |r_i| / w_i``;

    with 0/0 = 0 and c/0 = inf (a zero weight leaves that direction
    unpenalised).  ``r`` has the shape of the penalty's argument.  Raises
    TypeError for a penalty that is not a norm (exclusive lasso, group +
    exclusive, weighted l2^2, lp).

    >>> import numpy as np, proxlib
    >>> proxlib.OWL(np.array([2.0, 1.0])).dual_norm(np.array([1.0, -2.0]))  # max(2/2, 3/3)
    1.0
    """
    name = _name_of(penalty)
    if name not in DUAL_NORMS:
        raise TypeError(f"{type(penalty).__name__} is not a norm: it has no dual norm")
    r = V.as_float_array(r, "r")
    split = ragged_parts(r, getattr(penalty, "groups", None), name="r")
    if split is not None:  # groups of very different sizes (proxlib._rows.ragged_parts): a max over groups
        labels, parts = split
        return max(dual_norm(replace(penalty, groups=labels[idx]), r[idx]) for idx in parts)
    layout = R.layout_of(penalty, r, contiguous=False, name="r")
    if size(layout.data) == 0:
        return 0.0
    xp = array_namespace(r)
    with _k.errstate(layout.data):
        return float(DUAL_NORMS[name](penalty, _k.upcast(layout.data, xp), penalty.thresholds(layout), xp))


# ----------------------------------------------------------------------------- helpers


def _name_of(penalty) -> str:
    if not isinstance(penalty, R.Penalty):
        raise TypeError(f"penalty must be a proxlib penalty object (proxlib.OWL, ...), got {type(penalty).__name__}")
    for name, op in R.OPERATORS.items():
        if type(penalty) is op.penalty:
            return name
    raise TypeError(f"{type(penalty).__name__} is not a registered operator (proxlib.OPERATORS)")


def _inputs(v, x, step):
    v = V.as_float_array(v, "v")
    x = V.as_float_array(x, "x")
    if array_kind(v) != array_kind(x):
        raise TypeError(
            f"v and x must be arrays of one library, got {type(v).__module__.split('.')[0]} and "
            f"{type(x).__module__.split('.')[0]}"
        )
    if tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"x must have v's shape {tuple(v.shape)}, got {tuple(x.shape)}")
    return v, x, V.positive(step, "step")


# dtype name -> (machine epsilon, spacing of the subnormals)
_PRECISION = {
    "float64": (2.0**-52, 2.0**-1074),
    "float32": (2.0**-23, 2.0**-149),
    "float16": (2.0**-10, 2.0**-24),
    "bfloat16": (2.0**-7, 2.0**-133),
}


def _precision(dtype_name: str) -> tuple[float, float]:
    return _PRECISION[dtype_name]


def _stored_dtype(a) -> str:
    """The name of the float dtype that ``a``'s entries are stored in: its own
    for float arrays (half precision included), float64 for anything that
    :func:`proxlib._validate.as_float_array` makes float64 (integers, lists);
    other inputs are refused later, by that function."""
    if V._is_array(a) and V.dtype_kind(a.dtype) == "f":
        dname = V.dtype_name(a.dtype)
        if dname in _PRECISION:
            return dname
    return "float64"


def _terms(name: str, shape: tuple) -> int:
    """N: the number of terms summed by the operator's conditions."""
    if name == "owl":
        return shape[0]
    if name == "growl":
        return shape[0] + shape[1]
    if len(shape) == 2:  # other row operators
        return shape[1]
    return 1


def _tolerance(name, shape, eps, scale, slack) -> float:
    tol = 16 * (_terms(name, shape) + 1) * eps
    return tol + (slack / scale if scale > 0 else 0.0)


def _subnormal_slack(name, shape, tops, step, tiny) -> float:
    """``(64 + g) * tiny``, in units of v: 64 subnormal spacings and ``g``, the
    violation that rounding x to the subnormal grid (half a spacing
    per entry, absolute: no normalizer lifts the degree-2 penalties out of
    the subnormals) can cause where the conditions amplify it, in spacings:
    the exclusive conditions v_i - x_i - b ||x||_1 sign(x_i) couple the N
    entries of a row, each moves by up to (1 + b N) / 2, their row norm by
    sqrt(N) times that; weighted l2^2's v - x - 2 s w x by (1 + 2 s w) / 2.
    g = 0 for the other conditions (unit slope in each entry, or lifted by the
    normalizer: the 64 spacings of the tolerance cover them).  Formed as
    (step * threshold) * tiny, or (step * tiny) * threshold where step *
    threshold overflows (the tolerance was inf or NaN there); not always the
    latter: step * tiny vanished for a float64 step < 1 (0.5 * 2^-1074
    rounds to 0), and g with it."""
    if name in ("exclusive_lasso", "group_exclusive"):
        N = _terms(name, shape)
        return 64 * tiny + 0.5 * math.sqrt(N) * (tiny + N * _times_tiny(step, tops[-1], tiny))
    if name == "weighted_l2sq":
        return 64 * tiny + 0.5 * (tiny + 2.0 * _times_tiny(step, tops[0], tiny))
    return 64 * tiny


def _times_tiny(step, top, tiny) -> float:
    """step * top * tiny with no intermediate overflow or underflow."""
    st = step * top
    return st * tiny if math.isfinite(st) else (step * tiny) * top


def _top(t) -> float:
    """The largest of a threshold (a float, or an array of them)."""
    return t if isinstance(t, float) else float(_max(t, array_namespace(t)))


def _max(a, xp):
    return xp.max(a) if size(a) else xp.asarray(0.0, dtype=xp.float64)


def _safe_div(num, den, xp):
    """num/den with 0/0 = 0 and c/0 = inf (den >= 0, num >= 0)."""
    pos = den > 0
    q = num / xp.where(pos, den, 1.0)
    return xp.where(pos, q, xp.where(num > 0, xp.inf, 0.0))


def _unit_rows(X, nX, xp):
    """Rows of X divided by their norms (zero rows stay zero)."""
    return X / xp.where(nX > 0, nX, 1.0)[:, None]


# ----------------------------------------------------------------------------- the certificates
#
# Each takes (penalty, V, X, thresholds, step, xp) with V and X float64 in the
# penalty's layout (flat vectors or (G, m) rows) and returns (violation per
# block, scale).  When X is V (residual_tolerance) only the scale is used.


def _sorted_l1_conditions(mag_r, q, mag_x, w, s, xp, vmax):
    """The OWL conditions on magnitudes (entries for OWL, rows for GrOWL), per element.

    ``mag_r``: |r_j| (row norms of r); ``q``: r_j sign(x_j) (the component of
    r_j along x_j) where x_j != 0, |r_j| elsewhere; ``mag_x``: |x_j| (row
    norms); ``w``: the weights (non-increasing); ``s`` the step.  Returns,
    per element, the excess of the partial sum of the sorted |r| ending at
    its sorted position over W_k, and the complementarity
    min(a_K - a_{K+1} weighed as below, s |D_K|) at its position in the |x|
    order (module docstring); units of v (s times those of r).  ``vmax``:
    the largest of the magnitudes of ``v``: a gap is closed at the cost
    ``(a_K - a_{K+1}) / vmax`` relative to the data.
    """
    n = mag_r.shape[0]
    W = xp.cumulative_sum(w)
    # (a) dual norm <= 1: partial sums of |r| sorted decreasingly
    pr = xp.argsort(mag_r, descending=True, stable=True)
    excess = xp.maximum(xp.cumulative_sum(mag_r[pr]) - W, 0.0)
    # (b) <r, x> = Omega(x), boundary by boundary of the |x| order
    px = xp.argsort(mag_x, descending=True, stable=True)
    a = mag_x[px]
    a_next = xp.concat([a[1:], xp.zeros(1, dtype=a.dtype, device=device(a))])
    # D_K = W_K - Q_K must vanish wherever the |x| order has a gap: either
    # shift r (by s |D_K| in units of v) or close the gap (a_K - a_{K+1}),
    # whichever is less.  (Weighting |D_K| by the relative gap instead let a
    # near-tie through: two magnitudes 1/16 apart at 2^20 that the prox pools
    # scored 4e-15 with the prox 1/32 away, long-profile example.)
    # The gap is measured against the data's scale vmax (the prox's
    # magnitudes never exceed it), |D_K| against the certificate's: with
    # both against the scale, which adds s * w_1, x = v passed wherever the
    # thresholds dwarf the data (the prox is 0 there).
    # The gap in units of v: d (scale / vmax) = d + (d / vmax) (s w_1), with
    # d = a_K - a_{K+1} <= vmax, so that it overflows only where its value
    # does, and 0 where d is (a tie; inf * 0 was NaN, reported as inf, where
    # s w_1 overflowed or, in units of r, vmax / s did).
    d = a - a_next
    sw1 = s * _max(w, xp)
    gap = xp.where(d > 0, d + (d / xp.where(vmax > 0, vmax, 1.0)) * sw1, 0.0)
    comp = xp.minimum(gap, s * xp.abs(W - xp.cumulative_sum(q[px])))
    out = xp.zeros(n, dtype=xp.float64, device=device(mag_r))
    out[pr] = s * excess
    by_x = xp.zeros(n, dtype=xp.float64, device=device(mag_r))
    by_x[px] = comp
    return xp.maximum(out, by_x)


def _cert_owl(pen, V, X, thr, s, xp):
    w = thr[0]
    vmax = _max(xp.abs(V), xp)
    Rr = (V - X) / s
    q = xp.where(X != 0, Rr * xp.sign(X), xp.abs(Rr))
    return _sorted_l1_conditions(xp.abs(Rr), q, xp.abs(X), w, s, xp, vmax), (vmax, s * _max(w, xp))


def _cert_growl(pen, V, X, thr, s, xp):
    w = thr[0]
    vmax = _max(_k.row_norms(V, xp), xp)
    Rr = (V - X) / s
    nR, nX = _k.row_norms(Rr, xp), _k.row_norms(X, xp)
    U = _unit_rows(X, nX, xp)
    along = xp.sum(Rr * U, axis=1)
    ortho = xp.where(nX > 0, _k.row_norms(Rr - along[:, None] * U, xp), 0.0)
    q = xp.where(nX > 0, along, nR)
    return xp.maximum(_sorted_l1_conditions(nR, q, nX, w, s, xp, vmax), s * ortho), (vmax, s * _max(w, xp))


def _cert_group_lasso(pen, V, X, thr, s, xp):
    a = s * thr[0]
    nV, nX = _k.row_norms(V, xp), _k.row_norms(X, xp)
    on = _k.row_norms(V - X - a[:, None] * _unit_rows(X, nX, xp), xp)
    return xp.where(nX > 0, on, xp.maximum(nV - a, 0.0)), (_max(nV, xp), _max(a, xp))


def _exclusive_part(U, X, t, xp):
    """Per-entry residual of U = v - x against t * d||x||_1 (t = b ||x||_1)."""
    T = t[:, None]
    return xp.where(X != 0, U - T * xp.sign(X), xp.maximum(xp.abs(U) - T, 0.0))


def _coupling(s, c, X, xp):
    """b ||x_g||_1 per row (b = s c), 0 for a zero row also where b overflowed
    to inf, and s (c ||x_g||_1) there for the others (inf * a tiny norm was
    inf: the prox keeps a row of data beyond 2^1024 / b)."""
    b = s * c
    l1 = xp.sum(xp.abs(X), axis=1)
    return xp.where(l1 > 0, xp.where(xp.isinf(b), s * (c * l1), b * l1), 0.0)


def _cert_exclusive_lasso(pen, V, X, thr, s, xp):
    t = _coupling(s, thr[0], X, xp)
    return _k.row_norms(_exclusive_part(V - X, X, t, xp), xp), (_max(_k.row_norms(V, xp), xp),)


def _cert_group_exclusive(pen, V, X, thr, s, xp):
    a = s * thr[0]
    nV, nX = _k.row_norms(V, xp), _k.row_norms(X, xp)
    t = _coupling(s, thr[1], X, xp)
    U = V - X - a[:, None] * _unit_rows(X, nX, xp)
    on = _k.row_norms(_exclusive_part(U, X, t, xp), xp)
    return xp.where(nX > 0, on, xp.maximum(nV - a, 0.0)), (_max(nV, xp), _max(a, xp))


def _cert_weighted_l1(pen, V, X, thr, s, xp):
    t = s * thr[0]
    viol = xp.where(X != 0, xp.abs(V - X - t * xp.sign(X)), xp.maximum(xp.abs(V) - t, 0.0))
    return viol, (_max(xp.abs(V), xp), _max(t, xp))


def _cert_weighted_l2sq(pen, V, X, thr, s, xp):
    w = thr[0]
    # 0 where x is 0, also where 2 s w overflowed to inf (inf * 0 was NaN),
    # and 2 (s (w x)) for the other entries there (inf * x was inf)
    g = (2.0 * s) * w
    return xp.abs(V - X - xp.where(X != 0, xp.where(xp.isinf(g), 2.0 * (s * (w * X)), g * X), 0.0)), (_max(xp.abs(V), xp),)


def _scaled(s: float, lam: float, h):
    """``s * lam * h`` (L = s lam times ``h``), also where ``s * lam``
    overflows but the product does not: then the larger factor meets ``h``
    first (h is |x|^(p-1) or t^(p-1): small where L is huge)."""
    L = s * lam
    if math.isfinite(L):
        return L * h
    return (max(s, lam) * h) * min(s, lam)


def _lp_threshold(L: float, p: float, s: float | None = None, lam: float | None = None) -> float:
    """tau = min_{t>0} t/2 + L t^(p-1), evaluated at the computed minimiser
    t* = (2 L (1-p))^(1/(2-p)): the rounded exponent moves t* by a few eps
    |ln(2L(1-p))|, which changes the value only to second order.  Where
    ``L = s * lam`` overflowed (inf, with ``s`` and ``lam`` given) and p < 1,
    t* = (2 (1-p))^(1/(2-p)) s^(1/(2-p)) lam^(1/(2-p)), finite: the data
    above it keeps its entries."""
    if L == 0.0:
        return 0.0
    if p == 1.0:
        return L
    if math.isinf(L) and s is not None:
        e = 1.0 / (2.0 - p)
        t = (2.0 * (1.0 - p)) ** e * s**e * lam**e
        if math.isinf(t):  # (tau = t (2-p) / (2 (1-p)) >= t)
            return math.inf
        return t / 2.0 + _scaled(s, lam, t**p / t)
    t = (2.0 * L * (1.0 - p)) ** (1.0 / (2.0 - p))
    if not (t > 0 and math.isfinite(t)):  # pragma: no cover - extreme ranges: the closed form
        return (2.0 - p) / (2.0 * (1.0 - p)) * (2.0 * L * (1.0 - p)) ** (1.0 / (2.0 - p))
    return t / 2.0 + L * (t**p / t)


def _cert_lp(pen, V, X, thr, s, xp):
    lam, p = thr[0], pen.p
    L = s * lam
    aV, aX = xp.abs(V), xp.abs(X)
    on = X != 0
    safe = xp.where(on, aX, 1.0)
    # L |x|^(p-1) formed as L (|x|^p / |x|): p is the caller's exact float;
    # 0 for L = 0 (|x|^(p-1) overflows for subnormal x: 0 * inf was NaN),
    # L / |x| for p = 0 (finite wherever the value is), and s lam |x|^(p-1)
    # where s lam overflows (_scaled; inf was reported for a correct prox)
    if L == 0.0:
        q = 0.0 * aX
    elif p == 0.0:
        q = _scaled(s, lam, 1.0 / safe)
    else:
        q = _scaled(s, lam, safe**p / safe)
    stationarity = xp.abs(X - V + (p * q) * xp.sign(X)) if p != 0.0 else xp.abs(X - V)
    above_zero = xp.maximum(0.5 * aX - xp.sign(X) * V + q, 0.0)  # (f(x) - f(0)) / |x| <= 0
    off = xp.maximum(aV - _lp_threshold(L, p, s, lam), 0.0)
    return xp.where(on, xp.maximum(stationarity, above_zero), off), (_max(aV, xp),)


#: Each takes (penalty, V, X, thresholds, step, xp) on the kernels' layout and
#: returns the violation of each block (entry or row) and the scale as the
#: terms that it sums, each a maximum over the blocks (:func:`_scale`).
CERTIFICATES: dict[str, Callable] = {
    "owl": _cert_owl,
    "growl": _cert_growl,
    "group_lasso": _cert_group_lasso,
    "exclusive_lasso": _cert_exclusive_lasso,
    "group_exclusive": _cert_group_exclusive,
    "weighted_l1": _cert_weighted_l1,
    "weighted_l2sq": _cert_weighted_l2sq,
    "lp": _cert_lp,
}
"""Registry name -> certificate (every entry of :data:`proxlib.OPERATORS` has one)."""


# ----------------------------------------------------------------------------- dual norms


def _dual_sorted(mags, w, xp):
    C = xp.cumulative_sum(_k.sort_magnitudes_desc(mags, xp))
    return _max(_safe_div(C, xp.cumulative_sum(w), xp), xp)


def _dual_owl(pen, r, thr, xp):
    return _dual_sorted(xp.abs(r), thr[0], xp)


def _dual_growl(pen, r, thr, xp):
    return _dual_sorted(_k.row_norms(r, xp), thr[0], xp)


def _dual_group_lasso(pen, r, thr, xp):
    return _max(_safe_div(_k.row_norms(r, xp), thr[0], xp), xp)


def _dual_weighted_l1(pen, r, thr, xp):
    return _max(_safe_div(xp.abs(r), thr[0], xp), xp)


DUAL_NORMS: dict[str, Callable] = {
    "owl": _dual_owl,
    "growl": _dual_growl,
    "group_lasso": _dual_group_lasso,
    "weighted_l1": _dual_weighted_l1,
}
"""Registry name -> dual norm, for the penalties that are norms."""
