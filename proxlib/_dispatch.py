"""The one place where an input array picks a backend.

* CuPy arrays run on the ``cupy`` backend, on the array's own device.
* NumPy arrays run on ``numba`` when numba is importable, else on ``numpy``
  (the reference).
* ``use_backend(name)`` (a context manager) or the environment variable
  ``PROXLIB_BACKEND`` overrides the choice, for tests and benchmarks.  An
  override that names a backend the input cannot run on (``cupy`` for a NumPy
  array, ``numba``/``numpy`` for a CuPy array) raises instead of falling back.

Every backend module exports the same kernel names, listed in ``KERNELS``.
Kernels take canonical inputs (see ``proxlib/backends/__init__.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from types import ModuleType
from typing import Iterator

import numpy as np

__all__ = ["use_backend", "available_backends", "array_namespace", "backend_for"]

BACKEND_MODULES = {
    "numpy": "proxlib.backends.numpy_ref",
    "numba": "proxlib.backends.numba_cpu",
    "cupy": "proxlib.backends.cupy_gpu",
}

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("proxlib_backend", default=None)
_loaded: dict[str, ModuleType | None] = {}


def _is_cupy_array(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def array_namespace(x) -> ModuleType:
    """``numpy`` or ``cupy``: the module whose functions operate on ``x``.

    NumPy and CuPy share one API, so kernels written against the returned
    module run unchanged on either (array_api_compat would add a dependency the
    core does not need for two namespaces that already agree).
    """
    if _is_cupy_array(x):
        import cupy

        return cupy
    return np


def _load(name: str) -> ModuleType | None:
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(BACKEND_MODULES[name])
        except ImportError:
            _loaded[name] = None
    return _loaded[name]


def available_backends() -> list[str]:
    """Names of the backends whose modules import on this machine."""
    return [name for name in BACKEND_MODULES if _load(name) is not None]


def _requested() -> str | None:
    name = _override.get() or os.environ.get("PROXLIB_BACKEND") or None
    if name is not None and name not in BACKEND_MODULES:
        raise ValueError(f"unknown proxlib backend {name!r}; choose from {sorted(BACKEND_MODULES)}")
    return name


def backend_for(x) -> ModuleType:
    """The backend module that will run a kernel on array ``x``."""
    requested = _requested()
    on_gpu = _is_cupy_array(x)
    if requested is not None:
        if (requested == "cupy") != on_gpu:
            where = "a CuPy array" if on_gpu else "a NumPy array"
            raise ValueError(f"backend {requested!r} cannot run on {where}")
        module = _load(requested)
        if module is None:
            raise ImportError(f"backend {requested!r} was requested but its dependencies are not installed")
        return module
    if on_gpu:
        module = _load("cupy")
        if module is None:
            raise ImportError("a CuPy array was given but proxlib's cupy backend failed to import")
        return module
    return _load("numba") or _load("numpy")  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Run the enclosed calls on backend ``name`` (``None`` restores automatic choice).

    >>> import numpy as np, proxlib
    >>> with proxlib.use_backend("numpy"):
    ...     proxlib.prox_weighted_l1(np.array([3.0, -0.5]), 1.0)
    array([ 2., -0.])
    """
    if name is not None and name not in BACKEND_MODULES:
        raise ValueError(f"unknown proxlib backend {name!r}; choose from {sorted(BACKEND_MODULES)}")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)
