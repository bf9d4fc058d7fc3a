"""In-process A/B of a sharded prox step's variants: FSDP2 over two gloo processes on the CPU.

    python benchmarks/ab_sharded.py
    python benchmarks/ab_sharded.py --rounds 100 --out benchmarks/AB_SHARDED.md

The MLP 784-300-10 (batch 64, SGD with momentum, float32) is wrapped with
``fully_shard`` over two gloo processes (one torch thread each), with each
row penalty of ``bench_overhead.py`` on both weights (their ``"channel"``
or ``"shape"`` rows: the columns of each rank's shard, split across the
ranks).  Two comparisons per penalty:

* *route*: ``torch_dev.CPU_KERNELS = "torch"`` (the torch operations, the
  code every device runs) against ``"auto"`` (on these CPU shards, Numba's
  passes over the shard: :mod:`proxlib.backends.numba_split`);
* *batch*: ``proxlib.torch._batched.ENABLED = False`` (each term alone:
  its own collectives) against ``True`` (a step's split rows together: one
  set of collectives), on the ``"auto"`` route;
* *candidates* (the exclusive penalties): ``sharded._CANDIDATES = 1`` (a
  hinted row's least entry above its hint alone, as on more ranks than
  ``sharded._GATHER_RANKS``: the sums all-reduced beside a maximum, and
  where the entry fails, the search's route, two more collectives) against
  the default 3 (with the sums and maxima in one all-gather), batched,
  ``"auto"``.
  The mean number of collectives per prox step is reported too.

Each variant has a ``ProximalStep`` of its own (its plans and the hints
they keep, built once).  Each round is a training step, the prox step of
variant A, a training step and the prox step of variant B (only the prox
steps timed, each after a barrier: the ranks end a training step apart,
and a prox step's first collective would wait out that gap; both ranks
take the same sequence).  A's and B's steps alternate, so that the gloo
latency, which swings by tens of percent over a run on a small VM, weighs
on both alike: the ratio of the medians is the figure.  Rank 0's times.
One by one, the exclusive penalties also leave no hints (the batches of
split rows keep them), so each of their steps takes the route without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_overhead as bo  # noqa: E402

import proxlib.torch as pt  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402
from proxlib.torch import _batched, sharded  # noqa: E402

PENALTIES = ("group lasso (channel)", "GrOWL (channel)", "exclusive (shape)", "group+exclusive (shape)")
_K = sharded._CANDIDATES
COMPARISONS = {
    "route": (("torch ops", lambda: _set("torch", True)), ("Numba passes", lambda: _set("auto", True))),
    "batch": (("one by one", lambda: _set("auto", False)), ("batched", lambda: _set("auto", True))),
    "candidates": (("1 candidate", lambda: _set("auto", True, 1)), (f"{_K} candidates", lambda: _set("auto", True, _K))),
}
#: comparisons that concern some penalties only (the others: all)
ONLY = {"candidates": ("exclusive (shape)", "group+exclusive (shape)")}


def _set(route: str, batched: bool, candidates: int = _K) -> None:
    torch_dev.CPU_KERNELS = route
    _batched.ENABLED = batched
    sharded._CANDIDATES = candidates


def _collectives(prox) -> int:
    """The collectives the ProximalStep's sharded plans have issued so far."""
    return sum(term._plan.comm.collectives for term in prox.terms)


def _worker(rank, world, init_file, out, rounds):
    import torch.distributed as dist

    mesh = bo.gloo_rank(rank, world, init_file)
    rows = []
    try:
        for name in PENALTIES:
            pen, grouping = bo.PENALTIES[name]
            net, opt, train_step = bo.fsdp_mlp(mesh)
            for what, variants in COMPARISONS.items():
                if name not in ONLY.get(what, (name,)):
                    continue
                proxes = {}
                for label, use in variants:  # (one ProximalStep per variant: each keeps its plans, and their hints)
                    use()
                    proxes[label] = pt.ProximalStep(opt, model=net)
                    for layer in bo._weights(net):
                        proxes[label].add(layer, pen(), grouping=grouping)
                times = {label: [] for label, _ in variants}
                counts = {label: 0 for label, _ in variants}
                for i in range(rounds + 3):
                    for label, use in variants:
                        use()
                        train_step()
                        dist.barrier()  # (untimed: the ranks leave their training steps apart)
                        c = _collectives(proxes[label])
                        t = time.perf_counter()
                        proxes[label].step()
                        if i >= 3:  # (warm-up: each variant's first steps compile or form hints)
                            times[label].append((time.perf_counter() - t) * 1e3)
                            counts[label] += _collectives(proxes[label]) - c
                (a, ta, ca), (b, tb, cb) = ((label, statistics.median(times[label]), counts[label] / rounds) for label, _ in variants)
                rows.append(dict(penalty=name, comparison=what, a=a, a_ms=ta, a_coll=ca, b=b, b_ms=tb, b_coll=cb))
        _set("auto", True)
        bo.leave_rank(rank, out, rows)
    finally:
        dist.destroy_process_group()


def run(rounds: int) -> list[dict]:
    return bo.spawn_gloo_ranks(_worker, rounds)


def table(rows: list[dict]) -> str:
    lines = ["| penalty (both weights) | comparison | A | A (ms) | A: collectives / step | B | B (ms) | B: collectives / step | B / A |",
             "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['penalty']} | {r['comparison']} | {r['a']} | {r['a_ms']:.3f} | {r['a_coll']:.2f} | {r['b']} | {r['b_ms']:.3f} | {r['b_coll']:.2f} "
                     f"| {r['b_ms'] / r['a_ms']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=60, help="timed rounds per comparison (default 60)")
    p.add_argument("--out", help="also write the table, with the machine's load, to this markdown file")
    a = p.parse_args(argv)
    before = os.getloadavg()
    rows = run(a.rounds)
    after = os.getloadavg()
    text = table(rows)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write("# Sharded prox step: in-process A/B (FSDP2, two gloo processes, CPU)\n\n")
            f.write(f"`python benchmarks/ab_sharded.py --rounds {a.rounds} --out {a.out}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                    f"torch {torch.__version__}, {os.cpu_count()} cores; load average before {before[0]:.2f}, after {after[0]:.2f}.\n\n")
            f.write("The MLP 784-300-10 at batch 64, float32, each weight sharded over 2 gloo processes (one torch thread each); "
                    "per round a training step and the prox step of A, then of B (prox steps timed, medians of rank 0).\n\n")
            f.write(text + "\n")


if __name__ == "__main__":
    main()
