"""Kernels written once against the NumPy API, run by NumPy and by CuPy.

``xp`` is the array's own module (``numpy`` or ``cupy``); nothing here leaves
the device.  These are the *reference* algorithms: clarity and accuracy first.
float32 inputs are computed in float64 and rounded once at the end, so the
reference is accurate to the last float32 bit.

Overflow and underflow: every row is scaled by a power of two ``s`` with
``max|row| / s`` in [1, 2) before anything is squared or summed.  Scaling by a
power of two is exact, and each operator has a known behaviour under scaling
(the group lasso threshold divides by ``s``; the exclusive-lasso parameter is
scale-free), so results at 1e-150 or 1e150 are as accurate as at 1.
"""

from __future__ import annotations

import math

from .._dispatch import array_namespace

_MAX_ROOT_ITER = 200


def _work_dtype(x, xp):
    return xp.float64


def _upcast(x, xp):
    return x.astype(xp.float64, copy=False)


def row_scale(A, xp):
    """Per-row power of two s with max|A_r|/s in [1, 2); 1 for all-zero rows.

    ``A`` holds magnitudes (>= 0)."""
    amax = xp.max(A, axis=1) if A.shape[1] else xp.zeros(A.shape[0], dtype=A.dtype)
    _, e = xp.frexp(amax)
    s = xp.ldexp(xp.ones_like(amax), e - 1)
    return xp.where(amax > 0, s, xp.ones_like(amax))


def row_norms(W, xp):
    """Overflow- and underflow-safe l2 norm of each row of ``W`` (float64)."""
    A = xp.abs(_upcast(W, xp))
    s = row_scale(A, xp)
    B = A / s[:, None]
    return xp.sqrt(xp.sum(B * B, axis=1)) * s


def group_lasso(W, a):
    """x_r = (1 - a_r/||w_r||)_+ w_r."""
    xp = array_namespace(W)
    W64 = _upcast(W, xp)
    a = _upcast(a, xp)
    nrm = row_norms(W64, xp)
    keep = nrm > a
    factor = xp.where(keep, 1.0 - a / xp.where(keep, nrm, 1.0), 0.0)
    return (W64 * factor[:, None]).astype(W.dtype, copy=False)


def _sorted_desc(A, xp):
    return xp.flip(xp.sort(A, axis=1), axis=1)


def exclusive_threshold(Y, b, xp):
    """Per-row threshold tau_r = b S_k / (1 + b k) of the exclusive-lasso prox.

    ``Y`` is |row| sorted in decreasing order (scaled), ``b`` the per-row
    parameter.  k is the number of j with Y_j (1 + b j) > b S_j, S_j the sum of
    the j largest; the final S_k is re-summed (pairwise) from the k entries.
    """
    m = Y.shape[1]
    j = xp.arange(1, m + 1, dtype=Y.dtype)
    C = xp.cumsum(Y, axis=1)
    cond = Y * (1.0 + b[:, None] * j) > b[:, None] * C
    k = xp.sum(cond, axis=1)
    Sk = xp.sum(xp.where(j[None, :] <= k[:, None], Y, 0.0), axis=1)
    return b * Sk / (1.0 + b * k), k


def exclusive_lasso(W, b):
    """x_r = sign(w_r) (|w_r| - tau_r)_+ with the exact exclusive threshold."""
    xp = array_namespace(W)
    W64 = _upcast(W, xp)
    b = _upcast(b, xp)
    A = xp.abs(W64)
    if A.shape[1] == 0:
        return W.copy()
    s = row_scale(A, xp)
    Y = _sorted_desc(A / s[:, None], xp)
    tau, _ = exclusive_threshold(Y, b, xp)
    X = xp.sign(W64) * xp.maximum(A - (tau * s)[:, None], 0.0)
    return X.astype(W.dtype, copy=False)


def _phi_direct(Y, theta, a, b, xp):
    """phi(theta) = theta - b ||z||_1 (1 - a/||z||_2), z = (Y - theta)_+, per row."""
    Z = xp.maximum(Y - theta[:, None], 0.0)
    l1 = xp.sum(Z, axis=1)
    l2 = xp.sqrt(xp.sum(Z * Z, axis=1))
    shrink = xp.where(l2 > a, 1.0 - a / xp.where(l2 > 0, l2, 1.0), 0.0)
    return theta - b * l1 * shrink


def group_exclusive_threshold(Y, a, b, xp):
    """Root theta of phi on rows with ||Y_r|| > a_r, b_r > 0 (``Y`` sorted desc).

    phi is strictly increasing; phi(Y_0) >= 0 > phi(0).  Step 1 finds the support
    size k by bisection over the breakpoints Y_j (phi evaluated exactly, O(m)).
    Step 2 solves phi = 0 on [Y_k, Y_{k-1}], where with t = mean_k - theta,
    ||z||_1 = k t and ||z||_2^2 = M2_k + k t^2 (M2_k the centred sum of squares,
    computed directly), by Newton's method safeguarded by bisection, until the
    bracket cannot shrink in floating point.
    """
    G, m = Y.shape
    rows = xp.arange(G)
    lo = xp.zeros(G, dtype=xp.int64)
    hi = xp.full(G, m, dtype=xp.int64)
    Ypad = xp.concatenate([Y, xp.zeros((G, 1), dtype=Y.dtype)], axis=1)
    for _ in range(max(1, math.ceil(math.log2(m + 1)) + 1)):
        active = hi - lo > 1
        if not bool(xp.any(active)):
            break
        mid = (lo + hi) // 2
        neg = _phi_direct(Y, Ypad[rows, mid], a, b, xp) < 0
        hi = xp.where(active & neg, mid, hi)
        lo = xp.where(active & ~neg, mid, lo)
    k = hi
    kf = k.astype(Y.dtype)
    j = xp.arange(m)
    in_support = j[None, :] < k[:, None]
    mean = xp.sum(xp.where(in_support, Y, 0.0), axis=1) / kf
    dev = xp.where(in_support, Y - mean[:, None], 0.0)
    M2 = xp.sum(dev * dev, axis=1)
    left = Ypad[rows, k]  # phi(left) < 0
    right = Ypad[rows, k - 1]  # phi(right) >= 0

    def phi_and_slope(theta):
        t = mean - theta
        l2 = xp.sqrt(M2 + kf * t * t)
        shrink = 1.0 - a / l2
        phi = theta - b * kf * t * shrink
        slope = 1.0 + b * (kf * shrink + a * kf * kf * t * t / (l2 * l2 * l2))
        return phi, slope

    theta = 0.5 * (left + right)
    for _ in range(_MAX_ROOT_ITER):
        phi, slope = phi_and_slope(theta)
        neg = phi < 0
        left = xp.where(neg, theta, left)
        right = xp.where(neg, right, theta)
        newton = theta - phi / slope
        ok = (newton > left) & (newton < right)
        nxt = xp.where(ok, newton, 0.5 * (left + right))
        done = (nxt == theta) | (phi == 0)
        theta = xp.where(done, theta, nxt)
        if bool(xp.all(done | ~((left < nxt) & (nxt < right)))):
            break
    return theta


def group_exclusive(W, a, b):
    """Exact prox of a_r ||x||_2 + b_r/2 ||x||_1^2 on each row.

    x = 0 iff ||w|| <= a; else x = z (1 - a/||z||_2) with z = (|w| - theta)_+ sign(w)
    and theta the unique root of theta = b ||z||_1 (1 - a/||z||_2).
    """
    xp = array_namespace(W)
    W64 = _upcast(W, xp)
    a = _upcast(a, xp)
    b = _upcast(b, xp)
    A = xp.abs(W64)
    G, m = A.shape
    if m == 0 or G == 0:
        return W.copy()
    s = row_scale(A, xp)
    As = A / s[:, None]
    a_s = a / s
    Y = _sorted_desc(As, xp)
    nrm = xp.sqrt(xp.sum(Y * Y, axis=1))
    nonzero = nrm > a_s
    theta = xp.zeros(G, dtype=Y.dtype)
    # a == 0: pure exclusive lasso, closed form.
    excl_only = nonzero & (a_s == 0) & (b > 0)
    tau, _ = exclusive_threshold(Y, b, xp)
    theta = xp.where(excl_only, tau, theta)
    general = nonzero & (a_s > 0) & (b > 0)
    if bool(xp.any(general)):
        idx = xp.nonzero(general)[0]
        theta_g = group_exclusive_threshold(Y[idx], a_s[idx], b[idx], xp)
        theta[idx] = theta_g
    Z = xp.maximum(As - theta[:, None], 0.0)
    l2 = xp.sqrt(xp.sum(Z * Z, axis=1))
    shrink = xp.where(nonzero, 1.0 - a_s / xp.where(l2 > 0, l2, 1.0), 0.0)
    shrink = xp.maximum(shrink, 0.0)
    X = xp.sign(W64) * Z * (shrink * s)[:, None]
    return X.astype(W.dtype, copy=False)


def growl(W, w, owl):
    """Rows rescaled to the OWL prox of their norms: x_r = (m_r / ||w_r||) w_r."""
    xp = array_namespace(W)
    W64 = _upcast(W, xp)
    nrm = row_norms(W64, xp)
    new = owl(nrm, _upcast(w, xp))
    pos = nrm > 0
    factor = xp.where(pos, new / xp.where(pos, nrm, 1.0), 0.0)
    return (W64 * factor[:, None]).astype(W.dtype, copy=False)


def weighted_l1(v, w):
    xp = array_namespace(v)
    return xp.sign(v) * xp.maximum(xp.abs(v) - w, 0)


def weighted_l2sq(v, w):
    return v / (1 + 2 * w)


def _lp_closed_form(av, lam, p, xp):
    """Largest stationary point of 1/2 (x - av)^2 + lam x^p for p = 1/2, 2/3.

    p = 1/2: x = u^2, u the largest root of u^3 - av u + lam/2 = 0 (trigonometric
    form).  p = 2/3: x = u^3, u the largest root of u^4 - av u + 2 lam/3 = 0
    (Ferrari, resolvent m^3 - c m - av^2/8 = 0).  NaN where rounding leaves
    the formula's domain; the caller then starts Newton from av instead.
    """
    with _errstate(xp):
        if p == 0.5:
            arg = -(3.0 * lam / (4.0 * av)) * xp.sqrt(3.0 / av)
            u = 2.0 * xp.sqrt(av / 3.0) * xp.cos(xp.arccos(arg) / 3.0)
            return u * u
        c = 2.0 * lam / 3.0
        D = av**4 / 256.0 - c**3 / 27.0
        sq = xp.sqrt(xp.maximum(D, 0.0))
        m_real = xp.cbrt(av * av / 16.0 + sq) + xp.cbrt(av * av / 16.0 - sq)
        arg = (3.0 * av * av / (16.0 * c)) * math.sqrt(3.0 / c) if c > 0 else av * 0.0
        m_trig = 2.0 * math.sqrt(c / 3.0) * xp.cos(xp.arccos(arg) / 3.0)
        mm = xp.where(D >= 0, m_real, m_trig)
        r = xp.sqrt(2.0 * mm)
        u = 0.5 * (r + xp.sqrt(2.0 * av / r - 2.0 * mm))
        return u * u * u


class _errstate:
    def __init__(self, xp):
        self.ctx = xp.errstate(all="ignore") if hasattr(xp, "errstate") else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def lp(v, lam, p):
    """Global minimiser of 1/2 (x - v)^2 + lam |x|^p, elementwise."""
    xp = array_namespace(v)
    v64 = _upcast(v, xp)
    av = xp.abs(v64)
    if lam == 0:
        return v.copy()
    if p == 0:
        return xp.where(av > math.sqrt(2.0 * lam), v64, 0.0).astype(v.dtype, copy=False)
    if p == 1:
        return (xp.sign(v64) * xp.maximum(av - lam, 0.0)).astype(v.dtype, copy=False)
    tau = (2.0 - p) / (2.0 * (1.0 - p)) * (2.0 * lam * (1.0 - p)) ** (1.0 / (2.0 - p))
    beta = (lam * p * (1.0 - p)) ** (1.0 / (2.0 - p))
    keep = av > tau
    # Entries that end at 0 iterate harmlessly from 2*beta (no 0**negative).
    x = xp.where(keep, av, 2.0 * beta)
    if p in (0.5, 2.0 / 3.0):
        xc = _lp_closed_form(xp.where(keep, av, 1.0), lam, p, xp)
        x = xp.where(keep & xp.isfinite(xc) & (xc > beta) & (xc <= av), xc, x)

    def newton(x):
        # f'(x) = x - av + lam p x^(p-1), f''(x) = 1 - lam p (1-p) x^(p-2); with
        # r = (x/beta)^(p-2) (no overflow for x > beta): f' = x - av + x r/(1-p).
        r = (x / beta) ** (p - 2.0)
        return x - (x - av + x * r / (1.0 - p)) / (1.0 - r)

    # One free step lands at or right of the root (f' is convex and increasing
    # on x > beta); from there Newton decreases monotonically to the root.
    x = xp.where(keep, xp.maximum(newton(x), beta), x)
    for _ in range(_MAX_ROOT_ITER):
        nxt = xp.where(keep, newton(x), x)
        moved = keep & (nxt < x) & (nxt > beta)
        if not bool(xp.any(moved)):
            break
        x = xp.where(moved, nxt, x)
    out = xp.where(keep, xp.sign(v64) * x, 0.0)
    return out.astype(v.dtype, copy=False)
