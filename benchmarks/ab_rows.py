"""In-process A/B of the Numba row kernels of the exclusive operators against another revision's.

    python benchmarks/ab_rows.py --rev HEAD~1
    python benchmarks/ab_rows.py --rev 559f429 --zeros 0.3 --parallel
    python benchmarks/ab_rows.py --rev HEAD --bm 10,50,1e4 --rows student

``proxlib/backends/numba_cpu.py`` of ``--rev`` (read with ``git show``) is
loaded as a second module of the installed ``proxlib.backends`` package, so
both versions compile against the same helpers and run in one process.
Their kernels are then called alternately, call by call, on the same rows
(Gaussian rows of random scale, as in ``run.py``, or Student-t rows with 2
degrees of freedom, heavy-tailed; optionally with a fraction of exact
zeros; b = bm/m for each ``--bm``: 1 keeps about 2/3 of a Gaussian row,
10 about a quarter, 1e4 one entry), so that a busy or noisy machine slows
both alike: the ratio of the medians is the figure, not the absolute times.  Each line also says
whether the two outputs are the same bits and, if not, their largest
difference.  Speed is judged this way, not by ``run.py``'s tables, for
changes of a few tens of percent: on a shared VM those move more than that
from run to run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from proxlib.backends import numba_cpu as new

SIZES = ((784, 300), (300, 784), (512, 4608))


def load_revision(rev: str):
    """numba_cpu.py of ``rev`` as the module ``proxlib.backends.numba_ab``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = subprocess.run(["git", "show", f"{rev}:proxlib/backends/numba_cpu.py"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="proxlib_ab_"), "numba_cpu_ab.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location("proxlib.backends.numba_ab", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def runs_for_a_second(fn, lo: int, hi: int) -> int:
    """About how many calls of ``fn`` take a second (one timed call), within [lo, hi]."""
    t = time.perf_counter()
    fn()
    return max(lo, min(hi, int(1.0 / max(time.perf_counter() - t, 1e-6))))


def alternate(fa, fb, runs: int) -> tuple[float, float]:
    """Medians (s) of fa and fb called alternately ``runs`` times each, after a warm-up."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(runs):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return float(np.median(ta)), float(np.median(tb))


def kernel(mod, op: str, parallel: bool):
    """(W, thresholds..., out) -> None: the serial or parallel row kernel of ``op`` in ``mod``."""
    if op == "exclusive_lasso":
        if parallel:
            return lambda W, b, out: mod._exclusive_par(W, b, out, mod._chunks(W.shape[0]))
        return lambda W, b, out: mod._exclusive_seq(W, b, out)
    if parallel:
        # (its chunks as the library picks them: _group_exclusive_chunks since 2026-12-07)
        chunks = getattr(mod, "_group_exclusive_chunks", lambda G, m: mod._chunks(G))
        return lambda W, a, b, out: mod._group_exclusive_par(W, a, b, out, chunks(*W.shape))
    return lambda W, a, b, out: mod._group_exclusive_seq(W, a, b, out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD~1", help="the revision to compare with (default HEAD~1)")
    ap.add_argument("--op", default="exclusive_lasso", choices=("exclusive_lasso", "group_exclusive"))
    ap.add_argument("--zeros", type=float, default=0.0, help="fraction of exact zeros in the rows")
    ap.add_argument("--parallel", action="store_true", help="the parallel kernels (default: serial)")
    ap.add_argument("--runs", type=int, default=0, help="calls of each (default: about 1 s of each)")
    ap.add_argument("--bm", default="1,10", help="comma-separated b m (default 1,10: run.py's b = 1/m and 10/m)")
    ap.add_argument("--a-scale", type=float, default=1.0, help="group_exclusive's a as a multiple of run.py's 0.3 sqrt(m)")
    ap.add_argument("--rows", default="gaussian", choices=("gaussian", "student"), help="the rows' distribution")
    args = ap.parse_args(argv)
    old = load_revision(args.rev)
    rng = np.random.default_rng(0)
    print(f"{args.op}, {'parallel' if args.parallel else 'serial'}, zeros {args.zeros:.0%}: "
          f"{args.rev} (before) against the working tree (after); {args.rows} rows;"
          f"{'' if args.op == 'exclusive_lasso' else f' a = {args.a_scale:g} x 0.3 sqrt(m);'} load average {os.getloadavg()[0]:.2f}")
    print("| rows | dtype | b | before | after | after / before | same bits |")
    print("|---|---|---|---:|---:|---:|---|")
    for G, m in SIZES:
        for k in [float(bm) for bm in args.bm.split(",")]:
            for dtype in ("float32", "float64"):
                if args.rows == "student":
                    W = rng.standard_t(2, (G, m)).astype(dtype)
                else:
                    W = (rng.standard_normal((G, m)) * rng.uniform(0.5, 1.5, (G, 1))).astype(dtype)
                W[rng.random((G, m)) < args.zeros] = 0
                b = np.full(G, k / m)
                thr = (b,) if args.op == "exclusive_lasso" else (np.full(G, args.a_scale * 0.3 * np.sqrt(m)), b)  # run.py's a and b
                o1, o2 = np.empty_like(W), np.empty_like(W)
                ka, kb = kernel(old, args.op, args.parallel), kernel(new, args.op, args.parallel)
                runs = args.runs or runs_for_a_second(lambda: kb(W, *thr, o2), 20, 500)
                ta, tb = alternate(lambda: ka(W, *thr, o1), lambda: kb(W, *thr, o2), runs)
                same = np.array_equal(o1.view(np.uint8), o2.view(np.uint8))
                diff = "yes" if same else f"no (max diff {np.abs(o1.astype(np.float64) - o2).max():.1e})"
                print(f"| {G}x{m} | {dtype} | {k:g}/m | {ta * 1e6:.0f} µs | {tb * 1e6:.0f} µs | {tb / ta:.2f} | {diff} |")


if __name__ == "__main__":
    main()
