"""Zero-copy views between torch tensors and the arrays proxlib computes on.

* CPU tensors: ``t.detach().numpy()`` shares the tensor's storage.
* CUDA tensors: ``cupy.from_dlpack(t.detach())`` shares the device buffer; the
  CuPy work is queued on torch's current stream of the tensor's device (an
  ``ExternalStream``), so no synchronisation and no host round trip happen.
* proxlib's operators return a new array (the core has no ``out=``), which is
  written into the parameter's own storage: ``np.copyto`` into the tensor's
  NumPy view on the CPU (then the autograd version counter is bumped, as
  ``copy_`` would), ``param.copy_(torch.from_dlpack(result))`` on CUDA (a
  device-to-device copy).  That write is the one copy the bridge adds.

Half-precision parameters (float16 / bfloat16) are the one exception: the core
computes in float32 or float64 only, so they are upcast to float32 (a copy)
and cast back by ``copy_``.

Also here: which tensor a prox must write to (the leaf of a parametrised or
pruned weight) and the core's row groupings for torch tensors (differentiable,
used by the tying parametrization).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.nn.utils import parametrize

# Row views: proxlib.groupings handles torch tensors too (movedim for
# moveaxis), so NumPy, CuPy and torch share one implementation.
from ..groupings import canonical_grouping  # noqa: F401
from ..groupings import from_rows  # noqa: F401
from ..groupings import to_rows as rows  # noqa: F401
_NATIVE = (torch.float32, torch.float64)


# ------------------------------------------------------------------ leaf tensors


def resolve_leaf(target, name: str = "weight") -> torch.Tensor:
    """The tensor an optimizer updates for ``target``: where a prox must write.

    ``target`` is a tensor (returned as is) or a module whose ``name`` is

    * a parametrised tensor (``torch.nn.utils.parametrize``): the leaf
      ``module.parametrizations[name].original``;
    * a pruned tensor (``torch.nn.utils.prune``): ``module.<name>_orig``;
    * otherwise the parameter ``module.<name>``.

    Raises
    ------
    ValueError
        A parametrization with several originals (``original0``, ...): pass the
        leaf tensor you mean explicitly.
    TypeError
        ``target`` is neither a tensor nor a module with such a parameter.
    """
    if isinstance(target, torch.Tensor):
        return target
    if not isinstance(target, torch.nn.Module):
        raise TypeError(f"target must be a torch.nn.Module or a tensor, got {type(target).__name__}")
    if parametrize.is_parametrized(target, name):
        plist = target.parametrizations[name]
        if not hasattr(plist, "original"):
            raise ValueError(
                f"{name!r} has a parametrization with several original tensors; pass the leaf tensor explicitly"
            )
        return plist.original
    orig = getattr(target, name + "_orig", None)
    if isinstance(orig, torch.nn.Parameter) and hasattr(target, name + "_mask"):
        return orig
    p = getattr(target, name, None)
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{type(target).__name__} has no tensor named {name!r}")
    return p


# ------------------------------------------------------------ array bridge


def _cupy():
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError("a CUDA tensor needs CuPy for proxlib's GPU kernels (pip install cupy-cuda12x)") from e
    return cupy


@contextlib.contextmanager
def device_context(t: torch.Tensor):
    """For a CUDA tensor: CuPy on the tensor's device and on torch's current stream."""
    if t.device.type != "cuda":
        yield
        return
    cupy = _cupy()  # pragma: no cover - needs a GPU
    stream = torch.cuda.current_stream(t.device)  # pragma: no cover
    with cupy.cuda.Device(t.device.index), cupy.cuda.ExternalStream(stream.cuda_stream):  # pragma: no cover
        yield


def working_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached; float16/bfloat16 upcast to float32 (the core's dtypes)."""
    t = t.detach()
    if t.dtype in _NATIVE:
        return t
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.to(torch.float32)
    raise TypeError(f"proxlib's proximal steps need a floating-point tensor, got {t.dtype}")


def as_array(t: torch.Tensor):
    """A NumPy (CPU) or CuPy (CUDA) array sharing ``t``'s memory (no copy)."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()
    if t.device.type == "cuda":  # pragma: no cover - needs a GPU
        return _cupy().from_dlpack(t)
    raise TypeError(f"proxlib supports CPU and CUDA tensors, got device {t.device}")


def as_tensor(a) -> torch.Tensor:
    """A tensor sharing the memory of NumPy / CuPy array ``a`` (no copy)."""
    if isinstance(a, np.ndarray):
        if any(s < 0 for s in a.strides) or not a.flags.writeable:
            a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)
        return torch.from_numpy(a)
    return torch.from_dlpack(a)  # pragma: no cover - needs a GPU


def write_(dest: torch.Tensor, a) -> None:
    """Write array ``a`` into ``dest``'s own storage (``data_ptr`` unchanged).

    CPU tensors of the array's dtype: ``np.copyto`` into the tensor's NumPy view
    (a strided copy there is about twice as fast as torch's), then the
    tensor's autograd version counter is bumped as ``copy_`` would.  Otherwise
    ``dest.copy_(torch tensor sharing a)`` under ``no_grad`` (also casts back to
    float16 / bfloat16).
    """
    if isinstance(a, np.ndarray) and dest.device.type == "cpu" and dest.dtype in _NATIVE and a.dtype == as_array(dest).dtype:
        np.copyto(as_array(dest), a)
        torch.autograd.graph.increment_version(dest)
        return
    with torch.no_grad():
        dest.copy_(as_tensor(a))

