"""Kernels written once against the Python array API, run on NumPy, CuPy and torch.

``xp`` is the array's own namespace (``array_api_compat``'s numpy, cupy or
torch module, see :func:`proxlib._dispatch.array_namespace`); every array is
allocated on the input's device, so nothing here leaves it except the scalar
loop conditions named in each docstring.  These are the *reference*
algorithms: clarity and accuracy first.  float32 inputs are computed in
float64 and rounded once at the end, so the reference is accurate to the last
float32 bit.

Overflow and underflow: every row is scaled by a power of two ``s`` with
``max|row| / s`` in [1, 2) before anything is squared or summed.  Scaling by a
power of two is exact, and each operator has a known behaviour under scaling
(the group lasso threshold divides by ``s``; the exclusive-lasso parameter is
scale-free), so results at 1e-150 or 1e150 are as accurate as at 1.

The row-norm operators (group lasso, GrOWL) and the elementwise ones live in
:mod:`._stages`, as stages over a few primitives per backend.
"""

from __future__ import annotations

import contextlib
import importlib
import math

import array_api_compat

from .._dispatch import array_kind, array_namespace, backend_for, device
from .._range import hard_threshold, lp_constants
from . import NonFiniteInput, check_row_norms

_MAX_ROOT_ITER = 200
_ROOT_CHECK = 4  # root iterations between host reads of the convergence test

#: Who runs group+exclusive's root search (:func:`group_exclusive_factor`) on
#: torch tensors: ``"auto"``: one Triton kernel (:mod:`._triton_shrink`, no
#: host read) for CUDA tensors when Triton imports, the array code otherwise;
#: ``"triton"``: the kernel for any torch tensor (off CUDA in Triton's
#: interpreter: how the tests run the CUDA path on CPU tensors); ``"array"``.
#: The same c, bit for bit, either way.
ROOT_SEARCH = "auto"

#: Who solves the exclusive penalties' rows (:func:`exclusive_lasso`,
#: :func:`group_exclusive`) on torch tensors: ``"triton"``: one Triton kernel
#: (:mod:`._triton_exclusive`: one launch where the array code makes seventy
#: or more, no host read) for any torch tensor whose rows it holds (off CUDA
#: in Triton's interpreter: the exclusive lasso bit for bit, group+exclusive
#: to a few units in the last place); ``"auto"``: the kernel on CUDA tensors
#: only; ``"array"`` (the default until the compiled kernel has been run on
#: a GPU: the tests compile it for sm_90, ``benchmarks/gpu_session.sh`` runs
#: it there).  Group+exclusive's rows longer than that kernel's ``MAX_M``
#: take :mod:`._triton_metric`'s kernel in the metric 1 (:func:`_long_group_exclusive_rows`).
EXCLUSIVE_ROWS = "array"


def _triton_module(x, mode: str, name: str):
    """proxlib's Triton kernel module ``name`` where ``mode`` (``"auto"``,
    ``"triton"`` or ``"array"``) has it run for ``x``, else None: torch
    tensors only, CUDA ones only under ``"auto"``; a missing Triton is an
    error only under ``"triton"``."""
    if mode == "array" or not array_api_compat.is_torch_array(x):
        return None
    if mode == "auto" and x.device.type != "cuda":
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        if mode == "triton":
            raise
        return None


def _triton_exclusive_rows(W, group: bool = False):
    """:mod:`._triton_exclusive` where it solves the exclusive lasso's
    (``group``: group+exclusive's) rows of ``W`` (``EXCLUSIVE_ROWS``, and
    rows it takes), else None."""
    tx = _triton_module(W, EXCLUSIVE_ROWS, "_triton_exclusive")
    return tx if tx is not None and tx.fits(W, group) else None


def _long_group_exclusive_rows(W):
    """:mod:`._triton_metric` where it solves group+exclusive's rows of ``W``
    that :mod:`._triton_exclusive`'s sort kernel does not take (longer than
    its ``MAX_M``), in the metric 1 (``EXCLUSIVE_ROWS``; float32 or float64
    torch tensors), else None.  Its exclusive supports are searched at the
    data's values over tiles, so rows of any length take it."""
    tm = _triton_module(W, EXCLUSIVE_ROWS, "_triton_metric")
    return tm if tm is not None and W.ndim == 2 and tm.fits(W, W) else None


def _triton_shrink(x):
    """:mod:`._triton_shrink` where it runs the root search for ``x`` (``ROOT_SEARCH``), else None."""
    return _triton_module(x, ROOT_SEARCH, "_triton_shrink")


def errstate(x):
    """``errstate(all="ignore")`` of ``x``'s library where it has one (NumPy);
    a no-op for torch and CuPy, which never warn."""
    xp = array_namespace(x)
    return xp.errstate(all="ignore") if hasattr(xp, "errstate") else contextlib.nullcontext()


def upcast(x, xp):
    return xp.astype(x, xp.float64, copy=False)


def row_scale(A, xp):
    """Per-row power of two s with max|A_r|/s in [1, 2); 1 for all-zero rows.

    ``A`` holds magnitudes (>= 0)."""
    dev = device(A)
    amax = xp.max(A, axis=1) if A.shape[1] else xp.zeros(A.shape[0], dtype=A.dtype, device=dev)
    _, e = xp.frexp(amax)
    s = xp.ldexp(xp.ones_like(amax), e - 1)
    return xp.where(amax > 0, s, xp.ones_like(amax))


def scaled_row_norms(W, xp):
    """The l2 norm of each row of ``W`` as ``nrm * s`` (both float64): ``s``
    the row's power of two (:func:`row_scale`), ``nrm`` in [1, 2 sqrt(m)) for a
    non-zero row (0 for a zero row, NaN or inf where the row is).

    Nothing over- or underflows, also where the norm itself exceeds the largest
    float64 (a row of four 1e308's has norm 2e308); ratios such as a / ||w||
    are then formed as (a / s) / nrm."""
    A = xp.abs(upcast(W, xp))
    s = row_scale(A, xp)
    B = A / s[:, None]
    return xp.sqrt(xp.sum(B * B, axis=1)), s


def row_norms(W, xp):
    """Overflow- and underflow-safe l2 norm of each row of ``W`` (float64;
    inf only where the norm exceeds the largest float64)."""
    nrm, s = scaled_row_norms(W, xp)
    with errstate(W):
        return nrm * s


def signed_like(W, V, xp):
    """``sign(W) * V`` for ``V >= 0`` (or NaN), the same bits, with no host
    synchronisation on any device: NaN where ``W`` is NaN, +V where ``W`` is
    +-0 or positive, -V where it is negative.  (``xp.sign`` of array-api-compat's
    torch mends torch.sign's NaN with a boolean-mask assignment, which waits
    for a GPU; ``maximum`` and ``minimum`` with a Python number copy it to the
    device first: the exclusive kernels use ``clip`` instead.)"""
    return xp.where(W < 0, -V, xp.where(W >= 0, V, W))


def quotient(num, den, xp):
    """``num / den`` correctly rounded, for ``num`` a Python number or an
    array and ``den`` an array.  (torch forms ``number / tensor`` as
    ``number * (1 / tensor)``, two roundings: 0.7 / d differs from the
    quotient in about a quarter of the entries.  The number is filled into an
    array of den's shape instead, on den's device: no host transfer.)"""
    if hasattr(num, "shape"):
        return num / den
    return xp.full_like(den, num) / den


def divided(x, d, xp):
    """``x / d`` correctly rounded for an array or number ``x`` and a Python
    number ``d``, the same bits on every device: torch on CUDA computes a
    tensor divided by a number as ``tensor * (1 / d)`` (two roundings), the
    CPU and NumPy divide; an array of ``d`` is divided by on every device.
    For code whose number and array forms must agree bit for bit (lp's lam,
    a number for one term, an array for a batch of them)."""
    if not hasattr(x, "shape"):
        return x / d
    return x / xp.full_like(x, d)


def sort_magnitudes_desc(a, xp):
    """The 1-D magnitudes ``a`` (>= 0) in decreasing order: ``xp.sort``, or,
    for NumPy arrays on the Numba backend, its sort
    (:func:`.numba_cpu.sort_magnitudes_desc`: a radix sort where NumPy's is
    slow), the same array."""
    if array_kind(a) == "numpy":
        try:
            fast = getattr(backend_for(a), "sort_magnitudes_desc", None)
        except ValueError:  # (a backend of another array library requested: the plain sort)
            fast = None
        if fast is not None:
            return fast(a)
    return xp.sort(a, descending=True)


def sort_desc(A, xp):
    """Each row of ``A`` sorted in decreasing order (the default sort primitive)."""
    return xp.sort(A, axis=1, descending=True)


def exclusive_support(Y, beta, F, xp):
    """Support of the exclusive-lasso prox with parameter ``beta`` (per row).

    ``Y`` is |row| sorted in decreasing order (scaled), ``F`` its shifted sums
    (:func:`shifted_sums`).  Entry j is in the support iff Y_j > beta F_j; this is
    Y_j (1 + beta j) > beta S_j rearranged so that no 1 + beta j or beta S_j is
    rounded (with those, every entry failed once beta >= 2^53 and the prox
    returned its input).  Y_j - beta F_j decreases in j, so the support is a
    prefix, of k >= 1 entries whenever Y_1 > 0; F does not grow across tied
    values, so ties never straddle it.  Returns k, Y_k and F_k.
    """
    cond = Y > beta[:, None] * F
    cond[:, 0] = Y[:, 0] > 0  # F_1 = 0 (and no inf * 0)
    k = xp.sum(cond, axis=1)
    kk = xp.clip(k, min=1) - 1  # (not maximum(k, 1): array-api-compat copies the 1 to the device)
    rows = xp.arange(Y.shape[0], device=device(Y))
    return k, Y[rows, kk], F[rows, kk]


def shifted_sums(Y, xp):
    """F_j = sum_{i<=j} (Y_i - Y_j) for ``Y`` sorted decreasingly, per row.

    Built by the recurrence F_j = F_{j-1} + (j - 1)(Y_{j-1} - Y_j): a cumulative
    sum of non-negative terms whose differences are exact for nearby values, so F
    is accurate where S_j - j Y_j would cancel.  Non-decreasing in j.
    """
    m = Y.shape[1]
    inc = xp.arange(1, m, dtype=Y.dtype, device=device(Y)) * (Y[:, :-1] - Y[:, 1:])
    return xp.cumulative_sum(inc, axis=1, include_initial=True)


def exclusive_magnitudes(As, Y, F, beta, xp):
    """|x| of the exclusive-lasso prox (parameter ``beta`` per row) of the scaled
    magnitudes ``As`` (``Y`` their sorted copy, ``F`` its shifted sums).

    With k, Y_k, F_k from :func:`exclusive_support` the threshold is
    tau = beta S_k / (1 + beta k), S_k = k Y_k + F_k, and for the support
    |w_i| - tau = (|w_i| - Y_k) + e,   e = (Y_k - beta F_k) / (1 + beta k) > 0:
    no large quantity is subtracted from another, so the result is accurate
    relative to itself also when beta is large (x -> |w|_(1) / (1 + beta)).
    In general |dx_i| <= (k + 2) eps (|x_i| + tau): F_k's rounding moves e
    by at most (k + 2) u beta F_k / (1 + beta k) <= (k + 2) u tau, which an
    entry just above tau does not resolve relative to itself (no formula
    does: the entry is ill-conditioned there).
    """
    k, Yk, Fk = exclusive_support(Y, beta, F, xp)
    e = (Yk - beta * Fk) / (1.0 + beta * xp.astype(k, beta.dtype))
    U = xp.where(As >= Yk[:, None], (As - Yk[:, None]) + e[:, None], 0.0)
    return xp.where((beta == 0)[:, None], As, U)


def _scaled_magnitudes(W, xp):
    W64 = upcast(W, xp)
    A = xp.abs(W64)
    s = row_scale(A, xp)
    return W64, A / s[:, None], s


def tau_below(S, n, P, a, b, xp, r=None):
    """Per row, a lower bound of tau, the root of phi(t) = t - b F(t)
    (1 - a/sqrt(Q(t)))_+ (F(t) = sum (y - t)_+, Q(t) = sum (y - t)_+^2; a = 0:
    the exclusive lasso), from the sum ``S`` of the ``n`` magnitudes that may
    be on the support (all of them above some t' <= tau; rows of ``P``
    entries, the sums' error below P eps S): tau_0 = b (S - a sqrt(n))/(1 + b n),
    formed from a lowered S and a raised a sqrt(n) and lowered for its three
    operations; 0 where S - a sqrt(n) is not positive or tau_0 < 2^-1000.
    ``r`` (optional): an upper bound of F(t)/sqrt(Q(t)) for every t above
    the magnitudes left out (:func:`ratio_above`), which replaces sqrt(n)
    (Cauchy-Schwarz's bound of it): a higher tau_0.

    The same bound, with the proof, as ``numba_cpu._tau_below`` and
    ``_tau_below_at`` (one column at a time there); float64 arrays (or
    ``P`` a number)."""
    S_lo = S * (1.0 - (P + 8) * 2.0**-52)
    d = S_lo - a * (xp.sqrt(n) if r is None else r) * (1.0 + 2.0**-50)
    ok = d > 0.0
    t = ((b * xp.where(ok, d, 0.0)) / (1.0 + b * n)) * (1.0 - 8 * 2.0**-52)
    return xp.where(ok & (t >= 2.0**-1000), t, 0.0)


def ratio_above(F, Q, n, P, xp):
    """Per row, an upper bound of F(t)/sqrt(Q(t)) for every t >= T, from
    F = sum (y - T)_+ and Q = sum (y - T)_+^2 over the ``n`` magnitudes
    above T (rows of ``P`` entries): sqrt(F^2/Q) formed from a raised F and
    a lowered Q, at most sqrt(n), which it is also where Q is below 2^-900
    or not a number; to be multiplied by 1 + 2^-50, as :func:`tau_below`
    does.  F(t)^2/Q(t) does not increase with t; the proof and the margins
    are ``numba_cpu._ratio_above``'s (one column at a time there)."""
    rn = xp.sqrt(n)
    big = Q > 2.0**-900
    q = xp.where(big, Q * (1.0 - (P + 8) * 2.0**-52), 1.0)
    r = ((F * (1.0 + (P + 8) * 2.0**-52)) / xp.sqrt(q)) * (1.0 + 2.0**-50)
    return xp.where(big & (r < rn), r, rn)


def exclusive_lasso(W, b, sort=sort_desc, check_finite=False):
    """x_r = sign(w_r) (|w_r| - tau_r)_+ with the exact exclusive threshold
    (see :func:`exclusive_magnitudes`); b = inf gives 0.  A row holding NaN
    or Inf is returned as it is (nothing to solve; as every backend does).

    ``sort(A, xp)`` sorts rows decreasingly (a backend may pass a faster one).
    No host synchronisation, except with ``check_finite``: then
    :class:`~proxlib.backends.NonFiniteInput` where W holds NaN or Inf,
    read off the last shifted sum of each row (NaN or Inf exactly where the
    row is: the magnitudes are scaled, so no finite row overflows).
    On torch tensors the whole operator can run as one Triton kernel
    (``EXCLUSIVE_ROWS``; float32/float64 rows, sorted in registers up to
    :data:`._triton_exclusive.MAX_M` entries, longer ones by Newton's method
    over tiles).
    """
    xp = array_namespace(W)
    if W.shape[1] == 0 or W.shape[0] == 0:
        return xp.asarray(W, copy=True)
    b = upcast(b, xp)
    tx = _triton_exclusive_rows(W)
    if tx is not None:  # every step below, in one launch
        X, total = tx.exclusive_lasso(W, b)
        if check_finite:
            check_row_norms(total, xp)
        return X
    W64, As, s = _scaled_magnitudes(W, xp)
    Y = sort(As, xp)
    finite = xp.isfinite(b)
    with errstate(W):
        F = shifted_sums(Y, xp)
        total = F[:, -1] + Y[:, 0]  # NaN or Inf exactly where the row is
        if check_finite:
            check_row_norms(total, xp)
        U = exclusive_magnitudes(As, Y, F, xp.where(finite, b, 0.0), xp)
    U = xp.where(finite[:, None], U, 0.0)
    # b = 0 or a row holding NaN or Inf: the row itself (its scaled copy may
    # have lost entries below 2^-1074 s)
    X = xp.where(((b == 0) | ~xp.isfinite(total))[:, None], W64, signed_like(W64, U * s[:, None], xp))
    return xp.astype(X, W.dtype, copy=False)


def group_exclusive_shrink(Y, F, a, b, xp, gather=False):
    """The factor c in (0, 1) of x = c u(b c) on rows with ||Y|| > a > 0, b > 0.

    u(beta) is the exclusive-lasso prox with parameter beta; c is the unique root
    of g(c) = c - 1 + a / ||u(b c)||, which increases in c (||u(beta)|| decreases
    in beta), with g(0) = a/||Y|| - 1 < 0 < g(1).  ``Y`` is sorted decreasingly,
    ``F`` its shifted sums.

    Step 1: entry j is in the support of u(b c) iff c < c_j = Y_j / (b F_j), and
    c_j decreases in j, so the support size at the root is the last j with
    g(min(c_j, 1)) > 0.  At c = c_j the support is the top j - 1 entries and
    u_i = Y_i - Y_j (e = 0), so g(c_j) = c_j - 1 + a / sqrt(D2_j) with
    D2_j = sum_{i<=j} (Y_i - Y_j)^2, for every j at once by the recurrence
    D2_{j+1} = D2_j + d_j (2 F_j + j d_j), d_j = Y_j - Y_{j+1} >= 0: a
    cumulative sum of non-negative terms (no cancellation), O(m) per row and
    no host read.  Where c_j >= 1, g(1) = a / ||u(b)|| > 0.
    Step 2: on [c_{k+1}, c_k] the support is the top k entries; with
    e = (Y_k - b c F_k) / (1 + b c k) and d_i = Y_i - Y_k (i <= k),
    ||u||^2 = sum d_i^2 + 2 e F_k + k e^2 and
    g'(c) = 1 + a b (F_k + k e) S_k / (||u||^3 (1 + b c k)^2) > 0 (all terms
    positive, no cancellation).  Newton's method safeguarded by bisection runs
    until the bracket cannot shrink in floating point.

    Host synchronisation: one scalar read per 4 Newton steps (typically one);
    ``gather`` (the host's route): also a ``nonzero`` where the search drops
    its finished rows (:func:`group_exclusive_factor`).
    """
    G, m = Y.shape
    dev = device(Y)
    rows = xp.arange(G, device=dev)
    j = xp.arange(m, device=dev)
    cb = xp.clip(Y / (b[:, None] * F), max=1.0)  # c_j clipped to 1 (F_1 = 0 -> 1)
    cb = xp.where(F > 0, cb, 1.0)
    d = Y[:, :-1] - Y[:, 1:]
    D2j = xp.cumulative_sum(d * (2.0 * F[:, :-1] + xp.astype(j[1:], Y.dtype) * d), axis=1, include_initial=True)
    with errstate(Y):
        gj = cb - 1.0 + a[:, None] / xp.sqrt(D2j)  # a / 0 = inf: u(b c_j) = 0
    positive = (gj > 0) | (cb >= 1.0)
    k = xp.max(xp.where(positive, j[None, :] + 1, 1), axis=1)  # g(c_1 = 1) > 0
    cb = xp.concat([cb, xp.zeros((G, 1), dtype=Y.dtype, device=dev)], axis=1)  # c_{m+1} = 0
    kf = xp.astype(k, Y.dtype)
    Yk = Y[rows, k - 1]
    Fk = F[rows, k - 1]
    D = xp.where(j[None, :] < k[:, None], Y - Yk[:, None], 0.0)
    D2 = xp.sum(D * D, axis=1)
    return group_exclusive_factor(Yk, Fk, D2, kf, cb[rows, k], cb[rows, k - 1], a, b, xp, gather=gather)


def group_exclusive_factor(Yk, Fk, D2, kf, left, right, a, b, xp, gather=False):
    """Step 2 of :func:`group_exclusive_shrink`: the root c in [left, right] of
    g(c) = c - 1 + a / ||u(b c)|| once the support of u is known to be its top
    k entries, from four statistics of that support per row: its smallest
    (scaled) magnitude Y_k, F_k = sum_i (Y_i - Y_k), D2 = sum_i (Y_i - Y_k)^2
    and k (float).  ``left``/``right`` bracket the root (g(left) <= 0 < g(right)).

    With e = (Y_k - b c F_k) / (1 + b c k): ||u||^2 = D2 + 2 e F_k + k e^2 and
    g'(c) = 1 + a b (F_k + k e) S_k / (||u||^3 (1 + b c k)^2) > 0, S_k = F_k + k Y_k
    (no cancellation).  Newton's method safeguarded by bisection runs until the
    bracket cannot shrink in floating point (one scalar read every 4 steps).
    ``gather`` (the host's route, as :func:`group_exclusive`'s: NumPy, CPU
    tensors): the rows still searching go on alone, gathered by a
    ``nonzero``, once at most half of the searched rows are (the steps then
    cost the rows left, not every row up to the slowest one's last step:
    0.31x the time on 300,000 mixed rows); an accelerator's route keeps
    every row, as its steps cost launches, not rows, and reads no more.  The
    same c either way, bit for bit.  The
    statistics are sums and extrema over the support, so a row split across
    devices needs only their all-reduced values (see ``proxlib.torch.sharded``).
    On CUDA tensors, when Triton imports, the same steps run as one kernel
    with no host read (:mod:`._triton_shrink`, ``ROOT_SEARCH``).
    """
    ts = _triton_shrink(Yk)
    if ts is not None:
        return ts.group_exclusive_factor(Yk, Fk, D2, kf, left, right, a, b, _MAX_ROOT_ITER)
    Sk = Fk + kf * Yk

    def g_and_slope(c):
        den = 1.0 + b * c * kf
        e = (Yk - b * c * Fk) / den
        N = xp.sqrt(D2 + 2.0 * e * Fk + kf * e * e)
        g = c - 1.0 + a / N
        Nd = N * den  # (N den)^2 N, not N^3 den^2: den reaches b, N about 1/b
        slope = 1.0 + a * b * (Fk + kf * e) * Sk / (Nd * Nd * N)
        return g, slope

    def middle(left, right):
        # geometric while the bracket spans more than a factor 4: the root is
        # about a / (b ||w||) (relative to the row's scale), 1e-270 for b = 2^900,
        # which halving [0, 1] would take ~900 steps to reach
        wide = right > 4.0 * left
        return xp.where(wide, xp.sqrt(left) * xp.sqrt(right), 0.5 * (left + right))

    # c >= 2^-1022: the root is at least about 1 / (2 m b), far above that for
    # the b <= 2^900 that proxlib passes (larger b are solved by saturation,
    # see proxlib._range)
    left = xp.clip(left, min=2.0**-1022)
    c = middle(left, right)
    full, pos = None, None  # (gather) every row's c, and the rows still searched
    for it in range(_MAX_ROOT_ITER):
        g, slope = g_and_slope(c)
        neg = g < 0
        left = xp.where(neg, c, left)
        right = xp.where(neg, right, c)
        newton = c - g / slope
        # converged: the Newton correction is below half a unit of c (the
        # slope is >= 1, so |g| < ulp(c)); bisecting from there (as a test of
        # nxt == c did) walked ~40 steps back down to the same c
        converged = (newton == c) | (g == 0)
        ok = (newton > left) & (newton < right)
        nxt = xp.where(ok, newton, middle(left, right))
        c = xp.where(converged, c, nxt)
        # a converged row stays put and a stuck bracket holds two adjacent
        # floats, so extra steps change nothing: read the host only every
        # _ROOT_CHECK steps (about once per call)
        if it % _ROOT_CHECK != _ROOT_CHECK - 1:
            continue
        searching = ~(converged | ~((left < nxt) & (nxt < right)))
        if not gather:
            if not bool(xp.any(searching)):
                break
            continue
        # on the host's route, the rows still searching go on alone once they are at
        # most half of those searched: most rows stop within 4-8 steps, the
        # slowest of 10^6 after 20-40, which every row took before (the same
        # c, bit for bit: the steps are row by row)
        n = int(xp.sum(xp.astype(searching, xp.int64)))
        if n == 0:
            break
        if 2 * n <= c.shape[0]:
            keep = xp.nonzero(searching)[0]
            if full is None:
                full, pos = c, keep
            else:
                full[pos] = c
                pos = pos[keep]
            Yk, Fk, D2, kf, Sk, left, right, c = (v[keep] for v in (Yk, Fk, D2, kf, Sk, left, right, c))
            a, b = (v[keep] if getattr(v, "ndim", 0) else v for v in (a, b))
    if full is not None:
        full[pos] = c
        c = full
    return c


def _shrink_every_row(Y, F, a, b, general, xp):
    """:func:`group_exclusive_shrink` on every row, the rows not ``general``
    replaced by a stand-in whose root exists and is found in a step: Y =
    (1, 0, ..., 0) (shifted sums F_j = j - 1), a = 1/2, b = 1, where
    g(c) = 3c/2 - 1/2 (root 1/3)."""
    m = Y.shape[1]
    j = xp.arange(m, dtype=Y.dtype, device=device(Y))
    keep = general[:, None]
    Ys = xp.where(keep, Y, xp.astype(j == 0, Y.dtype)[None, :])
    Fs = xp.where(keep, F, j[None, :])
    return group_exclusive_shrink(Ys, Fs, xp.where(general, a, 0.5), xp.where(general, b, 1.0), xp)


def group_exclusive(W, a, b, sort=sort_desc, check_finite=False, gather=True):
    """Exact prox of a_r ||x||_2 + b_r/2 ||x||_1^2 on each row.

    x = 0 iff ||w|| <= a; else x = c u with u the exclusive-lasso prox of w with
    parameter b c and c = 1 - a/||u||_2 in (0, 1] (:func:`group_exclusive_shrink`;
    c = 1 - a/||w|| when b = 0 and c = 1 when a = 0).  b = inf gives 0.
    A row holding NaN or Inf is returned as it is (as by
    :func:`exclusive_lasso`).  ``check_finite``: as
    :func:`exclusive_lasso`'s, from the row norms.

    ``gather``: the rows that need the root search (||w|| > a > 0, b > 0)
    are found by a host read and ``nonzero`` and searched alone, and the
    search drops the rows it has finished (the least work: the host's
    choice); ``False`` (a device's): every row is searched,
    the others on a stand-in row, and the host reads only the search's
    convergence (:func:`group_exclusive_factor`).  The same result, bit for
    bit: the search is row by row, and a converged row stays put.  On torch
    tensors the whole operator can run as one Triton kernel
    (``EXCLUSIVE_ROWS``, as :func:`exclusive_lasso`; its sums over a row
    add in another order: the same result to a few units in the last place).
    """
    xp = array_namespace(W)
    G, m = W.shape
    if m == 0 or G == 0:
        return xp.asarray(W, copy=True)
    a = upcast(a, xp)
    b = upcast(b, xp)
    tx = _triton_exclusive_rows(W, group=True)
    if tx is not None:  # every step below, in one launch
        X, nrm = tx.group_exclusive(W, a, b, _MAX_ROOT_ITER)
        if check_finite:
            check_row_norms(nrm, xp)
        return X
    tm = _long_group_exclusive_rows(W)
    if tm is not None:  # rows beyond the sort kernel's: the metric kernel in the metric 1, one launch
        if check_finite and not bool(xp.all(xp.isfinite(W))):
            raise NonFiniteInput("input contains NaN or Inf")
        return tm.group_exclusive_metric(W, None, a, b, _MAX_ROOT_ITER)  # (None: the metric 1, read with stride 0)
    W64, As, s = _scaled_magnitudes(W, xp)
    with errstate(W):
        a_s = a / s  # may overflow to inf: then x = 0
        Y = sort(As, xp)
        F = shifted_sums(Y, xp)
        nrm = xp.sqrt(xp.sum(Y * Y, axis=1))
        if check_finite:  # (the scaled norm is finite exactly where the row is)
            check_row_norms(nrm, xp)
        finite = xp.isfinite(b)
        bf = xp.where(finite, b, 0.0)
        nonzero = (nrm > a_s) & finite
        c = xp.astype(nonzero, xp.float64)  # (not where(nonzero, 1.0, 0.0): torch makes that float32)
        group_only = nonzero & (bf == 0)
        c = xp.where(group_only, 1.0 - a_s / xp.where(group_only, nrm, 1.0), c)
        general = nonzero & (a_s > 0) & (bf > 0)
        if not gather:
            c = xp.where(general, _shrink_every_row(Y, F, a_s, bf, general, xp), c)
        elif bool(xp.any(general)):
            idx = xp.nonzero(general)[0]
            c[idx] = group_exclusive_shrink(Y[idx, :], F[idx, :], a_s[idx], bf[idx], xp, gather=True)
        U = exclusive_magnitudes(As, Y, F, bf * c, xp)
        # rows without the exclusive part are the group lasso's c w, formed from w
        # itself (its scaled copy may have lost entries below 2^-1074 s); rows
        # holding NaN or Inf, w itself
        X = xp.where((bf == 0)[:, None], W64 * c[:, None], signed_like(W64, U * (c * s)[:, None], xp))
        X = xp.where(xp.isfinite(nrm)[:, None], X, W64)
    return xp.astype(X, W.dtype, copy=False)


def weighted_l1(v, w):
    """sign(v) (|v| - w)_+ (soft thresholding)."""
    xp = array_namespace(v)
    return signed_like(v, xp.clip(xp.abs(v) - w, min=0.0), xp)


def weighted_l2sq(v, w):
    """v / (1 + 2 w)."""
    return v / (1 + 2 * w)


def _cbrt(x, xp):
    cbrt = getattr(xp, "cbrt", None)
    if cbrt is not None:
        return cbrt(x)
    return signed_like(x, xp.abs(x) ** (1.0 / 3.0), xp)  # a starting point only: Newton refines it


def _lp_closed_form(av, lam, p, xp):
    """Largest stationary point of 1/2 (x - av)^2 + lam x^p for p = 1/2, 2/3.

    p = 1/2: x = u^2, u the largest root of u^3 - av u + lam/2 = 0 (trigonometric
    form).  p = 2/3: x = u^3, u the largest root of u^4 - av u + 2 lam/3 = 0
    (Ferrari, resolvent m^3 - c m - av^2/8 = 0).  NaN where rounding leaves
    the formula's domain; the caller then starts Newton from av instead.
    """
    with errstate(av):
        if p == 0.5:
            arg = -quotient(3.0 * lam, 4.0 * av, xp) * xp.sqrt(quotient(3.0, av, xp))
            u = 2.0 * xp.sqrt(av / 3.0) * xp.cos(xp.acos(arg) / 3.0)
            return u * u
        # (lam is a number for one term, an array for a batch of terms: every
        # division by a number that involves it is ``divided``, so both forms
        # round alike on every device, CUDA's torch included)
        c = divided(2.0 * lam, 3.0, xp)
        # c * c * c, not c**3: a Python float power raises OverflowError for
        # lam > ~1e102, a product gives inf (then NaN, and the caller starts
        # Newton from av instead)
        D = av**4 / 256.0 - divided(c * c * c, 27.0, xp)
        sq = xp.sqrt(xp.clip(D, min=0.0))
        m_real = _cbrt(av * av / 16.0 + sq, xp) + _cbrt(av * av / 16.0 - sq, xp)
        if not hasattr(c, "shape"):  # one lam (a Python float)
            arg = divided(3.0 * av * av, 16.0 * c, xp) * math.sqrt(3.0 / c) if c > 0 else av * 0.0
            m_trig = 2.0 * math.sqrt(c / 3.0) * xp.cos(xp.acos(arg) / 3.0)
        else:  # per-entry lam (lp_solve): c = 0 gives NaN here, unused since then D >= 0
            arg = (3.0 * av * av / (16.0 * c)) * xp.sqrt(quotient(3.0, c, xp))
            m_trig = 2.0 * xp.sqrt(divided(c, 3.0, xp)) * xp.cos(xp.acos(arg) / 3.0)
        mm = xp.where(D >= 0, m_real, m_trig)
        r = xp.sqrt(2.0 * mm)
        u = 0.5 * (r + xp.sqrt(2.0 * av / r - 2.0 * mm))
        return u * u * u


def lp(v, lam, p):
    """Global minimiser of 1/2 (x - v)^2 + lam |x|^p, elementwise.

    Host synchronisation: one scalar read per 4 Newton steps (the loop stops
    when no iterate moves; typically under ten steps).
    """
    xp = array_namespace(v)
    v64 = upcast(v, xp)
    av = xp.abs(v64)
    if lam == 0:
        return xp.asarray(v, copy=True)
    if p == 0:  # (av <= threshold: 0; NaN and +-inf pass through)
        return xp.astype(xp.where(av <= hard_threshold(lam), 0.0, v64), v.dtype, copy=False)
    if p == 1:
        return xp.astype(signed_like(v64, xp.clip(av - lam, min=0.0), xp), v.dtype, copy=False)
    tau, beta = lp_constants(lam, p)
    return xp.astype(lp_solve(v64, av, lam, p, tau, beta, xp), v.dtype, copy=False)


def lp_solve(v64, av, lam, p, tau, beta, xp):
    """The global minimiser of 1/2 (x - v)^2 + lam |x|^p for 0 < p < 1, in
    float64 (``v64`` the data in float64, ``av`` = |v64|), given the threshold
    ``tau`` and the convex branch's start ``beta`` (see :func:`lp`).  ``lam``,
    ``tau`` and ``beta`` are Python floats or float64 arrays of ``v64``'s shape
    (one lam per entry: the prox in a diagonal metric,
    :func:`proxlib.backends._metric_kernels.lp_metric`)."""
    # Candidates for a non-zero result.  tau is a power with a rounded exponent
    # (off by up to ~eps |ln(lam)|), so it only pre-selects, with a margin; the
    # decision between x* and 0 compares their objectives at the end.
    keep = av > tau * (1.0 - 1e-9)
    # Entries that end at 0 iterate harmlessly from 2*beta (no 0**negative).
    x = xp.where(keep, av, 2.0 * beta)
    if p in (0.5, 2.0 / 3.0):
        xc = _lp_closed_form(xp.where(keep, av, 1.0), lam, p, xp)
        x = xp.where(keep & xp.isfinite(xc) & (xc > beta) & (xc <= av), xc, x)

    def newton(x):
        # f'(x) = x - av + q, f''(x) = 1 - (1 - p) q / x with q = lam p x^(p-1),
        # formed as lam (p (x^p / x)): the exponent p is the caller's exact float, so
        # q is accurate to a few eps at any scale.  (Powers with the rounded
        # exponents 1/(2-p) or p-2 of numbers far from 1 lose eps |ln y| relative:
        # 1e-11 at 1e300 scales with p near 1.  And lam p first would be
        # subnormal for a subnormal lam, with as few bits: lam = 3 2^-1074, p =
        # 0.9 gave lam p = lam, 11% off, and x 3e-14 relative off at |v| = 7e-283.)
        # x^p <= max(x, 1): no overflow; q <= |v| - x + f'(x) on the iterates.
        # Entries that end at 0 may give NaN here; they are masked out by ``keep``.
        with errstate(x):
            q = lam * (p * (x**p / x))
            return x - (x - av + q) / (1.0 - (1.0 - p) * (q / x))

    # One free step lands at or right of the root (f' is convex and increasing
    # on x > beta); from there Newton decreases monotonically to the root.
    x = xp.where(keep, xp.clip(newton(x), min=beta), x)
    for it in range(_MAX_ROOT_ITER):
        nxt = xp.where(keep, newton(x), x)
        moved = keep & (nxt < x) & (nxt > beta)
        # an entry that did not move never moves again: extra steps change
        # nothing, so the host reads the test only every _ROOT_CHECK steps
        if it % _ROOT_CHECK == _ROOT_CHECK - 1 and not bool(xp.any(moved)):
            break
        x = xp.where(moved, nxt, x)
    # x* wins iff f(x*) < f(0), i.e. (f(x*) - f(0))/x* = x*/2 - |v| + lam x*^p/x* < 0
    # (divided by x* so nothing overflows at 1e300 scales; the exponent is the
    # caller's p, not a rounded 1/(2-p)).  At an exact tie 0 is returned, as
    # documented: |v| = 6, lam = 8, p = 1/2 gives 2 - 6 + 8 * 2/4 = 0 exactly.
    with errstate(x):
        keep = keep & (0.5 * x - av + lam * (x**p / x) < 0.0)
    # NaN and +-inf pass through (unchecked input: as through the maps of the
    # other penalties; the comparisons above would have made them 0)
    return xp.where(av < math.inf, xp.where(keep, signed_like(v64, x, xp), 0.0), v64)
