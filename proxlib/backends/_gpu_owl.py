r"""OWL prox and isotonic regression as data-parallel array code (NumPy or CuPy).

Everything here is written once against the NumPy API; ``xp`` is the input's
own module, so with CuPy input every step runs on the input's device and no
array is copied to the host.  The only device-to-host traffic is a handful of
scalars per round (loop termination, and the sizes that boolean compaction and
``nonzero`` need to allocate their outputs); each is one implicit stream
synchronisation and 8 bytes.

OWL
---
``owl(v, w)``: sort ``|v|`` (one ``xp.sort``, no argsort), solve the isotonic
step on ``u = w - |v|_sorted-desc`` (below), and give each entry the value of
the block that holds its magnitude: ties in ``|v|`` always share a block, so a
``searchsorted`` of ``|v_i|`` into the blocks' smallest magnitudes finds it.
No permutation is ever materialised.

Isotonic regression as a convex hull
------------------------------------
The increasing isotonic regression of ``u`` (length n) is the slope sequence of
the greatest convex minorant of the cumulative-sum diagram ``P_k = u_1 + ... +
u_k``, k = 0..n: the lower convex hull of the n + 1 points ``(k, P_k)``.  A
*block* of pooled entries is a hull edge, its mean the edge's slope.  The
algorithm keeps a list ``V`` of surviving vertices (initially all points) and
only ever deletes points that cannot be strict hull vertices:

* a vertex is *reflex* when the edge into it is at least as steep as the edge
  out of it (``mean_left >= mean_right``: the pool-adjacent-violators test,
  with ties pooled so that the surviving chains are strictly convex);
* **peel**: delete every reflex vertex at once.  Each lies on or above the chord
  of its neighbours, so none is a strict hull vertex.  This is PAVA's pooling of
  all adjacent violators in parallel; it is cheap (a few elementwise passes)
  and removes most vertices on noisy data, but a single violator can need O(n)
  peels to propagate;
* **merge**: the reflex vertices split ``V`` into maximal convex *runs*; two
  neighbouring runs are replaced by the lower hull of their union, which keeps
  a prefix of the left run and a suffix of the right one, joined by the
  *bridge* (their common tangent).  All bridges of a round are found at once
  by a two-sided binary search (below) in O(log |left| + log |right|)
  vectorised steps.  A round bridges either *every* junction (each deleted
  range lies above the hull of two runs, hence above the hull of everything,
  so overlapping ranges are harmless; the number of runs never grows and
  usually collapses) or *pairs* of runs (0 with 1, 2 with 3, ...: every merged
  pair is convex, so the number of runs at least halves).  The default bridges
  every junction and falls back to pairs for one round whenever a round
  failed to halve the runs, so runs halve at least every second round.

A round peels when reflex vertices are dense (at least ``1/peel_density`` of
the vertices, so a peel shrinks ``V`` by a constant factor) and merges
otherwise.  Rounds stop when no vertex is reflex: the chain is then convex and
contains every strict hull vertex, i.e. it *is* the lower hull, and its edge
slopes are the isotonic fit.

Cost: peels take O(n) work in total (geometric shrinking) and merges O(|V|)
work each plus the bridge steps over the pairs; there are O(log n) merge rounds
(runs halve every second round; a peel adds at most one run).  Worst case
O(n log n) work and O(log^2 n) vectorised steps.  Measured on OWL inputs
(|v| Gaussian, BH/OSCAR/stairwise weights, n = 1e3..1e7): one to three peels
and zero to seven merges with 20 to 230 bridge steps in all; every step is a
few dozen small array operations, so on a GPU the merge rounds are bound by
kernel-launch latency, not by memory traffic.  Scratch: the sorted
magnitudes, ``u``, the prefix sums and their compensation (n + 1 each) until
the first peel, then a (|V|, 3) array of the surviving vertices.

Bridge search
-------------
Left run ``l_0..l_a`` and right run ``r_0..r_b`` share the junction ``l_a =
r_0`` (a reflex vertex, x = m).  With edge slopes ``eL_i``, ``eR_j`` (strictly
increasing within each run), the bridge slope ``s*`` is where the lowest line
of slope s under the left run stops being below the lowest one under the right
run; the bridge joins ``l_p``, ``p = #{i: eL_i < s*}``, to ``r_q``, ``q = #{j:
eR_j <= s*}``, and the vertices strictly between them are deleted.  Each step
takes the middle edge i of the left range and j of the right range; with
``M = mean(l_i .. r_j)`` (slope of the chord):

* ``eL_i >= M``: ``s* <= eL_i``, so ``p <= i``;
* ``eR_j <= M``: ``s* >= eR_j``, so ``q >= j + 1``;
  (when one of these holds and ``eL_i < eR_j``, the other range shrinks too);
* neither: the tangent lines through ``l_i`` (slope eL_i) and ``r_j`` (slope
  eR_j) cross at one side of the junction; if they cross at or left of it,
  ``q <= j``, else ``p >= i + 1``  (Overmars & van Leeuwen's case).

Once one side is resolved, the other is a point-to-chain tangent search with
the same tests.  Every step halves at least one range, so ``ceil(log2 a) +
ceil(log2 b)`` steps suffice; the search runs for all pairs at once with a
fixed step count (one scalar read per round for the longest run).

Accuracy
--------
``u`` is scaled by a power of two (exact) so that sums can neither overflow nor
underflow.  Prefix sums are compensated: ``H = cumsum(u)`` in any order, then
each step's exact rounding error ``delta_k = H_{k-1} + u_k - H_k`` (TwoSum) is
summed into ``D``; ``P = H + D`` to about n eps^2 of the largest prefix sum,
so every block sum ``(H_j - H_i) + (D_j - D_i)`` is accurate to a few ulps *of
the block sum* plus that (1e-24 of max|P| at n = 1e8), where plain prefix
differences would err by eps max|P|.  Block means are therefore about as
accurate as a sequential PAVA's, whatever n is.
"""

from __future__ import annotations

from .._dispatch import array_namespace

__all__ = ["owl", "isotonic_increasing", "isotonic_blocks"]

# Peel when at least 1/PEEL_DENSITY of the vertices are reflex.
PEEL_DENSITY = 8


def _power_of_two_scale(u, xp):
    """A power of two s with max|u|/s in [1, 2) (1 if u == 0), as a 0-d device array."""
    amax = xp.max(xp.abs(u))
    _, e = xp.frexp(amax)
    s = xp.ldexp(xp.ones_like(amax), e - 1)
    return xp.where(amax > 0, s, xp.ones_like(amax))


def compensated_prefix(u, xp):
    """(H, D), each of length n + 1, with H + D = the exact prefix sums of ``u``
    to about n eps^2 max|H|.

    ``H = [0, cumsum(u)]`` may be summed in any order (CuPy's scan is not
    sequential); TwoSum gives the exact error of each step *given* H, and those
    errors, being tiny, are summed without significant loss.
    """
    n = u.shape[0]
    H = xp.zeros(n + 1, dtype=xp.float64)
    xp.cumsum(u, out=H[1:])
    prev = H[:-1]
    D = xp.zeros(n + 1, dtype=xp.float64)
    e = D[1:]  # scratch until the last line; two temporaries besides H and D
    t = prev + u
    bp = t - prev
    xp.subtract(t, bp, out=e)
    xp.subtract(prev, e, out=e)
    xp.subtract(u, bp, out=bp)
    xp.add(e, bp, out=e)  # e = (prev - (t - bp)) + (u - bp): prev + u == t + e exactly
    xp.subtract(t, H[1:], out=bp)
    xp.add(bp, e, out=t)  # the step's error given H: (t - H_k) + e
    xp.cumsum(t, out=e)
    return H, D


def _edge_means(P, xp):
    """Slope of every edge of the chain (= mean of u over each block).

    ``P`` holds one column (x, H, D) per vertex: position and compensated
    prefix sum.
    """
    sums = (P[1, 1:] - P[1, :-1]) + (P[2, 1:] - P[2, :-1])
    return sums / (P[0, 1:] - P[0, :-1])


def _merge_keep(P, eg, reflex, pairwise, xp, stats=None):
    """Keep-mask of the vertices after one merge round (see the module doc).

    ``pairwise``: bridge runs (0, 1), (2, 3), ... (at least halves the number
    of runs); otherwise bridge every junction at once (usually far fewer rounds;
    the removal ranges of neighbouring junctions may then overlap, which is
    safe because each range is removed on its own merit).
    """
    B = P.shape[1] - 1  # number of edges
    J = xp.nonzero(reflex)[0] + 1  # reflex vertices = run boundaries
    bounds = xp.concatenate([xp.zeros(1, dtype=J.dtype), J, xp.full(1, B, dtype=J.dtype)])
    if pairwise:
        k = (bounds.shape[0] - 1) // 2
        Ls, M, Re = bounds[0 : 2 * k : 2], bounds[1 : 2 * k : 2], bounds[2 : 2 * k + 1 : 2]
    else:
        Ls, M, Re = bounds[:-2], bounds[1:-1], bounds[2:]
    a = M - Ls  # edges in the left run
    b = Re - M  # edges in the right run
    # p in [0, a-1] and q in [1, b]: the junction itself is always deleted
    # (it is reflex), which also guarantees progress under rounding.
    loL = xp.zeros_like(a)
    hiL = a - 1
    loR = xp.ones_like(b)
    hiR = b
    # Ranges of sizes a-1 and b-1: each step halves one of them.
    steps = 2 * int(xp.max(xp.maximum(a, b))).bit_length()  # one scalar read
    if stats is not None:
        stats["bridge_steps"] = stats.setdefault("bridge_steps", 0) + steps
    xM = P[0, M]
    for _ in range(steps):
        uL = loL < hiL
        uR = loR < hiR
        i = (loL + hiL) // 2
        j = (loR + hiR) // 2
        Pl = P[:, Ls + xp.where(uL, i, loL)]
        Pr = P[:, M + xp.where(uR, j, loR)]
        eL = eg[Ls + i]
        eR = eg[xp.minimum(M + j, B - 1)]  # the clipped index is read only when unused
        S = (Pr[1] - Pl[1]) + (Pr[2] - Pl[2])
        mean = S / (Pr[0] - Pl[0])
        condA = eL >= mean  # s* <= eL_i  ->  p <= i
        condB = eR <= mean  # s* >= eR_j  ->  q >= j + 1
        lt = eL < eR
        neither = ~(condA | condB)
        # Tangent lines through l_i (slope eL) and r_j (slope eR) cross at or
        # left of the junction  <=>  S <= eL * (x_m - x_li) + eR * (x_rj - x_m).
        left_cross = S <= eL * (xM - Pl[0]) + eR * (Pr[0] - xM)
        both = uL & uR
        set_loL = (both & ((condB & ~condA & lt) | (neither & ~left_cross))) | (uL & ~uR & ~condA)
        set_hiR = (both & ((condA & ~condB & lt) | (neither & left_cross))) | (uR & ~uL & ~condB)
        hiL = xp.where(uL & condA, i, hiL)
        loL = xp.where(set_loL, i + 1, loL)
        loR = xp.where(uR & condB, j + 1, loR)
        hiR = xp.where(set_hiR, j, hiR)
    # Delete the vertices strictly between l_p and r_q: the half-open ranges
    # [Ls+p+1, M+q).  Starts are distinct, and so are ends, but a start may
    # equal another junction's end, hence two scatter arrays.
    first = xp.zeros(B + 2, dtype=xp.int32)
    first[Ls + loL + 1] = 1
    past = xp.zeros(B + 2, dtype=xp.int32)
    past[M + loR] = 1
    return xp.cumsum(first[: B + 1] - past[: B + 1]) == 0


def isotonic_blocks(
    u,
    *,
    peel_density: int = PEEL_DENSITY,
    merge: str = "auto",
    stats: dict | None = None,
    overwrite_input: bool = False,
):
    """Blocks of the increasing isotonic regression of ``u`` (1-D).

    Returns ``(V, means)``: block k covers ``u[V[k]:V[k+1]]`` and its fitted
    value is ``means[k]`` (float64); ``V[0] = 0``, ``V[-1] = n``, and
    ``means`` is strictly increasing up to rounding.

    Round policy (the result does not depend on it; tests vary it): peel when
    at least ``1/peel_density`` of the vertices are reflex (0 never peels after
    the first round, a huge value always peels); ``merge`` is ``"auto"``
    (bridge every junction, but pairwise right after an all-junction round
    that did not halve the runs), ``"all"`` or ``"pairs"``.  ``stats``, if
    given, receives round counts.  ``overwrite_input`` lets a float64 ``u``
    be scaled in place (saves one n-sized temporary).
    """
    xp = array_namespace(u)
    n = u.shape[0]
    if n == 0:
        return xp.zeros(1, dtype=xp.int64), xp.zeros(0, dtype=xp.float64)
    s = _power_of_two_scale(u, xp)
    if overwrite_input and u.dtype == xp.float64:
        us = xp.divide(u, s, out=u)
    else:
        us = u.astype(xp.float64) / s
    del u
    # First peel straight from u: interior point k is reflex iff u[k-1] >= u[k].
    keep = xp.ones(n + 1, dtype=bool)
    keep[1:n] = us[:-1] < us[1:]
    H, D = compensated_prefix(us, xp)
    del us
    V = xp.nonzero(keep)[0]
    del keep
    P = xp.empty((3, V.shape[0]), dtype=xp.float64)  # columns (x, H, D) per vertex
    P[0] = V
    xp.take(H, V, out=P[1])
    del H
    xp.take(D, V, out=P[2])
    del D, V
    peels, merges, runs_before_all = 1, 0, None
    while True:
        eg = _edge_means(P, xp)
        reflex = eg[:-1] >= eg[1:]  # interior vertices 1..B-1
        n_reflex = int(xp.count_nonzero(reflex))  # one scalar read per round
        if n_reflex == 0:
            break
        if n_reflex * peel_density >= eg.shape[0]:
            keep = xp.concatenate([xp.ones(1, dtype=bool), ~reflex, xp.ones(1, dtype=bool)])
            peels += 1
            runs_before_all = None
        else:
            runs = n_reflex + 1
            if merge == "auto":
                pairwise = runs_before_all is not None and 2 * runs > runs_before_all
            else:
                pairwise = merge == "pairs"
            runs_before_all = None if pairwise else runs
            keep = _merge_keep(P, eg, reflex, pairwise, xp, stats)
            merges += 1
        P = P[:, keep]
    if stats is not None:
        stats.update(peels=peels, merges=merges, blocks=int(eg.shape[0]))
    return P[0].astype(xp.int64), eg * s


def isotonic_increasing(u, **kwargs):
    """The increasing isotonic regression of ``u`` as a full-length float64 array."""
    xp = array_namespace(u)
    n = u.shape[0]
    V, means = isotonic_blocks(u, **kwargs)
    if n == 0:
        return xp.zeros(0, dtype=xp.float64)
    start = xp.zeros(n, dtype=xp.int64)
    start[V[1:-1]] = 1
    return means[xp.cumsum(start)]


def owl(v, w, **kwargs):
    """OWL prox of a 1-D ``v`` with non-increasing ``w`` >= 0 (kernel contract).

    x = sign(v) * max(fit, 0), where fit is the non-increasing isotonic
    regression of |v|_sorted-desc - w, i.e. minus the increasing one of
    w - |v|_sorted-desc.
    """
    xp = array_namespace(v)
    n = v.shape[0]
    if n == 0:
        return v.copy()
    y = xp.flip(xp.sort(xp.abs(v)))  # magnitudes, decreasing (a view: no second copy)
    # u = w - y is handed over (no reference kept here) so that it can be
    # scaled in place and freed early.
    V, means = isotonic_blocks(
        w.astype(xp.float64, copy=False) - y.astype(xp.float64, copy=False), overwrite_input=True, **kwargs
    )
    value = xp.maximum(-means, 0.0).astype(v.dtype)  # per block, non-increasing
    # Equal magnitudes are always pooled (u is non-increasing across a tie), so
    # blocks are separated by strict gaps in |v|: block k holds the magnitudes
    # in [low_k, low_{k-1}) with low_k its smallest one, and the block of |v_i|
    # is the number of blocks whose smallest magnitude exceeds |v_i|.
    low = xp.ascontiguousarray(xp.flip(y[V[1:] - 1]))  # increasing
    block = (low.shape[0] - xp.searchsorted(low, xp.abs(v), side="right")).astype(xp.int64)
    return xp.sign(v) * value[block]
