"""The one place where an input array picks a backend.

* torch tensors run on the ``torch`` backend (torch operations on the tensor's
  own device: CPU, CUDA or any other; no NumPy, Numba or CuPy involved);
* CuPy arrays run on the ``cupy`` backend, on the array's own device;
* NumPy arrays (and lists, scalars) run on ``numba`` when numba loads, else on
  ``numpy`` (the reference).

``use_backend(name)`` (a context manager) or the environment variable
``PROXLIB_BACKEND`` overrides the choice, for tests and benchmarks.  An
override that names a backend the input cannot run on (``cupy`` or ``torch``
for a NumPy array, ``numba``/``numpy`` for a CuPy array or a tensor) raises
instead of falling back.

A backend whose module fails to load for *any* reason (a missing dependency,
a broken installation, no GPU driver) is unavailable; the reason is kept and
reported when that backend is requested explicitly.  The one exception is
a failure that comes from torch's compiler (Dynamo, Inductor) or happens
while it traces: it is not remembered, and the next call tries again.
Backends are imported with torch.compile's frame evaluation off, so a first
call made inside a compiled function imports them as an eager call would.

Every backend module exports the same kernel names, listed in ``KERNELS``.
Kernels take canonical inputs (see ``proxlib/backends/__init__.py``).

Array code that is not a compiled kernel is written once against the Python
array API standard: :func:`array_namespace` returns ``array_api_compat``'s
namespace for NumPy, CuPy or torch, so the same function runs on all three
(SciPy's array-API layer does the same).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import math
import os
import sys
from types import ModuleType
from typing import Iterator

__all__ = ["use_backend", "available_backends", "array_namespace", "backend_for", "device", "size"]

BACKEND_MODULES = {
    "numpy": "proxlib.backends.numpy_ref",
    "numba": "proxlib.backends.numba_cpu",
    "cupy": "proxlib.backends.cupy_gpu",
    "torch": "proxlib.backends.torch_dev",
}
# Which array library each backend runs on.
_ARRAY_KIND = {"numpy": "numpy", "numba": "numpy", "cupy": "cupy", "torch": "torch"}

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("proxlib_backend", default=None)
_loaded: dict[str, ModuleType | None] = {}
_why_unavailable: dict[str, str] = {}


_KIND_OF_TYPE: dict[type, str] = {}  # a type's kind, decided once per type


def array_kind(x) -> str:
    """``"torch"``, ``"cupy"`` or ``"numpy"`` (anything else, lists included),
    decided from the type's module alone: nothing is imported."""
    t = type(x)
    kind = _KIND_OF_TYPE.get(t)
    if kind is None:
        root = t.__module__.split(".")[0]
        kind = _KIND_OF_TYPE[t] = root if root in ("torch", "cupy") else "numpy"
    return kind


def is_torch(x) -> bool:
    return array_kind(x) == "torch"


def array_namespace(x) -> ModuleType:
    """The array-API namespace of ``x``: ``array_api_compat``'s ``numpy``,
    ``cupy`` or ``torch`` module (NumPy for lists and scalars).

    One code path then runs on every array library (``xp.sort(A, axis=1,
    descending=True)``, ``xp.astype(x, xp.float64)``, ...).  Only the module of
    the array's own library is imported.
    """
    kind = array_kind(x)
    xp = _NAMESPACE.get(kind)
    if xp is None:
        xp = _NAMESPACE[kind] = importlib.import_module(f"array_api_compat.{kind}")
    return xp


_NAMESPACE: dict[str, ModuleType] = {}


def device(x):
    """The device of array ``x`` (``"cpu"`` for NumPy), for allocating next to it."""
    kind = array_kind(x)
    if kind != "numpy":  # (what array_api_compat.device answers for torch and CuPy, without its type tests)
        return x.device
    if hasattr(x, "dtype"):
        return "cpu"
    import array_api_compat

    return array_api_compat.device(x)


def size(x) -> int:
    """Number of elements (``x.size`` is a method on torch tensors)."""
    return math.prod(x.shape)


def _device_count_ok(module_name: str) -> None:
    if module_name == "cupy":
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("CuPy imports but sees no GPU")


def _load(name: str) -> ModuleType | None:
    if name not in _loaded:
        try:
            module = _import(name)
        except Exception as exc:  # any failure makes the backend unavailable, never the library
            _why_unavailable[name] = f"{type(exc).__name__}: {exc}"
            if _from_compiler(exc):
                return None  # torch.compile's failure, not the backend's: tried again at the next call
            _loaded[name] = None
        else:
            _loaded[name] = module
    return _loaded[name]


def _import(name: str) -> ModuleType:
    """Import backend ``name``, outside torch.compile's tracing
    (:func:`outside_compile`): a first call made inside a compiled function
    (traced, or run eagerly after a graph break, when Dynamo still compiles
    every new frame) imports the backend as a plain call would, instead of
    Dynamo tracing the module bodies of SciPy's and Numba's imports (which
    it cannot)."""
    return outside_compile(_import_now)(name)


def _import_now(name: str) -> ModuleType:
    module = importlib.import_module(BACKEND_MODULES[name])
    _device_count_ok(name)
    return module


def _from_compiler(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) comes from
    torch's compiler (Dynamo, Inductor), or was raised while it traces."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor", "torch.compiler")):
            return True
        exc = exc.__cause__ or exc.__context__
    return compiling()


def compiling() -> bool:
    """Whether torch.compile is tracing the calling code (False where torch
    is not imported: nothing is imported for this)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.compiler.is_compiling())
    except Exception:  # a torch without torch.compiler
        return False


_OUTSIDE: dict = {}  # fn -> fn under torch.compiler.disable


def outside_compile(fn):
    """``fn`` to be run with torch.compile's frame evaluation off
    (``torch.compiler.disable(fn)``, made once per function): a compiled
    function calling it breaks its graph there and runs ``fn`` eagerly.
    ``fn`` itself where torch is not imported (or has no ``torch.compiler``)."""
    wrapped = _OUTSIDE.get(fn)
    if wrapped is None:
        disable = getattr(getattr(sys.modules.get("torch"), "compiler", None), "disable", None)
        if disable is None:
            return fn
        wrapped = _OUTSIDE[fn] = disable(fn)
    return wrapped


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine.

    ``torch`` is listed when torch and array_api_compat are installed and
    torch is not imported yet (it is not imported for this: so a torch
    installation that fails to import is listed until a call loads the
    backend, which then reports why); once torch is imported, as the other
    backends, when its module loads.  ``cupy`` only when CuPy imports and
    sees a GPU.
    """
    names = []
    for name in BACKEND_MODULES:
        if name == "torch" and "torch" not in sys.modules:
            if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("array_api_compat") is not None:
                names.append(name)
            continue
        if _load(name) is not None:
            names.append(name)
    return names


def _environment_backend() -> str | None:
    """``PROXLIB_BACKEND``, read at every call (a test or a script may set it
    at run time).  ``os.environ.get`` of an absent name raises and catches a
    KeyError inside the mapping: 0.85 us, a tenth of a whole OWL prox at
    n = 100.  The environment's own dict (CPython's ``os.environ._data``,
    the same one that ``os.environ[...] = ...`` updates) answers in 30 ns;
    ``os.environ.get`` stays the fallback where it is not there."""
    data = getattr(os.environ, "_data", None)
    if type(data) is not dict or _ENV_KEY is None:
        return os.environ.get("PROXLIB_BACKEND")
    raw = data.get(_ENV_KEY)
    return None if raw is None else os.environ.decodevalue(raw)


try:
    _ENV_KEY = os.environ.encodekey("PROXLIB_BACKEND")
except AttributeError:  # (an os.environ without CPython's encoding helpers)
    _ENV_KEY = None


def _requested() -> str | None:
    name = _override.get() or _environment_backend() or None
    if name is not None and name not in BACKEND_MODULES:
        raise ValueError(f"unknown proxlib backend {name!r}; choose from {sorted(BACKEND_MODULES)}")
    return name


def _module(name: str) -> ModuleType:
    module = _load(name)
    if module is None:
        raise ImportError(f"proxlib backend {name!r} is unavailable here ({_why_unavailable.get(name, 'not loaded')})")
    return module


_WHERE = {"numpy": "a NumPy array", "cupy": "a CuPy array", "torch": "a torch tensor"}


def backend_for(x) -> ModuleType:
    """The backend module that will run a kernel on array ``x``."""
    kind = array_kind(x)
    requested = _requested()
    if requested is not None:
        if _ARRAY_KIND[requested] != kind:
            raise ValueError(f"backend {requested!r} cannot run on {_WHERE[kind]}")
        return _module(requested)
    if kind == "numpy":
        return _load("numba") or _module("numpy")
    return _module(kind)


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Run the enclosed calls on backend ``name``; ``None``: the choice made
    outside any ``use_backend`` (``PROXLIB_BACKEND`` where it is set, else
    the input's own backend).

    >>> import numpy as np, proxlib
    >>> with proxlib.use_backend("numpy"):
    ...     proxlib.prox_weighted_l1(np.array([3.0, -0.5]), 1.0)
    array([ 2., -0.])
    """
    if name is not None and not isinstance(name, str):  # (a list raised "unhashable type: 'list'")
        raise TypeError(f"use_backend's name must be a backend name (str) or None, got {type(name).__name__}")
    if name is not None and name not in BACKEND_MODULES:
        raise ValueError(f"unknown proxlib backend {name!r}; choose from {sorted(BACKEND_MODULES)}")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)
