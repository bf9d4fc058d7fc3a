r"""Numba passes of the sharded exclusive penalties' rows on a CPU shard.

A sharded parameter whose rows are split across ranks (FSDP2's ``Shard(0)``
under the ``"shape"`` or ``"channel"`` grouping of a ``Linear`` weight, or
``"shape"`` of a convolution) finds each row's support from all-reduced
statistics (:mod:`proxlib.torch.sharded`).  On a CPU shard those
statistics and the row map are written as torch operations, one
float64 array of the shard per operation (about 40 of them in a training
step); these two kernels take the same numbers in one pass each over the
shard's own memory, read where its rows are its columns: the shard as a
C-contiguous (P, G) array ``A``, row g being ``A[:, g]`` (the rows of
:func:`proxlib.to_rows` of such a shard are that array transposed, with
strides (1, G)).  Both run serially (``nogil``; no thread pool), as the
other CPU kernels of a training step (:mod:`proxlib.backends.torch_dev`).

:func:`hinted_stats` is the local part of
:func:`proxlib.torch.sharded._hinted_numbers`' collective: with
y = |w| in float64, H_g the hint of row g's threshold and R_g the guess of
its support's least entry,

.. math::

    \Big(\sum y^2,\ \sum_{y>H} y,\ \#\{y>H\},\ \sum_{y>H} (y-H),\
    \sum_{y>H} (y-H)^2,\ P,\ \sum y,\ \#\{y>0\},\ \sum_{y>H} (y-R),\
    \sum_{y>H} (y-R)^2\Big)

summed in float64 in an order of their own (the torch operations sum in
theirs: the two routes agree to the rounding of those sums, which the
solve's acceptance tests allow for), and the extremes, exact: the K least
y > H in increasing order (+inf where fewer), the largest y <= H (0 if
none) and the largest y (0 if none).  A row holding NaN has
NaN sums (its norm then marks it not finite, and it is returned as it is);
its extremes are those of its other entries.

The group lasso's and GrOWL's split rows take the column kernels of
:mod:`.numba_cpu` (``col_sumsq``, ``scale_cols`` below): the row sums of
squares (all-reduced into the norms) and the scaling by each row's factor,
in place.

:func:`support_map` is the row map that ends
:func:`proxlib.torch.sharded._group_exclusive_split_blocks`, entry by
entry the same operations in the same order: the same bits.
"""

from __future__ import annotations

import numpy as np

from .numba_cpu import _col_sumsq, _inf_magnitude_bits, _jit, _magnitude_bits, _magnitude_of_bits, _rjit, _scale_cols

#: The group lasso's and GrOWL's passes on such a shard are the
#: single-device column kernels' (a Linear weight's "channel" rows on one
#: device): ``col_sumsq(A, ss)``, ss_g = sum_i A[i, g]^2 in float64, and
#: ``scale_cols(A, fac, out)``, out[i, g] = A[i, g] fac_g rounded once (in
#: place when out is A).
col_sumsq, scale_cols = _col_sumsq, _scale_cols

#: support_map's per-row cases
COPY, GROUP_ONLY, SCALED, SUPPORT = 0, 1, 2, 3


@_rjit
def hinted_stats(A, H, R, stats, least, maxes):
    """Fill ``stats`` (10, G), ``least`` (K, G) and ``maxes`` (2, G)
    (float64) with the module doc's statistics of the rows A[:, g] (A
    C-contiguous, float32 or float64) at their hints ``H`` and guesses
    ``R`` (float64, (G,)): least[k, g] the (k+1)-th least y > H_g of row g
    (ties counted: a value twice is two entries; +inf where the row has
    fewer), maxes[0, g] the largest y <= H_g (0 if none), maxes[1, g] the
    largest y (0 if none).

    Two passes down A in memory order, each over all the rows g at once:
    the sums, four entries of each row per update (as
    numba_cpu._col_pass1), where "above" is a 0-or-1 factor m (the sums
    above H_g add y m and (y - R_g) m: the same numbers where y and R_g are
    finite; a row holding Inf is returned as it is, and a non-finite R_g
    makes its shifted sums NaN or infinite, refused as the torch
    operations' are); then the extremes (:func:`_extremes`).  Measured
    0.11 ms for a 150 x 784 float32 shard (the MLP's first layer on one
    of two ranks), where the torch operations' sums and maxima took about
    1.4 ms (cProfile of a one-process probe, with the 5 x 300 shard)."""
    P, G = A.shape
    sq, S, n, F1, Q1 = stats[0], stats[1], stats[2], stats[3], stats[4]
    S0, n0, FR, QR = stats[6], stats[7], stats[8], stats[9]
    for k in range(10):
        for g in range(G):
            stats[k, g] = 0.0
    for g in range(G):
        stats[5, g] = P
    K = least.shape[0]
    lbits = np.full((K, G), _inf_magnitude_bits(A))
    below = np.zeros_like(lbits[0])  # (the bits' type: int32 for float32 A, int64 for float64)
    top = np.zeros_like(below)
    i = 0
    while i + 4 <= P:
        r0, r1, r2, r3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for g in range(G):
            h, r = H[g], R[g]
            y0, y1 = abs(np.float64(r0[g])), abs(np.float64(r1[g]))
            y2, y3 = abs(np.float64(r2[g])), abs(np.float64(r3[g]))
            a0, a1, a2, a3 = y0 > h, y1 > h, y2 > h, y3 > h
            m0, m1, m2, m3 = np.float64(a0), np.float64(a1), np.float64(a2), np.float64(a3)
            sq[g] += (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
            S0[g] += (y0 + y1) + (y2 + y3)
            n0[g] += (np.float64(y0 > 0.0) + np.float64(y1 > 0.0)) + (np.float64(y2 > 0.0) + np.float64(y3 > 0.0))
            S[g] += (y0 * m0 + y1 * m1) + (y2 * m2 + y3 * m3)
            n[g] += (m0 + m1) + (m2 + m3)
            z0, z1, z2, z3 = max(y0 - h, 0.0), max(y1 - h, 0.0), max(y2 - h, 0.0), max(y3 - h, 0.0)
            F1[g] += (z0 + z1) + (z2 + z3)
            Q1[g] += (z0 * z0 + z1 * z1) + (z2 * z2 + z3 * z3)
            e0, e1, e2, e3 = (y0 - r) * m0, (y1 - r) * m1, (y2 - r) * m2, (y3 - r) * m3
            FR[g] += (e0 + e1) + (e2 + e3)
            QR[g] += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
        i += 4
    for i in range(i, P):
        row = A[i]
        for g in range(G):
            h = H[g]
            y = abs(np.float64(row[g]))
            a = y > h
            m = np.float64(a)
            sq[g] += y * y
            S0[g] += y
            n0[g] += np.float64(y > 0.0)
            S[g] += y * m
            n[g] += m
            z = max(y - h, 0.0)
            F1[g] += z
            Q1[g] += z * z
            e = (y - R[g]) * m
            FR[g] += e
            QR[g] += e * e
    _extremes(A, H, lbits, below, top)
    for g in range(G):
        for k in range(K):
            least[k, g] = _magnitude_of_bits(lbits[k, g])
        maxes[0, g] = _magnitude_of_bits(below[g])
        maxes[1, g] = _magnitude_of_bits(top[g])


@_rjit
def _extremes(A, H, least, below, top):
    """hinted_stats' extremes, in the magnitudes' bits: per row g, least[:,
    g] the K least y > H_g in increasing order (from +inf; each entry is
    inserted by K min/max pairs, in place of a sort), below_g = max over
    y <= H_g (from 0), top_g = max of all (from 0).  A pass of its own: in
    hinted_stats' loop, these selects (in floats or in bits) stopped its
    vectorisation, 3.4x the time of the two passes (0.37 against 0.11 ms
    on the 150 x 784 shard).  With K > 1 each row of A is first turned
    into its entries' bits above H (the others +inf), which then pass down
    the K least: each loop over the rows g vectorises (hinted_stats on the
    150 x 784 float32 shard: 95 us with K = 1, 114 us with K = 3)."""
    P, G = A.shape
    K = least.shape[0]
    if G == 0:
        return
    inf = _inf_magnitude_bits(A)
    zero = np.zeros_like(below[:1])[0]  # (in the bits' type: Numba's arithmetic on int32 gives int64)
    first = least[0]
    v = np.empty_like(below)
    for i in range(P):
        row = A[i]
        for g in range(G):
            b = _magnitude_bits(row[g])
            a = _magnitude_of_bits(b) > H[g]
            c = b if a else inf
            v[g] = max(first[g], c)
            first[g] = min(first[g], c)
            below[g] = max(below[g], zero if a else b)
            top[g] = max(top[g], b)
        for k in range(1, K):
            lk = least[k]
            for g in range(G):
                c = v[g]
                v[g] = max(lk[g], c)
                lk[g] = min(lk[g], c)


@_jit
def support_map(A, case, Yk, ek, cs, cw, out):
    """out[i, g] = the prox of entry w = A[i, g] of row g (rounded to out's
    dtype), by the row's ``case``:

    * COPY (a row holding NaN or Inf): w;
    * GROUP_ONLY (b = 0): w c_g (``cw``);
    * SCALED (beta = 0): sign(w) |w| cs_g;
    * SUPPORT: sign(w) ((|w| - Y_g) + e_g) cs_g on the support |w| >= Y_g
      (``Yk``: its least entry), sign(w) 0 cs_g off it

    (sign(0) = +0, as torch.sign's).  Every case is formed and the row's
    selected (no branch in the loop: it vectorises).  ``out`` may be ``A``."""
    P, G = A.shape
    for i in range(P):
        row = A[i]
        orow = out[i]
        for g in range(G):
            w = np.float64(row[g])
            c = case[g]
            y = abs(w)
            u = (y - Yk[g]) + ek[g] if y >= Yk[g] else 0.0
            u = y if c == SCALED else u
            sgn = 1.0 if w > 0.0 else (-1.0 if w < 0.0 else 0.0)
            x = sgn * u * cs[g]
            x = w * cw[g] if c == GROUP_ONLY else x
            orow[g] = w if c == COPY else x
