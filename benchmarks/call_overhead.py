"""What a public ``prox_*`` call costs beyond its kernel, per operator of the registry.

    python benchmarks/call_overhead.py                 # NumPy and CPU torch, three shapes
    python benchmarks/call_overhead.py --libs numpy --shapes 10,64x10
    python benchmarks/call_overhead.py --ops weighted_l1,weighted_l2sq --entry-weights
    PYTHONPATH=/path/to/other/checkout python benchmarks/call_overhead.py   # another revision

For each operator of :data:`proxlib._registry.OPERATORS` whose penalty can be
made from scalars (OWL and GrOWL take weight vectors: ``--weights`` adds
them, with OSCAR weights), each library and shape, it times, call by call
and alternately (so that a busy machine slows both alike):

* the public function on the same input, at the same step (what a user's
  loop pays, a fresh result each call); and
* the backend kernel alone on the input already in the kernel's layout, with
  the thresholds already formed (what the public call cannot avoid).

The overhead is the difference of their medians: validation, the layout,
the thresholds, dispatch and the result's shape.  Since proxlib keeps a plan
per shape (:class:`proxlib._registry.Plan`), a repeated call skips the layout
and the thresholds; the first call on a shape pays them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import time

import numpy as np

import proxlib
from proxlib import _range
from proxlib import _registry as R
from proxlib._dispatch import backend_for

MAKERS = {
    "weighted_l1": lambda n: proxlib.WeightedL1(0.1),
    "weighted_l2sq": lambda n: proxlib.WeightedL2Sq(0.1),
    "lp": lambda n: proxlib.Lp(0.05, 0.5),
    "group_lasso": lambda n: proxlib.GroupLasso(0.1),
    "exclusive_lasso": lambda n: proxlib.ExclusiveLasso(0.01),
    "group_exclusive": lambda n: proxlib.GroupExclusive(0.1, 0.5),
}
WEIGHTED = {
    "owl": lambda x: proxlib.OWL(proxlib.owl_weights_oscar(math.prod(x.shape), 0.1, 0.01)),
    "growl": lambda x: proxlib.GrOWL(proxlib.owl_weights_oscar(1 if x.ndim == 1 else x.shape[0], 0.1, 0.01)),
}


def kernel_alone(pen, x, step):
    """The backend kernel's call on ``x`` already laid out, thresholds formed
    (a CPU tensor whose public call runs its NumPy view: Numba's serial
    kernel on that view, :func:`proxlib._registry.numba_view`)."""
    routed = getattr(R, "numba_view", lambda *a: None)(pen.kernel, x, [getattr(pen, f.name) for f in dataclasses.fields(pen)])
    if routed is not None:
        layout = R.layout_of(pen, routed[0])
        kernel = getattr(routed[1].SERIAL_NUMBA, pen.kernel)
    else:
        layout = R.layout_of(pen, x)
        kernel = getattr(backend_for(x), pen.kernel)
    thr = _range.thresholds_in_range(_range.terms(pen, layout), step, layout.data)
    kw = {"check_finite": True} if pen.fused_finite_check else {}
    data, fixed = layout.data, pen.fixed()
    return lambda: kernel(data, *thr, *fixed, **kw)


def medians(f, g, seconds: float):
    """Medians (seconds) of ``f`` and ``g`` timed alternately, batch by batch."""
    f(), g()
    t = time.perf_counter()
    f()
    per = max(time.perf_counter() - t, 1e-7)
    batch = max(1, int(2e-3 / per))
    tf, tg = [], []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(tf) < 5:
        for fn, out in ((f, tf), (g, tg)):
            t = time.perf_counter()
            for _ in range(batch):
                fn()
            out.append((time.perf_counter() - t) / batch)
    return statistics.median(tf), statistics.median(tg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--libs", default="numpy,torch", help="numpy and/or torch (CPU tensors)")
    ap.add_argument("--shapes", default="10,64x10,784x300", help="comma-separated shapes, e.g. 10,64x10")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--weights", action="store_true", help="OWL and GrOWL too (OSCAR weights)")
    ap.add_argument("--seconds", type=float, default=0.4, help="timing per contender and case")
    ap.add_argument("--ops", default=None, help="comma-separated operators (default: all)")
    ap.add_argument("--entry-weights", action="store_true",
                    help="weighted l1 / squared l2 with a weight per entry (a NumPy array of the input's shape), not one")
    args = ap.parse_args(argv)
    shapes = [tuple(int(s) for s in spec.split("x")) for spec in args.shapes.split(",")]
    libs = args.libs.split(",")
    print(f"proxlib from {os.path.dirname(proxlib.__file__)}; load average {os.getloadavg()}")
    print(f"| operator | library | shape | {args.dtype} public call | kernel alone | overhead |")
    print("|---|---|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    makers = dict(MAKERS)
    if args.weights:
        makers.update(WEIGHTED)
    if args.entry_weights:
        makers.update({name: (lambda x, cls=cls: cls(np.full(tuple(x.shape), 0.1)))
                       for name, cls in (("weighted_l1", proxlib.WeightedL1), ("weighted_l2sq", proxlib.WeightedL2Sq))})
    if args.ops:
        makers = {name: makers[name] for name in args.ops.split(",")}
    for name, make in makers.items():
        op = R.OPERATORS[name]
        for lib in libs:
            for shape in shapes:
                x = rng.standard_normal(shape).astype(args.dtype)
                if lib == "torch":
                    import torch

                    x = torch.from_numpy(x)
                pen = make(x) if name in WEIGHTED or (args.entry_weights and name in ("weighted_l1", "weighted_l2sq")) else make(None)
                public = _public_call(name, op.function, pen, x, 0.5)
                tp, tk = medians(public, kernel_alone(pen, x, 0.5), args.seconds)
                shape_s = "x".join(map(str, shape))
                print(f"| {name} | {lib} | {shape_s} | {tp * 1e6:.1f} us | {tk * 1e6:.1f} us | {(tp - tk) * 1e6:.1f} us |", flush=True)


def _public_call(name, function, pen, x, step):
    """The public function's call with ``pen``'s parameters."""
    if name in ("weighted_l1", "weighted_l2sq", "owl", "growl"):
        return lambda: function(x, pen.weights, step)
    if name == "lp":
        return lambda: function(x, pen.lam, pen.p, step)
    if name == "group_exclusive":
        return lambda: function(x, pen.lam, pen.mu, step)
    return lambda: function(x, pen.lam, step)


if __name__ == "__main__":
    main()
