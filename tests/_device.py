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
