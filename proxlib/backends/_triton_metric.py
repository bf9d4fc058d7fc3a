r"""The group lasso's root search in a diagonal metric, in one Triton kernel (torch tensors).

The prox of ``a ||x||_2`` in the metric ``diag(d)`` (Adam's) is, on a row
with ``||d v|| > a``, ``x_i = v_i s / (s + mu_i)`` (``mu_i = a / d_i``) with
``s = ||x||_2`` the root of ``psi(s) = 1 / ||v / (s + mu)||_2 = 1``
(:func:`._metric_kernels._group_lasso_s`).  Each step of the search needs
two sums over the row, ``||w||^2`` and ``sum w_i^2 / (s + mu_i)`` with
``w = v / (s + mu)``; written as array code a step is about fifteen array
operations and the search reads the host every four steps, so on a GPU
it is nearly all of the operator's launches (a ResNet-18 step in Adam's
metric: about 3,500 launching operations for the group lasso).  Here the
whole search is ONE launch: program ``p`` takes rows ``p*BLOCK_R ..``,
walks each step's sums over the row in tiles of ``BLOCK_M`` columns (any
row length), and runs the safeguarded Newton steps of
:func:`._metric_kernels._root` in registers until every row of the program
has stopped (or the array code's limit of steps), then writes s.

Every expression is the array code's, in the same order; only the sums
over a row add in another order (tiles of lanes, then across tiles), so the
root agrees with the array code's to the accuracy of those sums (a few
units in the last place of s), not bit for bit.  A row that has stopped
keeps its s, as in the array code, so stopping per program instead of for
all rows at once changes nothing.  Contraction into FMAs is switched off
(``enable_fp_fusion=False``); IEEE division and square root are correctly
rounded on the GPU as in NumPy.

Inputs (float64 on one device; nothing read by the host): the scaled rows
``V`` and metric ``Dn`` (G x m, contiguous), and per row the threshold
``a`` and the bracket ``lo <= s <= hi`` (the search starts at ``lo``).
Work: O(steps m) per row, no scratch but the output.  On CUDA tensors the
kernel is compiled by Triton; on any other tensor it runs in Triton's
interpreter, which is how CI tests it on CPU.  Importing this module raises
ImportError when Triton is missing.
"""

from __future__ import annotations

import functools

import triton
import triton.language as tl

from ._triton_isotonic import _interpreting_everything, as_kernel
from ._triton_launch import run_kernel

__all__ = ["group_lasso_roots", "kernel"]

#: Rows per program and columns per tile on a GPU, and in the interpreter
#: (numpy-vectorised lanes: one large tile).
GPU_BLOCK_R, GPU_BLOCK_M = 4, 256
INTERPRET_LANES = 2**16

#: Launches of the kernel so far (compiled or interpreted); the tests read it.
launches = 0

# tl.sum and tl.zeros are @triton.jit functions, which the interpreter (not
# switched on globally) cannot call: the kernel uses the builtins they wrap.
_ADD = tl.standard._sum_combine
_MAX = tl.standard._elementwise_max
_DROP = tl.constexpr(2.0**-64)  # _metric_kernels._DROP
_TINY = tl.constexpr(2.0**-1074)  # _metric_kernels._TINY


def _group_lasso_roots(V, Dn, a, lo, hi, out, G, m, max_iter, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """s of rows ``pid*BLOCK_R ..``; see the module doc.  Every expression
    is ``_group_lasso_s``'s and ``_root``'s, written in the same order."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    live = r < G
    aa = tl.load(a + r, mask=live, other=1.0)
    left = tl.load(lo + r, mask=live, other=0.5)
    right = tl.load(hi + r, mask=live, other=1.0)
    c = left
    stopped = ~live
    it = 0
    todo = tl.reduce((~stopped).to(tl.int32), 0, _MAX)
    while (todo > 0) & (it < max_iter):
        # psi(c) - 1 and psi'(c) from ||w||^2 and sum w^2 / (c + mu), w = v / (c + mu)
        sw2 = tl.full((BLOCK_R,), 0.0, tl.float64)
        srw2 = tl.full((BLOCK_R,), 0.0, tl.float64)
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
            inside = live[:, None] & (cols[None, :] < m)
            at = r[:, None] * m + cols[None, :]
            v = tl.load(V + at, mask=inside, other=0.0)
            d = tl.load(Dn + at, mask=inside, other=1.0)
            mu = aa[:, None] / d
            rr = 1.0 / (c[:, None] + mu)
            w = v * rr
            w2 = w * w
            sw2 += tl.reduce(tl.where(inside, w2, 0.0), 1, _ADD)
            srw2 += tl.reduce(tl.where(inside, rr * w2, 0.0), 1, _ADD)
        nw = tl.sqrt(sw2)
        g = 1.0 / nw - 1.0
        slope = srw2 / (nw * nw * nw)
        # one step of _root
        neg = g < 0
        left = tl.where(neg, c, left)
        right = tl.where(neg, right, c)
        newton = c - g / slope
        geo = tl.sqrt(left) * tl.sqrt(right)
        low = right * _DROP
        half = tl.where(left > 0, tl.where(right > 4.0 * left, geo, 0.5 * (left + right)), tl.where(low < _TINY, _TINY, low))
        ok = (newton > left) & (newton < right)
        nxt = tl.where(ok, newton, half)
        done = (nxt == c) | (g == 0)
        c = tl.where(done | stopped, c, nxt)
        stopped = stopped | done | ~((left < nxt) & (nxt < right))
        todo = tl.reduce((~stopped).to(tl.int32), 0, _MAX)
        it += 1
    tl.store(out + r, c, mask=live)


_NO_SPECIALIZE = ["G", "m", "max_iter"]  # one compiled variant per block shape


@functools.cache
def kernel(interpret: bool):
    """The root-search kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_group_lasso_roots, interpret, do_not_specialize=_NO_SPECIALIZE)


def blocks(G: int, m: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_M): rows per program and columns per tile."""
    if not interpret:
        return GPU_BLOCK_R, GPU_BLOCK_M
    block_m = max(2, triton.next_power_of_2(m))
    return max(1, min(INTERPRET_LANES // block_m, triton.next_power_of_2(G))), block_m


def group_lasso_roots(V, Dn, a, lo, hi, max_iter: int):
    """s per row (:func:`._metric_kernels._group_lasso_s`'s root, to the
    accuracy of its row sums), in one launch and no host read.  ``V``,
    ``Dn``: float64 torch tensors (G, m) on one device; ``a``, ``lo``,
    ``hi``: float64, one per row."""
    global launches
    import torch

    G, m = V.shape
    out = torch.empty(G, dtype=torch.float64, device=V.device)
    if G == 0:
        return out
    V, Dn = V.contiguous(), Dn.contiguous()
    a, lo, hi = (torch.broadcast_to(t, (G,)).contiguous() for t in (a, lo, hi))
    interpret = V.device.type != "cuda" or _interpreting_everything()
    block_r, block_m = blocks(G, m, interpret)
    grid = (triton.cdiv(G, block_r),)
    args = (V, Dn, a, lo, hi, out, G, m, max_iter)
    launches += 1
    run_kernel(kernel, interpret, grid, V.device, args, dict(BLOCK_R=block_r, BLOCK_M=block_m))
    return out
