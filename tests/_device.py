"""The torch device that the device-agnostic tests put their tensors on.

CI has no GPU: those tests run on CPU tensors, through the torch operations
that every device runs (conftest.py sets ``torch_dev.CPU_KERNELS = "torch"``;
Triton kernels run in Triton's interpreter).  On a GPU machine,
``PROXLIB_TEST_DEVICE=cuda`` runs the same test bodies on CUDA tensors: the
Triton kernels compiled for the device, the device's own rounding of the
torch operations.  ``benchmarks/gpu_session.sh`` does so.  Used by the
backend parity tests (``test_backends.py``, backend ``torch``), the device
paths of OWL and the exclusive kernels (``test_device_owl.py``) and the
batched training step (``test_torch_batched.py``).
"""

from __future__ import annotations

import os

import numpy as np

DEVICE = os.environ.get("PROXLIB_TEST_DEVICE", "cpu")


def tensor(a):
    """A new torch tensor holding a copy of ``a`` (array-like), on :data:`DEVICE`."""
    import torch

    return torch.as_tensor(np.array(a, copy=True)).to(DEVICE)


def to_numpy(x) -> np.ndarray:
    """A NumPy array of the torch tensor ``x`` (copied to the host if it is elsewhere)."""
    return x.detach().cpu().numpy()


def cuda_division():
    """A torch function mode that divides as CUDA's torch does on any device:
    ``tensor / number`` (a Python number: a CPU scalar) is ``tensor * (1 /
    number)``, the reciprocal rounded in the tensor's arithmetic type
    (``div_true_kernel_cuda``: "may lose one bit of precision compared to
    computing the division"); the CPU divides.  Code whose results must not
    depend on that (the same bits for a number and for an array of it) is
    tested on CPU tensors under this mode."""
    import torch
    from torch.overrides import TorchFunctionMode

    divisions = {torch.Tensor.__truediv__, torch.Tensor.div, torch.div, torch.true_divide, torch.Tensor.true_divide,
                 torch.Tensor.__itruediv__, torch.Tensor.div_}  # fmt: skip

    class CudaDivision(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if (func in divisions and len(args) == 2 and not kwargs and isinstance(args[0], torch.Tensor)
                    and args[0].is_floating_point() and isinstance(args[1], (int, float)) and not isinstance(args[1], bool)):  # fmt: skip
                a, b = args
                with np.errstate(divide="ignore", over="ignore"):
                    inv = 1.0 / np.float64(b) if a.dtype == torch.float64 else np.float32(1.0) / np.float32(b)
                if func in (torch.Tensor.__itruediv__, torch.Tensor.div_):
                    return a.mul_(float(inv))
                return a * float(inv)
            return func(*args, **kwargs)

    return CudaDivision()
