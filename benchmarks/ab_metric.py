"""In-process A/B of the Numba row kernels in a diagonal metric against another revision's.

    python benchmarks/ab_metric.py --rev HEAD~1
    python benchmarks/ab_metric.py --rev 148ebd4 --op group_exclusive_metric --runs 50

The group lasso's, exclusive lasso's and group+exclusive's kernels in a
metric (``numba_cpu.group_lasso_metric``, ``exclusive_lasso_metric``,
``group_exclusive_metric``, serial) of ``--rev`` are loaded next to the
working tree's (``ab_rows.load_revision``) and called alternately, call by
call, on the same rows, so that a busy machine slows both alike: the ratio
of the medians is the figure.  Each line also says whether the outputs are
the same bits, which is how a change meant to keep the results is checked.

Rows: float32 and float64; 784 x 300, 300 x 784 and 300 x 10 (short rows);
C-contiguous, and F-contiguous (the rows are then a matrix's columns, the
layout of a Linear weight's "channel" and "shape" rows); two regimes:

* ``spread``: rows at scales from 1e-30 to 1e30, a zero and a -0 in the
  first row, a metric spread over 10 decades, thresholds a = 0.3 ||d w||
  and b = 0.3 / ||d w||_1 per row;
* ``sparse``: Gaussian rows and an Adam-like metric (1e-3 to 1e-2), a =
  0.05 ||d w|| and b = 3 / ||d w||_1, for supports of a tenth of the row
  or less, as in a training step.

The support column is the fraction of nonzero entries in the output.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from ab_rows import alternate, load_revision, runs_for_a_second

from proxlib.backends import numba_cpu as new

SHAPES = ((784, 300), (300, 784), (300, 10))
OPS = ("group_lasso_metric", "exclusive_lasso_metric", "group_exclusive_metric")


def rows(shape, dtype, regime: str, rng):
    """(W, D, a, b) of one case (see the module docstring)."""
    G, m = shape
    if regime == "spread":
        W = rng.standard_normal(shape) * 10.0 ** rng.uniform(-30, 30, (G, 1))
        W[0, :2] = [0.0, -0.0]
        D = np.abs(rng.standard_normal(shape)) * 10.0 ** rng.uniform(-8, 2, shape)
    else:
        W = rng.standard_normal(shape) * 0.05
        D = 10.0 ** rng.uniform(-3, -2, shape)
    W, D = W.astype(dtype), D.astype(dtype)
    Dw = D.astype(np.float64) * W
    l1, l2 = np.abs(Dw).sum(axis=1), np.sqrt((Dw * Dw).sum(axis=1))
    if regime == "spread":
        return W, D, 0.3 * l2, 0.3 / np.maximum(l1, 1e-300)
    return W, D, 0.05 * l2, 3.0 / np.maximum(l1, 1e-300)


def call(mod, op: str, W, D, a, b, out):
    if op == "group_lasso_metric":
        return mod.group_lasso_metric(W, D, a, parallel=False, out=out)
    if op == "exclusive_lasso_metric":
        return mod.exclusive_lasso_metric(W, D, b, parallel=False, out=out)
    return mod.group_exclusive_metric(W, D, a, b, parallel=False, out=out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD~1", help="the revision to compare with (default HEAD~1)")
    ap.add_argument("--op", choices=OPS, action="append", help="the kernels (default: all three)")
    ap.add_argument("--runs", type=int, default=0, help="calls of each (default: about 0.5 s of each)")
    args = ap.parse_args(argv)
    old = load_revision(args.rev)
    print(f"serial metric row kernels: {args.rev} (before) against the working tree (after); "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| kernel | rows | dtype | layout | regime | support | before | after | after / before | same bits |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---|")
    rng = np.random.default_rng(0)
    for op in args.op or OPS:
        for dtype in ("float32", "float64"):
            for shape in SHAPES:
                for regime in ("spread", "sparse"):
                    W, D, a, b = rows(shape, dtype, regime, rng)
                    for layout in ("C", "F"):
                        Wl, Dl = (W, D) if layout == "C" else (np.asfortranarray(W), np.asfortranarray(D))
                        o1, o2 = np.empty_like(Wl), np.empty_like(Wl)
                        with np.errstate(all="ignore"):
                            runs = args.runs or max(5, runs_for_a_second(lambda: call(new, op, Wl, Dl, a, b, o2), 10, 400) // 2)
                            ta, tb = alternate(lambda: call(old, op, Wl, Dl, a, b, o1), lambda: call(new, op, Wl, Dl, a, b, o2), runs)
                        same = o1.tobytes(order="A") == o2.tobytes(order="A")  # (signed zeros and NaN payloads included)
                        diff = "yes" if same else f"no (max diff {np.nanmax(np.abs(o1.astype(np.float64) - o2)):.1e})"
                        print(f"| {op} | {shape[0]}x{shape[1]} | {dtype} | {layout} | {regime} | {np.mean(o2 != 0):.2f} | {ta * 1e6:.0f} µs "
                              f"| {tb * 1e6:.0f} µs | {tb / ta:.2f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
