r"""One Triton kernel per merge round of the isotonic step (torch tensors).

``_gpu_owl`` merges neighbouring convex runs of the cumulative-sum diagram by
bridging them with their common tangent (see its module doc, *Bridge search*).
Written as array code, every bridge search is a loop of O(log n) steps of about
forty array operations each, so on a GPU a merge round costs hundreds of kernel
launches.  Here the whole search of a round is ONE launch: program ``g`` takes
pairs ``g*BLOCK .. g*BLOCK + BLOCK - 1`` and runs the two-sided binary search of
each pair in registers (one lane per pair) until every lane of the program is
resolved, then marks the range it deletes.

The kernel does, operation for operation and in the same float64 arithmetic, what
``_gpu_owl._bridge_cuts_array`` does (floating-point contraction into FMAs is
switched off with ``enable_fp_fusion=False``), so both paths delete the same
vertices; the tests check that on Hypothesis inputs.

Inputs of one launch (all on the tensor's device, nothing read by the host):

* ``P``: the vertex chain, a (5, m) float64 array with unit column stride (rows
  read here: position x, compensated prefix sum H, its correction D; rows 3
  and 4 serve the edge slopes' clamp);
* ``eg``: the m - 1 edge slopes;
* ``J``: the R reflex vertices' edge indices (run boundaries are ``J + 1``);
* ``cut``: an int32 (2, m + 1) array of zeros; the kernel sets ``cut[0, s] = 1``
  at the first deleted vertex ``s`` of each pair and ``cut[1, e] = 1`` one past
  its last, so that ``cumsum(cut[0] - cut[1]) == 0`` is the keep-mask.

Work per launch: O(K log(longest run)) loads for K pairs, O(1) registers per
lane, no scratch besides ``cut``.  Grid: ceil(K / BLOCK) programs.

On CUDA tensors the kernel is compiled by Triton (``triton.jit``); on any other
tensor, or with ``TRITON_INTERPRET=1``, it runs in Triton's interpreter, which is
how CI tests it on CPU.  Importing this module raises ImportError when Triton is
missing, which is how ``_gpu_owl`` falls back to the array-code search.
"""

from __future__ import annotations

import functools
import os
import types

import triton
import triton.language as tl

__all__ = ["merge_cuts", "kernel", "BLOCK", "INTERPRET_BLOCK"]

#: Pairs per program on a GPU (one lane each, four warps).
BLOCK = 128
#: Pairs per program in the interpreter (numpy-vectorised lanes; fewer programs).
INTERPRET_BLOCK = 2**16

#: Launches of the kernel so far (compiled or interpreted); the tests read it.
launches = 0


def _bridge_search(P0, P1, P2, eg, J, R, B, K, pair_stride, cut, max_iter, BLOCK: tl.constexpr):
    """Bridge the run pairs ``pid*BLOCK ..``; see the module doc."""
    pid = tl.program_id(0).to(tl.int64)
    k = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = k < K
    # Run boundaries bounds[t] = 0 (t == 0), J[t-1] + 1 (1 <= t <= R), B (t == R+1).
    t = k * pair_stride
    jl = tl.load(J + t - 1, mask=live & (t >= 1) & (t <= R), other=-1)
    Ls = tl.where(t == R + 1, B, jl + 1)
    jm = tl.load(J + t, mask=live & (t + 1 <= R), other=-1)
    M = tl.where(t + 1 == R + 1, B, jm + 1)
    jr = tl.load(J + t + 1, mask=live & (t + 2 <= R), other=-1)
    Re = tl.where(t + 2 == R + 1, B, jr + 1)
    # p in [loL, hiL] of [0, a-1], q in [loR, hiR] of [1, b] (module doc of _gpu_owl).
    loL = tl.full([BLOCK], 0, dtype=tl.int64)
    hiL = tl.where(live, M - Ls - 1, 0)
    loR = loL + 1
    hiR = tl.where(live, Re - M, 1)
    # a flat junction: only the junction is deleted, no search
    flat = live & (tl.load(eg + M - 1, mask=live, other=0.0) == tl.load(eg + M, mask=live, other=1.0))
    loL = tl.where(flat, hiL, loL)
    hiR = tl.where(flat, loR, hiR)
    xM = tl.load(P0 + M, mask=live, other=0.0)
    it = 0
    todo = tl.reduce(((loL < hiL) | (loR < hiR)).to(tl.int32), 0, tl.standard._elementwise_max)
    while (todo > 0) & (it < max_iter):
        uL = loL < hiL
        uR = loR < hiR
        i = (loL + hiL) // 2
        j = (loR + hiR) // 2
        il = Ls + tl.where(uL, i, loL)
        ir = M + tl.where(uR, j, loR)
        Pl0 = tl.load(P0 + il, mask=live, other=0.0)
        Pl1 = tl.load(P1 + il, mask=live, other=0.0)
        Pl2 = tl.load(P2 + il, mask=live, other=0.0)
        Pr0 = tl.load(P0 + ir, mask=live, other=1.0)
        Pr1 = tl.load(P1 + ir, mask=live, other=0.0)
        Pr2 = tl.load(P2 + ir, mask=live, other=0.0)
        eL = tl.load(eg + Ls + i, mask=live, other=0.0)
        eR = tl.load(eg + tl.minimum(M + j, B - 1), mask=live, other=0.0)
        S = (Pr1 - Pl1) + (Pr2 - Pl2)
        mean = S / (Pr0 - Pl0)
        condA = eL >= mean
        condB = eR <= mean
        lt = eL < eR
        left_cross = S <= eL * (xM - Pl0) + eR * (Pr0 - xM)
        set_loL = uL & ~condA & (~uR | tl.where(condB, lt, ~left_cross))
        set_hiR = uR & ~condB & (~uL | tl.where(condA, lt, left_cross))
        hiL = tl.where(uL & condA, i, hiL)
        loL = tl.where(set_loL, i + 1, loL)
        loR = tl.where(uR & condB, j + 1, loR)
        hiR = tl.where(set_hiR, j, hiR)
        it += 1
        todo = tl.reduce(((loL < hiL) | (loR < hiR)).to(tl.int32), 0, tl.standard._elementwise_max)
    one = tl.full([BLOCK], 1, dtype=tl.int32)
    tl.store(cut + Ls + loL + 1, one, mask=live)
    tl.store(cut + (B + 2) + M + loR, one, mask=live)


# Sizes change every call: one compiled variant for all of them.
_NO_SPECIALIZE = ["R", "B", "K", "max_iter"]
_NO_ALIGN = ["P1", "P2"]  # rows of one array: their alignment varies


def as_kernel(fn, interpret: bool, helpers: dict | None = None, **options):
    """``fn`` as a Triton kernel: compiled (``triton.jit``) or, with
    ``interpret``, run by Triton's interpreter (how CI runs proxlib's
    kernels on CPU tensors); ``options`` as ``triton.jit``'s.

    ``helpers`` maps names that ``fn`` calls to plain Python functions
    written in Triton's language (code that two kernels share): ``fn`` sees
    each as a device function of its own kind (``triton.jit`` for the
    compiled kernel, the interpreter's for the interpreted one), through
    copies of ``fn`` and of the helpers whose globals bind those names (so
    that helpers call one another too).  (A ``triton.jit``
    function cannot be called from the interpreter unless the interpreter
    is switched on for the whole process, ``TRITON_INTERPRET=1``.)"""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction as wrap
    else:
        wrap = triton.jit
    if helpers:
        # each helper, and the kernel, sees every helper as a device function
        # of the kernel's kind (helpers call one another), through copies
        # bound to namespaces that hold them all
        namespaces: list = []
        wrapped = {name: wrap(_rebound(h, namespaces)) for name, h in helpers.items()}
        fn = _rebound(fn, namespaces)
        for namespace in namespaces:
            namespace.update(wrapped)
    return wrap(fn, **options)


def _rebound(fn, namespaces: list):
    """A copy of the function ``fn`` whose globals are a copy of its own,
    appended to ``namespaces`` (for the caller to add names to)."""
    bound = dict(fn.__globals__)
    namespaces.append(bound)
    copy = types.FunctionType(fn.__code__, bound, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__annotations__, copy.__doc__, copy.__module__, copy.__qualname__ = (
        fn.__annotations__, fn.__doc__, fn.__module__, fn.__qualname__)
    return copy


@functools.cache
def kernel(interpret: bool):
    """The bridge-search kernel, compiled (``interpret=False``) or interpreted."""
    try:
        return as_kernel(_bridge_search, interpret, do_not_specialize=_NO_SPECIALIZE, do_not_specialize_on_alignment=_NO_ALIGN)
    except TypeError:  # a Triton without do_not_specialize_on_alignment
        return as_kernel(_bridge_search, interpret, do_not_specialize=_NO_SPECIALIZE)


def _interpreting_everything() -> bool:
    """TRITON_INTERPRET=1: every Triton kernel runs in the interpreter."""
    knobs = getattr(triton, "knobs", None)  # Triton >= 3.4
    if knobs is not None:
        return knobs.runtime.interpret is True
    return os.getenv("TRITON_INTERPRET", "0") not in ("", "0")


def merge_cuts(P, eg, J, pairwise: bool):
    """The int32 (2, m + 1) ``cut`` array of one merge round (module doc); one launch.

    ``P``: (5, m) float64 chain, ``eg`` its m - 1 edge slopes, ``J`` the R >= 1
    reflex edge indices (int64); ``pairwise``: bridge runs (0, 1), (2, 3), ...
    instead of every junction.
    """
    global launches
    import torch

    if P.stride(1) != 1:
        P = P.contiguous()
    B = eg.shape[0]
    R = J.shape[0]
    K = (R + 1) // 2 if pairwise else R
    cut = torch.zeros((2, B + 2), dtype=torch.int32, device=P.device)
    interpret = P.device.type != "cuda" or _interpreting_everything()
    block = min(INTERPRET_BLOCK, triton.next_power_of_2(K)) if interpret else BLOCK
    grid = (triton.cdiv(K, block),)
    # Each step halves one of the two ranges (sizes < B): at most 2 bit_length(B) steps.
    max_iter = 2 * B.bit_length() + 2
    args = (P[0], P[1], P[2], eg, J, R, B, K, 2 if pairwise else 1, cut, max_iter)
    launches += 1
    if interpret:
        kernel(True)[grid](*args, BLOCK=block)
    else:
        with torch.cuda.device(P.device):
            kernel(False)[grid](*args, BLOCK=block, enable_fp_fusion=False)
    return cut
