"""Where the Numba OWL kernel's time goes: its stages' medians, against the sorts that floor it.

    python benchmarks/owl_stages.py [--sizes 1e6 1e7] [--runs 7] [--parallel]

``numba_cpu.owl`` is a Python function that calls its compiled stages
through the module (the key sort, the unpacking of the sorted magnitudes,
the support, pool-adjacent-violators, the blocks' values, the scatter into
the output); this wraps each of them in a timer for the calls of one run,
restores them, and prints each stage's median over ``--runs`` calls of
``owl`` on N(0, 1) entries with decreasing weights (most blocks singletons,
the support everything), next to the whole call and ``np.sort`` of the
input in this process and, on CPUs where NumPy's sort is its slow AVX-512
code (``numba_cpu._numpy_sort_is_slow``), with its AVX2 code in a child
process, the floor issue 13's targets are judged against.  Stages that do
not run (e.g. the runs of equal truncated keys of float32, whose keys hold
every bit) are left out.  The sum of the stages is below the whole call by
the Python between them.

``--ab-parts`` instead compares, call by call (alternately:
``ab_rows.alternate``), the two ways a parallel call radix-sorts its two parts of
the keys (``numba_cpu._RADIX_PARTS_IN_REGION``: one parallel region, or a
serial partition and a helper thread), on N(0, 1) entries with the weights
of ``run.py`` (``linspace(2, 0)``) and small ones (``1e-3`` times sorted
uniforms), checking that both give the same bits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from owl_sorts import _median  # noqa: E402
from ab_rows import alternate  # noqa: E402
from run import sort_seconds  # noqa: E402

from proxlib.backends import numba_cpu as NB  # noqa: E402

#: the compiled stages owl() calls, in its order (module attributes, looked up at each call)
STAGES = ("_owl_sorted_keys", "_owl_unpack", "_owl_unpack_par", "_owl_order_runs", "_owl_scale", "_owl_support",
          "_owl_compact_index", "_owl_pava_split", "_owl_values", "_owl_values_par", "_owl_monotone",
          "_owl_fix_low_blocks", "_owl_scatter", "_owl_scatter_par")


def stage_times(v, w, parallel: bool, runs: int) -> tuple[dict[str, float], float]:
    """Medians (s) of each stage's time per call of ``NB.owl(v, w)``, and of the whole call."""
    spent: dict[str, float] = {}
    kept = {name: getattr(NB, name) for name in STAGES}

    def timed(name, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return call

    per_stage: dict[str, list[float]] = {}
    whole = []
    NB.owl(v, w, parallel=parallel)  # (compiled before the stages are wrapped, caches warm)
    try:
        for name, fn in kept.items():
            setattr(NB, name, timed(name, fn))
        for _ in range(runs):
            spent.clear()
            t = time.perf_counter()
            NB.owl(v, w, parallel=parallel)
            whole.append(time.perf_counter() - t)
            for name, s in spent.items():
                per_stage.setdefault(name, []).append(s)
    finally:
        for name, fn in kept.items():
            setattr(NB, name, fn)
    return {name: statistics.median(ts) for name, ts in per_stage.items()}, statistics.median(whole)


def ab_parts(sizes, runs: int) -> None:
    """Print the medians of the whole parallel call with the parts sorted in
    one region and in a helper thread, and their ratio (see the module)."""
    print(f"numba_cpu.owl, parallel, radix sort of the parts: region against helper thread; "
          f"load average {os.getloadavg()[0]:.2f}")
    if NB._key_sort() is not NB._radix_sort_keys:
        print("(this CPU sorts the keys with NumPy's sort: both runs take the helper thread)")
    print("| n | dtype | weights | region (ms) | thread (ms) | ratio |")
    print("|---|---|---|---:|---:|---:|")
    rng = np.random.default_rng(1)
    kept = NB._RADIX_PARTS_IN_REGION
    try:
        for n in map(int, sizes):
            for dtype in ("float64", "float32"):
                v = rng.standard_normal(n).astype(dtype)
                for kind in ("linspace(2, 0)", "small"):
                    w = (np.linspace(2.0, 0.0, n) if kind != "small" else np.sort(rng.random(n))[::-1] * 1e-3).astype(dtype)
                    def call(region, v=v, w=w):
                        NB._RADIX_PARTS_IN_REGION = region
                        return NB.owl(v, w, parallel=True)
                    if not np.array_equal(call(True).view(np.uint8), call(False).view(np.uint8)):
                        raise AssertionError(f"the two routes differ at n={n}, {dtype}, {kind}")
                    a, b = (t * 1e3 for t in alternate(lambda: call(True), lambda: call(False), runs))
                    print(f"| {n:.0e} | {dtype} | {kind} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    finally:
        NB._RADIX_PARTS_IN_REGION = kept
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--parallel", action="store_true", help="the kernel's parallel route (default: serial)")
    ap.add_argument("--ab-parts", action="store_true",
                    help="compare the two ways of radix-sorting the parts (see the module) instead")
    args = ap.parse_args(argv)
    if args.ab_parts:
        ab_parts(args.sizes, args.runs)
        return
    rng = np.random.default_rng(0)
    print(f"numba_cpu.owl, {'parallel' if args.parallel else 'serial'}; load average {os.getloadavg()[0]:.2f}")
    for n in map(int, args.sizes):
        for dtype in ("float64", "float32"):
            v = rng.standard_normal(n).astype(dtype)
            w = np.sort(rng.random(n))[::-1] * 1e-3
            stages, whole = stage_times(v, w, args.parallel, args.runs)
            floor = _median(lambda: np.sort(v), args.runs)
            avx2 = sort_seconds(n, dtype, args.runs, avx2=True) if NB._numpy_sort_is_slow() else None
            print(f"\nn = {n:.0e}, {dtype}: whole {whole * 1e3:.2f} ms; np.sort here {floor * 1e3:.2f} ms"
                  + (f", with NumPy's AVX2 code {avx2 * 1e3:.2f} ms (whole / that: {whole / avx2:.2f})" if avx2 else ""))
            print("| stage | ms | share of the call |")
            print("|---|---:|---:|")
            for name in STAGES:
                if name in stages:
                    print(f"| {name} | {stages[name] * 1e3:.2f} | {100 * stages[name] / whole:.0f}% |")
            print(f"| (sum of the stages) | {sum(stages.values()) * 1e3:.2f} | {100 * sum(stages.values()) / whole:.0f}% |")


if __name__ == "__main__":
    main()
