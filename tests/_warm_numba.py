"""Compile Numba kernels into the cache before a parallel test session.

Run by ``conftest._warm_numba_cache`` as ``python tests/_warm_numba.py
float64 gx float32 ex``: each (dtype, operator) pair compiles one
signature of ``numba_cpu._exclusive_cols`` (the exclusive operators on
the columns of a matrix: ``gx`` group+exclusive, ``ex`` the exclusive
lasso) on a small matrix, and Numba writes it to its cache, from which
the test workers then load it.  Nothing is checked here: the tests check
the kernels."""

import sys

import numpy as np

from proxlib.backends import numba_cpu as nb


def warm(dtype: str, op: str) -> None:
    A = np.ones((8, 3), dtype=dtype)
    b = np.full(3, 0.1, dtype=dtype)
    nb._exclusive_cols(A, b.copy() if op == "gx" else None, b, np.empty_like(A), nb._NO_HINTS)


if __name__ == "__main__":  # (pytest's --doctest-modules imports this file too)
    for dtype, op in zip(sys.argv[1::2], sys.argv[2::2]):
        warm(dtype, op)
