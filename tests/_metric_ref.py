"""References for the prox in a diagonal metric, written from the math, not from proxlib.

Every problem here is

    argmin_x 1/2 sum_i d_i (x_i - v_i)^2 + Omega(x),   d > 0,

with the thresholds of Omega given (step already included).  Three kinds of
reference, as in ``_cvx``:

1. ``metric_objective``: the objective in float64;
2. ``cvx_metric_*``: CVXPY (Clarabel) with the weighted quadratic; compared
   through strong convexity (``assert_agrees_with_cvxpy_metric``);
3. ``exact_*``: exact rationals (exclusive lasso: the piecewise-linear
   equation tried for every support size) or 60-digit decimals (group lasso
   and group + exclusive: bisection on their optimality equations, nested
   the other way round from proxlib's kernel: the outer unknown is the
   exclusive threshold theta, the inner one ||x||_2).

plus Hypothesis strategies for metrics (ties and a wide range of scales).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import cvxpy as cp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import _cvx as C

EPS64 = float(np.finfo(np.float64).eps)
PREC = 60

# --------------------------------------------------------------------------- objective


def metric_objective(x, v, d, omega_value):
    """1/2 sum_i d_i (x_i - v_i)^2 + Omega(x) (Omega(x) given, thresholds in it) in float64."""
    r = np.asarray(x, dtype=np.float64).ravel() - np.asarray(v, dtype=np.float64).ravel()
    dd = np.asarray(d, dtype=np.float64).ravel()
    return 0.5 * math.fsum(dd * r * r) + omega_value


def metric_slack(v, d, omega_at_v, n):
    """Rounding budget for comparing two objective values (see ``_cvx.objective_slack``)."""
    v = np.asarray(v, dtype=np.float64).ravel()
    scale = 0.5 * float(np.sum(np.asarray(d, dtype=np.float64).ravel() * v * v)) + omega_at_v
    return 8 * (n + 2) * EPS64 * (1.0 + scale)


def d_norm(r, d):
    """||r||_d = sqrt(sum d_i r_i^2), without overflow or underflow (scaled by the largest term)."""
    y = np.sqrt(np.asarray(d, dtype=np.float64).ravel()) * np.abs(np.asarray(r, dtype=np.float64).ravel())
    top = float(y.max(initial=0.0))
    if top == 0 or not math.isfinite(top):
        return top
    return top * math.sqrt(math.fsum((y / top) ** 2))


def assert_agrees_with_cvxpy_metric(x, x_cvx, d, f, f_cvx, slack):
    """proxlib's x against CVXPY's point of the same objective F.

    F(z) = 1/2 sum d_i (z_i - v_i)^2 + Omega(z), Omega convex, is 1-strongly
    convex in the norm ||r||_d = sqrt(sum d_i r_i^2): F(z) - F(x*) >= 1/2 ||z - x*||_d^2.
    So if x = x*: F(x) <= F(x_cvx) + slack, and ||x - x_cvx||_d <= sqrt(2 (F(x_cvx) - F(x)) + 2 slack).
    """
    assert f <= f_cvx + slack, ("objective above CVXPY's", f, f_cvx, slack)
    dist = d_norm(np.ravel(x) - np.ravel(x_cvx), d)
    bound = math.sqrt(2 * max(f_cvx - f, 0.0) + 2 * slack)
    assert dist <= bound, ("farther from CVXPY's point (in the d-norm) than its suboptimality allows", dist, bound)


# --------------------------------------------------------------------------- CVXPY


def _quad(x, v, d):
    return 0.5 * cp.sum(cp.multiply(np.asarray(d, dtype=np.float64).ravel(), cp.square(x - np.asarray(v, dtype=np.float64).ravel())))


def cvx_metric_groups(v, d, index_sets, a, b):
    """argmin 1/2 sum d (x - v)^2 + sum_g a_g ||x_g||_2 + b_g/2 ||x_g||_1^2 (flat v, d)."""
    v = np.asarray(v, dtype=np.float64).ravel()
    x = cp.Variable(v.shape[0])
    return C.solve(_quad(x, v, d) + C._group_terms(x, index_sets, a, b), x)


def cvx_metric_weighted_l1(v, d, w):
    v = np.asarray(v, dtype=np.float64).ravel()
    x = cp.Variable(v.shape[0])
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), v.shape)
    return C.solve(_quad(x, v, d) + cp.sum(cp.multiply(w, cp.abs(x))), x)


def cvx_metric_weighted_l2sq(v, d, w):
    v = np.asarray(v, dtype=np.float64).ravel()
    x = cp.Variable(v.shape[0])
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), v.shape)
    return C.solve(_quad(x, v, d) + cp.sum(cp.multiply(w, cp.square(x))), x)


def cvx_metric_owl(v, d, w):
    v = np.asarray(v, dtype=np.float64).ravel()
    x = cp.Variable(v.shape[0])
    return C.solve(_quad(x, v, d) + C.owl_expr(cp.abs(x), w), x)


def cvx_metric_growl(W, D, w):
    W = np.asarray(W, dtype=np.float64)
    X = cp.Variable(W.shape)
    quad = 0.5 * cp.sum(cp.multiply(np.asarray(D, dtype=np.float64), cp.square(X - W)))
    return C.solve(quad + C.owl_expr(cp.norm(X, 2, axis=1), w), X)


# --------------------------------------------------------------------------- exact references


def exact_exclusive_metric_row(w, d, b):
    """argmin 1/2 sum d_i (x_i - w_i)^2 + b/2 ||x||_1^2 in exact rationals (b a float or Fraction).

    Optimality: d_i (x_i - w_i) + b L sign(x_i) = 0 on the support, |d_i w_i| <= b L off
    it (L = ||x||_1).  So |x_i| = |w_i| - b L / d_i on the support S and
    L = sum_S |w_i| - b L sum_S 1/d_i, i.e. L = sum_S |w_i| / (1 + b sum_S 1/d_i).
    Every candidate S = {the k largest d_i |w_i|} is tried; the one whose L is
    consistent (d_i |w_i| > b L exactly on S) is the answer.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    B = b if isinstance(b, Fraction) else Fraction(float(b))
    if B == 0:
        return w.copy()
    A = [abs(Fraction(float(x))) for x in w]
    D = [Fraction(float(x)) for x in np.asarray(d, dtype=np.float64).ravel()]
    z = [a * dd for a, dd in zip(A, D)]
    order = sorted(range(len(w)), key=lambda i: -z[i])
    S = H = Fraction(0)
    for k, i in enumerate(order, start=1):
        S += A[i]
        H += 1 / D[i]
        L = S / (1 + B * H)
        inside = all(z[j] > B * L for j in order[:k])
        outside = all(z[j] <= B * L for j in order[k:])
        if inside and outside:
            return np.array([math.copysign(float(A[j] - B * L / D[j]), w[j]) if z[j] > B * L else 0.0 for j in range(len(w))])
    return np.zeros_like(w)  # all zero


def _dec(x):
    return Decimal(float(x))


def _root_increasing(f, hi):
    """The root of an increasing function f on (0, hi] with f(hi) >= 0 and
    f(hi/2) < 0, to ~PREC digits (Decimals, computed at the context's
    precision, which may be higher to keep f's terms from cancelling).

    The Illinois variant of regula falsi (superlinear, and never leaves the
    bracket), stopping when the bracket is below 10^(5 - PREC) of the root or
    f vanishes; AssertionError if 2000 steps do not get there (a reference
    that fails to converge must not pass for one that did).  The callers
    bracket the root within a factor 2 first (_least_k): from a wider
    bracket, whose end values may lie 1e300 apart, the regula falsi stalls."""
    lo = hi / 2
    flo = f(lo)
    assert flo <= 0, "the root is not bracketed"
    if flo == 0:
        return lo
    fhi = f(hi)
    if fhi == 0:
        return hi
    small = Decimal(10) ** (5 - PREC)
    side = 0
    for _ in range(2000):
        if hi - lo <= small * hi:
            return (lo + hi) / 2
        c = (lo * fhi - hi * flo) / (fhi - flo)
        if not lo < c < hi:
            c = (lo + hi) / 2
        fc = f(c)
        if fc == 0:
            return c
        if fc < 0:
            lo, flo = c, fc
            if side == -1:
                fhi /= 2
            side = -1
        else:
            hi, fhi = c, fc
            if side == 1:
                flo /= 2
            side = 1
    raise AssertionError("the root search did not converge")


def _group_lasso_metric_decimal(Zt, Dd, A):
    """Decimal s = ||x||_2 of argmin 1/2 sum d (x - v)^2 + A ||x||_2 where
    Zt = d |v| (Decimals); 0 when ||Zt|| <= A.

    x_i = Zt_i s / (d_i s + A) and s solves phi(s) = sum (Zt_i / (d_i s + A))^2 = 1,
    phi decreasing, s <= ||Zt / d|| (= ||v||, where phi <= 1).
    """
    if sum(z * z for z in Zt) <= A * A:
        return Decimal(0)

    def phi(s):
        return 1 - sum((z / (dd * s + A)) ** 2 for z, dd in zip(Zt, Dd))

    # phi is concave: its tangent at 0 crosses 0 below the root, at
    # s_lo = A (||Zt||^2 - A^2) / (2 sum d Zt^2), which is close to it where
    # s << A / d (||Zt|| just above A); the root is bracketed from there
    s_lo = A * (sum(z * z for z in Zt) - A * A) / (2 * sum(dd * z * z for z, dd in zip(Zt, Dd)))
    if phi(s_lo) >= 0:  # (only by rounding: s_lo is the root to the working precision)
        return s_lo
    k = _least_k(lambda k: phi(s_lo * Decimal(2) ** k) >= 0)
    return _root_increasing(phi, s_lo * Decimal(2) ** k)


def exact_group_exclusive_metric_row(w, d, a, b):
    """argmin 1/2 sum d_i (x_i - w_i)^2 + a ||x||_2 + b/2 ||x||_1^2, ~PREC digits (a, b floats).

    Optimality (s = ||x||_2, L = ||x||_1): x = 0 iff ||d w||_2 <= a (at 0 the
    l1^2 term has gradient 0 and the l2 norm's subdifferential is the ball);
    otherwise |x_i| (d_i + a/s) = (d_i |w_i| - theta)_+ with theta = b L.  For
    a fixed theta this is the group lasso in the metric d of
    z~ = (d |w| - theta)_+ (inner root in s); L(theta) decreases in theta, so
    theta - b L(theta) = 0 has one root in (0, max d |w|].  b = 0 is the group
    lasso; a = 0 the exclusive lasso (better: the rational reference).

    L(theta) > 0 exactly below t0, where ||(z - t0)_+||_2 = a (t0 = max z
    for a = 0; z = d |w|), and at large b the root lies just below it:
    t0 - theta is about t0 / (b sum 1/d).  So where the root lies above
    t0 / 2, the unknown is u = t0 - theta, with z_i - theta = (z_i - t0) + u
    (phi(u) = b L - (t0 - u), increasing in u); below, theta itself (phi =
    theta - b L, increasing), whose z_i - theta keeps the digits of entries
    far below t0.  Either root is bracketed within a factor 2 by a search
    over its power of two (_least_k), then found by _root_increasing.  (From
    the bracket [max z / 2, max z] in theta, the regula falsi had end values
    1e300 apart at b = 1e300, and its 2000 steps ended far from the root:
    6.2e-5 for x = 6.07e-100.)  The digits: t0 must be known to about u's
    size, so PREC plus log10(b sum 1/d), plus log10(max z / a) for a > 0
    (||z~|| - a, which sets ||x||, is formed next to t0's error times
    max z / a).
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    dd64 = np.asarray(d, dtype=np.float64).ravel()
    with localcontext() as ctx:
        ctx.prec = PREC
        A, B = _dec(a), _dec(b)
        Dd = [_dec(x) for x in dd64]
        Z = [abs(_dec(x)) * dd for x, dd in zip(w, Dd)]
        if sum(z * z for z in Z) <= A * A:
            return np.zeros_like(w)
        z1 = max(Z)
        ctx.prec = PREC + _digits(B * sum(1 / dd for dd in Dd)) + (_digits(z1 / A) if A else 0)
        t0 = _l2_boundary(Z, A)
        G = [z - t0 for z in Z]

        def solve(Zt):  # |x| for z - theta = Zt
            Zt = [max(z, Decimal(0)) for z in Zt]
            if A == 0:
                return [zt / dd for zt, dd in zip(Zt, Dd)]
            s = _group_lasso_metric_decimal(Zt, Dd, A)
            if s == 0:
                return [Decimal(0)] * len(Z)
            return [zt * s / (dd * s + A) for zt, dd in zip(Zt, Dd)]

        def at_u(u):
            return solve([g + u for g in G])

        def at_theta(theta):
            return solve([z - theta for z in Z])

        def phi_u(u):
            return B * sum(at_u(u)) - (t0 - u)

        def phi_theta(theta):
            return theta - B * sum(at_theta(theta))

        def root(phi):  # the root of phi, increasing, in (0, t0 / 2] where phi(t0 / 2) >= 0
            return _root_increasing(phi, t0 * Decimal(2) ** -_least_k(lambda k: phi(t0 * Decimal(2) ** -(k + 1)) < 0))

        if B == 0:
            X = solve(Z)
        elif phi_theta(t0 / 2) < 0:  # the root lies above t0 / 2
            X = at_u(root(phi_u))
        else:
            X = at_theta(root(phi_theta))
        return np.array([math.copysign(float(x), wi) if x > 0 else 0.0 for x, wi in zip(X, w)])


def _digits(x):
    """Decimal digits of x above 1 (0 for x <= 1)."""
    return int(x.log10().to_integral_value(rounding="ROUND_CEILING")) if x > 1 else 0


def _l2_boundary(Z, A):
    """The t0 > 0 with ||(Z - t0)_+||_2 = A (Z >= 0 Decimals with ||Z|| > A):
    on the top j entries (S1, S2 their sum and sum of squares),
    j t^2 - 2 S1 t + S2 - A^2 = 0 on the branch t <= S1/j, i.e.
    t = (S2 - A^2) / (S1 + sqrt(S1^2 - j (S2 - A^2))) (no cancellation),
    taken for the j whose root lies between the (j+1)-th and the j-th entry
    (A = 0: the largest entry).  Where the discriminant is 0 (A = 0, ties),
    rounding can make it negative: it is taken as 0."""
    if A == 0:
        return max(Z)
    top = sorted(Z, reverse=True) + [Decimal(0)]
    S1 = S2 = Decimal(0)
    for j in range(1, len(top)):
        S1 += top[j - 1]
        S2 += top[j - 1] ** 2
        c = S2 - A * A
        t = c / (S1 + max(S1 * S1 - j * c, Decimal(0)).sqrt())
        if t >= top[j]:
            return t
    raise AssertionError("||Z|| <= A")


def _least_k(holds):
    """The least k >= 1 with holds(k), for holds monotone in k (False, then
    True): a search over k's bits, doubling k and then halving the interval,
    in about 2 log2(k) calls (roots bracketed within a factor 2 by the power
    of two 2^-k or 2^k)."""
    k = 1
    while not holds(k):
        k *= 2
    lo, hi = k // 2, k  # holds(hi), and not holds(lo) unless lo == 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(mid) else (mid, hi)
    return hi


def exact_group_lasso_metric_row(w, d, a):
    return exact_group_exclusive_metric_row(w, d, a, 0.0)


# --------------------------------------------------------------------------- strategies

_D_POOL = [1.0, 2.0, 0.5, 1e-3, 1e3, 3.0]


def metric_elements(lo_exp=-3.0, hi_exp=3.0):
    """Positive metric entries: log-uniform in [10^lo_exp, 10^hi_exp], often from a
    small pool (ties, powers of two)."""
    return st.one_of(
        st.floats(lo_exp, hi_exp).map(lambda e: float(10.0**e)),
        st.sampled_from(_D_POOL),
    )


def metrics(shape, lo_exp=-3.0, hi_exp=3.0, dtype=np.float64):
    """A metric of ``shape``; sometimes constant along rows or entirely constant."""

    @st.composite
    def build(draw):
        D = draw(arrays(np.float64, shape, elements=metric_elements(lo_exp, hi_exp)))
        kind = draw(st.sampled_from(["free", "free", "free", "row-constant", "constant"]))
        if kind == "row-constant" and len(shape) == 2:
            D = np.repeat(D[:, :1], shape[1], axis=1)
        elif kind == "constant":
            D = np.full(shape, D.ravel()[0])
        return D.astype(dtype)

    return build()
