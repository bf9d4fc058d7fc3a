"""GPU benchmarks of proxlib's CuPy backend against device floors measured in the same run.

    python benchmarks/bench_gpu.py                           # OWL n = 1e6, 1e7, 1e8; rows 4096x4096, 512x4608
    python benchmarks/bench_gpu.py --quick                   # OWL n <= 1e6, fewer repeats (< 1 min)
    python benchmarks/bench_gpu.py --out benchmarks/RESULTS_GPU.md

Needs CuPy and a CUDA device (it says so and exits with status 2 otherwise).

Floors, measured in the same process right before the operator:

* OWL: ``cupy.sort(v)`` of an array of the same size and dtype (the issue's target:
  OWL at n = 1e8 within 2x of it);
* row operators: a device-to-device copy of ``W`` (``cudaMemcpyAsync``), the
  least traffic any operator that reads ``W`` and writes a new array can have
  (2 x nbytes).  The target is >= 70% of the device's memory bandwidth.

Per case: the median GPU time over repeats (CUDA events on the current stream via
``cupyx.profiler.benchmark``: host-side gaps, e.g. the isotonic step's scalar reads,
are included, as they should be), the ratio to the floor, the effective bandwidth
``2 x nbytes(W) / time`` and its fraction of the theoretical peak (from the memory
clock and bus width) and of the measured copy bandwidth, the peak extra device
memory of one call (pool allocations, minus the output, in units of the input's
size), and the max abs difference from the NumPy reference (sizes <= --check-max).
Row operators run twice, with the fused CUDA primitives (``cupy_gpu.FUSED``) and
with the namespace-generic reference kernels.  Public operators are called with
``check_finite=False`` (validation adds two reductions over the input) and
once with the default for OWL and group lasso, to show that cost.

A second table breaks OWL down: sort, the isotonic step alone (with its round
counts: peels, merges, bridge steps) and the final mapping.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _need_gpu():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # noqa: BLE001 - any failure means: no GPU here
        print(f"bench_gpu.py needs CuPy and a CUDA device ({type(exc).__name__}: {exc})", file=sys.stderr)
        sys.exit(2)
    return cupy


# ------------------------------------------------------------------- helpers


def device_description(cp) -> dict:
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    peak = None
    clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
    if clock_khz and bus_bits:
        peak = 2.0 * clock_khz * 1e3 * bus_bits / 8.0  # double data rate, bytes/s
    return {
        "name": name,
        "sms": props.get("multiProcessorCount"),
        "memory_GiB": props.get("totalGlobalMem", 0) / 2**30,
        "peak_bandwidth": peak,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "driver": cp.cuda.runtime.driverGetVersion(),
        "cupy": cp.__version__,
    }


def gpu_median(cp, fn, *, repeat: int, warmup: int = 2) -> float:
    """Median GPU seconds of ``fn()`` over ``repeat`` calls (after ``warmup``)."""
    from cupyx.profiler import benchmark

    res = benchmark(fn, (), n_repeat=repeat, n_warmup=warmup)
    return float(np.median(res.gpu_times[0]))


def peak_extra_bytes(cp, fn) -> tuple[int, object]:
    """Peak device bytes allocated through CuPy's pool during one call, and its result."""

    class Peak(cp.cuda.MemoryHook):
        name = "proxlib_peak"

        def __init__(self):
            self.current = 0
            self.peak = 0

        def malloc_postprocess(self, **kw):
            self.current += kw["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kw):
            self.current -= kw["mem_size"]

    cp.cuda.Device().synchronize()
    hook = Peak()
    with hook:
        out = fn()
        cp.cuda.Device().synchronize()
    return hook.peak, out


def d2d_copy(cp, src, dst):
    return lambda: dst.data.copy_from_device_async(src.data, src.nbytes)


def fmt_ms(t):
    return f"{t * 1e3:.3f}"


# ------------------------------------------------------------------ the cases


def owl_weights(cp, n, dtype):
    i = cp.arange(1, n + 1, dtype=cp.float64)
    return (0.1 * cp.sqrt(2.0 * cp.log(2.0 * n / i))).astype(dtype)  # BH-type, non-increasing


def row_cases(proxlib, cp, G, m):
    """name -> call(W) through the public API (check_finite=False)."""
    s = float(np.sqrt(m))
    i = np.arange(G)
    growl_w = cp.asarray(s * (0.5 + (G - i) / G))
    return {
        "group_lasso": lambda W: proxlib.prox_group_lasso(W, s, check_finite=False),
        "growl": lambda W: proxlib.prox_growl(W, growl_w.astype(W.dtype), check_finite=False),
        "exclusive_lasso": lambda W: proxlib.prox_exclusive_lasso(W, 1.0 / m, check_finite=False),
        "group_exclusive": lambda W: proxlib.prox_group_exclusive(W, s, 1.0 / m, check_finite=False),
        "weighted_l1": lambda W: proxlib.prox_weighted_l1(W, 0.5, check_finite=False),
        "weighted_l2sq": lambda W: proxlib.prox_weighted_l2sq(W, 0.5, check_finite=False),
        "lp (p=1/2)": lambda W: proxlib.prox_lp(W, 0.5, 0.5, check_finite=False),
        "group_lasso (checked)": lambda W: proxlib.prox_group_lasso(W, s),
    }


def reference_diff(proxlib, cp, call, args_dev):
    host = tuple(cp.asnumpy(a) for a in args_dev)
    with proxlib.use_backend("numpy"):
        ref = call(*host)
    got = cp.asnumpy(call(*args_dev))
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)), initial=0.0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--owl-sizes", default=None, help="comma list, e.g. 1e6,1e7,1e8")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--check-max", type=float, default=1e7, help="compare with NumPy up to this many entries")
    ap.add_argument("--note", default="", help="a line printed on top of the report")
    args = ap.parse_args(argv)

    cp = _need_gpu()
    import proxlib
    from proxlib.backends import _gpu_owl, cupy_gpu

    quick = args.quick
    owl_sizes = [int(float(s)) for s in (args.owl_sizes or ("1e5,1e6" if quick else "1e6,1e7,1e8")).split(",")]
    shapes = [(512, 4608)] if quick else [(4096, 4096), (512, 4608)]
    dtypes = [np.dtype(d) for d in args.dtypes.split(",")]
    repeat = args.repeat or (5 if quick else 20)
    info = device_description(cp)
    rng = cp.random.default_rng(0)

    rows_out = []  # (op, size, dtype, path, t, floor, extra, diff, bytes)
    breakdown = []
    for dtype in dtypes:
        for n in owl_sizes:
            v = rng.standard_normal(n, dtype=cp.float64).astype(dtype)
            w = owl_weights(cp, n, dtype)
            t_sort = gpu_median(cp, lambda: cp.sort(v), repeat=repeat)
            call = lambda: proxlib.prox_owl(v, w, check_finite=False)  # noqa: E731
            t = gpu_median(cp, call, repeat=repeat)
            t_checked = gpu_median(cp, lambda: proxlib.prox_owl(v, w), repeat=max(3, repeat // 4))
            peak, out = peak_extra_bytes(cp, call)
            extra = (peak - out.nbytes) / v.nbytes
            diff = (
                reference_diff(proxlib, cp, lambda a, b: proxlib.prox_owl(a, b, check_finite=False), (v, w))
                if n <= args.check_max
                else None
            )
            size = f"n=1e{int(round(np.log10(n)))}" if 10 ** round(np.log10(n)) == n else f"n={n}"
            rows_out.append(("owl", size, dtype.name, "device", t, t_sort, extra, diff, None))
            rows_out.append(("owl (checked)", size, dtype.name, "device", t_checked, t_sort, None, None, None))
            # breakdown: sort |v|, the isotonic step on u, the rest
            a = cp.abs(v)
            y = cp.flip(cp.sort(a))
            u = w.astype(cp.float64) - y.astype(cp.float64)
            stats: dict = {}
            _gpu_owl.isotonic_blocks(u, stats=stats)
            t_abs_sort = gpu_median(cp, lambda: cp.sort(cp.abs(v)), repeat=repeat)
            t_iso = gpu_median(cp, lambda: _gpu_owl.isotonic_blocks(u), repeat=repeat)
            breakdown.append((size, dtype.name, t, t_sort, t_abs_sort, t_iso, stats))
            del v, w, a, y, u, out
            cp.get_default_memory_pool().free_all_blocks()

        for G, m in shapes:
            W = rng.standard_normal((G, m), dtype=cp.float64).astype(dtype)
            dst = cp.empty_like(W)
            t_copy = gpu_median(cp, d2d_copy(cp, W, dst), repeat=repeat)
            for name, call in row_cases(proxlib, cp, G, m).items():
                for fused in ([True, False] if name in ("group_lasso", "growl", "weighted_l1", "weighted_l2sq") else [True]):
                    cupy_gpu.FUSED = fused
                    path = "fused" if fused else "generic"
                    if name in ("exclusive_lasso", "group_exclusive", "lp (p=1/2)"):
                        path = "generic"
                    t = gpu_median(cp, lambda: call(W), repeat=repeat)
                    peak, out = peak_extra_bytes(cp, lambda: call(W))
                    extra = (peak - out.nbytes) / W.nbytes
                    diff = reference_diff(proxlib, cp, call, (W,)) if W.size <= args.check_max else None
                    rows_out.append((name, f"{G}x{m}", dtype.name, path, t, t_copy, extra, diff, W.nbytes))
            cupy_gpu.FUSED = True
            del W, dst
            cp.get_default_memory_pool().free_all_blocks()

    peak_bw = info["peak_bandwidth"]
    lines = []
    if args.note:
        lines += [args.note, ""]
    lines += [
        f"# proxlib GPU benchmarks ({_dt.date.today().isoformat()})",
        "",
        f"Device: {info['name']}, {info['sms']} SMs, {info['memory_GiB']:.0f} GiB; "
        + (f"theoretical memory bandwidth {peak_bw / 1e9:.0f} GB/s; " if peak_bw else "")
        + f"CUDA runtime {info['cuda_runtime']}, driver {info['driver']}, CuPy {info['cupy']}; "
        f"host {platform.processor() or platform.machine()}, Python {platform.python_version()}.",
        "",
        "Median GPU time over repeats. Floor: `cupy.sort(v)` for OWL, a device-to-device copy of W for rows. "
        "Effective bandwidth = 2 x nbytes(W) / time (the traffic of one read and one write); "
        "% peak against the theoretical bandwidth, % copy against the copy floor's. "
        "Extra memory: peak pool allocation of one call minus its output, in units of the input's size.",
        "",
        "| operator | size | dtype | path | time (ms) | floor (ms) | ratio | eff. GB/s | % peak | % copy "
        "| extra mem (x input) | max abs diff vs NumPy |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, size, dt, path, t, floor, extra, diff, nbytes in rows_out:
        if nbytes:
            bw = 2.0 * nbytes / t
            bw_s = f"{bw / 1e9:.0f}"
            pk = f"{100 * bw / peak_bw:.0f}%" if peak_bw else "-"
            cpy = f"{100 * floor / t:.0f}%"
        else:
            bw_s = pk = cpy = "-"
        lines.append(
            f"| {op} | {size} | {dt} | {path} | {fmt_ms(t)} | {fmt_ms(floor)} | {t / floor:.2f} | {bw_s} | {pk} | {cpy} "
            f"| {'-' if extra is None else f'{extra:.2f}'} | {'-' if diff is None else f'{diff:.1e}'} |"
        )
    lines += [
        "",
        "## OWL breakdown",
        "",
        "| size | dtype | prox_owl (ms) | cupy.sort(v) | sort(abs(v)) | isotonic step | rounds (peels / merges / bridge steps) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for size, dt, t, t_sort, t_abs_sort, t_iso, st in breakdown:
        lines.append(
            f"| {size} | {dt} | {fmt_ms(t)} | {fmt_ms(t_sort)} | {fmt_ms(t_abs_sort)} | {fmt_ms(t_iso)} "
            f"| {st.get('peels')} / {st.get('merges')} / {st.get('bridge_steps', 0)} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
