"""Input checks shared by every public operator, for NumPy, CuPy and torch inputs.

One checker per rule.  Every message names the offending argument and, where it
helps, the bad value.  Checks never modify their inputs and copy them only to
change a dtype (integers to float64, half precision to float32).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any

import numpy as np

from ._dispatch import array_kind, array_namespace, device, size
from .backends import NonFiniteInput

__all__: list[str] = []

_FLOAT_NAMES = ("float32", "float64")
_HALF_NAMES = ("float16", "bfloat16")


def _is_array(x: Any) -> bool:
    try:
        return hasattr(x, "dtype") and hasattr(x, "shape") and hasattr(x, "ndim")
    except RuntimeError:  # a nested torch tensor's shape raises (see _reject_nested)
        return False


# dtype -> (name, kind): formatting a dtype costs microseconds, a dict lookup
# tens of nanoseconds (every public call asks several times)
_DTYPE_INFO: dict = {}


def _dtype_info(dtype) -> tuple[str, str]:
    try:
        return _DTYPE_INFO[dtype]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a dtype object
        return _format_dtype(dtype), _dtype_kind(dtype)
    info = _DTYPE_INFO[dtype] = (_format_dtype(dtype), _dtype_kind(dtype))
    return info


def _format_dtype(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_name(dtype) -> str:
    """``"float32"``, ``"int64"``, ``"bool"``, ... for NumPy, CuPy and torch dtypes."""
    return _dtype_info(dtype)[0]


def dtype_kind(dtype) -> str:
    """NumPy's one-letter kind (``"f"``, ``"i"``, ``"u"``, ``"b"``, ``"c"``, ...)
    of a NumPy, CuPy or torch dtype."""
    return _dtype_info(dtype)[1]


def _dtype_kind(dtype) -> str:
    if hasattr(dtype, "is_floating_point"):  # torch.dtype, without importing torch
        if _format_dtype(dtype) == "bool":
            return "b"
        if dtype.is_complex:
            return "c"
        return "f" if dtype.is_floating_point else "i"
    if str(dtype) == "object":
        return "O"
    return np.dtype(str(dtype)).kind


def detached(x):
    """``x`` without autograd history: a torch tensor that requires grad (an
    ``nn.Parameter``, say) as ``x.detach()`` (a view of the same memory, no
    copy); anything else as it is.  Results are never part of a graph, and
    reading a scalar from them warns nothing."""
    if getattr(x, "requires_grad", False) and array_kind(x) == "torch":
        return x.detach()
    return x


def _reject_sparse_and_meta(x, name: str) -> None:
    """TypeError naming ``name`` for a torch tensor that is not a dense
    (strided) tensor with data: sparse layouts (COO, CSR, ...) and meta
    tensors (no data)."""
    if array_kind(x) != "torch":
        return
    if str(x.layout) != "torch.strided":
        raise TypeError(f"{name} is a torch tensor of layout {x.layout}; pass a dense tensor ({name}.to_dense())")
    if x.is_meta:
        raise TypeError(f"{name} is a meta tensor (it has no data); pass a tensor on a real device")


def _reject_nested(x, name: str) -> None:
    """TypeError naming ``name`` for a nested torch tensor (rows of different
    lengths; asking for its ``shape`` raises torch's internal RuntimeError)."""
    if getattr(x, "is_nested", False) is True:
        raise TypeError(f"{name} is a nested torch tensor; pass a dense tensor (or one call per component)")


def _reject_matrix_and_masked(x, name: str) -> None:
    if isinstance(x, np.matrix):
        raise TypeError(f"{name} is a numpy.matrix; pass a numpy.ndarray (np.asarray({name}))")
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; proxlib would silently drop its mask. "
            f"Pass {name}.filled(value) or the unmasked entries explicitly"
        )


def as_float_array(x: Any, name: str, *, check_finite: bool = True):
    """``x`` as a float32/float64 array of its own library (no copy if it already is one).

    Integer arrays become float64 (as NumPy's ufuncs do); half-precision arrays
    (float16, torch's bfloat16) become float32, the precision they are computed
    in (:func:`result_dtype` says what to cast the result back to).  Boolean,
    complex, object, string and other float widths raise TypeError; masked
    arrays and ``numpy.matrix`` raise TypeError rather than losing their mask
    or their 2-D semantics.  NumPy arrays of non-native byte order (read from
    a big-endian file, say) are copied to native order: the compiled kernels
    take native floats only, and results come back in native order.  A torch
    tensor that requires grad is detached (:func:`detached`); one with torch's
    negative bit set (a lazy negation) is resolved into a copy.
    """
    if type(x) is np.ndarray and x.dtype.char in "fd" and x.dtype.isnative:  # the common case: nothing to convert
        if check_finite:
            check_all_finite(x, name)
        return x
    _reject_nested(x, name)
    if not _is_array(x):
        if isinstance(x, (bool, np.bool_)):
            raise TypeError(f"{name} must be a real floating array, got a boolean")
        try:
            x = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    x = detached(x)
    _reject_matrix_and_masked(x, name)
    _reject_sparse_and_meta(x, name)
    if array_kind(x) == "torch" and x.is_neg():
        # torch's lazy negation (``z.conj().imag``, say): the memory holds -x,
        # and the kernels that read memory (NumPy's, Numba's) cannot take it
        x = x.resolve_neg()
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    xp = array_namespace(x)
    kind = dtype_kind(x.dtype)
    dname = dtype_name(x.dtype)
    if kind == "b":
        raise TypeError(f"{name} must be a real floating array, got dtype bool")
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dname}")
    if kind in "OUSVMm":
        raise TypeError(f"{name} must be a real floating array, got dtype {dname}")
    if kind in "iu":
        x = xp.astype(x, xp.float64)
    elif dname in _HALF_NAMES:
        x = xp.astype(x, xp.float32)
    elif dname not in _FLOAT_NAMES:
        raise TypeError(
            f"{name} has dtype {dname}; proxlib computes in float32 or float64 "
            f"(float16 and bfloat16 in float32); cast it explicitly"
        )
    if check_finite:
        check_all_finite(x, name)
    return x


def is_torch_dtype(dtype) -> bool:
    """Whether ``dtype`` is a ``torch.dtype`` (torch is not imported for this)."""
    return type(dtype).__module__ == "torch" and hasattr(dtype, "is_floating_point")


def float_dtype_name(dtype, name: str = "dtype") -> str:
    """``"float16"``, ``"bfloat16"``, ``"float32"`` or ``"float64"`` for a
    floating dtype given as a NumPy, CuPy or torch dtype, a NumPy scalar type
    (``np.float32``), Python's ``float`` (float64) or a name; TypeError naming
    ``name`` for anything else (``None`` included)."""
    if isinstance(dtype, str) and dtype in _HALF_NAMES + _FLOAT_NAMES:
        return dtype
    dname = None
    if is_torch_dtype(dtype):
        dname = dtype_name(dtype)
    elif dtype is not None:
        try:
            dname = np.dtype(dtype).name
        except TypeError:
            pass
    if dname not in _HALF_NAMES + _FLOAT_NAMES:
        raise TypeError(f"{name} must be a floating dtype (float16, bfloat16, float32 or float64), got {dtype!r}")
    return dname


def result_dtype(x):
    """The dtype a result for input ``x`` is returned in: half precision stays
    half precision (computed in float32), integers become float64, float32 and
    float64 stay as they are.  ``None`` when no cast is needed after computing."""
    if _is_array(x) and dtype_name(x.dtype) in _HALF_NAMES:
        return x.dtype
    return None


#: a NumPy array of at most this many entries is checked with np.isfinite
#: (a temporary of as many booleans)
_SMALL = 4096


def check_all_finite(x, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or +-Inf (:func:`all_finite`)."""
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf")


def all_finite(x) -> bool:
    """Whether every entry of ``x`` is finite (neither NaN nor +-Inf).

    A NumPy array of at most :data:`_SMALL` entries: ``np.isfinite(x).all()``.
    Otherwise one reduction, the sum, in the common case: a finite sum means every entry
    is finite (NaN and +-Inf propagate through sums).  Only where the sum is
    not finite (a non-finite entry, or finite entries whose sum overflows) do
    two more reductions, min and max (which propagate NaN), decide.  No
    temporary of x's size; one host synchronisation on a GPU (three when the
    sum is not finite).
    """
    if size(x) == 0:
        return True
    if type(x) is np.ndarray and x.size <= _SMALL:
        # one ufunc and its reduction on a small array: 2-3 us, where the
        # sum's np.errstate alone costs as much
        return bool(np.isfinite(x).all())
    xp = array_namespace(x)
    # finite entries whose sum overflows are decided below, without NumPy's
    # RuntimeWarning (only NumPy warns: 2.3 us of np.errstate spared elsewhere;
    # "invalid" too: pairwise sums of +inf and -inf partial sums give NaN)
    with np.errstate(over="ignore", invalid="ignore") if isinstance(x, np.ndarray) else contextlib.nullcontext():
        total = float(x.sum())  # the method: no array-API wrapper (microseconds)
    if math.isfinite(total):
        return True
    return math.isfinite(float(xp.min(x))) and math.isfinite(float(xp.max(x)))


class fused_finite_check:
    """Turn a kernel's fused :class:`NonFiniteInput` into a ValueError naming
    the argument (kernels do not know the public names).  A context manager
    of two methods: a generator-based one (``contextlib.contextmanager``)
    cost 2 us more at every public call of the group operators."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is not None and issubclass(kind, NonFiniteInput):
            raise ValueError(f"{self.name} contains NaN or Inf") from None
        return False


def real_scalar(value: Any, name: str) -> float:
    """A finite real Python float from a Python/NumPy scalar or a one-element
    array or tensor of any library."""
    if type(value) is float and math.isfinite(value):  # the common case, without ABC checks
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got a boolean")
    _reject_nested(value, name)
    if _is_array(value):
        _reject_sparse_and_meta(value, name)
        if value.ndim != 0 and size(value) != 1:
            raise ValueError(f"{name} must be a scalar, got an array of shape {tuple(value.shape)}")
        if dtype_kind(value.dtype) not in "iuf":
            raise TypeError(f"{name} must be a real number, got dtype {dtype_name(value.dtype)}")
        value = float(detached(value).reshape(()))
    elif isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got complex {value!r}")
    elif not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # a Python int (or Fraction) beyond float64: not finite as a float
        raise ValueError(f"{name} must be finite, got a number beyond the largest float64 ({type(value).__name__})") from None
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


def count(n: Any, name: str = "n") -> int:
    """A non-negative Python int from a Python or NumPy integer or a 0-d
    integer array or tensor."""
    if _is_array(n) and n.ndim == 0 and dtype_kind(n.dtype) in "iu":
        n = int(n)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return int(n)


def flag(value: Any, name: str) -> bool:
    """``value`` as a Python bool: True or False (Python or NumPy); a
    TypeError naming ``name`` otherwise (``check_finite="no"`` would
    otherwise be true, and check)."""
    if value is True or value is False:  # (the common case: every prox asks)
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def positive_count(n: Any, name: str) -> int:
    """``n`` as a Python int: an integer (Python or NumPy, not a bool) >= 1;
    a ValueError naming ``name`` otherwise (a step count such as ``every``)."""
    if type(n) is int and n >= 1:  # (the common case, without the ABC check: every prox step asks)
        return n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def like(a, ref, name: str):
    """Array ``a`` (any library: NumPy weights for a torch input, say) as an
    array of ``ref``'s library, dtype and device.

    A tensor or CuPy array on another device is copied device to device; a
    CUDA tensor (or CuPy array, or a tensor on any device but the CPU) given
    for a CPU input, NumPy or torch, is refused rather than silently copied
    to the host.
    """
    xp = array_namespace(ref)
    a = detached(a)
    if array_kind(a) != "numpy" and _on_host(ref) and not _on_host(a):
        raise TypeError(
            f"{name} is on device {device(a)} but the input is on the CPU; pass {name} on the input's "
            "device (proxlib does not copy it to the host)"
        )
    if array_kind(a) != array_kind(ref):
        if array_kind(a) != "numpy":
            if array_kind(ref) == "numpy":
                a = np.asarray(a)
            else:
                raise TypeError(
                    f"{name} is a {type(a).__module__.split('.')[0]} array but the input is a "
                    f"{type(ref).__module__.split('.')[0]} array; pass {name} as a NumPy array or "
                    "an array of the input's library"
                )
    if array_kind(ref) == "torch" and isinstance(a, np.ndarray) and any(st < 0 for st in a.strides):
        a = np.ascontiguousarray(a)  # torch cannot view negative strides (np.sort(w)[::-1])
    return xp.asarray(a, dtype=ref.dtype, device=device(ref))


def _on_host(x) -> bool:
    return str(device(x)) == "cpu"


def nonnegative_float64(w: Any, name: str):
    """``w`` (a scalar, a list, an array of any library) as a float64 array of
    its own library and device (NumPy for scalars and lists), checked finite
    and >= 0."""
    w = as_float_array(w, name)
    xp = array_namespace(w)
    if size(w) and float(xp.min(w)) < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {float(xp.min(w))}")
    return xp.astype(w, xp.float64, copy=False)


def nonincreasing(w, name: str) -> None:
    if size(w) > 1:
        rises = w[1:] > w[:-1]
        if bool(rises.any()):  # then find the first rise (one reduction when there is none)
            up = array_namespace(w).nonzero(rises)[0]
            i = int(up[0])
            raise ValueError(
                f"{name} must be non-increasing, but {name}[{i + 1}] = {float(w[i + 1])} > "
                f"{name}[{i}] = {float(w[i])}"
            )


def length(w, n: int, name: str, what: str) -> None:
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one entry per {what} ({n}), got shape {tuple(w.shape)}")


def _errstate_over():
    return np.errstate(over="ignore")
