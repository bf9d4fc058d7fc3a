"""Input checks shared by every public operator.

One checker per rule.  Every message names the offending argument and, where it
helps, the bad value.  Checks never modify or copy their inputs beyond what is
needed to read a scalar.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any

import numpy as np

from ._dispatch import array_namespace
from .backends import NonFiniteInput

__all__: list[str] = []

_FLOAT_DTYPES = ("float32", "float64")


def _is_array(x: Any) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and hasattr(x, "ndim")


def as_float_array(x: Any, name: str, *, check_finite: bool = True):
    """Return ``x`` as a float32/float64 array of its own namespace (no copy if
    it already is one).

    Integer arrays are promoted to float64 (as NumPy's own ufuncs do).  Boolean,
    complex, object, string and half-precision arrays raise TypeError.
    """
    if not _is_array(x):
        if isinstance(x, (bool, np.bool_)):
            raise TypeError(f"{name} must be a real floating array, got a boolean")
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    xp = array_namespace(x)
    kind = np.dtype(str(x.dtype)).kind if str(x.dtype) != "object" else "O"
    dtype_name = str(x.dtype)
    if kind == "b":
        raise TypeError(f"{name} must be a real floating array, got dtype bool")
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dtype_name}")
    if kind in "OUSV":
        raise TypeError(f"{name} must be a real floating array, got dtype {dtype_name}")
    if kind in "iu":
        x = x.astype(xp.float64)
    elif dtype_name not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {dtype_name}; proxlib computes in float32 or float64 "
            f"(cast explicitly, e.g. {name}.astype(float32))"
        )
    if check_finite:
        check_all_finite(x, name)
    return x


def check_all_finite(x, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or +-Inf.

    Uses two reductions (min and max propagate NaN) so no temporary of x's size
    is allocated.
    """
    if x.size == 0:
        return
    lo = float(x.min())
    hi = float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf")


@contextlib.contextmanager
def fused_finite_check(name: str):
    """Turn a kernel's fused :class:`NonFiniteInput` into a ValueError naming
    the argument (kernels do not know the public names)."""
    try:
        yield
    except NonFiniteInput:
        raise ValueError(f"{name} contains NaN or Inf") from None


def real_scalar(value: Any, name: str) -> float:
    """A finite real Python float from a Python/NumPy scalar or 0-d array."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got a boolean")
    if _is_array(value):
        if value.ndim != 0 and value.size != 1:
            raise ValueError(f"{name} must be a scalar, got an array of shape {value.shape}")
        if np.dtype(str(value.dtype)).kind not in "iuf":
            raise TypeError(f"{name} must be a real number, got dtype {value.dtype}")
        value = float(value.reshape(()))
    elif isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got complex {value!r}")
    elif not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def positive(value: Any, name: str) -> float:
    v = real_scalar(value, name)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def nonnegative(value: Any, name: str) -> float:
    v = real_scalar(value, name)
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def in_unit_interval(value: Any, name: str) -> float:
    v = real_scalar(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {v}")
    return v


def nonnegative_array(w: Any, name: str, *, like):
    """``w`` as an array of ``like``'s namespace and dtype; finite and >= 0."""
    xp = array_namespace(like)
    w = as_float_array(w, name)
    if w.size and float(w.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {float(w.min())}")
    return xp.asarray(w, dtype=like.dtype)


def nonincreasing(w, name: str) -> None:
    if w.size > 1 and bool((w[1:] > w[:-1]).any()):
        i = int(np.argmax(np.asarray(_to_host(w[1:] > w[:-1]))))
        raise ValueError(
            f"{name} must be non-increasing, but {name}[{i + 1}] = {float(w[i + 1])} > "
            f"{name}[{i}] = {float(w[i])}"
        )


def length(w, n: int, name: str, what: str) -> None:
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one entry per {what} ({n}), got shape {w.shape}")


def _to_host(x):
    return x.get() if hasattr(x, "get") else x


def times_step(w, step: float):
    """``step * w`` in ``w``'s dtype, rounded once.

    Formed in float64 and then cast: for float32 weights a step beyond float32's
    range gives inf where w > 0 and 0 where w == 0 (casting the step first made
    that 0 * inf = NaN).
    """
    if step == 1.0:
        return w
    if w.dtype == np.float64:
        return w * step
    with np.errstate(over="ignore"):
        return (w.astype(np.float64) * step).astype(w.dtype)
