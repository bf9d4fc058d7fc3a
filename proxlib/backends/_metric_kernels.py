r"""Proximal operators in a diagonal metric, written once against the array API.

Every kernel here solves, for a metric ``d > 0`` of the data's shape,

.. math::

    x = \arg\min_x \tfrac12 \sum_i d_i (x_i - v_i)^2 + \Omega(x)

with the thresholds of ``Omega`` already multiplied by the step (the kernel
contract of :mod:`proxlib.backends`).  This is the proximal step of a method
preconditioned by ``diag(d)`` (Adam: ``d = sqrt(v_hat) + eps``, the update
``w - lr m_hat / d`` followed by the prox of ``lr * Omega`` in the metric
``d``).  With ``d`` constant it is the Euclidean prox with the thresholds
divided by ``d``.

Like :mod:`._xp_kernels` (whose pieces these kernels reuse) the code runs on
NumPy, CuPy and torch through ``xp = array_namespace(W)``, computes in
float64 and rounds once to the data's dtype.  Arrays never leave the device;
the loops read one scalar per iteration (named in each docstring).

Scaling.  Each row r is scaled by two powers of two (exact): the data by
``sv`` (max |v_r| / sv in [1, 2)) and the metric by ``sd`` (max d_r / sd in
[1, 2)).  With ``x = sv y`` and ``d = sd d'`` the row problem becomes
``sv^2 sd (1/2 sum d' (y - v/sv)^2 + (a / (sv sd)) ||y||_2 + (b / sd)/2 ||y||_1^2)``,
so the group threshold divides by ``sv sd`` and the exclusive one by ``sd``;
nothing is squared or summed outside [0, 16 m].

Kernels (``W``, ``D`` of shape (G, m); ``v``, ``d`` flat; thresholds as in
:data:`proxlib.backends.KERNELS`):

=============================  =============================================
``weighted_l1_metric(v, d, w)``     ``x_i = sign(v_i) (|v_i| - w_i / d_i)_+``
``weighted_l2sq_metric(v, d, w)``   ``x_i = v_i / (1 + 2 w_i / d_i)``
``lp_metric(v, d, lam, p)``         lp prox with ``lam_i = lam / d_i`` per entry
``group_lasso_metric(W, D, a)``     ``+ a_r ||x_r||_2``: one monotone root per row
``exclusive_lasso_metric(W, D, b)`` ``+ b_r/2 ||x_r||_1^2``: exact by breakpoints
``group_exclusive_metric(W, D, a, b)``  both: one monotone root per row over
                                    an exact breakpoint solve
=============================  =============================================
"""

from __future__ import annotations

import math

from .._dispatch import array_namespace, device
from .._range import _FMAX, mul_pow2
from . import KERNELS
from . import _xp_kernels as _k
from ._xp_kernels import errstate, row_scale, signed_like, upcast

__all__ = [name for name in KERNELS if name.endswith("_metric")]

_MAX_ROOT_ITER = 300

#: Who runs the row operators in a metric on torch tensors: ``"triton"``:
#: Triton kernels (:mod:`._triton_metric`) for any torch tensor (off CUDA in
#: Triton's interpreter): :func:`group_exclusive_metric` whole (so also
#: :func:`group_lasso_metric` and :func:`exclusive_lasso_metric`, its cases)
#: in one launch and no host read, where the array code makes a hundred and
#: more operations and its root searches a dozen a step with a read every
#: four steps (the same result to the accuracy of the row sums), and, where
#: that kernel does not take the data (float16), the root search of
#: :func:`_group_lasso_s`; ``"auto"``: on CUDA tensors only; ``"array"``
#: (the default until the compiled kernels have run on a GPU: the tests
#: compile them for sm_90, ``benchmarks/gpu_session.sh`` runs them there).
METRIC_ROWS = "array"
_EPS = 2.0**-52
_TINY = 2.0**-1074  # the smallest positive float64
_DROP = 2.0**-64  # bracketing towards 0: one step divides the upper end by 2^64


# ------------------------------------------------------------------ separable


def weighted_l1_metric(v, d, w):
    r"""argmin 1/2 sum_i d_i (x_i - v_i)^2 + sum_i w_i |x_i|
    = sign(v) (|v| - w/d)_+ (each entry alone: soft thresholding at w_i/d_i).

    ``w`` (n,) or (1,); ``w / d`` is formed in float64 (capped at the
    largest float64 where it overflows: then x_i = 0, and an unchecked +-inf
    entry passes through as without a metric, where inf - inf gave NaN)."""
    xp = array_namespace(v)
    with errstate(v):
        t = xp.clip(upcast(w, xp) / upcast(d, xp), max=_FMAX["float64"])  # (not minimum: array-api-compat copies the bound to the device)
    return xp.astype(_k.weighted_l1(upcast(v, xp), t), v.dtype, copy=False)


def weighted_l2sq_metric(v, d, w):
    r"""argmin 1/2 sum_i d_i (x_i - v_i)^2 + sum_i w_i x_i^2
    = d v / (d + 2 w) = v / (1 + 2 w/d).

    With t = w / d, formed as (v / 2) / (1/2 + t): v / (1 + 2 t) halved
    above and below, so no 2 t overflows (1/2 + t rounds to half of what
    1 + 2 t rounds to; the same bits as v / (1 + 2 t) wherever 1 + 2 t is
    finite, except for |v| < 2^-1021, whose half may round: a subnormal
    result within an ulp).  Where t itself overflows (then
    d <= w 2^-1024 <= 1), v d / (2 w) (to a relative 2^-1024) formed as
    (v ((d 2^1021) / w)) 2^-1022, in which nothing over- or underflows
    before the result does (the rounded quotient is at most 1/2; a few ulps
    of a subnormal result where w / d > 2^2043).  An unchecked +-inf or NaN
    entry passes through.  Elementwise: no host read (a device is not
    waited for)."""
    xp = array_namespace(v)
    v64 = upcast(v, xp)
    with errstate(v):
        w64, d64 = upcast(w, xp), upcast(d, xp)
        t = w64 / d64
        X = xp.where(t < math.inf, (v64 * 0.5) / (t + 0.5), (v64 * ((d64 * 2.0**1021) / w64)) * 2.0**-1022)
    return xp.astype(X, v.dtype, copy=False)


def _sqrt2x(t, xp):
    """sqrt(2 t) without overflow of 2 t."""
    return xp.where(t <= 2.0**1022, xp.sqrt(2.0 * t), 2.0 * xp.sqrt(0.5 * t))


def _lp_at_scale(li, lam, d64, p, xp):
    """(lam_s, k): per entry, lam_i = lam / d_i as ``lam_s 2^(k (2 - p))``
    with ``2^k`` the scale of the entry's problem (the scaling of
    :func:`proxlib._range._solve_lp`, one k per entry).

    lp is homogeneous: prox_{lam}(v) = 2^k prox_{lam 2^(k (p - 2))}(v 2^-k).
    Where lam / d_i lies in [2^-1000, 2^1000] (``li``, the rounded quotient)
    k = 0 and lam_s = li, the same bits; elsewhere -- also where the quotient
    overflows to inf or underflows to 0, while the threshold, of order
    lam_i^(1/(2-p)), is a float like any other -- k is about log2(lam_i) /
    (2 - p), and lam_s = (m_lam / m_d) 2^q with q = e_lam - e_d - k (2 - p)
    in [-1, 1] formed exactly (k (2 - p) as an exact pair), so lam_s is
    rounded a few times near 1 instead of over- or underflowing."""
    lam64 = upcast(lam, xp) if hasattr(lam, "shape") else xp.full_like(d64, lam)
    ml, el = xp.frexp(lam64)
    md, ed = xp.frexp(d64)
    E = xp.astype(el, xp.float64) - xp.astype(ed, xp.float64)
    out = ~((li >= _LP_LO) & (li <= _LP_HI)) & (lam64 > 0)  # (a zero lam: x = v, as it is)
    k = xp.where(out, xp.round(E / (2.0 - p)), 0.0)
    hi, lo = two_product(k, xp.full_like(k, 2.0 - p), xp)
    q = (E - hi) - lo  # E - hi is exact (both near each other, hi a multiple of 2^-41)
    qi = xp.floor(q)
    lam_s = mul_pow2((ml / md) * 2.0 ** (q - qi), qi)
    return xp.where(out, lam_s, li), k


_LP_LO, _LP_HI = 2.0**-1000, 2.0**1000  # as proxlib._range's: lam that lp's kernel takes as it is


def lp_metric(v, d, lam, p):
    r"""argmin 1/2 sum_i d_i (x_i - v_i)^2 + lam sum_i |x_i|^p, 0 <= p <= 1.

    Separable, and dividing entry i's objective by d_i > 0 leaves its
    minimiser unchanged: entry i is the global lp prox of v_i with parameter
    lam_i = lam / d_i (:func:`._xp_kernels.lp_solve`, the algorithm of
    :func:`._xp_kernels.lp` with one lam per entry; ties at the threshold go
    to 0 as there).  p = 0: hard thresholding at sqrt(2 lam_i); p = 1: soft
    thresholding at lam_i.  For p < 1 an entry whose lam_i lies outside
    [2^-1000, 2^1000] (or over- or underflows) is solved at the scale 2^k
    that brings it near 1 (:func:`_lp_at_scale`, as the Euclidean operator
    does for such a lam): its threshold ~ lam_i^(1/(2-p)) is in range where
    lam_i is not (v = 1e200 with lam_i = 1e310 and p = 0 keeps v: the
    threshold is 1.4e155).  Entries that would overflow at that scale are far
    above the threshold and returned as they are, entries that underflow are
    far below it and become 0.  Host synchronisation: one scalar read per
    Newton step.  ``lam`` may also be an array of v's shape (one lam > 0 per
    entry: a batch of terms' entries concatenated), with the same operations
    on each entry.
    """
    xp = array_namespace(v)
    if not hasattr(lam, "shape") and lam == 0:
        return xp.asarray(v, copy=True)
    v64 = upcast(v, xp)
    av = xp.abs(v64)
    with errstate(v):
        d64 = upcast(d, xp)
        li = _k.quotient(lam, d64, xp)  # inf where it overflows: x_i = 0 (p = 1)
        if p == 1:
            X = _k.weighted_l1(v64, li)
            X = xp.where(av < math.inf, X, v64)  # NaN and +-inf pass through, as lp_solve passes them
            return xp.astype(X, v.dtype, copy=False)
        li, k = _lp_at_scale(li, lam, d64, p, xp)
        # entries far above the threshold, which would overflow at their scale, stay as they are
        big = av >= mul_pow2(xp.full_like(k, 2.0**1020), k)
        vs = mul_pow2(xp.where(big, 0.0, v64), -k)
        avs = xp.abs(vs)
        if p == 0:
            X = xp.where(avs > _sqrt2x(li, xp), v64, 0.0)
            X = xp.where(big | ~(av < math.inf), v64, X)  # NaN and +-inf pass through
            return xp.astype(X, v.dtype, copy=False)
        # tau = (2-p)/(2(1-p)) (2 lam (1-p))^(1/(2-p)) and
        # beta = (lam p (1-p))^(1/(2-p)), with lam^(1/(2-p)) apart so that
        # nothing overflows (lam^r <= lam for lam >= 1); tau only
        # pre-selects (with a margin) and beta bounds the convex branch
        r = 1.0 / (2.0 - p)
        lr = li**r
        tau = ((2.0 - p) / (2.0 * (1.0 - p)) * (2.0 * (1.0 - p)) ** r) * lr
        beta = (p * (1.0 - p)) ** r * lr
        Xs = _k.lp_solve(vs, avs, li, p, tau, beta, xp)  # (it passes NaN and +-inf through)
        X = xp.where(big | ~(av < math.inf), v64, mul_pow2(Xs, k))
    return xp.astype(X, v.dtype, copy=False)


# ------------------------------------------------------------------ rows: common


def _scaled_rows(W, D, xp):
    """(W64, V, sv, Dn, sd): W in float64, and |W| / sv and D / sd per row
    (powers of two), float64."""
    W64 = upcast(W, xp)
    A = xp.abs(W64)
    sv = row_scale(A, xp)
    D64 = upcast(D, xp)
    sd = row_scale(D64, xp)
    return W64, A / sv[:, None], sv, D64 / sd[:, None], sd


def _divided_by_both(a, sv, sd, xp):
    """a / (sv sd) rounded once, for powers of two sv, sd > 0.

    One division by the product where the product is a (finite, non-zero)
    float64: exact up to the result's own rounding.  Where it is not, sv and
    sd are both large or both small, so each division moves a the same way
    and ``(a / sv) / sd`` passes through values between a and the result.
    Dividing by sv and then by sd always would underflow in between where
    they pull apart (data near 2^750 with a metric near 2^-740: a / sv
    subnormal), and the threshold, hence the prox, would change with an
    exact rescaling of the problem."""
    p = sv * sd
    return xp.where(xp.isfinite(p) & (p > 0), a / p, (a / sv) / sd)


def _root(g_and_slope, left, right, xp, c=None, check_every=1):
    """The root of an increasing function on each row's bracket [left, right]
    (g(left) <= 0 <= g(right)), by Newton's method safeguarded by bisection,
    until the bracket cannot shrink in floating point or g = 0.

    ``g_and_slope(c)`` returns (g(c), g'(c)) per row.  Bisection is geometric
    while right > 4 left > 0, and divides ``right`` by 2^64 while left = 0, so
    a root anywhere in (0, 4] is bracketed within a factor 2 in at most ~30
    steps; then Newton converges.  A row stops at the step where its next
    point repeats its point, g = 0, or leaves the open bracket (then that
    point is its result), and stays there: each row's result is what it
    would be alone, whatever the other rows and however often the host
    checks.  One scalar read every ``check_every`` iterations (1: the host's
    choice, no iteration wasted; a device's: 4, see
    :func:`group_exclusive_metric`).
    """
    if c is None:
        c = 0.5 * (left + right)
    stopped = xp.zeros(c.shape, dtype=xp.bool, device=device(c))
    for it in range(_MAX_ROOT_ITER):
        g, slope = g_and_slope(c)
        neg = g < 0
        left = xp.where(neg, c, left)
        right = xp.where(neg, right, c)
        with errstate(c):
            newton = c - g / slope
            geo = xp.sqrt(left) * xp.sqrt(right)
        half = xp.where(
            left > 0,
            xp.where(right > 4.0 * left, geo, 0.5 * (left + right)),
            xp.clip(right * _DROP, min=_TINY),
        )
        ok = (newton > left) & (newton < right)
        nxt = xp.where(ok, newton, half)
        done = (nxt == c) | (g == 0)
        c = xp.where(done | stopped, c, nxt)
        stopped = stopped | done | ~((left < nxt) & (nxt < right))
        if it % check_every == check_every - 1 and bool(xp.all(stopped)):
            break
    return c


# ------------------------------------------------------------------ group lasso


def _group_lasso_s(V, Dn, a, xp, check_every=1):
    """s = ||x||_2 (scaled) of the group-lasso prox in the metric Dn, per row
    with ||Dn V|| > a > 0.

    Optimality on x != 0: Dn_i (x_i - v_i) + a x_i / s = 0, so
    x_i = v_i s / (s + mu_i) with mu_i = a / Dn_i, and s solves
    psi(s) = 1 / ||v_i / (s + mu_i)||_2 = 1.  psi increases and is concave
    (the trust-region secular function of More & Sorensen), with
    (s + mu_min)/||v|| <= psi(s) <= (s + mu_max)/||v||; and from
    ||Dn v|| / (d_max s + a) <= ||w(s)|| <= ||Dn v|| / (d_min s + a),
    the root lies in [max(||v|| - mu_max, (||Dn v|| - a)/d_max, 0),
    min(||v|| - mu_min, (||Dn v|| - a)/d_min)] (widened by a few units in the
    last place for the rounding of the bounds).  psi'(s) = sum w_i^2/(s + mu_i) / ||w||^3.
    With d constant the bracket is the single point ||v|| - mu (psi is linear).
    On torch tensors the search can run as one Triton kernel (``METRIC_ROWS``).
    """
    with errstate(V):
        mu = a[:, None] / Dn
        nv = xp.sqrt(xp.sum(V * V, axis=1))
        Z = Dn * V
        nz = _k.row_norms(Z, xp)  # (Z's squares underflow where Dn spans beyond 2^500 or so)
        dmin = xp.min(Dn, axis=1)
        dmax = xp.max(Dn, axis=1)
        lo = xp.clip(xp.maximum(nv - xp.max(mu, axis=1), (nz - a) / dmax), min=0.0) * (1.0 - 8 * _EPS)
        hi = xp.minimum(nv - xp.min(mu, axis=1), (nz - a) / dmin) * (1.0 + 8 * _EPS)
        hi = xp.minimum(hi, nv)
    tm = _k._triton_module(V, METRIC_ROWS, "_triton_metric")
    if tm is not None:  # the search below in one launch
        return tm.group_lasso_roots(V, Dn, a, lo, hi, _MAX_ROOT_ITER), mu

    # two buffers of V's shape serve every step, written in place (the same
    # operations, so the same bits, as fresh arrays: on NumPy each fresh
    # array of a large layer costs its page faults, 2-5x the arithmetic);
    # the ones are copied in (a Python 1.0 assigned to a torch tensor is first
    # copied to its device)
    ones = xp.ones_like(V)
    r = xp.empty_like(V)
    w2 = xp.empty_like(V)

    def g_and_slope(s):
        nonlocal r, w2  # (augmented assignments rebind the names, to the same arrays)
        with errstate(s):
            r[...] = ones
            w2[...] = s[:, None]
            w2 += mu
            r /= w2  # 1 / (s + mu)
            w2[...] = V
            w2 *= r
            w2 *= w2  # (v / (s + mu))^2
            nw = xp.sqrt(xp.sum(w2, axis=1))
            r *= w2  # v^2 / (s + mu)^3
            return 1.0 / nw - 1.0, xp.sum(r, axis=1) / (nw * nw * nw)

    return _root(g_and_slope, lo, hi, xp, c=lo, check_every=check_every), mu


def _group_lasso_rows(V, Dn, a_s, b_s, xp, check_every=1):
    """|x| (scaled) of the group-lasso metric prox on rows with a_s > 0 and
    ||Dn V|| > a_s (see :func:`_group_lasso_s`; ``b_s`` is not used)."""
    s, mu = _group_lasso_s(V, Dn, a_s, xp, check_every)
    with errstate(V):
        return V * (s[:, None] / (s[:, None] + mu))


def group_lasso_metric(W, D, a, gather=True):
    r"""Exact prox of a_r ||x_r||_2 per row in the metric D:

    .. math:: x_r = \arg\min_x \tfrac12 \sum_i D_{ri} (x_i - w_{ri})^2 + a_r \|x\|_2 .

    x_r = 0 iff ||D_r * w_r||_2 <= a_r (the subgradient condition at 0).
    Otherwise x_i = D_i w_i / (D_i + a/s) with s = ||x_r||_2 the unique root
    of a monotone scalar equation (:func:`_group_lasso_s`), found by Newton's
    method safeguarded by bisection to the last bit.  a = 0 gives w; a = inf
    gives 0.  (The a > 0, b = 0 case of :func:`group_exclusive_metric`, whose
    ``gather`` says where the host is synchronised, and whose Triton kernel
    solves it on torch tensors with ``METRIC_ROWS``.)
    """
    xp = array_namespace(W)
    tm = _whole_operator_kernel(W, D)
    if tm is not None:  # (b = 0 read by every row: nothing formed)
        return tm.group_exclusive_metric(W, D, a, tm.zero(W.device), _MAX_ROOT_ITER)
    return group_exclusive_metric(W, D, a, xp.zeros_like(upcast(a, xp)), gather)


# ------------------------------------------------------------------ exclusive lasso


_SPLIT = 134217729.0  # 2^27 + 1 (Dekker)


def two_product(a, b, xp):
    """(p, q) with p = fl(a b) and p + q = a b exactly (Dekker's TwoProduct,
    no fused multiply-add), for float64 arrays with |a|, |b| < 2^995 (here the
    scaled rows: below 4) and products clear of the subnormal range."""

    def split(x):
        c = _SPLIT * x
        hi = c - (c - x)
        return hi, x - hi

    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _sorted_magnitudes(V, Dn, xp):
    """z = Dn V as exact pairs (Z, Zlo) and the rows sorted by z decreasingly:
    (Z, Zlo, Y, Ylo, Ds) with Y + Ylo the sorted z and Ds the metric alike.

    Why the pairs: x_i = (z_i - theta)_+ / e_i is a difference of numbers close
    to z when b is large (x ~ z / (b H)); a rounded product z would carry an
    error eps z into x, i.e. eps z / x relative.  With z exact the differences
    z_i - z_j are formed to eps relative, as the Euclidean kernel forms
    |w_i| - |w_j| (exactly)."""
    Z, Zlo = two_product(Dn, V, xp)
    first = xp.argsort(Zlo, axis=1, descending=True, stable=True)  # ties of Z broken by Zlo
    second = xp.argsort(xp.take_along_axis(Z, first, axis=1), axis=1, descending=True, stable=True)
    order = xp.take_along_axis(first, second, axis=1)
    Y, Ylo, Ds = (xp.take_along_axis(A, order, axis=1) for A in (Z, Zlo, Dn))
    return Z, Zlo, Y, Ylo, Ds


def metric_shifted_sums(Y, Ylo, H, xp):
    """F_j = sum_{i<=j} (z_i - z_j) / e_i for z = ``Y + Ylo`` sorted decreasingly
    and ``H`` the cumulative sums of 1/e in the same order (per row).

    By the recurrence F_j = F_{j-1} + (z_{j-1} - z_j) H_{j-1}: a cumulative sum
    of non-negative terms (the metric form of :func:`._xp_kernels.shifted_sums`,
    whose e_i = 1 gives H_{j-1} = j - 1), accurate where S_j - z_j H_j would
    cancel; each difference is formed from the exact pairs.  Non-decreasing in
    j; a zero difference contributes 0 even where H is infinite.
    """
    diff = (Y[:, :-1] - Y[:, 1:]) + (Ylo[:, :-1] - Ylo[:, 1:])
    with errstate(Y):
        inc = xp.where(diff > 0, diff * H[:, :-1], 0.0)
    return xp.cumulative_sum(inc, axis=1, include_initial=True)


def _exclusive_parts(Y, Ylo, E, beta, xp):
    """Support and threshold of the exclusive equation with weights 1/E.

    For magnitudes z (``Y + Ylo``: sorted decreasingly) and e_i > 0 (``E``,
    same order), |x_i| = (z_i - theta)_+ / e_i with theta = beta ||x||_1: the
    root of theta = beta sum_i (z_i - theta)_+ / e_i, whose right side
    decreases (piecewise linearly) in theta.  On the support {top k},
    theta = beta S_k / (1 + beta H_k) with S_k = sum_{i<=k} z_i/e_i and
    H_k = sum_{i<=k} 1/e_i; entry j is in the support iff z_j > beta F_j
    (:func:`metric_shifted_sums`), a prefix condition exactly as in the
    Euclidean kernel (:func:`._xp_kernels.exclusive_support`).  Returns
    (Y_k, Ylo_k, e, H_k) with e = (z_k - beta F_k)/(1 + beta H_k) = z_k - theta > 0,
    so that z_i - theta = ((Y_i - Y_k) + (Ylo_i - Ylo_k)) + e, without cancellation
    (:func:`_above_threshold`).
    """
    rows = xp.arange(Y.shape[0], device=device(Y))
    with errstate(Y):
        H = xp.cumulative_sum(1.0 / E, axis=1)
        F = metric_shifted_sums(Y, Ylo, H, xp)
        k, Yk, Fk = _k.exclusive_support(Y, beta, F, xp)
        kk = xp.clip(k, min=1) - 1
        Hk, Ylok = H[rows, kk], Ylo[rows, kk]
        e = ((Yk - beta * Fk) + Ylok) / (1.0 + beta * Hk)
    return Yk, Ylok, e, Hk


def _above_threshold(Z, Zlo, Yk, Ylok, e, xp):
    """(z_i - theta)_+ from the exact pairs z = Z + Zlo and theta = z_k - e:
    (z_i - z_k) + e on the support (z_i >= z_k, the pairs compared as
    exact values), 0 off it.  Off the support the formula itself could
    round above 0 where theta is far below z_k (small b): z = 1.7e-16 < theta
    = 1.9e-16 with z_k = 1.9 gave (z - z_k) + e = 2.2e-16."""
    Yk, Ylok = Yk[:, None], Ylok[:, None]
    on = (Z > Yk) | ((Z == Yk) & (Zlo >= Ylok))
    with errstate(Z):
        return xp.where(on, xp.clip(((Z - Yk) + (Zlo - Ylok)) + e[:, None], min=0.0), 0.0)


def _exclusive_rows(V, Dn, a_s, b_s, xp, check_every=1):
    """|x| (scaled) of the exclusive-lasso metric prox, rows with 0 < b_s < inf
    (``a_s`` and ``check_every`` are not used: no iteration)."""
    Z, Zlo, Y, Ylo, Ds = _sorted_magnitudes(V, Dn, xp)
    Yk, Ylok, e, _ = _exclusive_parts(Y, Ylo, Ds, b_s, xp)
    r = _above_threshold(Z, Zlo, Yk, Ylok, e, xp)
    # Dn underflows to 0 only for a metric spanning more than 2^1074 in a row;
    # there z = 0 < theta and the limit is x = 0
    with errstate(V):
        return xp.where(Dn > 0, r / Dn, 0.0)


def exclusive_lasso_metric(W, D, b, gather=True):
    r"""Exact prox of b_r/2 ||x_r||_1^2 per row in the metric D:

    .. math:: x_r = \arg\min_x \tfrac12 \sum_i D_{ri} (x_i - w_{ri})^2 + \tfrac{b_r}{2} \|x\|_1^2 .

    With z_i = D_i |w_i| and L = ||x||_1 the optimality conditions read
    D_i (|x_i| - |w_i|) + b L = 0 on the support and z_i <= b L off it, so
    |x_i| = (z_i - b L)_+ / D_i and L is the root of the monotone piecewise-
    linear equation L = sum_i (z_i - b L)_+ / D_i.  Sorting z decreasingly
    gives the support (a prefix) and b L = b S_k / (1 + b H_k) exactly, with
    S_k = sum_{i<=k} |w_i| and H_k = sum_{i<=k} 1/D_i (:func:`_exclusive_parts`).
    O(m log m) per row; no iteration.  b = 0 gives w, b = inf gives 0.
    (The a = 0 case of :func:`group_exclusive_metric`, whose Triton kernel
    solves it on torch tensors with ``METRIC_ROWS``.)
    """
    xp = array_namespace(W)
    tm = _whole_operator_kernel(W, D)
    if tm is not None:  # (a = 0 read by every row: nothing formed)
        return tm.group_exclusive_metric(W, D, tm.zero(W.device), b, _MAX_ROOT_ITER)
    return group_exclusive_metric(W, D, xp.zeros_like(upcast(b, xp)), b, gather)


# ------------------------------------------------------------------ group + exclusive


def _group_exclusive_rows(V, Dn, a_s, b_s, xp, check_every=1):
    r"""|x| (scaled) of the group+exclusive metric prox on rows with
    ||Dn V|| > a_s > 0 and 0 < b_s < inf.

    Optimality on x != 0 (s = ||x||_2, L = ||x||_1, t = a/s, z = Dn |v|):
    (Dn_i + t) |x_i| = (z_i - b L)_+.  For a fixed t this is the exclusive
    equation with weights e_i = Dn_i + t, solved exactly by breakpoints
    (:func:`_exclusive_parts`; the order of z does not depend on t, so the
    rows are sorted once): x(t) is the minimiser of
    1/2 sum Dn (x - v)^2 + t/2 ||x||_2^2 + b/2 ||x||_1^2, whose norm decreases
    in t.  The outer equation is psi(s) = s / ||x(a/s)||_2 = 1, with psi
    increasing (t ||x(t)|| increases in t: every t |x_i(t)| does); psi >= 1
    at s = min(||v||, (||Dn v|| - a)/d_min) since |x_i(t)| <= z_i/(d_i + t).
    On a fixed support, with P = sum x_i/(d_i + t),
    psi'(s) = (sum x_i^2 d_i/(d_i + t) + t b P^2/(1 + b H_k)) / ||x||^3 > 0,
    no cancellation; Newton safeguarded by bisection (:func:`_root`) runs to
    the last bit.  Every x_i = ((z_i - Y_k) + e)/(d_i + t) is formed from
    positive terms, so x is accurate relative to itself also when b is huge.
    """
    G = V.shape[0]
    Z, Zlo, Y, Ylo, Ds = _sorted_magnitudes(V, Dn, xp)
    with errstate(V):
        nv = xp.sqrt(xp.sum(V * V, axis=1))
        nz = _k.row_norms(Z, xp)
        hi = xp.minimum(nv, (nz - a_s) / xp.min(Dn, axis=1) * (1.0 + 8 * _EPS))
    lo = xp.zeros(G, dtype=V.dtype, device=device(V))

    def x_sorted(s):
        t = a_s / s
        E = Ds + t[:, None]
        Yk, Ylok, e, Hk = _exclusive_parts(Y, Ylo, E, b_s, xp)
        return _above_threshold(Y, Ylo, Yk, Ylok, e, xp) / E, E, t, Hk

    def g_and_slope(s):
        # x is formed relative to itself, and may lie far below the row's
        # scale (x ~ z / (b H): 1e-201 at b / d = 1e200), where its squares
        # underflow: so the sums are formed of x / r, r the power of two of
        # max x per row (the same bits where nothing underflows), and the
        # product t b P^2 as (t P)(b P), t and b both being huge there
        with errstate(s):
            Xs, E, t, Hk = x_sorted(s)
            r = row_scale(Xs, xp)[:, None]
            Xr = Xs / r
            nr = xp.sqrt(xp.sum(Xr * Xr, axis=1))
            P = xp.sum(Xr / E, axis=1)
            num = xp.sum(Xr * Xr * Ds / E, axis=1) + (t * P) * (b_s * P) / (1.0 + b_s * Hk)
            return s / (nr * r[:, 0]) - 1.0, num / (r[:, 0] * (nr * nr * nr))

    s = _root(g_and_slope, lo, hi, xp, c=hi, check_every=check_every)
    with errstate(V):
        t = a_s / s
        Yk, Ylok, e, _ = _exclusive_parts(Y, Ylo, Ds + t[:, None], b_s, xp)
        return _above_threshold(Z, Zlo, Yk, Ylok, e, xp) / (Dn + t[:, None])


def _whole_operator_kernel(W, D):
    """:mod:`._triton_metric` where its kernel solves the whole operator on
    ``W`` in the metric ``D`` (``METRIC_ROWS``, and data it takes), else None."""
    tm = _k._triton_module(W, METRIC_ROWS, "_triton_metric")
    return tm if tm is not None and tm.fits(W, D) else None


# :func:`_saturated`'s bounds (numba_cpu's and _triton_metric's row code repeat them)
_SATURATED_B = 2.0**600
_SATURATED_ALWAYS = 2.0**900
_SATURATED_A = 2.0**-500


def _saturated(a_s, b_s):
    r"""Which rows are solved by saturation: b_s = b / sd beyond 2^600 where
    a_s = a / (sv sd) is 0 or at least 2^-500, beyond 2^900 where it lies
    between (sv, sd: the powers of two of max|w| and max d, so that the
    scaled rows v = |w| / sv, d / sd and z = d|v| / sd lie below 2, 2, 4).

    Saturation: b x tends to y, the minimiser of
    -<y, z> + a ||y||_2 + 1/2 ||y||_1^2 (z = d|v|) perturbed by
    sum d y^2 / (2 b), so the row is solved with b 2^-shift in [2^599, 2^600)
    and its result multiplied by 2^-shift (:mod:`proxlib._range`'s degree-2
    saturation).  That is the row's solution to about 2^-90 relative where
    the perturbation (curvature below 2^-598) is dwarfed: by the curvature
    a / ||y|| > a / 4 of the l2 term (||y||_1 <= max z < 4), or, at a = 0,
    where it only splits ||y||_1 among tied z (in proportion to 1/d,
    whatever b) and b 2^-shift >= 2^599 keeps the support the ties.

    Below the bound a row is solved as it is.  There z_k - theta, about
    z_k / (b sum_S 1/d), stays clear of the subnormals for rows whose metric
    spans up to about 2^200; with the bound at 2^900 it did not (one row of
    b = 1e299 in a metric spanning 2^100 came back 0).

    For 0 < a_s < 2^-500 the perturbation can decide how y is split among
    tied z (a / ||y|| against d / b), so such rows are solved as they are up
    to 2^900, and saturated beyond, where that split can be wrong.
    proxlib's own thresholds never fall there: group+exclusive has
    a / b = (1 - mu) / mu >= 2^-53, so a_s >= 2^-53 b_s / sv > 2^-477 once
    b_s > 2^600 (sv <= 2^1023); only the kernels called with a and b of
    their own can.
    """
    return (b_s > _SATURATED_ALWAYS) | ((b_s > _SATURATED_B) & ((a_s == 0) | (a_s >= _SATURATED_A)))


def group_exclusive_metric(W, D, a, b, gather=True):
    r"""Exact prox of a_r ||x_r||_2 + b_r/2 ||x_r||_1^2 per row in the metric D:

    .. math::

        x_r = \arg\min_x \tfrac12 \sum_i D_{ri} (x_i - w_{ri})^2
            + a_r \|x\|_2 + \tfrac{b_r}{2} \|x\|_1^2 .

    x_r = 0 iff ||D_r * w_r||_2 <= a_r.  Otherwise, with t = a/||x||_2,
    |x_i| = (D_i |w_i| - b ||x||_1)_+ / (D_i + t): for each t the inner
    (exclusive) equation is solved exactly by breakpoints and the outer one in
    s = ||x||_2 is monotone (:func:`_group_exclusive_rows`), solved to the
    last bit.  b = 0 is :func:`group_lasso_metric` and a = 0
    :func:`exclusive_lasso_metric` (the same code, so the same bits).
    b = inf gives 0.  A row holding NaN or +-inf is returned as it is.

    Host synchronisation.  ``gather`` (the host's choice: the least work):
    the rows of each case (group lasso, exclusive, both) are found by a
    read and ``nonzero`` and solved alone; the root search reads one scalar
    per step.  ``gather=False`` (a device's): one read says which cases
    occur, and each that does is solved on every row, the others on a
    stand-in row (1, 0, ..., 0) in the metric 1 with a = 1/2, b = 1;
    the root search reads one scalar per four steps.  The same bits either
    way: every row's search is its own (:func:`_root`).

    On torch tensors with ``METRIC_ROWS`` the whole operator is one Triton
    kernel with no host read (:func:`._triton_metric.group_exclusive_metric`:
    the same expressions, but the exclusive supports searched at data
    values without a sort; the same result to the accuracy of the row sums).
    """
    xp = array_namespace(W)
    G, m = W.shape
    if G == 0 or m == 0:
        return xp.asarray(W, copy=True)
    tm = _whole_operator_kernel(W, D)
    if tm is not None:  # the whole operator in one launch
        return tm.group_exclusive_metric(W, D, a, b, _MAX_ROOT_ITER)
    a = upcast(a, xp)
    b = upcast(b, xp)
    W64, V, sv, Dn, sd = _scaled_rows(W, D, xp)
    with errstate(W):
        a_s = _divided_by_both(a, sv, sd, xp)
        b_s = b / sd
        _, eb = xp.frexp(b)
        _, es = xp.frexp(sd)
        shift = xp.where(_saturated(a_s, b_s) & xp.isfinite(b), eb - es - 599, 0)
        b_s = xp.where(shift > 0, mul_pow2(b * xp.ones_like(sd), -shift - (es - 1)), b_s)
        # ||Dn V||_2 as nrm * zs (zs a power of two): a metric that spans
        # beyond 2^500 or so underflowed the squares, and a row of Dn V below
        # 2^-511 counted as zero (x = 0 at a = 0, where x = v)
        nrm, zs = _k.scaled_row_norms(Dn * V, xp)
        above = nrm > a_s / zs  # ||Dn V|| > a_s, the same bits where nothing underflows
    # a row holding NaN or +-inf (input not checked: check_finite=False) is
    # returned as it is, as the Euclidean kernels return it; its norm is not
    # finite (every other row's is below 4 sqrt(m))
    finite = xp.isfinite(nrm)
    nonzero = above & xp.isfinite(b_s) & finite
    U = xp.where(nonzero[:, None], V, 0.0)  # a = b = 0 rows keep V
    cases = (
        (nonzero & (a_s > 0) & (b_s == 0), _group_lasso_rows),
        (nonzero & (a_s == 0) & (b_s > 0), _exclusive_rows),
        (nonzero & (a_s > 0) & (b_s > 0), _group_exclusive_rows),
    )
    saturated = shift > 0
    if gather:
        for rows, solve in cases:
            if bool(xp.any(rows)):
                idx = xp.nonzero(rows)[0]
                U[idx, :] = solve(V[idx, :], Dn[idx, :], a_s[idx], b_s[idx], xp)
    else:
        # one read for the three cases: bit k of ``occur`` says whether case k
        # has rows (bit 3: whether a row is saturated)
        occur = int(sum(xp.astype(xp.any(rows), xp.int64) << k
                        for k, rows in enumerate([rows for rows, _ in cases] + [saturated])))
        stand_in = xp.astype(xp.arange(m, device=device(V)) == 0, V.dtype)[None, :]
        for k, (rows, solve) in enumerate(cases):
            if occur >> k & 1:
                r = rows[:, None]
                Xr = solve(xp.where(r, V, stand_in), xp.where(r, Dn, 1.0), xp.where(rows, a_s, 0.5),
                           xp.where(rows, b_s, 1.0), xp, _k._ROOT_CHECK)
                U = xp.where(r, Xr, U)
    # the host multiplies by sign(w) (one pass); a device uses signed_like (the
    # same bits: array-api-compat's torch sign mends NaN by a masked
    # assignment, which waits for the device)
    if (bool(xp.any(saturated)) if gather else occur >> 3 & 1):
        _, ev = xp.frexp(sv)
        US = xp.where(saturated[:, None], mul_pow2(U, (ev - 1 - shift)[:, None]), U * sv[:, None])
    else:
        US = U * sv[:, None]
    X = xp.sign(W64) * US if gather else signed_like(W64, US, xp)
    X = xp.where(finite[:, None], X, W64)
    return xp.astype(X, W.dtype, copy=False)
