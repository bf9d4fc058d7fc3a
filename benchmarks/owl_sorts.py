"""In-process A/B of the sorts behind OWL.value and OWL's dual norm: NumPy's sort against the radix sort.

    python benchmarks/owl_sorts.py [--sizes 1e5 1e6 1e7]

On NumPy arrays the Numba backend sorts the magnitudes with
``numba_cpu.sort_magnitudes_desc``, which takes the radix sort of their bits
where ``numba_cpu.KEY_SORT`` says NumPy's sort is slow (AMD Zen 4) and
NumPy's sort elsewhere.  This times both settings of ``KEY_SORT`` ("numpy",
then the radix sort) on the same vectors, alternately, and prints the best
median of each (the numbers are the same either way: tested in
``tests/test_numba_owl_long.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import proxlib
from proxlib.backends import numba_cpu as NB


def _median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"NumPy's sort slow here: {NB._numpy_sort_is_slow()}; load average {os.getloadavg()[0]:.2f}")
    print("| n | dtype | call | NumPy's sort | radix sort | radix / NumPy |")
    print("|---|---|---|---:|---:|---:|")
    before = NB.KEY_SORT
    try:
        for n in map(int, args.sizes):
            for dtype in (np.float64, np.float32):
                v = rng.standard_normal(n).astype(dtype)
                pen = proxlib.OWL(np.sort(rng.random(n))[::-1].copy())
                for name, fn in (("OWL.value", lambda: pen.value(v)), ("OWL.dual_norm", lambda: pen.dual_norm(v))):
                    runs = 3 if n >= 10**7 else 11
                    best = {}
                    for sort in ("numpy", "radix", "numpy", "radix"):
                        NB.KEY_SORT = sort
                        fn()
                        best[sort] = min(best.get(sort, np.inf), _median(fn, runs))
                    a, b = best["numpy"], best["radix"]
                    print(f"| {n:.0e} | {np.dtype(dtype).name} | {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {b / a:.2f} |")
    finally:
        NB.KEY_SORT = before


if __name__ == "__main__":
    main()
