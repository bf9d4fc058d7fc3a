"""Launching proxlib's Triton kernels on torch tensors (compiled on CUDA, interpreted elsewhere).

Kept apart from :mod:`._triton_isotonic` (whose kernel is also on the CuPy
path, where NumPy is not imported): the interpreted launch silences NumPy's
warnings.
"""

from __future__ import annotations

import numpy as np

__all__ = ["run_kernel"]


def run_kernel(kernel_of, interpret: bool, grid, device, args, consts: dict, **compiled) -> None:
    """``kernel_of(interpret)[grid](*args, **consts)``.  Interpreted (off
    CUDA), hidden from torch dispatch modes (the interpreter's own copies of
    the arguments are not the kernel's work, e.g. for the operation counts)
    and with NumPy's warnings silenced (the interpreter evaluates both sides
    of every ``where``); compiled, on ``device``'s CUDA context with FMA
    contraction off and the options ``compiled`` (e.g. ``num_warps``), so
    that it rounds as the interpreter does."""
    if interpret:
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes(), np.errstate(all="ignore"):
            kernel_of(True)[grid](*args, **consts)
    else:
        import torch

        with torch.cuda.device(device):
            kernel_of(False)[grid](*args, **consts, **compiled, enable_fp_fusion=False)


# ------------------------------------------------------------------ device functions
# Written in Triton's language and shared by the kernels (bound to each by
# ``_triton_isotonic.as_kernel``'s ``helpers``: compiled into it, or interpreted).

import triton.language as tl  # noqa: E402

_EXPONENT = tl.constexpr(0x7FF0000000000000)  # a float64's exponent bits
_UP = tl.constexpr(2.0**54)
_DOWN = tl.constexpr(2.0**-54)


def pow2_scale(amax):
    """:func:`._xp_kernels.row_scale` of rows whose largest magnitude is
    ``amax`` (float64, finite): the largest power of two ``s <= amax``
    (read off the bits: exact, subnormals too), 1 where ``amax`` is 0."""
    tiny = amax < 2.2250738585072014e-308
    lifted = tl.where(tiny, amax * _UP, amax)  # (subnormal: exact, normal after)
    s = (lifted.to(tl.int64, bitcast=True) & _EXPONENT).to(tl.float64, bitcast=True)
    s = tl.where(tiny, s * _DOWN, s)
    return tl.where(amax > 0, s, 1.0)


_MANTISSA = tl.constexpr(0x000FFFFFFFFFFFFF)  # a float64's mantissa bits
_HALF_EXPONENT = tl.constexpr(0x3FE0000000000000)  # the exponent bits of [0.5, 1)


def pow2_of(j):
    """2.0^j for an integer tensor ``j`` as torch's ``pow(2.0, j)`` gives it:
    exact for j in [-1074, 1023] (subnormal below -1022), 0 below, inf above."""
    normal = ((tl.where(j < -1022, -1022, tl.where(j > 1023, 1023, j)) + 1023).to(tl.int64) << 52).to(tl.float64, bitcast=True)
    one = (j - j + 1).to(tl.int64)
    sub = (one << (tl.where(j < -1074, -1074, tl.where(j > -1023, -1023, j)) + 1074).to(tl.int64)).to(tl.float64, bitcast=True)
    p = tl.where(j >= -1022, normal, sub)
    return tl.where(j > 1023, float("inf"), tl.where(j < -1074, 0.0, p))


def frexp_parts(x):
    """(f, e) with x = f 2^e, f in [0.5, 1) (0 and 0 for x = 0) for finite
    float64 ``x`` >= 0: ``frexp`` from the bits (subnormals too)."""
    tiny = x < 2.2250738585072014e-308
    lifted = tl.where(tiny, x * _UP, x)
    bits = lifted.to(tl.int64, bitcast=True)
    e = ((bits >> 52) & 0x7FF).to(tl.int32) - 1022 - tl.where(tiny, 54, 0)
    f = ((bits & _MANTISSA) | _HALF_EXPONENT).to(tl.float64, bitcast=True)
    return tl.where(x > 0, f, 0.0), tl.where(x > 0, e, 0)
