"""GPU benchmarks: proxlib's CuPy backend and the OWL prox on CUDA torch tensors, against
device floors measured in the same run.

    python benchmarks/bench_gpu.py                           # OWL n = 1e6, 1e7, 1e8; rows 4096x4096, 512x4608
    python benchmarks/bench_gpu.py --quick                   # OWL n <= 1e6, fewer repeats (< 1 min)
    python benchmarks/bench_gpu.py --out benchmarks/RESULTS_GPU.md
    python benchmarks/bench_gpu.py --dry-run                 # no GPU: CPU tensors, tiny sizes (tests the script)
    python benchmarks/bench_gpu.py --sections rows           # torch row operators at 4096x4096 only

Sections (each runs where it can; without CuPy and CUDA torch it says so and
exits with status 2, except with ``--dry-run``):

* **CuPy** (needs CuPy and a CUDA device): every operator through the public
  API on CuPy arrays;
* **torch OWL** (needs torch with CUDA): ``proxlib.backends._gpu_owl.owl`` --
  the kernel the torch backend calls -- on CUDA tensors, float32 and float64,
  with the isotonic step's merge rounds as one Triton kernel each
  (``bridge="triton"``, the default on CUDA) and, for comparison, as the
  array-code loop (``bridge="array"``, sizes up to ``--array-max``).  Floor:
  ``torch.sort(v)`` of the same tensor (the issue's target: OWL at n = 1e8
  within 2x of it).  Also reported: the sort of |v| that OWL does, the
  isotonic step alone, kernel launches per call (aten operations dispatched,
  counted once with torch's dispatcher, plus Triton kernels), host reads
  (scalar reads = rounds), peak extra device memory, and the max abs
  difference from the NumPy reference (n <= --check-max).
  ``--dry-run`` runs this section on CPU tensors at n = 1e3, 1e4 with the
  Triton kernel in Triton's interpreter: a check of the script and of the
  launch/read counts, not a timing.

Floors of the CuPy section, measured in the same process right before the operator:

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

The rows section (torch, needs torch with CUDA; ``--dry-run`` runs it on a
64x48 matrix of CPU tensors with Triton interpreted): the torch backend's
group lasso, GrOWL, exclusive lasso and group+exclusive at ``--rows-shape``
(4096x4096), C-contiguous rows and the transposed view ("channel"), float32 and
float64, the group lasso and GrOWL with their row norms from the Triton kernel
(``_triton_rows``) and from torch operations; achieved bandwidth = 3 x nbytes(W)
/ time against a device-to-device copy of W timed in the same run (issue
targets: >= 50% and >= 70% of it); see ``torch_rows_section``.

A second table breaks OWL down: sort, the isotonic step alone (with its round
counts: peels, merges, bridge steps) and the final mapping.  The torch section
has its own table (above).
"""


from __future__ import annotations

import argparse
import importlib
import datetime as _dt
import platform
import sys
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _cupy_or_why():
    """(cupy, None) with a usable device, else (None, the reason)."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # noqa: BLE001 - any failure means: no GPU here
        return None, f"{type(exc).__name__}: {exc}"
    return cupy, None


def _torch_cuda_or_why():
    """(torch, None) with CUDA available, else (torch or None, the reason)."""
    try:
        import torch
    except ImportError as exc:
        return None, f"ImportError: {exc}"
    if not torch.cuda.is_available():
        return torch, "torch.cuda.is_available() is False"
    return torch, None


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
    growl_w = s * (0.5 + (G - i) / G)  # NumPy weights: accepted with CuPy and NumPy inputs (the reference call)
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


def cupy_section(args, cp) -> list[str]:
    """The CuPy backend's operators (module doc); markdown lines."""
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
    lines = [
        "## CuPy backend",
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
    return lines


# ------------------------------------------------------------- torch OWL


def torch_timer(torch, device, repeat: int, warmup: int = 1):
    """median seconds of fn() over ``repeat`` calls: CUDA events on the current
    stream (host-side gaps such as the isotonic step's scalar reads included),
    or perf_counter on the CPU (``--dry-run``)."""
    import time

    def measure(fn):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeat):
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e-3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return float(np.median(times))

    return measure


def count_calls(torch, fn, triton_module=None) -> tuple[int, int, int]:
    """(aten operations that launch work, Triton kernels, host scalar reads) of one fn().

    Triton kernels: launches counted by ``triton_module`` (a module with a
    ``launches`` counter, or a tuple of them; default: the isotonic step's,
    ``_triton_isotonic``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from proxlib.backends import _gpu_owl

    counts = {"launch": 0, "read": 0}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name == "_local_scalar_dense":
                counts["read"] += 1
            elif not func.is_view and name not in ("empty", "empty_strided", "detach"):
                counts["launch"] += 1
            return func(*args, **(kwargs or {}))

    ti = _gpu_owl._triton_module() if triton_module is None else triton_module
    modules = [m for m in (ti if isinstance(ti, tuple) else (ti,)) if m is not None]
    before = sum(m.launches for m in modules)
    with Count():
        fn()
    triton_calls = sum(m.launches for m in modules) - before
    return counts["launch"], triton_calls, counts["read"]


def torch_owl_section(args, torch, dry: bool) -> list[str]:
    """``_gpu_owl.owl`` on CUDA tensors (CPU tensors with ``--dry-run``); markdown lines."""
    from proxlib.backends import _gpu_owl, numpy_ref

    device = torch.device("cpu" if dry else "cuda")
    if dry:
        torch.set_num_threads(1)  # a check, not a timing: stay off the other cores
    default_sizes = "1e3,1e4" if dry else ("1e5,1e6" if args.quick else "1e6,1e7,1e8")
    sizes = [int(float(t)) for t in (args.owl_sizes or default_sizes).split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    repeat = args.repeat or (2 if dry else 5 if args.quick else 20)
    timer = torch_timer(torch, device, repeat)
    bridges = ["triton", "array"] if _gpu_owl._triton_module() is not None else ["array"]
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for dtype in dtypes:
        for n in sizes:
            v = torch.randn(n, generator=gen, device=device, dtype=torch.float64).to(dtype)
            i = torch.arange(1, n + 1, device=device, dtype=torch.float64)
            w = (0.1 * torch.sqrt(2.0 * torch.log(2.0 * n / i))).to(dtype)  # BH-type, non-increasing
            del i
            t_sort = timer(lambda: torch.sort(v))
            t_abs_sort = timer(lambda: torch.sort(torch.abs(v), descending=True))
            y = torch.sort(torch.abs(v), descending=True).values
            u = w.to(torch.float64) - y.to(torch.float64)
            del y
            ref = numpy_ref.owl(v.cpu().numpy(), w.cpu().numpy()) if n <= args.check_max else None
            for bridge in bridges:
                if bridge == "array" and n > args.array_max:
                    continue
                call = lambda: _gpu_owl.owl(v, w, bridge=bridge)  # noqa: E731
                stats: dict = {}
                out = _gpu_owl.owl(v, w, bridge=bridge, stats=stats)  # also compiles the kernel
                t = timer(call)
                t_iso = timer(lambda: _gpu_owl.isotonic_blocks(u, bridge=bridge))  # includes its float64 copy of u
                launches, kernels, reads = count_calls(torch, call)
                extra = None
                if device.type == "cuda":
                    del out
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    out = call()
                    torch.cuda.synchronize()
                    extra = (torch.cuda.max_memory_allocated() - base - out.nbytes) / v.nbytes
                diff = None
                if ref is not None:
                    diff = float(np.max(np.abs(out.cpu().numpy().astype(np.float64) - ref.astype(np.float64)), initial=0.0))
                rows.append((n, str(dtype).removeprefix("torch."), bridge, t, t_sort, t_abs_sort, t_iso, launches,
                             kernels, reads, stats, extra, diff))  # fmt: skip
                del out
            del v, w, u
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        where = "CPU tensors (--dry-run: Triton interpreted, times meaningless)"
    try:
        import triton

        tri = f"Triton {triton.__version__}"
    except ImportError:
        tri = "no Triton (array bridge only)"
    lines = [
        "## OWL on torch tensors (`_gpu_owl.owl`)",
        "",
        f"{where}; torch {torch.__version__}, {tri}. Median time over {repeat} calls; floor `torch.sort(v)` "
        "(values and indices, as torch always returns). Launches: aten operations that launch work, counted with "
        "torch's dispatcher, plus Triton kernels; host reads: scalar reads (one per round). Extra memory: peak "
        "allocation of one call minus its output, in units of the input's size.",
        "",
        "| n | dtype | bridge | owl (ms) | torch.sort(v) (ms) | ratio | sort(abs(v)) (ms) | isotonic step (ms) "
        "| launches | Triton kernels | host reads | peels / merges | extra mem (x input) | max abs diff vs NumPy |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for n, dt, bridge, t, t_sort, t_abs, t_iso, launches, kernels, reads, st, extra, diff in rows:
        lines.append(
            f"| {n:.0e} | {dt} | {bridge} | {fmt_ms(t)} | {fmt_ms(t_sort)} | {t / t_sort:.2f} | {fmt_ms(t_abs)} "
            f"| {fmt_ms(t_iso)} | {launches} | {kernels} | {reads} | {st.get('peels')} / {st.get('merges')} "
            f"| {'-' if extra is None else f'{extra:.2f}'} | {'-' if diff is None else f'{diff:.1e}'} |"
        )
    return lines + [""]


# ------------------------------------------------------------- torch rows


def _rows_module():
    """``_triton_rows`` if Triton imports, else None."""
    try:
        from proxlib.backends import _triton_rows
    except ImportError:
        return None
    return _triton_rows


def torch_rows_section(args, torch, dry: bool) -> list[str]:
    """The torch backend's row operators on CUDA tensors (CPU tensors with ``--dry-run``); markdown lines.

    ``torch_dev.group_lasso`` / ``growl`` / ``exclusive_lasso`` /
    ``group_exclusive`` -- the kernels ``proxlib.prox_*`` and
    ``proxlib.torch.ProximalStep`` call -- on a (G, m) matrix in two layouts:
    ``rows`` (C-contiguous rows: the "filter" grouping) and ``channel`` (the
    transposed view of a row-major (m, G) matrix: rows are its columns, as
    the "channel" and "shape" groupings give), float32 and float64.  The
    group lasso and GrOWL run with their row norms from the Triton kernel
    (``ROW_STATS="triton"``, the default on CUDA) and from torch operations
    (``"torch"``), and (``"multi"``) by the kernel of a training step's
    batches (``torch_dev.GROUP_ROWS``: the group lasso whole in one launch,
    GrOWL's norms and map; off by default until it has run on a GPU).  Bytes that must move: 3 x nbytes(W) (one read for the row
    statistics, one read and one write for the row map; the same structure
    for the exclusive operators).  Peak: a device-to-device copy of W
    (``copy_``, 2 x nbytes) timed in the same run.
    """
    from proxlib.backends import numpy_ref, torch_dev

    device = torch.device("cpu" if dry else "cuda")
    if dry:
        torch.set_num_threads(1)  # a check, not a timing: stay off the other cores
    G, m = (64, 48) if dry else (int(t) for t in args.rows_shape.lower().split("x"))
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    repeat = args.repeat or (2 if dry else 5 if args.quick else 20)
    timer = torch_timer(torch, device, repeat)
    tr = _rows_module()
    # "multi": the group lasso and GrOWL by the kernel of a training step's
    # batches (``torch_dev.GROUP_ROWS``: the group lasso whole in one launch,
    # GrOWL's norms and map), the others' row statistics by ``ROW_STATS``
    stats_paths = (["multi", "triton"] if tr is not None else []) + ["torch"]
    # (every proxlib Triton kernel a row operator may launch: the row
    # statistics', the multi-tensor one, those of the exclusive penalties where switched on)
    from proxlib.torch._opcount import TRITON_MODULES

    kernel_modules = tuple(importlib.import_module(name) for name in TRITON_MODULES) if tr is not None else (None,)
    gen = torch.Generator(device=device).manual_seed(0)
    s = float(np.sqrt(m))  # about the norm of a row of N(0, 1) entries
    saved = torch_dev.ROW_STATS, torch_dev.CPU_KERNELS, torch_dev.GROUP_ROWS
    if dry:  # CPU tensors through the torch operations that CUDA runs (by default Numba's kernels would)
        torch_dev.CPU_KERNELS = "torch"
    rows, copies = [], []
    try:
        for dtype in dtypes:
            dt = str(dtype).removeprefix("torch.")
            W = torch.randn((G, m), generator=gen, device=device, dtype=torch.float64).to(dtype)
            dst = torch.empty_like(W)
            t_copy = timer(lambda: dst.copy_(W))
            copies.append((dt, t_copy, 2 * W.nbytes / t_copy))
            del dst
            layouts = {"rows": W, "channel": W.T.contiguous().T}  # same values, rows along memory columns
            a = torch.linspace(0.5, 1.5, G, device=device, dtype=dtype) * s  # about half the rows zeroed
            w = torch.linspace(1.5, 0.0, G, device=device, dtype=dtype) * s  # non-increasing
            b = torch.full((G,), 1.0 / m, device=device, dtype=dtype)
            ops = {
                "group_lasso": (torch_dev.group_lasso, (a,), numpy_ref.group_lasso, stats_paths),
                "growl": (torch_dev.growl, (w,), numpy_ref.growl, stats_paths),
                "exclusive_lasso": (torch_dev.exclusive_lasso, (b,), numpy_ref.exclusive_lasso, ["torch"]),
                "group_exclusive": (torch_dev.group_exclusive, (a, b), numpy_ref.group_exclusive, ["torch"]),
            }
            host = W.cpu().numpy() if W.numel() <= args.check_max else None
            for layout, V in layouts.items():
                for name, (fn, thr, ref_fn, paths) in ops.items():
                    ref = ref_fn(host, *(t.cpu().numpy() for t in thr)) if host is not None else None
                    for path in paths:
                        torch_dev.GROUP_ROWS = "triton" if path == "multi" else "array"
                        torch_dev.ROW_STATS = "triton" if path == "multi" else path
                        call = lambda: fn(V, *thr)  # noqa: E731
                        out = call()  # also compiles the kernels
                        t = timer(call)
                        launches, kernels, reads = count_calls(torch, call, kernel_modules)
                        diff = None
                        if ref is not None:
                            diff = float(np.max(np.abs(out.cpu().numpy().astype(np.float64) - ref), initial=0.0))
                        rows.append((name, layout, dt, path, t, t_copy, 2 * V.nbytes / t_copy, 3 * V.nbytes,
                                     launches, kernels, reads, diff))  # fmt: skip
                        del out
            del W, layouts, V
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch_dev.ROW_STATS, torch_dev.CPU_KERNELS, torch_dev.GROUP_ROWS = saved
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        where = "CPU tensors (--dry-run: Triton interpreted, times meaningless)"
    lines = [
        "## Row operators on torch tensors (`torch_dev`)",
        "",
        f"{where}; torch {torch.__version__}; W of shape {G}x{m}. Median time over {repeat} calls. "
        "Row stats: the row norms of the group lasso and GrOWL from the Triton kernel (`_triton_rows`, one read of W) "
        "or from torch operations (a float64 copy of W); multi: the group lasso whole in one launch of `_triton_multi` "
        "(the kernel of a training step's batches, `torch_dev.GROUP_ROWS`; GrOWL: its norms and map there); "
        "the exclusive operators sort rows. "
        "Moved: 3 x nbytes(W) (statistics read, map read + write). Peak: a device-to-device copy of W in this run "
        "(issue targets: >= 50% and >= 70% of it). Launches: aten operations that launch work plus proxlib's "
        "Triton kernels (the row statistics'; the exclusive penalties' where switched on; also shown alone; "
        "--dry-run: plus the interpreter's own tensor operations); host reads: "
        "scalar reads (GrOWL's OWL of the norms reads one per round).",
        "",
    ]
    lines += [f"Copy floor, {dt}: {fmt_ms(t)} ms, {bw / 1e9:.0f} GB/s." for dt, t, bw in copies]
    lines += [
        "",
        "| operator | layout | dtype | row stats | time (ms) | copy (ms) | moved (MB) | GB/s | % of copy bw "
        "| launches | Triton kernels | host reads | max abs diff vs NumPy |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, layout, dt, path, t, t_copy, copy_bw, moved, launches, kernels, reads, diff in rows:
        bw = moved / t
        lines.append(
            f"| {name} | {layout} | {dt} | {path} | {fmt_ms(t)} | {fmt_ms(t_copy)} | {moved / 1e6:.1f} | {bw / 1e9:.0f} "
            f"| {100 * bw / copy_bw:.0f}% | {launches + kernels} | {kernels} | {reads} "
            f"| {'-' if diff is None else f'{diff:.1e}'} |"
        )
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--dry-run", action="store_true", help="no GPU needed: the torch section on CPU tensors, tiny sizes")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--owl-sizes", default=None, help="comma list, e.g. 1e6,1e7,1e8")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--check-max", type=float, default=1e7, help="compare with NumPy up to this many entries")
    ap.add_argument("--array-max", type=float, default=1e8, help="torch OWL: array bridge up to this n")
    ap.add_argument("--sections", default="cupy,torch,rows", help="comma list of cupy, torch (OWL), rows (torch)")
    ap.add_argument("--rows-shape", default="4096x4096", help="rows section: GxM of W")
    ap.add_argument("--note", default="", help="a line printed on top of the report")
    args = ap.parse_args(argv)
    wanted = {t.strip() for t in args.sections.split(",") if t.strip()}
    if not wanted or not wanted <= {"cupy", "torch", "rows"}:
        ap.error(f"--sections: a comma list of cupy, torch, rows (got {args.sections!r})")

    lines = []
    if args.note:
        lines += [args.note, ""]
    lines += [f"# proxlib GPU benchmarks ({_dt.date.today().isoformat()})", ""]
    ran, why, failed = 0, [], []

    def run_section(name, section, *a, **kw):
        """One section's lines, printed as they come; a section that raises
        is reported (traceback on stderr) and the others still run."""
        nonlocal ran
        try:
            out = section(*a, **kw)
        except Exception:  # noqa: BLE001 - a benchmark run reports every section it can
            traceback.print_exc()
            failed.append(name)
            return [f"**{name} section failed**: {traceback.format_exc(limit=1).splitlines()[-1]}", ""]
        ran += 1
        print("\n".join(out), flush=True)
        return out

    for name, section in (("torch", torch_owl_section), ("rows", torch_rows_section)):  # the torch path first
        if name not in wanted:
            continue
        torch, reason = _torch_cuda_or_why()
        if torch is not None and (reason is None or args.dry_run):
            lines += run_section(name, section, args, torch, dry=reason is not None)
        else:
            why.append(f"{name} section: {reason}")
    if "cupy" in wanted and args.dry_run:
        why.append("CuPy section: no dry run (it needs CuPy and a CUDA device)")
    elif "cupy" in wanted:
        cp, reason = _cupy_or_why()
        if cp is not None:
            lines += run_section("CuPy", cupy_section, args, cp)
        else:
            why.append(f"CuPy section: {reason}")
    if not ran and not failed:
        print("bench_gpu.py found no GPU to run on (--dry-run runs on CPU tensors):", *why, sep="\n  ", file=sys.stderr)
        return 2
    lines += [f"Skipped: {w}" for w in why]
    report = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(report)
        print(f"written to {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
