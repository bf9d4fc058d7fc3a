"""In-process A/B of the Numba column kernels a training step runs, against another revision's.

    python benchmarks/ab_columns.py --rev HEAD~1
    python benchmarks/ab_columns.py --rev 522b7fd --steps 50
    python benchmarks/ab_columns.py --rev HEAD~1 --dtype float64

The MLP 784-300-10 of ``bench_overhead.py`` (batch 64, SGD with momentum;
its parameters and data in ``--dtype``, float32 by default) is trained for ``--steps`` steps with a :class:`proxlib.torch.ProximalStep`
term on each layer, for each penalty of ``bench_overhead.PENALTIES`` whose
rows are read across memory (the layers' columns: exclusive and
group+exclusive on ``"shape"``, group lasso and GrOWL on ``"channel"``).
The last step's calls of the column kernels (``_exclusive_cols``,
``_group_lasso_cols``, ``_growl_seq``) are recorded with copies of their
inputs, the exclusive operators' threshold hints included: a training step's
layers, with the hints its runner keeps.  ``proxlib/backends/numba_cpu.py``
of ``--rev`` is loaded next to the working tree's (as in ``ab_rows.py``),
and each recorded call is replayed on both, alternately, call by call, out of
place (the inputs are left as recorded).  Each line gives the medians, their
ratio (the figure: a busy machine slows both alike) and whether the outputs
are the same bits.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab_rows import alternate, load_revision, runs_for_a_second  # noqa: E402
from bench_overhead import PENALTIES, _weights, mlp  # noqa: E402

import proxlib.torch as pt  # noqa: E402
from proxlib.backends import numba_cpu as new  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402

KERNELS = ("_exclusive_cols", "_group_lasso_cols", "_growl_seq")


def _copied(x):
    return x.copy() if isinstance(x, np.ndarray) else x


OUT_ARG = {"_exclusive_cols": 3, "_group_lasso_cols": 2, "_growl_seq": 2}  # (where each kernel writes)


def record_training_calls(penalty: str, steps: int, dtype=torch.float32) -> list[tuple[str, tuple, np.ndarray]]:
    """(kernel name, copies of its arguments, a copy of what it wrote) for
    the column-kernel calls of the last of ``steps`` training steps of the
    MLP (in ``dtype``) under ``penalty``."""
    torch.manual_seed(0)
    net = mlp().to(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    X, y = torch.rand(64, 784, dtype=dtype), torch.randint(0, 10, (64,))
    make, grouping = PENALTIES[penalty]
    prox = pt.ProximalStep(opt, model=net)
    for layer in _weights(net):
        prox.add(layer, make(), grouping=grouping)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(X), y).backward()
        opt.step()
        prox.step()

    calls, kept = [], {name: getattr(new, name) for name in KERNELS}

    def recorder(name):
        def call(*args):
            before = tuple(_copied(a) for a in args)
            result = kept[name](*args)
            calls.append((name, before, args[OUT_ARG[name]].copy()))
            return result
        return call

    route = torch_dev.CPU_KERNELS
    try:
        torch_dev.CPU_KERNELS = "auto"  # (the default route, as bench_overhead times it; a test session sets "torch")
        for _ in range(steps - 1):
            step()
        for name in KERNELS:  # (the runners look the kernels up in the module at each call)
            setattr(new, name, recorder(name))
        step()
    finally:
        torch_dev.CPU_KERNELS = route
        for name, fn in kept.items():
            setattr(new, name, fn)
    return calls


def replay(mod, name: str, args: tuple):
    """A function calling ``mod``'s kernel on fresh copies of the recorded
    mutable inputs (hints), writing into a new output; returns the output."""
    A = args[0]
    out = np.empty_like(A)
    if name == "_exclusive_cols":
        A, a, b, _, H = args  # (a None: the exclusive lasso; H empty: no hints)
        # a revision before 2026-12-06 took the operator as a flag, and None
        # for no hints: (A, a, b, out, gx, H)
        # (and since 2026-12-07 it is a Python function choosing a compiled kernel)
        kernel = mod._exclusive_cols
        flagged = "gx" in inspect.signature(getattr(kernel, "py_func", kernel)).parameters

        def run():
            if flagged:
                hint = H.copy() if H.shape[0] else None
                mod._exclusive_cols(A, b if a is None else a, b, out, a is not None, hint)
            else:
                mod._exclusive_cols(A, a, b, out, H.copy())
            return out
    elif name == "_group_lasso_cols":
        A, a, _, nrm, check = args

        def run():
            mod._group_lasso_cols(A, a, out, np.empty_like(nrm), check)
            return out
    else:
        A, w, _, cols, check, *order = args

        def run():
            mod._growl_seq(A, w, out, cols, check, *(o.copy() if isinstance(o, np.ndarray) else o for o in order))
            return out
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD~1", help="the revision to compare with (default HEAD~1)")
    ap.add_argument("--steps", type=int, default=50, help="training steps before the recorded one")
    ap.add_argument("--runs", type=int, default=0, help="calls of each (default: about 1 s of each)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="the MLP's dtype (default float32)")
    args = ap.parse_args(argv)
    old = load_revision(args.rev)
    print(f"MLP 784-300-10 ({args.dtype}), batch 64, step {args.steps}: {args.rev} (before) against the working tree (after); "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| penalty | kernel | layer | before | after | after / before | same bits |")
    print("|---|---|---|---:|---:|---:|---|")
    for penalty in ("exclusive (shape)", "group+exclusive (shape)", "group lasso (channel)", "GrOWL (channel)"):
        for name, call, _ in record_training_calls(penalty, args.steps, getattr(torch, args.dtype)):
            fa, fb = replay(old, name, call), replay(new, name, call)
            oa, ob = fa().copy(), fb().copy()
            runs = args.runs or runs_for_a_second(fb, 50, 3000)
            ta, tb = alternate(fa, fb, runs)
            same = "yes" if np.array_equal(oa.view(np.uint8), ob.view(np.uint8)) else "no"
            shape = "x".join(map(str, call[0].shape))
            print(f"| {penalty} | {name} | {shape} | {ta * 1e6:.1f} µs | {tb * 1e6:.1f} µs | {tb / ta:.3f} | {same} |")


if __name__ == "__main__":
    main()
