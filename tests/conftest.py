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
    _warm_numba_cache(config)


# The signatures of numba_cpu._exclusive_cols (float32/float64, exclusive
# lasso / group+exclusive) take 12-23 s each to compile on a 2-core Zen 4 VM
# and about twice that on a Zen 1, and tests on both xdist workers need them
# early: each worker compiled all four, side by side (70 s of the 74 s that a
# cold run of the suite compiled twice, measured with a compile logger,
# 2026-12-06).  Before the workers start, two processes compile two each
# into Numba's cache (balanced: 45-60 s of wall time there, callees
# included), and the workers load them.
# (Since 2026-12-07 each signature compiles only its own operator's and
# dtype's callees: see numba_cpu._make_exclusive_cols.)
_WARM = (("float64", "gx", "float32", "ex"), ("float32", "gx", "float64", "ex"))


def _warm_numba_cache(config) -> None:
    """Compile the kernels of _WARM into Numba's cache, in parallel, when this
    is the controller of a parallel run of the whole suite (``-n 2`` or
    more, no paths given) and Numba can cache: a run of a few tests does not
    wait for them.  A warm cache makes this a second or two (two imports
    that load the kernels); a failure here only means the workers compile
    them, as they would without it."""
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not isinstance(workers, int) or workers < 2:
        return
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return
    try:
        from proxlib.backends import numba_cpu
    except ImportError:  # (no numba)
        return
    if not numba_cpu._OPTS["cache"]:
        return
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "_warm_numba.py")
    procs = [subprocess.Popen([sys.executable, script, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for args in _WARM]
    for args, p in zip(_WARM, procs):
        try:
            _, err = p.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            err = "timed out after 900 s"
        if p.returncode:  # (in the summary: the suite is only slower, but the script needs mending)
            config.issue_config_time_warning(
                pytest.PytestWarning(f"tests/_warm_numba.py {' '.join(args)} failed; the workers compile those kernels: {err.strip()[-500:]}"),
                stacklevel=2,
            )


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
