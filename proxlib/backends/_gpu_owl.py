r"""OWL prox and isotonic regression as data-parallel array code, for any array namespace.

One code path for NumPy arrays, CuPy arrays and torch tensors on any device:
``xp = array_api_compat.array_namespace(x)`` and every allocation passes
``device=array_api_compat.device(x)``, so every step runs where the input lives
and no array is ever copied to the host.  On CUDA torch tensors, with Triton
installed, each merge round's bridge search is one Triton kernel
(``_triton_isotonic``); everywhere else it is the vectorised loop of
``_bridge_cuts_array`` (the two compute the same thing, operation for operation).

Entry points: ``owl(v, w)`` (the kernel contract of ``proxlib.backends``: v
1-D float32/float64, w non-increasing >= 0 of the same length, dtype and device,
already multiplied by the step; returns a new array of v's dtype, v and w are
never written), ``isotonic_blocks(u)`` and ``isotonic_increasing(u)``.

OWL
---
``owl(v, w)``: sort ``|v|`` decreasingly (one sort, no argsort), take the
*exact* differences ``u = w - |v|_sorted`` as unevaluated sums ``uh + ul``
(TwoSum; ``w - y`` of two non-negative floats cannot overflow), solve the
increasing isotonic regression of u (below), clamp each block's mean into the
range of its end entries, and give each entry the value ``max(-mean, 0)`` of the
block that holds its magnitude: ties in ``|v|`` always share a block, so a
``searchsorted`` of ``|v_i|`` into the blocks' smallest magnitudes finds it,
and tied magnitudes get identical outputs by construction.  No permutation is
ever materialised.

Isotonic regression as a convex hull
------------------------------------
The increasing isotonic regression of ``u`` (length n) is the slope sequence of
the greatest convex minorant of the cumulative-sum diagram ``P_k = u_1 + ... +
u_k``, k = 0..n: the lower convex hull of the n + 1 points ``(k, P_k)``.  A
*block* of pooled entries is a hull edge, its mean the edge's slope.  The
algorithm keeps a chain ``V`` of surviving vertices (initially all points) and
only ever deletes points that cannot be strict hull vertices:

* a vertex is *reflex* when the edge into it is at least as steep as the edge
  out of it (``mean_left >= mean_right``: the pool-adjacent-violators test,
  with ties pooled so that the surviving chains are strictly convex);
* **peel**: delete every reflex vertex at once.  Each lies on or above the chord
  of its neighbours, so none is a strict hull vertex.  This is PAVA's pooling of
  all adjacent violators in parallel; the first peel compares the exact ``u``
  (``uh`` then ``ul``), so ties in ``|v|`` are pooled whatever the rounding;
* **merge**: the reflex vertices split ``V`` into maximal convex *runs*; two
  neighbouring runs are replaced by the lower hull of their union, which keeps
  a prefix of the left run and a suffix of the right one, joined by the
  *bridge* (their common tangent), found by a two-sided binary search (below).
  A round bridges either *every* junction (each deleted range lies above the
  hull of two runs, hence above the hull of everything, so overlapping ranges
  are harmless; the number of runs never grows and usually collapses) or
  *pairs* of runs (0 with 1, 2 with 3, ...: every merged pair is convex, so the
  number of runs at least halves).  The default bridges every junction and
  falls back to pairs for one round whenever a round failed to halve the runs,
  so runs halve at least every second round.

A round peels when reflex vertices are dense (as many as at least
``1/peel_density`` of the chain's edges, one fewer than its vertices, so a
peel shrinks ``V`` by a constant factor) and merges
otherwise.  Rounds stop when no vertex is reflex: the chain is then convex and
contains every strict hull vertex, i.e. it *is* the lower hull, and its edge
slopes are the isotonic fit.

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
ceil(log2 b)`` steps suffice.  The Triton kernel runs each program's pairs
until all are resolved; the array fallback runs all pairs for a common step
count (one extra scalar read per merge round for the longest run).

Accuracy
--------
* ``u = w - y`` is exact as ``uh + ul`` (TwoSum).  ``uh`` and ``ul`` are then
  scaled by one power of two (exact) that puts ``max|uh|`` in
  ``[2^(T-1), 2^T)``, ``T = 1019 - bit_length(n)``, as high as possible without
  any prefix sum, slope or tangent-test product overflowing; the scale factor is
  computed on the device (``frexp``/``ldexp``), not read by the host.  (Entries
  below ``max|u| * 2^-(2090 - bit_length(n))`` cannot all be represented after
  such a scaling; no pair of finite doubles is that far apart unless
  ``max|u| > 2^T`` and the small one is subnormal.)
* Prefix sums are compensated: ``H = cumsum(uh)`` in any order (a GPU scan is
  not sequential), then each step's exact rounding error ``(H_{k-1} + uh_k) -
  H_k`` (TwoSum) plus ``ul_k`` is summed into ``D``; ``P = H + D`` to about
  n eps^2 of the largest prefix sum.  Every block sum ``(H_j - H_i) + (D_j -
  D_i)`` is accurate to a few ulps *of the block sum* plus that bound
  (1e-24 of max|P| at n = 1e8), where plain prefix differences would err by eps
  max|P|.  In particular a block's sign (which decides the support: an OWL
  block is zero iff its sum of ``|v| - w`` is <= 0) is exact whenever the
  block sum exceeds that bound, and the rounding of ``|v| - w`` never decides
  it: ``v = [1, 5, 3.7e-175]``, ``w = [6, 2.8e-45, 0]`` gives zeros, as exact
  arithmetic does.
* Every point strictly between two neighbouring vertices of the chain lies on
  or above their chord: a peel deletes points above the chord of their
  neighbours, a merge points above the bridge, and the chain only ever moves
  down.  So the mean of every edge ``[i, j)`` lies between its end entries
  ``u_i`` and ``u_{j-1}``, and every computed edge mean (the decisions'
  ``eg`` as well as the final values) is clamped into ``[min, max]`` of the
  rounded ``u_i``, ``u_{j-1}`` (the chain carries them as rows 3 and 4 of
  ``P``).  A rounded block sum divided by the block's length can miss a tied
  run's value by an ulp (three copies of 0.1 sum to 0.30000000000000004);
  unclamped, that made a tied run look steeper than a neighbour one ulp
  higher, which was then pooled with it (zero weights gave v back changed in
  the last bit for about one input in ten with near-tied magnitudes).
  Clamped, a tied run's mean and a one-entry block's are exact.
* A flat junction (equal edge slopes on both sides) joins two convex runs
  into a convex chain: a merge deletes only the junction, with no search
  (the search's chord means are not clamped: a chord may pass below points).
* Hence zero weights return v exactly (1e308 included): after the first peel
  every edge is a tied run whose clamped mean is exact and strictly above
  the previous one, so no round runs.  Constant weights give the correctly
  rounded ``|v| - c``: the tied runs' clamped means are the rounded ``u``,
  non-decreasing; where two of them round alike the junction is flat, and
  deleting it pools entries whose values round alike.  (Checked on 9,350
  vectors of magnitudes a few ulps apart: every policy, NumPy and torch
  arrays, Triton's interpreter; before, 7-15% of them came out changed.)
* In general, two neighbouring block means that differ by about an ulp of
  the means may still be pooled (block sums are accurate to a few ulps, plus
  about n eps^2 max|P| for the compensated prefix sums); the value error is
  then of that order.  The NumPy and Numba backends' sequential PAVA
  compares rounded block sums too.

Cost (n entries, r rounds, of which r_m merges)
-----------------------------------------------
Rounds: with the Triton bridge (default peel_density 0, merges only) runs
halve at least every second merge, so r <= 2 ceil(log2 n) + 2 (final check
included); 2 to 13 on OWL and adversarial inputs at n = 1e3..1e6.  With array
merges (peel_density 8) peels may add up to log(n+1)/log(8/7) rounds.

* Work: one sort of n keys; O(n) elementwise work before the rounds; round k
  costs O(|V_k|) (``|V|`` shrinks geometrically), a merge round also
  O(K log L) for its K pairs and longest run L.  Worst case O(n log n).
* Kernel launches, counted in ``tests/test_device_owl.py`` with torch's
  dispatcher on the path a CUDA tensor takes: at most 85 before the first
  scalar read (sort, TwoSum, scaling, first peel, compensated prefix sums,
  first chain and its clamp rows, first edge slopes), at most 30 per round
  (clamped edge slopes, reflex test, then a peel, or a merge with ONE Triton
  kernel, and the compaction; 28 and 30 measured), at most 30 after the
  rounds (clamp, searchsorted, gather): 115 + 30 (r - 1) = O(log n) in all;
  78 to 378 measured at n = 1e3..1e6.  The array fallback's merge rounds add
  about 52 operations per bridge step, ``2 bit_length(L)`` steps each,
  O(log^2 n) in all (1,180 to 4,937 on the same inputs at n = 1e3..1e4).
* Host synchronisations: exactly one scalar read per round (``int(...)`` of one
  device int64 that packs the round's number of reflex vertices and the chain
  length), so r per call, O(log n); nothing else waits for the device: sizes
  that boolean compaction or ``nonzero`` would need are never used -- the
  chain is compacted by a stable partition into an array of the previous
  length, and the host learns the new length with the next round's read;
  the reflex indices are ``torch.nonzero_static`` of the count just read (a
  scatter off torch).  The array fallback adds one read per merge round (its
  step count).
* Scratch: peak about 11 n 8-byte words besides the output for OWL (float64;
  10 n for float32), 8 n for ``isotonic_blocks`` (tracemalloc on NumPy at
  n = 1e6): while the prefix sums are formed, ``uh``, ``ul``, ``H``, ``D`` and
  three temporaries (float64, n + 1 each) with the sorted magnitudes; then
  the first chain (3 x (n + 1)) and its compaction; then arrays of the block
  count, which on OWL inputs is close to n.
"""

from __future__ import annotations

import functools

import array_api_compat

__all__ = ["owl", "isotonic_increasing", "isotonic_blocks", "compensated_prefix"]

# Peel when the reflex vertices number at least 1/PEEL_DENSITY of the chain's edges.
PEEL_DENSITY = 8
# Packs (number of reflex vertices, chain length) into one int64 per round.
_PACK = 2**32


def _ns(x):
    return array_api_compat.array_namespace(x), array_api_compat.device(x)


@functools.cache
def _triton_module():
    """``_triton_isotonic`` if Triton imports, else None."""
    try:
        from . import _triton_isotonic
    except ImportError:
        return None
    return _triton_isotonic


def _use_triton(x, bridge: str) -> bool:
    if bridge == "array":
        return False
    if bridge == "triton":
        if not array_api_compat.is_torch_array(x):
            raise ValueError(f"bridge='triton' needs a torch tensor, got {type(x).__name__}")
        if _triton_module() is None:
            raise ImportError("bridge='triton' needs triton")
        return True
    if bridge != "auto":
        raise ValueError(f"bridge must be 'auto', 'triton' or 'array', got {bridge!r}")
    return array_api_compat.is_torch_array(x) and x.device.type == "cuda" and _triton_module() is not None


def _two_diff(a, b):
    """(s, e) with s = fl(a - b) and s + e = a - b exactly (Knuth's TwoSum).

    Never writes into ``a`` or ``b``; two temporaries of their size.
    """
    s = a - b
    t = s - a  # the rounded part of s that came from -b
    e = s - t
    e -= a
    e *= -1.0  # a - (s - t)
    t += b  # -((-b) - t)
    e -= t
    return s, e


def _scale_exponent(uh, n, xp, dev):
    """Device int: k with max|uh| * 2^k in [2^(T-1), 2^T), T = 1019 - bit_length(n), |k| <= 1022."""
    amax = xp.max(xp.abs(uh))
    _, e = xp.frexp(amax)  # amax = m 2^e, m in [1/2, 1); frexp(0) = (0, 0)
    return xp.clip((1019 - n.bit_length()) - e, -1022, 1022)


def _pow2(k, xp, dev):
    """2^k as a 0-d float64 device array (exact for |k| <= 1022)."""
    return xp.ldexp(xp.ones((), dtype=xp.float64, device=dev), k)


def compensated_prefix(u, low=None):
    """(H, D), float64 of length n + 1, with H + D the exact prefix sums of ``u + low``
    to about n eps^2 max|H|.

    ``H = [0, cumsum(u)]`` may be summed in any order (a GPU scan is not
    sequential); TwoSum gives the exact error of each step *given* H, and those
    errors plus ``low`` (the low parts of an unevaluated sum), being tiny, are
    summed without significant loss.  ``u`` (float64) and ``low`` are not written.
    """
    xp, _ = _ns(u)
    H = xp.cumulative_sum(u, include_initial=True)
    prev = H[:-1]
    t = prev + u
    bp = t - prev
    e = t - bp
    e -= prev
    e *= -1.0  # prev - (t - bp)
    bp *= -1.0
    bp += u  # u - bp
    e += bp  # prev + u == t + e exactly
    del bp
    t -= H[1:]
    t += e  # the step's error given H: (t - H_k) + e
    del e
    if low is not None:
        t += low
    D = xp.cumulative_sum(t, include_initial=True)
    return H, D


def _stable_partition(keep, iota, xp):
    """Destinations that move the kept entries, in order, to the front and the
    others behind them (also in order), and the number kept (a device scalar).
    ``iota`` is ``arange(len(keep))``."""
    c = xp.cumulative_sum(xp.astype(keep, xp.int64))
    m_dev = c[-1] + 0  # its own 0-d array: c changes below
    d = iota - c
    d += m_dev  # a dropped entry goes to m + (number dropped before it)
    c -= 1  # a kept one to (number kept before it)
    return xp.where(keep, c, d), m_dev


def _compact(P, keep, iota, xp, dev):
    """The chain's columns with ``keep`` first (a permutation of them, same
    length, so no size crosses to the host) and the number kept (device)."""
    pos, m_dev = _stable_partition(keep, iota, xp)
    out = xp.empty(P.shape, dtype=P.dtype, device=dev)
    out[:, pos] = P
    return out, m_dev


def _indices(mask, count, xp, dev):
    """The indices of the ``count`` true entries of ``mask`` (count known on the host)."""
    if array_api_compat.is_torch_array(mask):
        import torch

        if hasattr(torch, "nonzero_static"):  # one operation, no synchronisation
            return torch.nonzero_static(mask, size=count)[:, 0]
    idx = xp.empty(mask.shape[0] + 1, dtype=xp.int64, device=dev)
    c = xp.cumulative_sum(xp.astype(mask, xp.int64))
    idx[xp.where(mask, c - 1, count)] = xp.arange(mask.shape[0], dtype=xp.int64, device=dev)
    return idx[:count]


def _edge_means(P):
    """Slope of every edge of the chain (= mean of u over each block), clamped
    into the range of the edge's end entries (module doc, *Accuracy*).

    ``P`` holds one column (x, H, D, u_x, u_{x-1}) per vertex: position,
    compensated prefix sum, and the rounded u just after and just before it.
    """
    xp, _ = _ns(P)
    sums = (P[1, 1:] - P[1, :-1]) + (P[2, 1:] - P[2, :-1])
    means = sums / (P[0, 1:] - P[0, :-1])
    first, last = P[3, :-1], P[4, 1:]
    return xp.minimum(xp.maximum(means, xp.minimum(first, last)), xp.maximum(first, last))


def _bridge_cuts_array(P, eg, J, pairwise, xp, dev, stats=None):
    """The int32 (2, B + 2) cut array of one merge round, in array code (module doc).

    ``cut[0]`` marks the first deleted vertex of each bridged pair, ``cut[1]``
    one past its last.  ``pairwise``: bridge runs (0, 1), (2, 3), ... (at least
    halves the number of runs); otherwise bridge every junction at once
    (usually far fewer rounds; the removal ranges of neighbouring junctions may
    then overlap, which is safe because each range is removed on its own merit).
    ``_triton_isotonic`` is the same search as one kernel.
    """
    B = eg.shape[0]  # number of edges
    bounds = xp.concat(
        [xp.zeros(1, dtype=xp.int64, device=dev), J + 1, xp.full(1, B, dtype=xp.int64, device=dev)]
    )
    if pairwise:
        k = (bounds.shape[0] - 1) // 2
        Ls, M, Re = bounds[0 : 2 * k : 2], bounds[1 : 2 * k : 2], bounds[2 : 2 * k + 1 : 2]
    else:
        Ls, M, Re = bounds[:-2], bounds[1:-1], bounds[2:]
    a = M - Ls  # edges in the left run
    b = Re - M  # edges in the right run
    # p in [0, a-1] and q in [1, b]: the junction itself is always deleted
    # (it is reflex), which also guarantees progress under rounding.  A flat
    # junction (equal slopes on both sides) joins two convex runs into a
    # convex chain: only the junction goes, p = a-1 and q = 1, with no search
    # (whose chord means, rounded, could pool across neighbouring values).
    flat = eg[M - 1] == eg[M]
    loL = xp.where(flat, a - 1, 0)
    hiL = a - 1
    loR = xp.ones_like(b)
    hiR = xp.where(flat, 1, b)
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
        eR = eg[xp.clip(M + j, max=B - 1)]  # the clipped index is read only when unused (clip: a number bound, no tensor made of it)
        S = (Pr[1] - Pl[1]) + (Pr[2] - Pl[2])
        mean = S / (Pr[0] - Pl[0])
        condA = eL >= mean  # s* <= eL_i  ->  p <= i
        condB = eR <= mean  # s* >= eR_j  ->  q >= j + 1
        lt = eL < eR  # with condB (condA): the left (right) range shrinks too
        # Neither: the tangent lines through l_i (slope eL) and r_j (slope eR)
        # cross at or left of the junction  <=>  S <= eL (x_m - x_li) + eR (x_rj - x_m).
        left_cross = S <= eL * (xM - Pl[0]) + eR * (Pr[0] - xM)
        # Resolved ranges (uL or uR false) take the point-to-chain search.
        set_loL = uL & ~condA & (~uR | xp.where(condB, lt, ~left_cross))
        set_hiR = uR & ~condB & (~uL | xp.where(condA, lt, left_cross))
        hiL = xp.where(uL & condA, i, hiL)
        loL = xp.where(set_loL, i + 1, loL)
        loR = xp.where(uR & condB, j + 1, loR)
        hiR = xp.where(set_hiR, j, hiR)
    # Delete the vertices strictly between l_p and r_q: the half-open ranges
    # [Ls+p+1, M+q).  Starts are distinct, and so are ends, but a start may
    # equal another junction's end, hence two rows.
    cut = xp.zeros((2, B + 2), dtype=xp.int32, device=dev)
    one = xp.ones(1, dtype=xp.int32, device=dev)  # (assigning a Python 1 first copies it to the device: torch waits for that copy)
    cut[0, Ls + loL + 1] = one
    cut[1, M + loR] = one
    return cut


def _hull(parts, *, peel_density, merge, bridge, stats):
    """Vertices and slopes of the lower hull of the prefix sums of ``uh + ul``.

    ``parts = [uh, ul]``: ``uh`` float64 of length n >= 1, ``ul`` float64 or
    None.  The list is emptied: the arrays become this function's own (scaled
    in place, freed after the prefix sums; a caller's argument would stay
    referenced for the whole call).  Returns ``(V, eg, inv)``: hull vertices
    (int64, V[0] = 0, V[-1] = n), edge slopes in scaled units, and the 0-d
    float64 factor that unscales them (exact power of two).
    """
    uh, ul = parts
    parts.clear()
    xp, dev = _ns(uh)
    n = uh.shape[0]
    use_triton = _use_triton(uh, bridge)
    if peel_density is None:
        # A merge round bridging every junction deletes at least what a peel
        # would; with one kernel per merge it costs about as many launches, and
        # merges alone bound the rounds by 2 log2(n) + 2.  Array-code merges
        # cost ~40 operations per bridge step, so there peels pay off.
        peel_density = 0 if use_triton else PEEL_DENSITY
    k = _scale_exponent(uh, n, xp, dev)
    s = _pow2(k, xp, dev)
    inv = 1.0 / s  # exact: 2^-k is a normal number
    uh *= s
    # First peel straight from u: interior point k is reflex iff u[k-1] >= u[k],
    # decided on the exact u = uh + ul (TwoSum pairs compare lexicographically).
    keep = xp.ones(n + 1, dtype=xp.bool, device=dev)
    if ul is None:
        keep[1:n] = uh[:-1] < uh[1:]
    else:
        ul *= s
        keep[1:n] = (uh[:-1] < uh[1:]) | ((uh[:-1] == uh[1:]) & (ul[:-1] < ul[1:]))
    H, D = compensated_prefix(uh, ul)
    del ul
    iota = xp.arange(n + 1, dtype=xp.int64, device=dev)  # sliced, never recomputed
    pos, m_dev = _stable_partition(keep, iota, xp)
    del keep
    V = xp.empty(n + 1, dtype=xp.int64, device=dev)
    V[pos] = iota
    del pos
    # Columns (x, H, D, u_x, u_{x-1}) per vertex (u rounded, scaled; the
    # edge means' clamp, _edge_means); kept vertices first, the others behind.
    P = xp.empty((5, n + 1), dtype=xp.float64, device=dev)
    P[0] = V
    P[1] = H[V]
    del H
    P[2] = D[V]
    del D
    zero = xp.zeros(1, dtype=xp.float64, device=dev)
    padded = xp.concat([zero, uh, zero])  # padded[x + 1] = u_x
    del uh
    P[3] = padded[V + 1]
    P[4] = padded[V]
    del padded, V
    peels, merges, runs_before_all = 1, 0, None
    m_before = n + 2  # (the chain's length before the last round)
    while True:
        cap = P.shape[1]
        eg = _edge_means(P)
        reflex = eg[:-1] >= eg[1:]  # interior vertices 1..cap-2
        reflex = reflex & (iota[2:cap] < m_dev)  # vertex r + 1 is interior iff r + 2 < m
        packed = xp.sum(xp.astype(reflex, xp.int64)) * _PACK + m_dev
        packed = int(packed)  # THE scalar read of the round
        R, m = divmod(packed, _PACK)
        if R == 0:
            break
        if m >= m_before:  # (every round deletes a vertex: a defect here would loop forever)
            raise RuntimeError(f"proxlib internal error: an isotonic round on {m} vertices deleted none; please report it with the input")
        m_before = m
        P, eg, reflex = P[:, :m], eg[: m - 1], reflex[: m - 2]
        B = m - 1  # edges
        if R * peel_density >= B:
            keep = xp.concat([xp.ones(1, dtype=xp.bool, device=dev), ~reflex, xp.ones(1, dtype=xp.bool, device=dev)])
            peels += 1
            runs_before_all = None
        else:
            runs = R + 1
            if merge == "auto":
                pairwise = runs_before_all is not None and 2 * runs > runs_before_all
            else:
                pairwise = merge == "pairs"
            runs_before_all = None if pairwise else runs
            J = _indices(reflex, R, xp, dev)
            if use_triton:
                cut = _triton_module().merge_cuts(P, eg, J, pairwise)
            else:
                cut = _bridge_cuts_array(P, eg, J, pairwise, xp, dev, stats)
            keep = xp.cumulative_sum(cut[0, : B + 1] - cut[1, : B + 1]) == 0
            merges += 1
            del J, cut
        del eg, reflex  # scratch of the previous length, not needed by the compaction
        P, m_dev = _compact(P, keep, iota[:m], xp, dev)
        del keep
    P, eg = P[:, :m], eg[: m - 1]
    if stats is not None:
        stats.update(peels=peels, merges=merges, rounds=peels + merges, blocks=m - 1)
    return xp.astype(P[0], xp.int64), eg, inv


def _clamped_means(eg, inv, u_first, u_last, xp):
    """Block means unscaled and clamped into [min, max] of the block's end entries."""
    means = eg * inv
    lo = xp.minimum(u_first, u_last)
    hi = xp.maximum(u_first, u_last)
    return xp.minimum(xp.maximum(means, lo), hi)


def isotonic_blocks(
    u,
    *,
    peel_density: int | None = None,
    merge: str = "auto",
    bridge: str = "auto",
    stats: dict | None = None,
    overwrite_input: bool = False,
):
    """Blocks of the increasing isotonic regression of ``u`` (1-D, float32/float64).

    Returns ``(V, means)`` in u's namespace and on its device: block k covers
    ``u[V[k]:V[k+1]]`` and its fitted value is ``means[k]`` (float64); ``V[0] =
    0``, ``V[-1] = n``, and ``means`` is strictly increasing up to rounding;
    each mean lies between the block's first and last entries.

    Round policy (the result does not depend on it; tests vary it): peel when
    the reflex vertices number at least ``1/peel_density`` of the chain's
    edges (one fewer than its vertices; 0 never peels after
    the first round, a huge value always peels; None: 0 with the Triton
    bridge, ``PEEL_DENSITY`` with array code); ``merge`` is ``"auto"``
    (bridge every junction, but pairwise right after an all-junction round
    that did not halve the runs), ``"all"`` or ``"pairs"``.  ``bridge``:
    ``"auto"`` (the Triton kernel for CUDA torch tensors when Triton imports,
    else array code), ``"triton"`` (forced; interpreted off CUDA) or
    ``"array"``.  ``stats``, if given, receives round counts.
    ``overwrite_input`` lets a float64 ``u`` be used as scratch (saves one
    n-sized copy; u's contents are then undefined).
    """
    xp, dev = _ns(u)
    n = u.shape[0]
    if n == 0:
        return xp.zeros(1, dtype=xp.int64, device=dev), xp.zeros(0, dtype=xp.float64, device=dev)
    if overwrite_input and u.dtype == xp.float64:
        V, eg, inv = _hull([u, None], peel_density=peel_density, merge=merge, bridge=bridge, stats=stats)
        # u now holds u * 2^k exactly; undo that on the block ends only
        first = u[V[:-1]] * inv
        last = u[V[1:] - 1] * inv
    else:
        parts = [xp.astype(u, xp.float64, copy=True), None]
        V, eg, inv = _hull(parts, peel_density=peel_density, merge=merge, bridge=bridge, stats=stats)
        first = xp.astype(u[V[:-1]], xp.float64)
        last = xp.astype(u[V[1:] - 1], xp.float64)
    return V, _clamped_means(eg, inv, first, last, xp)


def isotonic_increasing(u, **kwargs):
    """The increasing isotonic regression of ``u`` as a full-length float64 array."""
    xp, dev = _ns(u)
    n = u.shape[0]
    V, means = isotonic_blocks(u, **kwargs)
    if n == 0:
        return xp.zeros(0, dtype=xp.float64, device=dev)
    start = xp.zeros(n, dtype=xp.int64, device=dev)
    start[V[1:-1]] = 1
    return means[xp.cumulative_sum(start)]


def owl(v, w, *, peel_density: int | None = None, merge: str = "auto", bridge: str = "auto", stats=None):
    """OWL prox of a 1-D ``v`` with non-increasing ``w`` >= 0 (kernel contract).

    x = sign(v) * max(fit, 0), where fit is the non-increasing isotonic
    regression of |v|_sorted-desc - w, i.e. minus the increasing one of
    u = w - |v|_sorted-desc.  Returns a new array of v's type, dtype and device;
    neither input is written.  Policy keywords as in ``isotonic_blocks``.
    """
    xp, dev = _ns(v)
    n = v.shape[0]
    if n == 0:
        return xp.asarray(v, copy=True)
    y = xp.sort(xp.abs(v), descending=True, stable=False)  # magnitudes, decreasing
    # u = w - y exactly as uh + ul, handed over in a list that _hull empties,
    # so that they are scaled in place and freed after the prefix sums.
    parts = list(_two_diff(xp.astype(w, xp.float64, copy=False), xp.astype(y, xp.float64, copy=False)))
    V, eg, inv = _hull(parts, peel_density=peel_density, merge=merge, bridge=bridge, stats=stats)
    first, last = V[:-1], V[1:] - 1
    y_last = y[last]
    u_first = xp.astype(w[first], xp.float64) - xp.astype(y[first], xp.float64)
    u_last = xp.astype(w[last], xp.float64) - xp.astype(y_last, xp.float64)
    means = _clamped_means(eg, inv, u_first, u_last, xp)
    value = xp.astype(xp.where(means < 0.0, -means, 0.0), v.dtype)  # per block, non-increasing
    # Equal magnitudes are always pooled (u is non-increasing across a tie), so
    # blocks are separated by strict gaps in |v|: block k holds the magnitudes
    # in [low_k, low_{k-1}) with low_k its smallest one, and the block of |v_i|
    # is the number of blocks whose smallest magnitude exceeds |v_i|.
    low = xp.flip(y_last)  # increasing
    block = low.shape[0] - xp.searchsorted(low, xp.abs(v), side="right")
    return xp.copysign(value[block], v)
