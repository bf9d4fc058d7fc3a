"""Shared test configuration.

Hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE:

* ``ci`` (default): a few dozen examples per test, derandomized so that every CI
  run sees the same examples and a failure reproduces exactly;
* ``long``: randomized, and as many examples per test as an hour on two cores
  allows for the whole suite (``HYPOTHESIS_PROFILE=long pytest tests -n 2 --dist worksteal``; run
  it before resolving an issue).  The budget depends on what an example costs:

  - ``SOLVER_EXAMPLES`` for tests whose reference is a solver (CVXPY, about
    0.1-0.2 s a solve) or a 60-digit decimal computation;
  - ``PROPERTY_EXAMPLES`` for the solver-free property tests (certificates,
    invariances, backend parity, closed forms: milliseconds an example).

  A test is a solver test when its code, or a helper of its own module that it
  calls, names ``cvx``, ``exact_``, ``Decimal`` or ``decimal`` (the references
  of ``_cvx``); everything else is a property test.  A test whose examples
  are expensive for another reason (every operator at once, dozens of
  parametrisations) says so with ``@pytest.mark.long_examples(n)``; a test's
  own ``@settings`` always wins.
* ``dev``: a handful of examples, for iterating on a test.

The ``numpy_backend`` fixture pins proxlib's dispatch to the NumPy reference
backend (numba would otherwise be chosen for NumPy arrays whenever it is
installed).  The core-operator test modules use it for every test; backend
parity is tested elsewhere.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

import pytest
from hypothesis import HealthCheck, settings

import proxlib

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SOLVER_EXAMPLES = 100
PROPERTY_EXAMPLES = 400

_common = dict(
    deadline=None,  # CVXPY solves and first-call imports make timings meaningless
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=30, derandomize=True, print_blob=True, **_common)
settings.register_profile("long", max_examples=PROPERTY_EXAMPLES, derandomize=False, print_blob=True, **_common)
settings.register_profile("dev", max_examples=5, derandomize=True, **_common)
settings.load_profile(PROFILE)

# torch CPU tensors: the tests run the torch operations, the code that every
# other torch device runs (by default proxlib sends float32/float64 CPU tensors
# to Numba's serial kernels instead; that route has its own tests:
# "torch+numba" in test_backends.py's parity test, and test_torch_prox.py).
try:
    from proxlib.backends import torch_dev
except ImportError:  # no torch
    pass
else:
    torch_dev.CPU_KERNELS = "torch"
    # the Triton kernels that are off by default (the exclusive penalties'
    # rows, the metric row operators, a step's group lasso of many tensors
    # in one launch) in every test, with
    # PROXLIB_TEST_TRITON_KERNELS=triton (``benchmarks/gpu_session.sh`` runs
    # the device tests so on a GPU)
    if os.environ.get("PROXLIB_TEST_TRITON_KERNELS"):
        from proxlib.backends import _metric_kernels, _xp_kernels

        _xp_kernels.EXCLUSIVE_ROWS = _metric_kernels.METRIC_ROWS = os.environ["PROXLIB_TEST_TRITON_KERNELS"]
        torch_dev.GROUP_ROWS = os.environ["PROXLIB_TEST_TRITON_KERNELS"]



def _routes() -> dict:
    """The process-wide switches of the kernels' routes (torch's CPU route,
    its row statistics, group+exclusive's root search, the exclusive
    penalties' rows, the metric row operators, the batched step, the group
    lasso and GrOWL rows of many tensors in one launch)."""
    out = {}
    for module, name in (("proxlib.backends.torch_dev", "CPU_KERNELS"), ("proxlib.backends.torch_dev", "ROW_STATS"),
                         ("proxlib.backends._xp_kernels", "ROOT_SEARCH"), ("proxlib.backends._xp_kernels", "EXCLUSIVE_ROWS"),
                         ("proxlib.backends._metric_kernels", "METRIC_ROWS"), ("proxlib.torch._batched", "ENABLED"),
                         ("proxlib.backends.torch_dev", "GROUP_ROWS")):
        mod = sys.modules.get(module)
        if mod is not None:
            out[f"{module}.{name}"] = getattr(mod, name)
    return out


@pytest.fixture(autouse=True)
def _routes_restored():
    """A test that changes a route switch and leaves it changed errors
    itself (restoring it), instead of sending the tests after it in its
    worker down another route: a benchmark test once left CPU_KERNELS at
    "auto", and 27 batched-step tests then failed on Numba's route."""
    before = _routes()
    yield
    after = _routes()
    changed = {k: (before[k], after[k]) for k in before if k in after and before[k] != after[k]}
    for key, (old, _) in changed.items():
        module, name = key.rsplit(".", 1)
        setattr(sys.modules[module], name, old)
    if changed:
        pytest.fail(f"the test left route switches changed (restored now): {changed}", pytrace=False)


_SOLVER = re.compile(r"cvx|exact_|[Dd]ecimal")


def _names(code) -> set[str]:
    """Global and attribute names used by a code object and the code nested in it."""
    out = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            out |= _names(const)
    return out


def uses_a_solver(fn, module) -> bool:
    """Whether the test ``fn`` (or a helper function of ``module`` it calls,
    one level deep) uses a solver or a high-precision reference."""
    names = _names(fn.__code__)
    if any(_SOLVER.search(n) for n in names):
        return True
    for n in names:
        obj = getattr(module, n, None)
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            if any(_SOLVER.search(m) for m in _names(obj.__code__)):
                return True
    return False


def pytest_configure(config):
    config.addinivalue_line("markers", "long_examples(n): the test's example budget in the long Hypothesis profile")


def pytest_collection_modifyitems(config, items):
    """In the long profile, give each Hypothesis test its example budget."""
    if PROFILE != "long":
        return
    seen = set()
    for item in items:
        fn = getattr(item, "obj", None)
        if not getattr(fn, "is_hypothesis_test", False) or id(fn) in seen:
            continue
        seen.add(id(fn))
        if getattr(fn, "_hypothesis_internal_settings_applied", False):
            continue  # a test's own @settings wins
        marker = item.get_closest_marker("long_examples")
        if marker is not None:
            budget = int(marker.args[0])
        elif uses_a_solver(fn.hypothesis.inner_test, item.module):
            budget = SOLVER_EXAMPLES
        else:
            budget = PROPERTY_EXAMPLES
        settings(max_examples=budget)(fn)  # @settings applied over @given, in place


def pytest_report_header(config):
    if PROFILE == "long":
        return f"hypothesis long profile: {SOLVER_EXAMPLES} examples for solver tests, {PROPERTY_EXAMPLES} otherwise"
    return None


@pytest.fixture(scope="module")
def numpy_backend():
    """Run the enclosed tests on proxlib's NumPy reference backend."""
    with proxlib.use_backend("numpy"):
        yield "numpy"


@pytest.fixture
def cupy_gpu_against(monkeypatch):
    """``load(module)``: ``proxlib.backends.cupy_gpu`` imported afresh with
    ``module`` standing in for ``cupy`` (NumPy, or a fake without a driver);
    the real import state is restored afterwards."""
    import proxlib.backends as pkg

    name = "proxlib.backends.cupy_gpu"
    saved_module = sys.modules.pop(name, None)
    saved_attr = pkg.__dict__.pop("cupy_gpu", None)

    def load(module):
        monkeypatch.setitem(sys.modules, "cupy", module)
        return importlib.import_module(name)

    try:
        yield load
    finally:
        sys.modules.pop(name, None)
        pkg.__dict__.pop("cupy_gpu", None)
        if saved_module is not None:
            sys.modules[name] = saved_module
        if saved_attr is not None:
            pkg.cupy_gpu = saved_attr
