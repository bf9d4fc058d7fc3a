"""The first proximal step of a training run on a cold Numba cache: what a
user waits for once per machine (the kernels are then cached beside the
package, or in ``NUMBA_CACHE_DIR``, for every later process).

    python benchmarks/first_step.py
    python benchmarks/first_step.py --rounds 2 --tree /path/to/a/checkout --tree-label 885a04e --out benchmarks/FIRST_STEP.md

For each penalty of ``bench_overhead.PENALTIES`` (one term on each weight of
the MLP 784-300-10 in float32, as ``bench_overhead.py`` trains it), a fresh
process with an empty ``NUMBA_CACHE_DIR`` adds the terms and takes three
proximal steps.  A line gives the first step's seconds (nearly all of it
Numba compiling the kernels that step runs, with their callees), the number
of compilations Numba reported, and the second step's time (the kernels
compiled).  ``--tree`` runs the same with another checkout's ``proxlib``
first on ``PYTHONPATH`` (e.g. the revision before a change), alternating
with this one's, so that a machine that slows down slows both.  Compile
times move by 10-20% between runs on a shared VM: compare rounds, and the
compilation counts, which do not move.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

# (run in the child: the penalty's name is argv[1])
CHILD = r"""
import json, sys, time
from numba.core import event

compilations = [0]


class Count(event.Listener):
    def on_start(self, e):
        pass

    def on_end(self, e):
        compilations[0] += 1


event.register("numba:compile", Count())
import torch
import proxlib.torch as pt
from bench_overhead import PENALTIES, _weights, mlp

torch.manual_seed(0)
net = mlp()
opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
make, grouping = PENALTIES[sys.argv[1]]
prox = pt.ProximalStep(opt, model=net)
for layer in _weights(net):
    prox.add(layer, make(), grouping=grouping)
times = []
for _ in range(3):
    t = time.perf_counter()
    prox.step()
    times.append(time.perf_counter() - t)
print(json.dumps({"first_s": times[0], "second_s": times[1], "compilations": compilations[0]}))
"""


def first_step(penalty: str, tree: pathlib.Path) -> dict:
    """One cold run of ``penalty`` with ``tree``'s proxlib (a fresh cache)."""
    with tempfile.TemporaryDirectory(prefix="proxlib-first-step-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join([str(tree), str(HERE), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, "-c", CHILD, penalty], env=env, capture_output=True, text=True,
                             timeout=1800, cwd=cache)
    if out.returncode != 0:
        raise RuntimeError(f"{penalty} with {tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    sys.path.insert(0, str(HERE))
    from bench_overhead import PENALTIES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tree", type=pathlib.Path, help="another checkout to compare with (its proxlib first on PYTHONPATH)")
    ap.add_argument("--tree-label", help="its name in the table (default: its path)")
    ap.add_argument("--penalties", help="comma-separated names of bench_overhead.PENALTIES (default: all)")
    ap.add_argument("--note", default="", help="a line for the table's header (e.g. what else ran)")
    ap.add_argument("--out", type=pathlib.Path, help="write the table there as markdown too")
    args = ap.parse_args(argv)
    names = args.penalties.split(",") if args.penalties else list(PENALTIES)
    unknown = [n for n in names if n not in PENALTIES]
    if unknown:
        ap.error(f"unknown penalties {unknown}; known: {list(PENALTIES)}")
    other = args.tree_label or f"--tree {args.tree}"
    trees = [("this tree", ROOT)] + ([(other, args.tree.resolve())] if args.tree else [])
    load = os.getloadavg()[0]
    runs = {(n, label): [] for n in names for label, _ in trees}
    for rnd in range(args.rounds):
        for name in names:
            for label, tree in (trees if rnd % 2 == 0 else trees[::-1]):  # (alternated: neither always first)
                runs[name, label].append(first_step(name, tree))
                print(name, label, runs[name, label][-1], flush=True)
    lines = [
        "# The first proximal step on a cold Numba cache",
        "",
        f"`python benchmarks/first_step.py {shlex.join(argv if argv is not None else sys.argv[1:])}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end. {args.note}",
        "",
        "MLP 784-300-10 in float32, one term on each weight; each run a fresh process and an empty `NUMBA_CACHE_DIR`.",
        "First step: the runs' seconds (mostly compiling); compilations: as Numba's compile events count them.",
        "",
        "| penalty | proxlib | first step (s) | compilations | second step (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in names:
        for label, _ in trees:
            rs = runs[name, label]
            first = ", ".join(f"{r['first_s']:.1f}" for r in rs)
            comp = sorted({r["compilations"] for r in rs})
            second = statistics.median(r["second_s"] for r in rs) * 1e3
            lines.append(f"| {name} | {label} | {first} | {', '.join(map(str, comp))} | {second:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
