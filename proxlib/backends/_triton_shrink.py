r"""Group+exclusive's shrink factor in one Triton kernel (torch tensors).

The group+exclusive prox of a row, x = c u(b c), needs the root c of
``g(c) = c - 1 + a / ||u(b c)||`` once the support of u is known: four
statistics per row (Y_k, F_k, D2, k) and a bracket [left, right]
(:func:`._xp_kernels.group_exclusive_factor`).  Written as array code, the
search is a loop of Newton steps safeguarded by bisection, about fifteen
array operations a step and one host read every four steps, so on a GPU it
is the bulk of the operator's launches (about 210 of the 395 operations of
one call on a 512 x 576 matrix) and its only host synchronisations.  Here
the whole search is ONE launch: program ``p`` takes rows ``p*BLOCK ..
p*BLOCK + BLOCK - 1``, one lane each, and runs the steps in registers until
every lane of the program has converged (or reached the array code's limit
of steps), then writes c.

The kernel does, operation for operation and in the same float64
arithmetic, what ``group_exclusive_factor`` does with array operations
(contraction into FMAs is switched off with ``enable_fp_fusion=False``;
IEEE division and square root are correctly rounded on the GPU as in NumPy
and torch), so both give the same c, bit for bit; the tests check that on
Hypothesis rows.  Stopping per program instead of for all rows at once, and
after any step instead of every fourth, changes nothing: a row that has
converged (its Newton correction below half a unit of c, or g = 0) keeps
its c, and a row whose bracket holds two adjacent floats stays on the same
end of it, so further steps leave c as it is.

Inputs (float64, one entry per row, on the tensor's device; nothing read by
the host): ``Yk, Fk, D2, kf, left, right, a, b``.  Work: O(steps) per row in
registers, no scratch but the output.  Grid: ceil(G / BLOCK) programs.

On CUDA tensors the kernel is compiled by Triton; on any other tensor, or
with ``TRITON_INTERPRET=1``, it runs in Triton's interpreter, which is how
CI tests it on CPU.  Importing this module raises ImportError when Triton is
missing (``_xp_kernels`` then keeps the array code).
"""

from __future__ import annotations

import functools

import triton
import triton.language as tl

from ._triton_isotonic import _interpreting_everything, as_kernel
from ._triton_launch import run_kernel

__all__ = ["group_exclusive_factor", "kernel", "shrink_search", "BLOCK", "INTERPRET_BLOCK"]

#: Rows per program on a GPU (one lane each, four warps).
BLOCK = 128
#: Rows per program in the interpreter (numpy-vectorised lanes; fewer programs).
INTERPRET_BLOCK = 2**16

#: Launches of the kernel so far (compiled or interpreted); the tests read it.
launches = 0


def shrink_search(yk, fk, d2, k, lo, hi, aa, bb, live, max_iter):
    """The root c of g(c) = c - 1 + a / ||u(b c)|| on [lo, hi] for each lane
    of ``live`` (the others: a value not to be used), from the support's
    statistics: ``group_exclusive_factor``'s steps, every expression in the
    same order (the same roundings), until every live lane has converged
    or ``max_iter`` steps.  Written in Triton's language and shared by the
    kernels that search (:func:`._triton_isotonic.as_kernel`'s ``helpers``:
    compiled into each, or interpreted)."""
    sk = fk + k * yk
    lo = tl.where(lo < 2.2250738585072014e-308, 2.2250738585072014e-308, lo)  # clip(left, min=2^-1022); a NaN stays, as in clip
    c = tl.where(hi > 4.0 * lo, tl.sqrt(lo) * tl.sqrt(hi), 0.5 * (lo + hi))
    it = 0
    todo = tl.reduce(live.to(tl.int32), 0, tl.standard._elementwise_max)
    while (todo > 0) & (it < max_iter):
        den = 1.0 + bb * c * k
        e = (yk - bb * c * fk) / den
        N = tl.sqrt(d2 + 2.0 * e * fk + k * e * e)
        g = c - 1.0 + aa / N
        Nd = N * den
        slope = 1.0 + aa * bb * (fk + k * e) * sk / (Nd * Nd * N)
        neg = g < 0
        lo = tl.where(neg, c, lo)
        hi = tl.where(neg, hi, c)
        newton = c - g / slope
        converged = (newton == c) | (g == 0)
        ok = (newton > lo) & (newton < hi)
        nxt = tl.where(ok, newton, tl.where(hi > 4.0 * lo, tl.sqrt(lo) * tl.sqrt(hi), 0.5 * (lo + hi)))
        c = tl.where(converged, c, nxt)
        open_lanes = live & ~(converged | ~((lo < nxt) & (nxt < hi)))
        todo = tl.reduce(open_lanes.to(tl.int32), 0, tl.standard._elementwise_max)
        it += 1
    return c


def _shrink_roots(Yk, Fk, D2, kf, left, right, a, b, out, G, max_iter, BLOCK: tl.constexpr):
    """c of rows ``pid*BLOCK ..``; see the module doc.  Every expression is
    ``group_exclusive_factor``'s, written in the same order (the same
    roundings)."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = r < G
    # lanes past the end hold a stand-in whose root is found at once
    # (Y = (1), F = 0, a = 1/2, b = 1: g(c) = 3c/2 - 1/2 on [0, 1])
    yk = tl.load(Yk + r, mask=live, other=1.0)
    fk = tl.load(Fk + r, mask=live, other=0.0)
    d2 = tl.load(D2 + r, mask=live, other=0.0)
    k = tl.load(kf + r, mask=live, other=1.0)
    lo = tl.load(left + r, mask=live, other=0.0)
    hi = tl.load(right + r, mask=live, other=1.0)
    aa = tl.load(a + r, mask=live, other=0.5)
    bb = tl.load(b + r, mask=live, other=1.0)
    c = shrink_search(yk, fk, d2, k, lo, hi, aa, bb, live, max_iter)
    tl.store(out + r, c, mask=live)


_NO_SPECIALIZE = ["G", "max_iter"]  # one compiled variant for every size


@functools.cache
def kernel(interpret: bool):
    """The root-search kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_shrink_roots, interpret, helpers={"shrink_search": shrink_search}, do_not_specialize=_NO_SPECIALIZE)


def group_exclusive_factor(Yk, Fk, D2, kf, left, right, a, b, max_iter: int):
    """The root c of each row (:func:`._xp_kernels.group_exclusive_factor`'s,
    bit for bit), in one launch and no host read.  Every argument is a
    float64 torch tensor of G entries on one device (``a``, ``b`` may also
    be broadcast from fewer dimensions: they are expanded to G)."""
    global launches
    import torch

    G = Yk.shape[0]
    args = [torch.broadcast_to(t, (G,)).to(torch.float64).contiguous() for t in (Yk, Fk, D2, kf, left, right, a, b)]
    out = torch.empty(G, dtype=torch.float64, device=Yk.device)
    if G == 0:
        return out
    interpret = Yk.device.type != "cuda" or _interpreting_everything()
    block = min(INTERPRET_BLOCK, triton.next_power_of_2(G)) if interpret else BLOCK
    grid = (triton.cdiv(G, block),)
    launches += 1
    run_kernel(kernel, interpret, grid, Yk.device, (*args, out, G, max_iter), dict(BLOCK=block))
    return out
