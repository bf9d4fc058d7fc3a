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
