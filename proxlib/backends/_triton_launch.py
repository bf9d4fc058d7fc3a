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
