"""Shared test configuration.

Hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE:

* ``ci`` (default): a few dozen examples per test, derandomized so that every CI
  run sees the same examples and a failure reproduces exactly;
* ``long``: thousands of examples per test, randomized; run it before
  resolving an issue (``HYPOTHESIS_PROFILE=long pytest tests -n 2``);
* ``dev``: a handful of examples, for iterating on a test.

The ``numpy_backend`` fixture pins proxlib's dispatch to the NumPy reference
backend (numba would otherwise be chosen for NumPy arrays whenever it is
installed).  The core-operator test modules use it for every test; backend
parity is tested elsewhere.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import proxlib

_common = dict(
    deadline=None,  # CVXPY solves and first-call imports make timings meaningless
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_common)
settings.register_profile("long", max_examples=2000, derandomize=False, print_blob=True, **_common)
settings.register_profile("dev", max_examples=5, derandomize=True, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def numpy_backend():
    """Run the enclosed tests on proxlib's NumPy reference backend."""
    with proxlib.use_backend("numpy"):
        yield "numpy"
