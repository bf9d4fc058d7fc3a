#!/usr/bin/env bash
# The GPU checks and benchmarks of issues 7 and 13, as one prepared run for a
# lent GPU machine: at most 9.5 minutes of its time (each stage has a time
# limit, 850 s in all, and the whole script a budget of 570 s that cuts the
# stage running when it ends and skips the later ones, so the summary is
# printed before run()'s timeout_s of 590; GPU_SESSION_BUDGET overrides it).
# On an H200 a full run took 296 s (2026-11-30) and 262 s (2026-12-04,
# before stage 2_kernel_tests), the machine's start 0.5-3 min more.  Stage 1
# has 150 s: its CPU reference step compiles Numba's kernels (the device
# starts with no cache: 88 s of CPU on this project's 2-core VM, 11 s with a
# warm cache).  The off-by-default Triton kernels compile once per row
# length on their first call (4-20 s each for sm_90 on that VM; Triton's
# cache keeps them for the later stages): stage 2_kernel_tests has 180 s
# (about twenty variants since 2026-12-04: the exclusive rows sorted and
# long, group+exclusive, the metric row operators, the root search),
# 3_overhead 120 s.
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       -d .whl "array-api-compat>=1.9"          # here, once: the image lacks it
#   device run: bash benchmarks/gpu_session.sh   (carry .whl; logs and reports in $OUT)
#
#   bash benchmarks/gpu_session.sh --dry-run     # no GPU: every stage on the CPU, tiny
#                                                # sizes (checks this script, 5-10 min on 2 cores)
#
# Stages:
#   0 env       the GPU, the versions, proxlib's backends
#   1 step      ProximalStep (six kinds of terms) on a CUDA MLP against the
#               same step on the CPU's default route (float32, within 1e-5;
#               the parameters keep their memory); the dry run: CPU tensors
#               through the torch operations against that route
#   2 tests     the same test bodies on CUDA tensors (PROXLIB_TEST_DEVICE=cuda,
#               see tests/_device.py): backend parity of every operator on
#               torch (the row operators through their Triton kernels), the
#               OWL device paths with the Triton merge kernel compiled, CuPy,
#               NVRTC
#   2 kernels   the tests of the multi-tensor group lasso and GrOWL, the
#               exclusive penalties and the metric row operators with the
#               Triton kernels that are off by default
#               (PROXLIB_TEST_TRITON_KERNELS=triton), compiled
#   3 overhead  benchmarks/bench_overhead.py --gpu-only: prox share of a
#               ResNet-18 training step on CUDA
#   4 profile   where a ResNet-18 prox step's time goes (torch.profiler):
#               launches, synchronisations, operations per layer
#   5 bench     benchmarks/bench_gpu.py: OWL n = 1e6, 1e7, 1e8 against
#               torch.sort, the row operators at 4096x4096 against a device
#               copy (bandwidth), then CuPy's operators
# Exit status: the number of stages that failed (0: all passed).
set -u
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_session_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then  # wheels carried for what the image lacks
    timeout 60 $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/proxlib_site .whl/*.whl || exit 100
    export PYTHONPATH="$PYTHONPATH:/tmp/proxlib_site"
fi
SUMMARY=()
FAILED=0
stage() {  # stage NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, keep the tail
    local name=$1 limit=$(($2 * LIMIT_SCALE)) start=$SECONDS rc
    local left=$((BUDGET - SECONDS - 15))  # (15 s: timeout's 10 s grace, then the summary)
    shift 2
    if [ "$left" -lt 5 ]; then  # the budget is spent: the stage is not started
        echo "=== $name skipped (the ${BUDGET}s budget is spent)"
        FAILED=$((FAILED + 1))
        SUMMARY+=("$name rc=124 0s skipped: the ${BUDGET}s budget was spent")
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit}s)"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/$name.log"
    [ "$rc" -ne 0 ] && FAILED=$((FAILED + 1))
    SUMMARY+=("$name rc=$rc $((SECONDS - start))s $(grep -E '(passed|failed|error).* in ' "$OUT/$name.log" | tail -n 1)")
}

# The GPU run's test selections (stages 2_tests and 2_kernel_tests): files, then -k.
# (not test_triton_rows.py nor the bench_gpu dry runs: they run the row
# kernel in Triton's interpreter on CPU tensors, which CI does, and the
# image's Triton 3.6 interpreter cannot (loop bounds that are tensors);
# on the GPU the parity tests run the compiled row kernels)
TEST_FILES=(tests/test_backends.py tests/test_device_owl.py tests/test_cupy_backend.py tests/test_nvrtc.py
            tests/test_torch_batched.py tests/test_triton_shrink.py)
TEST_K="(test_backends and torch and not numba) or (test_device_owl and not dry_run) or test_cupy or test_nvrtc or test_torch_batched or test_kernel_equals_the_array_code_on_the_test_device"
KERNEL_FILES=(tests/test_triton_exclusive.py tests/test_triton_metric.py tests/test_triton_multi.py tests/test_backends.py tests/test_torch_batched.py)
KERNEL_K="(test_triton_exclusive and (test_device or certificates or public or one_launch_per_row or (in_place and channels_last and False))) or (test_triton_metric and test_device) or test_triton_multi or (test_backends and torch and not numba and (exclusive or group_lasso or growl)) or (test_torch_batched and (exclusive or row_wise or metric or group or growl))"
if [ "$DRY" = 1 ]; then
    LIMIT_SCALE=5  # the limits are the GPU run's; a loaded 2-core CPU (CI) takes longer
    DEVICE=cpu  # (CI runs these tests on the CPU in full: a sample shows the stage works)
    # The same files and -k, narrowed to a sample (so the dry run checks the GPU
    # run's selections: a file that is gone fails it, a -k that no longer
    # parses too): float32, fewer layouts and flags, and none of the Triton
    # interpreter's slow cases, which CI's suite runs (the whole selections
    # took 108 s and 290 s on a 2-core Zen 1 VM; the samples about 10 s and 25 s
    # idle).  The kernel stage's parity tests with PROXLIB_TEST_TRITON_KERNELS
    # run only here on a CPU: a sample of four.
    TEST_K="($TEST_K) and ((test_backends and float32) or (test_device_owl and near_ties) or any_mix)"
    KERNEL_K="($KERNEL_K) and ((test_device and not 4608 and not 1000 and not 300 and not float64 and not dtype1)"
    KERNEL_K+=" or (test_triton_multi and (step or public) and not schedule and not dtype1 and not transposed and not sliced and not channels_last and not True)"
    KERNEL_K+=" or (test_backends and float32 and matches_numpy))"  # (-k: one line)
    WORKERS=0
    BENCH=(--dry-run)
    OVERHEAD=(--resnet-device cpu --resnet-batch 4 --resnet-width 8 --repeats 1)  # (full width: 240 s, past the limit under load)
    export HYPOTHESIS_PROFILE=dev
else
    LIMIT_SCALE=1
    DEVICE=cuda
    WORKERS=8
    BENCH=(--owl-sizes 1e6,1e7,1e8 --repeat 5 --check-max 1e7)
    OVERHEAD=(--repeats 30)
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
fi
# seconds for the whole script (the dry run's scaled as its limits)
BUDGET=${GPU_SESSION_BUDGET:-$((570 * LIMIT_SCALE))}

stage 0_env 20 $PY -c "
import platform, numpy, scipy, torch, proxlib
print('python', platform.python_version(), '| numpy', numpy.__version__, '| scipy', scipy.__version__, '| torch', torch.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-')
for m in ('triton', 'cupy', 'numba'):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, 'unavailable:', type(e).__name__, e)
print('proxlib backends', proxlib.available_backends())
"

stage 1_step 150 $PY - "$DEVICE" <<'EOF'
import copy, sys, torch, proxlib, proxlib.torch as pt
from proxlib.backends import torch_dev
dev = sys.argv[1]
def terms(p, net):
    p.add(net[0], proxlib.GroupLasso(0.5), grouping="channel")
    p.add(net[2], pt.growl(lambda G: proxlib.owl_weights_stairwise(G, 0.05, 0.01, G // 2)), grouping="channel")
    p.add(net[2], proxlib.ExclusiveLasso(0.5), grouping="shape", label="ex")
    p.add(net[4], proxlib.GroupExclusive(0.5, 0.5), grouping="filter")
    p.add(net[4], proxlib.WeightedL1(1e-3), label="l1")
    p.add(net[0], proxlib.Lp(1e-4, 0.5), label="lp0")  # (two lp terms of one p: one Newton loop)
    p.add(net[4], proxlib.Lp(1e-4, 0.5), label="lp4")
torch.manual_seed(0)
L = torch.nn.Linear
net = torch.nn.Sequential(L(256, 512), torch.nn.ReLU(), L(512, 512), torch.nn.ReLU(), L(512, 10)).to(dev)
opt = torch.optim.SGD(net.parameters(), lr=0.05)
cpu = copy.deepcopy(net).cpu()
first = copy.deepcopy(net)  # (for the step with the exclusive rows' Triton kernel, below)
prox, pc = pt.ProximalStep(opt), pt.ProximalStep(torch.optim.SGD(cpu.parameters(), lr=0.05))
terms(prox, net); terms(pc, cpu)
ptrs = [q.data_ptr() for q in net.parameters()]
# the dry run: CPU tensors through the torch operations that CUDA runs; on CUDA the default
# ("auto": GrOWL's OWL of the row norms by Numba on the host, as a user's step runs it)
torch_dev.CPU_KERNELS = "torch" if dev == "cpu" else "auto"
prox.step()
torch_dev.CPU_KERNELS = "auto"
pc.step()  # the CPU's default route (Numba's serial kernels), tested against the NumPy reference in CI
err = max(float((a.detach().double().cpu() - b.detach().double()).abs().max()) for a, b in zip(net.parameters(), cpu.parameters()))
same = ptrs == [q.data_ptr() for q in net.parameters()]
print(f"ProximalStep on {dev} against the same step on the CPU: max |diff| {err:.1e}; parameters kept their memory: {same}")
# the same step with the row kernels that are off by default (compiled on
# CUDA): the group lasso and GrOWL rows of every tensor in one launch, the
# exclusive penalties' rows
from proxlib.backends import _xp_kernels
pk = pt.ProximalStep(torch.optim.SGD(first.parameters(), lr=0.05))
terms(pk, first)
torch_dev.CPU_KERNELS = "torch" if dev == "cpu" else "auto"
_xp_kernels.EXCLUSIVE_ROWS = torch_dev.GROUP_ROWS = "triton"
pk.step()
_xp_kernels.EXCLUSIVE_ROWS = torch_dev.GROUP_ROWS = "array"
torch_dev.CPU_KERNELS = "auto"
errk = max(float((a.detach().double().cpu() - b.detach().double()).abs().max()) for a, b in zip(first.parameters(), cpu.parameters()))
print(f"the same step with the row kernels (group lasso and GrOWL of every tensor, exclusive rows): max |diff| {errk:.1e}")
err = max(err, errk)
# the prox in a given diagonal metric, batched (rows stacked by length, entries concatenated), against the CPU
gen = torch.Generator().manual_seed(1)
Ws = [torch.randn(s, generator=gen) for s in [(64, 32), (48, 32), (16, 8, 3, 3), (16, 4, 3, 3), (100,)]]
Ds = [0.1 * 100.0 ** torch.rand(w.shape, generator=gen) for w in Ws]
def metric_step(device):
    ps = [torch.nn.Parameter(w.clone().to(device)) for w in Ws]
    dd = {id(p): d.to(device) for p, d in zip(ps, Ds)}
    pm = pt.ProximalStep(torch.optim.SGD(ps, lr=1.0), metric=lambda o, p: dd[id(p)])
    pm.add(ps[0], proxlib.GroupLasso(0.3), grouping="filter"); pm.add(ps[1], proxlib.GroupLasso(0.2), grouping="filter")
    pm.add(ps[2], proxlib.GroupExclusive(0.2, 0.3), grouping="shape"); pm.add(ps[3], proxlib.GroupExclusive(0.3, 0.2), grouping="shape")
    pm.add(ps[0], proxlib.WeightedL1(0.01), label="l1"); pm.add(ps[4], proxlib.Lp(0.05, 0.5))
    pm.step(lr=0.5)
    return [p.detach().double().cpu() for p in ps]
torch_dev.CPU_KERNELS = "torch"
on_cpu = metric_step("cpu")
errm = max(float((a - b).abs().max()) for a, b in zip(metric_step(dev), on_cpu))
print(f"ProximalStep in a metric on {dev} against the CPU: max |diff| {errm:.1e}")
from proxlib.backends import _metric_kernels
_metric_kernels.METRIC_ROWS = "triton"  # (the metric row operators by their Triton kernels)
errmk = max(float((a - b).abs().max()) for a, b in zip(metric_step(dev), on_cpu))
_metric_kernels.METRIC_ROWS = "array"
torch_dev.CPU_KERNELS = "auto"
print(f"the same with the metric row operators' Triton kernels: max |diff| {errmk:.1e}")
errm = max(errm, errmk)
sys.exit(0 if err <= 1e-5 and same and errm <= 1e-5 else 1)
EOF

stage 2_tests 150 env PROXLIB_TEST_DEVICE=$DEVICE $PY -m pytest -q -p no:cacheprovider -rfE -n "$WORKERS" --dist worksteal \
    -o addopts="" "${TEST_FILES[@]}" -k "$TEST_K"

# the Triton kernels that are off by default until this stage has passed on a
# GPU (the group lasso and GrOWL rows of a step's tensors, torch_dev.GROUP_ROWS;
# the exclusive penalties' rows, _xp_kernels.EXCLUSIVE_ROWS; the metric row
# operators, whole, and the root search, _metric_kernels.METRIC_ROWS): the same test bodies
stage 2_kernel_tests 180 env PROXLIB_TEST_DEVICE=$DEVICE PROXLIB_TEST_TRITON_KERNELS=triton $PY -m pytest -q -p no:cacheprovider -rfE \
    -n "$WORKERS" --dist worksteal -o addopts="" "${KERNEL_FILES[@]}" -k "$KERNEL_K"

stage 3_overhead 120 $PY benchmarks/bench_overhead.py --gpu-only "${OVERHEAD[@]}" --out "$OUT/OVERHEAD_GPU.md"
stage 4_profile 50 $PY - "$DEVICE" <<'EOF'
# where a ResNet-18 prox step's time goes, per penalty: launches, host
# synchronisations, operations per layer, and the operations that take the
# most host time (launch-bound or not)
import sys, torch
from torch.profiler import ProfilerActivity, profile
sys.path.insert(0, "benchmarks")
import proxlib.torch as pt
from bench_overhead import KERNEL_ROWS, KERNEL_SUFFIX, PENALTIES, _triton_kernels, resnet18
from proxlib.backends import torch_dev
dev = sys.argv[1]
if dev == "cpu":
    torch_dev.CPU_KERNELS = "torch"  # (the dry run: the torch operations that CUDA runs)
torch.manual_seed(0)
net = resnet18().to(dev)
opt = torch.optim.SGD(net.parameters(), lr=1e-3)
convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
# (then the exclusive penalties with their rows by the Triton kernel: "auto", on CUDA)
cases = [(name, *case, None) for name, case in PENALTIES.items()]
cases += [(name + KERNEL_SUFFIX, *PENALTIES[name], "auto") for name in KERNEL_ROWS]
for name, pen, grouping, rows_by in cases:
    prox = pt.ProximalStep(opt, model=net)
    for c in convs:
        prox.add(c, pen(), grouping=grouping)
    with _triton_kernels(rows_by):
        for _ in range(3 if dev == "cuda" else 1):  # warm-up (the dry run: one)
            prox.step()
        with profile(activities=acts) as prof:
            prox.step()
            if dev == "cuda":
                torch.cuda.synchronize()
    ev = prof.key_averages()
    count = lambda *names: sum(e.count for e in ev if e.key in names)  # noqa: E731
    aten = sum(e.count for e in ev if e.key.startswith("aten::"))
    print(f"## {name}: {len(convs)} layers; launches {count('cudaLaunchKernel', 'cuLaunchKernel', 'cuLaunchKernelEx')}, "
          f"synchronisations {count('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaMemcpyAsync')} (memcpy included), "
          f"aten operations {aten} ({aten / len(convs):.0f} a layer)")
    print(ev.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40))
EOF

stage 5_bench 180 $PY benchmarks/bench_gpu.py "${BENCH[@]}" --out "$OUT/RESULTS_GPU.md"

echo "=== SUMMARY (${SECONDS}s of a ${BUDGET}s budget; logs and reports in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
