"""CPU benchmarks of proxlib against its floors and its peers.

    python benchmarks/run.py                 # full suite (several minutes)
    python benchmarks/run.py --quick         # small sizes, a smoke test (< 1 min)
    python benchmarks/run.py --out benchmarks/RESULTS.md --plot benchmarks/results_cpu.png

For every operator, size and dtype it times each contender (proxlib on every
backend that imports, the peers of ``peers.py``, CVXPY at small sizes) and a
FLOOR measured in the same run: ``np.sort(v)`` for OWL, one memory pass
``np.abs(W)`` for the row operators.  Reported per contender: the median of
``time.perf_counter`` over repeats (after a warm-up call, so JIT compilation is
excluded; calls shorter than BLOCK_SECONDS are timed in blocks of consecutive
calls, one repeat being a block's mean, so that microsecond calls are not
timings of the timer and of one cache miss), the ratio to the floor, the peak extra memory of one call (traced by
tracemalloc, minus the output, in units of the input's size), and the max abs
difference from proxlib's NumPy reference on the same input.  A contender whose
output disagrees with the reference is excluded from the timings, with a note.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import tracemalloc
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import proxlib  # noqa: E402
from peers import OPERATORS, Case, Contender, Unavailable, all_contenders  # noqa: E402
from peers import _proxlib_call as proxlib_call  # noqa: E402

FLOORS = {"owl": "np.sort(v)"} | {op: "np.abs(W)" for op in OPERATORS if op != "owl"}

# CPU targets (issues 3 and 13): (operator, size, dtype) -> max ratio to the floor
# (medians), in float64 and float32.
TARGETS = {}
for _dtype in ("float64", "float32"):
    TARGETS |= {
        ("owl", "n=1e6", _dtype): 1.5,
        ("owl", "n=1e7", _dtype): 2.0,
        ("group_lasso", "4096x4096", _dtype): 1.1,
        ("growl", "4096x4096", _dtype): 1.1,
    }
    for _size in ("4096x4096", "512x4608", "784x300", "784x300 b=10/m"):
        TARGETS[("exclusive_lasso", _size, _dtype)] = 3.0
        TARGETS[("group_exclusive", _size, _dtype)] = 3.0

# Targets against a peer instead of a floor: (operator, size, dtype) -> (peer, max
# ratio of proxlib's median to the peer's).  Issue 13: OWL's per-call overhead at
# n = 100 no worse than skglm's.  skglm's prox_vec validates nothing; the rows
# show proxlib's public function (its input and weight checks on every call),
# the penalty object made once (checks of the input per call: the like-for-like
# of skglm's SLOPE object) and the kernel alone.
PEER_TARGETS = {("owl", "n=1e2", dt): ("skglm SLOPE.prox_vec", 1.0) for dt in ("float64", "float32")}


def kernel_contender() -> Contender:
    """proxlib's Numba OWL kernel called directly (thresholds step * w formed
    untimed): the per-call cost without the public function's input checks."""

    def prepare(case: Case):
        from peers import Prepared

        if "numba" not in proxlib.available_backends():
            raise Unavailable("numba does not import on this machine")
        from proxlib.backends import numba_cpu

        t = (case.weights.astype(np.float64) * case.step).astype(case.x.dtype)
        v = np.ascontiguousarray(case.x)
        return Prepared(lambda: numba_cpu.owl(v, t))

    return Contender(name="proxlib[numba kernel]", kind="proxlib", ops=("owl",),
                     mapping="proxlib.backends.numba_cpu.owl(v, step * weights)  (no input checks)",
                     prepare=prepare)


def penalty_object_contender() -> Contender:
    """proxlib's OWL penalty object, made once (its weights checked and copied
    then), called as a solver calls it: ``pen.prox(v, step)`` with the input
    checks on.  The like-for-like of skglm's ``SLOPE(alphas).prox_vec``."""

    def prepare(case: Case):
        from peers import Prepared

        if "numba" not in proxlib.available_backends():
            raise Unavailable("numba does not import on this machine")
        # no use_backend here (a solver calls pen.prox bare): the backend is
        # the default one, which PROXLIB_BACKEND may make another than Numba
        from proxlib._dispatch import backend_for

        runs_on = backend_for(case.x).__name__.rsplit(".", 1)[-1]
        if runs_on != "numba_cpu":
            raise Unavailable(f"PROXLIB_BACKEND={os.environ.get('PROXLIB_BACKEND')!r} runs pen.prox on {runs_on}, not Numba")
        pen = proxlib.OWL(case.weights)
        v, s = case.x, case.step
        return Prepared(lambda: pen.prox(v, s))

    return Contender(name="proxlib[numba, OWL(w).prox]", kind="proxlib", ops=("owl",),
                     mapping="pen = proxlib.OWL(weights) once; pen.prox(v, step) per call (input checks on)",
                     prepare=prepare)


def contenders_all() -> list[Contender]:
    out = all_contenders(("numpy", "numba"))
    return out[:3] + [penalty_object_contender(), kernel_contender()] + out[3:]


SKIP_SECONDS = 10.0  # skip a contender at a size where one call is predicted to exceed this
PREDICT_FROM = 0.2  # ... predicted linearly from a smaller size that took at least this long
# (below it fixed overheads, e.g. waking Numba's threads, make extrapolation meaningless)


# ------------------------------------------------------------------ cases


def _size_label(n: int) -> str:
    e = int(round(math.log10(n)))
    return f"n=1e{e}" if 10**e == n else f"n={n}"


def make_case(op: str, shape, dtype: str, small: bool) -> Case:
    """Random data with a non-trivial answer (some zeros, some shrinkage, OWL clusters)."""
    seed = zlib.crc32(repr((op, shape, dtype)).encode())
    rng = np.random.default_rng(seed)
    step = 0.5
    if op == "owl":
        n = int(shape)
        v = rng.standard_normal(n).astype(dtype)
        w = np.linspace(2.0, 0.0, n).astype(dtype)  # step * w in [0, 1]
        return Case(op, _size_label(n), v, step, weights=w, small=small)
    G, m, *sparser = shape  # (G, m, k): the exclusive operators' b = k/m (default 1/m)
    k = sparser[0] if sparser else 1
    scale = rng.uniform(0.5, 1.5, size=(G, 1))  # row norms ~ scale * sqrt(m)
    W = (rng.standard_normal((G, m)) * scale).astype(dtype)
    label = f"{G}x{m}" + (f" b={k}/m" if k != 1 else "")
    r = math.sqrt(m)
    if op == "growl":
        w = (r * np.linspace(1.0, 0.0, G)).astype(dtype)  # step * w in [0, sqrt(m)/2]
        return Case(op, label, W, step, weights=w, small=small)
    if op == "group_lasso":
        return Case(op, label, W, step, lam=r / step, small=small)  # zeroes rows with scale < 1
    if op == "exclusive_lasso":
        return Case(op, label, W, step, lam=k / (m * step), small=small)  # b = k/m: supports of ~66% (k = 1), ~24% (k = 10)
    if op == "group_exclusive":
        a, b = 0.3 * r, k / m  # a = step lam (1-mu), b = step lam mu: supports of ~76% (k = 1), ~44% (k = 10)
        return Case(op, label, W, step, lam=(a + b) / step, mu=b / (a + b), small=small)
    raise ValueError(op)


def sizes(quick: bool):
    """(op, shape, small) in increasing size per operator; small = CVXPY-sized."""
    if quick:
        owl = [(30, True), (10**3, False), (10**4, False)]
        rows = [((16, 16), True), ((256, 256), False), ((64, 576), False)]
    else:
        owl = [(100, True)] + [(10**k, False) for k in range(3, 8)]
        rows = [((64, 64), True), ((784, 300), False), ((512, 4608), False), ((4096, 4096), False)]
    # the exclusive operators also with sparser supports (b ten times larger),
    # as in training once the penalty has done its work
    sparser = [] if quick else [((784, 300, 10), False)]
    out = []
    for op in OPERATORS:
        more = sparser if op in ("exclusive_lasso", "group_exclusive") else []
        for shape, small in (owl if op == "owl" else rows + more):
            out.append((op, shape, small))
    return out


# ------------------------------------------------------------------ measuring


@dataclass
class Result:
    op: str
    size: str
    dtype: str
    contender: str
    kind: str
    median_s: float | None = None
    ratio: float | None = None
    runs: int = 0
    extra_mem: float | None = None  # (peak traced - output bytes) / input bytes
    extra_bytes: int | None = None
    max_abs_diff: float | None = None
    tol: float | None = None
    out_dtype: str | None = None
    note: str = ""
    target: float | None = None
    status: str = ""


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _nbytes(out) -> int:
    return int(getattr(out, "nbytes", 0))


def peak_extra_bytes(fn) -> tuple[int, object]:
    """Peak bytes traced by tracemalloc during one call, minus the output's bytes."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base - _nbytes(out), out


BLOCK_SECONDS = 2e-4  # calls shorter than this are timed in blocks of about this length


def time_repeats(fn, first: float, budget: float, min_runs: int, max_runs: int) -> list[float]:
    """``first`` is one timed call already made; add repeats within ``budget``
    seconds.  A call shorter than BLOCK_SECONDS is repeated in blocks of
    about that length, each repeat being its block's time per call (every
    contender of a case alike: the floor, proxlib, the peers)."""
    times = [first]
    if first > 2.0:  # one slow call: keep the single timing rather than blow the budget
        return times
    block = max(1, int(BLOCK_SECONDS / max(first, 1e-9)))
    want = int(min(max_runs, max(min_runs, budget / (block * max(first, 1e-9)))))
    for _ in range(want - 1):
        if block == 1:
            t, out = _timed(fn)
            del out
        else:
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            t = (time.perf_counter() - t0) / block
        times.append(t)
    return times


def measure(fn, budget: float, min_runs: int, max_runs: int):
    """Warm-up (JIT compile, page faults), memory call, then timed repeats.

    The cyclic garbage collector is off meanwhile (as in ``timeit``); arrays are
    freed by reference counting as soon as each call's output is dropped.  A
    memory call slower than SKIP_SECONDS is the only timing (tracemalloc costs
    little next to array work of that length).
    """
    gc.collect(1)
    gc.disable()
    try:
        out = fn()  # warm-up; its output is the one checked for equality
        t0 = time.perf_counter()
        extra, out2 = peak_extra_bytes(fn)
        t_mem = time.perf_counter() - t0
        del out2
        if t_mem > SKIP_SECONDS:
            return out, extra, [t_mem]
        first, out3 = _timed(fn)
        del out3
        times = time_repeats(fn, first, budget, min_runs, max_runs)
    finally:
        gc.enable()
    return out, extra, times


def verify_tracemalloc_sees_numba() -> str:
    """tracemalloc traces NumPy's allocator; check that arrays allocated inside
    Numba-compiled code (serial and prange) are traced too."""
    try:
        import numba
    except ImportError:
        return "numba not installed (n/a)"

    @numba.njit(parallel=True, cache=False)
    def alloc(n):
        a = np.empty(n)
        for i in numba.prange(n):
            a[i] = i
        out = np.empty(n)
        for i in numba.prange(n):
            out[i] = a[n - 1 - i]
        return out

    alloc(4)
    n = 1 << 20
    extra, _ = peak_extra_bytes(lambda: alloc(n))
    ok = extra >= 8 * n * 0.99
    return (f"{'yes' if ok else 'NO'}: a Numba prange kernel allocating one n-sized float64 "
            f"scratch showed {extra / (8 * n):.2f} n-sized extra arrays under tracemalloc "
            f"(expected 1.00), verified in this run")


# ------------------------------------------------------------------ suite


def run_suite(quick: bool, budget: float, ops: set[str] | None, log) -> list[Result]:
    contenders = contenders_all()
    results: list[Result] = []
    history: dict[tuple[str, str, str], tuple[int, float]] = {}  # (contender, op, dtype) -> (size, seconds)
    min_runs, max_runs = (3, 5) if quick else (3, 25)
    for op, shape, small in sizes(quick):
        if ops and op not in ops:
            continue
        for dtype in ("float64", "float32"):
            case = make_case(op, shape, dtype, small)
            x = case.x
            key = (op, case.size, dtype)
            log(f"{op:16s} {case.size:10s} {dtype}")
            floor_fn = (lambda: np.sort(x)) if op == "owl" else (lambda: np.abs(x))
            # The floor is timed before and after the contenders; the median pools both.
            _, fextra, ftimes = measure(floor_fn, budget / 2, max(min_runs, 5), max_runs)
            floor_r = Result(op, case.size, dtype, FLOORS[op] + " (floor)", "floor",
                             extra_mem=fextra / x.nbytes, extra_bytes=fextra)
            results.append(floor_r)
            timed: list[Result] = []
            ref = None  # the proxlib[numpy] contender's output, or computed below
            for c in contenders:
                if op not in c.ops or (c.small_only and not small) or (c.float64_only and dtype != "float64"):
                    continue
                r = Result(op, case.size, dtype, c.name, c.kind)
                results.append(r)
                hkey = (c.name, op, dtype)
                if hkey in history and history[hkey][1] >= PREDICT_FROM:
                    n0, t0 = history[hkey]
                    pred = t0 * x.size / n0
                    if pred > SKIP_SECONDS:
                        r.note = f"skipped: one call predicted {pred:.0f} s (> {SKIP_SECONDS:.0f} s) from the smaller size"
                        continue
                try:
                    prep = c.prepare(case)
                    out, extra, times = measure(prep.call, budget, min_runs, max_runs)
                except Unavailable as exc:
                    r.note = f"unavailable: {exc}"
                    continue
                except Exception as exc:  # a broken or incomplete backend / peer
                    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                    r.note = f"failed: {type(exc).__name__}: {' / '.join(lines[:3])[:300]}"
                    continue
                if ref is None:
                    if c.name == "proxlib[numpy]":
                        ref = np.asarray(out)
                    else:
                        with proxlib.use_backend("numpy"):
                            ref = np.asarray(proxlib_call(case, False)())
                got = np.asarray(prep.to_ref(out))
                r.out_dtype = str(getattr(out, "dtype", type(out).__name__))
                scale = max(1.0, float(np.max(np.abs(x))))
                r.tol = c.rtol[dtype] * scale
                if got.shape != ref.shape:
                    r.note = f"excluded: output shape {got.shape} != reference {ref.shape}"
                    continue
                r.max_abs_diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
                if not (r.max_abs_diff <= r.tol):
                    r.note = (f"excluded: output disagrees with proxlib's NumPy reference "
                              f"(max abs diff {r.max_abs_diff:.2e} > tol {r.tol:.1e})")
                    continue
                r.median_s = float(np.median(times))
                r.runs = len(times)
                r.extra_mem = extra / x.nbytes
                r.extra_bytes = extra
                notes = [f"returns {r.out_dtype}"] if r.out_dtype != dtype else []
                if prep.note is not None and prep.note():
                    notes.append(prep.note())
                r.note = "; ".join(notes)
                if r.runs == 1:
                    r.note = (r.note + "; " if r.note else "") + "one call > 2 s: a single timed run (over 10 s: the tracemalloc call)"
                history[hkey] = (x.size, r.median_s)
                timed.append(r)
            _, _, ftimes2 = measure(floor_fn, budget / 2, max(min_runs, 5), max_runs)
            floor_r.median_s = float(np.median(ftimes + ftimes2))
            floor_r.ratio, floor_r.runs = 1.0, len(ftimes) + len(ftimes2)
            t_avx2 = None
            if op == "owl" and x.size >= 10**4 and numpy_sort_is_slow():
                runs = 3 if x.size >= 10**7 else 7
                t_avx2 = sort_seconds(x.size, dtype, runs, avx2=True)
                if t_avx2 is not None:
                    results.append(Result(op, case.size, dtype, AVX2_FLOOR, "floor", median_s=t_avx2,
                                          ratio=t_avx2 / floor_r.median_s, runs=runs,
                                          note="the machine's best np.sort (see the machine table)"))
            spread = max(np.median(ftimes), np.median(ftimes2)) / min(np.median(ftimes), np.median(ftimes2))
            if spread > 1.25:
                floor_r.note = f"floor medians before/after the contenders differ by {spread:.2f}x (noisy machine)"
            log(f"    {floor_r.contender:34s} {floor_r.median_s * 1e3:10.3f} ms  {floor_r.note}")
            for r in timed:
                r.ratio = r.median_s / floor_r.median_s
                if r.kind == "proxlib" and key in TARGETS:
                    r.target = TARGETS[key]
                    r.status = "met" if r.ratio <= r.target else "missed"
                    if t_avx2 is not None:  # (the floor is the slow sort: judged against the AVX2 one)
                        r.status = (("met" if r.median_s <= r.target * t_avx2 else "missed")
                                    + f" against the AVX2 sort ({r.median_s / t_avx2:.2f}x); {r.status} against np.sort here")
                if r.kind == "proxlib" and key in PEER_TARGETS:
                    peer, lim = PEER_TARGETS[key]
                    pr = next((q for q in timed if q.contender == peer), None)
                    if pr is not None:
                        r.status = ("met" if r.median_s <= lim * pr.median_s else "missed") + f" ({r.median_s / pr.median_s:.2f}x {peer})"
                log(f"    {r.contender:34s} {r.median_s * 1e3:10.3f} ms  x{r.ratio:7.2f}  mem {r.extra_mem:5.2f}  "
                    f"diff {r.max_abs_diff:.1e}")
            for r in results:
                if r.op == op and r.size == case.size and r.dtype == dtype and r.note and r.median_s is None:
                    log(f"    {r.contender:34s} {r.note}")
            del case, x, ref
    return results


# ------------------------------------------------------------------ reporting


def _cmd(args) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine_description() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    flags = ""
    try:
        f = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        flags = ", ".join(x for x in ("avx2", "avx512f", "avx512dq") if f" {x}" in f)
    except (OSError, IndexError):
        pass
    versions = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "numba", "cvxpy", "clarabel", "matplotlib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    commit = _cmd(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "proxlib"])
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu + (f" ({flags})" if flags else ""),
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process",
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "proxlib": f"{proxlib.__version__} at commit {commit or '?'}" + (" (proxlib/ has uncommitted changes)" if dirty else ""),
        "backends": ", ".join(proxlib.available_backends()),
        "numba_threads": os.environ.get("NUMBA_NUM_THREADS", "default (all cores)"),
        "numpy_sort": numpy_sort_description(),
    }


_SORT_TIMING = """
import sys, time
import numpy as np
v = np.random.default_rng(0).standard_normal(int(sys.argv[1])).astype(sys.argv[2])
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    np.sort(v)
    times.append(time.perf_counter() - t)
print(float(np.median(times)))
"""

#: NumPy's CPU features to switch off for its AVX2 sort (read by NumPy at import only)
_WITHOUT_AVX512 = "AVX512_ICL X86_V4"

#: the OWL's second floor where NumPy's own sort is its slow AVX-512 code
AVX2_FLOOR = "np.sort(v), NumPy's AVX2 code (another process)"


def numpy_sort_is_slow() -> bool:
    """Whether np.sort runs NumPy's AVX-512 code on AMD Zen 4 here (the
    Numba OWL then sorts by radix: ``numba_cpu._numpy_sort_is_slow``)."""
    try:
        from proxlib.backends import numba_cpu
    except ImportError:
        return False
    return numba_cpu._numpy_sort_is_slow()


def sort_seconds(n: int, dtype: str, repeats: int = 7, avx2: bool = False) -> float | None:
    """Median time of np.sort on n Gaussian entries of ``dtype`` in a child
    process, with NumPy's AVX2 code if ``avx2`` (None if that fails)."""
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=_WITHOUT_AVX512) if avx2 else None
    try:
        out = subprocess.run([sys.executable, "-c", _SORT_TIMING, str(n), dtype, str(repeats)],
                             capture_output=True, text=True, timeout=300, env=env).stdout
        return float(out)
    except (subprocess.SubprocessError, ValueError):
        return None


def numpy_sort_description() -> str:
    """Which sort the OWL floor ``np.sort`` runs here.  On AMD Zen 4 NumPy's
    AVX-512 sort is several times slower than its AVX2 code (see
    ``proxlib.backends.numba_cpu._numpy_sort_is_slow``), so the floor is
    then not the machine's best sort: this says so with np.sort of 1e6
    float64 timed in this process and in a child process given NumPy's AVX2
    code (median of 7 each), and which sort proxlib's OWL uses for its keys."""
    if not numpy_sort_is_slow():
        return "NumPy's SIMD sort, for the floor and for the Numba OWL's keys"
    here, avx2 = sort_seconds(10**6, "float64"), sort_seconds(10**6, "float64", avx2=True)
    timed = (f"np.sort of 1e6 float64 {here * 1e3:.1f} ms, {avx2 * 1e3:.1f} ms with NumPy's AVX2 code "
             f"(NPY_DISABLE_CPU_FEATURES=\"{_WITHOUT_AVX512}\", another process): ") if here and avx2 else ""
    return ("NumPy's AVX-512 sort on AMD Zen 4 (its compress-stores run in microcode): " + timed
            + "the OWL floor is that slow sort (the AVX2 one is a second floor, in the OWL rows); "
            "the Numba OWL sorts its keys by radix (numba_cpu.KEY_SORT 'auto')")


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _fmt_mem(r: Result) -> str:
    if r.extra_mem is None:
        return "—"
    b = r.extra_bytes
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{r.extra_mem:.2f} ({b:.0f} {unit})" if unit == "B" else f"{r.extra_mem:.2f} ({b:.1f} {unit})"
        b /= 1024


def write_markdown(path: Path, results: list[Result], machine: dict, contenders: list[Contender],
                   quick: bool, argv: str, note: str, load: tuple[str, str], numba_mem: str,
                   plot: Path | None, elapsed: float) -> None:
    L: list[str] = []
    L.append("# proxlib CPU benchmarks\n")
    L.append(f"Generated by `{argv}` on {machine['date']} in {elapsed / 60:.1f} min"
             f"{' (QUICK mode: smoke-test sizes, not the figures to quote)' if quick else ''}.\n")
    if note:
        L.append(f"**{note}**\n")
    L.append("## Machine\n")
    L.append("| | |\n|---|---|")
    for k in ("date", "cpu", "cores", "ram", "os", "versions", "proxlib", "backends", "numba_threads", "numpy_sort"):
        L.append(f"| {k.replace('_', ' ')} | {machine[k]} |")
    L.append(f"| load average (1/5/15 min) | start {load[0]}; end {load[1]} |")
    L.append(f"| tracemalloc sees Numba allocations | {numba_mem} |")
    L.append("")
    L.append("## Targets (medians, ratio to the floor measured in the same run)\n")
    mine_names = list(dict.fromkeys(r.contender for r in results if r.kind == "proxlib" and r.ratio is not None))
    L.append("| operator | size | target | " + " | ".join(mine_names) + " | best peer | status |")
    L.append("|---|---|---|" + "---|" * len(mine_names) + "---|---|")
    n_targets = 0
    for (op, size, dtype), lim in TARGETS.items():
        rows = [r for r in results if (r.op, r.size, r.dtype) == (op, size, dtype) and r.ratio is not None]
        if not rows:
            continue
        n_targets += 1
        mine = {r.contender: r for r in rows if r.kind == "proxlib"}
        peers = [r for r in rows if r.kind in ("peer", "cvxpy")]
        p = min(peers, key=lambda r: r.ratio) if peers else None
        met = [n for n, r in mine.items() if r.ratio <= lim]
        status = f"met by {', '.join(met)}" if met else ("missed" if mine else "—")
        avx2 = next((r for r in rows if r.contender == AVX2_FLOOR), None)
        if avx2 is not None and mine:  # (the floor is NumPy's slow AVX-512 sort: judged against the AVX2 one)
            best = min(mine.values(), key=lambda r: r.median_s)
            status = (("met" if best.median_s <= lim * avx2.median_s else "missed")
                      + f" against {AVX2_FLOOR}: best {best.median_s / avx2.median_s:.2f}x ({best.contender}); "
                      + f"against np.sort in this process: {status}")
        cells = [f"{mine[n].ratio:.2f}x" if n in mine else "—" for n in mine_names]
        best_peer = f"{p.contender} {p.ratio:.2f}x" if p else "none"
        L.append(f"| {op} ({dtype}) | {size} | <= {lim:g}x | " + " | ".join(cells) + f" | {best_peer} | {status} |")
    for (op, size, dtype), (peer, lim) in PEER_TARGETS.items():
        rows = [r for r in results if (r.op, r.size, r.dtype) == (op, size, dtype) and r.ratio is not None]
        pr = next((r for r in rows if r.contender == peer), None)
        mine = {r.contender: r for r in rows if r.kind == "proxlib"}
        if pr is None or not mine:
            continue
        n_targets += 1
        met = [n for n, r in mine.items() if r.median_s <= lim * pr.median_s]
        status = f"met by {', '.join(met)}" if met else "missed"
        cells = [f"{mine[n].median_s / pr.median_s:.2f}x peer" if n in mine else "—" for n in mine_names]
        L.append(f"| {op} ({dtype}) | {size} | <= {lim:g}x {peer} | " + " | ".join(cells) + f" | {peer} {pr.ratio:.2f}x floor | {status} |")
    if not n_targets:
        L.append("| (no target size in this run) |")
    L.append("")
    L.append("Ratios are to the floor of the same operator, size and dtype.  proxlib is timed as a "
             "user calls it (`check_finite=True`: group lasso and GrOWL test the row norms they "
             "compute anyway, the exclusive operators their row sums; the other operators add a "
             "reduction over the input) and, on "
             "Numba, also with `check_finite=False`, which is the like-for-like comparison with "
             "the peers (none of them checks its input).  np.sort and np.abs run on one core; "
             "proxlib's Numba kernels may use all cores.\n")
    if plot is not None:
        L.append(f"![ratios to the floor]({plot.name})\n")
    L.append("## Results\n")
    L.append("Columns: median wall time per call over `runs` timed repeats (after a warm-up call; a call "
             f"shorter than {BLOCK_SECONDS * 1e3:g} ms is repeated in blocks of about that length, such a repeat "
             "being its block's time per call); ratio to the "
             "floor; peak extra memory of one call in units of the input's size (tracemalloc peak "
             "minus the output's bytes; 0 = output only; a temporary freed before the output is "
             "allocated, such as the W-sized square inside `np.linalg.norm(W, axis=...)`, does not "
             "show); max abs difference from proxlib's NumPy "
             "reference on the same input (and the tolerance, relative to max(1, max|input|)).\n")
    unavailable: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.note.startswith("unavailable"):
            unavailable.setdefault((r.contender, r.note), []).append(f"{r.op} {r.size} {r.dtype}")
    for op in OPERATORS:
        rows = [r for r in results if r.op == op and not r.note.startswith("unavailable")]
        if not rows:
            continue
        L.append(f"### {op}  (floor: `{FLOORS[op]}`)\n")
        L.append("| size | dtype | contender | median | x floor | extra mem: x input (bytes) | max abs diff (tol) | runs | target | status | note |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            name = f"**{r.contender}**" if r.kind == "proxlib" else r.contender
            diff = "—" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e} ({r.tol:.0e})"
            tgt = f"<= {r.target:g}x" if r.target else ""
            note = r.note.replace("|", "\\|")
            L.append(f"| {r.size} | {r.dtype} | {name} | {_fmt_time(r.median_s)} | {_fmt(r.ratio, '.2f')} | "
                     f"{_fmt_mem(r)} | {diff} | {r.runs or '—'} | {tgt} | {r.status} | {note} |")
        L.append("")
    if unavailable:
        L.append("### Not run\n")
        for (name, why), where in unavailable.items():
            L.append(f"- **{name}**: {why.removeprefix('unavailable: ')} ({len(where)} cases)")
        L.append("")
    L.append("## Contenders and the exact calls\n")
    L.append("| contender | version | call (parameter mapping onto proxlib's problem) |")
    L.append("|---|---|---|")
    for c in contenders:
        mapping = c.mapping.replace("|", "\\|")
        L.append(f"| {c.name} | {c.version() or proxlib.__version__} | `{mapping}` |")
    L.append("")
    L.append("CVXPY runs only at the small sizes (OWL n = 100, rows 64 x 64) and in float64: its OWL "
             "needs a `sum_largest` atom per weight, over a minute at n = 1000.  Its accuracy is "
             "that of an interior-point solver, hence its looser tolerance.  A contender is skipped "
             f"at a size where one call is predicted (linearly from the previous size) to exceed "
             f"{SKIP_SECONDS:.0f} s.\n")
    path.write_text("\n".join(L))


def write_plot(path: Path, results: list[Result]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names_all = list(dict.fromkeys(r.contender for r in results if r.kind != "floor"))
    palette = [plt.cm.tab10(i) for i in range(10)] + ["black", "gold", "lime", "navy"]
    color = {n: palette[i % len(palette)] for i, n in enumerate(names_all)}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    axes = axes.ravel()
    axes[-1].axis("off")
    for ax, op in zip(axes, OPERATORS):
        rows = [r for r in results if r.op == op and r.ratio is not None and r.kind != "floor"]
        names = list(dict.fromkeys(r.contender for r in rows))
        if op == "owl":
            for name in names:
                for dtype, style in (("float64", "-o"), ("float32", "--x")):
                    pts = [(int(float(r.size.split("=")[1])), r.ratio) for r in rows
                           if r.contender == name and r.dtype == dtype]
                    if pts:
                        pts.sort()
                        ax.plot(*zip(*pts), style, label=f"{name} {dtype}", ms=4, color=color[name])
            ax.set_xscale("log")
            ax.set_xlabel("n")
        else:
            labels = list(dict.fromkeys((r.size, r.dtype) for r in rows))
            width = 0.8 / max(1, len(names))
            for i, name in enumerate(names):
                ys = [next((r.ratio for r in rows if r.contender == name and (r.size, r.dtype) == lab), np.nan)
                      for lab in labels]
                ax.bar(np.arange(len(labels)) + i * width, ys, width, label=name, color=color[name])
            ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
            ax.set_xticklabels([f"{s}\n{d}" for s, d in labels], fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(op)
        ax.set_ylabel("time / floor")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 1 min)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown file (default: benchmarks/RESULTS.md, or benchmarks/_out/RESULTS_quick.md with --quick)")
    ap.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --out, results_cpu[_quick].png)")
    ap.add_argument("--json", type=Path, default=None, help="raw results (default: benchmarks/_out/results_cpu[_quick].json)")
    ap.add_argument("--ops", default="", help="comma-separated subset of " + ",".join(OPERATORS))
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed repeats per contender and case")
    ap.add_argument("--note", default="", help="a line printed in bold at the top (e.g. 'machine shared with concurrent jobs')")
    args = ap.parse_args(argv)
    tag = "_quick" if args.quick else ""
    out = args.out or (HERE / "_out" / "RESULTS_quick.md" if args.quick else HERE / "RESULTS.md")
    plot = args.plot or out.parent / f"results_cpu{tag}.png"
    js = args.json or HERE / "_out" / f"results_cpu{tag}.json"
    budget = args.budget if args.budget is not None else (0.02 if args.quick else 1.0)
    ops = {o.strip() for o in args.ops.split(",") if o.strip()} or None
    if ops and not ops <= set(OPERATORS):
        ap.error(f"--ops must be among {OPERATORS}")
    for p in (out, plot, js):
        p.parent.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = machine_description()
    numba_mem = verify_tracemalloc_sees_numba()
    print(f"machine: {machine['cpu']}; {machine['cores']}; load {load0}", flush=True)
    print(f"tracemalloc sees numba allocations: {numba_mem}", flush=True)
    results = run_suite(args.quick, budget, ops, lambda s: print(s, flush=True))
    load1 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    elapsed = time.perf_counter() - t_start
    write_plot(plot, results)
    cmd = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    write_markdown(out, results, machine, contenders_all(), args.quick, cmd, args.note,
                   (load0, load1), numba_mem, plot if plot.parent == out.parent else None, elapsed)
    js.write_text(json.dumps({"machine": machine, "quick": args.quick, "results": [asdict(r) for r in results]}, indent=1))
    print(f"wrote {out}, {plot}, {js} in {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
