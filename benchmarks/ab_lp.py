"""In-process A/B of Numba's lp kernels (Euclidean and in a diagonal metric) against another revision's.

    python benchmarks/ab_lp.py --rev HEAD~1
    python benchmarks/ab_lp.py --rev 8e6fef2 --p 0.5 --runs 40

``proxlib/backends/numba_cpu.py`` of ``--rev`` is loaded next to the working
tree's (``ab_rows.load_revision``) and the two modules' ``lp`` and
``lp_metric`` (serial, as a training step runs them) are called alternately,
call by call, on the same entries, so that a busy machine slows both alike:
the ratio of the medians is the figure.  Each line also gives, against the
array code (``_xp_kernels.lp``, ``_metric_kernels.lp_metric``), the largest
difference of each revision where both are nonzero, in units of the dtype's
eps relative to the entry, and the entries where one of them is 0 and the
other not (ties between 0 and x*).

Entries: 235,200 (an MLP's 784 x 300 weights), float32 and float64, written
to another array and in place (as a training step writes a parameter):

* ``spread``: Gaussian entries of scale 1 and lam such that about 40% of
  them end at 0, so that many lie near the threshold;
* ``adam``: entries of scale 0.05 and an Adam-like metric d (square roots
  of exponentially spread second moments, 1e-4 to 1e-2, plus eps), lam =
  1e-8 (lr 1e-3 times a strength of 1e-5), in the metric only.
"""

from __future__ import annotations

import argparse

import numpy as np
from ab_rows import alternate, load_revision, runs_for_a_second

from proxlib.backends import _metric_kernels, _xp_kernels
from proxlib.backends import numba_cpu as new

N = 784 * 300


def entries(regime: str, dtype, rng):
    """(v, d, lam): d None outside a metric."""
    if regime == "spread":
        return rng.standard_normal(N).astype(dtype), None, 0.35
    v = (0.05 * rng.standard_normal(N)).astype(dtype)
    d = (np.sqrt(10.0 ** rng.uniform(-8.0, -4.0, N)) + 1e-8).astype(dtype)
    return v, d, 1e-8


def call(mod, v, d, lam, p, out):
    if d is None:
        return mod.lp(v, lam, p, parallel=False, out=out)
    return mod.lp_metric(v, d, lam, p, parallel=False, out=out)


def reference(v, d, lam, p):
    return _xp_kernels.lp(v, lam, p) if d is None else _metric_kernels.lp_metric(v, d, lam, p)


def off_reference(x, r, dtype):
    """(largest |x - r| / |r| in eps where both are nonzero, entries where one is 0)."""
    x, r = x.astype(np.float64), r.astype(np.float64)
    both = (x != 0) & (r != 0)
    eps = float(np.finfo(dtype).eps)
    worst = float(np.max(np.abs(x[both] - r[both]) / np.abs(r[both]))) / eps if both.any() else 0.0
    return worst, int(np.count_nonzero((x == 0) != (r == 0)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD~1", help="the revision to compare with (default HEAD~1)")
    ap.add_argument("--p", type=float, action="append", help="the exponents (default 1/2, 2/3 and 0.3)")
    ap.add_argument("--runs", type=int, default=0, help="calls of each (default: about 0.5 s of each)")
    args = ap.parse_args(argv)
    old = load_revision(args.rev)
    rng = np.random.default_rng(0)
    print(f"| p | regime | dtype | out | {args.rev} | working tree | ratio | same bits | eps off the array code (old, new) | one of x*, 0 (old, new) |")
    print("|---|---|---|---|---:|---:|---:|---|---|---|")
    for p in args.p or (0.5, 2.0 / 3.0, 0.3):
        for regime in ("spread", "adam"):
            for dtype in (np.float32, np.float64):
                v, d, lam = entries(regime, dtype, rng)
                ref = reference(v, d, lam, p)
                for where in ("new array", "in place"):
                    bufs = {mod: np.empty_like(v) for mod in (old, new)}

                    def run(mod, where=where):
                        out = bufs[mod]
                        if where == "in place":
                            out[...] = v
                            return call(mod, out, d, lam, p, out)
                        return call(mod, v, d, lam, p, out)

                    runs = args.runs or runs_for_a_second(lambda: run(new), 5, 200) // 2
                    t_old, t_new = alternate(lambda: run(old), lambda: run(new), runs)
                    x_old, x_new = run(old).copy(), run(new).copy()
                    same = np.array_equal(x_old.view(np.uint8), x_new.view(np.uint8))
                    (e_old, z_old), (e_new, z_new) = off_reference(x_old, ref, dtype), off_reference(x_new, ref, dtype)
                    print(f"| {p:.4g} | {regime} | {np.dtype(dtype).name} | {where} | {t_old * 1e6:.0f} us | {t_new * 1e6:.0f} us "
                          f"| {t_new / t_old:.3f} | {same} | {e_old:.2f}, {e_new:.2f} | {z_old}, {z_new} |", flush=True)


if __name__ == "__main__":
    main()
